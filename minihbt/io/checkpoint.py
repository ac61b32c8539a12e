"""Training checkpoints: a model directory plus everything a resumed run needs to continue exactly.

A checkpoint is one directory, written as a whole (`atomic_dir`), so a crash or a NaN stop
never leaves a half-written one where the last good one was:

    config.json, model.safetensors, tokenizer.json, minihbt.json, ...   TextEncoder.save: a Hugging
        Face model directory (load_encoder, transformers, sentence-transformers read it);
        minihbt.json carries the provenance below
    trainer.json      readable: step, full training config, provenance, sampler state,
                      python and numpy global RNG states, world_size (processes that trained)
    trainer.pt        tensors: AdamW state (moments, step counts) and the torch RNG states
                      (those of rank 0; under torchrun also "rank_rngs", every rank's)

Exact resumption needs all of it: the weights and the AdamW moments, the step (the learning
rate is a pure function of it, so there is no separate scheduler object to save), the sampler's
generator (the next batches), and the torch CPU (and CUDA) RNG state, which draws the dropout
masks. Python's and numpy's global generators are not used by training; they are saved too so
that code added later cannot silently break resumption.

Data-parallel runs (minihbt/parallel.py): weights, AdamW state and sampler are identical on
every rank, so rank 0 writes them for all; the torch RNG states differ (each rank draws its own
dropout masks), so every rank's is stored and a run resumes with the same number of processes.

Provenance (also in minihbt.json, read by eval.py's zero-shot guard): train_data (dataset names
or directories), langs, sampler, steps, base_model (+ its fingerprint and own provenance if it was
itself trained by minihbt), data fingerprints, code_version {minihbt, git}, run_id.

Crashes: a kill -9 at any moment loses at most the steps since the last checkpoint. The
checkpoint is replaced by `atomic_dir`; a kill between its two renames leaves the previous one
as `.checkpoint.old.<pid>`, which `load_trainer_state` (and the next save) puts back.
"""
from __future__ import annotations

import json
import pickle
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from minihbt import __version__
from minihbt.io.files import UserError, atomic_dir, atomic_write_json, recover_dir, weights_only_refusal

TRAINER_JSON, TRAINER_PT = "trainer.json", "trainer.pt"


def code_version() -> dict:
    """The minihbt version and, when run from a git checkout, its commit (+ "-dirty")."""
    root = Path(__file__).resolve().parents[2]  # the checkout: minihbt/io/ -> ..
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=10).stdout.strip() or None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha, dirty = None, ""
    return {"minihbt": __version__, "git": sha and sha + ("-dirty" if dirty else "")}


def rng_states() -> dict:
    """Global RNG states: torch (tensors, for trainer.pt) and python / numpy (plain data, for JSON)."""
    version, mt, gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    np_state["state"]["key"] = np_state["state"]["key"].tolist()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": [version, list(mt), gauss],
        "numpy": np_state,
    }


def set_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    version, mt, gauss = states["python"]
    random.setstate((version, tuple(mt), gauss))
    np_state = dict(states["numpy"])
    np_state["state"] = dict(np_state["state"], key=np.array(np_state["state"]["key"], dtype=np.uint32))
    np.random.set_state(np_state)


def save_checkpoint(path: str | Path, encoder, optimizer: torch.optim.Optimizer, sampler, step: int,
                    config: dict, provenance: dict, rngs: list[dict] | None = None) -> Path:
    """Write the checkpoint directory `path` atomically (replacing an older one).

    rngs: `rng_states()` of every rank, in rank order (data-parallel runs); None: this process's.
    """
    rngs = rngs or [rng_states()]
    rng = rngs[0]
    tensors = {"optimizer": optimizer.state_dict(), "torch_rng": rng["torch"], "cuda_rng": rng["cuda"]}
    if len(rngs) > 1:
        tensors["rank_rngs"] = [{"torch": r["torch"], "cuda": r["cuda"]} for r in rngs]
    with atomic_dir(path) as tmp:
        encoder.save(tmp, provenance=provenance)
        torch.save(tensors, tmp / TRAINER_PT)
        atomic_write_json(tmp / TRAINER_JSON, {
            "step": step,
            "config": config,
            "provenance": provenance,
            "sampler": sampler.state_dict(),
            "python_rng": rng["python"],
            "numpy_rng": rng["numpy"],
            "world_size": len(rngs),
        })
    return Path(path)


def load_trainer_state(path: str | Path, rank: int = 0) -> dict:
    """The trainer part of a checkpoint: trainer.json's fields plus "optimizer" and "rng" (the
    RNG states for process `rank`; python's and numpy's are rank 0's, training does not use them)."""
    path = Path(path)
    if not path.exists() and (found := recover_dir(path)):
        print(f"note: {path} restored from {found.name} (a save was killed between its two renames)",
              file=sys.stderr)
    if not (path / TRAINER_JSON).is_file() or not (path / TRAINER_PT).is_file():
        raise UserError(f"--resume {path}: not a training checkpoint (expected {TRAINER_JSON} and {TRAINER_PT})")
    try:
        state = json.loads((path / TRAINER_JSON).read_text())
        tensors = torch.load(path / TRAINER_PT, map_location="cpu", weights_only=True)
        state["optimizer"] = tensors["optimizer"]
        own = tensors["rank_rngs"][rank] if "rank_rngs" in tensors and rank < state["world_size"] else \
            {"torch": tensors["torch_rng"], "cuda": tensors["cuda_rng"]}
        state["rng"] = {**own, "python": state.pop("python_rng"), "numpy": state.pop("numpy_rng")}
    except (json.JSONDecodeError, RuntimeError, OSError, pickle.UnpicklingError) as e:
        if why := weights_only_refusal(e):
            raise UserError(f"--resume {path / TRAINER_PT}: {why}") from None
        raise UserError(f"--resume {path}: unreadable checkpoint ({type(e).__name__}: {e})") from None
    except (KeyError, TypeError) as e:
        raise UserError(f"--resume {path}: incomplete checkpoint (missing or malformed {e})") from None
    return state
