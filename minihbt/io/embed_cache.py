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
        The file is <label>-<sha256("|".join(parts))[:24]>.npy, where the parts are `key` and
        what decides the numbers besides it, added here for every caller: the source of the code
        that encodes (`CODE_VERSION`), the torch version and device type that ran it, and a hash
        of the texts themselves. A file whose row count differs from len(texts), or that cannot
        be read, is encoded again and replaced.
        Embeddings with a NaN or infinite value are a UserError naming the first such text, and
        are never cached.
    code_key(enc) -> [CODE_VERSION, torch version, device type]: those implicit parts, for a
        caller that keys its own store (the texts' hash is the caller's).
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import sys
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from minihbt.io.artifacts import cache_dir
from minihbt.io.files import UserError, atomic_write_bytes

# The code that turns texts into embeddings. Its source is hashed into every key: a version
# constant would have to be bumped by hand after each numeric fix to the tokenizer, the
# transformer or encode, the very step that gets forgotten, and stale embeddings would be served
# silently. The hash changes by itself; an edit that leaves the numbers alone (a comment) costs
# one re-encoding, never a wrong number. (The weights, pooling, prefixes and precision are in the
# model's fingerprint, which callers put in `key`.)
ENCODING_CODE = ("tokenizer.py", "transformer.py", "text_encoder.py", "io/embed_cache.py")  # under minihbt/


def source_hash(paths: Iterable[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


CODE_VERSION = source_hash(Path(__file__).resolve().parent.parent / f for f in ENCODING_CODE)


def _torch_version() -> str:
    try:
        return importlib.metadata.version("torch")  # without importing torch
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def code_key(enc) -> list[str]:
    """What decides `enc`'s numbers besides its fingerprint and the texts: the encoding code's
    source hash, the torch version and the device type. Part of every key here, and of any other
    store of embeddings (minihbt.beir.evaluate's corpus shards), so none outlives a fix or an upgrade."""
    device = getattr(enc, "device", "cpu")  # test doubles may have none: they run on the CPU
    return [CODE_VERSION, _torch_version(), getattr(device, "type", str(device))]


def _implicit_key(enc, texts: list[str]) -> list[str]:
    texts_hash = hashlib.sha256(json.dumps(texts, ensure_ascii=False).encode()).hexdigest()[:16]
    return [*code_key(enc), texts_hash]


def _check_finite(e: np.ndarray, texts: list[str], label: str) -> np.ndarray:
    bad = np.flatnonzero(~np.isfinite(e).all(axis=1))
    if bad.size:
        raise UserError(f"{label}: the model gave NaN or infinite embeddings for {bad.size} of {len(texts)} texts "
                        f"(first: text {bad[0]}, {texts[bad[0]][:60]!r}); nothing was cached or scored")
    return e


def cache_path(key: Sequence, label: str) -> Path:
    name = hashlib.sha256("|".join(str(k) for k in key).encode()).hexdigest()[:24]
    return cache_dir() / "embeddings" / f"{label}-{name}.npy"


def encode_cached(enc, texts: list[str], kind: str, key: Sequence, label: str, batch_size: int = 64,
                  max_len: int = 512, progress: bool = True) -> np.ndarray:
    """enc.encode(texts, kind, batch_size, max_len), or the stored result for the same key."""
    path = cache_path([*_implicit_key(enc, texts), *key], label)
    if path.is_file():
        try:
            e = np.load(path, allow_pickle=False)
            if e.ndim == 2 and e.shape[0] == len(texts):
                return _check_finite(e, texts, label)
        except (OSError, ValueError):
            pass  # a damaged cache file is re-encoded and replaced below
    if progress:
        print(f"encoding {label}: {len(texts)} texts", file=sys.stderr)
    e = np.ascontiguousarray(enc.encode(texts, kind=kind, batch_size=batch_size, max_len=max_len,
                                        progress=progress), dtype=np.float32)
    _check_finite(e, texts, label)
    buf = io.BytesIO()
    np.save(buf, e, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())
    return e
