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
