"""One training step of hybrid batch training: a batch's texts, their embeddings, InfoNCE, gradients.

Paper: Elmahdy, Lin, Ahmad 2024 (arXiv 2408.10536), sec. 3. The sampler (minihbt/sampler.py)
draws B parallel groups and a (query language, passage language) pair per example; the step
embeds the B questions and the B answer sentences with the one shared encoder and minimises
InfoNCE over in-batch negatives (eq. 1, minihbt/loss.py) with AdamW. train.py runs the loop;
this file is what each iteration does, so that tests and benchmarks run exactly train.py's step.

Contract (cfg: train.py's TrainConfig; the fields read are named in each function)
- `batch_texts(batch, groups)` -> (B questions, B answer sentences), each in its language of the pair.
- `make_embed(encoder, cfg)` -> f(tokenised batch) = (n, H) unit vectors with the graph kept;
  on CUDA the encoder runs under bf16 autocast and the embeddings come back in fp32.
- `loss_and_backward(encoder, embed, queries, passages, cfg, world)` -> this rank's loss (a 0-d
  tensor), its gradients accumulated into the parameters: every query of the global batch against
  every passage of it, whole or in GradCache chunks (minihbt/parallel.py).
- `lr_at(step, cfg)`: linear warmup over cfg.warmup steps, then linear decay to the last step.
- `make_optimizer(model, cfg)`: AdamW, weight decay on matrices only.
"""
from __future__ import annotations

import torch

from minihbt import parallel
from minihbt.loss import info_nce
from minihbt.sampler import Batch


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


def make_embed(encoder, cfg):
    """tokenised batch -> (n, H) embeddings. On CUDA the encoder runs under bf16 autocast and the
    embeddings come back in fp32, so the loss's scores and softmax are fp32."""
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
    if encoder.device.type != "cuda":
        return lambda x: embed(**x)

    def embed_bf16(x):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            return embed(**x).float()
    return embed_bf16


def loss_and_backward(encoder, embed, queries: list[str], passages: list[str], cfg,
                      world: parallel.World = parallel.SINGLE, hard_negatives: list[str] | None = None) -> torch.Tensor:
    """This rank's InfoNCE loss, with its gradients accumulated into the encoder's parameters.

    queries, passages: this rank's shard of the global batch (b each). hard_negatives: passages
    that are negatives for every query (train.py draws none; tests inject them). Passages and
    hard negatives of all ranks are gathered, so each query sees the whole global batch
    (minihbt/parallel.py derives the layout and the gradient scaling).
    """
    b = len(queries)

    def loss_of(q, p, h=None):  # this rank's (b, H), (b, H), (m, H)
        h = None if h is None else parallel.gather(h, world)                       # (W*m, H)
        return info_nce(q, parallel.gather(p, world), cfg.temperature, h, offset=world.rank * b)

    texts = [(queries, "query", cfg.max_len_query), (passages, "passage", cfg.max_len_passage)]
    if hard_negatives:
        texts.append((hard_negatives, "passage", cfg.max_len_passage))
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
    return torch.optim.AdamW([
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ], lr=cfg.lr, betas=(0.9, 0.999), eps=1e-8)
