"""Ranking metrics computed from the ranks of relevant candidates (LAReQA, Roy et al. 2020;
hybrid batch training paper, Elmahdy et al. 2024, sec. 4: mAP, R@k and rank distance).

Every metric here is a function of one matrix:
    ranks: int (n, m). Row q holds the exact 1-based ranks (from `search.ranks`) of query q's
    relevant candidates in its ranking of the whole pool, in any order; 0 fills empty slots
    when queries have different numbers of relevant candidates.
The tie rule lives in `search`: equal scores are ordered by lower candidate index, so ranks are
distinct within a row (checked: a repeated rank is a ValueError, as it would give AP above 1).
Each function returns one value per query (float64 (n,)); means are the caller's `np.mean`, over
queries, unweighted (macro).

A query with no relevant candidate has no defined AP, recall or rank distance: it gets NaN, so a
mean that includes it is NaN too rather than silently 0 or 1. Rank distance needs two relevant
candidates: a query with one gets NaN too (not 0, which would read as "no language bias").
Callers leave such queries out and say how many (lareqa_eval reports the kept counts and
`rank_distance.excluded`).

AP uses trec_eval's and scikit-learn's denominator, the number of relevant candidates in the
pool, and is computed in closed form from the sorted ranks r_1 < ... < r_R:
    AP = (1/R) * sum_i  i / r_i        (precision at the i-th relevant candidate)
so it needs no sort of the pool and no per-query Python loop.
"""
from __future__ import annotations

import numpy as np


def _checked(ranks) -> np.ndarray:
    r = np.asarray(ranks)
    if r.ndim == 1:
        r = r[:, None]  # one relevant candidate per query
    if r.ndim != 2 or not np.issubdtype(r.dtype, np.integer):
        raise ValueError(f"ranks must be an integer matrix (n, m), got {r.dtype} {r.shape}")
    if (r < 0).any():
        raise ValueError("ranks must be 1-based, with 0 marking an empty slot")
    s = np.sort(r, axis=1)
    if ((s[:, 1:] == s[:, :-1]) & (s[:, 1:] > 0)).any():
        raise ValueError("ranks in a row must be distinct (one rank per candidate); got a repeated rank")
    return r.astype(np.int64)


def _n_relevant(r: np.ndarray) -> np.ndarray:
    return (r > 0).sum(axis=1)


def _nan_where_empty(values: np.ndarray, n_rel: np.ndarray) -> np.ndarray:
    return np.where(n_rel > 0, values, np.nan)


def average_precision(ranks) -> np.ndarray:
    """AP per query: mean over its relevant candidates of the precision at their rank.

    Denominator: number of relevant candidates (nonzero entries of the row).
    No relevant candidate: NaN.
    """
    r = _checked(ranks)
    n_rel = _n_relevant(r)
    big = np.iinfo(np.int64).max
    s = np.sort(np.where(r > 0, r, big), axis=1)  # empty slots sort last
    position = np.arange(1, r.shape[1] + 1)  # i: this is the i-th relevant hit
    precision = np.where(s < big, position / s, 0.0)  # (n, m)
    with np.errstate(invalid="ignore", divide="ignore"):
        return _nan_where_empty(precision.sum(axis=1) / n_rel, n_rel)


def mean_average_precision(ranks) -> float:
    """mAP: unweighted mean of `average_precision` over queries (NaN if any query has none)."""
    return float(np.mean(average_precision(ranks)))


def recall_at_k(ranks, k: int) -> np.ndarray:
    """R@k per query: fraction of its relevant candidates ranked in the top k.

    Denominator: number of relevant candidates; with one relevant candidate this is 1 if it
    is in the top k, else 0 (the paper's R@1). No relevant candidate: NaN.
    Also trec_eval's recall_k for graded qrels when `ranks` holds the ranks of the
    candidates with relevance > 0.
    """
    r = _checked(ranks)
    n_rel = _n_relevant(r)
    hits = ((r > 0) & (r <= k)).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return _nan_where_empty(hits / n_rel, n_rel)


def rank_distance(ranks) -> np.ndarray:
    """Language bias per query: max minus min rank of its relevant candidates.

    In the multilingual setting each row holds the ranks, in the pooled corpus, of the
    answer sentence in every language that has one; a small distance means the answers sit
    together whatever their language. Defined for queries with at least two relevant
    candidates; fewer (one, or none): NaN, left out of the caller's mean and counted.
    """
    r = _checked(ranks)
    n_rel = _n_relevant(r)
    big = np.iinfo(np.int64).max
    lo = np.where(r > 0, r, big).min(axis=1)
    hi = r.max(axis=1)
    return np.where(n_rel >= 2, (hi - lo).astype(np.float64), np.nan)


def ndcg_at_k(ranks, gains, k: int) -> np.ndarray:
    """nDCG@k per query for graded relevance (trec_eval's ndcg_cut_k).

    gains: (n, m) relevance grades aligned with `ranks` (> 0 for relevant candidates; entries
    at empty slots are ignored). DCG@k = sum over candidates ranked <= k of gain / log2(1 + rank);
    the ideal DCG sorts all the query's gains in decreasing order, ranks 1..k.
    Linear gain, as trec_eval. No candidate with gain > 0: NaN.
    """
    r = _checked(ranks)
    g = np.asarray(gains, dtype=np.float64)
    if g.ndim == 1:
        g = g[:, None]
    if g.shape != r.shape:
        raise ValueError(f"gains shape {g.shape} does not match ranks {r.shape}")
    g = np.where((r > 0) & (g > 0), g, 0.0)
    hit = (r > 0) & (r <= k)
    dcg = np.where(hit, g / np.log2(1 + np.where(hit, r, 1)), 0.0).sum(axis=1)
    ideal = -np.sort(-g, axis=1)[:, :k]  # (n, min(m, k)) best gains first
    idcg = (ideal / np.log2(np.arange(2, ideal.shape[1] + 2))).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(idcg > 0, dcg / idcg, np.nan)
