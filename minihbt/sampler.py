"""Hybrid batch sampler: which parallel groups, languages and hard negatives make up each batch.

Reference: Elmahdy, Lin, Ahmad (arXiv 2408.10536), section 3. A parallel group is one question
(and its answer sentence) in several languages. Batch kinds:
- X-X ("mono", sampler `xx`): one language per batch, drawn uniformly from the training
  languages that the batch's dataset has; every query and passage of the batch is in it.
- X-Y ("cross", sampler `xy`): each example's (query language, passage language) is drawn
  uniformly among the ordered pairs of distinct training languages that its group has.
- hybrid: per batch, X-X with probability alpha, else X-Y.
With several datasets, each batch comes from one dataset, chosen with probability proportional
to its number of groups (groups with at least one training language).

Hard negatives (paper eq. 1 trains on triplets (q, d+, d-)): with `hard_negatives` N > 0, each
example brings N sentences drawn from its candidate negatives (`Example.negatives`: for LAReQA,
the other sentences of its paragraph, in its passage language). They are extra columns of the
loss, negatives for every query of the batch. Never drawn: an answer sentence, in that language,
of any question of the batch (the example's own included), and a sentence already drawn for this
batch: no hard negative repeats a positive or another hard negative. An example whose paragraph
has fewer than N eligible sentences leaves the rest of its N slots empty (None); the loss masks
them (XQuAD-R: 2-7% of examples have no other sentence in their paragraph, th the most).

False negatives. A batch never holds two examples of one group, but two groups can share an
answer sentence; `columns` names each column's sentence so that minihbt/step.py can mask them.

Columns of a batch, the layout of the loss (`columns`): the B positives in example order, then the
B * N hard-negative slots, example-major (example e's at B + e*N .. B + e*N + N - 1). Under
torchrun each rank takes a contiguous shard of examples with their slots, so the gathered columns
are in this global order (minihbt/parallel.py).

Drawing procedure for one batch, in this order; steps 1-5 use the generator `rng`, step 6 a second
one, `hard_rng`, so that the groups and languages drawn do not depend on N. Datasets keep the
order they were given; languages and group ids are sorted.
1. d = rng.choice(n_datasets, p=groups_per_dataset / total)      (drawn even for one dataset)
2. sampler hybrid: mono = rng.random() < alpha; xx: mono; xy: cross  (no draw for xx / xy)
3. mono: lang = langs_d[rng.integers(len(langs_d))], langs_d = sorted training languages of d;
        pool = sorted ids of the groups of d that have lang
   cross: pool = sorted ids of the groups of d with >= 2 training languages
4. idx = rng.choice(len(pool), size=B, replace=False); groups = [pool[i] for i in idx]
5. cross only, for each group in batch order: pairs = [(a, b) for a in L for b in L if a != b]
   with L its sorted training languages; (query_lang, passage_lang) = pairs[rng.integers(len(pairs))]
6. N > 0, for each example in batch order, p its passage language: eligible = its negatives in
   their stored order, less the batch's answers in p and the sentences drawn so far;
   k = min(N, len(eligible)); chosen = [eligible[i] for i in hard_rng.choice(len(eligible), size=k,
   replace=False)], then N - k empty slots.

Epochs: there are none. Every batch is an independent draw of B distinct groups from the whole
pool (without replacement within the batch, with replacement across batches), so a group may
appear again in the next batch and the data order is a pure function of (seed, batch index).
Since each batch also draws its kind and languages, "one pass over the data" is not a natural
unit here; a training budget is a number of steps.

State: both generators' bit-generator states and the batch count. `load_state_dict` of a saved
state makes the next batches exactly those an uninterrupted sampler would have drawn.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable, Iterable, Mapping

import numpy as np

from minihbt.config import SAMPLERS
from minihbt.io.files import UserError



class TooFewGroups(UserError):
    """--batch-size exceeds a pool of groups: the one refusal that depends on how much data is left
    (train.py adds how much validation holds out; a bad flag value is a plain UserError)."""


Slot = tuple[Hashable, str] | None  # a hard negative (sentence id, text), or an empty slot


@dataclass(frozen=True)
class Batch:
    kind: str                         # "mono" (X-X) | "cross" (X-Y)
    dataset: str
    groups: list[str]                 # B distinct group (question) ids
    pairs: list[tuple[str, str]]      # per example: (query language, passage language)
    hard: list[list[Slot]] = field(default_factory=list)  # per example, N hard-negative slots (N = 0: [])


class HybridSampler:
    """Draws `Batch`es from {dataset: {group id: {language: Example}}}.

    Without hard negatives a group may be just its languages ({group id: ["de", "en"]}): a
    `load_groups` result and a list of languages both iterate the group's languages.
    """

    def __init__(
        self,
        datasets: Mapping[str, Mapping[str, Iterable[str]]],
        langs: Iterable[str],
        batch_size: int,
        sampler: str = "hybrid",
        alpha: float = 0.5,
        seed: int = 0,
        hard_negatives: int = 0,
    ):
        if sampler not in SAMPLERS:
            raise UserError(f"--sampler: expected one of {', '.join(SAMPLERS)}, got {sampler!r}")
        if not 0.0 <= alpha <= 1.0:
            raise UserError(f"--alpha: expected a probability in [0, 1], got {alpha}")
        if batch_size < 1:
            raise UserError(f"--batch-size: expected a positive integer, got {batch_size}")
        if hard_negatives < 0:
            raise UserError(f"--hard-negatives: expected a non-negative integer, got {hard_negatives}")
        self.sampler, self.alpha, self.batch_size = sampler, float(alpha), batch_size
        self.hard_negatives = hard_negatives
        langs = sorted(set(langs))
        if not langs:
            raise UserError("--langs: expected at least one training language")
        self.names = list(datasets)
        if not self.names:
            raise UserError("--train-data: expected at least one dataset")
        self.examples = datasets  # read only when drawing hard negatives

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
        self.hard_rng = np.random.default_rng([seed, 1])  # its own stream: step 6 leaves steps 1-5 as they are
        self.batches_drawn = 0

    def _check_pool_sizes(self) -> None:
        b = self.batch_size
        for name in self.names:
            if self.sampler != "xy":
                for lang, pool in self.mono_pool[name].items():
                    if len(pool) < b:
                        raise TooFewGroups(
                            f"--batch-size {b} is larger than the {len(pool)} groups of {name} in {lang} "
                            f"(an X-X batch needs {b} distinct groups in one language)"
                        )
            if self.sampler != "xx" and len(self.cross_pool[name]) < b:
                raise TooFewGroups(
                    f"--batch-size {b} is larger than the {len(self.cross_pool[name])} groups of {name} "
                    f"with two or more training languages (an X-Y batch needs {b} distinct ones)"
                )

    def __iter__(self):
        return self

    def __next__(self) -> Batch:
        rng, b = self.rng, self.batch_size
        # 1. the dataset, in proportion to its groups (drawn even for one dataset)
        name = self.names[rng.choice(len(self.names), p=self.p_dataset)]
        # 2. the batch kind: X-X with probability alpha (hybrid), always (xx) or never (xy)
        mono = rng.random() < self.alpha if self.sampler == "hybrid" else self.sampler == "xx"
        # 3. the pool: X-X, the groups that have one uniformly drawn language; X-Y, those with two or more
        if mono:
            langs = self.langs[name]
            lang = langs[rng.integers(len(langs))]
            pool = self.mono_pool[name][lang]
        else:
            pool = self.cross_pool[name]
        # 4. B distinct groups of the pool
        groups = [pool[i] for i in rng.choice(len(pool), size=b, replace=False)]
        # 5. X-Y: each example's ordered (query, passage) pair of two of its group's languages
        if mono:
            pairs = [(lang, lang)] * b
        else:
            pairs = []
            for gid in groups:
                ls = self.group_langs[name][gid]
                options = [(q, p) for q in ls for p in ls if q != p]
                pairs.append(options[rng.integers(len(options))])
        # 6. N hard negatives per example, from its second generator
        hard = draw_hard_negatives(self.hard_rng, self.examples[name], groups, pairs, self.hard_negatives) \
            if self.hard_negatives else []
        self.batches_drawn += 1
        return Batch("mono" if mono else "cross", name, groups, pairs, hard)

    def state_dict(self) -> dict:
        return {"bit_generator": self.rng.bit_generator.state, "batches_drawn": self.batches_drawn,
                "hard_bit_generator": self.hard_rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["bit_generator"]
        self.batches_drawn = state["batches_drawn"]
        self.hard_rng.bit_generator.state = state["hard_bit_generator"]


def draw_hard_negatives(rng: np.random.Generator, examples: Mapping[str, Mapping], groups: list[str],
                        pairs: list[tuple[str, str]], n: int) -> list[list[Slot]]:
    """Step 6 of the drawing procedure: n slots per example, (sentence id, text) or None."""
    taken = {(lang, ex.sid) for gid in groups for lang, ex in examples[gid].items()}  # the batch's answers
    hard = []
    for gid, (_, p) in zip(groups, pairs):
        eligible = [(sid, text) for sid, text in examples[gid][p].negatives if (p, sid) not in taken]
        chosen = [eligible[i] for i in rng.choice(len(eligible), size=min(n, len(eligible)), replace=False)]
        taken.update((p, sid) for sid, _ in chosen)
        hard.append(chosen + [None] * (n - len(chosen)))
    return hard


def columns(batch: Batch, examples: Mapping[str, Mapping]) -> list[tuple[str, Hashable] | None]:
    """The batch's loss columns as (language, sentence id): B positives, then the hard slots (None: empty)."""
    cols = [(p, examples[gid][p].sid) for gid, (_, p) in zip(batch.groups, batch.pairs)]
    for (_, p), slots in zip(batch.pairs, batch.hard):
        cols += [None if s is None else (p, s[0]) for s in slots]
    return cols
