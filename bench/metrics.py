"""mAP at XQuAD-R multilingual scale: minihbt.metrics against the LAReQA way and ranx, side by side.

Workload: 11 languages x 1,182 parallel questions = 13,002 queries; a pool of 13,002 candidate
sentences; each query has 11 relevant candidates (its answer in every language). Embeddings are
synthetic (384 dims) with a shared "meaning" vector per question plus noise and a per-language
offset, so relevant candidates rank high but not perfectly (mAP about 0.65, like a real model).

Each contender starts from its natural input (not timed: building that input):
- minihbt:  `metrics.average_precision(ranks)`, ranks (13002, 11) from `search.ranks`.
- sklearn:  the LAReQA code path, `average_precision_score(labels, scores)` per query over the
            full score row (13,002 candidates).
- ranx:     `ranx.metrics.average_precision` (numba, parallel) on per-query runs sorted by score
            and cut after the query's last relevant candidate (which leaves AP exact).
End to end from embeddings is reported too: `search.ranks` + AP against one matrix product +
the sklearn loop. All AP values are checked equal (the random scores have no exact ties).

    python bench/metrics.py [--groups 1182] [--langs 11] [--dim 384] [--sklearn-queries N]
Last line: {"name": "metrics_map", "minihbt": s, "sklearn": s, "ratio_sklearn": minihbt / sklearn,
            "ranx": s, "ratio_ranx": minihbt / ranx, ...}   (ratio < 1: minihbt is faster)
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numba
import numpy as np
import torch
from ranx.metrics import average_precision as ranx_ap
from sklearn.metrics import average_precision_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from timing import best_of  # noqa: E402  (bench/ is on sys.path when run as a script)
from minihbt import metrics, search  # noqa: E402


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--groups", type=int, default=1182)
    p.add_argument("--langs", type=int, default=11)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--sklearn-queries", type=int, default=0, help="time sklearn on the first N queries "
                   "and scale up (0: all)")
    a = p.parse_args()
    G, L, d = a.groups, a.langs, a.dim

    rng = np.random.default_rng(0)
    meaning, lang = rng.standard_normal((G, d)), rng.standard_normal((L, d))
    C = unit(meaning[None] + 1.8 * rng.standard_normal((L, G, d)) + 0.6 * lang[:, None]).reshape(L * G, d)
    Q = unit(meaning[None] + 1.8 * rng.standard_normal((L, G, d)) + 0.6 * lang[:, None]).reshape(L * G, d)
    n, N = Q.shape[0], C.shape[0]
    group = np.tile(np.arange(G), L)  # question group of query / candidate i (language-major order)
    targets = np.arange(L)[None, :] * G + group[:, None]  # (n, L) pooled indices of the answers

    # --- minihbt: ranks (the part shared with eval.py), then AP
    t_ranks, ranks = best_of(lambda: search.ranks(Q, C, targets), 1)
    t_ours, ap_ours = best_of(lambda: metrics.average_precision(ranks), 5)

    # --- sklearn per query on the full score row, as LAReQA's evaluation does
    t0 = time.perf_counter()
    S = (torch.from_numpy(Q) @ torch.from_numpy(C).T).numpy()  # (n, N)
    t_matmul = time.perf_counter() - t0
    m = a.sklearn_queries or n
    labels = np.zeros(N, dtype=np.int64)
    ap_sk = np.empty(m)
    t0 = time.perf_counter()
    for i in range(m):
        labels[:] = 0
        labels[targets[i]] = 1
        ap_sk[i] = average_precision_score(labels, S[i])
    t_sk = (time.perf_counter() - t0) * n / m
    np.testing.assert_allclose(ap_ours[:m], ap_sk, rtol=0, atol=1e-12)

    # --- ranx on sorted runs cut after the last relevant candidate
    cut = ranks.max(axis=1)
    qrels, run = numba.typed.List(), numba.typed.List()
    for i in range(n):
        order = np.argsort(-S[i], kind="stable")[: cut[i]]
        run.append(np.stack([order.astype(np.float64), S[i, order].astype(np.float64)], axis=1))
        qrels.append(np.stack([np.sort(targets[i]).astype(np.float64), np.ones(L)], axis=1))
    ranx_ap(qrels[:2], run[:2])  # numba compiles on first call
    t_ranx, ap_ranx = best_of(lambda: ranx_ap(qrels, run), 5)
    np.testing.assert_allclose(ap_ours, ap_ranx, rtol=0, atol=1e-12)

    print(f"{n} queries x {L} relevant in a pool of {N}; mAP {ap_ours.mean():.6f} (all three agree)")
    print(f"threads: torch {torch.get_num_threads()}, numba {numba.get_num_threads()}")
    print(f"minihbt AP from ranks        {t_ours * 1e3:10.2f} ms")
    print(f"ranx AP from cut runs        {t_ranx * 1e3:10.2f} ms   minihbt/ranx {t_ours / t_ranx:.3f}")
    print(f"sklearn loop from scores     {t_sk * 1e3:10.2f} ms   minihbt/sklearn {t_ours / t_sk:.5f}"
          + (f"  (timed on {m} queries, scaled)" if m < n else ""))
    print(f"end to end from embeddings: minihbt ranks + AP {t_ranks + t_ours:.2f} s, "
          f"matmul + sklearn loop {t_matmul + t_sk:.2f} s")
    print(json.dumps({
        "name": "metrics_map", "queries": n, "relevant_per_query": L, "pool": N,
        "minihbt": round(t_ours, 6), "sklearn": round(t_sk, 4), "ratio_sklearn": round(t_ours / t_sk, 6),
        "ranx": round(t_ranx, 6), "ratio_ranx": round(t_ours / t_ranx, 4),
        "minihbt_end_to_end": round(t_ranks + t_ours, 3), "sklearn_end_to_end": round(t_matmul + t_sk, 3),
        "ratio_sklearn_end_to_end": round((t_ranks + t_ours) / (t_matmul + t_sk), 4),
        "map": float(ap_ours.mean())}))


if __name__ == "__main__":
    main()
