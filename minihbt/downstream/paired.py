"""Paired comparison of two models scored on the same test rows: difference and its standard error.

A table of macro means says model A beats model B by D; this module says how much of D the choice
of test rows alone could produce. Both models are scored on the same rows of every language, so
the comparison is paired (per row, as IR compares two runs query by query): a row that both get
right or both get wrong carries no evidence, and the row difficulty cancels.

For language l with rows i = 1..n_l and per-row values a_li, b_li of one metric (1/0 correct,
RR@10, ...), d_li = a_li - b_li and

    D      = (1/L) sum_l mean_i d_li                        the difference of the macro means
    SE(D)  = (1/L) sqrt( sum_l s_l^2 / n_l )               s_l^2 the sample variance of d_l (n_l - 1)
    95%    = D +- 1.96 SE(D)                              normal approximation (n_l >= 100 here)

The languages' test sets are separate samples, so their variances add. What SE does not contain:
the randomness of training (another seed gives another model). That is the seed spread, measured
only by training again; a difference inside either one is not a finding.

Contract
    difference(a, b, langs) -> (D, SE): a, b {lang: float (n_l,)} row for row; langs the languages
        averaged (a subset, e.g. the unseen ones); ValueError on a length mismatch or n_l < 2.
"""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np

Z95 = 1.96  # the two-sided 95% point of the normal distribution


def difference(a: dict[str, np.ndarray], b: dict[str, np.ndarray], langs: Iterable[str]) -> tuple[float, float]:
    """(D, SE(D)) of the module docstring, over `langs`."""
    langs = list(langs)
    if not langs:
        raise ValueError("no languages to compare")
    means, variances = [], []
    for lang in langs:
        x, y = np.asarray(a[lang], dtype=np.float64), np.asarray(b[lang], dtype=np.float64)
        if x.shape != y.shape or x.ndim != 1 or x.size < 2:
            raise ValueError(f"{lang}: expected two 1-D arrays of one length >= 2, got {x.shape} and {y.shape}")
        d = x - y
        means.append(float(d.mean()))
        variances.append(float(d.var(ddof=1)) / d.size)  # the variance of this language's mean
    return sum(means) / len(langs), math.sqrt(sum(variances)) / len(langs)
