"""Held-out validation: a fixed split of the training groups, and the score that selects checkpoints.

Every choice of recipe, hyper-parameter and checkpoint is made on this split of the *training*
data; the LAReQA test numbers (MLQA-R, XQuAD-R) are never used to choose anything.

Split (`split_groups`)
- Two groups are linked when they share a sentence in some language, as answer or as candidate
  hard negative (`Example.sid`, `Example.negatives`): for LAReQA, questions about one paragraph.
  Linked groups (connected components) are held out or kept together, so no held-out sentence is
  ever a training positive or hard negative, and no held-out answer is trained on through another
  question about it. XQuAD-R's components are its 240 paragraphs (1 to 17 groups each);
  MLQA-R's paragraphs differ per language and link into 940 components of 1 to 6 groups.
- Components, ordered by their smallest group id, are shuffled by numpy `default_rng(seed)` and
  taken in that order until at least ceil(fraction * groups) groups are held out. The seed is
  fixed (SPLIT_SEED), not the training seed: runs of every sampler and seed hold out the same
  groups, so their validation scores compare.

Score (`ValidationSet.score`): multilingual mAP, the LAReQA multilingual setting restricted to the
held-out groups. The pool is every distinct sentence of the held-out examples (answers and
candidate negatives, i.e. all sentences of the held-out paragraphs) in every training language;
each held-out question, in each of its languages, ranks the whole pool; its relevant sentences
are its answer in every language it has (minihbt.search tie rule, minihbt.metrics AP); the score
is the macro mean over query languages of the mean AP of that language's questions.
Why this rather than the validation InfoNCE loss (the paper's criterion): it is the evaluation's
own measure in the setting that needs both what X-X batches teach (matching within a language)
and what X-Y batches teach (across languages) and that penalises language bias, so it can
compare X-X, X-Y and hybrid runs; it is a function of the weights alone (no dropout, no drawn
batches), whereas a held-out InfoNCE changes scale with the batch kind (X-X vs X-Y), the hard
negatives and the mask, so it could not compare samplers or recipes. The cost is about the same:
one encoding of ~1,100 questions and ~1,100 sentences (XQuAD-R, 9 languages, 10% held out).
The pool is small, so the score is higher than a test mAP; only comparisons between
checkpoints of one split mean anything.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Hashable, Mapping

import numpy as np

from minihbt import metrics, search
from minihbt.io.files import UserError

SPLIT_SEED = 0


def _components(groups: Mapping[str, Mapping]) -> list[list[str]]:
    """Groups linked through shared (language, sentence id), as sorted lists, by smallest id."""
    parent: dict = {}

    def find(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]  # path halving
            x = parent[x]
        return x

    for gid, examples in groups.items():
        for lang, ex in examples.items():
            for sid in [ex.sid, *(s for s, _ in ex.negatives)]:
                parent[find(("sentence", lang, sid))] = find(("group", gid))
    members: dict = {}
    for gid in sorted(groups):
        members.setdefault(find(("group", gid)), []).append(gid)
    return sorted(members.values())  # each list is sorted, so this orders by smallest id


def split_groups(groups: Mapping[str, Mapping], fraction: float, seed: int = SPLIT_SEED) -> tuple[list[str], list[str]]:
    """(training group ids, held-out group ids), both sorted; no sentence is in both parts."""
    if not 0.0 <= fraction < 1.0:
        raise UserError(f"--val-fraction: expected a fraction in [0, 1), got {fraction}")
    if fraction == 0.0:
        return sorted(groups), []
    comps = _components(groups)
    target = math.ceil(fraction * len(groups))
    held: list[str] = []
    for i in np.random.default_rng(seed).permutation(len(comps)):
        if len(held) >= target:
            break
        held += comps[i]
    held_set = set(held)
    return [g for g in sorted(groups) if g not in held_set], sorted(held)


@dataclass
class ValidationSet:
    """The held-out questions and their pool, ready to score (see the module docstring)."""
    langs: list[str]                      # query languages, sorted
    queries: dict[str, list[str]]         # lang -> question texts
    targets: dict[str, np.ndarray]        # lang -> int (n_lang, len(langs)): pool indices, -1 empty
    pool: list[str]                       # sentence texts, language by language

    @classmethod
    def build(cls, groups: Mapping[str, Mapping], held_out: list[str], langs: list[str]) -> "ValidationSet":
        langs = sorted(langs)
        index: dict[tuple[str, Hashable], int] = {}
        pool: list[str] = []
        for lang in langs:  # the pool: each distinct sentence once, in a fixed order
            for gid in held_out:
                ex = groups[gid].get(lang)
                if ex is None:
                    continue
                for sid, text in [(ex.sid, ex.sentence), *ex.negatives]:
                    if (lang, sid) not in index:
                        index[lang, sid] = len(pool)
                        pool.append(text)
        queries, targets = {}, {}
        for x in langs:
            rows = [gid for gid in held_out if x in groups[gid]]
            if not rows:
                continue
            queries[x] = [groups[gid][x].question for gid in rows]
            t = np.full((len(rows), len(langs)), -1, dtype=np.int64)
            for i, gid in enumerate(rows):
                rel = [index[l, groups[gid][l].sid] for l in langs if l in groups[gid]]
                t[i, :len(rel)] = rel
            targets[x] = t
        if not queries:
            raise UserError("--val-fraction: the held-out split has no question in the training languages")
        return cls(sorted(queries), queries, targets, pool)

    def ranks(self, encoder, max_len_query: int = 512, max_len_passage: int = 512,
              batch_size: int = 64) -> dict[str, np.ndarray]:
        """{query language: ranks (n_lang, len(langs)) of its questions' relevant sentences in the pool}."""
        pool = encoder.encode(self.pool, kind="passage", batch_size=batch_size, max_len=max_len_passage,
                              progress=False)
        return {x: search.ranks(encoder.encode(self.queries[x], kind="query", batch_size=batch_size,
                                               max_len=max_len_query, progress=False), pool, self.targets[x])
                for x in self.langs}

    def score(self, encoder, max_len_query: int, max_len_passage: int, batch_size: int = 64) -> float:
        """Multilingual mAP of `encoder` on this set (macro mean over query languages)."""
        ranks = self.ranks(encoder, max_len_query, max_len_passage, batch_size)
        return float(np.mean([np.mean(metrics.average_precision(r)) for r in ranks.values()]))


def hold_out(datasets: Mapping[str, Mapping[str, Mapping]], langs: Mapping[str, list[str]],
             fraction: float) -> tuple[dict[str, dict], list[ValidationSet]]:
    """Split every training dataset: ({dataset: its training groups}, [its ValidationSet, in order])."""
    kept, valsets = {}, []
    for name, groups in datasets.items():
        train_ids, held = split_groups(groups, fraction)
        valsets.append(ValidationSet.build(groups, held, langs[name]))
        kept[name] = {gid: groups[gid] for gid in train_ids}
    return kept, valsets
