"""Write tests/golden/sampler_toy.json: a toy dataset and the first batches for fixed seeds.

Where the expected batches come from: not from minihbt/sampler.py. `draw` below is a separate,
deliberately naive transcription of the drawing procedure documented in the sampler's module
docstring (steps 1-5), recomputing every pool from scratch for each batch. It makes the same
numpy Generator calls in the same order, because the golden list is only meaningful for that
exact procedure; everything else (pool building, language filtering, pair enumeration) is
written independently. Agreement of the two is the test; the first batches are also small
enough to check by eye against the toy dataset (pools and pairs are printed below).

    python tools/gen_sampler_golden.py
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from minihbt.io.files import atomic_write_json  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "tests" / "golden" / "sampler_toy.json"

# {dataset: {group id: languages}}; "fr" is not a training language, "g9" has none,
# "h2" has only one (so it is never in an X-Y batch).
TOY = {
    "big": {
        "g1": ["ar", "de", "en"], "g2": ["de", "en"], "g3": ["ar", "en", "fr"], "g4": ["ar", "de"],
        "g5": ["ar", "de", "en", "zh"], "g6": ["en", "zh"], "g7": ["de", "zh"], "g8": ["ar", "zh", "en"],
        "g9": ["fr"],
    },
    "small": {"h1": ["en", "zh"], "h2": ["zh"], "h3": ["zh", "en"], "h4": ["en", "zh"]},
}
TRAIN_LANGS = ["zh", "en", "de", "ar"]
RUNS = [  # (sampler, alpha, batch size, seed, number of batches)
    ("hybrid", 0.5, 2, 7, 12),
    ("xx", 0.5, 3, 1, 6),
    ("xy", 0.5, 2, 2, 6),
]


def draw(toy, train_langs, sampler, alpha, b, rng):
    names = list(toy)
    train = set(train_langs)
    sizes = [sum(1 for ls in toy[n].values() if train & set(ls)) for n in names]
    name = names[rng.choice(len(names), p=np.array(sizes) / sum(sizes))]
    groups = toy[name]
    mono = (rng.random() < alpha) if sampler == "hybrid" else (sampler == "xx")
    if mono:
        present = sorted({lang for ls in groups.values() for lang in ls if lang in train})
        lang = present[rng.integers(len(present))]
        pool = sorted(g for g, ls in groups.items() if lang in ls)
    else:
        pool = sorted(g for g, ls in groups.items() if len(train & set(ls)) >= 2)
    chosen = [pool[i] for i in rng.choice(len(pool), size=b, replace=False)]
    pairs = []
    for g in chosen:
        if mono:
            pairs.append([lang, lang])
            continue
        ls = sorted(train & set(groups[g]))
        ordered = [[x, y] for x in ls for y in ls if x != y]
        pairs.append(ordered[rng.integers(len(ordered))])
    return {"kind": "mono" if mono else "cross", "dataset": name, "groups": chosen, "pairs": pairs}


def main() -> None:
    runs = []
    for sampler, alpha, b, seed, n in RUNS:
        rng = np.random.default_rng(seed)
        batches = [draw(TOY, TRAIN_LANGS, sampler, alpha, b, rng) for _ in range(n)]
        runs.append({"sampler": sampler, "alpha": alpha, "batch_size": b, "seed": seed, "batches": batches})
        print(sampler, alpha, b, seed)
        for batch in batches:
            print("  ", batch)
    atomic_write_json(OUT, {
        "note": "expected batches from the independent transcription in tools/gen_sampler_golden.py",
        "datasets": TOY, "langs": TRAIN_LANGS, "runs": runs,
    })
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
