"""Hybrid batch sampler: which parallel groups, and which languages, make up each training batch.

Reference: Elmahdy, Lin, Ahmad (arXiv 2408.10536), section 3. A parallel group is one question
(and its answer sentence) in several languages. Batch kinds:
- X-X ("mono", sampler `xx`): one language per batch, drawn uniformly from the training
  languages that the batch's dataset has; every query and passage of the batch is in it.
- X-Y ("cross", sampler `xy`): each example's (query language, passage language) is drawn
  uniformly among the ordered pairs of distinct training languages that its group has.
- hybrid: per batch, X-X with probability alpha, else X-Y.
A batch never holds two examples of one group: their translations would be false negatives.
Known gap: two *different* groups can share an answer sentence (questions about one sentence of
a paragraph; XQuAD-R en has 1,190 questions but 787 distinct answer sentences), so a batch can
still hold the same passage (or its translation) twice, each a false negative for the other's
query: about 0.1 such pairs per batch of 16, about 5 per batch of 100. They are not filtered.
With several datasets, each batch comes from one dataset, chosen with probability proportional
to its number of groups (groups with at least one training language).

Drawing procedure for one batch, with one seeded `numpy.random.Generator` (`rng`), in this order.
Datasets keep the order they were given; languages and group ids are sorted.
1. d = rng.choice(n_datasets, p=groups_per_dataset / total)      (drawn even for one dataset)
2. sampler hybrid: mono = rng.random() < alpha; xx: mono; xy: cross  (no draw for xx / xy)
3. mono: lang = langs_d[rng.integers(len(langs_d))], langs_d = sorted training languages of d;
        pool = sorted ids of the groups of d that have lang
   cross: pool = sorted ids of the groups of d with >= 2 training languages
4. idx = rng.choice(len(pool), size=B, replace=False); groups = [pool[i] for i in idx]
5. cross only, for each group in batch order: pairs = [(a, b) for a in L for b in L if a != b]
   with L its sorted training languages; (query_lang, passage_lang) = pairs[rng.integers(len(pairs))]

Epochs: there are none. Every batch is an independent draw of B distinct groups from the whole
pool (without replacement within the batch, with replacement across batches), so a group may
appear again in the next batch and the data order is a pure function of (seed, batch index).
Since each batch also draws its kind and languages, "one pass over the data" is not a natural
unit here; a training budget is a number of steps.

State: the generator's bit-generator state and the batch count. `load_state_dict` of a saved
state makes the next batches exactly those an uninterrupted sampler would have drawn.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np

from .files import UserError

SAMPLERS = ("xx", "xy", "hybrid")


@dataclass(frozen=True)
class Batch:
    kind: str                         # "mono" (X-X) | "cross" (X-Y)
    dataset: str
    groups: list[str]                 # B distinct group (question) ids
    pairs: list[tuple[str, str]]      # per example: (query language, passage language)


class HybridSampler:
    """Draws `Batch`es from {dataset: {group id: languages of the group}}.

    A `load_groups` result can be passed as is: a group's dict of examples iterates its languages.
    """

    def __init__(
        self,
        datasets: Mapping[str, Mapping[str, Iterable[str]]],
        langs: Iterable[str],
        batch_size: int,
        sampler: str = "hybrid",
        alpha: float = 0.5,
        seed: int = 0,
    ):
        if sampler not in SAMPLERS:
            raise UserError(f"--sampler: expected one of {', '.join(SAMPLERS)}, got {sampler!r}")
        if not 0.0 <= alpha <= 1.0:
            raise UserError(f"--alpha: expected a probability in [0, 1], got {alpha}")
        if batch_size < 1:
            raise UserError(f"--batch-size: expected a positive integer, got {batch_size}")
        self.sampler, self.alpha, self.batch_size = sampler, float(alpha), batch_size
        langs = sorted(set(langs))
        if not langs:
            raise UserError("--langs: expected at least one training language")
        self.names = list(datasets)
        if not self.names:
            raise UserError("--train-data: expected at least one dataset")

        # Per dataset: each group's sorted training languages, then the pools of step 3.
        self.group_langs: dict[str, dict[str, list[str]]] = {}
        self.langs: dict[str, list[str]] = {}
        self.mono_pool: dict[str, dict[str, list[str]]] = {}
        self.cross_pool: dict[str, list[str]] = {}
        for name, groups in datasets.items():
            gl = {gid: sorted(set(g) & set(langs)) for gid, g in sorted(groups.items())}
            gl = {gid: ls for gid, ls in gl.items() if ls}
            self.group_langs[name] = gl
            self.langs[name] = [lang for lang in langs if any(lang in ls for ls in gl.values())]
            self.mono_pool[name] = {lang: [gid for gid, ls in gl.items() if lang in ls] for lang in self.langs[name]}
            self.cross_pool[name] = [gid for gid, ls in gl.items() if len(ls) >= 2]
        have = set().union(*map(set, self.langs.values()))
        missing = [lang for lang in langs if lang not in have]
        if missing:
            raise UserError(
                f"--langs: {', '.join(missing)} not in the training data {','.join(self.names)} "
                f"(it has {', '.join(sorted(have)) or 'none of the requested languages'})"
            )
        self._check_pool_sizes()
        sizes = np.array([len(self.group_langs[n]) for n in self.names], dtype=np.float64)
        self.p_dataset = sizes / sizes.sum()
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.batches_drawn = 0

    def _check_pool_sizes(self) -> None:
        b = self.batch_size
        for name in self.names:
            if self.sampler != "xy":
                for lang, pool in self.mono_pool[name].items():
                    if len(pool) < b:
                        raise UserError(
                            f"--batch-size {b} is larger than the {len(pool)} groups of {name} in {lang} "
                            f"(an X-X batch needs {b} distinct groups in one language)"
                        )
            if self.sampler != "xx" and len(self.cross_pool[name]) < b:
                raise UserError(
                    f"--batch-size {b} is larger than the {len(self.cross_pool[name])} groups of {name} "
                    f"with two or more training languages (an X-Y batch needs {b} distinct ones)"
                )

    def __iter__(self):
        return self

    def __next__(self) -> Batch:
        rng, b = self.rng, self.batch_size
        name = self.names[rng.choice(len(self.names), p=self.p_dataset)]
        if self.sampler == "hybrid":
            mono = rng.random() < self.alpha
        else:
            mono = self.sampler == "xx"
        if mono:
            langs = self.langs[name]
            lang = langs[rng.integers(len(langs))]
            pool = self.mono_pool[name][lang]
        else:
            pool = self.cross_pool[name]
        groups = [pool[i] for i in rng.choice(len(pool), size=b, replace=False)]
        if mono:
            pairs = [(lang, lang)] * b
        else:
            pairs = []
            for gid in groups:
                ls = self.group_langs[name][gid]
                options = [(q, p) for q in ls for p in ls if q != p]
                pairs.append(options[rng.integers(len(options))])
        self.batches_drawn += 1
        return Batch("mono" if mono else "cross", name, groups, pairs)

    def state_dict(self) -> dict:
        return {"bit_generator": self.rng.bit_generator.state, "batches_drawn": self.batches_drawn}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["bit_generator"]
        self.batches_drawn = state["batches_drawn"]
