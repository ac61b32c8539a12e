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

GradCache (minihbt/parallel.py) against sentence-transformers' CachedMultipleNegativesRankingLoss
(its GradCache), both embedding K examples at a time, plus minihbt's plain step at a smaller batch:

    python bench/train_step.py --batch-size 128 --grad-cache-chunk 16 --plain-batch-size 32 --steps 1 --warmup 1

Here the last line compares memory: "minihbt" / "sentence_transformers" are the peak MB of the
GradCache steps, "minihbt_plain_peak_mb" that of the plain step at --plain-batch-size. "Step
peak" is the process's peak resident set during the training steps only (the high-water mark
is reset after loading, via /proc/self/clear_refs), so loading the checkpoint does not hide it;
it includes the weights, gradients and AdamW moments (~1.9 GB for e5-small), which every variant
holds, plus the activations, which GradCache bounds by the chunk size. On CUDA: the peak of
torch.cuda.max_memory_allocated, reset after loading.
"""
from __future__ import annotations

import argparse
import gc
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
    from minihbt.lareqa import TRAIN_LANGS, load_groups
    from minihbt.sampler import HybridSampler
    from minihbt.train_step import batch_texts

    groups = {"xquad-r": load_groups("xquad-r", TRAIN_LANGS)}
    sampler = HybridSampler(groups, TRAIN_LANGS, batch_size, "hybrid", 0.5, seed=0)
    out = []
    for _ in range(n):
        q, p = batch_texts(next(sampler), groups)
        out.append(([prefixes["query"] + t for t in q], [prefixes["passage"] + t for t in p]))
    return out


def peak_memory_mb(device: str) -> float:
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def reset_step_peak(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM := current RSS


def step_peak_mb(device: str) -> float:
    import torch

    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024  # kB


def run_side(side: str, args) -> dict:
    """Time `args.steps` training steps after `args.warmup` untimed ones; returns figures as a dict."""
    import torch

    from minihbt import load_encoder
    from minihbt.convert import model_dir

    torch.manual_seed(0)
    path = model_dir("e5-small")
    prefixes = json.loads((path / "minihbt.json").read_text())["prefixes"]
    data = batches(args.warmup + args.steps, args.batch_size, prefixes)
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)

    step_of = None  # a GradCache step, which runs its own backward
    if side == "minihbt":
        from minihbt import parallel
        from minihbt.loss import info_nce

        enc = load_encoder(path, device=args.device)
        model = enc.model

        def embed(texts):
            # Prefixes are already in the texts: tokenise without adding them again.
            t = enc.tokenizer(texts, max_len=MAX_LEN)
            return model.embed(t["input_ids"].to(args.device), t["attention_mask"].to(args.device))

        def loss_of(q, p):
            return info_nce(embed(q), embed(p), 1 / SCALE)

        if args.grad_cache_chunk:
            def step_of(q, p):
                k = args.grad_cache_chunk
                chunks = [[t[i:i + k] for i in range(0, len(t), k)] for t in (q, p)]
                return parallel.grad_cache(embed, chunks, lambda eq, ep: info_nce(eq, ep, 1 / SCALE),
                                           torch.device(args.device))
    else:
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

        model = SentenceTransformer(str(path), device=args.device)
        model.max_seq_length = MAX_LEN
        mnrl = MultipleNegativesRankingLoss(model, scale=SCALE)

        def features(q, p):
            return [{k: v.to(args.device) if torch.is_tensor(v) else v for k, v in model.preprocess(t).items()}
                    for t in (q, p)]

        def loss_of(q, p):
            return mnrl(features(q, p), None)

        if args.grad_cache_chunk:
            from sentence_transformers.sentence_transformer.losses import CachedMultipleNegativesRankingLoss

            cached = CachedMultipleNegativesRankingLoss(model, scale=SCALE, mini_batch_size=args.grad_cache_chunk)

            def step_of(q, p):
                loss = cached(features(q, p), None)
                loss.backward()  # runs its chunked backward through a hook
                return loss.detach()

    model.eval()  # dropout off: the check below compares deterministic losses
    with torch.no_grad():
        check = loss_of(*data[0]).item()
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)
    times = []
    gc.collect()
    reset_step_peak(args.device)
    for i, (q, p) in enumerate(data):
        sync()
        t0 = time.perf_counter()
        if step_of:
            step_of(q, p)
        else:
            loss_of(q, p).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    step = statistics.median(times)
    return {"side": side, "check_loss": check, "step_s": step, "pairs_per_s": args.batch_size / step,
            "peak_mb": peak_memory_mb(args.device), "step_peak_mb": step_peak_mb(args.device),
            "threads": torch.get_num_threads()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=6, help="timed steps (median reported)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (allocation, caches)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--grad-cache-chunk", type=int, default=0, metavar="K", help="GradCache on both sides (off)")
    p.add_argument("--plain-batch-size", type=int, default=32, help="with GradCache: minihbt's plain step at this batch")
    p.add_argument("--side", choices=["minihbt", "st"], help=argparse.SUPPRESS)  # child process
    args = p.parse_args()
    if args.side:
        print(json.dumps(run_side(args.side, args)))
        return

    def run(side, batch_size, chunk):
        cmd = [sys.executable, __file__, "--side", side, "--batch-size", str(batch_size), "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--device", args.device, "--grad-cache-chunk", str(chunk)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"{side} failed:\n{r.stderr[-3000:]}")
        return json.loads(r.stdout.strip().splitlines()[-1])

    results = {side: run(side, args.batch_size, args.grad_cache_chunk) for side in ("minihbt", "st")}
    m, s = results["minihbt"], results["st"]
    if abs(m["check_loss"] - s["check_loss"]) > 1e-4:
        sys.exit(f"first-batch losses differ: minihbt {m['check_loss']} vs sentence-transformers {s['check_loss']}")

    rows = [("minihbt", m), ("sentence-transformers", s)]
    if args.grad_cache_chunk:
        plain = run("minihbt", args.plain_batch_size, 0)
        rows = [(f"minihbt gradcache {args.grad_cache_chunk}", m), (f"ST cached mnrl {args.grad_cache_chunk}", s),
                (f"minihbt plain b{args.plain_batch_size}", plain)]

    print(f"e5-small training step, batch {args.batch_size}, {args.device}, {m['threads']} threads, "
          f"median of {args.steps} steps after {args.warmup} warm-up")
    print(f"first-batch loss (dropout off): minihbt {m['check_loss']:.6f}  sentence-transformers {s['check_loss']:.6f}")
    print(f"{'':28}{'step s':>9}{'pairs/s':>10}{'peak MB':>10}{'step peak MB':>14}")
    for name, r in rows:
        print(f"{name:28}{r['step_s']:9.3f}{r['pairs_per_s']:10.2f}{r['peak_mb']:10.0f}{r['step_peak_mb']:14.0f}")
    if args.grad_cache_chunk:
        print(json.dumps({
            "name": "train_step_grad_cache", "unit": "step peak MB", "device": args.device,
            "batch_size": args.batch_size, "grad_cache_chunk": args.grad_cache_chunk,
            "minihbt": round(m["step_peak_mb"]), "sentence_transformers": round(s["step_peak_mb"]),
            "ratio_sentence_transformers": round(m["step_peak_mb"] / s["step_peak_mb"], 3),
            "minihbt_plain_batch_size": args.plain_batch_size, "minihbt_plain_peak_mb": round(plain["step_peak_mb"]),
            "pairs_per_s": {"minihbt": round(m["pairs_per_s"], 3), "sentence_transformers": round(s["pairs_per_s"], 3),
                            "minihbt_plain": round(plain["pairs_per_s"], 3)},
        }))
        return
    print(json.dumps({
        "name": "train_step", "unit": "pairs/s", "device": args.device, "batch_size": args.batch_size,
        "minihbt": round(m["pairs_per_s"], 3), "sentence_transformers": round(s["pairs_per_s"], 3),
        "ratio_sentence_transformers": round(m["pairs_per_s"] / s["pairs_per_s"], 3),
        "peak_mb": {"minihbt": round(m["peak_mb"]), "sentence_transformers": round(s["peak_mb"])},
        "ratio_peak_mb_sentence_transformers": round(m["peak_mb"] / s["peak_mb"], 3),
    }))


if __name__ == "__main__":
    main()
