"""minihbt/sampler.py: golden first batches, statistics over 10,000 batches, resume, bad input; hard
negatives and false negatives on XQuAD-R's real shared answer sentences."""
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from minihbt.io.files import UserError
from minihbt.lareqa import TRAIN_LANGS, load_groups, load_lareqa
from minihbt.sampler import Batch, HybridSampler, columns
from minihbt.step import false_negatives

GOLDEN = json.loads((Path(__file__).parent / "golden" / "sampler_toy.json").read_text())
TOY, TOY_LANGS = GOLDEN["datasets"], GOLDEN["langs"]


def as_json(batch):
    return {"kind": batch.kind, "dataset": batch.dataset, "groups": list(batch.groups),
            "pairs": [list(p) for p in batch.pairs]}


@pytest.mark.parametrize("run", GOLDEN["runs"], ids=lambda r: r["sampler"])
def test_first_batches_equal_golden(run):
    s = HybridSampler(TOY, TOY_LANGS, run["batch_size"], run["sampler"], run["alpha"], run["seed"])
    assert [as_json(next(s)) for _ in run["batches"]] == run["batches"]


def synthetic(n_groups, langs, rng, min_langs=1):
    """Groups with random language subsets (some monolingual), like MLQA-R's 2-4 of 7."""
    return {f"q{i:04d}": list(rng.choice(langs, size=rng.integers(min_langs, len(langs) + 1), replace=False))
            for i in range(n_groups)}


LANGS = ["ar", "de", "en", "es", "hi"]
RNG = np.random.default_rng(0)
DATASETS = {"a": synthetic(300, LANGS, RNG), "b": synthetic(100, LANGS[:3], RNG, min_langs=2)}


def within_3_sigma(count, n, p):
    return abs(count - n * p) <= 3 * np.sqrt(n * p * (1 - p))


def test_10000_hybrid_batches():
    n, alpha, b = 10_000, 0.3, 8
    s = HybridSampler(DATASETS, LANGS, b, "hybrid", alpha, seed=1)
    kinds, datasets, mono_langs = Counter(), Counter(), Counter()
    for _ in range(n):
        batch = next(s)
        groups = DATASETS[batch.dataset]
        assert len(batch.groups) == len(batch.pairs) == b
        assert len(set(batch.groups)) == b, "a batch repeats a group"
        for gid, (q, p) in zip(batch.groups, batch.pairs):
            assert q in groups[gid] and p in groups[gid]
        kinds[batch.kind] += 1
        datasets[batch.dataset] += 1
        if batch.kind == "mono":
            assert len(set(batch.pairs)) == 1 and batch.pairs[0][0] == batch.pairs[0][1]
            mono_langs[batch.dataset, batch.pairs[0][0]] += 1
        else:
            assert all(q != p for q, p in batch.pairs)
    assert within_3_sigma(kinds["mono"], n, alpha), kinds
    assert within_3_sigma(datasets["a"], n, 300 / 400), datasets
    # X-X languages are uniform over the languages the batch's dataset has.
    for name, langs in [("a", LANGS), ("b", LANGS[:3])]:
        total = sum(mono_langs[name, lang] for lang in langs)
        for lang in langs:
            assert within_3_sigma(mono_langs[name, lang], total, 1 / len(langs)), (name, lang, mono_langs)


def test_xy_pairs_uniform_over_ordered_pairs():
    # A group in 3 languages has 6 ordered pairs; each should come up 1/6 of the time.
    groups = {f"q{i}": ["de", "en", "zh"] for i in range(10)}
    s = HybridSampler({"t": groups}, ["de", "en", "zh"], 5, "xy", seed=3)
    counts = Counter(pair for _ in range(4000) for pair in next(s).pairs)
    assert len(counts) == 6 and all(q != p for q, p in counts)
    assert all(within_3_sigma(c, 20_000, 1 / 6) for c in counts.values()), counts


def test_xx_and_xy_only_draw_their_kind():
    for sampler, kind in [("xx", "mono"), ("xy", "cross")]:
        s = HybridSampler(DATASETS, LANGS, 4, sampler, seed=0)
        assert {next(s).kind for _ in range(200)} == {kind}


def test_alpha_edges():
    assert {next(HybridSampler(DATASETS, LANGS, 4, "hybrid", 1.0, seed=i)).kind for i in range(50)} == {"mono"}
    assert {next(HybridSampler(DATASETS, LANGS, 4, "hybrid", 0.0, seed=i)).kind for i in range(50)} == {"cross"}


def test_monolingual_groups_never_in_cross_batches():
    groups = {"solo": ["en"], "x": ["en", "de"], "y": ["de", "en"], "z": ["en", "de"]}
    s = HybridSampler({"t": groups}, ["de", "en"], 3, "xy", seed=0)
    assert all("solo" not in next(s).groups for _ in range(200))


def test_state_dict_resumes_exactly():
    s = HybridSampler(DATASETS, LANGS, 6, "hybrid", 0.5, seed=11)
    for _ in range(7):
        next(s)
    state = json.loads(json.dumps(s.state_dict()))  # the checkpoint stores it as plain data
    expected = [next(s) for _ in range(20)]
    resumed = HybridSampler(DATASETS, LANGS, 6, "hybrid", 0.5, seed=11)
    resumed.load_state_dict(state)
    assert [next(resumed) for _ in range(20)] == expected
    assert resumed.batches_drawn == s.batches_drawn == 27


def test_seed_changes_batches():
    a = HybridSampler(DATASETS, LANGS, 6, seed=0)
    b = HybridSampler(DATASETS, LANGS, 6, seed=1)
    assert [next(a) for _ in range(5)] != [next(b) for _ in range(5)]


@pytest.mark.parametrize("kwargs, match", [
    (dict(sampler="xz"), "--sampler"),
    (dict(alpha=1.5), "--alpha"),
    (dict(alpha=-0.1), "--alpha"),
    (dict(langs=LANGS + ["th"]), "--langs: th"),
    (dict(batch_size=0), "--batch-size"),
    # "b" has 100 groups; in one language of "a" there are fewer than 300.
    (dict(batch_size=150, sampler="xx"), "--batch-size 150 is larger than the"),
    (dict(batch_size=301, sampler="xy"), "--batch-size 301 is larger than the"),
])
def test_bad_input(kwargs, match):
    args = dict(datasets=DATASETS, langs=LANGS, batch_size=4, sampler="hybrid", alpha=0.5, seed=0) | kwargs
    with pytest.raises(UserError, match=match):
        HybridSampler(**args)


def test_language_missing_from_one_dataset_is_skipped_there():
    # "b" lacks es and hi: its X-X batches use only ar, de, en; asking for es is still fine.
    s = HybridSampler(DATASETS, ["es", "en"], 4, "xx", seed=5)
    seen = {(batch.dataset, batch.pairs[0][0]) for batch in (next(s) for _ in range(300))}
    assert seen == {("a", "es"), ("a", "en"), ("b", "en")}


# --- hard negatives and false negatives, on XQuAD-R ----------------------------------------------

@pytest.fixture(scope="module")
def xquad():
    """XQuAD-R in the training languages: the training view, and the reader's own candidates for an
    independent account of each question's answer (paragraph id, sentence index) per language."""
    ds = load_lareqa("xquad-r", TRAIN_LANGS)
    answer = {l: {qid: (ds.candidates[l][i].pid, ds.candidates[l][i].sent) for qid, i in ds.answer[l].items()}
              for l in ds.langs}
    paragraph = {l: {} for l in ds.langs}  # lang -> pid -> [sentence texts]
    for l in ds.langs:
        for c in ds.candidates[l]:
            paragraph[l].setdefault(c.pid, []).append(c.text)
    return load_groups("xquad-r", TRAIN_LANGS), answer, paragraph


def test_hard_negatives_never_an_answer_of_the_batch(xquad):
    groups, answer, paragraph = xquad
    n = 3
    s = HybridSampler({"xquad-r": groups}, TRAIN_LANGS, 16, "hybrid", seed=4, hard_negatives=n)
    empty = 0
    for _ in range(200):
        batch = next(s)
        assert len(batch.hard) == 16 and all(len(slots) == n for slots in batch.hard)
        taken = {(l, answer[l][g]) for g in batch.groups for l in TRAIN_LANGS}  # every answer of the batch
        for g, (_, p), slots in zip(batch.groups, batch.pairs, batch.hard):
            pid = answer[p][g][0]
            drawn = [s for s in slots if s is not None]
            for sid, text in drawn:
                assert sid[0] == pid and paragraph[p][pid][sid[1]] == text  # its paragraph, passage language
                assert (p, sid) not in taken                               # no answer, no repeat
                taken.add((p, sid))
            # A slot stays empty only when the paragraph has no eligible sentence left.
            left = [k for k in range(len(paragraph[p][pid])) if (p, (pid, k)) not in taken]
            assert len(drawn) == n or not left
            empty += n - len(drawn)
    assert empty > 0  # th paragraphs are short: the empty-slot rule was exercised


# Real shared answers of XQuAD-R (paragraph 0.0, "Super Bowl 50"), checked below against the reader:
A, B = "56beb4343aeaaa14008c925d", "56d6f3500d65d21400198294"  # one th sentence (6), two en sentences (5, 6)
C, D = "56beb4343aeaaa14008c925e", "56d6f3500d65d21400198290"  # one sentence in en, de (0) and th (1)
E, F = "56d9992fdc89441400fdb59f", "57339c16d058e614000b5ec9"  # answers no other question shares


def test_false_negatives_on_xquad_r_shared_answers(xquad):
    groups, answer, _ = xquad
    assert answer["th"][A] == answer["th"][B] and answer["en"][A] != answer["en"][B]
    assert all(answer[l][C] == answer[l][D] for l in ("en", "de", "th"))
    examples = groups
    order = [A, B, C, D, E, F]

    def count(pairs, hard=()):
        batch = Batch("mono" if pairs[0][0] == pairs[0][1] else "cross", "xquad-r", order, pairs, list(hard))
        mask = false_negatives(batch, examples)
        return {(order[i], j) for i, j in zip(*np.nonzero(mask))}

    # X-X en: C and D have one answer sentence; A and B do not (en splits their th sentence in two).
    assert count([("en", "en")] * 6) == {(C, 3), (D, 2)}
    # X-X th: both pairs share.
    assert count([("th", "th")] * 6) == {(A, 1), (B, 0), (C, 3), (D, 2)}
    # X-Y: column 1 (B's th passage) is A's th answer, but column 0 (A's en passage) is not B's en
    # answer: one pair, one way. Column 2 (C's de passage) is D's de answer, column 3 (D's en
    # passage) C's en answer: translations, both ways.
    pairs = [("th", "en"), ("de", "th"), ("en", "de"), ("th", "en"), ("de", "es"), ("es", "de")]
    assert count(pairs) == {(A, 1), (C, 3), (D, 2)}
    # A hard negative (column 6 + k) that is a batch question's answer is masked for that question:
    # E's slot holds A's de answer sentence, F's slots the en sentence of C and D.
    a_de, cd_en = answer["de"][A], answer["en"][C]
    hard = [[], [], [], [], [(a_de, "...")], [(cd_en, "...")]]
    pairs = [("en", "en"), ("en", "en"), ("en", "en"), ("en", "en"), ("en", "de"), ("de", "en")]
    assert count(pairs, [h + [None] * (1 - len(h)) for h in hard]) == {(C, 3), (D, 2), (A, 10), (C, 11), (D, 11)}


def test_columns_layout_positives_then_slots_example_major(xquad):
    groups, answer, _ = xquad
    batch = Batch("cross", "xquad-r", [A, E], [("en", "de"), ("de", "th")], [[(("0.0", 1), "x"), None],
                                                                              [(("0.0", 2), "y"), (("0.0", 3), "z")]])
    assert columns(batch, groups) == [("de", answer["de"][A]), ("th", answer["th"][E]), ("de", ("0.0", 1)), None,
                                      ("th", ("0.0", 2)), ("th", ("0.0", 3))]
    assert [c is None for c in columns(batch, groups)] == [False, False, False, True, False, False]  # empty slots


def test_hard_negatives_leave_groups_and_languages_as_they_were(xquad):
    groups = {"xquad-r": xquad[0]}
    plain = HybridSampler(groups, TRAIN_LANGS, 8, "hybrid", seed=2)
    hard = HybridSampler(groups, TRAIN_LANGS, 8, "hybrid", seed=2, hard_negatives=2)
    for _ in range(20):
        a, b = next(plain), next(hard)
        assert (a.kind, a.groups, a.pairs, a.hard) == (b.kind, b.groups, b.pairs, []) and len(b.hard) == 8


def test_state_dict_resumes_exactly_with_hard_negatives(xquad):
    groups = {"xquad-r": xquad[0]}
    s = HybridSampler(groups, TRAIN_LANGS, 8, "hybrid", seed=5, hard_negatives=2)
    for _ in range(7):
        next(s)
    state = json.loads(json.dumps(s.state_dict()))  # the checkpoint stores it as plain data
    expected = [next(s) for _ in range(10)]
    resumed = HybridSampler(groups, TRAIN_LANGS, 8, "hybrid", seed=5, hard_negatives=2)
    resumed.load_state_dict(state)
    got = [next(resumed) for _ in range(10)]
    assert [b.hard for b in got] == [b.hard for b in expected] and got == expected
