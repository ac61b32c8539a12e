"""minihbt.search against faiss IndexFlatIP and a numpy full sort (goldens from tools/gen_search_golden.py)."""
import json
from pathlib import Path

import numpy as np
import pytest

from minihbt import search

GOLDEN = json.loads((Path(__file__).parent / "golden" / "search_golden.json").read_text())["cases"]


def arrays(case):
    return (np.array(case["queries"], dtype=np.float32),
            np.array(case["candidates"], dtype=np.float32))


@pytest.mark.parametrize("max_bytes", [search.MAX_BYTES, 1])  # one chunk / one query per chunk
def test_topk_matches_faiss(max_bytes):
    case = GOLDEN["random"]
    q, c = arrays(case)
    scores, idx = search.topk(q, c, case["k"], max_bytes=max_bytes)
    np.testing.assert_array_equal(idx, case["faiss_indices"])
    np.testing.assert_allclose(scores, case["faiss_scores"], rtol=0, atol=1e-5)


@pytest.mark.parametrize("k", [1, 3, 7, 13, 40, 100])  # cuts inside tie groups; k > N
@pytest.mark.parametrize("max_bytes", [search.MAX_BYTES, 1])
def test_topk_ties_match_full_sort(k, max_bytes):
    case = GOLDEN["tied"]
    q, c = arrays(case)
    scores, idx = search.topk(q, c, k, max_bytes=max_bytes)
    kk = min(k, c.shape[0])
    assert idx.shape == (q.shape[0], kk)
    np.testing.assert_array_equal(idx, np.array(case["sorted_indices"])[:, :kk])
    np.testing.assert_array_equal(scores, np.array(case["faiss_scores"], dtype=np.float32)[:, :kk])


def test_tied_golden_really_has_ties_across_the_cut():
    s = np.array(GOLDEN["tied"]["sorted_scores"])
    assert (s[:, 2] == s[:, 3]).any() and (s[:, 12] == s[:, 13]).any()
    assert GOLDEN["tied"]["faiss_tie_order_differs"]  # faiss itself is no tie reference


@pytest.mark.parametrize("name", ["random", "tied"])
@pytest.mark.parametrize("max_bytes", [search.MAX_BYTES, 1])
def test_ranks_agree_with_full_sort(name, max_bytes):
    q, c = arrays(GOLDEN[name])
    order = np.array(GOLDEN["tied"]["sorted_indices"]) if name == "tied" else None
    if order is None:  # a tie-free case: a plain argsort is the reference
        order = np.argsort(-(q.astype(np.float64) @ c.astype(np.float64).T), axis=1)
    expected = np.argsort(order, axis=1) + 1  # rank of every candidate
    targets = np.tile(np.arange(c.shape[0]), (q.shape[0], 1))
    np.testing.assert_array_equal(search.ranks(q, c, targets, max_bytes=max_bytes), expected)


@pytest.mark.parametrize("rows", [None, 1, 3])  # one chunk, or several chunks of `rows` queries
def test_ranks_consistent_with_topk_and_padding(rows):
    q, c = arrays(GOLDEN["tied"])
    max_bytes = search.MAX_BYTES if rows is None else rows * 6 * c.shape[0]
    _, idx = search.topk(q, c, 10, max_bytes=max_bytes)
    targets = np.concatenate([idx, -np.ones((q.shape[0], 2), dtype=np.int64)], axis=1)
    r = search.ranks(q, c, targets, max_bytes=max_bytes)
    np.testing.assert_array_equal(r[:, :10], np.tile(np.arange(1, 11), (q.shape[0], 1)))
    assert (r[:, 10:] == 0).all()


def test_all_equal_scores_rank_by_index():
    q = np.ones((2, 3), dtype=np.float32)
    c = np.ones((5, 3), dtype=np.float32)
    assert search.topk(q, c, 3)[1].tolist() == [[0, 1, 2]] * 2
    assert search.ranks(q, c, [[4, 0], [2, -1]]).tolist() == [[5, 1], [3, 0]]


def test_torch_input_and_bad_shapes():
    torch = pytest.importorskip("torch")
    q, c = arrays(GOLDEN["random"])
    a = search.topk(torch.from_numpy(q), torch.from_numpy(c), 5)[1]
    np.testing.assert_array_equal(a, search.topk(q, c, 5)[1])
    with pytest.raises(ValueError, match="dimension"):
        search.topk(q, c[:, :3], 2)
    with pytest.raises(ValueError, match="targets"):
        search.ranks(q, c, [[0]])
    with pytest.raises(ValueError, match="candidate indices"):
        search.ranks(q, c, np.full((q.shape[0], 1), c.shape[0]))


@pytest.mark.parametrize("where", ["queries", "candidates"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_point03_non_finite_embeddings_are_user_errors(where, bad):
    # A NaN score compares false with everything: it used to rank first (AP 2.0, rank distance 0)
    # while topk put it elsewhere. Now nothing is ranked.
    from minihbt.io.files import UserError

    q, c = arrays(GOLDEN["random"])
    (q if where == "queries" else c)[3, 1] = bad
    targets = np.zeros((q.shape[0], 1), dtype=np.int64)
    for call in (lambda: search.topk(q, c, 5), lambda: search.ranks(q, c, targets)):
        with pytest.raises(UserError, match=rf"^{where}: 1 value\(s\) are NaN or infinite, in 1 row\(s\), "
                                            r"the first row 3;"):
            call()


def test_point03_scores_that_overflow_are_user_errors():
    from minihbt.io.files import UserError

    q = np.array([[1.0, 0.0], [3e19, 3e19]], dtype=np.float32)  # finite, but 9e38 + 9e38 is inf in float32
    with pytest.raises(UserError, match="scores .* the first row 1;"):
        search.ranks(q, q, [[0], [1]], max_bytes=1)  # one query per chunk: the row number is global
    with pytest.raises(UserError, match="scores .* the first row 1;"):
        search.topk(q, q, 1, max_bytes=1)


@pytest.mark.parametrize("max_bytes", [search.MAX_BYTES, 7 * 6 * 40])  # one chunk / chunks of 7 queries
def test_point03_ranks_are_distinct_and_agree_with_topk(max_bytes):
    # Heavy ties (scores from 4 levels): every row of ranks over all candidates is a permutation
    # of 1..N, and the full topk lists the candidates in exactly that order.
    rng = np.random.default_rng(1)
    q = rng.integers(0, 2, size=(20, 3)).astype(np.float32)
    c = rng.integers(0, 2, size=(40, 3)).astype(np.float32)
    r = search.ranks(q, c, np.tile(np.arange(40), (20, 1)), max_bytes=max_bytes)
    assert (np.sort(r, axis=1) == np.arange(1, 41)).all()
    _, idx = search.topk(q, c, 40, max_bytes=max_bytes)
    np.testing.assert_array_equal(idx, np.argsort(r, axis=1))
    with pytest.raises(ValueError, match="twice"):
        search.ranks(q, c, np.zeros((20, 2), dtype=np.int64))
