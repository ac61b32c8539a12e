"""Cosine of low-precision embeddings to fp32 on real text: docs/precision/cosine-<model>.json.

--n MLQA-R candidate sentences (the seeded sample of bench/encode.py, "passage: " prefix) and --n
MLQA-R questions ("query: ") encoded by --model (e5-small, or a checkpoint directory) in fp32,
bf16 (autocast) and int8: minihbt's (activation scales per token, biases corrected), and the
alternatives it was measured against (activation scales per tensor; no bias correction); per
variant the mean, 1st percentile and minimum of the row-wise cosine to fp32.

    MINIHBT_MIRROR=../shared/data python tools/precision_cosine.py [--model DIR] [--n 500] [--out FILE]
"""
import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from minihbt.lareqa import load_lareqa  # noqa: E402
from minihbt.quant import quantize_model  # noqa: E402
from minihbt.text_encoder import TextEncoder, load_encoder, quantize  # noqa: E402


def stats(c: np.ndarray) -> dict:
    return {"mean": round(float(c.mean()), 6), "p1": round(float(np.percentile(c, 1)), 6),
            "min": round(float(c.min()), 6), "n": int(len(c))}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--model", default="e5-small", help="e5-small or a model / checkpoint directory")
    p.add_argument("--out", help="default: docs/precision/cosine-<model name>.json")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    data = load_lareqa("mlqa-r")
    rng = np.random.default_rng(0)
    cands = [c.text for lang in data.langs for c in data.candidates[lang]]
    quests = [q for lang in data.langs for q in data.questions[lang]]
    quests = [getattr(q, "text", q) for q in quests]
    sets = {"passage": [cands[i] for i in rng.choice(len(cands), a.n, replace=False)],
            "query": [quests[i] for i in np.random.default_rng(1).choice(len(quests), a.n, replace=False)]}
    te = load_encoder(a.model)
    variants = {"bf16": TextEncoder(te.model, te.tokenizer, te.prefixes, te.meta, dtype="bf16")}
    for name, model in (("int8_per_token", quantize(copy.deepcopy(te.model), "token")),
                        ("int8_per_tensor", quantize(copy.deepcopy(te.model), "tensor")),
                        ("int8_per_token_no_bias_correction", quantize_model(copy.deepcopy(te.model), "token"))):
        variants[name] = TextEncoder(model, te.tokenizer, te.prefixes, te.meta, dtype="int8")
    out = {"model": a.model, "model_fingerprint": te.fingerprint, "dataset": "mlqa-r", "sample": "seeded (0: candidates, 1: questions)",
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "torch": torch.__version__,
           "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cosine_vs_fp32": {}}
    for kind, texts in sets.items():
        ref = te.encode(texts, kind=kind)
        for name, enc in variants.items():
            c = (enc.encode(texts, kind=kind) * ref).sum(1)
            out["cosine_vs_fp32"].setdefault(name, {})[kind] = stats(c)
            print(kind, name, stats(c), file=sys.stderr)
    out["loadavg"] = os.getloadavg()
    name = Path(a.model).name if Path(a.model).name != "checkpoint-best" else Path(a.model).parent.name
    path = Path(a.out or Path(__file__).resolve().parents[1] / f"docs/precision/cosine-{name}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
