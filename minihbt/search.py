"""Exact inner-product search: top-k lists and the ranks of given candidates.

Embeddings are L2-normalised, so the inner product is the cosine score of the paper (sec. 3).
The search is brute force (every query against every candidate) because LAReQA pools are
small (13k sentences) and an evaluation must not lose recall to an approximate index.

Contract
- queries (n, d) and candidates (N, d): float32 numpy arrays or torch tensors; score = q . c.
- Tie rule, one for the whole project: a higher score comes first; among equal scores the
  lower candidate index comes first. `topk` and `ranks` agree on it (and score the same chunks
  of queries, so they see the same rounding), so the rank of `topk(...)[1][q, j]` is exactly
  j + 1 for the same `max_bytes`.
- `ranks` gives the exact 1-based rank of each requested candidate without sorting the pool:
      rank(q, c) = 1 + #{c' : s(q,c') > s(q,c)} + #{c' < c : s(q,c') = s(q,c)}
- Scores must be finite: NaN compares false with everything, so a NaN score would rank first
  (or last) and give impossible metrics. Non-finite embeddings, and scores that overflow
  float32, are a `UserError` naming the matrix and its first bad row; nothing is ranked.
- Targets in a row are distinct candidates, so their ranks are distinct (asserted).
- Memory is bounded: queries are scored a chunk of rows at a time, sized so that the chunk's
  float32 scores and one comparison mask (6 bytes per candidate) take at most about `max_bytes`.
"""
from __future__ import annotations

import numpy as np
import torch

from minihbt.io.files import UserError

MAX_BYTES = 256 * 2**20  # scores held at once per chunk of queries


def _as_tensor(x, what: str) -> torch.Tensor:
    t = torch.as_tensor(x)
    if t.dim() != 2:
        raise ValueError(f"expected a 2-D matrix of embeddings, got shape {tuple(t.shape)}")
    t = t.float()
    _check_finite(t, what)
    return t


def _check_finite(t: torch.Tensor, what: str, first_row: int = 0) -> None:
    bad = ~torch.isfinite(t)
    if bad.any():
        rows = bad.any(dim=1).nonzero().flatten()
        raise UserError(f"{what}: {int(bad.sum())} value(s) are NaN or infinite, in {rows.numel()} row(s), "
                        f"the first row {first_row + int(rows[0])}; no ranking is meaningful")


def _rows_per_chunk(bytes_per_row: int, max_bytes: int) -> int:
    # topk and ranks must cut the queries into the same chunks: a BLAS product's rounding can
    # depend on how many rows it multiplies, and near-tied scores would then order differently.
    return max(1, max_bytes // max(1, bytes_per_row))


def _order_ties(vals: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sort each row by (score descending, index ascending).

    Sort by index first, then stably by score: the stable pass keeps index order among ties.
    """
    idx, perm = idx.sort(dim=1)
    vals = vals.gather(1, perm)
    vals, perm = vals.sort(dim=1, descending=True, stable=True)
    return vals, idx.gather(1, perm)


def topk(queries, candidates, k: int, max_bytes: int = MAX_BYTES) -> tuple[np.ndarray, np.ndarray]:
    """Top-k candidates of every query by inner product, under the tie rule above.

    Returns (scores float32 (n, k'), indices int64 (n, k')) with k' = min(k, N).
    torch.topk alone is not enough: it may return any of several tied candidates at the
    k-th place, in any order. Its *values* are exact, so rows whose k-th and (k+1)-th values
    differ have a unique top-k set and only need their ties ordered; the few rows with a tie
    across the cut are rebuilt from the full score row.
    """
    q, c = _as_tensor(queries, "queries"), _as_tensor(candidates, "candidates")
    if q.shape[1] != c.shape[1]:
        raise ValueError(f"dimension mismatch: queries {q.shape[1]}, candidates {c.shape[1]}")
    n, N = q.shape[0], c.shape[0]
    k = min(k, N)
    out_v = torch.empty(n, k, dtype=torch.float32)
    out_i = torch.empty(n, k, dtype=torch.int64)
    if k <= 0 or n == 0:
        return out_v.numpy(), out_i.numpy()
    step = _rows_per_chunk(6 * N, max_bytes)  # the same chunks as `ranks`: see `_rows_per_chunk`
    kk = min(k + 1, N)  # one extra value shows whether a tie crosses the cut
    for a in range(0, n, step):
        s = q[a:a + step] @ c.T  # (b, N)
        _check_finite(s, "scores (queries x candidates; the embeddings overflow float32)", a)
        vals, idx = torch.topk(s, kk, dim=1, sorted=True)  # (b, kk)
        if kk > k:
            crossing = (vals[:, k - 1] == vals[:, k]).nonzero().flatten().tolist()
            vals, idx = vals[:, :k].clone(), idx[:, :k].clone()
            for r in crossing:
                v = vals[r, k - 1]
                above = (s[r] > v).nonzero().flatten()
                tied = (s[r] == v).nonzero().flatten()  # ascending indices
                idx[r] = torch.cat([above, tied[: k - above.numel()]])
                vals[r] = s[r, idx[r]]
        vals, idx = _order_ties(vals, idx)
        out_v[a:a + step], out_i[a:a + step] = vals, idx
    return out_v.numpy(), out_i.numpy()


def ranks(queries, candidates, targets, max_bytes: int = MAX_BYTES) -> np.ndarray:
    """Exact 1-based rank of candidate `targets[q, j]` in query q's ranking of all candidates.

    targets: int (n, m), candidate indices; -1 marks an empty slot (queries with fewer
    relevant candidates than m) and gets rank 0. Returns int64 (n, m).
    Cost is O(n * m * N) comparisons, no sort: see the rank formula in the module docstring.
    """
    q, c = _as_tensor(queries, "queries"), _as_tensor(candidates, "candidates")
    t = np.asarray(targets, dtype=np.int64)
    n, N = q.shape[0], c.shape[0]
    if t.ndim != 2 or t.shape[0] != n:
        raise ValueError(f"targets must have shape ({n}, m), got {t.shape}")
    if t.size and (t.max() >= N or t.min() < -1):
        raise ValueError(f"targets must be candidate indices in [0, {N}) or -1")
    if _repeats(t, empty=-1):
        raise ValueError("targets: a candidate appears twice in one row")
    if q.shape[1] != c.shape[1]:
        raise ValueError(f"dimension mismatch: queries {q.shape[1]}, candidates {c.shape[1]}")
    out = np.zeros(t.shape, dtype=np.int64)
    col = np.arange(N)
    step = _rows_per_chunk(6 * N, max_bytes)  # float32 scores + a bool mask
    for a in range(0, n, step):
        s = q[a:a + step] @ c.T  # (b, N), the same product as in topk
        _check_finite(s, "scores (queries x candidates; the embeddings overflow float32)", a)
        s = s.numpy()
        tt = t[a:a + step]
        own = np.take_along_axis(s, np.maximum(tt, 0), axis=1)  # (b, m) score of each target
        higher = np.empty(tt.shape, dtype=np.int64)
        at_least = np.empty(tt.shape, dtype=np.int64)  # counts the target itself
        for r0 in range(0, len(s), 32):  # 32 score rows stay in cache across the 2m passes
            rows, v = s[r0:r0 + 32], own[r0:r0 + 32]
            for j in range(tt.shape[1]):
                higher[r0:r0 + 32, j] = np.count_nonzero(rows > v[:, j, None], axis=1)
                at_least[r0:r0 + 32, j] = np.count_nonzero(rows >= v[:, j, None], axis=1)
        r = 1 + higher
        # Exact ties are rare with float scores: count the tied lower indices only where
        # another candidate has the target's score.
        tb, tj = np.nonzero(at_least > higher + 1)
        if tb.size:
            tied_lower = (s[tb] == own[tb, tj, None]) & (col < tt[tb, tj, None])  # (ties, N)
            r[tb, tj] += np.count_nonzero(tied_lower, axis=1)
        out[a:a + step] = np.where(tt >= 0, r, 0)
    assert not _repeats(out, empty=0), "distinct targets got equal ranks"  # the tie rule is a total order
    return out


def _repeats(x: np.ndarray, empty: int) -> bool:
    """Whether some row of x holds a value (other than `empty`) twice."""
    s = np.sort(x, axis=1)
    return bool(((s[:, 1:] == s[:, :-1]) & (s[:, 1:] != empty)).any())
