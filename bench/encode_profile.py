"""Where encoding time goes, fp32 against int8: the ceiling an int8 Linear can reach on this CPU.

int8 (minihbt/quant.py) speeds up only the Linear layers' products; attention, GELU, LayerNorm
and the residual adds stay fp32 (docs/PRECISION.md). So with t the fp32 encoder's time, split
into its Linears' time L and the rest R = t - L, and g the int8 GEMM's speed-up over the fp32
Linear, int8 cannot beat (Amdahl)

    t / (R + L / g)        (quantisation free; the real int8 adds its own per-token passes)

Measured here with torch.profiler over length-sorted encodes of --n real MLQA-R sentences
(bench/encode.py's sample, e5-small, "passage: ", batch 64, --threads threads), fp32 and int8
loaded side by side, warmed up, then taking turns for --rounds rounds (each round: one plain
encode per dtype for the wall time, one profiled encode for the split; the medians count):
  linear_gemm      fp32: `aten::linear` (addmm, with its bias); int8: the integer GEMM with the
                   per-channel scale (`minihbt::onednn_mm`, or `torch._int_mm` / `mm`);
  linear_rest      the rest of each Linear call: int8's per-token quantisation, the scale s_x and
                   the bias (fp32: reshapes, ~0);
  attention        `aten::scaled_dot_product_attention`;  gelu  `aten::gelu`;
  layer_norm, residual_add   `aten::layer_norm`, `aten::add`;  other   everything else (the
                   embeddings, pooling, the L2 norm).
The Linears are found by module hooks that open a profiler range around each call, so the split
is by where an op is called from, not by its name. The ceilings use the profiled parts; the
measured speed-up uses the plain encodes' wall times.

    python bench/encode_profile.py --n 256 --out docs/precision/profile-encode-avx2.json

Last line: {"name": "encode_profile", "dtypes": {dtype: {"wall_s", "walls_s", "profile_s": {part:
median s}, "profile_totals_s"}},
"ceiling": {...}, "machine": {...}}.
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
from torch.profiler import ProfilerActivity, profile, record_function

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from encode import machine, sample_sentences  # noqa: E402  (bench/ is on sys.path when run as a script)

from minihbt import quant  # noqa: E402
from minihbt.io.files import atomic_write_json  # noqa: E402
from minihbt.step import keep_freed_memory  # noqa: E402
from minihbt.text_encoder import load_encoder  # noqa: E402

LINEAR = "minihbt.profile.linear"  # the profiler range around each Linear call
GEMMS = {"aten::linear", "minihbt::onednn_mm", "aten::_int_mm", "aten::mm"}
TOP = {"aten::scaled_dot_product_attention": "attention", "aten::gelu": "gelu",
       "aten::layer_norm": "layer_norm", "aten::add": "residual_add"}
DTYPES = ("fp32", "int8")
PARTS = ("linear_gemm", "linear_rest", "attention", "gelu", "layer_norm", "residual_add", "other")


def mark_linears(model: nn.Module) -> list:
    """Hooks that put every nn.Linear / Int8Linear call inside a profiler range named LINEAR."""
    open_ranges = []

    def enter(module, args):
        open_ranges.append(record_function(LINEAR).__enter__())

    def leave(module, args, out):
        open_ranges.pop().__exit__(None, None, None)

    linears = [m for m in model.modules() if isinstance(m, (nn.Linear, quant.Int8Linear))]
    return [h for m in linears for h in (m.register_forward_pre_hook(enter), m.register_forward_hook(leave))]


def split(events) -> dict[str, float]:
    """Seconds per part (PARTS) from the profiler's top-level events and the children of each range."""
    parts = dict.fromkeys(PARTS, 0.0)
    for e in events:
        if e.cpu_parent is not None:
            continue
        seconds = e.cpu_time_total / 1e6
        if e.name == LINEAR:
            gemm = sum(c.cpu_time_total for c in e.cpu_children if c.name in GEMMS) / 1e6
            parts["linear_gemm"] += gemm
            parts["linear_rest"] += seconds - gemm
        else:
            parts[TOP.get(e.name, "other")] += seconds
    return parts


def profiled(te, run) -> dict[str, float]:
    """One encode under torch's profiler, split into PARTS."""
    hooks = mark_linears(te.model)
    try:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            run(te)
    finally:
        for h in hooks:
            h.remove()
    return split(prof.events())


def measure(texts: list[str], batch_size: int, rounds: int) -> dict:
    """Per dtype: the median wall time of `rounds` plain encodes and the median of each part over as
    many profiled ones, the dtypes taking turns (so a slow minute of a shared machine hits both)."""
    encoders = {d: load_encoder("e5-small", dtype=d) for d in DTYPES}
    run = lambda te: te.encode(texts, kind="passage", batch_size=batch_size)  # noqa: E731
    for te in encoders.values():
        run(te)  # warm-up: allocations, oneDNN's kernel choice
    walls, parts = {d: [] for d in DTYPES}, {d: [] for d in DTYPES}
    for _ in range(rounds):
        for d, te in encoders.items():
            t = time.perf_counter()
            run(te)
            walls[d].append(round(time.perf_counter() - t, 3))
            parts[d].append(profiled(te, run))
    return {d: {"wall_s": statistics.median(walls[d]), "walls_s": walls[d],
                "profile_s": {k: round(statistics.median(p[k] for p in parts[d]), 4) for k in PARTS},
                "profile_totals_s": [round(sum(p.values()), 3) for p in parts[d]]} for d in DTYPES}


def ceiling(fp32: dict, int8: dict) -> dict:
    """The measured speed-up and what an int8 Linear could reach at best (module docstring)."""
    f, q = fp32["profile_s"], int8["profile_s"]
    t, linear = sum(f.values()), f["linear_gemm"] + f["linear_rest"]
    gemm = linear / q["linear_gemm"]
    return {"speedup_wall": round(fp32["wall_s"] / int8["wall_s"], 3),
            "fp32_linear_share": round(linear / t, 4),
            "gemm_speedup": round(gemm, 3),
            "ceiling_free_quantisation": round(t / (t - linear + linear / gemm), 3),
            "ceiling_gemm_2x": round(t / (t - linear + linear / 2), 3),
            "ceiling_gemm_free": round(t / (t - linear), 3)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=256, help="real MLQA-R sentences (bench/encode.py's sample)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3, help="plain and profiled encodes per dtype; medians count")
    p.add_argument("--out", help="also write the last line's JSON to this file")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    keep_freed_memory()  # what eval.py does
    texts = sample_sentences(a.n)
    before = machine()
    dtypes = measure(texts, a.batch_size, a.rounds)
    for d, r in dtypes.items():
        total = sum(r["profile_s"].values())
        shares = ", ".join(f"{k} {v / total:.1%}" for k, v in r["profile_s"].items())
        print(f"{d}: walls {r['walls_s']} s; profiled {r['profile_totals_s']} s: {shares}", file=sys.stderr)
    out = {"name": "encode_profile", "model": "e5-small", "n": a.n, "threads": a.threads,
           "batch_size": a.batch_size, "dtypes": dtypes, "ceiling": ceiling(dtypes["fp32"], dtypes["int8"]),
           "int8_gemm": quant.scheme() + f" ({quant.backend()[0]})", "machine": before}
    out["machine"]["loadavg_after"] = machine()["loadavg"]
    line = json.dumps(out)
    print(line)
    if a.out:
        atomic_write_json(a.out, out)


if __name__ == "__main__":
    main()
