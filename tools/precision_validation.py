"""int8 against fp32 on the held-out validation split (not a test set): where int8 choices are made.

The 10% of XQuAD-R's training groups that train.py holds out (minihbt/validation.py: the same
split for every run, the paper's nine training languages), in its multilingual setting: each
held-out question, in each language, ranks the pooled sentences of the held-out paragraphs.
For fp32 and each int8 variant (minihbt's, biases corrected; not corrected), per query language
the mean AP and the mean rank distance, their macro means, and int8 minus fp32. Neither model saw
these groups in training (the fine-tuned one held them out too). The files
docs/precision/validation-*-smoothing.json come from this script at commit 51350f0, whose int8
also smoothed each Linear's input channels (SmoothQuant), against "int8_not_smoothed" (today's).

    MINIHBT_MIRROR=../shared/data python tools/precision_validation.py [--model DIR] [--out FILE]
"""
import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from minihbt import metrics  # noqa: E402
from minihbt.jsonl_groups import training_groups  # noqa: E402
from minihbt.quant import quantize_model  # noqa: E402
from minihbt.text_encoder import TextEncoder, load_encoder, quantize  # noqa: E402
from minihbt.validation import hold_out  # noqa: E402

LANGS = "ar de en es hi ru th tr zh".split()


def scores(enc, vs) -> dict:
    """{lang: (mean AP, mean rank distance)} and their macro means, on ValidationSet vs."""
    out = {x: {"map": float(np.mean(metrics.average_precision(r))), "rank_distance": float(np.nanmean(metrics.rank_distance(r)))}
           for x, r in vs.ranks(enc).items()}
    out["mean"] = {k: float(np.mean([out[x][k] for x in vs.langs])) for k in ("map", "rank_distance")}
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="e5-small", help="e5-small or a model / checkpoint directory")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", help="default: docs/precision/validation-<model name>.json")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    groups, langs, _ = training_groups(["xquad-r"], LANGS)
    vs = hold_out(groups, langs, 0.1)[1][0]
    te = load_encoder(a.model)

    variants = {"fp32": te}
    for name, model in (("int8", quantize(copy.deepcopy(te.model))),
                        ("int8_no_bias_correction", quantize_model(copy.deepcopy(te.model), "token"))):
        variants[name] = TextEncoder(model, te.tokenizer, te.prefixes, te.meta, dtype="int8")
    res = {name: scores(enc, vs) for name, enc in variants.items()}
    ref = res["fp32"]["mean"]
    diff = {name: {"map": r["mean"]["map"] - ref["map"],
                   "rank_distance_relative": r["mean"]["rank_distance"] / ref["rank_distance"] - 1}
            for name, r in res.items() if name != "fp32"}
    out = {"model": a.model, "model_fingerprint": te.fingerprint, "split": "xquad-r, 10% of the groups held out (validation.py)",
           "queries": {x: len(vs.queries[x]) for x in vs.langs}, "pool": len(vs.pool),
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "torch": torch.__version__,
           "cpu_capability": torch.backends.cpu.get_cpu_capability(), "scores": res, "int8_minus_fp32": diff}
    name = Path(a.model).name if Path(a.model).name != "checkpoint-best" else Path(a.model).parent.name
    path = Path(a.out or Path(__file__).resolve().parents[1] / f"docs/precision/validation-{name}.json")
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({"model": a.model, "fp32": ref, "int8_minus_fp32": diff}))


if __name__ == "__main__":
    main()
