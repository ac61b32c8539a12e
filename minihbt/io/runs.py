"""A training run's bookkeeping: its id and provenance, its files in --out, its log, its checkpoints.

train.py shows the method; this module keeps the record of it. What a run leaves in --out:
    log.jsonl          one line per step: step, run id, batch kind, dataset, the exact loss, lr,
                       false negatives found, hard negatives filled, validation score, elapsed s
    checkpoint/        minihbt/io/checkpoint.py: replaced atomically every --save-every steps and
                       at the end; a kill -9 at any moment loses only the steps since the last one
    checkpoint-best/   with validation: the model of the best held-out score so far (its
                       minihbt.json says the step and score); the model that the run selects
    checkpoint-best.kept/  between a new best and the next checkpoint: the best model that the
                       last checkpoint records, kept until that checkpoint is replaced
Under torchrun only rank 0 (`lead`) writes; the others wait at each save (`parallel.barrier`).

Runs never mix. A fresh run gets a random `run_id`, stored in its provenance and on every line
of its log. It refuses an --out that holds a checkpoint or a log (the old checkpoint would
otherwise stay until the first save and be resumed, or evaluated, as the new run's) unless told
to --overwrite it, and then removes both before its first step. A resumed run keeps its own log
lines up to the checkpoint's step and refuses a log or a checkpoint of another run in its --out.

The best model of a resumed run is the best of its logged trajectory. The checkpoint records the
best validation up to its step; a checkpoint-best written after it belongs to steps the resume
redoes (their log lines are dropped), so the resume puts back the best that the checkpoint
records (`resumed_best`): checkpoint-best.kept, which a new best does not overwrite but sets
aside until the next checkpoint. The redone steps then replace it only by beating it.

Resuming. A run resumes with the config stored in its checkpoint, and with as many processes
(each rank's dropout RNG state is stored). A checkpoint whose config does not have exactly
today's fields was written by other code and is refused, naming that code's version: it would
otherwise resume with today's defaults for what it never stored. The data it trained on must
have the same fingerprints, or the batches would differ.

Provenance (checkpoint minihbt.json, read by eval.py's zero-shot guard): train_data, langs,
sampler, alpha, data_fingerprints, base_model (+ its fingerprint and own provenance if minihbt
trained it), code_version {minihbt, git}, run_id; then step and validation {step, score}.
"""
from __future__ import annotations

import json
import math
import re
import sys
import time
import uuid
from dataclasses import asdict, fields
from pathlib import Path

from minihbt import parallel
from minihbt.config import RunConfig, TrainConfig
from minihbt.io.checkpoint import TRAINER_JSON, code_version, rng_states, save_checkpoint, set_rng_states
from minihbt.io.files import UserError, atomic_write_bytes, recover_dir, remove_dir
from minihbt.lareqa import LANGS

LOG = "log.jsonl"
BEST, KEPT = "checkpoint-best", "checkpoint-best.kept"


def out_dir(cfg: TrainConfig, flags: RunConfig) -> Path:
    """The run's --out; a fresh run refuses one that holds another run unless --overwrite."""
    if flags.resume:
        return Path(flags.out or Path(flags.resume).resolve().parent)
    out = Path(flags.out or f"runs/{cfg.sampler}")
    if flags.show_batches is None and not flags.overwrite:
        refuse_previous_run(out)
    return out


def resumed_config(state: dict, given: dict, path: str) -> TrainConfig:
    """The stored run's TrainConfig; training flags beside --resume, or another code's config, refused."""
    if given:
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        raise UserError(f"--resume continues the stored run with its own config; remove {flags}")
    stored, today = set(state["config"]), {f.name for f in fields(TrainConfig)}
    if stored != today:
        v = state.get("provenance", {}).get("code_version") or {}
        differ = ", ".join(sorted(stored ^ today))
        raise UserError(f"--resume {path}: written by minihbt {v.get('minihbt', '?')} (git {v.get('git') or '?'}), "
                        f"whose config differs from this code's in {differ}; it cannot resume here: start a new run")
    return TrainConfig(**state["config"])


class Run:
    """The run in --out: `after_step` logs each step, validates, keeps the best model, saves checkpoints."""

    def __init__(self, cfg: TrainConfig, flags: RunConfig, out: Path, world: parallel.World, encoder, optimizer,
                 sampler, valsets: list, fingerprints: dict, state: dict | None):
        self.cfg, self.flags, self.out, self.world = cfg, flags, out, world
        self.encoder, self.optimizer, self.sampler, self.valsets = encoder, optimizer, sampler, valsets
        self.lead = world.rank == 0  # the one rank that logs and writes checkpoints
        self.ckpt, log_path = out / "checkpoint", out / LOG
        if self.lead:
            check_writable(out)
        if state is not None:  # resume: the optimizer and RNGs where the checkpoint left them
            optimizer.load_state_dict(state["optimizer"])
            set_rng_states(state["rng"])
            self.provenance, self.start = state["provenance"], state["step"]
            for n, fp in fingerprints.items():
                if fp != self.provenance["data_fingerprints"][n]:
                    raise UserError(f"--resume: training data {n} changed since the checkpoint; batches would differ")
            if self.lead:  # the log keeps only this run's steps that led to this checkpoint, and the best model theirs
                kept = resumed_log(self.ckpt, log_path, self.provenance["run_id"], self.start)
                resumed_best(out, self.provenance, self.start)
                atomic_write_bytes(log_path, "".join(l + "\n" for l in kept).encode())
        else:
            base = encoder.meta.get("provenance")
            self.provenance = {
                "train_data": cfg.train_data, "langs": cfg.langs, "sampler": cfg.sampler, "alpha": cfg.alpha,
                "data_fingerprints": fingerprints, "base_model": cfg.model,
                "base_model_fingerprint": encoder.fingerprint, **({"base_model_provenance": base} if base else {}),
                "code_version": code_version(), "run_id": new_run_id(),
            }
            self.start = 0
            if self.lead:
                clear_previous_run(out)  # refused in out_dir unless --overwrite
        self.best = self.provenance.get("validation")  # {"step", "score"} of checkpoint-best/
        self.last_saved = self.start
        self.log = open(log_path, "a") if self.lead else None
        self.t0 = time.perf_counter()

    def say(self, message: str) -> None:
        if self.lead:
            print(message, file=sys.stderr)

    def check(self, step: int, loss: float) -> None:
        """A NaN or infinite loss stops the run before the update; the last checkpoint stays as it was."""
        if not math.isfinite(loss):
            where = f"{self.ckpt} (step {self.last_saved}), intact" if self.last_saved else "none written yet"
            raise UserError(f"step {step}: loss is {loss}; stopped before the update. Last good checkpoint: {where}")

    def after_step(self, step: int, batch, x, loss: float, lr: float) -> None:
        cfg, world = self.cfg, self.world
        line = {"step": step, "run": self.provenance["run_id"], "kind": batch.kind, "dataset": batch.dataset,
                "loss": loss, "lr": lr, "false_negatives": x.false_negatives}  # masked unless "keep"
        if cfg.hard_negatives:
            line["hard_negatives"] = sum(t is not None for t in x.hard)
        if self.valsets and (step % cfg.val_every == 0 or step == cfg.max_steps):
            if self.lead:  # the weights are the same on every rank: one scores, the others wait
                line["val_map_multi"] = self.validate(step)
            parallel.barrier(world)
        elapsed, done = time.perf_counter() - self.t0, step - self.start
        if self.lead:
            self.log.write(json.dumps(line | {"elapsed": round(elapsed, 3)}) + "\n")
            self.log.flush()
        if step == self.start + 1 or step % self.flags.log_every == 0 or step == cfg.max_steps:
            eta = elapsed / done * (cfg.max_steps - step)
            self.say(f"step {step:>5}/{cfg.max_steps} | loss {loss:.4f} | lr {lr:.2e} | "
                     f"{done * cfg.batch_size / elapsed:6.1f} pairs/s | elapsed {hms(elapsed)} | eta {hms(eta)}")
        if step % self.flags.save_every == 0 or step == cfg.max_steps:
            self.save(step)

    def validate(self, step: int) -> float:
        """Multilingual mAP on the held-out groups (minihbt/validation.py); the best model so far is kept."""
        cfg = self.cfg
        score = sum(v.score(self.encoder, cfg.max_len_query, cfg.max_len_passage) for v in self.valsets) / len(self.valsets)
        if self.best is None or score > self.best["score"]:
            best, kept = self.out / BEST, self.out / KEPT
            if self.best is not None and self.best["step"] <= self.last_saved and best.is_dir():
                remove_dir(kept)  # a leftover of a kill; the best that the last checkpoint records is `best`
                best.rename(kept)  # kept until the next checkpoint, in case these steps are redone
            self.best = {"step": step, "score": score}
            self.encoder.save(best, provenance=self.provenance | {"step": step, "validation": self.best})
        self.say(f"validation at step {step}: multilingual mAP {score:.4f}, "
                 f"best {self.best['score']:.4f} (step {self.best['step']}, checkpoint-best)")
        return score

    def save(self, step: int) -> None:
        # Weights, AdamW state and sampler are the same on every rank; the dropout RNG is not.
        rngs = parallel.gather_objects(rng_states(), self.world)
        if self.lead:
            save_checkpoint(self.ckpt, self.encoder, self.optimizer, self.sampler, step, asdict(self.cfg),
                            self.provenance | {"step": step} | ({"validation": self.best} if self.best else {}), rngs)
            remove_dir(self.out / KEPT)  # the checkpoint now records checkpoint-best itself
        parallel.barrier(self.world)  # no rank runs ahead of (or exits before) the checkpoint
        self.last_saved = step

    def close(self) -> None:
        if not self.lead:
            return
        self.log.close()
        chosen = self.out / "checkpoint-best" if self.valsets else self.ckpt  # the model validation selected
        unseen = [d for d in LANGS if d not in self.cfg.train_data]
        self.say(f"saved {self.ckpt} (step {self.cfg.max_steps})"
                 + (f", best {chosen} (step {self.best['step']})" if self.valsets else "")
                 + (f"; evaluate zero-shot: python eval.py --dataset {unseen[0]} --model {chosen}" if unseen else ""))


def check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out / ".write-test", b"")
        (out / ".write-test").unlink()
    except OSError as e:
        raise UserError(f"--out {out}: cannot write there ({e.strerror or e})") from None


def hms(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


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


def _best_of(model_dir: Path) -> tuple | None:
    """(run id, step) of a best-model directory's provenance; None if there is none."""
    recover_dir(model_dir)  # a save killed between its two renames left the previous version aside
    try:
        prov = json.loads((model_dir / "minihbt.json").read_text())["provenance"]
        return prov.get("run_id"), prov["step"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        return None


def resumed_best(out: Path, provenance: dict, step: int) -> None:
    """checkpoint-best of a run resumed at `step`: the best model that its checkpoint records
    (provenance["validation"]), not one written after the checkpoint by steps that are redone.
    That one is checkpoint-best itself, or checkpoint-best.kept where a later best was written; a
    best written after the checkpoint is removed. The recorded best gone (a run of earlier code,
    which kept no copy) is a UserError: the redone steps would otherwise compete with a score whose
    model is lost."""
    best, kept = out / BEST, out / KEPT
    recorded = provenance.get("validation")
    if recorded is None:  # no validation up to the checkpoint: any best model is of redone steps
        remove_dir(best), remove_dir(kept)
        return
    want = (provenance["run_id"], recorded["step"])
    if _best_of(best) == want:
        remove_dir(kept)
    elif _best_of(kept) == want:
        remove_dir(best)  # of redone steps
        kept.rename(best)
    else:
        raise UserError(f"--resume: {best} is not the best model that the checkpoint (step {step}) records, "
                        f"the one of step {recorded['step']}, and no copy of it is left; start the run afresh "
                        "(--overwrite)")


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
