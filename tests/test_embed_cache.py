"""minihbt.io.embed_cache: each (language, questions|sentences) encoded once, read back on the next
run, encoded again under another key."""
import hashlib
import importlib.metadata
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from minihbt.io import embed_cache
from minihbt.io.embed_cache import cache_path, encode_cached
from minihbt.io.files import UserError
from test_lareqa_eval import FakeEncoder, run


def test_embeddings_cached_per_language(tmp_path, monkeypatch):
    enc = FakeEncoder()
    first = run(tmp_path, monkeypatch, encoder=enc)
    assert enc.calls == 6  # questions and sentences of 3 languages, once each
    files = sorted((tmp_path / "cache" / "embeddings").glob("*.npy"))
    assert len(files) == 6
    second = run(tmp_path, monkeypatch, encoder=enc)
    assert enc.calls == 6
    assert first["map"] == second["map"]
    run(tmp_path, monkeypatch, encoder=enc, max_len=64)  # another key: encoded again
    assert enc.calls == 12


class Counting:
    """encode() returns row i = [i, len(text i)] and counts its calls."""

    def __init__(self):
        self.calls = []

    def encode(self, texts, kind="query", batch_size=64, max_len=512, progress=None):
        self.calls.append((kind, batch_size, max_len))
        return np.array([[i, len(t)] for i, t in enumerate(texts)], dtype=np.float64)


def test_encode_cached_reads_back_and_keys_on_every_part(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIHBT_CACHE", str(tmp_path))
    enc, texts = Counting(), ["a", "bb", "ccc"]
    first = encode_cached(enc, texts, "passage", ("model", "data", 7), "en-passage", 2, 16, progress=False)
    assert first.dtype == np.float32 and first.tolist() == [[0, 1], [1, 2], [2, 3]]
    assert enc.calls == [("passage", 2, 16)]
    again = encode_cached(enc, texts, "passage", ("model", "data", 7), "en-passage", 2, 16, progress=False)
    assert len(enc.calls) == 1 and np.array_equal(again, first)
    encode_cached(enc, texts, "passage", ("model", "data", 8), "en-passage", 2, 16, progress=False)
    assert len(enc.calls) == 2  # another key part: encoded again
    assert len(list((tmp_path / "embeddings").glob("en-passage-*.npy"))) == 2


def test_damaged_or_mismatched_file_is_encoded_again(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIHBT_CACHE", str(tmp_path))
    enc = Counting()
    encode_cached(enc, ["a", "bb"], "query", ("k",), "x", progress=False)
    [path] = (tmp_path / "embeddings").glob("x-*.npy")
    path.write_bytes(b"not an npy file")
    assert encode_cached(enc, ["a", "bb"], "query", ("k",), "x", progress=False).tolist() == [[0, 1], [1, 2]]
    assert len(enc.calls) == 2
    assert encode_cached(enc, ["a", "bb", "c"], "query", ("k",), "x", progress=False).shape == (3, 2)
    assert len(enc.calls) == 3  # 2 rows stored for 3 texts: not this list's embeddings


def test_point05_cache_key_holds_the_encoding_code_torch_device_and_texts(tmp_path, monkeypatch):
    # The key had no code version: after a fix to the tokenizer, transformer or encode, old
    # embeddings (and every number computed from them) were served on. Now the file name is the
    # hash of the source of that code, the torch version, the device type, the texts and the key.
    monkeypatch.setenv("MINIHBT_CACHE", str(tmp_path))
    enc, texts = Counting(), ["a", "bb"]
    encode_cached(enc, texts, "query", ("k",), "x", progress=False)
    texts_hash = hashlib.sha256(json.dumps(texts).encode()).hexdigest()[:16]
    parts = [embed_cache.CODE_VERSION, importlib.metadata.version("torch"), "cpu", texts_hash, "k"]
    assert [p.name for p in (tmp_path / "embeddings").iterdir()] == [cache_path(parts, "x").name]

    monkeypatch.setattr(embed_cache, "CODE_VERSION", "after-a-fix")  # another source: encoded again
    encode_cached(enc, texts, "query", ("k",), "x", progress=False)
    enc.device = torch.device("cuda", 1)  # another device: encoded again (cuda:0 and cuda:1 are one)
    encode_cached(enc, texts, "query", ("k",), "x", progress=False)
    encode_cached(enc, ["a", "bc"], "query", ("k",), "x", progress=False)  # other texts, same count
    assert len(enc.calls) == 4 and len(list((tmp_path / "embeddings").iterdir())) == 4

    # The version is the hash of the encoding modules' source: any edit of them changes it.
    pkg = Path(embed_cache.__file__).resolve().parent.parent  # minihbt/
    src = [tmp_path / Path(f).name for f in embed_cache.ENCODING_CODE]
    for f, name in zip(src, embed_cache.ENCODING_CODE):
        f.write_bytes((pkg / name).read_bytes())
    assert embed_cache.source_hash(src) == embed_cache.source_hash(pkg / f for f in embed_cache.ENCODING_CODE)
    before = embed_cache.source_hash(src)
    src[1].write_bytes(src[1].read_bytes() + b"\n")  # transformer.py, one byte more
    assert embed_cache.source_hash(src) != before


def test_point03_non_finite_embeddings_are_a_user_error_and_not_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIHBT_CACHE", str(tmp_path))

    class NaNs(Counting):
        def encode(self, texts, **kw):
            e = super().encode(texts, **kw)
            e[1, 0] = np.nan
            return e

    with pytest.raises(UserError, match=r"^en-query: the model gave NaN or infinite embeddings for 1 of 3 texts "
                                        r"\(first: text 1, 'bb'\); nothing was cached or scored$"):
        encode_cached(NaNs(), ["a", "bb", "c"], "query", ("k",), "en-query", progress=False)
    assert not (tmp_path / "embeddings").exists() or not list((tmp_path / "embeddings").iterdir())
