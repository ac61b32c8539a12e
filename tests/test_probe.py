"""minihbt.downstream.probe against scikit-learn's LogisticRegression(C=1.0, lbfgs) (tests/golden, from
tools/gen_downstream_golden.py), and the optimality conditions of its objective checked directly."""
import json
from pathlib import Path

import numpy as np
import pytest

from minihbt.downstream import probe

GOLDEN = json.loads((Path(__file__).parent / "golden" / "downstream_golden.json").read_text())["probe"]


def uniforms(seed: int, n: int) -> np.ndarray:
    """Verbatim from tools/gen_downstream_golden.py: splitmix64, integer arithmetic only."""
    z = np.arange(n, dtype=np.uint64) + np.uint64(seed * 0x9E3779B97F4A7C15 % 2**64)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


def synthetic(seed: int, n_train: int, n_test: int, d: int, K: int, sep: float):
    """Verbatim from tools/gen_downstream_golden.py (the golden file checks the rows' sums)."""
    n = n_train + n_test
    u = uniforms(seed, 4 * (K + n) * d).reshape(4, K + n, d)  # (4, K + n, d)
    g = u.sum(axis=0) - 2.0  # (K + n, d)
    y = (uniforms(seed + 1000, n) * K).astype(np.int64)
    X = sep * g[:K][y] + 0.05 * g[K:]
    X = X / np.sqrt((X * X).sum(axis=1, keepdims=True))
    return X[:n_train], y[:n_train], X[n_train:], y[n_train:]


def objective(W, b, X, y, C=1.0) -> float:
    """C * sum of cross-entropies + 1/2 ||W||^2, in numpy."""
    z = X @ W.T + b
    z = z - z.max(axis=1, keepdims=True)
    return float(C * (np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(y)), y]).sum() + 0.5 * (W * W).sum())


@pytest.fixture(scope="module", params=sorted(GOLDEN))
def case(request):
    g = GOLDEN[request.param]
    Xtr, ytr, Xte, yte = synthetic(**g["params"])
    assert Xtr.sum() + Xte.sum() == pytest.approx(g["x_sum"], abs=1e-9)  # the same rows as sklearn saw
    assert np.abs(Xtr).sum() == pytest.approx(g["x_abs_sum"], rel=1e-12)
    return g, Xtr, ytr, Xte, yte, probe.fit(Xtr, ytr)


def test_predictions_and_accuracy_match_sklearn(case):
    g, Xtr, ytr, Xte, yte, p = case
    assert p.converged and p.grad_max <= 1e-6
    for X, y, split in ((Xtr, ytr, "train"), (Xte, yte, "test")):
        ref = np.array([int(c) for c in g[f"pred_{split}"]])
        assert np.mean(p.predict(X) == ref) >= 0.995
        assert abs(p.accuracy(X, y) - g[f"acc_{split}"]) <= 0.002
    assert 0.6 < g["acc_test"] < 0.95  # the case is not trivially separable


def test_objective_at_least_as_low_as_sklearn(case):
    g, Xtr, ytr, *_, p = case
    ours = objective(p.W, p.b, Xtr, ytr)
    assert ours <= g["objective"] + 1e-6 * abs(g["objective"])
    assert ours == pytest.approx(g["objective"], rel=1e-7)  # one strictly convex problem, one minimum


def test_first_order_conditions(case):
    """At the minimum of C * sum CE + 1/2 ||W||^2: C * X^T (P - Y) + W = 0 and sum_i (P - Y) = 0."""
    _, Xtr, ytr, *_, p = case
    z = p.scores(Xtr)
    P = np.exp(z - z.max(axis=1, keepdims=True))
    P /= P.sum(axis=1, keepdims=True)  # (n, K)
    R = P - np.eye(P.shape[1])[ytr]
    n = len(ytr)
    # The solver's scale is the objective / (C n): its tolerance 1e-6 bounds these per entry.
    assert np.abs((R.T @ Xtr + p.W) / n).max() <= 1e-6
    assert np.abs(R.sum(axis=0) / n).max() <= 1e-6
    assert np.abs(p.W).max() > 0.1  # a real fit, not the starting point


def test_deterministic(case):
    _, Xtr, ytr, *_, p = case
    again = probe.fit(Xtr, ytr)
    assert np.array_equal(again.W, p.W) and np.array_equal(again.b, p.b)


def test_predict_ties_go_to_the_lower_class():
    p = probe.Probe(np.zeros((3, 2)), np.array([0.0, 1.0, 1.0]), 0, 0.0, True)
    assert p.predict(np.ones((4, 2))).tolist() == [1, 1, 1, 1]


def test_larger_C_fits_the_training_set_closer(case):
    _, Xtr, ytr, *_, p = case
    loose = probe.fit(Xtr, ytr, C=100.0)
    assert np.abs(loose.W).max() > np.abs(p.W).max()  # a weaker penalty: larger weights
    assert loose.accuracy(Xtr, ytr) >= p.accuracy(Xtr, ytr)


def test_non_convergence_is_reported():
    X, y, *_ = synthetic(seed=1, n_train=60, n_test=0, d=8, K=3, sep=0.01)
    p = probe.fit(X, y, max_iter=2)
    assert not p.converged and p.grad_max > 1e-6 and p.iterations == 2


@pytest.mark.parametrize("y, match", [([0, 1, 0, 1], "K >= 3"), ([0, 1, 3, -1], "labels"), ([0, 1], "expected X")])
def test_bad_labels_refused(y, match):
    with pytest.raises(ValueError, match=match):
        probe.fit(np.ones((4, 2)), np.array(y))


@pytest.mark.parametrize("y, K, missing", [([0, 0, 0, 0], 3, "classes 1, 2 of 0..2"),  # XNLI --limit before issue 25
                                           ([0, 2, 2, 0], None, "class 1 of 0..2"),
                                           ([0, 1, 2, 1], 4, "class 3 of 0..3")])
def test_training_labels_missing_a_class_are_refused_in_one_line(y, K, missing):
    """A class with no training row would be fitted as never-predicted and reported "converged"."""
    from minihbt.io.files import UserError
    with pytest.raises(UserError) as e:
        probe.fit(np.random.default_rng(0).random((4, 2)), np.array(y), n_classes=K)
    assert str(e.value).startswith(f"probe training labels miss {missing} (4 rows)") and "\n" not in str(e.value)
