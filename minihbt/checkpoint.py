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

Runs never mix. A fresh run gets a random `run_id`, stored in the provenance and on every line
of its log.jsonl. A fresh run refuses an --out that holds a checkpoint or a log (the old
checkpoint would otherwise stay until the first save and be resumed, or evaluated, as the new
run's) unless told to replace it, and then removes both before its first step. A resumed run
keeps its own log lines up to the checkpoint's step and refuses a log or a checkpoint of
another run in its --out (dropping those lines would lose another run's record; keeping them
would make the log lie about this one).

Crashes: a kill -9 at any moment loses at most the steps since the last checkpoint. The
checkpoint is replaced by `atomic_dir`; a kill between its two renames leaves the previous one
as `.checkpoint.old.<pid>`, which `load_trainer_state` (and the next save) puts back.
"""
from __future__ import annotations

import json
import pickle
import random
import re
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .files import UserError, atomic_dir, atomic_write_json, recover_dir, remove_dir, weights_only_refusal

TRAINER_JSON, TRAINER_PT = "trainer.json", "trainer.pt"
LOG = "log.jsonl"  # train.py's log in --out


def code_version() -> dict:
    """The minihbt version and, when run from a git checkout, its commit (+ "-dirty")."""
    root = Path(__file__).resolve().parent.parent
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
        state.setdefault("world_size", 1)  # checkpoints from before data-parallel training
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


# ----------------------------------------------------------------------------- runs never mix

def new_run_id() -> str:
    """A random id for a fresh run (it names the run; it seeds nothing, so results stay seeded)."""
    return uuid.uuid4().hex[:12]


def _previous_run(out: Path) -> list[Path]:
    """What a training run leaves in `out`: its checkpoint directories (checkpoint/, and any other
    checkpoint* such as the best one), old copies of them that a killed save left, log.jsonl."""
    if not out.is_dir():
        return []
    dirs = [p for p in out.glob("checkpoint*") if p.is_dir()]
    old = [p for p in out.glob(".checkpoint*.old.*") if re.fullmatch(r"\.checkpoint.*\.old\.\d+", p.name)]
    return sorted(dirs + old) + [p for p in [out / LOG] if p.exists()]


def refuse_previous_run(out: Path) -> None:
    """A fresh run's check of its --out: no checkpoint, no interrupted save of one, no log."""
    if left := _previous_run(out):
        raise UserError(f"--out {out}: holds a previous run ({', '.join(p.name for p in left)}); continue it with "
                        f"--resume {out / 'checkpoint'}, replace it with --overwrite, or choose another --out")


def clear_previous_run(out: Path) -> None:
    """--overwrite: the previous run's checkpoints and log go before the first step (checkpoints
    first: a crash in between leaves a log without a checkpoint, which the next run refuses again)."""
    for p in _previous_run(out):
        if p.name == LOG:
            p.unlink()
        else:  # an old copy `.<name>.old.<pid>` goes with its directory <name>
            remove_dir(out / re.sub(r"^\.(.*)\.old\.\d+$", r"\1", p.name))


def resumed_log(ckpt_dir: Path, log_path: Path, run_id: str | None, step: int) -> list[str]:
    """The log.jsonl lines a run resumed at `step` keeps: its own lines up to `step`. Its later
    lines (steps that will be redone) and a line cut short by a kill are dropped. A line of
    another run, or a checkpoint of another run in `ckpt_dir` (which the next save would
    replace), is a UserError: this --out belongs to another run."""
    state = ckpt_dir / TRAINER_JSON
    if state.is_file():
        try:
            other = json.loads(state.read_text())["provenance"].get("run_id")
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
            other = "unknown"
        if other != run_id:
            raise UserError(f"--out {ckpt_dir.parent}: {ckpt_dir} is run {other}, not the resumed run {run_id}, "
                            "and would be replaced at the next save; give another --out")
    if not log_path.is_file():
        return []
    kept = []
    for n, line in enumerate(log_path.read_text().splitlines(), 1):
        try:
            entry = json.loads(line)
            this_step, this_run = entry["step"], entry.get("run")
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
            continue  # cut short by a kill while it was written
        if this_run != run_id:
            raise UserError(f"{log_path}:{n}: a line of run {this_run}, but the resumed checkpoint is run {run_id}; "
                            "the log belongs to another run: move it aside or give another --out")
        if this_step <= step:
            kept.append(line)
    return kept
