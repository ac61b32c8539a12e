"""Write tests/golden/search_golden.json: exact top-k from faiss IndexFlatIP and a numpy full sort.

Two cases:
- "random": Gaussian float32 vectors, no ties. faiss gives the reference indices and scores;
  the script checks that neighbouring scores differ by far more than float32 rounding, so the
  order cannot depend on how the inner products were summed.
- "tied": small-integer vectors with repeated rows, so many scores tie exactly (integer inner
  products are exact in float32). faiss breaks ties its own way (it tends to prefer the higher
  id), so the reference order is a numpy lexsort by (score descending, index ascending), which
  is minihbt's tie rule; faiss still supplies the reference scores.

Usage: python tools/gen_search_golden.py   (needs faiss-cpu)
"""
import json
from pathlib import Path

import faiss
import numpy as np

OUT = Path(__file__).resolve().parents[1] / "tests" / "golden" / "search_golden.json"


def full_sort(q: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = q.astype(np.float64) @ c.astype(np.float64).T  # exact for the integer case
    idx = np.arange(c.shape[0])
    order = np.stack([np.lexsort((idx, -row)) for row in s])  # last key is primary
    return np.take_along_axis(s, order, 1), order


def faiss_search(q, c, k):
    index = faiss.IndexFlatIP(c.shape[1])
    index.add(c)
    return index.search(q, k)


def main():
    rng = np.random.default_rng(20240820)
    cases = {}

    q = rng.standard_normal((9, 16)).astype(np.float32)
    c = rng.standard_normal((60, 16)).astype(np.float32)
    k = 7
    D, I = faiss_search(q, c, k)
    s_sorted, order = full_sort(q, c)
    assert (order[:, :k] == I).all(), "faiss and the full sort disagree on a tie-free case"
    gaps = -np.diff(s_sorted[:, : k + 1], axis=1)
    assert gaps.min() > 1e-4, "scores too close for a float32 golden"
    cases["random"] = {"queries": q.tolist(), "candidates": c.tolist(), "k": k,
                       "faiss_scores": D.tolist(), "faiss_indices": I.tolist()}

    base = rng.integers(-2, 3, size=(8, 6)).astype(np.float32)
    c = base[rng.integers(0, 8, size=40)]  # every row repeated about 5 times
    q = rng.integers(-2, 3, size=(5, 6)).astype(np.float32)
    D, I = faiss_search(q, c, 40)
    s_sorted, order = full_sort(q, c)
    assert np.array_equal(D, s_sorted.astype(np.float32))
    cases["tied"] = {"queries": q.tolist(), "candidates": c.tolist(),
                     "sorted_scores": s_sorted.tolist(), "sorted_indices": order.tolist(),
                     "faiss_scores": D.tolist(), "faiss_indices": I.tolist(),
                     "faiss_tie_order_differs": bool((I != order).any())}

    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"generator": "tools/gen_search_golden.py",
                               "faiss": faiss.__version__, "cases": cases}) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
