"""minihbt.beir.shards against minihbt.search in memory: a corpus 10x the shard size, exact scores full of
ties, so results must be identical; resuming a stopped encoding; bad stores."""
import json
import tracemalloc

import numpy as np
import pytest

from minihbt import search
from minihbt.beir import shards
from minihbt.io.files import UserError

N, D, SHARD = 1000, 8, 100


def exact_vectors(rng, n, d=D):
    # Small integers: every inner product is exact in float32 whatever the summation order,
    # and with 5 values per coordinate most scores tie with many others.
    return rng.integers(-2, 3, size=(n, d)).astype(np.float32)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = np.random.default_rng(0)
    x = exact_vectors(rng, N)
    x[500:510] = x[3]  # duplicates across shards: exact ties at distant indices
    q = exact_vectors(rng, 37)
    store = shards.from_array(tmp_path_factory.mktemp("store") / "s", x, shard_rows=SHARD)
    return q, x, store


@pytest.mark.parametrize("k", [1, 10, 150, N, 2 * N])
@pytest.mark.parametrize("max_bytes", [search.MAX_BYTES, 6 * SHARD * 5])  # all queries at once / 5 at a time
def test_topk_equals_in_memory_search(corpus, k, max_bytes):
    q, x, store = corpus
    v, i = shards.topk(q, store, k, max_bytes=max_bytes)
    ev, ei = search.topk(q, x, k)
    np.testing.assert_array_equal(i, ei)
    np.testing.assert_array_equal(v, ev)
    assert i.shape == (37, min(k, N))


def test_ranks_equal_in_memory_search(corpus):
    q, x, store = corpus
    rng = np.random.default_rng(1)
    others = np.setdiff1d(np.arange(N), [3, 500, 505, 509])
    targets = np.stack([rng.choice(others, size=6, replace=False) for _ in range(37)])  # distinct per row
    targets[:, 0] = [3, 500, 509] + [505] * 34  # tied duplicates
    targets[5, 4:] = -1  # empty slots
    np.testing.assert_array_equal(shards.ranks(q, store, targets), search.ranks(q, x, targets))
    np.testing.assert_array_equal(shards.ranks(q, store, targets, max_bytes=6 * SHARD * 4),
                                  search.ranks(q, x, targets))
    # ...and the rank of the j-th top-k hit is j + 1.
    _, top = shards.topk(q, store, 20)
    assert (shards.ranks(q, store, top) == np.arange(1, 21)).all()


def test_all_tied_scores_keep_corpus_order(tmp_path):
    store = shards.from_array(tmp_path / "s", np.ones((250, 4), np.float32), shard_rows=30)
    v, i = shards.topk(np.ones((2, 4), np.float32), store, 45)
    assert (i == np.arange(45)).all() and (v == 4).all()
    assert (shards.ranks(np.ones((1, 4), np.float32), store, [[249, 0, 31]]) == [[250, 1, 32]]).all()


def test_one_shard_of_float_vectors_is_the_in_memory_search(tmp_path):
    # One shard: the very products search.py computes, so even non-exact scores agree bit for bit.
    rng = np.random.default_rng(2)
    x = rng.standard_normal((700, 32)).astype(np.float32)
    q = rng.standard_normal((50, 32)).astype(np.float32)
    store = shards.from_array(tmp_path / "s", x)
    np.testing.assert_array_equal(shards.topk(q, store, 30)[1], search.topk(q, x, 30)[1])
    t = np.stack([rng.choice(700, size=3, replace=False) for _ in range(50)])
    np.testing.assert_array_equal(shards.ranks(q, store, t), search.ranks(q, x, t))


def test_fp16_store_searches_the_rounded_vectors(tmp_path, corpus):
    q, _, _ = corpus
    x = np.random.default_rng(3).standard_normal((300, D)).astype(np.float32) / 3
    store = shards.from_array(tmp_path / "s", x, shard_rows=SHARD, dtype="float16")
    assert store.shard(0).dtype == np.float32 and (tmp_path / "s" / "shard-00000.npy").stat().st_size < 300 * D * 4
    rounded = x.astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(store.array(), rounded)


def test_search_holds_about_one_shard(tmp_path):
    rows, dim, shard = 20_000, 64, 2_000  # a 5 MB corpus in 10 shards of 0.5 MB
    x = np.random.default_rng(5).standard_normal((rows, dim)).astype(np.float32)
    store = shards.from_array(tmp_path / "s", x, shard_rows=shard)
    del x
    tracemalloc.start()  # numpy's allocations (the shards read from disk); torch's scores are not traced
    shards.search_store(np.ones((37, dim), np.float32), store, 10, np.tile([0, 19_999], (37, 1)))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 3 * shard * dim * 4, peak  # the loop's shard and the next one loading, not 10


class Killed(Exception):
    pass


def test_stopped_encoding_resumes_after_the_last_finished_shard(tmp_path):
    x = exact_vectors(np.random.default_rng(4), N)
    calls = []

    def dies_in_shard_4(a, b):
        if a == 4 * SHARD:
            raise Killed
        calls.append(a)
        return x[a:b]

    with pytest.raises(Killed):
        shards.write_store(tmp_path / "s", N, D, dies_in_shard_4, SHARD, key="k")
    assert calls == [0, 100, 200, 300]
    assert not list((tmp_path / "s").glob(".*"))  # no temporary file left behind
    with pytest.raises(UserError, match="incomplete store, 6 of 10 shards missing"):
        shards.open_store(tmp_path / "s")

    calls.clear()
    store = shards.write_store(tmp_path / "s", N, D, lambda a, b: calls.append(a) or x[a:b], SHARD, key="k")
    assert calls == [400, 500, 600, 700, 800, 900]
    np.testing.assert_array_equal(shards.open_store(tmp_path / "s").array(), x)

    # A damaged shard counts as missing and is written again; finished ones are not touched.
    path = store.shard_path(7)
    path.write_bytes(path.read_bytes()[:100])
    calls.clear()
    shards.write_store(tmp_path / "s", N, D, lambda a, b: calls.append(a) or x[a:b], SHARD, key="k")
    assert calls == [700]


def test_a_crash_while_writing_a_shard_leaves_no_shard(tmp_path, monkeypatch):
    x = np.zeros((20, 4), np.float32)
    real = np.save

    def save_half(f, arr, **kw):
        real(f, arr, **kw)
        raise Killed

    monkeypatch.setattr(np, "save", save_half)
    with pytest.raises(Killed):
        shards.from_array(tmp_path / "s", x, shard_rows=10)
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["meta.json"]


def test_bad_stores(tmp_path):
    x = np.zeros((20, 4), np.float32)
    shards.write_store(tmp_path / "s", 20, 4, lambda a, b: x[a:b], 10, key="model-a")
    with pytest.raises(UserError, match="holds another store"):
        shards.write_store(tmp_path / "s", 20, 4, lambda a, b: x[a:b], 10, key="model-b")
    with pytest.raises(UserError, match="not an embedding store"):
        shards.open_store(tmp_path)
    with pytest.raises(UserError, match="dtype"):
        shards.write_store(tmp_path / "t", 20, 4, lambda a, b: x[a:b], 10, dtype="int8")
    with pytest.raises(ValueError, match="returned shape"):
        shards.write_store(tmp_path / "u", 20, 4, lambda a, b: x[a:b, :3], 10)
    nan = shards.from_array(tmp_path / "n", np.full((5, 4), np.nan, np.float32))
    with pytest.raises(UserError, match="non-finite"):
        shards.topk(np.ones((1, 4), np.float32), nan, 2)
    big = shards.from_array(tmp_path / "b", np.full((5, 4), 3e38, np.float32))
    with pytest.raises(UserError, match="overflow"):
        shards.ranks(np.full((1, 4), 3e38, np.float32), big, [[0]])
    with pytest.raises(ValueError, match="appears twice"):
        shards.ranks(np.ones((1, 4), np.float32), shards.open_store(tmp_path / "s"), [[1, 2, 1]])
    assert json.loads((tmp_path / "s" / "meta.json").read_text())["key"] == "model-a"
