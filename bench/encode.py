"""Encoding throughput: minihbt TextEncoder.encode (fp32, bf16) against transformers and sentence-transformers.

--n real MLQA-R candidate sentences (a seeded sample over its 7 languages; 2,000 by default),
e5-small, "passage: " prefix, batch 64, max_len 512, on CPU with --threads torch threads (2 by
default, as the project machine). Every system uses the same converted directory:
  minihbt_fp32              TextEncoder.encode, dtype "fp32" (length-sorted batches);
  minihbt_bf16              the same model, dtype "bf16" (autocast; minihbt/text_encoder.py);
  transformers              BertModel (attn_implementation="sdpa") + masked mean pooling + L2, the
                            loop of the e5 model card: batches in input order, fp32;
  transformers_sorted       the same model, batches sorted by token length as minihbt does, fp32;
  transformers_sorted_bf16  that loop under torch.autocast("cpu", bfloat16), as a user would add it;
  sentence_transformers     SentenceTransformer(dir).encode(prompt_name="passage"), which sorts too.
The machine is shared, so the systems take turns on slices of --chunk texts (the order of turns
rotates from slice to slice), and each one's time is the sum over the slices: load from other
processes falls on all of them alike. Each system sorts (or not) within a slice, as it would in
one call. The fp32 systems' embeddings must equal minihbt_fp32's (max abs difference <= 1e-4);
for the bf16 ones the minimum cosine to minihbt_fp32's rows is reported.

    MINIHBT_MIRROR=../shared/data python bench/encode.py [--n 2000] [--threads 2] [--chunk 250]
        [--batch-size 64] [--systems minihbt_fp32,minihbt_bf16,...]
Last line: {"name": "encode", "texts_per_s": {system: rate}, "vs_transformers_sorted": {system:
rate / transformers_sorted's rate}, "min_cosine_vs_fp32": {...}, "machine": {...}, ...}
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from minihbt.io.convert import model_dir  # noqa: E402
from minihbt.lareqa import load_lareqa  # noqa: E402
from minihbt.text_encoder import TextEncoder, cpu_has_bf16, load_encoder  # noqa: E402

SYSTEMS = ("minihbt_fp32", "minihbt_bf16", "transformers", "transformers_sorted", "transformers_sorted_bf16",
           "sentence_transformers")


def sample_sentences(n: int, seed: int = 0) -> list[str]:
    data = load_lareqa("mlqa-r")
    texts = [c.text for lang in data.langs for c in data.candidates[lang]]
    idx = np.random.default_rng(seed).choice(len(texts), size=n, replace=False)
    return [texts[i] for i in idx]


def machine() -> dict:
    """What the figures depend on: load, cores, bf16 instructions, library versions."""
    import sentence_transformers
    import transformers
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "loadavg": os.getloadavg(),
            "cpus": os.cpu_count(), "cpu_bf16": cpu_has_bf16(), "torch": torch.__version__,
            "transformers": transformers.__version__, "sentence_transformers": sentence_transformers.__version__}


def transformers_encoder(path: Path, batch_size: int, sort: bool, bf16: bool = False):
    from transformers import BertModel, PreTrainedTokenizerFast
    tok = PreTrainedTokenizerFast(tokenizer_file=str(path / "tokenizer.json"), pad_token="<pad>")
    model = BertModel.from_pretrained(path, attn_implementation="sdpa").eval()

    def encode(texts):
        texts = ["passage: " + t for t in texts]
        order = list(range(len(texts)))
        if sort:
            lengths = [len(ids) for ids in tok(texts, truncation=True, max_length=512)["input_ids"]]
            order.sort(key=lambda i: -lengths[i])
        out = np.empty((len(texts), model.config.hidden_size), dtype=np.float32)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            for s in range(0, len(order), batch_size):
                rows = order[s:s + batch_size]
                enc = tok([texts[i] for i in rows], truncation=True, max_length=512, padding=True,
                          return_tensors="pt")
                h = model(**enc).last_hidden_state.float()
                m = enc["attention_mask"][..., None].to(h.dtype)
                out[rows] = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1).numpy()
        return out

    return encode


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--chunk", type=int, default=250, help="texts per turn")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated subset of " + ",".join(SYSTEMS))
    a = p.parse_args()
    names = [s for s in a.systems.split(",") if s]
    if set(names) - set(SYSTEMS) or "minihbt_fp32" not in names:
        sys.exit(f"--systems: a subset of {','.join(SYSTEMS)} that includes minihbt_fp32")
    torch.set_num_threads(a.threads)
    texts = sample_sentences(a.n)
    path = model_dir("e5-small")
    before = machine()

    te = load_encoder(path)
    te16 = TextEncoder(te.model, te.tokenizer, te.prefixes, te.meta, dtype="bf16")  # same weights
    make = {
        "minihbt_fp32": lambda: lambda x: te.encode(x, kind="passage", batch_size=a.batch_size, progress=False),
        "minihbt_bf16": lambda: lambda x: te16.encode(x, kind="passage", batch_size=a.batch_size, progress=False),
        "transformers": lambda: transformers_encoder(path, a.batch_size, sort=False),
        "transformers_sorted": lambda: transformers_encoder(path, a.batch_size, sort=True),
        "transformers_sorted_bf16": lambda: transformers_encoder(path, a.batch_size, sort=True, bf16=True),
        "sentence_transformers": lambda: sentence_transformers_encoder(path, a.batch_size),
    }
    systems = {k: make[k]() for k in names}
    for fn in systems.values():  # warm-up: first-call allocations, lazy imports
        fn(texts[:8])
    total, outputs = dict.fromkeys(names, 0.0), {k: [] for k in names}
    for c, start in enumerate(range(0, len(texts), a.chunk)):
        chunk = texts[start:start + a.chunk]
        for name in names[c % len(names):] + names[:c % len(names)]:
            t = time.perf_counter()
            outputs[name].append(systems[name](chunk))
            total[name] += time.perf_counter() - t
        print(f"{start + len(chunk)}/{len(texts)} texts: " + ", ".join(f"{k} {v:.1f} s" for k, v in total.items()),
              file=sys.stderr)
    outputs = {k: np.concatenate(v) for k, v in outputs.items()}
    ref = outputs["minihbt_fp32"]
    diff = {k: float(np.abs(v - ref).max()) for k, v in outputs.items() if k != "minihbt_fp32" and "bf16" not in k}
    assert not diff or max(diff.values()) <= 1e-4, f"fp32 embeddings differ from minihbt's: {diff}"
    min_cos = {k: round(float((v * ref).sum(1).min()), 6) for k, v in outputs.items() if "bf16" in k}
    rate = {k: round(len(texts) / v, 2) for k, v in total.items()}
    base = rate.get("transformers_sorted")
    print(f"{'system':26s} {'texts/s':>8s} {'vs transformers_sorted':>23s}")
    for k, v in rate.items():
        print(f"{k:26s} {v:8.2f} {v / base if base else float('nan'):23.2f}")
    print(f"min cosine to minihbt fp32: {min_cos}   max abs diff (fp32): {diff}")
    result = {"name": "encode", "model": "e5-small", "n": len(texts), "threads": a.threads,
              "batch_size": a.batch_size, "chunk": a.chunk, "unit": "texts/s", "texts_per_s": rate,
              "vs_transformers_sorted": {k: round(v / base, 3) for k, v in rate.items()} if base else None,
              "min_cosine_vs_fp32": min_cos, "max_abs_diff_fp32": diff, "seconds": {k: round(v, 1) for k, v in total.items()},
              "machine": before, "loadavg_after": os.getloadavg()}
    print(json.dumps(result))


def sentence_transformers_encoder(path: Path, batch_size: int):
    from sentence_transformers import SentenceTransformer
    st = SentenceTransformer(str(path), device="cpu")
    return lambda x: st.encode(x, prompt_name="passage", batch_size=batch_size, show_progress_bar=False)


if __name__ == "__main__":
    main()
