"""Fine-tune a multilingual dual encoder with hybrid batch training (arXiv 2408.10536, section 3).

    python train.py --sampler hybrid                      # e5-small on XQuAD-R, ~13 min on 2 CPU cores
    python train.py --sampler xx --show-batches 5         # print what the sampler draws, train nothing
    python train.py --resume runs/hybrid/checkpoint       # continue a stopped run exactly
    torchrun --nproc_per_node 4 train.py --sampler hybrid --device cuda --batch-size 128 ...
                                                          # data parallel; see docs "Scaling up"

Each step: the sampler draws B parallel groups and a (query, passage) language pair per example
(X-X, X-Y or hybrid), the shared encoder embeds the B questions and their B answer sentences,
and InfoNCE with in-batch negatives (minihbt/loss.py) is minimised with AdamW
(one step: minihbt/train_step.py).

Defaults follow the paper where it says something: AdamW, lr 3e-5, weight decay 0.01, training
languages ar de en es hi ru th tr zh (el and vi stay unseen), alpha 0.5. It does not give a
temperature (we use 0.05), warmup or schedule (we use linear warmup over 10% of the steps, then
linear decay), or maximum lengths (64 query / 128 passage tokens; padding is to the longest
in the batch, so the limits only cut rare long sentences). Weight decay applies to matrices
only, not to biases and LayerNorm weights (as nanoGPT and the Hugging Face trainer do).

Budget: the paper uses batch 100 on a GPU. The default here, batch 16 for 300 steps (4,800
pairs, about half an epoch of XQuAD-R's 1,190 groups x 9 languages), takes about 2.1-2.5 s a
step on a 2-core CPU with e5-small, so about 11-13 minutes plus three checkpoint writes of 1.4 GB
(weights and AdamW moments); see bench/README.md. The paper's scale is
    python train.py --sampler hybrid --model DIR --batch-size 100 --max-steps N
with DIR an XLM-R or LaBSE Hugging Face directory and N chosen for the epochs wanted.
Bigger batches than one device holds: --grad-cache-chunk K and/or several processes under
torchrun (minihbt/parallel.py); both compute the loss of the whole global batch, every query
against every passage. --device cuda trains with bf16 autocast (the loss in fp32), --compile
adds torch.compile. The device is cpu unless --device cuda is given, so that one command gives
the same numbers on every machine.

Outputs in --out (default runs/<sampler>): `checkpoint/` (a model directory that load_encoder,
eval.py and transformers read, plus the trainer state; replaced atomically every --save-every
steps and at the end) and `log.jsonl` (one line per step with the exact loss).
A NaN or infinite loss stops the run before the update, leaving the last checkpoint as it was.
Under torchrun only rank 0 logs and writes checkpoints; a run resumes with as many processes.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from minihbt import load_encoder, parallel
from minihbt.checkpoint import code_version, load_trainer_state, rng_states, save_checkpoint, set_rng_states
from minihbt.files import ArgumentParser, UserError, atomic_write_bytes, run_cli
from minihbt.lareqa import LANGS, TRAIN_LANGS, dataset_fingerprint, load_groups
from minihbt.loss import DEFAULT_TEMPERATURE
from minihbt.sampler import SAMPLERS, HybridSampler
from minihbt.train_step import batch_texts, loss_and_backward, lr_at, make_embed, make_optimizer


@dataclass
class TrainConfig:
    sampler: str = "hybrid"
    alpha: float = 0.5
    model: str = "e5-small"
    train_data: list[str] = field(default_factory=lambda: ["xquad-r"])
    langs: list[str] = field(default_factory=lambda: list(TRAIN_LANGS))
    batch_size: int = 16
    lr: float = 3e-5
    weight_decay: float = 0.01
    warmup: int | None = None        # steps; None: 10% of max_steps
    max_steps: int = 300
    max_len_query: int = 64
    max_len_passage: int = 128
    temperature: float = DEFAULT_TEMPERATURE
    seed: int = 0
    grad_cache_chunk: int = 0        # examples per forward with GradCache; 0: the whole batch at once
    device: str = "cpu"
    compile: bool = False

    def __post_init__(self):
        if self.warmup is None:
            self.warmup = self.max_steps // 10
        for flag, value, ok in [
            ("--lr", self.lr, self.lr > 0), ("--weight-decay", self.weight_decay, self.weight_decay >= 0),
            ("--max-steps", self.max_steps, self.max_steps >= 1),
            ("--warmup", self.warmup, 0 <= self.warmup <= self.max_steps),
            ("--max-len-query", self.max_len_query, self.max_len_query >= 3),
            ("--max-len-passage", self.max_len_passage, self.max_len_passage >= 3),
            ("--temperature", self.temperature, self.temperature > 0),
            ("--grad-cache-chunk", self.grad_cache_chunk, self.grad_cache_chunk >= 0),
        ]:
            if not ok:
                raise UserError(f"{flag}: invalid value {value}")


# Flags that may change when resuming: where to write and how often, not what is trained.
RUN_FLAGS = ("out", "resume", "show_batches", "save_every", "log_every")


def parse_args(argv: list[str] | None) -> tuple[dict, dict]:
    """(training flags given on the command line, run flags with defaults)."""
    comma_list = lambda s: [x for x in s.split(",") if x]  # noqa: E731
    p = ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                argument_default=argparse.SUPPRESS)
    d = TrainConfig()
    p.add_argument("--sampler", choices=SAMPLERS, help="batch kind: xx (X-X mono), xy (X-Y), hybrid")
    p.add_argument("--alpha", type=float, help=f"hybrid: probability of an X-X batch ({d.alpha})")
    p.add_argument("--model", help=f"manifest model name or a Hugging Face directory ({d.model})")
    p.add_argument("--train-data", type=comma_list, help=f"datasets or LAReQA directories, comma-separated "
                                                         f"({','.join(d.train_data)})")
    p.add_argument("--langs", type=comma_list, help=f"training languages ({','.join(d.langs)})")
    p.add_argument("--batch-size", type=int, help=f"parallel groups per batch ({d.batch_size}; paper 100)")
    p.add_argument("--lr", type=float, help=f"peak AdamW learning rate ({d.lr})")
    p.add_argument("--weight-decay", type=float, help=f"AdamW weight decay ({d.weight_decay})")
    p.add_argument("--warmup", type=int, help="linear warmup steps (10%% of --max-steps)")
    p.add_argument("--max-steps", type=int, help=f"optimizer steps ({d.max_steps})")
    p.add_argument("--max-len-query", type=int, help=f"query tokens ({d.max_len_query})")
    p.add_argument("--max-len-passage", type=int, help=f"passage tokens ({d.max_len_passage})")
    p.add_argument("--temperature", type=float, help=f"InfoNCE temperature ({d.temperature})")
    p.add_argument("--seed", type=int, help=f"seeds the sampler and dropout ({d.seed})")
    p.add_argument("--grad-cache-chunk", type=int, metavar="K",
                   help="GradCache: embed K examples at a time, same gradients as the whole batch (off)")
    p.add_argument("--device", choices=["cpu", "cuda"], help=f"cuda: bf16 autocast, one GPU per process ({d.device})")
    p.add_argument("--compile", action="store_true", help="torch.compile the encoder (off)")
    p.add_argument("--out", help="output directory (runs/<sampler>; with --resume: the checkpoint's parent)")
    p.add_argument("--resume", help="a checkpoint directory to continue from, with its stored config")
    p.add_argument("--show-batches", type=int, metavar="N", help="print N batches as JSON lines and exit")
    p.add_argument("--save-every", type=int, help="checkpoint every N steps (100) and at the end")
    p.add_argument("--log-every", type=int, help="log line every N steps (10)")
    given = vars(p.parse_args(argv))
    run = {"out": None, "resume": None, "show_batches": None, "save_every": 100, "log_every": 10}
    run |= {k: v for k, v in given.items() if k in RUN_FLAGS}
    if run["save_every"] < 1 or run["log_every"] < 1:
        raise UserError("--save-every and --log-every: expected positive integers")
    return {k: v for k, v in given.items() if k not in RUN_FLAGS}, run


def dataset_langs(name: str) -> list[str]:
    """The languages a dataset name or LAReQA directory offers."""
    if name in LANGS:
        return LANGS[name]
    if not Path(name).is_dir():
        raise UserError(f"--train-data: unknown dataset '{name}': expected one of {', '.join(LANGS)} "
                        "or a directory of <lang>.json files in LAReQA format")
    return sorted(p.stem for p in Path(name).glob("*.json"))


def training_langs(cfg: TrainConfig) -> dict[str, list[str]]:
    """Each dataset's share of the training languages (MLQA-R lacks ru, th, tr: fine, if another has them)."""
    missing = [l for l in cfg.langs if not any(l in dataset_langs(n) for n in cfg.train_data)]
    if missing:
        raise UserError(f"--langs: {', '.join(missing)} not in --train-data {','.join(cfg.train_data)}")
    return {name: [l for l in cfg.langs if l in dataset_langs(name)] for name in cfg.train_data}


def logged_step(line: str) -> float:
    """The step of a log.jsonl line; a line cut short by a crash counts as after every step."""
    try:
        return json.loads(line)["step"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return math.inf


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


def main(argv: list[str] | None = None) -> int:
    given, run = parse_args(argv)
    state = None
    if run["resume"]:
        state = load_trainer_state(run["resume"], rank=int(os.environ.get("RANK", "0")))
        if given:
            flags = ", ".join("--" + k.replace("_", "-") for k in given)
            raise UserError(f"--resume continues the stored run with its own config; remove {flags}")
        try:
            cfg = TrainConfig(**state["config"])
        except TypeError as e:
            raise UserError(f"--resume {run['resume']}: trainer.json config does not fit this train.py ({e})") from None
        out = Path(run["out"] or Path(run["resume"]).resolve().parent)
    else:
        if "sampler" not in given and run["show_batches"] is None:
            raise UserError("--sampler: required (xx, xy or hybrid), unless --resume is given")
        cfg = TrainConfig(**given)
        out = Path(run["out"] or f"runs/{cfg.sampler}")

    n_procs = parallel.env_world_size()
    if cfg.batch_size % n_procs:
        raise UserError(f"--batch-size {cfg.batch_size}: the global batch must split evenly over the "
                        f"{n_procs} processes (a multiple of {n_procs})")
    if state is not None and state["world_size"] != n_procs:
        raise UserError(f"--resume: the checkpoint was written by {state['world_size']} processes, this run has "
                        f"{n_procs}; resume with as many (each one's dropout RNG state is stored)")
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible to torch")
    langs = training_langs(cfg)
    groups = {name: load_groups(name, langs[name]) for name in cfg.train_data}  # {dataset: {qid: {lang: Example}}}
    sampler = HybridSampler(groups, cfg.langs, cfg.batch_size, cfg.sampler, cfg.alpha, cfg.seed)
    start = 0
    if state is not None:
        sampler.load_state_dict(state["sampler"])
        start = state["step"]

    if run["show_batches"] is not None:
        for step in range(start + 1, start + 1 + run["show_batches"]):
            b = next(sampler)
            print(json.dumps({"step": step, "kind": b.kind, "dataset": b.dataset,
                              "pairs": [list(p) for p in b.pairs], "groups": b.groups}, ensure_ascii=False))
        return 0

    world = parallel.init(cfg.device)
    try:
        return train(cfg, run, state, sampler, groups, langs, out, start, world)
    finally:
        parallel.finish(world)


def train(cfg: TrainConfig, run: dict, state: dict | None, sampler: HybridSampler, groups: dict,
          langs: dict, out: Path, start: int, world: parallel.World) -> int:
    lead = world.rank == 0  # the one rank that logs and writes checkpoints
    if lead:
        check_writable(out)
    ckpt_dir, log_path = out / "checkpoint", out / "log.jsonl"
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    # Each rank its own dropout masks (rank 0 those of a one-process run); the sampler's seed is shared.
    torch.manual_seed(cfg.seed + world.rank)
    device = f"cuda:{world.local_rank}" if cfg.device == "cuda" else "cpu"
    encoder = load_encoder(run["resume"] or cfg.model, device=device)
    encoder.model.train()  # dropout on, as in BERT fine-tuning; its masks come from the torch RNG
    embed = make_embed(encoder, cfg)
    optimizer = make_optimizer(encoder.model, cfg)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        set_rng_states(state["rng"])
        provenance = state["provenance"]
        for n in cfg.train_data:
            if dataset_fingerprint(n, langs[n]) != provenance["data_fingerprints"][n]:
                raise UserError(f"--resume: training data {n} changed since the checkpoint; batches would differ")
        if lead:  # the log keeps only the steps that led to this checkpoint
            kept = [l for l in log_path.read_text().splitlines() if logged_step(l) <= start] \
                if log_path.is_file() else []
            atomic_write_bytes(log_path, "".join(l + "\n" for l in kept).encode())
    else:
        base = encoder.meta.get("provenance")
        provenance = {
            "train_data": cfg.train_data, "langs": cfg.langs, "sampler": cfg.sampler, "alpha": cfg.alpha,
            "data_fingerprints": {n: dataset_fingerprint(n, langs[n]) for n in cfg.train_data},
            "base_model": cfg.model, "base_model_fingerprint": encoder.fingerprint,
            **({"base_model_provenance": base} if base else {}),
            "code_version": code_version(),
        }
        if lead:
            log_path.unlink(missing_ok=True)

    if start >= cfg.max_steps:
        if lead:
            print(f"{run['resume']} is already at the last step ({cfg.max_steps}); nothing to do", file=sys.stderr)
        return 0
    if lead:
        print(f"train: {cfg.sampler} (alpha {cfg.alpha}) on {','.join(cfg.train_data)} [{','.join(cfg.langs)}], "
              f"model {cfg.model}, batch {cfg.batch_size}" + (f" over {world.size} processes" if world.size > 1 else "")
              + f", steps {start + 1}..{cfg.max_steps}, out {out}", file=sys.stderr)
    t0, last_saved = time.perf_counter(), start
    with open(log_path, "a") if lead else contextlib.nullcontext() as log:
        for step in range(start + 1, cfg.max_steps + 1):
            batch = next(sampler)  # the same global batch on every rank
            queries, passages = batch_texts(batch, groups)
            lr = lr_at(step, cfg)
            for g in optimizer.param_groups:
                g["lr"] = lr
            loss = loss_and_backward(encoder, embed, parallel.shard(queries, world), parallel.shard(passages, world),
                                     cfg, world)
            loss = parallel.mean(loss, world)  # the global batch's loss, the same on every rank
            if not math.isfinite(loss):
                where = f"{ckpt_dir} (step {last_saved}), intact" if last_saved else "none written yet"
                raise UserError(f"step {step}: loss is {loss}; stopped before the update. "
                                f"Last good checkpoint: {where}")
            parallel.average_gradients(encoder.model, world)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

            elapsed = time.perf_counter() - t0
            done = step - start
            if lead:
                log.write(json.dumps({"step": step, "kind": batch.kind, "dataset": batch.dataset, "loss": loss,
                                      "lr": lr, "elapsed": round(elapsed, 3)}) + "\n")
                log.flush()
            if lead and (step == start + 1 or step % run["log_every"] == 0 or step == cfg.max_steps):
                eta = elapsed / done * (cfg.max_steps - step)
                print(f"step {step:>5}/{cfg.max_steps} | loss {loss:.4f} | lr {lr:.2e} | "
                      f"{done * cfg.batch_size / elapsed:6.1f} pairs/s | elapsed {hms(elapsed)} | eta {hms(eta)}",
                      file=sys.stderr)
            if step % run["save_every"] == 0 or step == cfg.max_steps:
                # Weights, AdamW state and sampler are the same on every rank; the dropout RNG is not.
                rngs = parallel.gather_objects(rng_states(), world)
                if lead:
                    save_checkpoint(ckpt_dir, encoder, optimizer, sampler, step, asdict(cfg),
                                    provenance | {"step": step}, rngs)
                parallel.barrier(world)  # no rank runs ahead of (or exits before) the checkpoint
                last_saved = step
    unseen = [d for d in LANGS if d not in cfg.train_data]
    if lead:
        print(f"saved {ckpt_dir} (step {cfg.max_steps})"
              + (f"; evaluate zero-shot: python eval.py --dataset {unseen[0]} --model {ckpt_dir}" if unseen else ""),
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(main)
