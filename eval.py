"""Evaluate a dual encoder on LAReQA: monolingual, cross-lingual and multilingual retrieval.

    python eval.py --dataset xquad-r|mlqa-r|DIR [--model e5-small|DIR] [--langs en de ...]
                   [--out FILE.json] [--batch-size 64] [--max-len 512] [--context] [--allow-seen]
                   [--dtype fp32|bf16|int8] [--device cpu|cuda]
    python eval.py --dataset xnli|tydiqa|sib-200|tatoeba [--model M] [--limit N] [--out FILE.json]
    python eval.py --dataset DIR [--split test] [--run-out run.trec] [--model M] [--out FILE.json]
                                                        # DIR: a BEIR or MIRACL collection

Prints the paper's table (mAP mono / cross / multi, R@1, R@10, rank distance; one row per
language) and, with --out, writes the JSON results. The protocol, what each number counts and
its denominators, is minihbt/lareqa_eval.py; embeddings are cached per (model, language file,
kind, max_len, --context) by minihbt/embed_cache.py, so a second run encodes nothing. A model
whose provenance lists the dataset as training data is refused unless --allow-seen is given.
The downstream tasks read frozen embeddings (a linear probe, passage retrieval, nearest
neighbours): their protocols are minihbt/downstream.py, run by minihbt/downstream_eval.py.
A BEIR / MIRACL directory (corpus.jsonl with queries.jsonl or topics/; minihbt/beir.py) gets
nDCG@10, Recall@100, MRR@10 and full-depth MAP as trec_eval defines them, the corpus encoded
into resumable shards and searched exactly a shard at a time (minihbt/beir_eval.py), and with
--run-out a TREC run file of each query's top 100.
"""
from __future__ import annotations

import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from minihbt import beir, beir_eval, downstream_eval, lareqa, load_encoder
from minihbt.files import ArgumentParser, UserError, atomic_write_json, run_cli
from minihbt.lareqa_eval import encode_dataset, evaluate, report, seen_in_training, table
from minihbt.text_encoder import DTYPES


@dataclass
class EvalConfig:
    dataset: str = "xquad-r"      # a LAReQA name, or a directory of <lang>.json files
    model: str = "e5-small"       # a manifest model name or a model directory
    langs: list[str] | None = None  # None: every language of the dataset
    out: str | None = None        # JSON results file
    batch_size: int = 64
    max_len: int = 512            # tokens; 512 cuts no LAReQA sentence
    context: bool = False         # append the paragraph to each candidate sentence
    allow_seen: bool = False      # evaluate even if the model was trained on this dataset
    progress: bool = True         # progress lines on stderr while encoding
    dtype: str = "fp32"           # "fp32" | "bf16" | "int8": the encoder's precision (minihbt/text_encoder.py)
    device: str = "cpu"           # "cpu" | "cuda": where the encoder runs (search and metrics: numpy, CPU)
    limit: int | None = None      # downstream tasks only: the first N rows of every file
    split: str | None = None      # BEIR / MIRACL only: the qrels split (None: the only one, else test)
    run_out: str | None = None    # BEIR / MIRACL only: write a TREC run file of the top 100 per query


# ----------------------------------------------------------------------------- command line

def load_model(name: str, dtype: str = "fp32", device: str = "cpu"):
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible to torch")
    try:
        return load_encoder(name, device=device, dtype=dtype)
    except UserError as e:
        raise UserError(f"--model {name}: {e}") from None
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise UserError(f"--model {name}: cannot load a model from it ({type(e).__name__}: {e})") from None


def run(cfg: EvalConfig, encoder=None) -> dict:
    """Load data and model, encode (cached), compute every metric, print the table, write JSON."""
    t0 = time.perf_counter()
    if cfg.batch_size < 1:
        raise UserError(f"--batch-size must be a positive integer, got {cfg.batch_size}")
    if cfg.max_len < 2:
        raise UserError(f"--max-len must be at least 2 tokens, got {cfg.max_len}")
    if cfg.langs is not None and not cfg.langs:
        raise UserError("--langs: empty language set; give at least one language")
    if cfg.out:
        if Path(cfg.out).is_dir():
            raise UserError(f"--out {cfg.out}: is a directory; expected a JSON file name")
        parent = Path(cfg.out).resolve().parent
        if not (parent.is_dir() and os.access(parent, os.W_OK)):
            raise UserError(f"--out {cfg.out}: directory {parent} does not exist or is not writable")
    if cfg.dataset in downstream_eval.TASKS:
        return run_downstream(cfg, encoder)
    if cfg.limit is not None:
        raise UserError(f"--limit applies to the downstream tasks ({', '.join(downstream_eval.TASKS)}) only")
    if beir.is_collection(cfg.dataset):
        return run_collection(cfg, encoder)
    if cfg.split is not None or cfg.run_out:
        raise UserError("--split and --run-out apply to BEIR / MIRACL directories (corpus.jsonl + queries.jsonl "
                        "or topics/) only")
    with warnings.catch_warnings(record=True) as caught:  # data warnings as one line each
        warnings.simplefilter("always", lareqa.DataWarning)
        ds = lareqa.load_lareqa(cfg.dataset, cfg.langs)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    enc, seen = model_for(cfg, encoder)
    Q, C = encode_dataset(enc, ds, cfg)
    out = report(ds, evaluate(ds, Q, C), cfg, zero_shot=not seen, seconds=time.perf_counter() - t0)
    print(table(out))
    if cfg.out:
        atomic_write_json(cfg.out, out)
        print(f"wrote {cfg.out}", file=sys.stderr)
    return out


def model_for(cfg: EvalConfig, encoder=None):
    """(the model to evaluate, whether it was trained on cfg.dataset); refuses a seen dataset unless --allow-seen."""
    enc = encoder if encoder is not None else load_model(cfg.model, cfg.dtype, cfg.device)
    seen = seen_in_training(enc.meta.get("provenance"), cfg.dataset)
    if seen and not cfg.allow_seen:
        raise UserError(f"--model {cfg.model}: its provenance lists {cfg.dataset} as training data, so this "
                        "would not be zero-shot; pass --allow-seen to evaluate anyway")
    return enc, seen


def run_collection(cfg: EvalConfig, encoder=None) -> dict:
    """A BEIR or MIRACL directory: read and check it all, then load the model, encode (sharded, cached), score."""
    t0 = time.perf_counter()
    if cfg.langs is not None or cfg.context:
        raise UserError(f"--langs and --context apply to LAReQA datasets, not to the collection {cfg.dataset}")
    if cfg.run_out:
        parent = Path(cfg.run_out).resolve().parent
        if Path(cfg.run_out).is_dir() or not (parent.is_dir() and os.access(parent, os.W_OK)):
            raise UserError(f"--run-out {cfg.run_out}: expected a file name in a writable directory")
    with warnings.catch_warnings(record=True) as caught:  # data warnings as one line each
        warnings.simplefilter("always", beir.DataWarning)
        coll = beir.load(cfg.dataset, cfg.split)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    enc, seen = model_for(cfg, encoder)
    Q, store = beir_eval.encode(enc, coll, cfg)
    measures, (scores, indices) = beir_eval.evaluate(coll, Q, store, beir_eval.RUN_DEPTH if cfg.run_out else 0)
    out = beir_eval.report(coll, measures, cfg, zero_shot=not seen, seconds=time.perf_counter() - t0)
    print(beir_eval.table(out))
    if cfg.run_out:
        beir_eval.write_run(cfg.run_out, coll, scores, indices)
        print(f"wrote {cfg.run_out}", file=sys.stderr)
    if cfg.out:
        atomic_write_json(cfg.out, out)
        print(f"wrote {cfg.out}", file=sys.stderr)
    return out


def run_downstream(cfg: EvalConfig, encoder=None) -> dict:
    """XNLI, TyDi QA, SIB-200 or Tatoeba: read the data first, then load the model, encode, report."""
    if cfg.langs is not None or cfg.context:
        raise UserError(f"--langs and --context apply to LAReQA datasets, not to {cfg.dataset}")
    if cfg.limit is not None and cfg.limit < 1:
        raise UserError(f"--limit must be a positive integer, got {cfg.limit}")
    data = downstream_eval.load(cfg.dataset, cfg.limit)
    enc = encoder if encoder is not None else load_model(cfg.model, cfg.dtype, cfg.device)
    task = downstream_eval.TaskConfig(cfg.dataset, cfg.limit, cfg.batch_size, cfg.max_len, cfg.progress)
    out = downstream_eval.run(enc, data, task, cfg.model)
    print(downstream_eval.table(out))
    if cfg.out:
        atomic_write_json(cfg.out, out)
        print(f"wrote {cfg.out}", file=sys.stderr)
    return out


def parse_args(argv: list[str] | None) -> EvalConfig:
    p = ArgumentParser(prog="python eval.py", description=__doc__.split("\n")[0])
    p.add_argument("--dataset", required=True, help="xquad-r, mlqa-r, or a directory of <lang>.json LAReQA files; "
                   "or a downstream task: xnli, tydiqa, sib-200, tatoeba; or a BEIR / MIRACL directory")
    p.add_argument("--model", default="e5-small", help="manifest model name or model directory (default e5-small)")
    p.add_argument("--langs", nargs="+", help="languages to evaluate, space- or comma-separated (default: all)")
    p.add_argument("--out", help="write the results as JSON to this file")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-len", type=int, default=512, help="max tokens per text (default 512: no sentence is cut)")
    p.add_argument("--context", action="store_true", help="append the paragraph to each candidate sentence")
    p.add_argument("--allow-seen", action="store_true", help="evaluate a model whose provenance lists this dataset")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--limit", type=int, help="downstream tasks: only the first N rows of every file (quick runs)")
    p.add_argument("--dtype", choices=DTYPES, default="fp32",
                   help="fp32 (default); bf16 autocast: faster only on bf16 hardware; int8 Linears (CPU; "
                        "docs/PRECISION.md)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="where the encoder runs (default cpu; embeddings are cached per device type)")
    p.add_argument("--split", help="BEIR / MIRACL: the qrels split (default: the only one, else test)")
    p.add_argument("--run-out", help="BEIR / MIRACL: write each query's top 100 as a TREC run file")
    a = p.parse_args(argv)
    langs = None if a.langs is None else [l.strip() for s in a.langs for l in s.split(",") if l.strip()]
    return EvalConfig(dataset=a.dataset, model=a.model, langs=langs, out=a.out, batch_size=a.batch_size,
                      max_len=a.max_len, context=a.context, allow_seen=a.allow_seen, progress=not a.quiet,
                      dtype=a.dtype, device=a.device, limit=a.limit, split=a.split, run_out=a.run_out)


def main(argv: list[str] | None = None) -> int:
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    run_cli(main)
