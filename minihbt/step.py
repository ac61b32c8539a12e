"""One training step of hybrid batch training: a batch's inputs, their embeddings, InfoNCE, gradients.

Paper: Elmahdy, Lin, Ahmad 2024 (arXiv 2408.10536), sec. 3. The sampler (minihbt/sampler.py)
draws B parallel groups and a (query language, passage language) pair per example; `inputs`
turns that batch into what the loss needs, the shared encoder embeds the B questions, the B
answer sentences and the B*N hard negatives, and InfoNCE over in-batch negatives (eq. 1,
minihbt/loss.py) is minimised with AdamW. train.py runs the loop; this file is what each
iteration does, so that tests and benchmarks run exactly train.py's step.

Contract (cfg: a minihbt.config.TrainConfig; the fields read are named in each function)
- `inputs(batch, examples, mask_false_negatives)` -> `Inputs`: B questions, B answer sentences,
  B*N hard-negative texts (None: an empty slot), the (B, B + B*N) mask and the number of false
  negatives found. The mask is built here and nowhere else: True = left out of the softmax, for
  an empty slot always and for a false negative when asked (cfg.false_negatives == "mask").
- `make_embed(encoder, cfg)` -> f(tokenised batch) = (n, H) unit vectors with the graph kept, in
  fp32; the encoder runs in `encoder.dtype` (fp32, or bf16 autocast: minihbt/text_encoder.py).
- `loss_and_backward(encoder, embed, x, cfg, world)` -> this rank's loss (a 0-d tensor), its
  gradients accumulated into the parameters: every query of the global batch against every
  passage and hard negative of it, less the masked columns, whole or in GradCache chunks
  (minihbt/parallel.py; one process: world = SINGLE and x the whole batch).
- `lr_at(step, cfg)`: linear warmup over cfg.warmup steps, then linear decay to the last step.
- `make_optimizer(model, cfg)`: AdamW, weight decay on matrices only, in torch's implementation
  cfg.adamw: "fused" (one kernel per parameter group, equal to the reference to fp32 rounding),
  "foreach" (bit-identical to the reference) or "for-loop" (torch's reference implementation).
- `keep_freed_memory()`: glibc keeps freed blocks for reuse instead of returning them to the OS.

False negatives. A batch never holds two examples of one group, but different groups can share
an answer sentence (two questions about one sentence: XQuAD-R en has 1,190 questions and 787
distinct answer sentences). Column j is a false negative of query i when its sentence is i's
answer in j's language: i's own answer translated, exactly what LAReQA's evaluation counts as
relevant to i. Sentences are identified by `Example.sid` within a dataset and language.

Why `keep_freed_memory`: a step frees and re-allocates buffers of the word-embedding matrix's
size (the gradient of each forward pass). glibc serves blocks over 32 MB with mmap and unmaps
them on free, so each new one is faulted in again and zero-filled by the kernel. Serving them
from the heap reuses the same pages; it changes where memory comes from, not any value
(tests/test_step.py checks that a step with it is bit-identical; bench/README.md measures it).
"""
from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import torch

from minihbt import parallel
from minihbt.loss import info_nce
from minihbt.sampler import Batch, columns
from minihbt.text_encoder import autocast


def lr_at(step: int, cfg) -> float:
    """Linear warmup to cfg.lr over cfg.warmup steps, then linear decay; step is 1-based.

    The first and the last step both get a non-zero rate (lr / warmup and lr / decay steps).
    """
    if step <= cfg.warmup:
        return cfg.lr * step / cfg.warmup
    return cfg.lr * (cfg.max_steps - step + 1) / (cfg.max_steps - cfg.warmup)


@dataclass
class Inputs:
    """What the loss needs of one batch: B queries, B passages, the hard-negative slots, the mask."""
    queries: list[str]
    passages: list[str]
    hard: list[str | None] = field(default_factory=list)  # B*N slots, example-major; None: empty
    mask: torch.Tensor | None = None  # bool (B, B + B*N), True: out of the softmax; None: nothing is
    false_negatives: int = 0          # (query, column) pairs found, masked or (with "keep") not


def inputs(batch: Batch, examples: Mapping[str, Mapping], mask_false_negatives: bool = True) -> Inputs:
    """The batch's texts in their languages, and its mask (examples: {group id: {lang: Example}})."""
    queries = [examples[gid][q].question for gid, (q, _) in zip(batch.groups, batch.pairs)]
    passages = [examples[gid][p].sentence for gid, (_, p) in zip(batch.groups, batch.pairs)]
    hard = [None if s is None else s[1] for slots in batch.hard for s in slots]
    fn = false_negatives(batch, examples)                   # (B, B + B*N)
    empty = np.array([False] * len(queries) + [s is None for s in hard])  # (B + B*N,) empty slots
    mask = (fn if mask_false_negatives else np.zeros_like(fn)) | empty[None, :]
    return Inputs(queries, passages, hard, torch.from_numpy(mask) if mask.any() else None, int(fn.sum()))


def false_negatives(batch: Batch, examples: Mapping[str, Mapping]) -> np.ndarray:
    """bool (B, B + B*N): True where column j is query i's answer sentence in j's language and j != i."""
    cols = columns(batch, examples)  # (language, sentence id) per column, None for an empty slot
    where: dict = {}
    for j, c in enumerate(cols):
        if c is not None:
            where.setdefault(c, []).append(j)
    fn = np.zeros((len(batch.groups), len(cols)), dtype=bool)
    for i, gid in enumerate(batch.groups):
        for lang, ex in examples[gid].items():  # i's answer, in each of its languages
            for j in where.get((lang, ex.sid), ()):
                fn[i, j] = j != i
    return fn


def describe(step: int, batch: Batch, x: Inputs) -> dict:
    """A batch as `train.py --show-batches` prints it: what the sampler drew, and its false negatives."""
    line = {"step": step, "kind": batch.kind, "dataset": batch.dataset, "pairs": [list(p) for p in batch.pairs],
            "groups": batch.groups, "false_negatives": x.false_negatives}
    if batch.hard:  # per example: [sentence id, text] per slot, null for an empty one
        line["hard_negatives"] = [[s and list(s) for s in slots] for slots in batch.hard]
    return line


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


def loss_and_backward(encoder, embed, x: Inputs, cfg, world: parallel.World = parallel.SINGLE) -> torch.Tensor:
    """This rank's InfoNCE loss, with its gradients accumulated into the encoder's parameters.

    x: this rank's shard of the global batch (`parallel.shard_inputs`): b queries, b passages, m
    hard-negative slots, negatives for every query; an empty slot (None) becomes a zero row that
    the mask leaves out. Passages and hard negatives of all ranks are gathered, so each query sees
    the whole global batch (minihbt/parallel.py derives the layout and the gradient scaling); the
    mask's rows are this rank's, (b, W*b + W*m), its columns in the gathered order.
    """
    queries, passages, mask = x.queries, x.passages, x.mask
    b = len(queries)
    slots = list(x.hard)
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
