"""One training step of e5-small at batch 32: minihbt (fp32, bf16; for-loop or fused AdamW) vs
sentence-transformers MultipleNegativesRankingLoss (fp32, bf16 autocast).

Every variant starts from the same converted e5-small directory and sees the same batches
(hybrid sampler on XQuAD-R, seed 0, the model's "query: " / "passage: " prefixes, at most 128
tokens). A step is: tokenise, embed queries and passages, InfoNCE at scale 20 (= temperature
0.05), backward, AdamW update, zero_grad(set_to_none=True). Dropout is on. Variants:
  minihbt_fp32             step.make_embed / make_optimizer with the for-loop AdamW (torch's
                           reference and CPU default; what the runs in docs/results used);
  minihbt_fp32_fused       + the fused AdamW (step.make_optimizer(adamw="fused"));
  minihbt_fp32_fast        + keep_freed_memory(): train.py's default step on CPU;
  minihbt_bf16             bf16 autocast (TextEncoder dtype "bf16"), for-loop AdamW;
  minihbt_bf16_fast        bf16 + fused AdamW + keep_freed_memory (train.py on CUDA);
  st_fp32, st_bf16         SentenceTransformer + MNRL with torch.optim.AdamW (its default, the
                           for-loop on CPU), the loss computed plainly / under torch.autocast(bf16).
Each variant runs in its own process, so "peak MB" is that process's peak resident set; "step
peak MB" is the peak during the training steps only (VmHWM reset after loading through
/proc/self/clear_refs; on CUDA: torch.cuda.max_memory_allocated, reset after loading). Per step
the script also records the minor page faults and the system (kernel) CPU seconds, and for
minihbt the time of each phase (tokenise, forward + loss, backward, optimizer + zero_grad).
Before timing, each variant computes the first batch's loss with dropout off; the fp32 ones must
agree to 1e-4 (same weights, same inputs), or the figures would compare different computations.

    python bench/train_step.py [--batch-size 32] [--steps 6] [--warmup 2] [--steps-bf16 N]
                               [--variants a,b,...] [--device cpu|cuda]

Last line: {"name": "train_step", "pairs_per_s": {variant: ...}, "vs_st_fp32": {variant: pairs/s
/ st_fp32's}, "step_peak_mb": {...}, "phases_s": {...}, "machine": {...}, ...}.

GradCache (minihbt/parallel.py) against sentence-transformers' CachedMultipleNegativesRankingLoss
(its GradCache), both embedding K examples at a time, plus minihbt's plain step at a smaller batch:

    python bench/train_step.py --batch-size 128 --grad-cache-chunk 16 --plain-batch-size 32 --steps 1 --warmup 1

Here the last line compares memory: "minihbt" / "sentence_transformers" are the step peak MB of
the GradCache steps (fp32, for-loop AdamW on both sides), "minihbt_plain_peak_mb" that of the
plain step at --plain-batch-size; it includes the weights, gradients and AdamW moments (~1.9 GB
for e5-small), which every variant holds, plus the activations, which GradCache bounds.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MAX_LEN, SCALE, LR = 128, 20.0, 3e-5
# variant: (library, dtype, AdamW implementation, keep_freed_memory)
VARIANTS = {
    "minihbt_fp32": ("minihbt", "fp32", "for-loop", False),
    "minihbt_fp32_fused": ("minihbt", "fp32", "fused", False),
    "minihbt_fp32_fast": ("minihbt", "fp32", "fused", True),
    "minihbt_bf16": ("minihbt", "bf16", "for-loop", False),
    "minihbt_bf16_fast": ("minihbt", "bf16", "fused", True),
    "st_fp32": ("st", "fp32", "for-loop", False),
    "st_bf16": ("st", "bf16", "for-loop", False),
}


def batches(n: int, batch_size: int, prefixes: dict[str, str]) -> list[tuple[list[str], list[str]]]:
    from minihbt.lareqa import TRAIN_LANGS, load_groups
    from minihbt.sampler import HybridSampler
    from minihbt.step import inputs

    groups = {"xquad-r": load_groups("xquad-r", TRAIN_LANGS)}
    sampler = HybridSampler(groups, TRAIN_LANGS, batch_size, "hybrid", 0.5, seed=0)
    out = []
    for _ in range(n):
        x = inputs(next(sampler), groups["xquad-r"])
        q, p = x.queries, x.passages
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


def run_variant(variant: str, args) -> dict:
    """Time `args.steps` training steps after `args.warmup` untimed ones; returns figures as a dict."""
    import torch

    from minihbt.io.convert import model_dir

    lib, dtype, adamw, keep = VARIANTS[variant]
    torch.manual_seed(0)
    path = model_dir("e5-small")
    prefixes = json.loads((path / "minihbt.json").read_text())["prefixes"]
    n_steps = args.steps_bf16 if dtype == "bf16" and args.steps_bf16 else args.steps
    data = batches(args.warmup + n_steps, args.batch_size, prefixes)
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    bf16 = torch.autocast(args.device, dtype=torch.bfloat16, enabled=dtype == "bf16")

    step_of = None  # a GradCache step, which runs its own backward
    if lib == "minihbt":
        from minihbt import parallel
        from minihbt import step as train_step
        from minihbt.loss import info_nce
        from minihbt.text_encoder import load_encoder

        enc = load_encoder(path, device=args.device, dtype=dtype)
        model = enc.model
        cfg = SimpleNamespace(compile=False, adamw=adamw, lr=LR, weight_decay=0.01)
        embed_tokens = train_step.make_embed(enc, cfg)
        if keep:
            train_step.keep_freed_memory()

        def tokenize(q, p):  # prefixes are already in the texts: tokenise without adding them again
            return [{k: v.to(args.device) for k, v in enc.tokenizer(t, max_len=MAX_LEN).items()} for t in (q, p)]

        def loss_of_tokens(tq, tp):
            return info_nce(embed_tokens(tq), embed_tokens(tp), 1 / SCALE)

        def embed(texts):
            return embed_tokens({k: v.to(args.device) for k, v in enc.tokenizer(texts, max_len=MAX_LEN).items()})

        if args.grad_cache_chunk:
            def step_of(q, p):
                k = args.grad_cache_chunk
                chunks = [[t[i:i + k] for i in range(0, len(t), k)] for t in (q, p)]
                return parallel.grad_cache(embed, chunks, lambda eq, ep: info_nce(eq, ep, 1 / SCALE),
                                           torch.device(args.device))
        make_opt = lambda: train_step.make_optimizer(model, cfg)  # noqa: E731
    else:
        from sentence_transformers import SentenceTransformer
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

        model = SentenceTransformer(str(path), device=args.device)
        model.max_seq_length = MAX_LEN
        mnrl = MultipleNegativesRankingLoss(model, scale=SCALE)

        def tokenize(q, p):
            return [{k: v.to(args.device) if torch.is_tensor(v) else v for k, v in model.preprocess(t).items()}
                    for t in (q, p)]

        def loss_of_tokens(tq, tp):
            with bf16:
                return mnrl([tq, tp], None)

        if args.grad_cache_chunk:
            from sentence_transformers.sentence_transformer.losses import CachedMultipleNegativesRankingLoss

            cached = CachedMultipleNegativesRankingLoss(model, scale=SCALE, mini_batch_size=args.grad_cache_chunk)

            def step_of(q, p):
                loss = cached(tokenize(q, p), None)
                loss.backward()  # runs its chunked backward through a hook
                return loss.detach()
        make_opt = lambda: torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.01)  # noqa: E731

    model.eval()  # dropout off: the check below compares deterministic losses
    with torch.no_grad():
        check = loss_of_tokens(*tokenize(*data[0])).item()
    model.train()
    opt = make_opt()
    steps = []
    gc.collect()
    reset_step_peak(args.device)
    for i, (q, p) in enumerate(data):
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        sync()
        t = [time.perf_counter()]
        if step_of:
            step_of(q, p)
            t += [t[0], time.perf_counter()]
        else:
            tokens = tokenize(q, p)
            t.append(time.perf_counter())
            loss = loss_of_tokens(*tokens)
            sync()
            t.append(time.perf_counter())
            loss.backward()
        sync()
        t.append(time.perf_counter())
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        t.append(time.perf_counter())
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        if i >= args.warmup:
            steps.append({"s": t[-1] - t[0], "tokenize": t[1] - t[0], "forward": t[2] - t[1],
                          "backward": t[3] - t[2], "optimizer": t[4] - t[3], "faults": r1.ru_minflt - r0.ru_minflt,
                          "sys_s": r1.ru_stime - r0.ru_stime, "user_s": r1.ru_utime - r0.ru_utime})
    med = {k: statistics.median(s[k] for s in steps) for k in steps[0]}
    return {"variant": variant, "check_loss": check, "step_s": med["s"], "pairs_per_s": args.batch_size / med["s"],
            "phases_s": {k: round(med[k], 3) for k in ("tokenize", "forward", "backward", "optimizer")},
            "faults_per_step": int(med["faults"]), "sys_s_per_step": round(med["sys_s"], 3),
            "user_s_per_step": round(med["user_s"], 3), "steps": len(steps),
            "peak_mb": peak_memory_mb(args.device), "step_peak_mb": step_peak_mb(args.device),
            "threads": torch.get_num_threads()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=6, help="timed steps (median reported)")
    p.add_argument("--steps-bf16", type=int, default=0, help="timed steps of the bf16 variants (--steps)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (allocation, caches)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ",".join(VARIANTS))
    p.add_argument("--grad-cache-chunk", type=int, default=0, metavar="K", help="GradCache on both sides (off)")
    p.add_argument("--plain-batch-size", type=int, default=32, help="with GradCache: minihbt's plain step at this batch")
    p.add_argument("--variant", choices=list(VARIANTS), help=argparse.SUPPRESS)  # child process
    args = p.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args.variant, args)))
        return

    def run(variant, batch_size, chunk):
        cmd = [sys.executable, __file__, "--variant", variant, "--batch-size", str(batch_size), "--steps",
               str(args.steps), "--steps-bf16", str(args.steps_bf16), "--warmup", str(args.warmup),
               "--device", args.device, "--grad-cache-chunk", str(chunk)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"{variant} failed:\n{r.stderr[-3000:]}")
        out = json.loads(r.stdout.strip().splitlines()[-1])
        print(f"{variant}: {out['step_s']:.2f} s/step, load {os.getloadavg()[0]:.2f}", file=sys.stderr)
        return out

    import torch

    from minihbt.text_encoder import cpu_has_bf16
    machine = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "loadavg": os.getloadavg(),
               "cpus": os.cpu_count(), "cpu_bf16": cpu_has_bf16(), "torch": torch.__version__}
    if args.grad_cache_chunk:
        m, s = run("minihbt_fp32", args.batch_size, args.grad_cache_chunk), run("st_fp32", args.batch_size,
                                                                                  args.grad_cache_chunk)
        if abs(m["check_loss"] - s["check_loss"]) > 1e-4:
            sys.exit(f"first-batch losses differ: minihbt {m['check_loss']} vs sentence-transformers {s['check_loss']}")
        plain = run("minihbt_fp32", args.plain_batch_size, 0)
        print(f"{'':28}{'step s':>9}{'pairs/s':>10}{'peak MB':>10}{'step peak MB':>14}")
        for name, r in [(f"minihbt gradcache {args.grad_cache_chunk}", m),
                        (f"ST cached mnrl {args.grad_cache_chunk}", s), (f"minihbt plain b{args.plain_batch_size}", plain)]:
            print(f"{name:28}{r['step_s']:9.3f}{r['pairs_per_s']:10.2f}{r['peak_mb']:10.0f}{r['step_peak_mb']:14.0f}")
        print(json.dumps({
            "name": "train_step_grad_cache", "unit": "step peak MB", "device": args.device,
            "batch_size": args.batch_size, "grad_cache_chunk": args.grad_cache_chunk,
            "minihbt": round(m["step_peak_mb"]), "sentence_transformers": round(s["step_peak_mb"]),
            "ratio_sentence_transformers": round(m["step_peak_mb"] / s["step_peak_mb"], 3),
            "minihbt_plain_batch_size": args.plain_batch_size, "minihbt_plain_peak_mb": round(plain["step_peak_mb"]),
            "pairs_per_s": {"minihbt": round(m["pairs_per_s"], 3), "sentence_transformers": round(s["pairs_per_s"], 3),
                            "minihbt_plain": round(plain["pairs_per_s"], 3)},
            "machine": machine, "loadavg_after": os.getloadavg(),
        }))
        return

    names = [v for v in args.variants.split(",") if v]
    if set(names) - set(VARIANTS):
        sys.exit(f"--variants: a subset of {','.join(VARIANTS)}")
    res = {v: run(v, args.batch_size, 0) for v in names}
    fp32 = [r["check_loss"] for v, r in res.items() if VARIANTS[v][1] == "fp32"]
    if fp32 and max(fp32) - min(fp32) > 1e-4:
        sys.exit(f"first-batch losses (fp32, dropout off) differ: { {v: r['check_loss'] for v, r in res.items()} }")
    base = res.get("st_fp32")
    print(f"e5-small training step, batch {args.batch_size}, {args.device}, "
          f"{next(iter(res.values()))['threads']} threads, median of the timed steps after {args.warmup} warm-up")
    print(f"{'':20}{'check loss':>11}{'step s':>8}{'pairs/s':>9}{'vs st_fp32':>11}{'step peak MB':>13}"
          f"{'faults':>9}{'cpu s':>7}{'sys s':>7}   tokenize / forward / backward / optimizer s")
    for v, r in res.items():
        ph = r["phases_s"]
        print(f"{v:20}{r['check_loss']:11.6f}{r['step_s']:8.2f}{r['pairs_per_s']:9.2f}"
              f"{r['pairs_per_s'] / base['pairs_per_s'] if base else float('nan'):11.2f}{r['step_peak_mb']:13.0f}"
              f"{r['faults_per_step']:9d}{r['user_s_per_step'] + r['sys_s_per_step']:7.2f}{r['sys_s_per_step']:7.2f}"
              f"   {ph['tokenize']} / {ph['forward']} / "
              f"{ph['backward']} / {ph['optimizer']}")
    print(json.dumps({
        "name": "train_step", "unit": "pairs/s", "device": args.device, "batch_size": args.batch_size,
        "pairs_per_s": {v: round(r["pairs_per_s"], 3) for v, r in res.items()},
        "vs_st_fp32": {v: round(r["pairs_per_s"] / base["pairs_per_s"], 3) for v, r in res.items()} if base else None,
        "step_s": {v: round(r["step_s"], 3) for v, r in res.items()},
        "phases_s": {v: r["phases_s"] for v, r in res.items()},
        "peak_mb": {v: round(r["peak_mb"]) for v, r in res.items()},
        "step_peak_mb": {v: round(r["step_peak_mb"]) for v, r in res.items()},
        "faults_per_step": {v: r["faults_per_step"] for v, r in res.items()},
        "sys_s_per_step": {v: r["sys_s_per_step"] for v, r in res.items()},
        "cpu_s_per_step": {v: round(r["user_s_per_step"] + r["sys_s_per_step"], 3) for v, r in res.items()},
        "check_loss": {v: round(r["check_loss"], 6) for v, r in res.items()},
        "timed_steps": {v: r["steps"] for v, r in res.items()}, "warmup": args.warmup,
        "machine": machine, "loadavg_after": os.getloadavg(),
    }))


if __name__ == "__main__":
    main()
