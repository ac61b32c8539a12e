"""docs/PRECISION.md's generated tables: quality (low precision against fp32 on the issue's bounds, from
the comparisons tools/precision_compare.py wrote, docs/precision/<task>-<run>-<dtype>-vs-fp32.json),
reproducibility, stability and the AVX2 CPU's profile of where encoding time goes, all from
committed JSON.

One table per marker pair in PRECISION.md, `<!-- precision_table.py: NAME begins -->` ... `ends -->`,
where NAME is a key of TABLES (which dtype, and which runs under which label), "reproducibility"
(the same model's MLQA-R means from two runs, A - B, for each pair in REPRODUCIBILITY),
"stability" (tools/precision_stability.py's stability-e5-small.json) or "profile"
(bench/encode_profile.py's profile-encode-avx2.json: seconds per part of fp32 and int8 encoding,
then the speed-up and its Amdahl ceilings). In a quality table each row is one
headline number: MLQA-R's mono / cross / multi mAP means and rank distance, TyDi QA MRR@10,
SIB-200 and XNLI accuracy (with the paired test-row 95% interval the comparison carries), and
its verdict on the bound (mAP 0.003, rank distance 1% of fp32, TyDi 0.003, SIB-200 / XNLI 0.005).
tests/test_precision_docs.py recomputes every cell from the same JSON without this script.

    python tools/precision_table.py            # rewrite the tables in docs/PRECISION.md
    python tools/precision_table.py --check    # exit 1 if they differ from what the JSON gives
"""
import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC, DATA = ROOT / "docs" / "PRECISION.md", ROOT / "docs" / "precision"
# table name -> (dtype, [(run name in the file names, label in the table)])
TABLES = {
    "int8": ("int8", [("e5-small", "e5-small as released"), ("hybrid-paper-s1", "hybrid"),
                      ("hybrid-paper-s1-amx", "hybrid (retrained on the AMX CPU)"),
                      ("e5-small-avx2", "e5-small as released, 7-bit weights (AVX2-only CPU)")]),
    "bf16": ("bf16", [("e5-small", "e5-small as released"), ("hybrid-paper-s1-amx", "hybrid (retrained on the AMX CPU)")]),
}
# the reproducibility table: (what is compared, result A, result B), each an eval.py MLQA-R JSON; A - B
REPRODUCIBILITY = [
    ("fp32: the AMX CPU − the committed run (another CPU, 2026-11-25)",
     "precision/mlqa-r-e5-small-fp32-amx.json", "results/mlqa-r__zero-shot.json"),
    ("int8, one CPU (AMX): u8 inputs, oneDNN held to AVX512_CORE_VNNI − s8 inputs",
     "precision/mlqa-r-e5-small-int8-amx-vnni-cap.json", "precision/mlqa-r-e5-small-int8-amx.json"),
    ("int8: the AMX CPU − the AVX512-VNNI CPU", "precision/mlqa-r-e5-small-int8-amx.json",
     "precision/mlqa-r-e5-small-int8.json"),
    ("int8 − fp32 on the AVX512-VNNI CPU (the int8 table)", "precision/mlqa-r-e5-small-int8.json",
     "results/mlqa-r__zero-shot.json"),
    ("int8 − fp32 on the AMX CPU", "precision/mlqa-r-e5-small-int8-amx.json", "precision/mlqa-r-e5-small-fp32-amx.json"),
    ("fp32: the AVX2-only CPU − the committed run", "precision/mlqa-r-e5-small-fp32-avx2.json",
     "results/mlqa-r__zero-shot.json"),
    ("int8: the AVX2-only CPU (7-bit weights) − the AVX512-VNNI CPU (8-bit)",
     "precision/mlqa-r-e5-small-avx2-int8.json", "precision/mlqa-r-e5-small-int8.json"),
    ("hybrid, fp32: retrained and evaluated on the AMX CPU − the committed run",
     "precision/mlqa-r-hybrid-paper-s1-amx-fp32.json", "results/mlqa-r__xquad-r-hybrid-paper-s1.json"),
    ("hybrid, int8: the AMX CPU (retrained) − the AVX512-VNNI CPU", "precision/mlqa-r-hybrid-paper-s1-amx-int8.json",
     "precision/mlqa-r-hybrid-paper-s1-int8.json"),
]
MLQA = (("mono", "MLQA-R mAP mono (mean of 7)"), ("cross", "MLQA-R mAP cross (42 pairs)"), ("multi", "MLQA-R mAP multi"))
DOWNSTREAM = (("tydiqa", "TyDi QA MRR@10 (9 languages)", 0.003), ("sib-200", "SIB-200 accuracy (probe on English)", 0.005),
              ("xnli", "XNLI accuracy (probe on English)", 0.005))


def signed(x: float, digits: int, tiny: bool = False) -> str:
    """+0.0012 style; with tiny, a non-zero x that would show as 0 at `digits` shows as +6.6e-09."""
    if tiny and x == 0:
        return "0"
    shown = f"{x:+.1e}" if tiny and abs(x) < 0.5 * 10 ** -digits else f"{x:+.{digits}f}"
    return shown[0].replace("-", "−") + shown[1:]  # a minus sign in front, the exponent's hyphen kept


def verdict(diff: float, bound: float, shown: str, unit: str = "") -> tuple[str, str]:
    """(the difference cell, the bound cell): bold and 'missed by' where |diff| > bound."""
    if abs(diff) <= bound:
        return shown, f"{bound * 100:g}%: met" if unit else f"{bound}: met"
    if unit:
        return f"**{shown}**", f"1%: **missed by {(abs(diff) - bound) * 100:.2f} points**"
    return f"**{shown}**", f"{bound}: **missed by {abs(diff) - bound:.4f}**"


def rows(dtype: str, run: str, label: str) -> list[str]:
    """The table rows of one run; none where its comparisons are not committed yet."""
    out, mlqa = [], DATA / f"mlqa-r-{run}-{dtype}-vs-fp32.json"
    if not mlqa.is_file():
        return out
    c = json.loads(mlqa.read_text())
    files = f"[{dtype}](precision/mlqa-r-{run}-{dtype}.json), [diff](precision/{mlqa.name})"
    for part, task in MLQA:
        p = c[part]
        low, fp32 = (p["mean_low"], p["mean_fp32"]) if "mean_fp32" in p else (p["low"], p["fp32"])
        cell, bound = verdict(low - fp32, 0.003, signed(low - fp32, 4))
        out.append(f"| {label} | {task} | {fp32:.4f} | {low:.4f} | {cell} | {bound} | {files} |")
        files = "same"
    r = c["rank_distance"]
    cell, bound = verdict(r["relative_diff"], 0.01, signed(r["relative_diff"] * 100, 2) + "%", unit="%")
    out.append(f"| {label} | MLQA-R rank distance | {r['fp32']:.1f} | {r['low']:.1f} | {cell} | {bound} | same |")
    for task, name, limit in DOWNSTREAM:
        path = DATA / f"{task}-{run}-{dtype}-vs-fp32.json"
        if not path.is_file():
            continue
        m = json.loads(path.read_text())["mean"]
        cell, bound = verdict(m["low"] - m["fp32"], limit, f"{signed(m['low'] - m['fp32'], 4)} ±{m['ci95']:.4f}")
        out.append(f"| {label} | {name} | {m['fp32']:.4f} | {m['low']:.4f} | {cell} | {bound} | "
                   f"[{dtype}](precision/{task}-{run}-{dtype}.json), [diff](precision/{path.name}) |")
    return out


def table(name: str) -> str:
    dtype, runs = TABLES[name]
    head = [f"| model | task | fp32 | {dtype} | {dtype} − fp32 | bound | files |", "|---|---|---|---|---|---|---|"]
    return "\n".join(head + [row for run, label in runs for row in rows(dtype, run, label)])


def lareqa_means(result: dict) -> tuple[float, float, float, float]:
    """mono (mean over languages), cross (mean over ordered pairs), multi mAP and mean rank distance."""
    m = result["map"]
    mono, cross = m["mono"]["per_lang"].values(), m["cross"]["per_pair"].values()
    return sum(mono) / len(mono), sum(cross) / len(cross), m["multi"]["mean"], result["rank_distance"]["mean"]


def reproducibility() -> str:
    out = ["| compared (MLQA-R, e5-small as released) | mAP mono | mAP cross | mAP multi | rank distance | files |",
           "|---|---|---|---|---|---|"]
    for label, a, b in REPRODUCIBILITY:
        if not all((ROOT / "docs" / f).is_file() for f in (a, b)):
            continue  # a run not done (or not committed) yet: its row comes when it is
        ra, rb = (json.loads((ROOT / "docs" / f).read_text()) for f in (a, b))
        (*maps_a, rd_a), (*maps_b, rd_b) = lareqa_means(ra), lareqa_means(rb)
        same = ra["map"] == rb["map"] and ra["rank_distance"]["mean"] == rb["rank_distance"]["mean"]
        cells = ["0 (identical)"] * 4 if same else [signed(x - y, 4, tiny=True) for x, y in zip(maps_a, maps_b)] + [
            signed((rd_a - rd_b) / rd_b * 100, 2, tiny=True) + "%"]
        out.append(f"| {label} | {' | '.join(cells)} | [A]({a}), [B]({b}) |")
    return "\n".join(out)


def stability() -> str:
    """tools/precision_stability.py's measurement: 1 - cos between two encodings, per dtype."""
    path = DATA / "stability-e5-small.json"
    r = json.loads(path.read_text()) if path.is_file() else {"dtypes": {}}
    out = ["| dtype | 1 − cos to fp32: mean | batch 64 vs 7: 1 − cos mean / max | one ulp on the word embeddings: "
           "1 − cos mean / max | largest change of a coordinate: batch / ulp |", "|---|---|---|---|---|"]
    for dtype, d in r["dtypes"].items():
        runs = ("batch_64_vs_7", "one_ulp")
        pair = [f"{d[k]['one_minus_cos_mean']:.1e} / {d[k]['one_minus_cos_max']:.1e}" for k in runs]
        to_fp32 = "0 (itself)" if dtype == "fp32" else f"{d['to_fp32']['one_minus_cos_mean']:.1e}"
        coord = " / ".join(f"{d[k]['max_abs']:.1e}" for k in runs)
        out.append(f"| {dtype} | {to_fp32} | {pair[0]} | {pair[1]} | {coord} |")
    return "\n".join(out)


PROFILE = (("linear_gemm", "Linear: the GEMM (fp32: `addmm` with its bias; int8: the integer product and s_w)"),
           ("linear_rest", "Linear: the rest (int8: quantising each token, s_x and the bias)"),
           ("attention", "attention (SDPA)"), ("gelu", "GELU"), ("layer_norm", "LayerNorm"),
           ("residual_add", "residual add"), ("other", "other (embeddings, pooling, L2 norm)"))


def profile() -> str:
    """bench/encode_profile.py's split of fp32 and int8 encoding, then the speed-up and its ceilings."""
    path = DATA / "profile-encode-avx2.json"
    if not path.is_file():
        return ""
    r = json.loads(path.read_text())
    f, q = r["dtypes"]["fp32"]["profile_s"], r["dtypes"]["int8"]["profile_s"]
    tf, tq = sum(f.values()), sum(q.values())
    out = ["| part | fp32 (s) | fp32 (%) | int8 (s) | int8 (%) |", "|---|---|---|---|---|"]
    out += [f"| {label} | {f[k]:.2f} | {100 * f[k] / tf:.1f} | {q[k]:.2f} | {100 * q[k] / tq:.1f} |" for k, label in PROFILE]
    out.append(f"| total (profiled) | {tf:.2f} | 100 | {tq:.2f} | 100 |")
    c = r["ceiling"]  # bench/encode_profile.py's Amdahl figures (tests/test_precision_docs.py redoes them)
    ceilings = [c[k] for k in ("speedup_wall", "gemm_speedup", "ceiling_free_quantisation", "ceiling_gemm_2x",
                               "ceiling_gemm_free")]
    out += ["", "**The ceiling on the AVX2-only CPU.** Speed-ups over fp32 (x), from the parts above:", "",
            "| speed-up | measured (wall, no profiler) | the GEMM alone | int8, quantisation free | "
            "int8, GEMM at 2x fp32's, quantisation free | Linears free |", "|---|---|---|---|---|---|",
            "| int8 / fp32 | " + " | ".join(f"{c:.2f}" for c in ceilings) + " |"]
    return "\n".join(out)


def rebuilt(text: str) -> str:
    for name in [*TABLES, "reproducibility", "stability", "profile"]:
        begin, end = f"<!-- precision_table.py: {name} begins -->", f"<!-- precision_table.py: {name} ends -->"
        if begin not in text or end not in text:
            sys.exit(f"{DOC}: no '{begin}' ... '{end}' markers: where should the {name} table go?")
        before, rest = text.split(begin, 1)
        body = {"reproducibility": reproducibility, "stability": stability, "profile": profile}.get(
            name, lambda: table(name))()
        text = before + begin + "\n" + body + "\n" + end + rest.split(end, 1)[1]
    return text


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="only compare; exit 1 where the tables differ")
    a = p.parse_args()
    old = DOC.read_text()
    new = rebuilt(old)
    if a.check:
        sys.exit(0 if new == old else f"{DOC}: the quality tables differ from the JSON: run tools/precision_table.py")
    if new != old:
        tmp = DOC.with_suffix(".md.tmp")
        tmp.write_text(new)
        tmp.replace(DOC)
    print(f"{DOC}: {'rewritten' if new != old else 'unchanged'}")


if __name__ == "__main__":
    main()
