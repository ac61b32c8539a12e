"""The downstream protocols on frozen embeddings: XNLI, TyDi QA GoldP, SIB-200, Tatoeba.

Question: does hybrid batch training (Elmahdy et al. 2024) help multilingual tasks beyond LAReQA
retrieval? The encoder stays frozen; each task is read off its embeddings, so a difference between
two models is a difference between their embedding spaces. Every function here takes embeddings
(float32, L2-normalised rows, from minihbt.downstream.suite) and returns a results dict.

Protocols (pinned: they are what makes results comparable)
- XNLI (Conneau et al. 2018). Pair features [u, v, |u - v|, u * v] (InferSent, Conneau et al.
  2017; SentEval) of premise u and hypothesis v; a linear probe (minihbt.downstream.probe: multinomial
  logistic regression, C = 1) trained on the 9,000 English MultiNLI pairs; accuracy on the test
  file of each language (zero-shot cross-lingual transfer from English) and on dev for el, ru, th.
  Training-free pair score: average precision of cos(u, v) ranking entailment (positive) above
  contradiction (negative) pairs, neutral pairs left out; tied scores count as one threshold
  (scikit-learn's `average_precision_score`), so the value does not depend on row order.
- TyDi QA GoldP (Clark et al. 2020), as retrieval. Per language, every question against the
  distinct passages of that language; its one relevant passage is its own. MRR@10, R@1, R@5,
  nDCG@10 (trec_eval's definitions; minihbt.search's tie rule: equal scores, lower index first).
  Pooled: every question against the passages of all languages; MRR@10, and the share of
  questions whose top-1 passage is in another language (language bias; 0 is none).
- SIB-200 (Adelani et al. 2024). The probe on the sentence embedding, trained on English train,
  accuracy on every language's test (cross); and trained and tested within each language.
- Tatoeba (Artetxe and Schwenk 2019). Nearest neighbour by cosine (ties to the lower index):
  accuracy of x -> eng and eng -> x per language, and their mean.
Means are macro over languages. "seen" / "unseen" split the languages by the model's training
languages (its provenance; for an untrained model the paper's nine, config.TRAIN_LANGS).

Results schema: every metric block is a Summary,
    {"mean": float, "seen": float | null, "unseen": float | null, "per_lang": {lang: float}}
mean over all languages of per_lang, seen / unseen over those in / not in the training
languages (null when there are none). Per task:
    xnli:    {"accuracy": {"test": S, "dev": S}, "pair_ap": {"test": S, "dev": S},
              "probe": {"train_accuracy", "iterations", "grad_max", "converged"}}
    tydiqa:  {"mono": {"mrr@10": S, "r@1": S, "r@5": S, "ndcg@10": S},
              "pooled": {"mrr@10": S, "other_lang_top1": S}}
    sib-200: {"accuracy": {"cross": S, "within": S}, "probe": {"iterations", "converged"}}
    tatoeba: {"accuracy": {"to_eng": S, "from_eng": S, "mean": S}}
Every task also has "rows": each row's value of the headline metric (HEADLINE below), in file
order, for paired comparisons of two models on the same rows (minihbt.downstream.paired); row_values decodes
it, and the mean of a language's values is its per_lang value:
    xnli:    {"correct": {lang: "0110..."}}   one digit per test pair, 1 = the probe is right
    tydiqa:  {"rank": {lang: "1 3 1 27 ..."}} the rank of each question's passage (mono); RR@10
    sib-200: {"correct": {lang: "0110..."}}   the English-trained probe, test rows
    tatoeba: {"to_eng": {lang: "01..."}, "from_eng": {lang: "01..."}}  a pair's value: their mean
(minihbt.downstream.suite adds the model, counts, timings and the training languages used.)
"""
from __future__ import annotations

import numpy as np

from minihbt import metrics, search
from minihbt.downstream import probe


# ----------------------------------------------------------------------------- summaries

def summary(per_lang: dict[str, float], seen: set[str]) -> dict:
    """The Summary block of the module docstring: macro means overall, seen, unseen."""
    def mean(langs):
        values = [per_lang[l] for l in langs]
        return float(np.mean(values)) if values else None

    return {"mean": mean(list(per_lang)), "seen": mean([l for l in per_lang if l in seen]),
            "unseen": mean([l for l in per_lang if l not in seen]),
            "per_lang": {l: float(v) for l, v in per_lang.items()}}


# ----------------------------------------------------------------------------- metrics

def pair_average_precision(scores, positive) -> float:
    """AP of `scores` ranking the `positive` rows first; a run of tied scores is one threshold.

    scikit-learn's average_precision_score: AP = sum_t (R_t - R_{t-1}) P_t over the distinct
    score thresholds t in decreasing order, R and P the recall and precision of {score >= t}.
    So the tied positives of a block all get the precision of the whole block.
    """
    s, pos = np.asarray(scores, dtype=np.float64), np.asarray(positive, dtype=bool)
    if s.shape != pos.shape or s.ndim != 1 or not pos.any():
        raise ValueError("expected 1-D scores and labels of one length, with at least one positive")
    order = np.argsort(-s, kind="stable")
    s, pos = s[order], pos[order]
    last = np.r_[s[1:] != s[:-1], True]  # the last row of each block of equal scores
    tp = np.cumsum(pos)[last]            # true positives above each threshold
    seen = np.flatnonzero(last) + 1      # rows above each threshold
    new_tp = np.diff(np.r_[0, tp])       # positives gained at each threshold
    return float(np.sum(new_tp * tp / seen) / pos.sum())


def reciprocal_rank_at_k(ranks, k: int) -> np.ndarray:
    """RR@k per query: 1 / rank of its best-ranked relevant candidate if within the top k, else 0
    (trec_eval's recip_rank on a run cut at depth k). ranks: as minihbt.metrics; no relevant: NaN."""
    r = np.asarray(ranks, dtype=np.int64)
    r = r[:, None] if r.ndim == 1 else r  # (n, m)
    best = np.where(r > 0, r, np.iinfo(np.int64).max).min(axis=1)
    rr = np.where(best <= k, 1.0 / np.minimum(best, k + 1), 0.0)
    return np.where((r > 0).any(axis=1), rr, np.nan)


def _nearest(queries: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    return search.topk(queries, candidates, 1)[1][:, 0]  # (n,), ties to the lower index


def _digits(hit) -> str:
    return "".join("1" if h else "0" for h in np.asarray(hit, dtype=bool))


# ----------------------------------------------------------------------------- XNLI

def nli_features(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """[u, v, |u - v|, u * v]: (n, d) x 2 -> (n, 4d)."""
    return np.concatenate([u, v, np.abs(u - v), u * v], axis=1)


def xnli(train, test: dict, dev: dict, seen: set[str]) -> dict:
    """train, and each value of test / dev: (U (n, d), V (n, d), labels (n,)), premise and hypothesis."""
    U, V, y = train
    p = probe.fit(nli_features(U, V), y, n_classes=3)
    acc, ap, correct = {"test": {}, "dev": {}}, {"test": {}, "dev": {}}, {}
    for split, langs in (("test", test), ("dev", dev)):
        for lang, (U, V, y) in langs.items():
            hit = p.predict(nli_features(U, V)) == y
            acc[split][lang] = float(np.mean(hit))
            if split == "test":
                correct[lang] = _digits(hit)
            keep = y != 1  # neutral pairs are neither positive nor negative
            ap[split][lang] = pair_average_precision(np.sum(U * V, axis=1)[keep], y[keep] == 0)
    return {"accuracy": {s: summary(v, seen) for s, v in acc.items()},
            "pair_ap": {s: summary(v, seen) for s, v in ap.items()},
            "probe": {"train_accuracy": p.accuracy(nli_features(*train[:2]), train[2]),
                      "iterations": p.iterations, "grad_max": p.grad_max, "converged": p.converged},
            "rows": {"correct": correct}}


# ----------------------------------------------------------------------------- TyDi QA

def tydiqa(Q: dict[str, np.ndarray], C: dict[str, np.ndarray], answer: dict[str, np.ndarray], seen: set[str]) -> dict:
    """Q[lang] (n, d) questions, C[lang] (N, d) distinct passages, answer[lang] (n,) index into C[lang]."""
    langs = list(Q)
    mono, rank = {m: {} for m in ("mrr@10", "r@1", "r@5", "ndcg@10")}, {}
    for lang in langs:
        r = search.ranks(Q[lang], C[lang], answer[lang].reshape(-1, 1))  # (n, 1)
        rank[lang] = " ".join(str(int(x)) for x in r[:, 0])
        mono["mrr@10"][lang] = float(np.mean(reciprocal_rank_at_k(r, 10)))
        mono["r@1"][lang] = float(np.mean(metrics.recall_at_k(r, 1)))
        mono["r@5"][lang] = float(np.mean(metrics.recall_at_k(r, 5)))
        mono["ndcg@10"][lang] = float(np.mean(metrics.ndcg_at_k(r, np.ones(r.shape), 10)))

    offset = dict(zip(langs, np.cumsum([0] + [len(C[l]) for l in langs])))
    pool = np.concatenate([C[l] for l in langs])  # (sum N, d)
    owner = np.concatenate([np.full(len(C[l]), i) for i, l in enumerate(langs)])  # language of each passage
    pooled = {"mrr@10": {}, "other_lang_top1": {}}
    for i, lang in enumerate(langs):
        r = search.ranks(Q[lang], pool, (offset[lang] + answer[lang]).reshape(-1, 1))  # (n, 1)
        pooled["mrr@10"][lang] = float(np.mean(reciprocal_rank_at_k(r, 10)))
        pooled["other_lang_top1"][lang] = float(np.mean(owner[_nearest(Q[lang], pool)] != i))
    return {"mono": {m: summary(v, seen) for m, v in mono.items()},
            "pooled": {m: summary(v, seen) for m, v in pooled.items()}, "rows": {"rank": rank}}


# ----------------------------------------------------------------------------- SIB-200

def sib(X: dict[str, dict[str, np.ndarray]], y: dict[str, dict[str, np.ndarray]], n_classes: int,
        seen: set[str], source: str = "en") -> dict:
    """X[lang]["train" | "test"] (n, d) sentence embeddings, y[lang][split] (n,) topic labels."""
    cross_probe = probe.fit(X[source]["train"], y[source]["train"], n_classes=n_classes)
    cross, within, probes, correct = {}, {}, [cross_probe], {}
    for lang in X:
        hit = cross_probe.predict(X[lang]["test"]) == y[lang]["test"]
        cross[lang], correct[lang] = float(np.mean(hit)), _digits(hit)
        own = cross_probe if lang == source else probe.fit(X[lang]["train"], y[lang]["train"], n_classes=n_classes)
        probes.append(own)
        within[lang] = own.accuracy(X[lang]["test"], y[lang]["test"])
    return {"accuracy": {"cross": summary(cross, seen), "within": summary(within, seen)},
            "probe": {"iterations": max(p.iterations for p in probes),
                      "converged": all(p.converged for p in probes)}, "rows": {"correct": correct}}


# ----------------------------------------------------------------------------- Tatoeba

def tatoeba(S: dict[str, np.ndarray], E: dict[str, np.ndarray], seen: set[str]) -> dict:
    """S[lang] (n, d) the non-English sentences, E[lang] (n, d) their English translations, row for row."""
    to_eng, from_eng, mean, rows = {}, {}, {}, {"to_eng": {}, "from_eng": {}}
    for lang in S:
        gold = np.arange(len(S[lang]))
        hit_to, hit_from = _nearest(S[lang], E[lang]) == gold, _nearest(E[lang], S[lang]) == gold
        to_eng[lang], from_eng[lang] = float(np.mean(hit_to)), float(np.mean(hit_from))
        mean[lang] = (to_eng[lang] + from_eng[lang]) / 2
        rows["to_eng"][lang], rows["from_eng"][lang] = _digits(hit_to), _digits(hit_from)
    return {"accuracy": {"to_eng": summary(to_eng, seen), "from_eng": summary(from_eng, seen),
                         "mean": summary(mean, seen)}, "rows": rows}


# The one Summary per task that comparison tables lead with: a path into the results dict.
HEADLINE = {"xnli": ("accuracy", "test"), "tydiqa": ("mono", "mrr@10"), "sib-200": ("accuracy", "cross"),
            "tatoeba": ("accuracy", "mean")}


def row_values(task: str, result: dict) -> dict[str, np.ndarray]:
    """{lang: float64 (n,)} each row's value of the task's HEADLINE metric, from result["rows"];
    ValueError if their means do not give the result's per_lang values (a damaged or edited file)."""
    rows = result["rows"]
    digits = lambda s: np.frombuffer(s.encode(), dtype=np.uint8).astype(np.float64) - ord("0")  # noqa: E731
    if task == "tydiqa":
        values = {l: reciprocal_rank_at_k(np.array(r.split(), dtype=np.int64), 10) for l, r in rows["rank"].items()}
    elif task == "tatoeba":
        values = {l: (digits(s) + digits(rows["from_eng"][l])) / 2 for l, s in rows["to_eng"].items()}
    else:
        values = {l: digits(s) for l, s in rows["correct"].items()}
    a, b = HEADLINE[task]
    want = result[a][b]["per_lang"]
    if list(values) != list(want) or any(abs(float(np.mean(values[l])) - want[l]) > 1e-9 for l in want):
        raise ValueError(f"{task}: the per-row values do not give the per_lang {a} {b}")
    return values
