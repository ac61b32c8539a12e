"""InfoNCE with in-batch negatives: the contrastive loss of hybrid batch training.

Reference: Elmahdy, Lin, Ahmad (arXiv 2408.10536), section 3, eq. 1; van den Oord et al. 2018.
For query q_i with its positive passage d_i+ and the other passages of the batch as negatives,

    s(q, d) = cos(q, d) / tau
    L_i     = -log( exp s(q_i, d_i+) / ( exp s(q_i, d_i+) + sum_{d- in D \\ d_i+} exp s(q_i, d-) ) )
    L       = mean_i L_i  =  cross_entropy(S, labels),  S[i, j] = s(q_i, d_j),  labels[i] = i

Eq. 1 as printed lists only the d- terms in the denominator; the positive term belongs there too
(without it the loss is unbounded below), as in every InfoNCE implementation, and this one has it.

Temperature: the paper gives none. The default tau = 0.05 is the field's usual scale of 20
(sentence-transformers MultipleNegativesRankingLoss, E5, mE5).

Contract
- queries (B, H), passages (N, H): any real embeddings; they are L2-normalised here, so the
  score is the cosine whatever the encoder returns (for unit vectors this is the identity).
- Query i's positive is passages[offset + i]; every other row of `passages` and every row of
  `hard_negatives` (M, H) is a negative for every query (hard negatives are extra columns).
- `offset` exists for data-parallel training, where `passages` holds the passages of all ranks
  and this rank's queries own columns offset .. offset + B - 1.
- `mask` (B, N + M) bool, True where column j is left out of query i's softmax: it is neither
  the positive nor a negative (its score becomes -inf, so exp(score) = 0 and no gradient reaches
  it). The trainer masks known false negatives (a column that is query i's answer sentence or a
  translation of it, minihbt/sampler.py) and empty hard-negative slots. With a mask,
      L_i = -log( exp s(q_i, d_i+) / sum_{j not masked for i} exp s(q_i, d_j) ).
  Masking the positive is an error (ValueError).
- Returns the mean over the B queries (a 0-dim tensor), differentiable in all inputs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

DEFAULT_TEMPERATURE = 0.05


def info_nce(
    queries: torch.Tensor,
    passages: torch.Tensor,
    temperature: float = DEFAULT_TEMPERATURE,
    hard_negatives: torch.Tensor | None = None,
    offset: int = 0,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    if hard_negatives is not None:
        passages = torch.cat([passages, hard_negatives], dim=0)  # (N + M, H)
    q = F.normalize(queries, dim=-1)
    d = F.normalize(passages, dim=-1)
    scores = q @ d.T / temperature  # (B, N + M)
    labels = torch.arange(offset, offset + q.shape[0], device=q.device)
    if mask is not None:
        if mask[torch.arange(len(labels), device=q.device), labels].any():
            raise ValueError("info_nce: the mask leaves out a query's own positive")
        scores = scores.masked_fill(mask, float("-inf"))
    return F.cross_entropy(scores, labels)
