"""Spreading one training step over processes (torch.distributed) and over chunks (GradCache).

Both keep the loss of train.py exactly: InfoNCE of every query of the global batch against every
passage of the global batch (arXiv 2408.10536, eq. 1). They only change where the work is done.

Data parallel (started by `torchrun --nproc_per_node W train.py ...`)
- Every rank builds the same sampler with the same seed, so all draw the same global batch of
  N = W * b examples (one hybrid decision: the whole global batch is X-X or X-Y), and rank r takes
  the contiguous shard of examples r*b .. r*b + b - 1 (`shard`).
- Rank r embeds its b queries, b passages and m hard negatives, and all-gathers the passages and
  the hard negatives with autograd (`gather`), in rank order. Its loss is info_nce(q_r,
  [P_0 .. P_{W-1}], hard_negatives=[H_0 .. H_{W-1}], offset=r*b): its query i is example r*b + i of
  the global batch, whose passage is column r*b + i of the gathered (N, H) matrix.
- Gradient scaling. The loss of the global batch is L = (1/N) sum_n l_n; rank r's loss is
  L_r = (1/b) sum_{n in shard r} l_n, so L = (1/W) sum_r L_r. l_n depends on its query (on one
  rank) and on every passage (on all ranks). Rank r's backward of L_r reaches its own queries
  directly and every rank's passages through the all-gather, whose backward is a reduce-scatter:
  each rank s receives, for its passages, the sum over r of dL_r/dP_s. So the gradient g_s that
  rank s accumulates into the weights is the part of d(sum_r L_r)/dtheta that flows through the
  embeddings computed on rank s, and sum_s g_s = d(sum_r L_r)/dtheta = W dL/dtheta.
  `average_gradients` therefore all-reduces the sum and divides by W: every rank then holds
  dL/dtheta, the gradient of one process training on the same global batch, applies the same
  AdamW update to the same weights, and the weights stay identical on all ranks.
  (DistributedDataParallel averages the same way, overlapping the all-reduce with the backward
  in buckets; one explicit all-reduce after the step is easier to follow and composes with
  GradCache's chunked backward without `no_sync` bookkeeping.)

GradCache (Gao, Zhang, Han, Callan 2021, "Scaling Deep Contrastive Learning Batch Size under
Memory Limited Setup"). The loss depends on the weights only through the embeddings E, so
dL/dtheta = sum_n dL/de_n . de_n/dtheta. Pass 1 embeds the batch in chunks of K with no autograd
graph, keeping only the (n, H) embeddings; the loss (gathering included) is computed on them as
leaf tensors and its backward gives G = dL/dE. Pass 2 embeds each chunk again, with a graph, and
calls e.backward(G_chunk), which adds G_chunk . de/dtheta into the weights' .grad; over all chunks
that is dL/dtheta. Only one chunk's activations are alive at a time; the cost is a second forward.
Pass 2 must compute the same function as pass 1, so each chunk replays the RNG state saved
before its pass-1 forward: its dropout masks are the same. (Gradient accumulation, by contrast,
would give each micro-batch only its own passages as negatives.)
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
from dataclasses import dataclass
from typing import Callable

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn

from minihbt.io.files import UserError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0  # which GPU of its machine a rank uses


SINGLE = World()


def env_world_size() -> int:
    """The number of processes torchrun started (its WORLD_SIZE variable), 1 without torchrun."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def env_rank() -> int:
    """This process's rank under torchrun (its RANK variable), 0 without torchrun."""
    return int(os.environ.get("RANK", "0"))


def check_world(cfg, state: dict | None) -> None:
    """Refuse what cannot run here: a global batch that does not split evenly over the processes,
    a resumed run with another process count than wrote its checkpoint, cuda without a GPU."""
    n = env_world_size()
    if cfg.batch_size % n:
        raise UserError(f"--batch-size {cfg.batch_size}: the global batch must split evenly over the "
                        f"{n} processes (a multiple of {n})")
    if state is not None and state["world_size"] != n:
        raise UserError(f"--resume: the checkpoint was written by {state['world_size']} processes, this run has "
                        f"{n}; resume with as many (each one's dropout RNG state is stored)")
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible to torch")


def init(device: str) -> World:
    """Join the process group that torchrun describes in the environment (MASTER_ADDR,
    MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK); no group for a single process."""
    if env_world_size() == 1:
        return SINGLE
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "cuda":
        torch.cuda.set_device(local_rank)  # before NCCL starts: one GPU per rank
    dist.init_process_group("nccl" if device == "cuda" else "gloo")
    return World(dist.get_rank(), dist.get_world_size(), local_rank)


def finish(world: World) -> None:
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def shard(items: list, world: World) -> list:
    """Rank r's contiguous slice of a global batch (len(items) is a multiple of world.size)."""
    b = len(items) // world.size
    return items[world.rank * b:(world.rank + 1) * b]


def shard_inputs(x, world: World):
    """Rank r's part of a global batch's step.Inputs: its queries, passages and hard-negative slots,
    and its rows of the mask (whose columns stay those of the gathered global batch)."""
    if world.size == 1:
        return x
    mask = None if x.mask is None else shard(x.mask, world)  # (B, C) -> (b, C)
    return dataclasses.replace(x, queries=shard(x.queries, world), passages=shard(x.passages, world),
                               hard=shard(x.hard, world), mask=mask)


def gather(x: torch.Tensor, world: World) -> torch.Tensor:
    """(b, H) on every rank -> (W*b, H) in rank order; the backward returns each rank its slice's
    gradient summed over all ranks' losses (see the module docstring).

    The backward is a collective too, so with autograd on the gathered tensor takes part in it on
    every rank, even where x needs no gradient (a rank whose hard-negative slots are all empty
    gathers zero rows): skipped there, it would leave the other ranks waiting in it for ever."""
    if world.size == 1:
        return x
    if torch.is_grad_enabled() and not x.requires_grad:
        x = x.detach().requires_grad_()  # a leaf: its gradient goes nowhere, but the collective is run
    return torch.cat(dist_nn.all_gather(x), dim=0)  # W x (b, H) -> (W*b, H)


def mean(x: torch.Tensor, world: World) -> float:
    """The mean of a scalar over ranks: the global batch's loss, for the log and the NaN check
    (so all ranks stop together)."""
    if world.size == 1:
        return x.item()
    x = x.detach().clone()
    dist.all_reduce(x)
    return x.item() / world.size


def average_gradients(model: torch.nn.Module, world: World) -> None:
    """Every rank's .grad becomes the mean over ranks: the gradient of the global batch's loss."""
    if world.size == 1:
        return
    for p in model.parameters():
        if p.grad is not None:  # same on all ranks: every rank runs the same graph
            dist.all_reduce(p.grad)
            p.grad.div_(world.size)


def gather_objects(obj, world: World) -> list:
    """[obj of rank 0, ..., obj of rank W-1] on every rank (for per-rank RNG states in checkpoints)."""
    if world.size == 1:
        return [obj]
    out = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def barrier(world: World) -> None:
    if world.size > 1:
        dist.barrier()


def _rng_state(device: torch.device):
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


@contextlib.contextmanager
def _replay_rng(state, device: torch.device):
    """Run the block from a saved RNG state, then put the generators back where they were."""
    cpu, cuda = state
    with torch.random.fork_rng(devices=[device] if cuda is not None else []):
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state(cuda, device)
        yield


def grad_cache(embed: Callable[[object], torch.Tensor], chunks: list[list],
               loss_fn: Callable[..., torch.Tensor], device: torch.device) -> torch.Tensor:
    """The loss of the whole batch, with its gradients accumulated into the weights chunk by chunk.

    chunks[g] holds the chunks (e.g. tokenised) of embedding group g (queries, passages, hard
    negatives), in order; `embed` maps one chunk to its (k, H) embeddings; loss_fn(E_0, E_1, ...)
    takes the groups' embeddings, (n_g, H) each. Afterwards the RNG is where pass 1 left it, as
    after one forward of every chunk with autograd.
    """
    states, cached, sizes = [], [], []
    with torch.no_grad():
        for group in chunks:
            parts = []
            for x in group:
                states.append(_rng_state(device))
                parts.append(embed(x))
            sizes.append([len(e) for e in parts])
            cached.append(torch.cat(parts).requires_grad_())  # chunks x (k, H) -> (n_g, H), a leaf
    loss = loss_fn(*cached)
    loss.backward()  # fills e.grad = dL/dE of every group, through the all-gather if any
    states = iter(states)
    for group, e, n in zip(chunks, cached, sizes):
        for x, g in zip(group, e.grad.split(n)):  # (n_g, H) -> chunks x (k, H)
            with _replay_rng(next(states), device):
                embed(x).backward(g)
    return loss.detach()
