"""minihbt.downstream.paired: the paired difference and its standard error, by hand and against scipy's paired
t-test (its statistic is D / SE for one language)."""
import math

import numpy as np
import pytest

from minihbt.downstream import paired


def test_difference_by_hand_two_languages():
    a = {"en": [1, 1, 0, 1], "sw": [1, 0, 1]}
    b = {"en": [0, 1, 0, 0], "sw": [1, 1, 1]}
    # en: d = 1 0 0 1, mean 1/2, variance (4 x 1/4) / 3 = 1/3, of the mean 1/12.
    # sw: d = 0 -1 0, mean -1/3, variance (1/9 + 4/9 + 1/9) / 2 = 1/3, of the mean 1/9.
    D, se = paired.difference(a, b, ["en", "sw"])
    assert D == pytest.approx((1 / 2 - 1 / 3) / 2, abs=1e-15)
    assert se == pytest.approx(math.sqrt(1 / 12 + 1 / 9) / 2, abs=1e-15)
    D, se = paired.difference(a, b, ["en"])  # a subset of the languages (e.g. the unseen ones)
    assert (D, se) == (pytest.approx(0.5), pytest.approx(math.sqrt(1 / 12)))


def test_one_language_equals_scipy_paired_t():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    a, b = rng.random(500), rng.random(500) * 0.9
    D, se = paired.difference({"x": a}, {"x": b}, ["x"])
    assert D / se == pytest.approx(stats.ttest_rel(a, b).statistic, rel=1e-12)


def test_identical_models_differ_by_zero_and_bad_input_is_refused():
    a = {"en": np.array([1.0, 0.0, 1.0])}
    assert paired.difference(a, a, ["en"]) == (0.0, 0.0)
    with pytest.raises(ValueError, match="en: expected two 1-D arrays of one length"):
        paired.difference(a, {"en": np.array([1.0, 0.0])}, ["en"])
    with pytest.raises(ValueError, match="no languages"):
        paired.difference(a, a, [])


def test_parallel_items_by_hand_differ_from_independent_languages():
    """Item i is the same in both languages: its language-mean difference m_i is the unit."""
    a = {"en": [1, 1, 0], "sw": [1, 0, 0]}
    b = {"en": [0, 1, 0], "sw": [0, 1, 0]}
    # d_en = 1 0 0, d_sw = 1 -1 0, so m = 1 -1/2 0, mean 1/6; deviations 5/6 -2/3 -1/6,
    # variance (25 + 16 + 1) / 36 / 2 = 7/12, of the mean 7/36.
    D, se = paired.difference(a, b, ["en", "sw"], items="row")
    assert D == pytest.approx(1 / 6, abs=1e-15) and se == pytest.approx(math.sqrt(7) / 6, abs=1e-15)
    # the independent-languages formula: en 1/3 / 3 = 1/9, sw 1 / 3 = 1/3: sqrt(4/9) / 2 = 1/3
    assert paired.difference(a, b, ["en", "sw"]) == (pytest.approx(1 / 6), pytest.approx(1 / 3))
    # the same items named by id, listed in another order in sw: the cluster form gives the same
    ids = {"en": ["q1", "q2", "q3"], "sw": ["q3", "q1", "q2"]}
    a_id = {"en": a["en"], "sw": [0, 1, 0]}
    b_id = {"en": b["en"], "sw": [0, 0, 1]}
    assert paired.difference(a_id, b_id, ["en", "sw"], items=ids) == (pytest.approx(1 / 6), pytest.approx(math.sqrt(7) / 6))
    with pytest.raises(ValueError, match="parallel languages of one length"):
        paired.difference({"en": [1, 0, 1], "sw": [1, 0]}, {"en": [0, 0, 1], "sw": [0, 1]}, ["en", "sw"], items="row")
    with pytest.raises(ValueError, match="items: expected None, 'row'"):
        paired.difference(a, b, ["en"], items="item")


def correlated(rng, n_items: int, n_langs: int, keep: float = 1.0):
    """0/1 correctness of two models whose per-item gain is shared by every language (parallel rows),
    each language keeping a random share `keep` of the items: ({lang: a}, {lang: b}, {lang: ids})."""
    gain = rng.normal(0, 0.4, n_items)  # the item, not the language, decides most of the difference
    a, b, ids = {}, {}, {}
    for l in range(n_langs):
        keep_ids = np.flatnonzero(rng.random(n_items) < keep)
        p = 0.5 + 0.1 * rng.normal(size=keep_ids.size)
        a[l] = (rng.random(keep_ids.size) < np.clip(p + gain[keep_ids], 0, 1)).astype(float)
        b[l] = (rng.random(keep_ids.size) < np.clip(p, 0, 1)).astype(float)
        ids[l] = keep_ids
    return a, b, ids


def cluster_bootstrap(a, b, ids, draws: int, rng) -> float:
    """sd of D over resamples of the items with replacement (every language's rows of an item go
    together), D recomputed as the mean over languages of the resampled rows' mean difference."""
    universe = np.unique(np.concatenate(list(ids.values())))
    Ds = []
    for _ in range(draws):
        count = np.bincount(rng.choice(universe, universe.size), minlength=universe.max() + 1)
        per_lang = []
        for l in a:
            w = count[ids[l]]  # how often each of this language's rows was drawn
            per_lang.append(np.sum(w * (a[l] - b[l])) / np.sum(w))
        Ds.append(np.mean(per_lang))
    return float(np.std(Ds))


def test_parallel_items_match_a_cluster_bootstrap():
    rng = np.random.default_rng(0)
    a, b, ids = correlated(rng, 300, 6)
    D, se = paired.difference(a, b, a, items="row")
    assert se == pytest.approx(cluster_bootstrap(a, b, ids, 3000, rng), rel=0.06)
    _, independent = paired.difference(a, b, a)
    assert independent < 0.7 * se  # the case the item unit is for: languages' errors agree item by item
    assert paired.difference(a, b, a, items=ids) == (pytest.approx(D, abs=1e-15), pytest.approx(se, rel=1e-12))


def test_items_by_id_with_missing_rows_match_a_cluster_bootstrap():
    """LAReQA's unit: the question id, not every id present in every language."""
    rng = np.random.default_rng(1)
    a, b, ids = correlated(rng, 400, 5, keep=0.8)
    D, se = paired.difference(a, b, a, items=ids)
    assert D == pytest.approx(np.mean([np.mean(a[l] - b[l]) for l in a]), abs=1e-15)
    assert se == pytest.approx(cluster_bootstrap(a, b, ids, 3000, rng), rel=0.06)


def test_task_items_name_every_downstream_task():
    from minihbt.downstream import tasks as downstream
    assert set(paired.TASK_ITEMS) == set(downstream.HEADLINE)
    assert paired.TASK_ITEMS["xnli"] == paired.TASK_ITEMS["sib-200"] == "row"
    assert paired.TASK_ITEMS["tydiqa"] is paired.TASK_ITEMS["tatoeba"] is None
