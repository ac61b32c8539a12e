"""docs/PRECISION.md's quality, speed and profile tables against the committed JSON they cite,
recomputed here without minihbt: every fp32 / int8 / difference / interval cell, every verdict on
the bounds, the bench tables' texts/s and ratios, and the profile's parts and ceilings."""
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "PRECISION.md"
BOUNDS = {"mAP": 0.003, "rank distance": 0.01, "TyDi": 0.003, "SIB-200": 0.005, "XNLI": 0.005}


def table_after(heading: str) -> list[list[str]]:
    """The rows (cells stripped) of the first table after `heading`."""
    lines = DOC.read_text().split(heading, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| "))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows[2:]  # header and rule left out


def num(cell: str) -> float:
    return float(cell.replace("*", "").replace("−", "-").replace("%", "").strip().split(" ")[0].split("±")[0])


@pytest.mark.parametrize("heading, count", [("## Quality on the evaluations", 28), ("**bf16 on the evaluations.**", 14)])
def test_quality_table_is_the_committed_comparisons(heading, count):
    """The int8 and the bf16 table: every cell and verdict from the -vs-fp32 JSON its row links; every
    row there (7 per model: a comparison left uncommitted would drop its rows)."""
    rows = table_after(heading)
    assert len(rows) == count
    diff_file = None
    for model, task, fp32, low, diff, bound, files in rows:
        link = re.search(r"\[diff\]\((precision/[^)]+)\)", files)
        diff_file = link.group(1) if link else diff_file
        assert files == "same" or link, files
        d = json.loads((ROOT / "docs" / diff_file).read_text())
        if task.startswith("MLQA-R mAP"):
            part = d[task.split()[2]]
            want = (part["mean_fp32"], part["mean_low"]) if "mean_fp32" in part else (part["fp32"], part["low"])
            delta, limit = want[1] - want[0], BOUNDS["mAP"]
        elif task.startswith("MLQA-R rank distance"):
            want = (d["rank_distance"]["fp32"], d["rank_distance"]["low"])
            delta, limit = d["rank_distance"]["relative_diff"], BOUNDS["rank distance"]
            shown = diff.replace("*", "").replace("−", "-")
            decimals = len(shown.split(".")[1].rstrip("%"))
            assert shown == f"{delta * 100:+.{decimals}f}%", (task, diff)  # as many digits as shown
            assert f"{want[0]:.1f}" == fp32 and f"{want[1]:.1f}" == low, (task, fp32, low)
        else:
            m = d["mean"]
            want, delta = (m["fp32"], m["low"]), m["low"] - m["fp32"]
            limit = next(v for k, v in BOUNDS.items() if task.startswith(k))
            assert f"±{m['ci95']:.4f}" in diff.replace(" ", ""), (task, diff, m["ci95"])
        if not task.startswith("MLQA-R rank distance"):
            assert f"{want[0]:.4f}" == fp32 and f"{want[1]:.4f}" == low and f"{delta:+.4f}" == diff.replace(
                "*", "").replace("−", "-").split(" ")[0], (model, task)
        met = abs(delta) <= limit
        assert bound.endswith("met") == met and ("missed by" in bound) == (not met), (model, task, bound)
        if not met:  # the shortfall, in the unit of the bound
            over, tol = ((abs(delta) - limit) * 100, 0.06) if "%" in bound else (abs(delta) - limit, 6e-5)
            assert abs(num(bound.split("missed by")[1]) - over) < tol, (task, bound)


SPEED_HEADER = "| system | texts/s | vs minihbt fp32 | warm-up (s) | cosine to fp32: mean / 1st pct / min |"


def test_speed_tables_are_the_committed_bench_runs():
    """Every table of that form under "## Speed" (one per CPU kind) against the bench JSON that the
    text above it links last: a row for each system the run measured, and for each its texts/s, the
    ratio to minihbt fp32, the warm-up and the mean cosine."""
    section = DOC.read_text().split("## Speed", 1)[1].split("\n## ", 1)[0]
    names = {"minihbt fp32": "minihbt_fp32", "minihbt int8 (": "minihbt_int8",
             "minihbt int8, `--compile`": "minihbt_int8_inductor", "minihbt bf16 (": "minihbt_bf16",
             "minihbt bf16, `--compile`": "minihbt_bf16_inductor", "transformers sdpa": "transformers_sorted",
             "ONNX Runtime fp32": "onnxruntime_fp32", "ONNX Runtime int8": "onnxruntime_int8",
             "OpenVINO fp32": "openvino_fp32", "OpenVINO, ONNX": "openvino_int8"}
    blocks = section.split(SPEED_HEADER)
    assert len(blocks) >= 4, "the AVX512-VNNI, the AMX and the AVX2 tables"
    for before, table in zip(blocks, blocks[1:]):
        source = re.findall(r"\[precision/(bench-encode-[^)]+\.json)\]", before)[-1]
        bench = json.loads((ROOT / "docs" / "precision" / source).read_text())
        lines = table.strip().split("\n\n", 1)[0].splitlines()[1:]  # the table's own rows, rule left out
        rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
        keys = [next(v for k, v in names.items() if row[0].replace("*", "").startswith(k)) for row in rows]
        assert sorted(keys) == sorted(bench["texts_per_s"]), source  # every system measured, once
        for key, (system, rate, ratio, warm, cos) in zip(keys, rows):
            assert num(rate) == pytest.approx(bench["texts_per_s"][key], abs=0.005), (source, system)
            got = bench["texts_per_s"][key] / bench["texts_per_s"]["minihbt_fp32"]
            assert num(ratio) == pytest.approx(got, abs=0.005) and num(warm) == bench["warmup_s"][key], (source, system)
            if key in bench["cosine_vs_fp32"]:
                assert num(cos) == pytest.approx(bench["cosine_vs_fp32"][key]["mean"], abs=5e-6), (source, system)


def test_smoothing_table_is_the_committed_measurements():
    """The not-adopted smoothing against minihbt's int8: cosine, validation split and MLQA-R test
    cells from the JSON each row's sources name."""
    rows = table_after("**Smoothing: tried, not adopted.**")
    assert len(rows) == 4
    P = ROOT / "docs" / "precision"
    for model, variant, cos, val_map, val_rd, test in rows:
        name = "e5-small" if model.startswith("e5-small") else "hybrid-paper-s1"
        smoothed = variant == "smoothed too"
        c = json.loads((P / f"cosine-{name}-smoothed.json").read_text())["cosine_vs_fp32"]
        c = c["int8_per_token" if smoothed else "int8_per_token_not_smoothed"]
        assert cos == f"{c['passage']['mean']:.5f} / {c['query']['mean']:.5f}", (model, variant, cos)
        v = json.loads((P / f"validation-{name}-smoothing.json").read_text())
        s, ref = v["scores"]["int8" if smoothed else "int8_not_smoothed"]["mean"], v["scores"]["fp32"]["mean"]
        assert num(val_map) == pytest.approx(s["map"] - ref["map"], abs=5e-5), (model, variant, val_map)
        assert num(val_rd) == pytest.approx((s["rank_distance"] / ref["rank_distance"] - 1) * 100, abs=0.05), val_rd
        t = json.loads((P / f"mlqa-r-{name}-int8{'-smoothed' if smoothed else ''}-vs-fp32.json").read_text())
        maps, rd = test.split(", ")
        for cell, part in zip(maps.split(" / "), ("mono", "cross", "multi")):
            p = t[part]
            want = p["mean_low"] - p["mean_fp32"] if "mean_fp32" in p else p["low"] - p["fp32"]
            assert num(cell) == pytest.approx(want, abs=5e-5), (model, variant, part, cell)
        assert num(rd) == pytest.approx(t["rank_distance"]["relative_diff"] * 100, abs=0.005), (model, variant, rd)


def test_quality_tables_are_what_the_generator_writes():
    """tools/precision_table.py --check: the tables between its markers are its output of the JSON."""
    import subprocess
    import sys
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "precision_table.py"), "--check"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_reproducibility_table_is_the_committed_runs():
    """Each row: A - B of two committed MLQA-R results, mono (mean of languages), cross (mean of
    pairs), multi mAP and rank distance relative to B; "0 (identical)" only where they are equal."""
    rows = table_after("**int8 reproduces only to within its own rounding noise.**")
    assert len(rows) == 9
    for label, mono, cross, multi, rd, files in rows:
        a, b = (json.loads((ROOT / "docs" / f).read_text()) for f in re.findall(r"\]\(([^)]+)\)", files))
        if mono == "0 (identical)":
            assert a["map"] == b["map"] and a["rank_distance"]["mean"] == b["rank_distance"]["mean"], label
            continue
        for cell, part, key in ((mono, "mono", "per_lang"), (cross, "cross", "per_pair")):
            va, vb = list(a["map"][part][key].values()), list(b["map"][part][key].values())
            assert num(cell) == pytest.approx(sum(va) / len(va) - sum(vb) / len(vb), abs=5e-5), (label, part)
        assert num(multi) == pytest.approx(a["map"]["multi"]["mean"] - b["map"]["multi"]["mean"], abs=5e-5), label
        want = (a["rank_distance"]["mean"] / b["rank_distance"]["mean"] - 1) * 100
        assert num(rd) == pytest.approx(want, abs=0.005), label


def test_stability_table_is_the_committed_measurement():
    """tools/precision_stability.py's JSON, each dtype's row: 1 - cos to fp32, batch 64 vs 7, one ulp."""
    rows = table_after("(precision/stability-e5-small.json)")
    data = json.loads((ROOT / "docs" / "precision" / "stability-e5-small.json").read_text())["dtypes"]
    assert [r[0] for r in rows] == list(data) and "int8" in data
    for dtype, to_fp32, batch, ulp, coord in rows:
        d = data[dtype]
        for cell, key in zip(coord.split(" / "), ("batch_64_vs_7", "one_ulp")):
            assert float(cell) == pytest.approx(d[key]["max_abs"], rel=0.05), (dtype, key)
        if dtype != "fp32":
            assert float(to_fp32) == pytest.approx(d["to_fp32"]["one_minus_cos_mean"], rel=0.05), dtype
        for cell, key in ((batch, "batch_64_vs_7"), (ulp, "one_ulp")):
            mean, worst = (float(x) for x in cell.split(" / "))
            assert mean == pytest.approx(d[key]["one_minus_cos_mean"], rel=0.05, abs=1e-9), (dtype, key)
            assert worst == pytest.approx(d[key]["one_minus_cos_max"], rel=0.05, abs=1e-9), (dtype, key)


PARTS = {"Linear: the GEMM": "linear_gemm", "Linear: the rest": "linear_rest", "attention": "attention",
         "GELU": "gelu", "LayerNorm": "layer_norm", "residual add": "residual_add", "other": "other"}


def test_profile_tables_are_the_committed_measurement():
    """bench/encode_profile.py's JSON: each part's seconds and share of the profiled total per dtype,
    then the measured speed-up and the ceilings, recomputed from the parts (Amdahl: the fp32 time with
    its Linears replaced by int8's GEMM, by half their time, by nothing)."""
    heading = "**Where the time goes on the AVX2-only CPU.**"
    source = re.search(r"\[precision/(profile-encode-[^)]+\.json)\]", DOC.read_text().split(heading, 1)[1]).group(1)
    data = json.loads((ROOT / "docs" / "precision" / source).read_text())["dtypes"]
    rows = table_after(heading)
    assert [next((k for k in PARTS if r[0].startswith(k)), r[0]) for r in rows] == [*PARTS, "total (profiled)"]
    for label, fp32_s, fp32_share, int8_s, int8_share in rows:
        if label.replace("*", "").startswith("total"):
            want = {d: sum(data[d]["profile_s"].values()) for d in ("fp32", "int8")}
            assert num(fp32_s) == pytest.approx(want["fp32"], abs=0.005) and num(int8_s) == pytest.approx(want["int8"], abs=0.005)
            continue
        key = next(v for k, v in PARTS.items() if label.startswith(k))
        for dtype, s, share in (("fp32", fp32_s, fp32_share), ("int8", int8_s, int8_share)):
            parts = data[dtype]["profile_s"]
            assert num(s) == pytest.approx(parts[key], abs=0.005), (label, dtype)
            assert num(share) == pytest.approx(100 * parts[key] / sum(parts.values()), abs=0.05), (label, dtype)
    f, q = data["fp32"]["profile_s"], data["int8"]["profile_s"]
    t, linear = sum(f.values()), f["linear_gemm"] + f["linear_rest"]
    (speed_up, measured, gemm, free_quant, gemm_2x, free_linears), = table_after("**The ceiling on the AVX2-only CPU.**")
    assert speed_up == "int8 / fp32"
    assert num(measured) == pytest.approx(data["fp32"]["wall_s"] / data["int8"]["wall_s"], abs=0.005)
    for cell, want in ((gemm, linear / q["linear_gemm"]), (free_quant, t / (t - linear + q["linear_gemm"])),
                       (gemm_2x, t / (t - linear + linear / 2)), (free_linears, t / (t - linear))):
        assert num(cell) == pytest.approx(want, abs=0.005), (cell, want)
