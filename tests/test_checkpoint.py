"""minihbt.io.checkpoint: RNG states through JSON, the one-line errors of a bad checkpoint, runs that
never mix, and crashes: a real training process killed (-9) during its saves resumes exactly.
Exact resumption of a whole run (weights, AdamW moments, sampler, dropout masks) after an
in-process stop is also checked in test_train.py."""
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import cli, user_error
from minihbt import load_encoder
from minihbt.io import files
from minihbt.io.checkpoint import TRAINER_JSON, TRAINER_PT, load_trainer_state, rng_states, set_rng_states
from minihbt.io.files import UserError
from test_train import args
from test_train import data, one_thread  # noqa: F401  pytest fixtures shared with test_train

ROOT = Path(__file__).resolve().parent.parent


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


# ----------------------------------------------------------------------------- crashes

def test_point08_resume_with_the_checkpoint_left_aside_restores_it(data, tmp_path, capsys):
    # What a kill between atomic_dir's two renames leaves: no checkpoint/, the previous one as
    # .checkpoint.old.<pid>. --resume used to say "not a training checkpoint" without naming it.
    out = tmp_path / "run"
    assert cli("train.py", args(data, out, "--max-steps", "2")) == 0
    ckpt = out / "checkpoint"
    ckpt.rename(out / ".checkpoint.old.4242")
    with pytest.raises(UserError, match=r"model directory not found; an interrupted save left its previous "
                                        r"version as .*\.checkpoint\.old\.4242"):
        load_encoder(ckpt)
    capsys.readouterr()
    assert load_trainer_state(ckpt)["step"] == 2
    assert "restored from .checkpoint.old.4242" in capsys.readouterr().err
    assert "checkpoint" in {p.name for p in out.iterdir()} and not list(out.glob(".*"))


def test_point01_fresh_run_refuses_an_out_holding_only_an_interrupted_save(data, tmp_path):
    out = tmp_path / "run"
    assert cli("train.py", args(data, out, "--max-steps", "1")) == 0
    (out / "log.jsonl").unlink()
    (out / "checkpoint").rename(out / ".checkpoint.old.4242")
    assert re.search(r"holds a previous run \(\.checkpoint\.old\.4242[,)]", user_error("train.py", args(data, out, "--max-steps", "1")))
    assert cli("train.py", args(data, out, "--max-steps", "1", "--overwrite")) == 0
    assert {"checkpoint", "log.jsonl"} <= {p.name for p in out.iterdir()} and not list(out.glob(".*"))


# A kill -9 at any moment of a run (here: during checkpoint saves, and at random times) loses at
# most the steps since the last checkpoint, and resuming gives the uninterrupted run's losses.
# Real processes, really killed: train.py with --save-every 1, so that most moments are in a save.

def newest_step(ckpt: Path) -> int:
    """The step of the checkpoint a resume would continue from (0: none), looking, as --resume
    does, at the old copy a save killed between its two renames left."""
    state = (files.old_copy(ckpt) or ckpt) / "trainer.json"
    return json.loads(state.read_text())["step"] if state.is_file() else 0


def until(condition, proc, timeout=60.0) -> bool:
    """Poll `condition()` about every millisecond while `proc` runs; True once it holds."""
    end = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.0005)
    return False


def test_kill_9_at_any_moment_loses_only_unsaved_steps_and_resume_is_exact(data, tmp_path):
    steps = 6
    cmd = [sys.executable, str(ROOT / "train.py")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    full, cut = tmp_path / "full", tmp_path / "cut"
    flags = ["--max-steps", str(steps), "--save-every", "1"]
    subprocess.run(cmd + args(data, full, *flags), env=env, check=True, capture_output=True)
    reference = (full / "log.jsonl").read_text().splitlines()

    ckpt, log = cut / "checkpoint", cut / "log.jsonl"
    logged = lambda: log.read_text().count("\n") if log.is_file() else 0  # noqa: E731
    rng = random.Random(0)

    def kill_and_resume() -> int:
        """One sequence of legs from a fresh run; returns how many kills fell inside a save."""
        shutil.rmtree(cut, ignore_errors=True)
        # When each leg is killed: while its process writes a checkpoint (its temporary exists), or
        # a random 0-300 ms after it logs its next step; the last leg runs to the end.
        plan = ["save", "random", "save", "random"]
        killed_in_save = 0
        for when in plan + [None]:
            fresh = newest_step(ckpt) == 0
            argv = cmd + (args(data, cut, *flags, "--overwrite") if fresh else ["--resume", str(ckpt), *flags[2:]])
            p = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            if when is not None:
                before = logged()
                if when == "save":
                    saving = lambda: cut.is_dir() and any(  # noqa: E731
                        q.name.startswith(f".checkpoint.{p.pid}-") for q in cut.iterdir())
                    hit = until(saving, p)
                else:
                    hit = until(lambda: logged() > before, p)
                    time.sleep(rng.uniform(0, 0.3))
                p.kill()  # SIGKILL
                p.wait()
                killed_in_save += when == "save" and hit
                lines = log.read_text().splitlines() if log.is_file() else []
                done = sum(1 for l in lines if l.endswith("}"))  # complete log lines (a kill can cut the last)
                assert done - 1 <= newest_step(ckpt) <= done, (when, done, newest_step(ckpt))  # lost: unsaved steps
            else:
                assert p.wait(timeout=120) == 0, p.stderr.read()
        return killed_in_save

    # A save takes milliseconds: on fast quiet cores the poll can miss one and the run ends first.
    # Such a sequence says nothing about saves, so it is run again from scratch (at most 3 times).
    for _ in range(3):
        if (killed_in_save := kill_and_resume()) >= 2:
            break
    assert killed_in_save >= 2  # the kills really fell inside saves
    losses = [json.loads(l)["loss"] for l in log.read_text().splitlines()]
    assert [json.loads(l)["step"] for l in log.read_text().splitlines()] == list(range(1, steps + 1))
    assert losses == [json.loads(l)["loss"] for l in reference]  # bit-identical
    assert newest_step(ckpt) == steps
    assert not [q.name for q in cut.iterdir() if q.name.startswith(".")]  # nothing left behind


def test_a_trainer_pt_beyond_tensors_is_one_line_through_the_cli(tmp_path, capsys):
    """torch.load(weights_only=True)'s refusal was 4-5 lines; now one, naming trainer.pt."""
    from test_hf_format import Pickled
    ckpt = tmp_path / "checkpoint"
    ckpt.mkdir()
    (ckpt / TRAINER_JSON).write_text(json.dumps({"step": 3}))
    torch.save({"optimizer": {}, "torch_rng": torch.get_rng_state(), "x": Pickled(tmp_path / "ran")}, ckpt / TRAINER_PT)
    code = cli("train.py", ["--resume", str(ckpt)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"error: --resume {ckpt / TRAINER_PT}: not a weights-only checkpoint (it pickles ")
    assert "it was not unpickled" in err and not (tmp_path / "ran").exists()
