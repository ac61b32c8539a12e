"""Corpus embeddings larger than memory: written to disk in shards, searched exactly by streaming them.

MIRACL's corpora run to 32.9M passages (en): 50 GB of 384-d fp32 embeddings, more than most
machines hold, and a score matrix of all queries against all passages would be larger still.
Here the corpus is encoded a shard of rows at a time into a store directory, and exact search
reads one shard at a time, keeping a running top-k and the running ranks of given targets.

Store layout (a directory)
    meta.json           {"rows": N, "dim": d, "dtype": "float32"|"float16", "shard_rows": S, "key": ...}
    shard-00000.npy ... shard i holds rows [i*S, min((i+1)*S, N)) as a plain .npy file
meta.json is written first. Each shard goes to a temporary file, is flushed to disk and only
then renamed to its final name, so a shard file under its final name is always complete. A
stopped encoding leaves its finished shards; `write_store` on the same directory with the same
meta encodes only the missing ones, i.e. it resumes after the last finished shard. A directory
whose meta differs (other key, shape or dtype) is refused rather than mixed. fp16 storage
halves the bytes; scores are then those of the fp16-rounded vectors, computed in fp32.

Search contract (queries: float32 (n, d) array or tensor; a complete store)
- Tie rule, minihbt.search's: a higher score first; equal scores, the lower corpus index first.
  Per shard, search.topk gives the shard's top-k under that rule. The running top-k holds only
  lower corpus indices than the next shard's, so a stable sort by score of [running, shard]
  keeps the rule, and the global top-k is always inside the union of the per-shard top-k.
- ranks: rank(q, t) = 1 + #{c : s(q,c) > s(q,t)} + #{c < t : s(q,c) = s(q,t)}, summed over
  shards. A first pass reads each target's score s(q,t) from the product of its query chunk
  and its shard; the counting pass computes that same product again and counts the target's
  own shard with the value it finds there, so a target never counts itself.
- Results equal search.topk / search.ranks on the whole corpus in memory: exactly for a store of
  one shard (the same products) and whenever the inner products are exact (the tests use small
  integer vectors, full of ties). Otherwise a BLAS may round one inner product differently in
  products of different shapes (MKL does below ~16 rows or columns), and candidates whose scores
  tie within float32 rounding may swap.
- Memory: one shard as float32 (S x d x 4 bytes), one block of scores (`max_bytes`), the
  queries, the running top-k (n x k x 12 bytes) and the targets; never the whole corpus.
- Cost: ranks reads the shards holding a target once more than topk (its first pass).
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from minihbt import search
from minihbt.io.files import UserError, atomic_write_json, publish

SHARD_ROWS = 1 << 16  # 65,536 rows: 96 MB of 384-d fp32 per shard
DTYPES = ("float32", "float16")


@dataclass(frozen=True)
class Store:
    path: Path
    rows: int
    dim: int
    dtype: str
    shard_rows: int
    key: str = ""

    @property
    def n_shards(self) -> int:
        return -(-self.rows // self.shard_rows)

    def bounds(self, i: int) -> tuple[int, int]:
        return i * self.shard_rows, min((i + 1) * self.shard_rows, self.rows)

    def shard_path(self, i: int) -> Path:
        return self.path / f"shard-{i:05d}.npy"

    def meta(self) -> dict:
        return {"rows": self.rows, "dim": self.dim, "dtype": self.dtype, "shard_rows": self.shard_rows,
                "key": self.key}

    def finished(self, i: int) -> bool:
        """Whether shard i is on disk with its shape and dtype (a damaged file counts as missing)."""
        try:
            x = np.load(self.shard_path(i), mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError):
            return False
        a, b = self.bounds(i)
        return x.shape == (b - a, self.dim) and x.dtype == np.dtype(self.dtype)

    def missing(self) -> list[int]:
        return [i for i in range(self.n_shards) if not self.finished(i)]

    def shard(self, i: int) -> np.ndarray:
        """Shard i as a float32 array in memory (rows bounds(i))."""
        return np.asarray(np.load(self.shard_path(i), allow_pickle=False), dtype=np.float32)

    def shards(self, which=None) -> Iterator[tuple[int, torch.Tensor]]:
        """(first row, float32 tensor (rows, d)) for each shard in order, one in memory at a time."""
        for i in range(self.n_shards) if which is None else which:
            x = self.shard(i)
            if not np.isfinite(x).all():
                raise UserError(f"{self.shard_path(i)}: non-finite embeddings; the encoder produced NaN or inf")
            yield self.bounds(i)[0], torch.from_numpy(x)

    def array(self) -> np.ndarray:
        """The whole store in memory (for small stores and tests)."""
        return np.concatenate([self.shard(i) for i in range(self.n_shards)]) if self.rows else \
            np.zeros((0, self.dim), np.float32)


def _save_npy(path: Path, x: np.ndarray) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, x, allow_pickle=False)
            f.flush()
            os.fsync(f.fileno())
        publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def open_store(path: str | os.PathLike) -> Store:
    """The store in `path`, which must be complete (every shard written)."""
    path = Path(path)
    try:
        meta = json.loads((path / "meta.json").read_text())
        store = Store(path, **meta)
    except (OSError, ValueError, TypeError):
        raise UserError(f"{path}: not an embedding store (no readable meta.json)") from None
    missing = store.missing()
    if missing:
        raise UserError(f"{path}: incomplete store, {len(missing)} of {store.n_shards} shards missing "
                        f"(first: {missing[0]}); run the encoding again to finish it")
    return store


def write_store(path: str | os.PathLike, rows: int, dim: int, produce: Callable[[int, int], np.ndarray],
                shard_rows: int = SHARD_ROWS, key: str = "", dtype: str = "float32",
                progress: bool = False) -> Store:
    """Fill a store with produce(start, stop) -> (stop - start, dim) rows, shard by shard.

    Shards already finished in `path` (same meta) are kept and not produced again.
    """
    if dtype not in DTYPES:
        raise UserError(f"store dtype: expected one of {', '.join(DTYPES)}, got {dtype!r}")
    if shard_rows < 1 or rows < 0 or dim < 1:
        raise UserError(f"store shape: expected rows >= 0, dim >= 1, shard_rows >= 1, got {rows}, {dim}, {shard_rows}")
    path = Path(path)
    store = Store(path, rows, dim, dtype, shard_rows, key)
    meta_path = path / "meta.json"
    if meta_path.is_file():
        try:
            old = json.loads(meta_path.read_text())
        except ValueError:
            old = None
        if old != store.meta():
            raise UserError(f"{path}: holds another store ({old}); expected {store.meta()}. "
                            "Delete it or choose another directory")
    else:
        path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(meta_path, store.meta())
    todo = store.missing()
    for n, i in enumerate(todo, 1):
        a, b = store.bounds(i)
        if progress:
            print(f"shard {i + 1}/{store.n_shards} (rows {a}-{b - 1}), {n} of {len(todo)} to write", file=sys.stderr)
        x = np.asarray(produce(a, b))
        if x.shape != (b - a, dim):
            raise ValueError(f"produce({a}, {b}) returned shape {x.shape}, expected {(b - a, dim)}")
        _save_npy(store.shard_path(i), np.ascontiguousarray(x, dtype=dtype))
    return store


def from_array(path: str | os.PathLike, x: np.ndarray, shard_rows: int = SHARD_ROWS, dtype: str = "float32") -> Store:
    """A store holding the rows of `x` (tests, benchmarks)."""
    x = np.asarray(x)
    return write_store(path, len(x), x.shape[1], lambda a, b: x[a:b], shard_rows, dtype=dtype)


def encode_store(enc, texts_of: Callable[[int, int], list[str]], rows: int, dim: int, path: str | os.PathLike,
                 kind: str = "passage", key: str = "", shard_rows: int = SHARD_ROWS, batch_size: int = 64,
                 max_len: int = 512, progress: bool = True, dtype: str = "float32") -> Store:
    """Encode texts_of(start, stop) shard by shard with enc.encode into a (resumable) store."""
    def produce(a: int, b: int) -> np.ndarray:
        return enc.encode(texts_of(a, b), kind=kind, batch_size=batch_size, max_len=max_len, progress=progress)
    return write_store(path, rows, dim, produce, shard_rows, key, dtype, progress)


# ----------------------------------------------------------------------------- search

def _rows_per_chunk(store: Store, max_bytes: int) -> int:
    # float32 scores + a bool mask per candidate, as search.py; from the largest shard, so a store
    # of one shard cuts the queries exactly as search.topk / search.ranks do on the same matrix.
    return max(1, max_bytes // max(1, 6 * min(store.shard_rows, store.rows)))


def _count(s: np.ndarray, own: np.ndarray, t: np.ndarray, first: int, higher: np.ndarray, tied: np.ndarray) -> None:
    """Add this shard's candidates above each target (higher) and tied with it at a lower index (tied).

    s: (b, S) scores of the shard (corpus rows first .. first+S-1); own, t: (b, m) target scores and indices.
    """
    S = s.shape[1]
    for j in range(t.shape[1]):
        v = own[:, j, None]                              # (b, 1)
        gt = np.count_nonzero(s > v, axis=1)
        eq = np.count_nonzero(s >= v, axis=1) - gt        # includes the target itself if it is here
        higher[:, j] += gt
        below = t[:, j] >= first + S                      # the whole shard precedes the target
        tied[:, j] += np.where(below, eq, 0)
        inside = (t[:, j] >= first) & (t[:, j] < first + S) & (eq > 1)
        for r in np.nonzero(inside)[0]:                   # rare: another candidate ties with it here
            tied[r, j] += np.count_nonzero(s[r, : t[r, j] - first] == v[r])


def search_store(queries, store: Store, k: int = 0, targets=None,
                 max_bytes: int = search.MAX_BYTES) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact top-k and exact ranks of `targets` against every row of `store`, a shard at a time.

    Returns (scores float32 (n, k'), indices int64 (n, k'), ranks int64 (n, m)), k' = min(k, N);
    targets: int (n, m) corpus indices, -1 for an empty slot (rank 0), as search.ranks.
    """
    q = torch.as_tensor(queries).float()
    if q.dim() != 2 or q.shape[1] != store.dim:
        raise ValueError(f"queries must have shape (n, {store.dim}), got {tuple(q.shape)}")
    if not torch.isfinite(q).all():
        raise UserError("non-finite query embeddings; the encoder produced NaN or inf")
    n, N = q.shape[0], store.rows
    t = np.zeros((n, 0), np.int64) if targets is None else np.asarray(targets, dtype=np.int64)
    if t.ndim != 2 or t.shape[0] != n:
        raise ValueError(f"targets must have shape ({n}, m), got {t.shape}")
    if t.size and (t.max() >= N or t.min() < -1):
        raise ValueError(f"targets must be corpus indices in [0, {N}) or -1")
    if _repeats(t, empty=-1):
        raise ValueError("targets: a corpus index appears twice in one row")
    k = min(k, N)
    if n == 0:
        return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64), np.zeros(t.shape, np.int64)
    step = _rows_per_chunk(store, max_bytes)

    own = np.zeros(t.shape, np.float32)
    if t.size:  # pass 1: each target's score, from the same product as pass 2
        holding = sorted({int(x) // store.shard_rows for x in np.unique(t[t >= 0])})
        for first, c in store.shards(holding):
            inside = (t >= first) & (t < first + len(c))
            for a in range(0, n, step):
                rows, cols = np.nonzero(inside[a:a + step])
                if rows.size:
                    s = (q[a:a + step] @ c.T).numpy()  # (b, S)
                    own[a + rows, cols] = s[rows, t[a + rows, cols] - first]

    best_v = torch.empty(n, 0, dtype=torch.float32)
    best_i = torch.empty(n, 0, dtype=torch.int64)
    higher = np.zeros(t.shape, np.int64)
    tied = np.zeros(t.shape, np.int64)
    for first, c in store.shards() if (k or t.size) else ():
        parts_v, parts_i = [], []
        for a in range(0, n, step):
            qc = q[a:a + step]
            if k:  # one chunk inside search.topk: the same product as below
                v, i = search.topk(qc, c, k, max_bytes=1 << 62)
                parts_v.append(torch.from_numpy(v))
                parts_i.append(torch.from_numpy(i) + first)
            if t.size:
                s = (qc @ c.T).numpy()  # (b, S)
                if not np.isfinite(s).all():
                    raise UserError(f"scores of queries {a}.. against rows {first}..: not finite "
                                    "(the embeddings overflow float32)")
                tt, ov = t[a:a + step], own[a:a + step]
                rows, cols = np.nonzero((tt >= first) & (tt < first + len(c)))
                ov[rows, cols] = s[rows, tt[rows, cols] - first]  # this very product: never counts itself
                _count(s, ov, tt, first, higher[a:a + step], tied[a:a + step])
        if k:
            vals = torch.cat([best_v, torch.cat(parts_v)], dim=1)  # (n, k_run + k_shard), lower indices first
            idx = torch.cat([best_i, torch.cat(parts_i)], dim=1)
            vals, perm = vals.sort(dim=1, descending=True, stable=True)  # stable: ties keep index order
            best_v, best_i = vals[:, :k].contiguous(), idx.gather(1, perm[:, :k])
    ranks = np.where(t >= 0, 1 + higher + tied, 0)
    assert not _repeats(ranks, empty=0), "distinct targets got equal ranks"  # the tie rule is a total order
    return best_v.numpy(), best_i.numpy(), ranks


def _repeats(x: np.ndarray, empty: int) -> bool:
    """Whether some row of x holds a value (other than `empty`) twice."""
    s = np.sort(x, axis=1)
    return bool(((s[:, 1:] == s[:, :-1]) & (s[:, 1:] != empty)).any())


def topk(queries, store: Store, k: int, max_bytes: int = search.MAX_BYTES) -> tuple[np.ndarray, np.ndarray]:
    """search.topk against a store: (scores float32 (n, k'), corpus indices int64 (n, k'))."""
    v, i, _ = search_store(queries, store, k, None, max_bytes)
    return v, i


def ranks(queries, store: Store, targets, max_bytes: int = search.MAX_BYTES) -> np.ndarray:
    """search.ranks against a store: exact 1-based ranks int64 (n, m), 0 for a -1 slot."""
    return search_store(queries, store, 0, targets, max_bytes)[2]
