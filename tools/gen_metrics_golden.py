"""Write tests/golden/metrics_golden.json: AP, nDCG@k and recall@k from scikit-learn and pytrec_eval.

Cases (scores are float32 values so a test can rebuild them exactly as inner products):
- "pytrec_readme": the example of the pytrec_eval README (map 0.3333 and 0.58333).
- "random": random scores, 1-6 relevant per query, sklearn `average_precision_score` per query.
- "tied": scores on 4 levels, so most scores tie. Two references, both stored:
    * `trec_ap`: pytrec_eval. trec_eval orders tied documents by docno *descending*; naming
      candidate j "d{N-1-j}" makes that "lower index first", minihbt's tie rule. This is the
      value minihbt must reproduce.
    * `sklearn_index_broken_ap`: sklearn on the scores with ties broken by index first
      (checked equal to `trec_ap` here).
    * `sklearn_ap`: sklearn treats a run of tied scores as one threshold (each tied relevant
      candidate gets the precision of the whole tied block), a different convention. Stored
      only to show that the case does exercise ties.
- "last": one query whose only relevant candidate is ranked last, one with relevant first
  and last; sklearn.
- "graded": graded qrels (0-3) over random scores; pytrec_eval ndcg_cut_{5,10}, recall_{5,10}.

Usage: python tools/gen_metrics_golden.py   (needs scikit-learn, pytrec_eval-terrier)
"""
import json
from pathlib import Path

import numpy as np
import pytrec_eval
import sklearn
from sklearn.metrics import average_precision_score

OUT = Path(__file__).resolve().parents[1] / "tests" / "golden" / "metrics_golden.json"


def docno(j: int, n: int) -> str:
    return f"d{n - 1 - j:04d}"  # descending docno = ascending candidate index


def trec(scores: np.ndarray, rel: np.ndarray, measures: set[str]) -> dict[str, list[float]]:
    n, N = scores.shape
    qrel = {f"q{i}": {docno(j, N): int(rel[i, j]) for j in range(N)} for i in range(n)}
    run = {f"q{i}": {docno(j, N): float(scores[i, j]) for j in range(N)} for i in range(n)}
    res = pytrec_eval.RelevanceEvaluator(qrel, measures).evaluate(run)
    return {m: [res[f"q{i}"][m] for i in range(n)] for m in sorted(measures)}


def relevance(rng, n: int, N: int, max_rel: int) -> np.ndarray:
    rel = np.zeros((n, N), dtype=np.int64)
    for i in range(n):
        rel[i, rng.choice(N, size=rng.integers(1, max_rel + 1), replace=False)] = 1
    return rel


def main():
    rng = np.random.default_rng(2408)
    cases = {}

    qrel = {"q1": {"d1": 0, "d2": 1, "d3": 0}, "q2": {"d2": 1, "d3": 1}}
    run = {"q1": {"d1": 1.0, "d2": 0.0, "d3": 1.5}, "q2": {"d1": 1.5, "d2": 0.2, "d3": 0.5}}
    res = pytrec_eval.RelevanceEvaluator(qrel, {"map"}).evaluate(run)
    cases["pytrec_readme"] = {"qrel": qrel, "run": run,
                              "map": {q: res[q]["map"] for q in ("q1", "q2")}}

    n, N = 12, 40
    scores = rng.standard_normal((n, N)).astype(np.float32)
    rel = relevance(rng, n, N, 6)
    cases["random"] = {"scores": scores.tolist(), "relevant": rel.tolist(),
                       "sklearn_ap": [average_precision_score(rel[i], scores[i]) for i in range(n)]}

    scores = rng.integers(0, 4, size=(n, N)).astype(np.float32)
    rel = relevance(rng, n, N, 8)
    sk = [average_precision_score(rel[i], scores[i]) for i in range(n)]
    tr = trec(scores, rel, {"map"})["map"]
    assert not np.allclose(sk, tr), "tied case does not separate the two tie conventions"
    # Break ties by index explicitly (score -> minus position in a lexsort), then sklearn.
    position = np.stack([np.argsort(np.lexsort((np.arange(N), -row))) for row in scores])
    sk_broken = [average_precision_score(rel[i], -position[i]) for i in range(n)]
    assert np.allclose(sk_broken, tr), "trec_eval and index-broken sklearn disagree"
    cases["tied"] = {"scores": scores.tolist(), "relevant": rel.tolist(),
                     "trec_ap": tr, "sklearn_index_broken_ap": sk_broken, "sklearn_ap": sk}

    N = 25
    scores = np.linspace(1.0, -1.0, N, dtype=np.float32)[None].repeat(2, 0)  # rank j+1 = index j
    rel = np.zeros((2, N), dtype=np.int64)
    rel[0, N - 1] = 1
    rel[1, [0, N - 1]] = 1
    cases["last"] = {"scores": scores.tolist(), "relevant": rel.tolist(),
                     "sklearn_ap": [average_precision_score(rel[i], scores[i]) for i in range(2)]}

    n, N = 10, 30
    scores = rng.standard_normal((n, N)).astype(np.float32)
    grades = np.where(rng.random((n, N)) < 0.2, rng.integers(1, 4, size=(n, N)), 0)
    grades[:, 0] = np.maximum(grades[:, 0], 1)  # every query has a relevant candidate
    cases["graded"] = {"scores": scores.tolist(), "grades": grades.tolist(),
                       **trec(scores, grades, {"ndcg_cut_5", "ndcg_cut_10", "recall_5", "recall_10"})}

    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"generator": "tools/gen_metrics_golden.py",
                               "sklearn": sklearn.__version__, "cases": cases}) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
