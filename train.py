"""Fine-tune a multilingual dual encoder with hybrid batch training (arXiv 2408.10536, section 3).

    python train.py --sampler hybrid                      # e5-small on XQuAD-R, ~13 min on 2 CPU cores
    python train.py --sampler xx --show-batches 5         # print what the sampler draws, train nothing
    python train.py --resume runs/hybrid/checkpoint       # continue a stopped run exactly
    python train.py --sampler hybrid --train-data xquad-r,my.jsonl --langs de,en,es
                                                          # your own parallel groups (minihbt/jsonl_groups.py)
    torchrun --nproc_per_node 4 train.py --sampler hybrid --device cuda --batch-size 128 ...
                                                          # data parallel; see docs "Scaling up"

Each step: the sampler draws B parallel groups and a (query, passage) language pair per example
(X-X, X-Y or hybrid), the shared encoder embeds the B questions and their B answer sentences,
and InfoNCE with in-batch negatives (minihbt/loss.py) is minimised with AdamW
(one step: minihbt/train_step.py).

The recipe (minihbt/sampler.py, minihbt/validation.py):
- --hard-negatives N (1): each example brings N sentences of its own paragraph, in its passage
  language, as extra negatives for every query. Why 1 (chosen before any run, on no test
  number): paper eq. 1 trains on triplets (q, d+, d-), one hard negative per query; in XQuAD-R
  93-98% of examples have another sentence in their paragraph (th, whose sentences are longer,
  the fewest), while with 3 a paragraph is too short for 10-13% of the slots (th 30%), and every
  slot costs one more passage to embed per example.
- --false-negatives mask (default) | keep: a column that is the query's answer sentence or a
  translation of it (two questions about one sentence) is left out of the softmax; the number
  found is logged per step (log.jsonl "false_negatives").
- --val-every K (50) / --val-fraction (0.1): whole paragraphs (10% of the groups) are held out and
  never trained on; every K steps and at the end the multilingual mAP on them is computed and
  the best model so far kept in `checkpoint-best/` beside `checkpoint/`. Choices are made on this
  split only, never on the MLQA-R / XQuAD-R test numbers.
The first reproduction's recipe (docs/RESULTS.md, "old") is --hard-negatives 0
--false-negatives keep --val-every 0 --dtype fp32 --adamw for-loop.

Defaults follow the paper where it says something: AdamW, lr 3e-5, weight decay 0.01, training
languages ar de en es hi ru th tr zh (el and vi stay unseen), alpha 0.5. It does not give a
temperature (we use 0.05), warmup or schedule (we use linear warmup over 10% of the steps, then
linear decay), or maximum lengths (64 query / 128 passage tokens; padding is to the longest
in the batch, so the limits only cut rare long sentences). Weight decay applies to matrices
only, not to biases and LayerNorm weights (as nanoGPT and the Hugging Face trainer do).

Budget: the paper uses batch 100 on a GPU. The default here, batch 16 for 300 steps (4,800
pairs, about half an epoch of XQuAD-R's 1,190 groups x 9 languages), took about 2.1-2.5 s a
step on a 2-core CPU with e5-small without hard negatives, so about 11-13 minutes plus three
checkpoint writes of 1.4 GB (weights and AdamW moments); see bench/README.md. The default hard
negative makes a step about 1.5 times as long and each validation adds ~27 s (docs/RESULTS.md,
"The rerun"). The paper's scale is
    python train.py --sampler hybrid --model DIR --batch-size 100 --max-steps N
with DIR an XLM-R or LaBSE Hugging Face directory and N chosen for the epochs wanted.
Bigger batches than one device holds: --grad-cache-chunk K and/or several processes under
torchrun (minihbt/parallel.py); both compute the loss of the whole global batch, every query
against every passage. --device cuda trains with bf16 autocast (the loss in fp32), --compile
adds torch.compile. The device is cpu unless --device cuda is given, so that one command gives
the same numbers on every machine.

Speed: --dtype bf16 (the default on CUDA) runs the encoder's matrix products under bf16
autocast with fp32 weights (minihbt/text_encoder.py says what runs in which precision); fp32,
the default on CPU, is faster on CPUs without bf16 instructions. AdamW is torch's fused kernel
(--adamw fused; "for-loop" is the reference implementation the runs in docs/results used), and
freed memory is kept for the next step instead of being faulted in again (train_step.py).

Outputs in --out (default runs/<sampler>): `checkpoint/` (a model directory that load_encoder,
eval.py and transformers read, plus the trainer state; replaced atomically every --save-every
steps and at the end), `checkpoint-best/` (the model directory of the best validation score; its
minihbt.json says the step and score) and `log.jsonl` (one line per step with the exact loss).
A NaN or infinite loss stops the run before the update, leaving the last checkpoint as it was;
a kill -9 at any moment loses only the steps since the last checkpoint (minihbt/checkpoint.py).
A fresh run refuses an --out that holds another run's checkpoints or log unless --overwrite is
given (then they are removed before the first step); log lines carry the run's id, and --resume
refuses a log or checkpoint of another run in its --out.
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

from minihbt import jsonl_groups, load_encoder, parallel
from minihbt.checkpoint import (clear_previous_run, code_version, load_trainer_state, new_run_id, refuse_previous_run,
                                resumed_log, rng_states, save_checkpoint, set_rng_states)
from minihbt.files import ArgumentParser, UserError, atomic_write_bytes, run_cli
from minihbt.lareqa import LANGS, TRAIN_LANGS, dataset_fingerprint, load_groups
from minihbt.loss import DEFAULT_TEMPERATURE
from minihbt.sampler import SAMPLERS, HybridSampler, false_negatives
from minihbt.text_encoder import DTYPES, TRAIN_DTYPES
from minihbt.train_step import (ADAMW, batch_negatives, batch_texts, keep_freed_memory, loss_and_backward, lr_at,
                                make_embed, make_optimizer)
from minihbt.validation import hold_out


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
    hard_negatives: int = 1          # per example, from its paragraph (paper eq. 1: triplets)
    false_negatives: str = "mask"    # "mask": out of the softmax; "keep": counted as negatives (the old recipe)
    val_every: int = 50              # validate every K steps and at the end; 0: no validation, no held-out split
    val_fraction: float = 0.1        # share of the training groups held out for validation
    seed: int = 0
    grad_cache_chunk: int = 0        # examples per forward with GradCache; 0: the whole batch at once
    device: str = "cpu"
    compile: bool = False
    dtype: str | None = None         # "fp32" | "bf16"; None: bf16 on cuda, fp32 on cpu
    adamw: str = "fused"             # torch's AdamW implementation (train_step.ADAMW)

    def __post_init__(self):
        if self.warmup is None:
            self.warmup = self.max_steps // 10
        if self.dtype is None:
            self.dtype = "bf16" if self.device == "cuda" else "fp32"
        if self.dtype in DTYPES and self.dtype not in TRAIN_DTYPES:
            raise UserError(f"--dtype {self.dtype}: inference only (eval.py --dtype {self.dtype}); train in "
                            f"{' or '.join(TRAIN_DTYPES)}")
        for flag, value, ok in [
            ("--lr", self.lr, self.lr > 0), ("--weight-decay", self.weight_decay, self.weight_decay >= 0),
            ("--max-steps", self.max_steps, self.max_steps >= 1),
            ("--warmup", self.warmup, 0 <= self.warmup <= self.max_steps),
            ("--max-len-query", self.max_len_query, self.max_len_query >= 3),
            ("--max-len-passage", self.max_len_passage, self.max_len_passage >= 3),
            ("--temperature", self.temperature, self.temperature > 0),
            ("--grad-cache-chunk", self.grad_cache_chunk, self.grad_cache_chunk >= 0),
            ("--hard-negatives", self.hard_negatives, self.hard_negatives >= 0),
            ("--false-negatives", self.false_negatives, self.false_negatives in ("mask", "keep")),
            ("--val-every", self.val_every, self.val_every >= 0),
            ("--val-fraction", self.val_fraction, 0 < self.val_fraction < 1 or not self.val_every),
            ("--dtype", self.dtype, self.dtype in DTYPES), ("--adamw", self.adamw, self.adamw in ADAMW),
        ]:
            if not ok:
                raise UserError(f"{flag}: invalid value {value}")
        if not 0 <= self.seed < 2**32:  # numpy's global seed takes 32 bits
            raise UserError(f"--seed: expected an integer in [0, 2**32), got {self.seed}")


# What checkpoints written before these fields existed were trained with: a resumed run keeps its recipe.
PRE_RECIPE = {"hard_negatives": 0, "false_negatives": "keep", "val_every": 0}

# Flags that may change when resuming: where to write and how often, not what is trained.
RUN_FLAGS = ("out", "resume", "show_batches", "save_every", "log_every", "overwrite")


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
    p.add_argument("--train-data", type=comma_list, help=f"datasets, LAReQA directories or .jsonl group files "
                                                         "(minihbt/jsonl_groups.py), comma-separated "
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
    p.add_argument("--hard-negatives", type=int, metavar="N",
                   help=f"hard negatives per example, from its paragraph ({d.hard_negatives}; 0: in-batch only)")
    p.add_argument("--false-negatives", choices=["mask", "keep"],
                   help=f"a column that is the query's answer (or its translation): mask it or keep it ({d.false_negatives})")
    p.add_argument("--val-every", type=int, metavar="K",
                   help=f"multilingual mAP on held-out groups every K steps, best kept in checkpoint-best/ "
                        f"({d.val_every}; 0: off, nothing held out)")
    p.add_argument("--val-fraction", type=float, help=f"share of the groups held out ({d.val_fraction})")
    p.add_argument("--seed", type=int, help=f"seeds the sampler and dropout ({d.seed})")
    p.add_argument("--grad-cache-chunk", type=int, metavar="K",
                   help="GradCache: embed K examples at a time, same gradients as the whole batch (off)")
    p.add_argument("--device", choices=["cpu", "cuda"], help=f"cuda: one GPU per process ({d.device})")
    p.add_argument("--compile", action="store_true", help="torch.compile the encoder (off)")
    p.add_argument("--dtype", choices=DTYPES, help="fp32, or bf16 autocast with fp32 weights (bf16 on cuda, fp32 on cpu)")
    p.add_argument("--adamw", choices=ADAMW, help=f"AdamW implementation: fused (fastest), foreach, for-loop "
                                                  f"(torch's reference) ({d.adamw})")
    p.add_argument("--out", help="output directory (runs/<sampler>; with --resume: the checkpoint's parent)")
    p.add_argument("--resume", help="a checkpoint directory to continue from, with its stored config")
    p.add_argument("--overwrite", action="store_true", help="replace a previous run's checkpoints and log in --out")
    p.add_argument("--show-batches", type=int, metavar="N", help="print N batches as JSON lines and exit")
    p.add_argument("--save-every", type=int, help="checkpoint every N steps (100) and at the end")
    p.add_argument("--log-every", type=int, help="log line every N steps (10)")
    given = vars(p.parse_args(argv))
    run = {"out": None, "resume": None, "show_batches": None, "save_every": 100, "log_every": 10, "overwrite": False}
    run |= {k: v for k, v in given.items() if k in RUN_FLAGS}
    if run["save_every"] < 1 or run["log_every"] < 1:
        raise UserError("--save-every and --log-every: expected positive integers")
    return {k: v for k, v in given.items() if k not in RUN_FLAGS}, run


def dataset_langs(name: str) -> list[str]:
    """The languages a dataset name, LAReQA directory or JSONL groups file offers."""
    if name in LANGS:
        return LANGS[name]
    if jsonl_groups.is_jsonl(name):
        return jsonl_groups.languages(name)
    if not Path(name).is_dir():
        raise UserError(f"--train-data: unknown dataset '{name}': expected one of {', '.join(LANGS)} "
                        "a directory of <lang>.json files in LAReQA format, or a .jsonl groups file")
    return sorted(p.stem for p in Path(name).glob("*.json"))


def dataset_groups(name: str, langs: list[str]) -> dict:
    """{group id: {lang: Example}} of a dataset name, a LAReQA directory or a JSONL groups file."""
    return jsonl_groups.load_groups(name, langs) if jsonl_groups.is_jsonl(name) else load_groups(name, langs)


def data_fingerprint(name: str, langs: list[str]) -> str:
    return jsonl_groups.fingerprint(name) if jsonl_groups.is_jsonl(name) else dataset_fingerprint(name, langs)


def training_langs(cfg: TrainConfig) -> dict[str, list[str]]:
    """Each dataset's share of the training languages (MLQA-R lacks ru, th, tr: fine, if another has them)."""
    missing = [l for l in cfg.langs if not any(l in dataset_langs(n) for n in cfg.train_data)]
    if missing:
        raise UserError(f"--langs: {', '.join(missing)} not in --train-data {','.join(cfg.train_data)}")
    return {name: [l for l in cfg.langs if l in dataset_langs(name)] for name in cfg.train_data}


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
            # checkpoints written before --adamw existed were trained with the for-loop AdamW
            cfg = TrainConfig(**{"adamw": "for-loop", **PRE_RECIPE, **state["config"]})
        except TypeError as e:
            raise UserError(f"--resume {run['resume']}: trainer.json config does not fit this train.py ({e})") from None
        out = Path(run["out"] or Path(run["resume"]).resolve().parent)
    else:
        if "sampler" not in given and run["show_batches"] is None:
            raise UserError("--sampler: required (xx, xy or hybrid), unless --resume is given")
        cfg = TrainConfig(**given)
        out = Path(run["out"] or f"runs/{cfg.sampler}")
        if run["show_batches"] is None and not run["overwrite"]:
            refuse_previous_run(out)

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
    groups = {name: dataset_groups(name, langs[name]) for name in cfg.train_data}  # {dataset: {qid: {lang: Example}}}
    valsets = []
    if cfg.val_every:  # the held-out groups never reach the sampler
        groups, valsets = hold_out(groups, langs, cfg.val_fraction)
    try:
        sampler = HybridSampler(groups, cfg.langs, cfg.batch_size, cfg.sampler, cfg.alpha, cfg.seed, cfg.hard_negatives)
    except UserError as e:
        if not valsets:
            raise
        raise UserError(f"{e}; --val-fraction {cfg.val_fraction} of the groups are held out for validation") from None
    start = 0
    if state is not None:
        sampler.load_state_dict(state["sampler"])
        start = state["step"]

    if run["show_batches"] is not None:
        for step in range(start + 1, start + 1 + run["show_batches"]):
            b = next(sampler)
            line = {"step": step, "kind": b.kind, "dataset": b.dataset, "pairs": [list(p) for p in b.pairs],
                    "groups": b.groups, "false_negatives": int(false_negatives(b, groups[b.dataset]).sum())}
            if cfg.hard_negatives:  # per example: [sentence id, text] per slot, null for an empty one
                line["hard_negatives"] = [[s and list(s) for s in slots] for slots in b.hard]
            print(json.dumps(line, ensure_ascii=False))
        return 0

    world = parallel.init(cfg.device)
    try:
        return train(cfg, run, state, sampler, groups, langs, out, start, world, valsets)
    finally:
        parallel.finish(world)


def train(cfg: TrainConfig, run: dict, state: dict | None, sampler: HybridSampler, groups: dict,
          langs: dict, out: Path, start: int, world: parallel.World, valsets: list) -> int:
    lead = world.rank == 0  # the one rank that logs and writes checkpoints
    if lead:
        check_writable(out)
    ckpt_dir, log_path = out / "checkpoint", out / "log.jsonl"
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    # Each rank its own dropout masks (rank 0 those of a one-process run); the sampler's seed is shared.
    torch.manual_seed(cfg.seed + world.rank)
    device = f"cuda:{world.local_rank}" if cfg.device == "cuda" else "cpu"
    encoder = load_encoder(run["resume"] or cfg.model, device=device, dtype=cfg.dtype)
    keep_freed_memory()  # no page faults for the buffers each step frees and allocates again
    encoder.model.train()  # dropout on, as in BERT fine-tuning; its masks come from the torch RNG
    embed = make_embed(encoder, cfg)
    optimizer = make_optimizer(encoder.model, cfg)
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        set_rng_states(state["rng"])
        provenance = state["provenance"]
        for n in cfg.train_data:
            if data_fingerprint(n, langs[n]) != provenance["data_fingerprints"][n]:
                raise UserError(f"--resume: training data {n} changed since the checkpoint; batches would differ")
        if lead:  # the log keeps only this run's steps that led to this checkpoint
            kept = resumed_log(ckpt_dir, log_path, provenance.get("run_id"), start)
            atomic_write_bytes(log_path, "".join(l + "\n" for l in kept).encode())
    else:
        base = encoder.meta.get("provenance")
        provenance = {
            "train_data": cfg.train_data, "langs": cfg.langs, "sampler": cfg.sampler, "alpha": cfg.alpha,
            "data_fingerprints": {n: data_fingerprint(n, langs[n]) for n in cfg.train_data},
            "base_model": cfg.model, "base_model_fingerprint": encoder.fingerprint,
            **({"base_model_provenance": base} if base else {}),
            "code_version": code_version(), "run_id": new_run_id(),
        }
        if lead:
            clear_previous_run(out)  # refused in main unless --overwrite

    if start >= cfg.max_steps:
        if lead:
            print(f"{run['resume']} is already at the last step ({cfg.max_steps}); nothing to do", file=sys.stderr)
        return 0
    if lead:
        print(f"train: {cfg.sampler} (alpha {cfg.alpha}) on {','.join(cfg.train_data)} [{','.join(cfg.langs)}], "
              f"model {cfg.model}, batch {cfg.batch_size}" + (f" over {world.size} processes" if world.size > 1 else "")
              + f", steps {start + 1}..{cfg.max_steps}, out {out}", file=sys.stderr)
    t0, last_saved = time.perf_counter(), start
    best = provenance.get("validation")  # {"step", "score"} of checkpoint-best/, kept across a resume
    with open(log_path, "a") if lead else contextlib.nullcontext() as log:
        for step in range(start + 1, cfg.max_steps + 1):
            batch = next(sampler)  # the same global batch on every rank
            queries, passages = batch_texts(batch, groups)
            hard, mask, n_false = batch_negatives(batch, groups, cfg)  # mask: (B, B + B*N) or None
            lr = lr_at(step, cfg)
            for g in optimizer.param_groups:
                g["lr"] = lr
            loss = loss_and_backward(encoder, embed, parallel.shard(queries, world), parallel.shard(passages, world),
                                     cfg, world, parallel.shard(hard, world),
                                     None if mask is None else parallel.shard(mask, world))  # this rank's rows
            loss = parallel.mean(loss, world)  # the global batch's loss, the same on every rank
            if not math.isfinite(loss):
                where = f"{ckpt_dir} (step {last_saved}), intact" if last_saved else "none written yet"
                raise UserError(f"step {step}: loss is {loss}; stopped before the update. "
                                f"Last good checkpoint: {where}")
            parallel.average_gradients(encoder.model, world)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

            line = {"step": step, "run": provenance.get("run_id"), "kind": batch.kind, "dataset": batch.dataset,
                    "loss": loss, "lr": lr,
                    "false_negatives": n_false}  # found in the batch; masked unless --false-negatives keep
            if cfg.hard_negatives:
                line["hard_negatives"] = sum(t is not None for t in hard)
            if valsets and (step % cfg.val_every == 0 or step == cfg.max_steps):
                if lead:  # the weights are the same on every rank: one scores, the others wait
                    line["val_map_multi"] = sum(v.score(encoder, cfg.max_len_query, cfg.max_len_passage)
                                                for v in valsets) / len(valsets)
                    if best is None or line["val_map_multi"] > best["score"]:
                        best = {"step": step, "score": line["val_map_multi"]}
                        encoder.save(out / "checkpoint-best", provenance=provenance | {"step": step, "validation": best})
                    print(f"validation at step {step}: multilingual mAP {line['val_map_multi']:.4f}, "
                          f"best {best['score']:.4f} (step {best['step']}, checkpoint-best)", file=sys.stderr)
                parallel.barrier(world)
            elapsed = time.perf_counter() - t0
            done = step - start
            if lead:
                log.write(json.dumps(line | {"elapsed": round(elapsed, 3)}) + "\n")
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
                                    provenance | {"step": step} | ({"validation": best} if best else {}), rngs)
                parallel.barrier(world)  # no rank runs ahead of (or exits before) the checkpoint
                last_saved = step
    unseen = [d for d in LANGS if d not in cfg.train_data]
    if lead:
        chosen = out / "checkpoint-best" if valsets else ckpt_dir  # the model that validation selected
        print(f"saved {ckpt_dir} (step {cfg.max_steps})" + (f", best {chosen} (step {best['step']})" if valsets else "")
              + (f"; evaluate zero-shot: python eval.py --dataset {unseen[0]} --model {chosen}" if unseen else ""),
              file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(main)
