"""minihbt.embed_cache: each (language, questions|sentences) encoded once, read back on the next
run, encoded again under another key."""
import hashlib

import numpy as np

from minihbt.embed_cache import cache_path, encode_cached
from minihbt.lareqa import dataset_fingerprint
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
    path = cache_path(("k",), "x")
    path.write_bytes(b"not an npy file")
    assert encode_cached(enc, ["a", "bb"], "query", ("k",), "x", progress=False).tolist() == [[0, 1], [1, 2]]
    assert len(enc.calls) == 2
    assert encode_cached(enc, ["a", "bb", "c"], "query", ("k",), "x", progress=False).shape == (3, 2)
    assert len(enc.calls) == 3  # 2 rows stored for 3 texts: not this list's embeddings


def test_lareqa_file_names_are_those_eval_py_always_wrote(tmp_path, monkeypatch):
    # Cache files written before embed_cache.py existed must still be found: the key string is
    # "<model fp>|<data fp>|<lang>|<kind>|<max_len>|<context>" and the name <lang>-<kind>-<24 hex>.
    run(tmp_path, monkeypatch, encoder=FakeEncoder(), langs=["en"])
    data_fp = dataset_fingerprint(str(tmp_path / "tiny"), ["en"])
    want = {f"en-{kind}-" + hashlib.sha256(f"fake-encoder-v1|{data_fp}|en|{kind}|512|0".encode()).hexdigest()[:24]
            + ".npy" for kind in ("query", "passage")}
    assert {p.name for p in (tmp_path / "cache" / "embeddings").iterdir()} == want
