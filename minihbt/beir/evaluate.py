"""The BEIR / MIRACL protocol: every judged query against the whole corpus, trec_eval's measures.

MIRACL is what the paper reports beside XQuAD-R and MLQA-R (nDCG@10 and Recall@100); BEIR
collections are read the same way (minihbt/beir/collection.py). Queries are encoded with the model's query
prefix, passages with its passage prefix; the score is the inner product of the embeddings.

Measures, per query, with trec_eval's definitions (checked against pytrec_eval in
tests/test_evaluate.py); R = the query's relevant judged documents (grade >= 1), including
any missing from the corpus; r_1 < r_2 < ... the exact ranks of the relevant ones retrieved.
    nDCG@10     ndcg_cut_10: sum over r_i <= 10 of g_i / log2(1 + r_i), divided by the same sum
                for the query's grades sorted in decreasing order (gain = the grade)
    Recall@100  recall_100: #{r_i <= 100} / R
    MRR@10      recip_rank on the ranking cut at 10: 1 / r_1 if r_1 <= 10, else 0
    MAP         map at full depth: (1/R) * sum_i i / r_i, every rank in the whole corpus
A query whose judgments are all grade 0 scores 0 on every measure, as in trec_eval (it is in
the run and in the qrels); such queries are counted in the report. Means are unweighted over
the evaluated queries: trec_eval's "all" line and BEIR's numbers.

Ranks are exact over the whole corpus, with minihbt.search's tie rule (equal scores: lower corpus
index first), computed by minihbt.beir.shards one shard at a time; so MAP is what trec_eval's map
gives on a run listing all N documents, which no run file of a large corpus holds.

Run file (`write_run`, eval.py --run-out): TREC format `qid Q0 docid rank score tag`, the top
RUN_DEPTH documents per query in minihbt's order, scores printed with 9 significant digits (a
float32 is read back exactly). trec_eval ignores the rank column and re-sorts by score, ties by
docid in decreasing strcmp order: where scores tie exactly (duplicate passages) its order, and so
its numbers, can differ from eval.py's; without exact ties they agree (tested with pytrec_eval).
trec_eval's map on this file is MAP@RUN_DEPTH, not the full-depth MAP above.

Embeddings: the corpus goes into a shard store (minihbt.beir.shards) in <cache>/embeddings, keyed by
the model fingerprint, the corpus file's sha256, max_len, and what every embedding cache key has
(embed_cache.code_key: the encoding code's source hash, the torch version, the device type) plus
the encoder's dtype, so a numeric fix, a torch upgrade, --device or --dtype never reuses old
shards; a stopped encoding resumes at the first unfinished shard. Queries are cached by
minihbt.io.embed_cache.

Contract (cfg: eval.py's EvalConfig; reads model, batch_size, max_len, progress)
    trec_measures(ranks, gains) -> {"ndcg@10", "recall@100", "mrr@10", "map": float64 (n,)}
        ranks: int (n, m) exact 1-based ranks of each query's relevant documents, 0 for one not
        in the corpus or an empty slot; gains: (n, m) their grades, 0 for an empty slot.
    targets(coll) -> (corpus indices int64 (n, m), -1 where absent; grades float64 (n, m))
    encode(enc, coll, cfg, shard_rows) -> (queries np.float32 (n, H) in coll.queries order, shards.Store)
    evaluate(coll, Q, store, depth) -> (measures, (scores (n, depth'), corpus indices (n, depth')))
    write_run(path, coll, scores, indices, tag); report(...) -> JSON object; table(report) -> text
"""
from __future__ import annotations

import hashlib
import os
import re
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from minihbt.beir import collection, shards
from minihbt.beir.collection import Collection
from minihbt.io.artifacts import cache_dir
from minihbt.io.embed_cache import code_key, encode_cached
from minihbt.io.files import UserError, atomic_write_bytes
from minihbt.lareqa_eval import model_for

RUN_DEPTH = 100
MEASURES = ("ndcg@10", "recall@100", "mrr@10", "map")


def trec_measures(ranks, gains) -> dict[str, np.ndarray]:
    r = np.asarray(ranks, dtype=np.int64)
    g = np.asarray(gains, dtype=np.float64)
    if r.ndim != 2 or r.shape != g.shape:
        raise ValueError(f"ranks {r.shape} and gains {g.shape} must be matrices of one shape (n, m)")
    rel = g > 0
    n_rel = rel.sum(axis=1)
    hit = rel & (r > 0)                                   # relevant and retrieved (in the corpus)
    big = np.iinfo(np.int64).max
    ranked = np.sort(np.where(hit, r, big), axis=1)       # (n, m) r_1 < r_2 < ..., misses last
    i = np.arange(1, r.shape[1] + 1)
    ap = np.where(ranked < big, i / ranked, 0.0).sum(axis=1)
    top = hit & (r <= 10)
    dcg = np.where(top, g / np.log2(1 + np.where(top, r, 1)), 0.0).sum(axis=1)
    ideal = -np.sort(-np.where(rel, g, 0.0), axis=1)[:, :10]  # (n, min(m, 10)) best grades first
    idcg = (ideal / np.log2(np.arange(2, ideal.shape[1] + 2))).sum(axis=1)
    first = ranked[:, 0] if r.shape[1] else np.full(len(r), big)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "ndcg@10": np.where(idcg > 0, dcg / idcg, 0.0),
            "recall@100": np.where(n_rel > 0, (hit & (r <= 100)).sum(axis=1) / n_rel, 0.0),
            "mrr@10": np.where(first <= 10, 1.0 / first, 0.0),
            "map": np.where(n_rel > 0, ap / n_rel, 0.0),
        }


def targets(coll: Collection) -> tuple[np.ndarray, np.ndarray]:
    """Each query's relevant documents: corpus indices (-1: not in the corpus) and grades."""
    rel = [[(coll.corpus.judged.get(d, -1), g) for d, g in coll.qrels[q].items() if g >= 1] for q in coll.queries]
    m = max((len(x) for x in rel), default=0)
    t = np.full((len(rel), m), -1, dtype=np.int64)
    g = np.zeros((len(rel), m), dtype=np.float64)
    for row, x in enumerate(rel):
        for col, (index, grade) in enumerate(x):
            t[row, col], g[row, col] = index, grade
    return t, g


def _sha(*parts) -> str:
    return hashlib.sha256("|".join(str(p) for p in parts).encode()).hexdigest()


def encode(enc, coll: Collection, cfg, shard_rows: int = shards.SHARD_ROWS) -> tuple[np.ndarray, shards.Store]:
    """Query embeddings (cached) and the corpus's shard store (cached, resumable)."""
    model_fp = enc.fingerprint  # hashes every weight: compute once
    qids, texts = list(coll.queries), list(coll.queries.values())
    Q = encode_cached(enc, texts, "query", (model_fp, "beir-queries", _sha(*qids, *texts), cfg.max_len),
                      f"{coll.name}-queries", cfg.batch_size, cfg.max_len, cfg.progress)
    # dtype: the fingerprint holds it too (for bf16), but the key should not rest on that detail.
    key = _sha(model_fp, *code_key(enc), getattr(enc, "dtype", "fp32"), coll.corpus.sha256, cfg.max_len, "passage")
    path = cache_dir() / "embeddings" / f"{coll.name}-corpus-{key[:24]}"
    if cfg.progress:
        print(f"corpus: {len(coll.corpus)} passages into {path}", file=sys.stderr)
    store = shards.encode_store(enc, coll.corpus.texts, len(coll.corpus), Q.shape[1], path, "passage", key,
                                shard_rows, cfg.batch_size, cfg.max_len, cfg.progress)
    return Q, store


def evaluate(coll: Collection, Q: np.ndarray, store: shards.Store, depth: int = 0):
    """Per-query measures from exact full-depth ranks, and the top `depth` of each query."""
    t, g = targets(coll)
    scores, indices, ranks = shards.search_store(Q, store, depth, t)
    return trec_measures(ranks, g), (scores, indices)


def write_run(path, coll: Collection, scores: np.ndarray, indices: np.ndarray, tag: str = "minihbt") -> None:
    """The top documents of each query as a TREC run file, written atomically."""
    qids = list(coll.queries)
    unique = np.unique(indices)
    docid = dict(zip(unique.tolist(), coll.corpus.ids(unique)))
    bad = [x for x in [*qids, *docid.values()] if re.search(r"\s", x)]
    if bad:
        raise UserError(f"--run-out: id {bad[0]!r} holds white space, which a TREC run file cannot hold")
    lines = [f"{qid} Q0 {docid[j]} {rank} {s:.9g} {tag}\n"
             for qid, row_s, row_i in zip(qids, scores.tolist(), indices.tolist())
             for rank, (s, j) in enumerate(zip(row_s, row_i), 1)]
    atomic_write_bytes(path, "".join(lines).encode())


def report(coll: Collection, measures: dict, cfg, zero_shot: bool, seconds: float) -> dict:
    qids = list(coll.queries)
    no_relevant = sum(not any(g >= 1 for g in coll.qrels[q].values()) for q in qids)
    return {
        "dataset": coll.name,
        "format": coll.layout,
        "split": coll.split,
        "model": cfg.model,
        "dtype": getattr(cfg, "dtype", "fp32"),  # the encoder's precision (eval.py --dtype)
        "metrics": {m: float(np.mean(measures[m])) for m in MEASURES},
        "per_query": {q: {m: float(measures[m][i]) for m in MEASURES} for i, q in enumerate(qids)},
        "counts": {"queries": len(qids), "queries_without_relevant": no_relevant,
                   "judged_queries_not_in_queries_file": coll.missing_queries,
                   "corpus": len(coll.corpus), "empty_passages": coll.corpus.empty,
                   "relevant_not_in_corpus": coll.missing_docs},
        "zero_shot": zero_shot,
        "seconds": round(seconds, 2),
    }


def table(out: dict) -> str:
    c = out["counts"]
    head = f"{out['dataset']} [{out['split']}] / {out['model']}: {c['queries']} queries, {c['corpus']} passages" \
           + ("" if out["zero_shot"] else "  (seen in training)")
    names = ["nDCG@10", "Recall@100", "MRR@10", "MAP"]
    return "\n".join([head, "".join(f"{n:>12}" for n in names),
                      "".join(f"{out['metrics'][m]:12.4f}" for m in MEASURES)])


def run(cfg, encoder=None) -> dict:
    """eval.py on a BEIR or MIRACL directory (cfg: a minihbt.config.EvalConfig): read and check it
    all, then load the model, encode (sharded, cached), score; with cfg.run_out, the TREC run file."""
    t0 = time.perf_counter()
    if cfg.langs is not None or cfg.context:
        raise UserError(f"--langs and --context apply to LAReQA datasets, not to the collection {cfg.dataset}")
    if cfg.limit is not None:
        raise UserError("--limit applies to the downstream tasks (xnli, tydiqa, sib-200, tatoeba) only")
    if cfg.run_out:
        parent = Path(cfg.run_out).resolve().parent
        if Path(cfg.run_out).is_dir() or not (parent.is_dir() and os.access(parent, os.W_OK)):
            raise UserError(f"--run-out {cfg.run_out}: expected a file name in a writable directory")
    with warnings.catch_warnings(record=True) as caught:  # data warnings as one line each
        warnings.simplefilter("always", collection.DataWarning)
        coll = collection.load(cfg.dataset, cfg.split)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    enc, seen = model_for(cfg, encoder)
    Q, store = encode(enc, coll, cfg)
    measures, (scores, indices) = evaluate(coll, Q, store, RUN_DEPTH if cfg.run_out else 0)
    if cfg.run_out:
        write_run(cfg.run_out, coll, scores, indices)
        print(f"wrote {cfg.run_out}", file=sys.stderr)
    return report(coll, measures, cfg, zero_shot=not seen, seconds=time.perf_counter() - t0)
