"""A linear probe: multinomial logistic regression with an L2 penalty, solved by L-BFGS.

Frozen-embedding evaluation (XNLI, SIB-200 in minihbt.downstream) trains only this classifier
on top of the encoder's features, so it must be the textbook model, solved to convergence, with
no tuning. It is scikit-learn's `LogisticRegression(C=1.0, solver="lbfgs")` (Pedregosa et al.
2011) for K >= 3 classes, written in torch:

    minimise over W (K, d), b (K,):   C * sum_i CE(W x_i + b, y_i) + 1/2 ||W||_F^2

with CE the softmax cross-entropy and the bias b not penalised. Every class has its own weight
row (the symmetric parametrisation; scikit-learn fits a single vector when K = 2, a different
model, so two classes are refused rather than silently differing).

Solver. The objective divided by C * n, i.e. mean CE + ||W||^2 / (2 C n) (same minimiser), is
what scikit-learn hands to L-BFGS, so the stopping rule means the same thing here: stop when the
largest absolute gradient entry is <= tol = 1e-6 (scipy's `gtol`; scikit-learn's default 1e-4
is looser). torch.optim.LBFGS with a strong-Wolfe line search and 10 correction pairs (scipy's
default), float64, starting from zero. Nothing is random: the same inputs give the same weights.

Contract
    fit(X (n, d), y (n,) ints in [0, K), C=1.0, tol=1e-6) -> Probe
    Probe.scores(X) -> float64 (n, K);  Probe.predict(X) -> int64 (n,), argmax, ties to the
    lower class;  Probe.accuracy(X, y) -> float.  `converged` is False (and `grad_max` says by
    how much) if `max_iter` ran out first. Training labels without a row of some class in [0, K)
    are a UserError (one line): that class could never be predicted.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from minihbt.io.files import UserError


@dataclass
class Probe:
    W: np.ndarray      # float64 (K, d)
    b: np.ndarray      # float64 (K,)
    iterations: int    # L-BFGS iterations used
    grad_max: float    # max |gradient| of the scaled objective at the solution
    converged: bool    # grad_max <= tol

    def scores(self, X) -> np.ndarray:
        return np.asarray(X, dtype=np.float64) @ self.W.T + self.b  # (n, K)

    def predict(self, X) -> np.ndarray:
        return self.scores(X).argmax(axis=1).astype(np.int64)  # argmax: first maximum wins

    def accuracy(self, X, y) -> float:
        return float(np.mean(self.predict(X) == np.asarray(y)))


def fit(X, y, C: float = 1.0, tol: float = 1e-6, max_iter: int = 10_000, n_classes: int | None = None) -> Probe:
    """Fit the L2-penalised multinomial logistic regression described in the module docstring."""
    X = torch.as_tensor(np.asarray(X), dtype=torch.float64)
    y = torch.as_tensor(np.asarray(y), dtype=torch.int64)
    if X.dim() != 2 or y.shape != (X.shape[0],) or X.shape[0] == 0:
        raise ValueError(f"expected X (n, d) and y (n,) with n > 0, got {tuple(X.shape)} and {tuple(y.shape)}")
    n, d = X.shape
    K = n_classes if n_classes is not None else int(y.max()) + 1
    if K < 3 or y.min() < 0 or y.max() >= K:
        raise ValueError(f"expected labels in [0, K) with K >= 3 classes, "
                         f"got K = {K}, labels {int(y.min())}..{int(y.max())}")
    # A class without a training row still gets a weight row, pushed to -inf: the fit "converges"
    # and never predicts that class, so the accuracy looks real but is not. Refuse it instead.
    missing = [k for k in range(K) if not bool((y == k).any())]
    if missing:
        raise UserError(f"probe training labels miss class{'es' if len(missing) > 1 else ''} "
                        f"{', '.join(map(str, missing))} of 0..{K - 1} ({n} rows): every class needs a "
                        "training row (a --limit too small, or a training file sorted by label?)")
    W = torch.zeros(K, d, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(K, dtype=torch.float64, requires_grad=True)
    penalty = 1.0 / (2.0 * C * n)  # 1/2 ||W||^2 after dividing the objective by C * n

    def objective() -> torch.Tensor:
        return F.cross_entropy(X @ W.T + b, y) + penalty * (W * W).sum()

    # tolerance_change=0: stop on the gradient test alone (or an exactly zero step), as promised.
    opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=max_iter, max_eval=2 * max_iter, tolerance_grad=tol,
                            tolerance_change=0.0, history_size=10, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = objective()
        loss.backward()
        return loss

    opt.step(closure)
    closure()  # the gradient at the final point, whatever the last line search evaluated
    grad_max = max(W.grad.abs().max().item(), b.grad.abs().max().item())
    iterations = opt.state[opt.param_groups[0]["params"][0]].get("n_iter", 0)
    return Probe(W.detach().numpy().copy(), b.detach().numpy().copy(), int(iterations), grad_max, grad_max <= tol)
