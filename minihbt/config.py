"""Every setting of training and evaluation: its default, its allowed values and its help text.

- `TrainConfig`: what a run trains. It is stored in the run's checkpoint and fixed on --resume.
- `RunConfig`: where a run writes and how often; it may change when a run is resumed.
- `EvalConfig`: what eval.py evaluates and how.
The command lines of train.py and eval.py are built from these dataclasses (`train_args`,
`eval_args`), so each flag's help text stands beside its default, once. Defaults follow the paper
(arXiv 2408.10536, sec. 4) where it gives a value: AdamW, lr 3e-5, weight decay 0.01, alpha 0.5,
training languages ar de en es hi ru th tr zh (el, vi unseen); where it gives none, the choice
and its reason are in the help text. Imports nothing of minihbt but io.files, so every module
may import it.
"""
from __future__ import annotations

import argparse
import os
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

from minihbt.io.files import ArgumentParser, UserError

SAMPLERS = ("xx", "xy", "hybrid")            # X-X, X-Y, hybrid batches (minihbt/sampler.py)
TRAIN_LANGS = ["ar", "de", "en", "es", "hi", "ru", "th", "tr", "zh"]  # the paper's; el, vi unseen
DTYPES = ("fp32", "bf16", "int8")            # the encoder's precision (minihbt/text_encoder.py)
TRAIN_DTYPES = ("fp32", "bf16")              # int8 is for encoding only (minihbt/quant.py)
ADAMW = ("fused", "foreach", "for-loop")     # torch's AdamW implementations (minihbt/step.py)
DEVICES = ("cpu", "cuda")


def opt(default, help: str, **cli):
    """A config field: its default, its help text, and argparse keywords for its flag (`cli`)."""
    meta = {"help": help, **cli}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    return field(default=default, metadata=meta)


def comma_list(s: str) -> list[str]:
    return [x for x in s.split(",") if x]


@dataclass
class TrainConfig:
    sampler: str = opt("hybrid", "batch kind: xx (X-X, one language per batch), xy (X-Y), hybrid",
                       choices=SAMPLERS)
    alpha: float = opt(0.5, "hybrid: probability that a batch is X-X")
    model: str = opt("e5-small", "manifest model name or a Hugging Face model directory")
    train_data: list[str] = opt(["xquad-r"], "datasets, LAReQA directories or .jsonl group files "
                                "(minihbt/jsonl_groups.py), comma-separated", type=comma_list)
    langs: list[str] = opt(TRAIN_LANGS, "training languages, comma-separated", type=comma_list)
    batch_size: int = opt(16, "parallel groups per batch (the paper: 100)")
    lr: float = opt(3e-5, "peak AdamW learning rate")
    weight_decay: float = opt(0.01, "AdamW weight decay, on matrices only (not biases, LayerNorm)")
    warmup: int | None = opt(None, "linear warmup steps, then linear decay (None: 10%% of --max-steps)", type=int)
    max_steps: int = opt(300, "optimizer steps (4,800 pairs at batch 16: about half an epoch of XQuAD-R)")
    max_len_query: int = opt(64, "query tokens (padding is to the longest in the batch)")
    max_len_passage: int = opt(128, "passage tokens")
    temperature: float = opt(0.05, "InfoNCE temperature (the paper gives none; info_nce's default)")
    hard_negatives: int = opt(1, "hard negatives per example, sentences of its own paragraph (paper eq. 1: "
                              "triplets; 0: in-batch negatives only)", metavar="N")
    false_negatives: str = opt("mask", "a column that is the query's answer or a translation of it: "
                               "mask it out of the softmax, or keep it as a negative", choices=("mask", "keep"))
    val_every: int = opt(50, "multilingual mAP on held-out groups every K steps and at the end, the best "
                         "model kept in checkpoint-best/ (0: no validation, nothing held out)", metavar="K")
    val_fraction: float = opt(0.1, "share of the training groups (whole paragraphs) held out for validation")
    seed: int = opt(0, "seeds the sampler, the initialisation and dropout")
    grad_cache_chunk: int = opt(0, "GradCache: embed K examples at a time, the gradients of the whole batch "
                                "(0: the whole batch at once)", metavar="K")
    device: str = opt("cpu", "cuda: one GPU per process (cpu unless asked, so that one command gives the "
                      "same numbers on every machine)", choices=DEVICES)
    compile: bool = opt(False, "torch.compile the encoder")
    dtype: str | None = opt(None, "fp32, or bf16 autocast with fp32 weights (None: bf16 on cuda, fp32 on cpu)",
                            choices=DTYPES)  # int8 is refused below with a reason, not by argparse
    adamw: str = opt("fused", "AdamW implementation: fused (fastest), foreach, for-loop (torch's reference)",
                     choices=ADAMW)

    def __post_init__(self):
        if self.warmup is None:
            self.warmup = self.max_steps // 10
        if self.dtype is None:
            self.dtype = "bf16" if self.device == "cuda" else "fp32"
        if self.dtype in DTYPES and self.dtype not in TRAIN_DTYPES:
            raise UserError(f"--dtype {self.dtype}: inference only (eval.py --dtype {self.dtype}); train in "
                            f"{' or '.join(TRAIN_DTYPES)}")
        for flag, value, ok, expected in [
            ("--lr", self.lr, self.lr > 0, "a positive number"),
            ("--weight-decay", self.weight_decay, self.weight_decay >= 0, "a number >= 0"),
            ("--max-steps", self.max_steps, self.max_steps >= 1, "a positive integer"),
            ("--warmup", self.warmup, 0 <= self.warmup <= self.max_steps, "an integer in [0, --max-steps]"),
            ("--max-len-query", self.max_len_query, self.max_len_query >= 3, "at least 3 tokens"),
            ("--max-len-passage", self.max_len_passage, self.max_len_passage >= 3, "at least 3 tokens"),
            ("--temperature", self.temperature, self.temperature > 0, "a positive number"),
            ("--grad-cache-chunk", self.grad_cache_chunk, self.grad_cache_chunk >= 0, "an integer >= 0"),
            ("--hard-negatives", self.hard_negatives, self.hard_negatives >= 0, "an integer >= 0"),
            ("--false-negatives", self.false_negatives, self.false_negatives in ("mask", "keep"), "mask or keep"),
            ("--val-every", self.val_every, self.val_every >= 0, "an integer >= 0"),
            ("--val-fraction", self.val_fraction, 0 < self.val_fraction < 1 or not self.val_every,
             "a fraction in (0, 1)"),
            ("--dtype", self.dtype, self.dtype in TRAIN_DTYPES, f"one of {', '.join(TRAIN_DTYPES)}"),
            ("--adamw", self.adamw, self.adamw in ADAMW, f"one of {', '.join(ADAMW)}"),
        ]:
            if not ok:
                raise UserError(f"{flag}: invalid value {value}; expected {expected}")
        if not 0 <= self.seed < 2**32:  # numpy's global seed takes 32 bits
            raise UserError(f"--seed: expected an integer in [0, 2**32), got {self.seed}")
        # --sampler, --alpha, --batch-size: checked by the sampler (minihbt/sampler.py)


@dataclass
class RunConfig:
    out: str | None = opt(None, "output directory (runs/<sampler>; with --resume: the checkpoint's parent)")
    resume: str | None = opt(None, "a checkpoint directory to continue from, with its stored config")
    overwrite: bool = opt(False, "replace a previous run's checkpoints and log in --out")
    show_batches: int | None = opt(None, "print N batches as JSON lines and exit", type=int, metavar="N")
    save_every: int = opt(100, "checkpoint every N steps and at the end")
    log_every: int = opt(10, "a progress line every N steps")

    def __post_init__(self):
        if self.save_every < 1 or self.log_every < 1:
            raise UserError("--save-every and --log-every: expected positive integers")


@dataclass
class EvalConfig:
    dataset: str = opt("xquad-r", "xquad-r, mlqa-r, or a directory of <lang>.json LAReQA files; or a "
                       "downstream task: xnli, tydiqa, sib-200, tatoeba; or a BEIR / MIRACL directory", required=True)
    model: str = opt("e5-small", "manifest model name or model directory")
    langs: list[str] | None = opt(None, "languages to evaluate, space- or comma-separated (None: all)",
                                  nargs="+", type=comma_list)
    out: str | None = opt(None, "write the results as JSON to this file")
    batch_size: int = opt(64, "texts per encoder call")
    max_len: int = opt(512, "tokens per text (512 cuts no LAReQA sentence)")
    context: bool = opt(False, "append the paragraph to each candidate sentence")
    allow_seen: bool = opt(False, "evaluate a model whose provenance lists this dataset as training data")
    progress: bool = opt(True, "no progress lines on stderr", flag="--quiet")
    limit: int | None = opt(None, "downstream tasks: at most N rows of every file (quick runs)", type=int)
    dtype: str = opt("fp32", "fp32, bf16 autocast (faster only where the CPU has bf16) or int8 (CPU): "
                     "docs/PRECISION.md", choices=DTYPES)
    device: str = opt("cpu", "where the encoder runs (search and metrics: numpy, CPU)", choices=DEVICES)
    compile: bool = opt(False, "torch.compile the encoder, weights frozen in (fp32, bf16, int8; ~30 s to compile "
                        "e5-small on 2 cores): docs/PRECISION.md")
    split: str | None = opt(None, "BEIR / MIRACL: the qrels split (None: the only one, else test)")
    run_out: str | None = opt(None, "BEIR / MIRACL: write each query's top 100 as a TREC run file")

    def __post_init__(self):
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be a positive integer, got {self.batch_size}")
        if self.max_len < 2:
            raise UserError(f"--max-len must be at least 2 tokens, got {self.max_len}")
        if self.langs is not None and not self.langs:
            raise UserError("--langs: empty language set; give at least one language")
        if self.out:
            if Path(self.out).is_dir():
                raise UserError(f"--out {self.out}: is a directory; expected a JSON file name")
            parent = Path(self.out).resolve().parent
            if not (parent.is_dir() and os.access(parent, os.W_OK)):
                raise UserError(f"--out {self.out}: directory {parent} does not exist or is not writable")


def add_flags(p: argparse.ArgumentParser, cls, suppress: bool = False) -> None:
    """One flag per field of `cls`: --field-name, typed by its default, with its help and default."""
    for f in fields(cls):
        meta = dict(f.metadata)
        flag = meta.pop("flag", "--" + f.name.replace("_", "-"))
        default = f.default if f.default is not MISSING else f.default_factory()
        shown = ",".join(default) if isinstance(default, list) else default
        shown = "" if meta.get("required") or default is None or isinstance(default, bool) else f" ({shown})"
        help = meta.pop("help") + shown  # a switch's help says what it does; None's says what it means
        kw = {"dest": f.name, "help": help, **({"default": argparse.SUPPRESS} if suppress else {"default": default})}
        if isinstance(default, bool):  # a switch that flips the default
            kw["action"] = "store_false" if default else "store_true"
        else:
            kw["type"] = meta.pop("type", type(default) if default is not None else str)
        p.add_argument(flag, **kw, **meta)


def train_args(argv: list[str] | None) -> tuple[dict, RunConfig]:
    """train.py's command line: (the training flags given, as TrainConfig keywords; the run's flags)."""
    p = ArgumentParser(prog="python train.py", description="Fine-tune a multilingual dual encoder with "
                       "hybrid batch training (arXiv 2408.10536).")
    add_flags(p, TrainConfig, suppress=True)  # only what was given: --resume refuses training flags
    add_flags(p.add_argument_group("run"), RunConfig, suppress=True)
    given = vars(p.parse_args(argv))
    run = {f.name for f in fields(RunConfig)}
    return {k: v for k, v in given.items() if k not in run}, RunConfig(**{k: v for k, v in given.items() if k in run})


def eval_args(argv: list[str] | None) -> EvalConfig:
    p = ArgumentParser(prog="python eval.py", description="Evaluate a dual encoder: LAReQA retrieval, "
                       "downstream tasks, BEIR / MIRACL collections.")
    add_flags(p, EvalConfig)
    kw = vars(p.parse_args(argv))
    if kw["langs"] is not None:  # nargs="+" of comma lists: ["de,en", "es"] -> [["de", "en"], ["es"]]
        kw["langs"] = [l.strip() for part in kw["langs"] for l in part if l.strip()]
    return EvalConfig(**kw)
