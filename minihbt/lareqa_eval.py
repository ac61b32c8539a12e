"""The LAReQA protocol: embeddings of questions and sentences in, every number of the paper's Table 1 out.

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
  rank distance (max - min rank of a query's relevant candidates in the pooled ranking), defined
  for queries with at least two relevant candidates: queries with one (a --langs subset, a
  question asked in one language of the pool) are left out of its means and counted in
  `rank_distance.excluded` per language. (With all languages of XQuAD-R or MLQA-R every question
  has an answer in 2 to 11 languages: none is left out.)
  Ranks are exact (minihbt.search, ties to the lower candidate index). Every "mean" is a macro
  mean: over languages, or over ordered pairs for cross; per-language values are means over
  that language's questions. (For MLQA-R, whose languages have different numbers of questions,
  the macro multi mean differs from a mean over all questions pooled.)

Embeddings of each (language, questions|sentences) are cached in <cache>/embeddings, keyed by the
model fingerprint, the data fingerprint of that language's file, max_len and --context (and, by
minihbt/io/embed_cache.py, the encoding code, torch version, device and texts), written atomically,
so a second run (or a run on a subset of languages) encodes nothing.

Contract (cfg: a minihbt.config.EvalConfig; reads dataset, batch_size, max_len, context, progress, model)
    encode_dataset(enc, ds, cfg) -> (Q, C): {lang: np.float32 (questions of lang, H)},
        {lang: np.float32 (candidates of lang, H)}, row order = ds.questions / ds.candidates.
    evaluate(ds, Q, C) -> {"mono": {lang: Scores}, "cross": {"x-y": Scores}, "multi": {lang: Scores}}.
    report(ds, res, cfg, zero_shot, seconds, model_fp) -> the JSON results object (with the model's
        fingerprint, so a result can be told from one of a retrained model); table(report) -> text.
        The report holds each query's ranks ("per_query"): minihbt/per_query.py re-derives each
        query's values from them, the unit of paired intervals. Pair keys are "x-y" (per_query.pair_keys).
    seen_in_training(provenance, dataset): the zero-shot guard, following base-model provenance.
    run(cfg, encoder=None): eval.py's LAReQA path (cfg: minihbt.config.EvalConfig).
"""
from __future__ import annotations

import math
import sys
import time
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np

from minihbt import metrics, search
from minihbt.io.embed_cache import encode_cached
from minihbt.io.files import UserError
from minihbt.per_query import nanmean as _mean, pair_keys, per_query
from minihbt.lareqa import LANGS, Candidate, DataWarning, LAReQA, dataset_fingerprint, load_lareqa


def candidate_text(c: Candidate, context: bool) -> str:
    return f"{c.text} {c.context}" if context else c.text


def encode_dataset(enc, ds: LAReQA, cfg, model_fp: str | None = None):
    """Question and candidate embeddings per language, each encoded once and cached."""
    Q, C = {}, {}
    model_fp = model_fp or enc.fingerprint  # hashes every weight: compute once
    for lang in ds.langs:
        fp = dataset_fingerprint(cfg.dataset, [lang])
        for kind, texts in (("query", [q.text for q in ds.questions[lang]]),
                            ("passage", [candidate_text(c, cfg.context) for c in ds.candidates[lang]])):
            # the key of the cache files eval.py has written since it first cached embeddings
            key = (model_fp, fp, lang, kind, cfg.max_len, int(cfg.context and kind == "passage"))
            (Q if kind == "query" else C)[lang] = encode_cached(
                enc, texts, kind, key, f"{lang}-{kind}", cfg.batch_size, cfg.max_len, cfg.progress)
    return Q, C


# ----------------------------------------------------------------------------- metrics

class Scores(NamedTuple):
    """Means over the queries of one language (mono, multi) or one ordered pair (cross)."""
    map: float
    recall: float            # R@1 for mono and cross, R@10 for multi
    queries: int             # questions counted (cross: those with an answer in the candidate language)
    rank_distance: float = math.nan  # multi only: mean over the queries with >= 2 relevant candidates
    excluded: int = 0        # multi only: queries left out of rank_distance (fewer than 2 relevant)
    ranks: np.ndarray | None = None  # int (queries, relevant): each query's ranks (minihbt.metrics), 0 = empty slot


def evaluate(ds: LAReQA, Q: dict[str, np.ndarray], C: dict[str, np.ndarray]) -> dict[str, dict[str, Scores]]:
    """Every LAReQA number from embeddings: {"mono": {lang: Scores}, "cross": {"x-y": ...}, "multi": {lang: ...}}."""
    langs = ds.langs
    keys = pair_keys(langs)
    mono, cross, multi = {}, {}, {}
    for x in langs:
        qids = [q.qid for q in ds.questions[x]]
        for y in langs:
            keep = [i for i, qid in enumerate(qids) if qid in ds.answer[y]]
            targets = np.array([[ds.answer[y][qids[i]]] for i in keep], dtype=np.int64).reshape(-1, 1)
            r = search.ranks(Q[x][keep], C[y], targets)
            row = Scores(_mean(metrics.average_precision(r)), _mean(metrics.recall_at_k(r, 1)), len(keep), ranks=r)
            if x == y:
                mono[x] = row
            else:
                cross[keys[x, y]] = row

    # One score matrix per query language against the pooled candidates of all languages.
    offset = dict(zip(langs, np.cumsum([0] + [len(C[l]) for l in langs])))
    pool = np.concatenate([C[l] for l in langs])  # (sum of candidates, d)
    for x in langs:
        targets = np.full((len(ds.questions[x]), len(langs)), -1, dtype=np.int64)
        for i, q in enumerate(ds.questions[x]):
            rel = [offset[l] + j for l, j in ds.relevant(q.qid, langs)]
            targets[i, : len(rel)] = rel
        r = search.ranks(Q[x], pool, targets)
        rd = metrics.rank_distance(r)  # NaN where a query has fewer than 2 relevant candidates
        multi[x] = Scores(_mean(metrics.average_precision(r)), _mean(metrics.recall_at_k(r, 10)), len(targets),
                          _mean(rd), int(np.isnan(rd).sum()), ranks=r)
    return {"mono": mono, "cross": cross, "multi": multi}


def _json_number(v: float):
    return None if math.isnan(v) else v


def _summary(rows: dict[str, Scores], field: str, per: str) -> dict:
    values = {k: getattr(v, field) for k, v in rows.items()}
    return {"mean": _json_number(_mean(values.values())), per: {k: _json_number(v) for k, v in values.items()}}


def report(ds: LAReQA, res: dict, cfg, zero_shot: bool, seconds: float, model_fp: str | None = None) -> dict:
    """The JSON results object (NaN, e.g. an empty pair, is null)."""
    mono, cross, multi = res["mono"], res["cross"], res["multi"]
    return {
        "dataset": ds.name,
        "model": cfg.model,
        "model_fingerprint": model_fp,  # TextEncoder.fingerprint of the model evaluated
        "dtype": getattr(cfg, "dtype", "fp32"),  # the encoder's precision (eval.py --dtype)
        "langs": ds.langs,
        "map": {"mono": _summary(mono, "map", "per_lang"),
                "cross": _summary(cross, "map", "per_pair"),
                "multi": _summary(multi, "map", "per_lang")},
        "recall": {"mono@1": _summary(mono, "recall", "per_lang"),
                   "cross@1": _summary(cross, "recall", "per_pair"),
                   "multi@10": _summary(multi, "recall", "per_lang")},
        "rank_distance": {**_summary(multi, "rank_distance", "per_lang"),
                          "excluded": {l: v.excluded for l, v in multi.items()}},  # < 2 relevant candidates
        "counts": {"questions": {l: len(ds.questions[l]) for l in ds.langs},
                   "candidates": {l: len(ds.candidates[l]) for l in ds.langs},
                   "skipped_questions": dict(ds.skipped),
                   "cross_pairs": len(cross),
                   "cross_questions": {k: v.queries for k, v in cross.items()},
                   "multi_pool": sum(len(ds.candidates[l]) for l in ds.langs)},
        "zero_shot": zero_shot,
        "seconds": round(seconds, 2),
        "per_query": per_query(ds, res),
    }


def table(out: dict) -> str:
    """Paper layout: one row per language (cross = mean over its pairs as query language), a mean row."""
    m, r = out["map"], out["recall"]
    keys = pair_keys(out["langs"])

    def query_lang_mean(per_pair: dict, x: str) -> float:
        values = [per_pair[keys[x, y]] for y in out["langs"] if y != x]
        return _mean([math.nan if v is None else v for v in values])

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
    """Whether `dataset` is among the training data, by name (the same name, or a directory of the
    same name) or by content: training stored a fingerprint of each dataset's files in its
    training languages (`data_fingerprints`), and `dataset`'s files in those languages give the
    same one. The content test catches a renamed copy of the training data."""
    if any(Path(d).name == Path(dataset).name for d in trained_on(provenance)):
        return True
    while provenance:
        stored = set((provenance.get("data_fingerprints") or {}).values())
        if stored and _fingerprint_in(dataset, provenance.get("langs") or []) in stored:
            return True
        provenance = provenance.get("base_model_provenance")
    return False


def _fingerprint_in(dataset: str, langs: list[str]) -> str | None:
    """dataset_fingerprint of a LAReQA dataset's files in `langs` (as train.py takes them), or None."""
    if Path(dataset).is_dir():
        available = {p.stem for p in Path(dataset).glob("*.json")}
    else:
        available = set(LANGS.get(dataset, ()))
    share = [l for l in langs if l in available]
    return dataset_fingerprint(dataset, share) if share else None


# ----------------------------------------------------------------------------- eval.py's LAReQA run

def load_model(name: str, dtype: str = "fp32", device: str = "cpu", compile: bool = False):
    """load_encoder (+ TextEncoder.compile) for a command line: every failure is one line naming --model."""
    import torch

    from minihbt import load_encoder
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible to torch")
    try:
        enc = load_encoder(name, device=device, dtype=dtype)
    except UserError as e:
        raise UserError(f"--model {name}: {e}") from None
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise UserError(f"--model {name}: cannot load a model from it ({type(e).__name__}: {e})") from None
    return enc.compile() if compile else enc


def model_for(cfg, encoder=None):
    """(the model to evaluate, whether it was trained on cfg.dataset); refuses a seen dataset unless --allow-seen."""
    enc = encoder if encoder is not None else load_model(cfg.model, cfg.dtype, cfg.device, cfg.compile)
    seen = seen_in_training(enc.meta.get("provenance"), cfg.dataset)
    if seen and not cfg.allow_seen:
        raise UserError(f"--model {cfg.model}: its provenance lists {cfg.dataset} as training data, so this "
                        "would not be zero-shot; pass --allow-seen to evaluate anyway")
    return enc, seen


def run(cfg, encoder=None) -> dict:
    """A LAReQA dataset: load and check it, then the model; encode (cached), score, print the table."""
    t0 = time.perf_counter()
    if cfg.limit is not None:
        raise UserError("--limit applies to the downstream tasks (xnli, tydiqa, sib-200, tatoeba) only")
    if cfg.split is not None or cfg.run_out:
        raise UserError("--split and --run-out apply to BEIR / MIRACL directories (corpus.jsonl + queries.jsonl "
                        "or topics/) only")
    with warnings.catch_warnings(record=True) as caught:  # data warnings as one line each
        warnings.simplefilter("always", DataWarning)
        ds = load_lareqa(cfg.dataset, cfg.langs)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    enc, seen = model_for(cfg, encoder)
    model_fp = enc.fingerprint  # hashes every weight: once, for the cache keys and the report
    Q, C = encode_dataset(enc, ds, cfg, model_fp)
    return report(ds, evaluate(ds, Q, C), cfg, zero_shot=not seen, seconds=time.perf_counter() - t0,
                  model_fp=model_fp)
