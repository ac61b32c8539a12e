"""Each query's value in a LAReQA result: the unit of a paired test-row interval.

A results JSON (minihbt/lareqa_eval.py) stores, besides its aggregates, a "per_query" block: every
query's ranks, compactly, from which `query_values` re-derives each query's AP per setting and its
rank distance exactly (minihbt.metrics), and checks that their means give the stored aggregates.
The unit is the question id: a question asked in several languages has one id, so the rows of two
models, or of two languages, pair up by it (minihbt/downstream/paired.py takes ids as its items).

Contract
    pair_keys(langs) -> {(x, y): "x-y"}: the keys of ordered pairs; built from the language list,
        never split (codes such as zh-CN contain "-"); a set in which two pairs share a key is a UserError.
    per_query(ds, res) -> the "per_query" block of minihbt.lareqa_eval.evaluate's result `res`.
    query_values(report) -> {"mono" | "cross" | "multi" | "rank_distance": {lang or "x-y":
        QueryValues(qids, values)}}; ValueError unless their means give the stored aggregates.
    nanmean(values): the mean over the values that are not NaN (NaN if none).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from minihbt import metrics
from minihbt.io.files import UserError


def nanmean(values) -> float:
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def pair_keys(langs: list[str]) -> dict[tuple[str, str], str]:
    """{(x, y): "x-y"} for the ordered pairs of distinct languages; refused if two pairs share a key."""
    keys = {(x, y): f"{x}-{y}" for x in langs for y in langs if x != y}
    if len(set(keys.values())) < len(keys):
        seen: dict[str, tuple[str, str]] = {}
        for pair, k in keys.items():
            if k in seen:
                raise UserError(f"languages {', '.join(sorted(set(seen[k] + pair)))}: the pairs {'/'.join(seen[k])} "
                                f"and {'/'.join(pair)} would both be reported as {k!r}; rename a <lang>.json file")
            seen[k] = pair
    return keys


def per_query(ds, res: dict) -> dict:
    """The "per_query" block: every query's ranks, from which query_values re-derives each query's
    AP, R@k and rank distance exactly. The unit is the question id: a question asked in several
    languages has one id, so rows of two models (or two languages) pair up by it.
        "qids": [id, ...]                     every question id once (first seen over ds.langs)
        "questions": {lang: "i i ..."}        lang's questions in file order, as indices into qids
        "mono": {lang: "r r ..."}             rank of each question's answer among lang's sentences
        "cross": {"x-y": "r r ..."}           x's questions answered in y (x's order; those whose id
                                              is among y's questions), rank among y's sentences
        "multi": {lang: "r,r,r r,r ..."}      per question, the ranks of its answer sentences in the
                                              pooled candidates, in ds.langs order of the answers
    Mono and cross have one relevant sentence: AP = 1 / rank, R@1 = (rank == 1)."""
    keys = pair_keys(ds.langs)
    qids: dict[str, int] = {}
    for lang in ds.langs:
        for q in ds.questions[lang]:
            qids.setdefault(q.qid, len(qids))

    def ints(values) -> str:
        return " ".join(str(int(v)) for v in values)

    def rows(r: np.ndarray) -> str:
        return " ".join(",".join(str(int(v)) for v in row if v > 0) for row in r)

    return {"qids": list(qids),
            "questions": {l: ints(qids[q.qid] for q in ds.questions[l]) for l in ds.langs},
            "mono": {l: ints(res["mono"][l].ranks[:, 0]) for l in ds.langs},
            "cross": {keys[x, y]: ints(res["cross"][keys[x, y]].ranks[:, 0])
                      for x in ds.langs for y in ds.langs if x != y},
            "multi": {l: rows(res["multi"][l].ranks) for l in ds.langs}}


class QueryValues(NamedTuple):
    """One language's (or ordered pair's) queries: their question ids and one value each."""
    qids: list[str]
    values: np.ndarray  # float64 (n,)


def query_values(result: dict) -> dict[str, dict[str, QueryValues]]:
    """Each query's value of every setting, from a results JSON's "per_query" block:
        {"mono": {lang: AP}, "cross": {"x-y": AP}, "multi": {lang: AP},
         "rank_distance": {lang: rank distance, over the queries with >= 2 relevant sentences}}
    ValueError if the block is missing or inconsistent, or if the means of the values (and of
    R@1 / R@10) do not give the stored per-language / per-pair aggregates (a damaged or edited file)."""
    if "per_query" not in result:
        raise ValueError(f"{result.get('dataset')} / {result.get('model')}: no per_query values (an older result)")
    pq, langs = result["per_query"], result["langs"]
    ids = pq["qids"]
    split = lambda s: s.split(" ") if s else []  # noqa: E731
    own = {l: [ids[int(i)] for i in split(pq["questions"][l])] for l in langs}
    keys = pair_keys(langs)
    out: dict[str, dict[str, QueryValues]] = {"mono": {}, "cross": {}, "multi": {}, "rank_distance": {}}
    recall: dict[str, dict[str, float]] = {"mono@1": {}, "cross@1": {}, "multi@10": {}}

    def ranks_of(s: str, n: int, where: str) -> np.ndarray:
        r = np.array([int(v) for v in split(s)], dtype=np.int64).reshape(-1, 1)
        if len(r) != n:
            raise ValueError(f"per_query {where}: {len(r)} ranks for {n} queries")
        return r

    for x in langs:
        r = ranks_of(pq["mono"][x], len(own[x]), f"mono {x}")
        out["mono"][x] = QueryValues(own[x], metrics.average_precision(r))
        recall["mono@1"][x] = nanmean(metrics.recall_at_k(r, 1))
        for y in langs:
            if x != y:
                answered = set(own[y])
                q = [i for i in own[x] if i in answered]
                r = ranks_of(pq["cross"][keys[x, y]], len(q), f"cross {keys[x, y]}")
                out["cross"][keys[x, y]] = QueryValues(q, metrics.average_precision(r))
                recall["cross@1"][keys[x, y]] = nanmean(metrics.recall_at_k(r, 1))
        per_q = [[int(v) for v in row.split(",")] for row in split(pq["multi"][x])]
        if len(per_q) != len(own[x]):
            raise ValueError(f"per_query multi {x}: {len(per_q)} rows for {len(own[x])} queries")
        width = max((len(row) for row in per_q), default=1)
        r = np.zeros((len(per_q), width), dtype=np.int64)
        for i, row in enumerate(per_q):
            r[i, : len(row)] = row
        out["multi"][x] = QueryValues(own[x], metrics.average_precision(r))
        recall["multi@10"][x] = nanmean(metrics.recall_at_k(r, 10))
        rd = metrics.rank_distance(r)
        keep = ~np.isnan(rd)
        out["rank_distance"][x] = QueryValues([q for q, k in zip(own[x], keep) if k], rd[keep])

    def check(what: str, got: dict[str, float], want: dict) -> None:
        for k, v in want.items():
            g = got[k]
            if (v is None) != math.isnan(g) or (v is not None and abs(g - v) > 1e-9):
                raise ValueError(f"per_query values do not give the stored {what} of {k} ({g} != {v})")

    mean = lambda vs: {k: nanmean(v.values) for k, v in vs.items()}  # noqa: E731
    check("mono mAP", mean(out["mono"]), result["map"]["mono"]["per_lang"])
    check("cross mAP", mean(out["cross"]), result["map"]["cross"]["per_pair"])
    check("multi mAP", mean(out["multi"]), result["map"]["multi"]["per_lang"])
    check("rank distance", mean(out["rank_distance"]), result["rank_distance"]["per_lang"])
    for k, got in recall.items():
        check(f"R@{k.split('@')[1]}", got, result["recall"][k]["per_lang" if k != "cross@1" else "per_pair"])
    excluded = {x: len(own[x]) - len(out["rank_distance"][x].qids) for x in langs}
    if "excluded" in result["rank_distance"] and excluded != result["rank_distance"]["excluded"]:
        raise ValueError(f"per_query values leave out {excluded} queries from rank distance, "
                         f"not the stored {result['rank_distance']['excluded']}")
    return out
