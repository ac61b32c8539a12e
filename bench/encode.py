"""Encoding throughput: minihbt TextEncoder.encode against transformers and sentence-transformers.

2,000 real MLQA-R candidate sentences (a seeded sample over its 7 languages), e5-small, "passage: "
prefix, batch 64, max_len 512, fp32 on CPU with --threads torch threads (2 by default, as the
project machine). The peers use the same converted directory:
  transformers            BertModel (attn_implementation="sdpa") + masked mean pooling + L2, the
                          loop of the e5 model card: batches in input order;
  transformers_sorted     the same model, batches sorted by token length as minihbt does;
  sentence_transformers   SentenceTransformer(dir).encode(prompt_name="passage"), which sorts too.
The machine is shared, so the systems take turns on slices of --chunk texts (the order of turns
rotates from slice to slice), and each one's time is the sum over the slices: load from other
processes falls on all of them alike. Each system sorts (or not) within a slice, as it would in
one call. The embeddings are checked equal (max abs difference <= 1e-4).

    MINIHBT_MIRROR=../shared/data python bench/encode.py [--n 2000] [--threads 2] [--chunk 250] [--batch-size 64]
Last line: {"name": "encode", "minihbt": texts/s, "transformers": ..., "ratio_transformers": minihbt / peer, ...}
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from minihbt.convert import model_dir  # noqa: E402
from minihbt.lareqa import load_lareqa  # noqa: E402
from minihbt.text_encoder import load_encoder  # noqa: E402


def sample_sentences(n: int, seed: int = 0) -> list[str]:
    data = load_lareqa("mlqa-r")
    texts = [c.text for lang in data.langs for c in data.candidates[lang]]
    idx = np.random.default_rng(seed).choice(len(texts), size=n, replace=False)
    return [texts[i] for i in idx]


def transformers_encoder(path: Path, batch_size: int, sort: bool):
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
        with torch.inference_mode():
            for s in range(0, len(order), batch_size):
                rows = order[s:s + batch_size]
                enc = tok([texts[i] for i in rows], truncation=True, max_length=512, padding=True,
                          return_tensors="pt")
                h = model(**enc).last_hidden_state
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
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    texts = sample_sentences(a.n)
    path = model_dir("e5-small")

    from sentence_transformers import SentenceTransformer
    te = load_encoder(path)
    st = SentenceTransformer(str(path), device="cpu")
    systems = {
        "minihbt": lambda x: te.encode(x, kind="passage", batch_size=a.batch_size, progress=False),
        "transformers": transformers_encoder(path, a.batch_size, sort=False),
        "transformers_sorted": transformers_encoder(path, a.batch_size, sort=True),
        "sentence_transformers": lambda x: st.encode(x, prompt_name="passage", batch_size=a.batch_size,
                                                     show_progress_bar=False),
    }
    for fn in systems.values():  # warm-up: first-call allocations, lazy imports
        fn(texts[:8])
    names = list(systems)
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
    diff = {k: float(np.abs(outputs[k] - outputs["minihbt"]).max()) for k in systems if k != "minihbt"}
    assert max(diff.values()) <= 1e-4, f"embeddings differ from minihbt: {diff}"
    rate = {k: round(len(texts) / v, 1) for k, v in total.items()}
    print(f"{'system':22s} {'texts/s':>8s} {'minihbt / system':>17s}")
    for k, v in rate.items():
        print(f"{k:22s} {v:8.1f} {rate['minihbt'] / v:17.2f}")
    result = {"name": "encode", "model": "e5-small", "n": len(texts), "threads": a.threads,
              "batch_size": a.batch_size, "chunk": a.chunk, "unit": "texts/s", **rate,
              **{f"ratio_{k}": round(rate["minihbt"] / rate[k], 3) for k in systems if k != "minihbt"},
              "max_abs_diff": diff}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
