"""Fine-tune a multilingual dual encoder with hybrid batch training (arXiv 2408.10536, sec. 3).

    python train.py --sampler hybrid                    # e5-small on XQuAD-R (README: cost)
    python train.py --sampler hybrid --max-steps 20 --val-every 10 --out runs/taste   # a first taste
    python train.py --sampler xx --show-batches 5       # print what the sampler draws, train nothing
    python train.py --resume runs/hybrid/checkpoint     # continue a stopped run exactly
    torchrun --nproc_per_node 4 train.py --sampler hybrid --device cuda --batch-size 128

Each step: the sampler draws B parallel groups and a (query, passage) language pair per example
(X-X, X-Y or hybrid), the shared encoder embeds the B questions, their B answer sentences and
the hard negatives, and InfoNCE over in-batch negatives (eq. 1) is minimised with AdamW.
Every flag, its default and why: minihbt/config.py. The files a run writes: minihbt/io/runs.py.
"""
import json
import random

import numpy as np
import torch

from minihbt import jsonl_groups, load_encoder, parallel
from minihbt.config import TrainConfig, train_args
from minihbt.io import checkpoint, runs
from minihbt.io.files import UserError, run_cli
from minihbt.sampler import HybridSampler, TooFewGroups
from minihbt.step import describe, inputs, keep_freed_memory, loss_and_backward, lr_at, make_embed, make_optimizer
from minihbt.validation import hold_out


def main(argv=None) -> int:
    # -- the config: the command line's, or the stored one of the run being resumed
    given, flags = train_args(argv)
    state = checkpoint.load_trainer_state(flags.resume, parallel.env_rank()) if flags.resume else None
    if state is not None:
        cfg = runs.resumed_config(state, given, flags.resume)
    elif "sampler" in given or flags.show_batches is not None:
        cfg = TrainConfig(**given)
    else:
        raise UserError("--sampler: required (xx, xy or hybrid), unless --resume is given")
    out = runs.out_dir(cfg, flags)
    parallel.check_world(cfg, state)

    # -- the training groups {dataset: {group id: {lang: Example}}}; held-out ones never reach the sampler
    groups, langs, fingerprints = jsonl_groups.training_groups(cfg.train_data, cfg.langs)
    valsets = []
    if cfg.val_every:
        groups, valsets = hold_out(groups, langs, cfg.val_fraction)

    # -- the sampler: which groups, languages and hard negatives make each batch
    try:
        sampler = HybridSampler(groups, cfg.langs, cfg.batch_size, cfg.sampler, cfg.alpha, cfg.seed,
                                cfg.hard_negatives)
    except TooFewGroups as e:  # only a pool-size refusal depends on what validation holds out
        if not valsets:
            raise
        raise UserError(f"{e}; --val-fraction {cfg.val_fraction} of the groups are held out for validation") from None
    if state is not None:
        sampler.load_state_dict(state["sampler"])
    if flags.show_batches is not None:
        start = state["step"] if state else 0
        for step in range(start + 1, start + 1 + flags.show_batches):
            batch = next(sampler)
            print(json.dumps(describe(step, batch, inputs(batch, groups[batch.dataset])), ensure_ascii=False))
        return 0

    world = parallel.init(cfg.device)
    try:
        # -- the encoder and its optimizer; seeds first: the initialisation of any new weights draws
        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        torch.manual_seed(cfg.seed + world.rank)  # each rank its own dropout masks; the sampler's seed is shared
        device = f"cuda:{world.local_rank}" if cfg.device == "cuda" else "cpu"
        encoder = load_encoder(flags.resume or cfg.model, device=device, dtype=cfg.dtype)
        keep_freed_memory()  # no page faults for the buffers each step frees and allocates again
        encoder.model.train()  # dropout on, as in BERT fine-tuning; its masks come from the torch RNG
        embed = make_embed(encoder, cfg)
        optimizer = make_optimizer(encoder.model, cfg)

        # -- start the run in --out, or resume it where its checkpoint left it
        run = runs.Run(cfg, flags, out, world, encoder, optimizer, sampler, valsets, fingerprints, state)
        if run.start >= cfg.max_steps:
            run.say(f"{flags.resume} is already at the last step ({cfg.max_steps}); nothing to do")
            return 0
        run.say(f"train: {cfg.sampler} (alpha {cfg.alpha}) on {','.join(cfg.train_data)} [{','.join(cfg.langs)}], "
                f"model {cfg.model}, batch {cfg.batch_size}" + (f" over {world.size} processes" if world.size > 1 else "")
                + f", steps {run.start + 1}..{cfg.max_steps}, out {out}")

        # -- the loop: one batch, one loss, one AdamW step
        for step in range(run.start + 1, cfg.max_steps + 1):
            batch = next(sampler)  # the same global batch on every rank
            x = inputs(batch, groups[batch.dataset], cfg.false_negatives == "mask")  # texts and the (B, B+B*N) mask
            lr = lr_at(step, cfg)
            for g in optimizer.param_groups:
                g["lr"] = lr
            loss = loss_and_backward(encoder, embed, parallel.shard_inputs(x, world), cfg, world)
            loss = parallel.mean(loss, world)  # the global batch's loss, the same on every rank
            run.check(step, loss)  # a NaN stops the run before the update
            parallel.average_gradients(encoder.model, world)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            run.after_step(step, batch, x, loss, lr)  # log; validate, keep the best; checkpoint
        run.close()
        return 0
    finally:
        parallel.finish(world)


if __name__ == "__main__":
    run_cli(main)
