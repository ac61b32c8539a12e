"""minihbt/validation.py: the held-out split on XQuAD-R and MLQA-R (no sentence on both sides,
fixed, the fraction), and the multilingual mAP against scikit-learn's average precision."""
import hashlib
import math
import warnings

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from minihbt.io.files import UserError
from minihbt.lareqa import Example, TRAIN_LANGS, load_groups
from minihbt.validation import ValidationSet, hold_out, split_groups


@pytest.fixture(scope="module")
def datasets():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # XQuAD-R tr's two known sentence/offset disagreements
        return {"xquad-r": load_groups("xquad-r", TRAIN_LANGS),
                "mlqa-r": load_groups("mlqa-r", ["ar", "de", "en", "es", "hi", "zh"])}


def sentences(groups, ids):
    """Every (language, sentence id) the groups use, as answer or candidate negative."""
    return {(l, sid) for g in ids for l, ex in groups[g].items() for sid in [ex.sid, *(s for s, _ in ex.negatives)]}


@pytest.mark.parametrize("name", ["xquad-r", "mlqa-r"])
def test_split_shares_no_sentence_and_holds_out_the_fraction(datasets, name):
    groups = datasets[name]
    train, held = split_groups(groups, 0.1)
    assert sorted(train + held) == sorted(groups) and not set(train) & set(held)
    assert math.ceil(0.1 * len(groups)) <= len(held) <= 0.1 * len(groups) + 20  # whole components, at most 17 each
    assert not sentences(groups, train) & sentences(groups, held)
    assert split_groups(groups, 0.1) == (train, held)  # fixed: the same split every time
    assert split_groups(groups, 0.1, seed=1) != (train, held)


def test_xquad_r_is_split_by_paragraph(datasets):
    groups = datasets["xquad-r"]
    train, held = split_groups(groups, 0.1)
    paragraph = {g: groups[g]["en"].sid[0] for g in groups}  # XQuAD-R's paragraph ids agree across languages
    held_paragraphs = {paragraph[g] for g in held}
    assert {g for g in groups if paragraph[g] in held_paragraphs} == set(held)
    assert len(held) == 122 and len(held_paragraphs) == 25  # of 1,190 groups in 240 paragraphs


def test_no_fraction_holds_out_nothing_and_bad_fraction_is_an_error(datasets):
    groups = datasets["mlqa-r"]
    assert split_groups(groups, 0.0) == (sorted(groups), [])
    with pytest.raises(UserError, match="--val-fraction"):
        split_groups(groups, 1.0)


class HashEncoder:
    """Deterministic pseudo-random unit vectors per (kind, text): an encoder for scoring tests."""

    def encode(self, texts, kind, batch_size=64, max_len=512, progress=None):
        out = []
        for t in texts:
            v = np.random.default_rng(int(hashlib.sha256(f"{kind}|{t}".encode()).hexdigest()[:8], 16)).standard_normal(16)
            out.append(v / np.linalg.norm(v))
        return np.array(out, dtype=np.float32)


def test_score_is_the_macro_multilingual_map_of_scikit_learn(datasets):
    # XQuAD-R, with de and th taken from every other group so that groups differ in languages (as
    # MLQA-R's do). Its held-out pool has no two equal texts, so no scores tie: scikit-learn ranks
    # ties together, minihbt.search by index, and only ties could tell them apart.
    langs = ["ar", "de", "en", "th", "zh"]
    groups = {g: {l: ex for l, ex in v.items() if l in langs and not (i % 2 and l in ("de", "th"))}
              for i, (g, v) in enumerate(sorted(datasets["xquad-r"].items()))}
    _, held = split_groups(groups, 0.1)
    vs = ValidationSet.build(groups, held, langs)
    assert len(set(vs.pool)) == len(vs.pool)
    enc = HashEncoder()
    # Reference: the pool is every distinct (language, sentence id) of the held-out examples; each
    # question, per language it has, against the whole pool; relevant: its answer in every language.
    pool = {}
    for l in langs:
        for g in held:
            if l in groups[g]:
                ex = groups[g][l]
                for sid, text in [(ex.sid, ex.sentence), *ex.negatives]:
                    pool.setdefault((l, sid), text)
    keys = list(pool)
    P = enc.encode([pool[k] for k in keys], "passage")
    per_lang = []
    for x in langs:
        aps = []
        for g in held:
            if x not in groups[g]:
                continue
            scores = P @ enc.encode([groups[g][x].question], "query")[0]
            relevant = {(l, groups[g][l].sid) for l in groups[g]}
            aps.append(average_precision_score([k in relevant for k in keys], scores))
        per_lang.append(np.mean(aps))
    assert len(vs.pool) == len(keys) and sum(len(q) for q in vs.queries.values()) == sum(
        len(groups[g]) for g in held)
    assert vs.score(enc, 64, 128) == pytest.approx(float(np.mean(per_lang)), abs=1e-9)


def test_score_on_a_hand_built_pool():
    # Two groups in en and de, inner products worked by hand below.
    e = {"g1": {"en": Example("q1", "s1", "", "s1"), "de": Example("q1de", "t1", "", "t1")},
         "g2": {"en": Example("q2", "s2", "", "s2", (("n2", "n2"),)), "de": Example("q2de", "t2", "", "t2")}}
    vecs = {"s1": [1, 0, 0], "t1": [0.9, 0.1, 0], "s2": [0, 1, 0], "t2": [0, 0.2, 1], "n2": [0.5, 0.5, 0.5],
            "q1": [1, 0, 0], "q1de": [1, 0, 0], "q2": [0.8, 0.6, 0], "q2de": [0, 0.1, 1]}

    class Fixed:
        def encode(self, texts, kind, batch_size=64, max_len=512, progress=None):
            return np.array([vecs[t] for t in texts], dtype=np.float32)

    vs = ValidationSet.build(e, ["g1", "g2"], ["en", "de"])
    assert vs.pool == ["t1", "t2", "s1", "s2", "n2"] and vs.langs == ["de", "en"]
    # q1, q1de: s1 1, t1 .9, then n2 .5: both answers at ranks 1, 2.
    # q2: s1 .8, t1 .78, n2 .7, s2 .6, t2 .12: its answers at ranks 4 and 5.
    # q2de: t2 1.02, n2 .55, s2 .1, t1 .01, s1 0: its answers at ranks 1 and 3.
    ap = {"q1": 1.0, "q1de": 1.0, "q2": (1 / 4 + 2 / 5) / 2, "q2de": (1 / 1 + 2 / 3) / 2}
    assert vs.score(Fixed(), 64, 128) == pytest.approx(np.mean([(ap["q1de"] + ap["q2de"]) / 2,
                                                                (ap["q1"] + ap["q2"]) / 2]), abs=1e-12)


def test_hold_out_removes_the_held_out_groups_from_training(datasets):
    kept, valsets = hold_out({"mlqa-r": datasets["mlqa-r"]}, {"mlqa-r": ["de", "en"]}, 0.1)
    train, held = split_groups(datasets["mlqa-r"], 0.1)
    assert sorted(kept["mlqa-r"]) == train and len(valsets) == 1
    assert set(valsets[0].langs) <= {"de", "en"}
