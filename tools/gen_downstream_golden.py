"""Write tests/golden/downstream_golden.json: the probe, pair AP and TyDi ranking metrics from
independent references (scikit-learn, pytrec_eval).

Cases
- "probe": scikit-learn `LogisticRegression(C=1.0, solver="lbfgs")`, solved tightly (tol 1e-10),
  on synthetic embedding-like rows (class means + noise, L2-normalised, 384-d) rebuilt by the
  test from `synthetic()` below (integer hashing only, so every machine gets the same rows): its
  predictions on train and test, accuracies, and the objective C * sum CE + 1/2 ||W||^2 at its
  solution. One 3-class case (XNLI's labels) and one 7-class case (SIB-200's), hard enough that
  accuracy is far from 1.
- "pair_ap": `average_precision_score` on scores with many ties (4 levels) and without ties.
- "ranking": one relevant candidate per query, scores on 6 levels (many ties), the relevant
  candidate's on the upper 4. pytrec_eval with
  candidate j named d{N-1-j}: trec_eval orders tied documents by docno descending, which makes
  that minihbt's "lower index first". recip_rank on the run cut to each query's top 10 (under
  that order) is MRR@10; ndcg_cut_10, recall_1 and recall_5 come from the full run.

Usage: python tools/gen_downstream_golden.py   (needs scikit-learn, pytrec_eval-terrier)
"""
import json
from pathlib import Path

import numpy as np
import pytrec_eval
import sklearn
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score

OUT = Path(__file__).resolve().parents[1] / "tests" / "golden" / "downstream_golden.json"
PROBE_CASES = {"xnli_like": dict(seed=1, n_train=450, n_test=300, d=384, K=3, sep=0.005),
               "sib_like": dict(seed=2, n_train=350, n_test=210, d=384, K=7, sep=0.008)}


def uniforms(seed: int, n: int) -> np.ndarray:
    """n floats in [0, 1) from splitmix64 of 0..n-1: integer arithmetic, identical on every machine."""
    z = np.arange(n, dtype=np.uint64) + np.uint64(seed * 0x9E3779B97F4A7C15 % 2**64)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


def synthetic(seed: int, n_train: int, n_test: int, d: int, K: int, sep: float):
    """(X_train, y_train, X_test, y_test): rows sep * mean[y] + noise, L2-normalised.

    Noise is the sum of 4 uniforms minus 2 (Irwin-Hall; variance 1/3), scaled by 0.05.
    Repeated verbatim in tests/test_probe.py (the golden file stores a checksum of X)."""
    n = n_train + n_test
    u = uniforms(seed, 4 * (K + n) * d).reshape(4, K + n, d)  # (4, K + n, d)
    g = u.sum(axis=0) - 2.0  # (K + n, d)
    y = (uniforms(seed + 1000, n) * K).astype(np.int64)
    X = sep * g[:K][y] + 0.05 * g[K:]
    X = X / np.sqrt((X * X).sum(axis=1, keepdims=True))
    return X[:n_train], y[:n_train], X[n_train:], y[n_train:]


def objective(W, b, X, y, C=1.0) -> float:
    z = X @ W.T + b
    z = z - z.max(axis=1, keepdims=True)
    ce = np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(y)), y]
    return float(C * ce.sum() + 0.5 * (W * W).sum())


def probe_cases() -> dict:
    out = {}
    for name, p in PROBE_CASES.items():
        Xtr, ytr, Xte, yte = synthetic(**p)
        m = LogisticRegression(C=1.0, solver="lbfgs", tol=1e-10, max_iter=100_000).fit(Xtr, ytr)
        out[name] = {"params": p, "x_sum": float(Xtr.sum() + Xte.sum()), "x_abs_sum": float(np.abs(Xtr).sum()),
                     "pred_train": "".join(map(str, m.predict(Xtr))), "pred_test": "".join(map(str, m.predict(Xte))),
                     "acc_train": float(m.score(Xtr, ytr)), "acc_test": float(m.score(Xte, yte)),
                     "objective": objective(m.coef_, m.intercept_, Xtr, ytr), "n_iter": int(m.n_iter_[0])}
    return out


def pair_ap_cases(rng) -> dict:
    tied = (rng.integers(0, 4, 300) / 4).astype(np.float32)  # 4 levels: most scores tie
    tied_pos = rng.random(300) < 0.3 + 0.4 * tied  # positives lean to high scores
    free = rng.normal(size=250).astype(np.float32)
    free_pos = rng.random(250) < 1 / (1 + np.exp(-2 * free))
    return {name: {"scores": s.tolist(), "positive": pos.astype(int).tolist(),
                   "ap": float(average_precision_score(pos, s))}
            for name, s, pos in (("tied", tied, tied_pos), ("untied", free, free_pos))}


def ranking_case(rng) -> dict:
    n, N = 60, 25
    scores = (rng.integers(0, 6, (n, N)) / 8).astype(np.float32)  # exact in float32; many ties
    relevant = rng.integers(0, N, n)
    scores[np.arange(n), relevant] = rng.integers(2, 6, n) / 8  # the relevant one leans high
    name = lambda j: f"d{N - 1 - j:03d}"  # noqa: E731  descending docno = ascending index
    qrel = {f"q{i}": {name(int(relevant[i])): 1} for i in range(n)}
    full = {f"q{i}": {name(j): float(scores[i, j]) for j in range(N)} for i in range(n)}
    order = [np.lexsort((np.arange(N), -scores[i])) for i in range(n)]  # score desc, then index asc
    top10 = {f"q{i}": {name(int(j)): float(scores[i, j]) for j in order[i][:10]} for i in range(n)}
    full_res = pytrec_eval.RelevanceEvaluator(qrel, {"ndcg_cut_10", "recall_1", "recall_5"}).evaluate(full)
    cut_res = pytrec_eval.RelevanceEvaluator(qrel, {"recip_rank"}).evaluate(top10)
    q = [f"q{i}" for i in range(n)]
    return {"scores": scores.tolist(), "relevant": relevant.tolist(),
            "mrr@10": [cut_res[k]["recip_rank"] for k in q], "ndcg@10": [full_res[k]["ndcg_cut_10"] for k in q],
            "r@1": [full_res[k]["recall_1"] for k in q], "r@5": [full_res[k]["recall_5"] for k in q]}


def main():
    rng = np.random.default_rng(2408)
    golden = {"versions": {"scikit-learn": sklearn.__version__, "numpy": np.__version__},
              "probe": probe_cases(), "pair_ap": pair_ap_cases(rng), "ranking": ranking_case(rng)}
    OUT.write_text(json.dumps(golden) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
