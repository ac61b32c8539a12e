"""Evaluate a dual encoder on LAReQA: monolingual, cross-lingual and multilingual retrieval.

    python eval.py --dataset xquad-r|mlqa-r|DIR [--model e5-small|DIR] [--langs en de ...]
                   [--out FILE.json] [--batch-size 64] [--max-len 512] [--context] [--allow-seen]

Protocol (LAReQA, Roy et al. 2020; Elmahdy et al. 2024, sec. 4 and Table 1)
- Queries are the questions; candidates are all sentences of all paragraphs, each encoded alone
  with the model's passage prefix (`--context` appends the paragraph after the sentence).
  The relevant candidates of a question are its answer sentences, one per language that has it.
- Monolingual, per language L: questions of L against the sentences of L.
- Cross-lingual, per ordered pair (X, Y), X != Y (110 pairs for XQuAD-R, 42 for MLQA-R):
  questions of X against the sentences of Y, counting only questions with an answer in Y
  (in XQuAD-R all of them; MLQA-R questions exist in 2 to 4 languages). Counts are reported.
- Multilingual, per query language X: questions of X against the pooled sentences of every
  evaluated language; the relevant set holds the answer sentence in each language.
- Metrics (minihbt.metrics): AP (denominator = relevant candidates in the pool) averaged into mAP;
  R@1 for mono and cross, R@10 for multi (fraction of the relevant found in the top 10);
  rank distance (max - min rank of a query's relevant candidates in the pooled ranking).
  Ranks are exact (minihbt.search, ties to the lower candidate index). Every "mean" is a macro
  mean: over languages, or over ordered pairs for cross; per-language values are means over
  that language's questions. (For MLQA-R, whose languages have different numbers of questions,
  the macro multi mean differs from a mean over all questions pooled.)

Embeddings of each (language, questions|sentences) are cached in <cache>/embeddings, keyed by the
model fingerprint, the data fingerprint of that language's file, max_len and --context, written
atomically, so a second run (or a run on a subset of languages) encodes nothing.
"""
from __future__ import annotations

import hashlib
import io
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from minihbt import data, metrics, search
from minihbt.files import ArgumentParser, UserError, atomic_write_bytes, atomic_write_json, run_cli


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


# ----------------------------------------------------------------------------- encoding

def candidate_text(c: data.Candidate, context: bool) -> str:
    return f"{c.text} {c.context}" if context else c.text


def _cache_path(model_fp: str, data_fp: str, lang: str, kind: str, cfg: EvalConfig) -> Path:
    key = f"{model_fp}|{data_fp}|{lang}|{kind}|{cfg.max_len}|{int(cfg.context and kind == 'passage')}"
    name = hashlib.sha256(key.encode()).hexdigest()[:24]
    return data.cache_dir() / "embeddings" / f"{lang}-{kind}-{name}.npy"


def _encode_cached(enc, texts: list[str], kind: str, path: Path, cfg: EvalConfig, what: str) -> np.ndarray:
    if path.is_file():
        try:
            e = np.load(path, allow_pickle=False)
            if e.ndim == 2 and e.shape[0] == len(texts):
                return e
        except (OSError, ValueError):
            pass  # a damaged cache file is re-encoded and replaced below
    if cfg.progress:
        print(f"encoding {what}: {len(texts)} texts", file=sys.stderr)
    e = np.ascontiguousarray(enc.encode(texts, kind=kind, batch_size=cfg.batch_size,
                                        max_len=cfg.max_len, progress=cfg.progress), dtype=np.float32)
    buf = io.BytesIO()
    np.save(buf, e, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())
    return e


def encode_dataset(enc, ds: data.LAReQA, cfg: EvalConfig):
    """Question and candidate embeddings per language, each encoded once and cached."""
    Q, C = {}, {}
    model_fp = enc.fingerprint  # hashes every weight: compute once
    for lang in ds.langs:
        fp = data.dataset_fingerprint(cfg.dataset, [lang])
        Q[lang] = _encode_cached(enc, [q.text for q in ds.questions[lang]], "query",
                                 _cache_path(model_fp, fp, lang, "query", cfg), cfg, f"{lang} questions")
        C[lang] = _encode_cached(enc, [candidate_text(c, cfg.context) for c in ds.candidates[lang]], "passage",
                                 _cache_path(model_fp, fp, lang, "passage", cfg), cfg, f"{lang} sentences")
    return Q, C


# ----------------------------------------------------------------------------- metrics

def _mean(values) -> float:
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


class Scores(NamedTuple):
    """Means over the queries of one language (mono, multi) or one ordered pair (cross)."""
    map: float
    recall: float            # R@1 for mono and cross, R@10 for multi
    queries: int             # questions counted (cross: those with an answer in the candidate language)
    rank_distance: float = math.nan  # multi only


def evaluate(ds: data.LAReQA, Q: dict[str, np.ndarray], C: dict[str, np.ndarray]) -> dict[str, dict[str, Scores]]:
    """Every LAReQA number from embeddings: {"mono": {lang: Scores}, "cross": {"x-y": ...}, "multi": {lang: ...}}."""
    langs = ds.langs
    mono, cross, multi = {}, {}, {}
    for x in langs:
        qids = [q.qid for q in ds.questions[x]]
        for y in langs:
            keep = [i for i, qid in enumerate(qids) if qid in ds.answer[y]]
            targets = np.array([[ds.answer[y][qids[i]]] for i in keep], dtype=np.int64).reshape(-1, 1)
            r = search.ranks(Q[x][keep], C[y], targets)
            row = Scores(_mean(metrics.average_precision(r)), _mean(metrics.recall_at_k(r, 1)), len(keep))
            if x == y:
                mono[x] = row
            else:
                cross[f"{x}-{y}"] = row

    # One score matrix per query language against the pooled candidates of all languages.
    offset = dict(zip(langs, np.cumsum([0] + [len(C[l]) for l in langs])))
    pool = np.concatenate([C[l] for l in langs])  # (sum of candidates, d)
    for x in langs:
        targets = np.full((len(ds.questions[x]), len(langs)), -1, dtype=np.int64)
        for i, q in enumerate(ds.questions[x]):
            rel = [offset[l] + j for l, j in ds.relevant(q.qid, langs)]
            targets[i, : len(rel)] = rel
        r = search.ranks(Q[x], pool, targets)
        multi[x] = Scores(_mean(metrics.average_precision(r)), _mean(metrics.recall_at_k(r, 10)), len(targets),
                          _mean(metrics.rank_distance(r)))
    return {"mono": mono, "cross": cross, "multi": multi}


def _json_number(v: float):
    return None if math.isnan(v) else v


def _summary(rows: dict[str, Scores], field: str, per: str) -> dict:
    values = {k: getattr(v, field) for k, v in rows.items()}
    return {"mean": _json_number(_mean(values.values())), per: {k: _json_number(v) for k, v in values.items()}}


def report(ds: data.LAReQA, res: dict, cfg: EvalConfig, zero_shot: bool, seconds: float) -> dict:
    """The JSON results object (schema of issue 5; NaN, e.g. an empty pair, is null)."""
    mono, cross, multi = res["mono"], res["cross"], res["multi"]
    return {
        "dataset": ds.name,
        "model": cfg.model,
        "langs": ds.langs,
        "map": {"mono": _summary(mono, "map", "per_lang"),
                "cross": _summary(cross, "map", "per_pair"),
                "multi": _summary(multi, "map", "per_lang")},
        "recall": {"mono@1": _summary(mono, "recall", "per_lang"),
                   "cross@1": _summary(cross, "recall", "per_pair"),
                   "multi@10": _summary(multi, "recall", "per_lang")},
        "rank_distance": _summary(multi, "rank_distance", "per_lang"),
        "counts": {"questions": {l: len(ds.questions[l]) for l in ds.langs},
                   "candidates": {l: len(ds.candidates[l]) for l in ds.langs},
                   "skipped_questions": dict(ds.skipped),
                   "cross_pairs": len(cross),
                   "cross_questions": {k: v.queries for k, v in cross.items()},
                   "multi_pool": sum(len(ds.candidates[l]) for l in ds.langs)},
        "zero_shot": zero_shot,
        "seconds": round(seconds, 2),
    }


def table(out: dict) -> str:
    """Paper layout: one row per language (cross = mean over its pairs as query language), a mean row."""
    m, r = out["map"], out["recall"]

    def query_lang_mean(per_pair: dict, x: str) -> float:
        return _mean([math.nan if v is None else v for k, v in per_pair.items() if k.split("-")[0] == x])

    def cell(v, digits: int = 3) -> str:
        return f"{v:9.{digits}f}" if v is not None and not math.isnan(v) else f"{'-':>9}"

    head = ["mAP mono", "mAP cross", "mAP multi", "R@1 mono", "R@1 cross", "R@10 multi", "rank dist"]
    lines = [f"{out['dataset']} / {out['model']}" + ("" if out["zero_shot"] else "  (seen in training)"),
             f"{'lang':<6}" + "".join(f"{h:>11}" for h in head)]
    for x in out["langs"]:
        row = [m["mono"]["per_lang"][x], query_lang_mean(m["cross"]["per_pair"], x), m["multi"]["per_lang"][x],
               r["mono@1"]["per_lang"][x], query_lang_mean(r["cross@1"]["per_pair"], x),
               r["multi@10"]["per_lang"][x]]
        lines.append(f"{x:<6}" + "".join(f"  {cell(v)}" for v in row)
                     + f"  {cell(out['rank_distance']['per_lang'][x], 1)}")
    means = [m["mono"]["mean"], m["cross"]["mean"], m["multi"]["mean"],
             r["mono@1"]["mean"], r["cross@1"]["mean"], r["multi@10"]["mean"]]
    lines.append(f"{'mean':<6}" + "".join(f"  {cell(v)}" for v in means)
                 + f"  {cell(out['rank_distance']['mean'], 1)}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- zero-shot guard

def trained_on(provenance: dict | None) -> list[str]:
    """Datasets (names or directories) in a checkpoint's provenance `train_data`, following
    `base_model_provenance` so a model fine-tuned from a fine-tuned model counts both."""
    names = []
    while provenance:
        used = provenance.get("train_data") or []
        names += [used] if isinstance(used, str) else list(used)
        provenance = provenance.get("base_model_provenance")
    return names


def seen_in_training(provenance: dict | None, dataset: str) -> bool:
    """Whether `dataset` is among the training data: same name, or a directory of the same name."""
    return any(Path(d).name == Path(dataset).name for d in trained_on(provenance))


# ----------------------------------------------------------------------------- command line

def load_model(name: str):
    from minihbt.encoder import load_encoder  # torch; imported only when a model is needed

    try:
        return load_encoder(name)
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
    with warnings.catch_warnings(record=True) as caught:  # data warnings as one line each
        warnings.simplefilter("always", data.DataWarning)
        ds = data.load_lareqa(cfg.dataset, cfg.langs)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    enc = encoder if encoder is not None else load_model(cfg.model)
    seen = seen_in_training(enc.meta.get("provenance"), cfg.dataset)
    if seen and not cfg.allow_seen:
        raise UserError(f"--model {cfg.model}: its provenance lists {cfg.dataset} as training data, so this "
                        "would not be zero-shot; pass --allow-seen to evaluate anyway")
    Q, C = encode_dataset(enc, ds, cfg)
    out = report(ds, evaluate(ds, Q, C), cfg, zero_shot=not seen, seconds=time.perf_counter() - t0)
    print(table(out))
    if cfg.out:
        atomic_write_json(cfg.out, out)
        print(f"wrote {cfg.out}", file=sys.stderr)
    return out


def parse_args(argv: list[str] | None) -> EvalConfig:
    p = ArgumentParser(prog="python eval.py", description=__doc__.split("\n")[0])
    p.add_argument("--dataset", required=True, help="xquad-r, mlqa-r, or a directory of <lang>.json LAReQA files")
    p.add_argument("--model", default="e5-small", help="manifest model name or model directory (default e5-small)")
    p.add_argument("--langs", nargs="+", help="languages to evaluate, space- or comma-separated (default: all)")
    p.add_argument("--out", help="write the results as JSON to this file")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-len", type=int, default=512, help="max tokens per text (default 512: no sentence is cut)")
    p.add_argument("--context", action="store_true", help="append the paragraph to each candidate sentence")
    p.add_argument("--allow-seen", action="store_true", help="evaluate a model whose provenance lists this dataset")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    a = p.parse_args(argv)
    langs = None if a.langs is None else [l.strip() for s in a.langs for l in s.split(",") if l.strip()]
    return EvalConfig(dataset=a.dataset, model=a.model, langs=langs, out=a.out, batch_size=a.batch_size,
                      max_len=a.max_len, context=a.context, allow_seen=a.allow_seen, progress=not a.quiet)


def main(argv: list[str] | None = None) -> int:
    run(parse_args(argv))
    return 0


if __name__ == "__main__":
    run_cli(main)
