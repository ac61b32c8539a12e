"""minihbt/sampler.py: golden first batches, statistics over 10,000 batches, resume, bad input."""
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from minihbt.files import UserError
from minihbt.sampler import HybridSampler

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
