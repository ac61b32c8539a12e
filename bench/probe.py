"""The linear probe on the XNLI-sized problem: minihbt.probe against scikit-learn's LogisticRegression.

Workload: 9,000 training pairs, features [u, v, |u - v|, u * v] of 384-d unit vectors = 1,536
features, 3 classes, C = 1.0; accuracy on a held-out set of 5,010 pairs (an XNLI test file's size).
- default: synthetic pairs (seeded), hypotheses near the premise for entailment, opposite for
  contradiction, unrelated for neutral, with enough noise that accuracy is far from 1;
- `--real`: e5-small embeddings of XNLI train-en and test-en (read from the embedding cache;
  encoded first if it is cold, which takes minutes).

Contenders (each solves the same objective, C * sum CE + 1/2 ||W||^2, bias not penalised):
- minihbt:          probe.fit, torch L-BFGS, float64, max |grad| <= 1e-6 of the objective / (C n);
- sklearn (tol 1e-6): LogisticRegression(C=1, solver="lbfgs", tol=1e-6, max_iter=10000), the
                    same stopping rule (scipy's gtol on the same scaled objective);
- sklearn default:  LogisticRegression(C=1) with its defaults (tol 1e-4, max_iter 100), what a user
                    gets without asking.
Reported: best-of-3 wall time, iterations, the objective reached, train / test accuracy and
agreement of test predictions with minihbt's.

    python bench/probe.py [--real] [--repeat 3]
Last line: {"name": "probe_xnli", "minihbt": s, "sklearn": s, "ratio_sklearn": minihbt / sklearn, ...}
"""
import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import sklearn
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from timing import best_of  # noqa: E402  (bench/ is on sys.path when run as a script)
from minihbt import probe  # noqa: E402
from minihbt.downstream import tasks as downstream


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def synthetic_pairs(rng, n: int, d: int = 384):
    y = rng.integers(0, 3, n)
    U = unit(rng.standard_normal((n, d)))
    noise = 9.0 * unit(rng.standard_normal((n, d)))  # accuracy about 0.7, like a real probe
    V = unit(np.where((y == 0)[:, None], U, np.where((y == 2)[:, None], -U, 0.0)) + noise)
    return downstream.nli_features(U, V), y


def real_pairs():
    from minihbt import load_encoder
    from minihbt.downstream import datasets as downstream_data
    from minihbt.downstream.suite import Embedder, TaskConfig

    enc = load_encoder("e5-small")
    embed = Embedder(enc, TaskConfig(task="xnli"))
    data = downstream_data.load_xnli()
    out = []
    for d, label in ((data.train, "train-en"), (data.test["en"], "test-en")):
        E = embed(d.premise + d.hypothesis, "query", label)  # (2n, H)
        out.append((downstream.nli_features(E[: len(d.premise)], E[len(d.premise):]), d.label))
    return out


def objective(W, b, X, y, C=1.0) -> float:
    z = X @ W.T + b
    z = z - z.max(axis=1, keepdims=True)
    return float(C * (np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(y)), y]).sum() + 0.5 * (W * W).sum())


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--real", action="store_true", help="e5-small embeddings of XNLI train-en / test-en")
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    if a.real:
        (Xtr, ytr), (Xte, yte) = real_pairs()
    else:
        rng = np.random.default_rng(0)
        (Xtr, ytr), (Xte, yte) = synthetic_pairs(rng, 9000), synthetic_pairs(rng, 5010)
    Xtr64, Xte64 = Xtr.astype(np.float64), Xte.astype(np.float64)  # both sides get float64
    print(f"train {Xtr.shape}, test {Xte.shape}, torch threads {torch.get_num_threads()}", file=sys.stderr)

    rows = {}
    t, m = best_of(lambda: probe.fit(Xtr64, ytr), a.repeat)
    rows["minihbt"] = (t, m.iterations, m.W, m.b, m.predict(Xte64))
    for name, kw in (("sklearn", dict(tol=1e-6, max_iter=10_000)), ("sklearn_default", {})):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # the default's 100 iterations may not suffice
            t, s = best_of(lambda: LogisticRegression(C=1.0, solver="lbfgs", **kw).fit(Xtr64, ytr), a.repeat)
        rows[name] = (t, int(s.n_iter_[0]), s.coef_, s.intercept_, s.predict(Xte64))

    ours = rows["minihbt"][4]
    result = {"name": "probe_xnli", "data": "real e5-small XNLI" if a.real else "synthetic", "n": len(ytr),
              "features": Xtr.shape[1], "sklearn_version": sklearn.__version__}
    print(f"{'':<18}{'seconds':>9}{'iters':>7}{'objective':>14}{'train acc':>11}{'test acc':>10}{'agree':>8}",
          file=sys.stderr)
    for name, (t, iters, W, b, pred) in rows.items():
        train_acc = float(np.mean((Xtr64 @ W.T + b).argmax(1) == ytr))
        test_acc, agree = float(np.mean(pred == yte)), float(np.mean(pred == ours))
        obj = objective(W, b, Xtr64, ytr)
        print(f"{name:<18}{t:>9.2f}{iters:>7}{obj:>14.6f}{train_acc:>11.4f}{test_acc:>10.4f}{agree:>8.4f}",
              file=sys.stderr)
        result[name] = round(t, 3)
        result[f"{name}_detail"] = {"iterations": iters, "objective": obj, "train_acc": train_acc,
                                    "test_acc": test_acc, "agree_with_minihbt": agree}
    result["ratio_sklearn"] = round(result["minihbt"] / result["sklearn"], 3)
    result["ratio_sklearn_default"] = round(result["minihbt"] / result["sklearn_default"], 3)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
