"""An eval.py results JSON in int8 (or bf16) against the fp32 one of the same model and dataset.

LAReQA: compares what both files define over the same languages: mono mAP per language, cross
mAP per ordered pair, and (only when both pools hold the same languages) multi mAP and rank
distance. A downstream task (XNLI, TyDi QA, SIB-200, Tatoeba): its headline metric (all, seen
and unseen languages), low minus fp32 with the paired test-row 95% interval of
minihbt/downstream/paired.py (same rows, the item as the unit where the languages are parallel).
Writes the differences (low precision - fp32) as JSON.

    python tools/precision_compare.py LOW.json FP32.json --out docs/precision/NAME.json
"""
import argparse
import json
from pathlib import Path

from minihbt.downstream import paired, tasks


def downstream(lo: dict, hi: dict) -> dict:
    """The headline metric, low - fp32, with its test-row 95% interval, for all / seen / unseen languages."""
    task = lo["task"]
    a, b = tasks.HEADLINE[task]
    va, vb = tasks.row_values(task, lo), tasks.row_values(task, hi)
    seen = [l for l in va if l in lo["seen_langs"]]
    out = {"task": task, "metric": f"{a} {b}"}
    for split, langs in (("mean", list(va)), ("seen", seen), ("unseen", [l for l in va if l not in seen])):
        if langs:
            d, se = paired.difference(va, vb, langs, items=paired.TASK_ITEMS[task])
            out[split] = {"low": sum(lo[a][b]["per_lang"][l] for l in langs) / len(langs),
                          "fp32": sum(hi[a][b]["per_lang"][l] for l in langs) / len(langs),
                          "diff": d, "ci95": paired.Z95 * se}
    out["max_abs_diff_per_lang"] = max(abs(lo[a][b]["per_lang"][l] - hi[a][b]["per_lang"][l]) for l in va)
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("low")
    p.add_argument("fp32")
    p.add_argument("--out")
    a = p.parse_args()
    lo, hi = json.loads(Path(a.low).read_text()), json.loads(Path(a.fp32).read_text())
    if lo.get("model_fingerprint") and lo.get("model_fingerprint") == hi.get("model_fingerprint"):
        raise SystemExit("the two files come from one encoder: expected a low-precision and an fp32 result")
    if "task" in lo:
        return write({"low": a.low, "fp32": a.fp32, "dtype": lo.get("dtype"), **downstream(lo, hi)}, a.out)
    out = {"low": a.low, "fp32": a.fp32, "dtype": lo.get("dtype"), "langs": lo["langs"]}
    mono = {l: lo["map"]["mono"]["per_lang"][l] - hi["map"]["mono"]["per_lang"][l] for l in lo["map"]["mono"]["per_lang"]}
    cross = {k: lo["map"]["cross"]["per_pair"][k] - hi["map"]["cross"]["per_pair"][k] for k in lo["map"]["cross"]["per_pair"]}
    out["mono"] = {"mean_low": sum(lo["map"]["mono"]["per_lang"][l] for l in mono) / len(mono),
                   "mean_fp32": sum(hi["map"]["mono"]["per_lang"][l] for l in mono) / len(mono),
                   "max_abs_diff": max(abs(v) for v in mono.values()), "diff_per_lang": mono}
    out["cross"] = {"mean_low": sum(lo["map"]["cross"]["per_pair"][k] for k in cross) / len(cross),
                    "mean_fp32": sum(hi["map"]["cross"]["per_pair"][k] for k in cross) / len(cross),
                    "max_abs_diff": max(abs(v) for v in cross.values()), "diff_per_pair": cross}
    for m in ("mono", "cross"):
        out[m]["mean_diff"] = out[m]["mean_low"] - out[m]["mean_fp32"]
    if sorted(lo["langs"]) == sorted(hi["langs"]):
        out["multi"] = {"low": lo["map"]["multi"]["mean"], "fp32": hi["map"]["multi"]["mean"],
                        "diff": lo["map"]["multi"]["mean"] - hi["map"]["multi"]["mean"]}
        rl, rh = lo["rank_distance"]["mean"], hi["rank_distance"]["mean"]
        out["rank_distance"] = {"low": rl, "fp32": rh, "relative_diff": (rl - rh) / rh}
    else:
        out["multi"] = out["rank_distance"] = "not comparable: the pools hold other languages"
    write(out, a.out)


def write(out: dict, path: str | None) -> None:
    text = json.dumps(out, indent=1)
    print(text)
    if path:
        Path(path).write_text(text + "\n")


if __name__ == "__main__":
    main()
