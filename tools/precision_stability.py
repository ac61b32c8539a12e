"""How far an embedding moves when nothing but fp32 rounding changes upstream, per dtype.

Two perturbations that leave the maths unchanged:
- batch: the same texts encoded in batches of 64 and of 7 (other neighbours, other padding, so
  the GEMMs take other blockings and sum in another order: fp32 differs in the last bits);
- ulp: every entry of the word-embedding table moved by one ulp (seeded signs), as another CPU's
  kernels would round.
For each dtype, 1 - cosine between the two encodings of each text (mean, max) and the largest
absolute difference of a coordinate, next to 1 - cosine to fp32 of the unperturbed encoding. A
quantiser rounds at fixed steps, so a last-bit change that moves an activation across a rounding
boundary changes its integer, and the next layer carries that on: int8 turns fp32's last-bit
noise into a difference of its own size (docs/PRECISION.md).

    MINIHBT_MIRROR=../shared/data python tools/precision_stability.py [--n 128] [--out docs/precision/stability-e5-small.json]
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
from encode import machine, sample_sentences  # noqa: E402  (bench/encode.py: the same seeded MLQA-R sample)

from minihbt import quant  # noqa: E402
from minihbt.text_encoder import TextEncoder, load_encoder, quantize  # noqa: E402


def nudge_word_embeddings(model: torch.nn.Module, seed: int = 0) -> None:
    """Every word-embedding entry one ulp up or down (seeded), in place."""
    w = next(p for n, p in model.named_parameters() if n.endswith("word_embeddings.weight"))
    up = torch.randint(0, 2, w.shape, generator=torch.Generator().manual_seed(seed)).bool()
    with torch.no_grad():
        w.copy_(torch.nextafter(w, torch.where(up, torch.tensor(np.inf), torch.tensor(-np.inf))))


def encode(texts, dtype: str, batch_size: int, nudged: bool, model: str) -> np.ndarray:
    te = load_encoder(model)
    if nudged:  # before quantising, as if the checkpoint had been rounded elsewhere
        nudge_word_embeddings(te.model)
    if dtype == "int8":
        quantize(te.model)  # load_encoder's own step for int8, on the (nudged) weights
    te = TextEncoder(te.model, te.tokenizer, te.prefixes, te.meta, dtype)
    return te.encode(texts, kind="passage", batch_size=batch_size, progress=False)


def gap(a: np.ndarray, b: np.ndarray) -> dict:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)  # float64, norms divided out: no cosine above 1
    one_minus = 1 - (a64 * b64).sum(1) / np.linalg.norm(a64, axis=1) / np.linalg.norm(b64, axis=1)
    return {"one_minus_cos_mean": float(one_minus.mean()), "one_minus_cos_max": float(one_minus.max()),
            "max_abs": float(np.abs(a - b).max()), "bitwise_equal": bool(np.array_equal(a, b))}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=128, help="MLQA-R sentences (bench/encode.py's seeded sample)")
    p.add_argument("--model", default="e5-small")
    p.add_argument("--dtypes", default="fp32,bf16,int8")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    texts = sample_sentences(a.n)
    result = {"model": a.model, "n": len(texts), "threads": a.threads, "machine": machine(),
              "int8_gemm": f"{quant.scheme()} ({quant.backend()[0]})", "dtypes": {}}
    fp32 = encode(texts, "fp32", 64, False, a.model)
    for dtype in a.dtypes.split(","):
        base = encode(texts, dtype, 64, False, a.model)
        result["dtypes"][dtype] = {"to_fp32": gap(base, fp32),
                                   "batch_64_vs_7": gap(base, encode(texts, dtype, 7, False, a.model)),
                                   "one_ulp": gap(base, encode(texts, dtype, 64, True, a.model))}
        r = result["dtypes"][dtype]
        print(f"{dtype}: 1 - cos to fp32 {r['to_fp32']['one_minus_cos_mean']:.2e}; batch 64 vs 7 "
              f"{r['batch_64_vs_7']['one_minus_cos_mean']:.2e} (max {r['batch_64_vs_7']['one_minus_cos_max']:.2e}); "
              f"one ulp {r['one_ulp']['one_minus_cos_mean']:.2e} (max {r['one_ulp']['one_minus_cos_max']:.2e})")
    if a.out:
        tmp = Path(a.out).with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=1) + "\n")
        tmp.replace(a.out)


if __name__ == "__main__":
    main()
