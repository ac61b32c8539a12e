"""minihbt.downstream.tasks: the four protocols on hand-made embeddings, pair AP against scikit-learn and
the TyDi ranking metrics against pytrec_eval (tests/golden, from tools/gen_downstream_golden.py)."""
import json
import math
from pathlib import Path

import numpy as np
import pytest

from minihbt import search
from minihbt.downstream import tasks as downstream
from minihbt.downstream import probe

GOLDEN = json.loads((Path(__file__).parent / "golden" / "downstream_golden.json").read_text())
approx = lambda v: pytest.approx(v, abs=1e-12)  # noqa: E731


def test_summary_macro_means_seen_and_unseen():
    s = downstream.summary({"en": 0.9, "de": 0.6, "sw": 0.3}, seen={"en", "de", "zh"})
    assert s == {"mean": approx(0.6), "seen": approx(0.75), "unseen": approx(0.3),
                 "per_lang": {"en": 0.9, "de": 0.6, "sw": 0.3}}
    assert downstream.summary({"sw": 0.5}, seen={"en"})["seen"] is None


# ----------------------------------------------------------------------------- pair AP

@pytest.mark.parametrize("name", ["tied", "untied"])
def test_pair_ap_equals_sklearn(name):
    g = GOLDEN["pair_ap"][name]
    assert downstream.pair_average_precision(g["scores"], np.array(g["positive"]) == 1) == approx(g["ap"])


def test_pair_ap_by_hand_and_independent_of_row_order():
    # 0.9 (+) alone: precision 1; the tied block {0.8 -, 0.8 +}: 2 positives of 3 rows, precision 2/3.
    assert downstream.pair_average_precision([0.9, 0.8, 0.8, 0.1], [1, 0, 1, 0]) == approx((1 + 2 / 3) / 2)
    assert downstream.pair_average_precision([0.8, 0.1, 0.9, 0.8], [1, 0, 1, 0]) == approx((1 + 2 / 3) / 2)
    g = GOLDEN["pair_ap"]["tied"]
    perm = np.random.default_rng(0).permutation(len(g["scores"]))
    assert downstream.pair_average_precision(np.array(g["scores"])[perm], np.array(g["positive"])[perm] == 1) \
        == approx(g["ap"])


# ----------------------------------------------------------------------------- TyDi QA

def test_ranking_metrics_equal_pytrec_eval_with_ties():
    g = GOLDEN["ranking"]
    scores = np.array(g["scores"], dtype=np.float32)  # (n, N); queries x identity = exactly these scores
    rel = np.array(g["relevant"])
    r = search.ranks(scores, np.eye(scores.shape[1], dtype=np.float32), rel[:, None])
    assert downstream.reciprocal_rank_at_k(r, 10) == pytest.approx(g["mrr@10"], abs=1e-12)
    assert 0 < np.mean(g["mrr@10"]) < 1 and 0 in g["mrr@10"]  # ranks on both sides of the cut

    res = downstream.tydiqa({"en": scores}, {"en": np.eye(scores.shape[1], dtype=np.float32)}, {"en": rel}, {"en"})
    for m in ("mrr@10", "r@1", "r@5", "ndcg@10"):
        assert res["mono"][m]["per_lang"]["en"] == pytest.approx(np.mean(g[m]), abs=1e-12), m


def test_reciprocal_rank_by_hand():
    assert downstream.reciprocal_rank_at_k(np.array([[1], [4], [10], [11]]), 10).tolist() == [1, 0.25, 0.1, 0]
    rr = downstream.reciprocal_rank_at_k(np.array([[3, 2], [0, 0]]), 10)  # best of several; none: NaN
    assert rr[0] == 0.5 and math.isnan(rr[1])


def test_tydiqa_mono_and_pooled_by_hand():
    # Passages: en p0 e1, en p1 e2 | sw p0 e3, sw p1 e4 (pool indices 0 1 | 2 3).
    C = {"en": np.eye(4, dtype=np.float32)[:2], "sw": np.eye(4, dtype=np.float32)[2:]}
    Q = {"en": np.array([[1, 0, 0, 0], [0, 0.5, 0.9, 0]], dtype=np.float32),
         "sw": np.array([[0.7, 0, 0.7, 0], [0, 0, 0.6, 0.3]], dtype=np.float32)}
    answer = {"en": np.array([0, 1]), "sw": np.array([0, 1])}
    res = downstream.tydiqa(Q, C, answer, seen={"en"})
    mono, pooled = res["mono"], res["pooled"]
    # mono ranks: en 1, 1 | sw 1, 2
    assert mono["mrr@10"]["per_lang"] == {"en": 1.0, "sw": 0.75}
    assert mono["r@1"]["per_lang"] == {"en": 1.0, "sw": 0.5}
    assert mono["r@5"]["per_lang"] == {"en": 1.0, "sw": 1.0}
    assert mono["ndcg@10"]["per_lang"]["sw"] == approx((1 + 1 / math.log2(3)) / 2)
    assert mono["mrr@10"]["mean"] == 0.875 and mono["mrr@10"]["seen"] == 1.0 and mono["mrr@10"]["unseen"] == 0.75
    # pooled: en q1 loses to sw p0 (0.9 > 0.5): rank 2, top-1 in sw. sw q0 ties en p0 and sw p0 at 0.7:
    # the lower index (en p0) comes first, so rank 2 and top-1 in en. sw q1: rank 2, top-1 sw p0.
    assert pooled["mrr@10"]["per_lang"] == {"en": 0.75, "sw": 0.5}
    assert pooled["other_lang_top1"]["per_lang"] == {"en": 0.5, "sw": 0.5}


# ----------------------------------------------------------------------------- Tatoeba

def test_tatoeba_nearest_neighbour_with_ties_by_hand():
    # eng: e0 = e1 (a tie), e2, e3 | src: s0 = e0, s1 between e0 and e2, s2 = s3 = e2.
    E = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)
    S = np.array([[1, 0, 0], [0.8, 0.6, 0], [0, 1, 0], [0, 1, 0]], dtype=np.float32)
    res = downstream.tatoeba({"de": S, "el": S[:3]}, {"de": E, "el": E[:3]}, seen={"de"})["accuracy"]
    # x -> eng: s0 ties e0/e1 -> e0 (right); s1 -> e0 (0.8 > 0.6, wrong); s2 -> e2 (right); s3 -> e2 (wrong)
    # eng -> x: e0 -> s0 (right); e1 -> s0 (1 > 0.8, wrong); e2 ties s2/s3 -> s2 (right);
    #           e3 scores 0 everywhere -> s0 (wrong)
    assert res["to_eng"]["per_lang"]["de"] == 0.5 and res["from_eng"]["per_lang"]["de"] == 0.5
    # el, the first three pairs: x -> eng right, wrong, right; eng -> x right, wrong, right
    assert res["to_eng"]["per_lang"]["el"] == approx(2 / 3) and res["from_eng"]["per_lang"]["el"] == approx(2 / 3)
    assert res["mean"] == {"mean": approx((0.5 + 2 / 3) / 2), "seen": 0.5, "unseen": approx(2 / 3),
                           "per_lang": {"de": 0.5, "el": approx(2 / 3)}}


# ----------------------------------------------------------------------------- XNLI, SIB-200

def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def nli_pairs(rng, n: int, d: int = 16):
    """Hypotheses near the premise for entailment, opposite for contradiction, unrelated for neutral."""
    y = rng.integers(0, 3, n)
    U = unit(rng.normal(size=(n, d)))
    noise = rng.normal(size=(n, d))
    V = unit(np.where((y == 0)[:, None], U + 0.5 * noise, np.where((y == 2)[:, None], -U + 0.5 * noise, noise)))
    return U, V, y


def test_nli_features():
    u, v = np.array([[1.0, -2.0]]), np.array([[3.0, 1.0]])
    assert downstream.nli_features(u, v).tolist() == [[1, -2, 3, 1, 2, 3, 3, -2]]


def test_xnli_is_the_probe_on_pair_features_and_ap_leaves_out_neutral():
    rng = np.random.default_rng(0)
    train, test_en, test_sw, dev_el = (nli_pairs(rng, n) for n in (300, 120, 90, 60))
    res = downstream.xnli(train, {"en": test_en, "sw": test_sw}, {"el": dev_el}, seen={"en"})
    p = probe.fit(downstream.nli_features(*train[:2]), train[2])
    for split, lang, (U, V, y) in (("test", "en", test_en), ("test", "sw", test_sw), ("dev", "el", dev_el)):
        assert res["accuracy"][split]["per_lang"][lang] == p.accuracy(downstream.nli_features(U, V), y)
        keep = y != 1
        assert res["pair_ap"][split]["per_lang"][lang] == downstream.pair_average_precision(
            np.sum(U * V, axis=1)[keep], y[keep] == 0)
    assert res["accuracy"]["test"]["per_lang"]["en"] > 0.6  # the toy task is learnable (chance: 1/3)
    assert res["accuracy"]["test"]["seen"] == res["accuracy"]["test"]["per_lang"]["en"]
    assert res["accuracy"]["dev"]["seen"] is None
    assert res["probe"]["converged"] and res["probe"]["train_accuracy"] == p.accuracy(
        downstream.nli_features(*train[:2]), train[2])


def test_sib_cross_from_english_and_within_each_language():
    rng = np.random.default_rng(1)
    means = rng.normal(size=(4, 12))
    X, y = {}, {}
    for lang, shift in (("en", 0.0), ("de", 0.3), ("vi", 3.0)):  # vi is far from English's space
        y[lang] = {s: rng.integers(0, 4, n) for s, n in (("train", 80), ("test", 40))}
        X[lang] = {s: unit(means[y[lang][s]] + shift + 0.3 * rng.normal(size=(len(y[lang][s]), 12)))
                   for s in ("train", "test")}
    res = downstream.sib(X, y, 4, seen={"en", "de"})["accuracy"]
    en = probe.fit(X["en"]["train"], y["en"]["train"], n_classes=4)
    for lang in X:
        assert res["cross"]["per_lang"][lang] == en.accuracy(X[lang]["test"], y[lang]["test"])
        own = probe.fit(X[lang]["train"], y[lang]["train"], n_classes=4)
        assert res["within"]["per_lang"][lang] == own.accuracy(X[lang]["test"], y[lang]["test"])
    assert res["cross"]["per_lang"]["en"] == res["within"]["per_lang"]["en"]
    assert res["within"]["per_lang"]["vi"] > res["cross"]["per_lang"]["vi"]  # transfer is what suffers
    assert res["cross"]["unseen"] == res["cross"]["per_lang"]["vi"]


def test_headline_paths_exist_in_results():
    rng = np.random.default_rng(2)
    E = unit(rng.normal(size=(5, 4)))
    res = downstream.tatoeba({"de": E}, {"de": E}, {"de"})
    key = downstream.HEADLINE["tatoeba"]
    assert res[key[0]][key[1]]["mean"] == 1.0


# ----------------------------------------------------------------------------- per-row values

def test_rows_by_hand_tydiqa_and_tatoeba():
    C = {"en": np.eye(4, dtype=np.float32)[:2], "sw": np.eye(4, dtype=np.float32)[2:]}
    Q = {"en": np.array([[1, 0, 0, 0], [0, 0.5, 0.9, 0]], dtype=np.float32),
         "sw": np.array([[0.7, 0, 0.7, 0], [0, 0, 0.6, 0.3]], dtype=np.float32)}
    res = downstream.tydiqa(Q, C, {"en": np.array([0, 1]), "sw": np.array([0, 1])}, seen={"en"})
    assert res["rows"] == {"rank": {"en": "1 1", "sw": "1 2"}}  # the mono ranks of the test above
    assert {l: v.tolist() for l, v in downstream.row_values("tydiqa", res).items()} == {"en": [1, 1], "sw": [1, 0.5]}

    E = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)
    S = np.array([[1, 0, 0], [0.8, 0.6, 0], [0, 1, 0], [0, 1, 0]], dtype=np.float32)
    res = downstream.tatoeba({"de": S}, {"de": E}, seen={"de"})
    assert res["rows"] == {"to_eng": {"de": "1010"}, "from_eng": {"de": "1010"}}  # as worked out above
    assert downstream.row_values("tatoeba", res)["de"].tolist() == [1, 0, 1, 0]


def test_rows_of_the_probes_are_their_predictions():
    rng = np.random.default_rng(0)
    train, test_en = nli_pairs(rng, 300), nli_pairs(rng, 50)
    res = downstream.xnli(train, {"en": test_en}, {"el": nli_pairs(rng, 20)}, seen={"en"})
    p = probe.fit(downstream.nli_features(*train[:2]), train[2])
    hit = p.predict(downstream.nli_features(*test_en[:2])) == test_en[2]
    assert res["rows"] == {"correct": {"en": "".join(str(int(h)) for h in hit)}}  # test only, not dev
    assert downstream.row_values("xnli", res)["en"].tolist() == hit.astype(float).tolist()
    res["accuracy"]["test"]["per_lang"]["en"] += 0.01  # an edited file no longer adds up
    with pytest.raises(ValueError, match="xnli: the per-row values do not give"):
        downstream.row_values("xnli", res)


def test_rows_of_sib_are_the_english_probe_on_each_test_set():
    rng = np.random.default_rng(3)
    X = {l: {"train": unit(rng.normal(size=(40, 6))), "test": unit(rng.normal(size=(30, 6)))} for l in ("en", "de")}
    y = {l: {"train": rng.integers(0, 3, 40), "test": rng.integers(0, 3, 30)} for l in ("en", "de")}
    res = downstream.sib(X, y, 3, seen={"en"})
    en = probe.fit(X["en"]["train"], y["en"]["train"], n_classes=3)
    for lang in X:
        hit = en.predict(X[lang]["test"]) == y[lang]["test"]
        assert res["rows"]["correct"][lang] == "".join(str(int(h)) for h in hit)
        assert downstream.row_values("sib-200", res)[lang].mean() == res["accuracy"]["cross"]["per_lang"][lang]
