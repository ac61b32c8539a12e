"""minihbt.checkpoint: RNG states through JSON, and the one-line errors of a bad checkpoint. Exact
resumption of a whole run (weights, AdamW moments, sampler, dropout masks) is checked in test_train.py."""
import json
import random

import numpy as np
import pytest
import torch

from minihbt.checkpoint import TRAINER_JSON, TRAINER_PT, load_trainer_state, rng_states, set_rng_states
from minihbt.files import UserError


def test_rng_states_round_trip_through_json():
    saved = rng_states()
    plain = json.loads(json.dumps({k: saved[k] for k in ("python", "numpy")}))  # as trainer.json stores them
    first = (random.random(), np.random.rand(), torch.rand(3))
    set_rng_states({"torch": saved["torch"], "cuda": saved["cuda"], **plain})
    again = (random.random(), np.random.rand(), torch.rand(3))
    assert first[:2] == again[:2] and torch.equal(first[2], again[2])


def test_bad_checkpoints_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="not a training checkpoint"):
        load_trainer_state(tmp_path)
    (tmp_path / TRAINER_JSON).write_text('{"step": 3')  # cut short by a crash
    (tmp_path / TRAINER_PT).write_bytes(b"")
    with pytest.raises(UserError, match="unreadable checkpoint"):
        load_trainer_state(tmp_path)
    (tmp_path / TRAINER_JSON).write_text(json.dumps({"step": 3}))
    torch.save({"torch_rng": torch.get_rng_state(), "cuda_rng": []}, tmp_path / TRAINER_PT)
    with pytest.raises(UserError, match="incomplete checkpoint.*optimizer"):
        load_trainer_state(tmp_path)
