"""minihbt.metrics against scikit-learn and pytrec_eval (goldens from tools/gen_metrics_golden.py)
and hand-worked examples."""
import json
from pathlib import Path

import numpy as np
import pytest

from minihbt import metrics, search

GOLDEN = json.loads((Path(__file__).parent / "golden" / "metrics_golden.json").read_text())["cases"]


def relevant_ranks(scores, relevant) -> np.ndarray:
    """Ranks of the relevant candidates, through search.ranks and the project's tie rule.

    Query i is the one-hot vector e_i and candidate j the column scores[:, j], so the inner
    product e_i . c_j is exactly scores[i, j].
    """
    scores = np.asarray(scores, dtype=np.float32)
    relevant = np.asarray(relevant)
    n = scores.shape[0]
    m = int((relevant > 0).sum(axis=1).max())
    targets = np.full((n, m), -1)
    for i in range(n):
        hit = np.flatnonzero(relevant[i] > 0)
        targets[i, : len(hit)] = hit
    return search.ranks(np.eye(n, dtype=np.float32), scores.T.copy(), targets), targets


def test_pytrec_eval_readme_example():
    case = GOLDEN["pytrec_readme"]
    # q1 ranks d3, d1, d2: its relevant d2 is 3rd. q2 ranks d1, d3, d2: relevant at 2 and 3.
    ranks = np.array([[3, 0], [2, 3]])
    ap = metrics.average_precision(ranks)
    np.testing.assert_allclose(ap, [1 / 3, (1 / 2 + 2 / 3) / 2], rtol=0, atol=1e-15)
    np.testing.assert_allclose(ap, [case["map"]["q1"], case["map"]["q2"]], rtol=0, atol=1e-15)
    assert metrics.mean_average_precision(ranks) == pytest.approx((1 / 3 + 7 / 12) / 2, abs=1e-15)


def test_ap_random_scores_match_sklearn():
    case = GOLDEN["random"]
    ranks, _ = relevant_ranks(case["scores"], case["relevant"])
    np.testing.assert_allclose(metrics.average_precision(ranks), case["sklearn_ap"], rtol=0, atol=1e-12)


def test_ap_tied_scores_follow_the_index_tie_rule():
    case = GOLDEN["tied"]
    ranks, _ = relevant_ranks(case["scores"], case["relevant"])
    ap = metrics.average_precision(ranks)
    np.testing.assert_allclose(ap, case["trec_ap"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(ap, case["sklearn_index_broken_ap"], rtol=0, atol=1e-12)
    # sklearn's own convention (a tied block is one threshold) differs: the case has real ties
    assert np.abs(ap - np.array(case["sklearn_ap"])).max() > 1e-3


def test_ap_relevant_item_last():
    case = GOLDEN["last"]
    ranks, _ = relevant_ranks(case["scores"], case["relevant"])
    n = len(case["scores"][0])
    assert ranks.tolist() == [[n, 0], [1, n]]
    np.testing.assert_allclose(metrics.average_precision(ranks), case["sklearn_ap"], rtol=0, atol=1e-15)
    np.testing.assert_allclose(metrics.average_precision(ranks), [1 / n, (1 + 2 / n) / 2], rtol=0, atol=1e-15)


def test_ap_order_of_ranks_in_a_row_does_not_matter():
    a = metrics.average_precision([[5, 2, 9, 0]])
    b = metrics.average_precision([[0, 9, 2, 5]])
    assert a[0] == b[0] == pytest.approx((1 / 2 + 2 / 5 + 3 / 9) / 3, abs=1e-15)


def test_recall_at_k():
    ranks = np.array([[1, 4, 11, 0], [2, 0, 0, 0], [1, 2, 3, 10]])
    np.testing.assert_allclose(metrics.recall_at_k(ranks, 1), [1 / 3, 0, 1 / 4])
    np.testing.assert_allclose(metrics.recall_at_k(ranks, 10), [2 / 3, 1, 1])
    np.testing.assert_allclose(metrics.recall_at_k(np.array([1, 2, 7]), 1), [1, 0, 0])  # 1-D: one relevant


def test_graded_ndcg_and_recall_match_pytrec_eval():
    case = GOLDEN["graded"]
    ranks, targets = relevant_ranks(case["scores"], case["grades"])
    grades = np.asarray(case["grades"])
    gains = np.where(targets >= 0, np.take_along_axis(grades, targets.clip(0), 1), 0)
    for k in (5, 10):
        np.testing.assert_allclose(metrics.ndcg_at_k(ranks, gains, k), case[f"ndcg_cut_{k}"], rtol=0, atol=1e-12)
        np.testing.assert_allclose(metrics.recall_at_k(ranks, k), case[f"recall_{k}"], rtol=0, atol=1e-12)


def test_ndcg_hand_worked():
    # gains 3 at rank 2, 1 at rank 1; ideal puts 3 first.
    dcg = 1 / np.log2(2) + 3 / np.log2(3)
    idcg = 3 / np.log2(2) + 1 / np.log2(3)
    np.testing.assert_allclose(metrics.ndcg_at_k([[2, 1]], [[3, 1]], 10), [dcg / idcg])
    np.testing.assert_allclose(metrics.ndcg_at_k([[2, 1]], [[3, 1]], 1), [1 / 3])


def test_rank_distance_three_languages_by_hand():
    # Pooled corpus, three languages. Query A: en answer at rank 1, de at 4, zh at 9 -> 9 - 1.
    # Query B: answers at 2, 3, 5 -> 3. Query C: only two languages have an answer -> 7 - 6.
    ranks = np.array([[1, 4, 9], [3, 5, 2], [7, 0, 6]])
    np.testing.assert_array_equal(metrics.rank_distance(ranks), [8, 3, 1])


def test_point02_rank_distance_needs_two_relevant_candidates():
    # One answer (a --langs subset, or a question asked in one language only): no distance to
    # measure, so NaN, not 0 ("no bias"), which pulled the means down (229 instead of 573 for
    # MLQA-R ar with --langs ar de); none: NaN as before. Two or more: max - min.
    rd = metrics.rank_distance([[4, 0, 0], [0, 0, 0], [4, 0, 9], [12, 3, 0]])
    assert np.isnan(rd[0]) and np.isnan(rd[1]) and rd[2:].tolist() == [5, 9]
    assert np.nanmean(rd) == 7.0  # the caller's mean over the queries where it is defined


def test_query_without_relevant_is_nan_not_zero():
    ranks = np.array([[2, 7], [0, 0]])
    for values in (metrics.average_precision(ranks), metrics.recall_at_k(ranks, 5),
                   metrics.rank_distance(ranks), metrics.ndcg_at_k(ranks, [[1, 1], [0, 0]], 5)):
        assert np.isfinite(values[0])
        assert np.isnan(values[1])
    assert np.isnan(metrics.mean_average_precision(ranks))


def test_bad_ranks_rejected():
    with pytest.raises(ValueError, match="integer"):
        metrics.average_precision([[1.5]])
    with pytest.raises(ValueError, match="1-based"):
        metrics.average_precision([[-1]])


def test_point03_repeated_ranks_are_rejected():
    # Two relevant candidates cannot share a rank; NaN scores once gave [[1, 1]] and AP = 1.5.
    for f in (metrics.average_precision, metrics.rank_distance, lambda r: metrics.recall_at_k(r, 1)):
        with pytest.raises(ValueError, match="distinct"):
            f([[3, 0], [1, 1]])
    np.testing.assert_allclose(metrics.average_precision([[0, 0, 2], [3, 1, 0]]), [0.5, (1 + 2 / 3) / 2])


def test_ap_matches_a_per_query_loop():
    """11 relevant in a 13,000 pool, as XQuAD-R multilingual: the closed form equals a loop."""
    rng = np.random.default_rng(0)
    ranks = np.stack([rng.choice(13000, size=11, replace=False) + 1 for _ in range(200)])
    loop = [np.mean([(i + 1) / r for i, r in enumerate(np.sort(row))]) for row in ranks]
    np.testing.assert_allclose(metrics.average_precision(ranks), loop, rtol=1e-14)
