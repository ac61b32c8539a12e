"""Embeddings computed once: `encode_cached` stores a text list's embeddings under a key and reads them back.

Encoding a LAReQA pool (24,733 MLQA-R texts) takes minutes on a CPU, and every evaluation of the
same model on the same data would encode it again. The cache is a directory of `.npy` files in
`<cache>/embeddings` (the artifacts cache, `$MINIHBT_CACHE`), one per (key, texts); each is
written atomically, so a crash never leaves a file that a later run would read as complete.

Contract
    encode_cached(enc, texts, kind, key, label, batch_size, max_len, progress) -> np.float32 (n, H)
        key: str-able parts that together determine the embeddings: the model's fingerprint,
        a fingerprint of the texts (e.g. lareqa.dataset_fingerprint of their file), and every
        option that changes them (kind and max_len are not added for the caller; pass them).
        The file is <label>-<sha256("|".join(key))[:24]>.npy. A file whose row count differs
        from len(texts), or that cannot be read, is encoded again and replaced.
"""
from __future__ import annotations

import hashlib
import io
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from minihbt.artifacts import cache_dir
from minihbt.files import atomic_write_bytes


def cache_path(key: Sequence, label: str) -> Path:
    name = hashlib.sha256("|".join(str(k) for k in key).encode()).hexdigest()[:24]
    return cache_dir() / "embeddings" / f"{label}-{name}.npy"


def encode_cached(enc, texts: list[str], kind: str, key: Sequence, label: str, batch_size: int = 64,
                  max_len: int = 512, progress: bool = True) -> np.ndarray:
    """enc.encode(texts, kind, batch_size, max_len), or the stored result for the same key."""
    path = cache_path(key, label)
    if path.is_file():
        try:
            e = np.load(path, allow_pickle=False)
            if e.ndim == 2 and e.shape[0] == len(texts):
                return e
        except (OSError, ValueError):
            pass  # a damaged cache file is re-encoded and replaced below
    if progress:
        print(f"encoding {label}: {len(texts)} texts", file=sys.stderr)
    e = np.ascontiguousarray(enc.encode(texts, kind=kind, batch_size=batch_size, max_len=max_len,
                                        progress=progress), dtype=np.float32)
    buf = io.BytesIO()
    np.save(buf, e, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())
    return e
