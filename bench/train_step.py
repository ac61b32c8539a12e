"""One training step of e5-small at batch 32: minihbt vs sentence-transformers MultipleNegativesRankingLoss.

Both sides start from the same converted e5-small directory and see the same batches (hybrid
sampler on XQuAD-R, seed 0, the model's "query: " / "passage: " prefixes, at most 128 tokens).
A step is: tokenise, embed queries and passages, InfoNCE at scale 20 (= temperature 0.05),
backward, AdamW update (torch.optim.AdamW with the same settings on both sides, so the
comparison is of the encoder and loss, not of the optimizer), zero_grad. Dropout is on.

Each side runs in its own process, so "peak memory" is that process's peak resident set
(weights + gradients + AdamW moments + activations; on CUDA: torch.cuda.max_memory_allocated).
Before timing, each side computes the first batch's loss with dropout off; the two must agree
(same weights, same inputs) or the figures would compare different computations.

    python bench/train_step.py [--batch-size 32] [--steps 6] [--warmup 2] [--device cpu|cuda]

Last line: {"name", "minihbt", "sentence_transformers", "ratio_sentence_transformers", ...},
where minihbt / sentence_transformers are pairs per second (ratio > 1: minihbt faster).
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MAX_LEN, SCALE, LR = 128, 20.0, 3e-5


def batches(n: int, batch_size: int, prefixes: dict[str, str]) -> list[tuple[list[str], list[str]]]:
    import train
    from minihbt.data import TRAIN_LANGS, load_groups
    from minihbt.sampler import HybridSampler

    groups = {"xquad-r": load_groups("xquad-r", TRAIN_LANGS)}
    sampler = HybridSampler(groups, TRAIN_LANGS, batch_size, "hybrid", 0.5, seed=0)
    out = []
    for _ in range(n):
        q, p = train.batch_texts(next(sampler), groups)
        out.append(([prefixes["query"] + t for t in q], [prefixes["passage"] + t for t in p]))
    return out


def peak_memory_mb(device: str) -> float:
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_side(side: str, args) -> dict:
    """Time `args.steps` training steps after `args.warmup` untimed ones; returns figures as a dict."""
    import torch

    from minihbt import load_encoder
    from minihbt.data import model_dir

    torch.manual_seed(0)
    path = model_dir("e5-small")
    prefixes = json.loads((path / "minihbt.json").read_text())["prefixes"]
    data = batches(args.warmup + args.steps, args.batch_size, prefixes)
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)

    if side == "minihbt":
        from minihbt.loss import info_nce

        enc = load_encoder(path, device=args.device)
        model = enc.model

        def loss_of(q, p):
            # Prefixes are already in the texts: tokenise without adding them again.
            tq = enc.tokenizer(q, max_len=MAX_LEN)
            tp = enc.tokenizer(p, max_len=MAX_LEN)
            eq = model.embed(tq["input_ids"].to(args.device), tq["attention_mask"].to(args.device))
            ep = model.embed(tp["input_ids"].to(args.device), tp["attention_mask"].to(args.device))
            return info_nce(eq, ep, 1 / SCALE)
    else:
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

        model = SentenceTransformer(str(path), device=args.device)
        model.max_seq_length = MAX_LEN
        mnrl = MultipleNegativesRankingLoss(model, scale=SCALE)

        def loss_of(q, p):
            features = [{k: v.to(args.device) if torch.is_tensor(v) else v for k, v in model.preprocess(t).items()}
                        for t in (q, p)]
            return mnrl(features, None)

    model.eval()  # dropout off: the check below compares deterministic losses
    with torch.no_grad():
        check = loss_of(*data[0]).item()
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)
    times = []
    for i, (q, p) in enumerate(data):
        sync()
        t0 = time.perf_counter()
        loss = loss_of(q, p)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    step = statistics.median(times)
    return {"side": side, "check_loss": check, "step_s": step, "pairs_per_s": args.batch_size / step,
            "peak_mb": peak_memory_mb(args.device), "threads": torch.get_num_threads()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=6, help="timed steps (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (allocation, caches)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--side", choices=["minihbt", "st"], help=argparse.SUPPRESS)  # child process
    args = p.parse_args()
    if args.side:
        print(json.dumps(run_side(args.side, args)))
        return

    results = {}
    for side in ("minihbt", "st"):
        cmd = [sys.executable, __file__, "--side", side, "--batch-size", str(args.batch_size),
               "--steps", str(args.steps), "--warmup", str(args.warmup), "--device", args.device]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"{side} failed:\n{r.stderr[-3000:]}")
        results[side] = json.loads(r.stdout.strip().splitlines()[-1])
    m, s = results["minihbt"], results["st"]
    if abs(m["check_loss"] - s["check_loss"]) > 1e-4:
        sys.exit(f"first-batch losses differ: minihbt {m['check_loss']} vs sentence-transformers {s['check_loss']}")

    print(f"e5-small training step, batch {args.batch_size}, {args.device}, {m['threads']} threads, "
          f"median of {args.steps} steps after {args.warmup} warm-up")
    print(f"first-batch loss (dropout off): minihbt {m['check_loss']:.6f}  sentence-transformers {s['check_loss']:.6f}")
    print(f"{'':24}{'step s':>9}{'pairs/s':>10}{'peak MB':>10}")
    for name, r in [("minihbt", m), ("sentence-transformers", s)]:
        print(f"{name:24}{r['step_s']:9.3f}{r['pairs_per_s']:10.2f}{r['peak_mb']:10.0f}")
    print(json.dumps({
        "name": "train_step", "unit": "pairs/s", "device": args.device, "batch_size": args.batch_size,
        "minihbt": round(m["pairs_per_s"], 3), "sentence_transformers": round(s["pairs_per_s"], 3),
        "ratio_sentence_transformers": round(m["pairs_per_s"] / s["pairs_per_s"], 3),
        "peak_mb": {"minihbt": round(m["peak_mb"]), "sentence_transformers": round(s["peak_mb"])},
        "ratio_peak_mb_sentence_transformers": round(m["peak_mb"] / s["peak_mb"], 3),
    }))


if __name__ == "__main__":
    main()
