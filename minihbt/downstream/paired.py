"""Paired comparison of two models scored on the same test rows: difference and its standard error.

A table of macro means says model A beats model B by D; this module says how much of D the choice
of test rows alone could produce. Both models are scored on the same rows of every language, so
the comparison is paired (per row, as IR compares two runs query by query): a row that both get
right or both get wrong carries no evidence, and the row difficulty cancels.

For language l with rows i = 1..n_l and per-row values a_li, b_li of one metric (1/0 correct,
RR@10, ...), d_li = a_li - b_li and

    D      = (1/L) sum_l mean_i d_li                        the difference of the macro means
    95%    = D +- 1.96 SE(D)                              normal approximation (n >= 100 here)

SE(D) depends on what the independent sampling unit is:

- Independent languages (items=None): each language's test set is a separate sample, so the
  languages' variances add,
      SE(D) = (1/L) sqrt( sum_l s_l^2 / n_l )             s_l^2 the sample variance of d_l (n_l - 1)
  Use it only where the rows of two languages are unrelated: TyDi QA (each language its own
  questions), Tatoeba (each language its own sentence pairs, scored per language).
- Parallel test sets (items="row"): row i is the same item in every language (XNLI test, SIB-200
  test: translations of one source, same labels, same order), so item i's differences are
  correlated across languages and only the items are independent:
      m_i    = (1/L) sum_l d_li                           the language-mean difference of item i
      SE(D)  = sd_i(m_i) / sqrt(n)                        sd with n - 1; every language n rows
  Adding the languages' variances here would count each item L times as if it were L samples
  (on the committed XNLI and SIB-200 rows that SE is 1.2-2.3x too small).
- Items by id (items={lang: ids}): the general form, for unequal or partly overlapping languages
  (LAReQA: the question id, one question per language and id). Rows with the same id, in any
  language, are one item c; with weights w_li = 1 / (L n_l), T_c = sum over c's rows of w_li d_li,
  so D = sum_c T_c, and over the C items
      SE(D)  = sqrt( C / (C - 1) sum_c (T_c - D / C)^2 )  the cluster-robust (sandwich) variance
  For parallel sets (every id in every language once) it equals the "row" formula exactly.

TASK_ITEMS says which applies to which downstream task. What SE does not contain: the randomness
of training (another seed gives another model). That is the seed spread, measured only by
training again; a difference inside either one is not a finding.

Contract
    difference(a, b, langs, items=None) -> (D, SE): a, b {lang: float (n_l,)} row for row; langs
        the languages averaged (a subset, e.g. the unseen ones); items None, "row" or
        {lang: ids (n_l,)} as above. ValueError on a length mismatch, n_l < 2, fewer than 2 items,
        or (items="row") languages of different lengths.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence, Union

import numpy as np

Z95 = 1.96  # the two-sided 95% point of the normal distribution

# The sampling unit of each downstream task's test rows (minihbt.downstream's "rows"), as read from
# the data: XNLI test-<lang>.jsonl files have one label sequence, SIB-200 test.tsv one index_id order.
TASK_ITEMS = {"xnli": "row", "sib-200": "row", "tydiqa": None, "tatoeba": None}

Items = Union[None, str, Mapping[str, Sequence]]


def difference(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], langs: Iterable[str],
               items: Items = None) -> tuple[float, float]:
    """(D, SE(D)) of the module docstring, over `langs`, with `items` the sampling unit."""
    langs = list(langs)
    if not langs:
        raise ValueError("no languages to compare")
    d = {}
    for lang in langs:
        x, y = np.asarray(a[lang], dtype=np.float64), np.asarray(b[lang], dtype=np.float64)
        if x.shape != y.shape or x.ndim != 1 or x.size < 2:
            raise ValueError(f"{lang}: expected two 1-D arrays of one length >= 2, got {x.shape} and {y.shape}")
        d[lang] = x - y
    D = sum(float(v.mean()) for v in d.values()) / len(langs)
    if items is None:
        variances = [float(v.var(ddof=1)) / v.size for v in d.values()]  # the variance of each language's mean
        return D, math.sqrt(sum(variances)) / len(langs)
    if isinstance(items, str):
        if items != "row":
            raise ValueError(f"items: expected None, 'row' or {{lang: ids}}, got {items!r}")
        sizes = {v.size for v in d.values()}
        if len(sizes) != 1:
            raise ValueError(f"items='row' needs parallel languages of one length, got {sorted(sizes)}")
        m = np.mean(np.stack(list(d.values())), axis=0)  # (n,) each item's language-mean difference
        return D, float(m.std(ddof=1)) / math.sqrt(m.size)
    totals: dict = {}
    for lang, v in d.items():
        ids = list(items[lang])
        if len(ids) != v.size:
            raise ValueError(f"{lang}: {len(ids)} item ids for {v.size} rows")
        w = v / (len(langs) * v.size)  # this row's share of D
        for i, x in zip(ids, w.tolist()):
            totals[i] = totals.get(i, 0.0) + x
    C = len(totals)
    if C < 2:
        raise ValueError(f"expected >= 2 items, got {C}")
    T = np.fromiter(totals.values(), dtype=np.float64, count=C)
    return D, math.sqrt(C / (C - 1) * float(np.sum((T - D / C) ** 2)))
