"""One training step of hybrid batch training: a batch's texts, their embeddings, InfoNCE, gradients.

Paper: Elmahdy, Lin, Ahmad 2024 (arXiv 2408.10536), sec. 3. The sampler (minihbt/sampler.py)
draws B parallel groups and a (query language, passage language) pair per example; the step
embeds the B questions and the B answer sentences with the one shared encoder and minimises
InfoNCE over in-batch negatives (eq. 1, minihbt/loss.py) with AdamW. train.py runs the loop;
this file is what each iteration does, so that tests and benchmarks run exactly train.py's step.

Contract (cfg: train.py's TrainConfig; the fields read are named in each function)
- `batch_texts(batch, groups)` -> (B questions, B answer sentences), each in its language of the pair.
- `make_embed(encoder, cfg)` -> f(tokenised batch) = (n, H) unit vectors with the graph kept, in
  fp32; the encoder runs in `encoder.dtype` (fp32, or bf16 autocast: minihbt/text_encoder.py).
- `loss_and_backward(encoder, embed, queries, passages, cfg, world, hard_negatives, mask)` ->
  this rank's loss (a 0-d tensor), its gradients accumulated into the parameters: every query of
  the global batch against every passage and hard negative of it, less the masked columns, whole
  or in GradCache chunks (minihbt/parallel.py).
- `batch_negatives(batch, groups, cfg)` -> (B*N hard-negative texts or None, the global batch's
  mask or None, number of false negatives found): the sampler's hard negatives and mask, ready for
  the step (cfg.false_negatives "mask" masks them, "keep" leaves them in as negatives).
- `lr_at(step, cfg)`: linear warmup over cfg.warmup steps, then linear decay to the last step.
- `make_optimizer(model, cfg)`: AdamW, weight decay on matrices only, in torch's implementation
  cfg.adamw: "fused" (one kernel per parameter group: the fastest on CPU and CUDA, equal to
  the reference to fp32 rounding, a few elements 1 ulp apart), "foreach" (bit-identical to the
  reference) or "for-loop" (the reference, torch's default on CPU; the runs in docs/results).
- `keep_freed_memory()`: glibc keeps freed blocks for reuse instead of returning them to the OS.

Allocation churn (measured on e5-small, bench/README.md). A step frees and re-allocates a few
buffers of the 250k x 384 word-embedding matrix's size (384 MB): its gradient from each of the
two forward passes (queries, passages) and, in the for-loop AdamW, two temporaries. glibc serves
blocks over 32 MB with mmap and unmaps them on free, so each new one is faulted in again,
zero-filled by the kernel: ~190k page faults (0.4-1.8 s of system time) per step for the
gradients, as many for the for-loop AdamW. The fused AdamW has no temporaries; keeping the
gradients allocated (zero_grad(set_to_none=False)) does not help, as the backward still builds
each one fresh and then adds it. `keep_freed_memory` serves large blocks from the heap and never
trims it, so the next step reuses the same pages: no faults. It changes where memory comes
from, not any value (tests/test_train_step.py checks a step with it is bit-identical).
"""
from __future__ import annotations

import ctypes
import ctypes.util

import numpy as np
import torch

from minihbt import parallel
from minihbt.loss import info_nce
from minihbt.sampler import Batch, empty_slots, false_negatives
from minihbt.text_encoder import autocast

ADAMW = ("fused", "foreach", "for-loop")


def lr_at(step: int, cfg) -> float:
    """Linear warmup to cfg.lr over cfg.warmup steps, then linear decay; step is 1-based.

    The first and the last step both get a non-zero rate (lr / warmup and lr / decay steps).
    """
    if step <= cfg.warmup:
        return cfg.lr * step / cfg.warmup
    return cfg.lr * (cfg.max_steps - step + 1) / (cfg.max_steps - cfg.warmup)


def batch_texts(batch: Batch, groups: dict) -> tuple[list[str], list[str]]:
    """The batch's questions in their query languages and answer sentences in their passage languages."""
    g = groups[batch.dataset]
    queries = [g[gid][ql].question for gid, (ql, _) in zip(batch.groups, batch.pairs)]
    passages = [g[gid][pl].sentence for gid, (_, pl) in zip(batch.groups, batch.pairs)]
    return queries, passages


def batch_negatives(batch: Batch, groups: dict, cfg) -> tuple[list[str | None], torch.Tensor | None, int]:
    """The batch's hard-negative slots (texts, None if empty), its (B, B + B*N) mask (None if nothing
    is masked) and how many (query, column) pairs are false negatives (masked or, with "keep", not)."""
    fn = false_negatives(batch, groups[batch.dataset])                        # (B, B + B*N)
    mask = (fn if cfg.false_negatives == "mask" else np.zeros_like(fn)) | empty_slots(batch)[None, :]
    hard = [None if s is None else s[1] for slots in batch.hard for s in slots]
    return hard, (torch.from_numpy(mask) if mask.any() else None), int(fn.sum())


def make_embed(encoder, cfg):
    """tokenised batch -> (n, H) fp32 embeddings, the encoder run in encoder.dtype (bf16: under
    autocast, which ends before the loss, so the loss's scores and softmax are fp32)."""
    embed = encoder.model.embed
    if cfg.compile:
        if cfg.grad_cache_chunk:
            # Inductor draws its own dropout masks; GradCache's second forward must redraw pass 1's,
            # which eager dropout does from the replayed RNG state.
            import torch._inductor.config
            torch._inductor.config.fallback_random = True
        # The method, not the module, is compiled: encoder.model stays the plain module that
        # checkpoints save (no "_orig_mod." prefixes). Padded lengths vary: dynamic shapes.
        embed = torch.compile(embed, dynamic=True)
    if encoder.dtype == "fp32":
        return lambda x: embed(**x)

    def embed_autocast(x):
        with autocast(encoder.device, encoder.dtype):
            return embed(**x).float()
    return embed_autocast


def loss_and_backward(encoder, embed, queries: list[str], passages: list[str], cfg,
                      world: parallel.World = parallel.SINGLE, hard_negatives: list[str | None] | None = None,
                      mask: torch.Tensor | None = None) -> torch.Tensor:
    """This rank's InfoNCE loss, with its gradients accumulated into the encoder's parameters.

    queries, passages: this rank's shard of the global batch (b each). hard_negatives: this rank's
    m hard-negative slots (texts), negatives for every query; None marks an empty slot, which
    becomes a zero row that `mask` must leave out. Passages and hard negatives of all ranks are
    gathered, so each query sees the whole global batch (minihbt/parallel.py derives the layout
    and the gradient scaling). mask: bool (b, W*b + W*m), this rank's rows of the global batch's
    mask (columns in the gathered order), True = left out of the softmax (minihbt/loss.py).
    """
    b = len(queries)
    slots = list(hard_negatives or [])
    filled = [i for i, t in enumerate(slots) if t is not None]

    def loss_of(q, p, h=None):  # this rank's (b, H), (b, H), (len(filled), H)
        if slots:  # the filled slots' embeddings in place, zero rows for the empty ones
            rows = p.new_zeros(len(slots), p.shape[1])                                    # (m, H)
            h = rows if h is None else rows.index_copy(0, torch.tensor(filled, device=p.device), h)
            h = parallel.gather(h, world)                                                 # (W*m, H)
        m = None if mask is None else mask.to(p.device)
        return info_nce(q, parallel.gather(p, world), cfg.temperature, h, offset=world.rank * b, mask=m)

    texts = [(queries, "query", cfg.max_len_query), (passages, "passage", cfg.max_len_passage)]
    if filled:
        texts.append(([slots[i] for i in filled], "passage", cfg.max_len_passage))
    if not cfg.grad_cache_chunk:
        loss = loss_of(*[embed(encoder.tokenize(t, kind, n)) for t, kind, n in texts])
        loss.backward()
        return loss
    k = cfg.grad_cache_chunk
    chunks = [[encoder.tokenize(t[i:i + k], kind, n) for i in range(0, len(t), k)] for t, kind, n in texts]
    return parallel.grad_cache(embed, chunks, loss_of, encoder.device)


def make_optimizer(model: torch.nn.Module, cfg) -> torch.optim.AdamW:
    # Decay matrices (and embeddings) only; biases and LayerNorm weights are vectors.
    params = [p for p in model.parameters() if p.requires_grad]
    impl = {"fused": {"fused": True}, "foreach": {"foreach": True}, "for-loop": {"foreach": False}}[cfg.adamw]
    return torch.optim.AdamW([
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ], lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8, **impl)


def keep_freed_memory() -> bool:
    """Serve every allocation from glibc's heap and never trim it (Linux/glibc; False elsewhere).

    M_MMAP_MAX = 0: no block gets its own mmap (the default for blocks over 32 MB), so a freed
    block stays in the process; M_TRIM_THRESHOLD = 2**31 - 1: the heap top is not handed back.
    The peak resident memory is the same; it is just not returned between steps."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):  # not glibc (macOS, musl, Windows)
        return False
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's malloc.h
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))
