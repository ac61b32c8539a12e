"""Exact top-k search: minihbt.search.topk against faiss IndexFlatIP, side by side.

XQuAD-R multilingual scale: 13,000 queries x 13,000 candidates x 384 dims (e5-small), k = 100,
unit vectors. Both use every CPU thread torch / OpenMP see; the figure is the best of --repeat
runs. Results are checked equal: same indices wherever the scores are not within float32
rounding of a tie, scores within 1e-5.

    python bench/search.py [--n 13000] [--dim 384] [--k 100] [--repeat 3]
Last line: {"name": "search_topk", "minihbt": s, "faiss": s, "ratio_faiss": minihbt / faiss, ...}
"""
import argparse
import json
import sys
from pathlib import Path

import faiss
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from timing import best_of  # noqa: E402  (bench/ is on sys.path when run as a script)
from minihbt import search  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=13000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2 * a.n, a.dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q, c = x[: a.n], x[a.n:]

    index = faiss.IndexFlatIP(a.dim)
    index.add(c)
    t_faiss, (D, I) = best_of(lambda: index.search(q, a.k), a.repeat)
    t_ours, (S, J) = best_of(lambda: search.topk(q, c, a.k), a.repeat)

    np.testing.assert_allclose(S, D, rtol=0, atol=1e-5)
    differ = J != I
    # a different index is only acceptable where faiss's own scores tie within rounding
    near_tie = np.abs(np.diff(D, axis=1, prepend=np.inf)) < 1e-6
    near_tie |= np.abs(np.diff(D, axis=1, append=-np.inf)) < 1e-6
    assert not (differ & ~near_tie).any(), "top-k indices differ away from near-ties"

    print(f"threads: torch {torch.get_num_threads()}, faiss {faiss.omp_get_max_threads()}")
    print(f"faiss IndexFlatIP  {t_faiss:.3f} s")
    print(f"minihbt.topk       {t_ours:.3f} s   ratio {t_ours / t_faiss:.2f}x")
    print(f"indices equal: {1 - differ.mean():.6f} of entries ({int(differ.sum())} swapped near-ties)")
    print(json.dumps({"name": "search_topk", "shape": [a.n, a.n, a.dim], "k": a.k,
                      "minihbt": round(t_ours, 4), "faiss": round(t_faiss, 4),
                      "ratio_faiss": round(t_ours / t_faiss, 3), "indices_equal": float(1 - differ.mean())}))


if __name__ == "__main__":
    main()
