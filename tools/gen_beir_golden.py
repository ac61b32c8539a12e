"""Write tests/golden/beir_golden.json: trec_eval's measures (pytrec_eval) on a small graded collection.

The collection: 150 passages and 16 queries with small-integer embeddings (6 dims, values -2..2),
so every inner product is exact in float32 and many scores tie; passages 40-44 repeat passage 7.
Graded qrels 0-3 (and one -1), about half of them among each query's 20 best passages, with edge
cases: a query judged only with grade 0, a query whose relevant passage is missing from the
corpus, a query with relevant passages beyond rank 10 and 100.

Ties: trec_eval sorts by score, then by docid in decreasing strcmp order. Naming passage j
"d{149 - j:03d}" makes that "lower corpus index first", minihbt's tie rule, so pytrec_eval's
numbers are the ones minihbt must reproduce exactly.

Stored per query: map (full depth: the run lists all 150 passages), ndcg_cut_10, recall_100, and
recip_rank of the run cut at its top 10 (MRR@10), in trec_eval's own order.

Usage: python tools/gen_beir_golden.py   (needs pytrec_eval-terrier)
"""
import json
from pathlib import Path

import numpy as np
import pytrec_eval

OUT = Path(__file__).resolve().parents[1] / "tests" / "golden" / "beir_golden.json"
N, NQ, D = 150, 16, 6


def main():
    rng = np.random.default_rng(15)
    docs = rng.integers(-2, 3, size=(N, D)).astype(np.float32)
    docs[40:45] = docs[7]
    queries = rng.integers(-2, 3, size=(NQ, D)).astype(np.float32)
    doc_ids = [f"d{N - 1 - j:03d}" for j in range(N)]
    query_ids = [f"q{i:02d}" for i in range(NQ)]
    scores = queries.astype(np.float64) @ docs.T.astype(np.float64)  # exact: small integers

    qrels = {}
    for i, q in enumerate(query_ids):
        # half of the judgments among the 20 best-scored passages, so that the top 10 holds some
        best = np.argsort(-scores[i], kind="stable")[:20]
        judged = np.unique(np.concatenate([rng.choice(best, size=int(rng.integers(2, 7)), replace=False),
                                           rng.choice(N, size=int(rng.integers(1, 7)), replace=False)]))
        qrels[q] = {doc_ids[j]: int(rng.integers(0, 4)) for j in judged}
    qrels["q00"] = {d: 0 for d in list(qrels["q00"])}                 # no relevant document
    qrels["q01"]["dmissing"] = 2                                      # relevant, not in the corpus
    qrels["q02"]["d000"] = 1                                          # usually deep in the ranking
    qrels["q03"][doc_ids[int(np.argsort(scores[3])[0])]] = 3          # the lowest-scored passage
    qrels["q04"][doc_ids[7]] = 2                                      # among the duplicates
    qrels["q04"][doc_ids[42]] = 1
    qrels["q05"][doc_ids[5]] = -1                                     # a negative grade
    for q in query_ids[1:]:
        if not any(g >= 1 for g in qrels[q].values()):
            qrels[q][doc_ids[int(rng.integers(N))]] = 1

    run = {q: {doc_ids[j]: float(scores[i, j]) for j in range(N)} for i, q in enumerate(query_ids)}
    full = pytrec_eval.RelevanceEvaluator(qrels, {"map", "ndcg_cut_10", "recall_100"}).evaluate(run)

    def trec_order(i):  # score descending, then docid descending, as trec_eval sorts a run
        by_docid = sorted(range(N), key=lambda j: doc_ids[j], reverse=True)
        return sorted(by_docid, key=lambda j: -scores[i, j])

    cut = {q: {doc_ids[j]: float(scores[i, j]) for j in trec_order(i)[:10]} for i, q in enumerate(query_ids)}
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(cut)
    golden = {q: {"map": full[q]["map"], "ndcg@10": full[q]["ndcg_cut_10"], "recall@100": full[q]["recall_100"],
                  "mrr@10": rr[q]["recip_rank"]} for q in query_ids}
    assert set(golden) == set(query_ids)
    OUT.write_text(json.dumps({
        "generator": "tools/gen_beir_golden.py", "pytrec_eval": "pytrec_eval-terrier",
        "doc_ids": doc_ids, "query_ids": query_ids, "docs": docs.astype(int).tolist(),
        "queries": queries.astype(int).tolist(), "qrels": qrels, "per_query": golden,
        "mean": {m: float(np.mean([golden[q][m] for q in query_ids])) for m in ("ndcg@10", "recall@100",
                                                                                  "mrr@10", "map")},
    }) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
