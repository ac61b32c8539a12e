"""minihbt/experiments/downstream_report.py (experiments/reproduce_downstream.py --report): docs/DOWNSTREAM.md holds exactly the tables built from the committed
JSON, and those tables' numbers are recomputed here from the JSON's per-language values alone."""
import json
import math
import re
import statistics
import subprocess

import numpy as np
import pytest

from minihbt.experiments import downstream_report, downstream_runs, recipes
from minihbt.io.files import UserError

LANGS = {"xnli": ["en", "sw"], "tydiqa": ["ar", "bn"], "sib-200": ["en", "vi"], "tatoeba": ["de", "el"]}
SEEN = ["ar", "de", "en"]
# A result's model name, read here without reproduce_downstream: "<train>-<sampler>[-<recipe>]-s<seed>"
NAME = re.compile(r"(?P<train>[a-z]+-r)-(?P<sampler>xx|xy|hybrid)(?:-(?P<recipe>[a-z]+))?-s(?P<seed>\d+)")


def file_name(task: str, train: str, sampler: str, seed: int) -> str:
    """The result file of a row's "(train)" part, "xquad-r" (old recipe) or "xquad-r, paper"."""
    data, _, recipe = train.partition(", ")
    return f"{task}__{data}-{sampler}" + (f"-{recipe}" if recipe else "") + f"-s{seed}"


def macro(per_lang: dict, seen: list[str], which: str):
    """Mean of per_lang over all / seen / unseen languages, from the per-language values only."""
    keep = [v for l, v in per_lang.items() if which == "mean" or (l in seen) == (which == "seen")]
    return sum(keep) / len(keep) if keep else None


def cell(values: list) -> str:
    """The table's cell format: mean ± sample sd over seeds, 3 decimals."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    m = sum(values) / len(values)
    return f"{m:.3f}" + (f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else "")


def summary_rows(text: str) -> dict[str, list[str]]:
    """{row name: cells} of the first table (the summary) in `text`."""
    lines = text.split("### Summary", 1)[1].split("###", 1)[0].splitlines()
    rows = [l for l in lines if l.startswith("| ") and not l.startswith("| model")]
    return {r.strip("|").split("|")[0].strip(): [c.strip() for c in r.strip("|").split("|")[1:]] for r in rows}


def check_summary_against_json(text: str, results_dir) -> int:
    """Recompute every summary cell from the JSON files' per_lang values; return the cells checked."""
    groups: dict[str, dict[str, list[dict]]] = {}
    for path in sorted(results_dir.glob("*.json")):
        task, _, name = path.stem.partition("__")
        m = NAME.fullmatch(name)
        row = "zero-shot" if m is None else (f"{recipes.LABELS[m['sampler']]} ({m['train']}"
                                             + (f", {m['recipe']}" if m["recipe"] else "") + ")")
        groups.setdefault(row, {}).setdefault(task, []).append(json.loads(path.read_text()))
    rows, checked = summary_rows(text), 0
    assert set(rows) == set(groups)
    for row, tasks in groups.items():
        cells = rows[row][1:]  # after the seeds column
        for (title, task, (a, b)), got in zip(downstream_report.COLUMNS, cells):
            runs = tasks.get(task, [])
            want = cell([macro(r[a][b]["per_lang"], r["seen_langs"], "mean") for r in runs])
            assert got == want, (row, title)
            checked += 1
    return checked


def fake_result(task: str, seed: int, offset: float) -> dict:
    def s(base: float) -> dict:
        per = {l: round(base + offset + 0.01 * i + 0.003 * seed, 6) for i, l in enumerate(LANGS[task])}
        return {"mean": macro(per, SEEN, "mean"), "seen": macro(per, SEEN, "seen"),
                "unseen": macro(per, SEEN, "unseen"), "per_lang": per}

    out = {"task": task, "seen_langs": SEEN}
    if task == "xnli":
        out |= {"accuracy": {"test": s(0.5), "dev": s(0.4)}, "pair_ap": {"test": s(0.7), "dev": s(0.6)}}
    elif task == "tydiqa":
        out |= {"mono": {m: s(0.6) for m in ("mrr@10", "r@1", "r@5", "ndcg@10")},
                "pooled": {"mrr@10": s(0.5), "other_lang_top1": s(0.1)}}
    elif task == "sib-200":
        out |= {"accuracy": {"cross": s(0.7), "within": s(0.75)}}
    else:
        out |= {"accuracy": {k: s(0.8) for k in ("to_eng", "from_eng", "mean")}}
    return out | {"rows": fake_rows(out, task, seed, offset)}


N_ROWS = 1000


def fake_rows(out: dict, task: str, seed: int, offset: float) -> dict:
    """Per-row values whose means are the headline per_lang values (3 decimals: k of 1000 rows hit),
    the hits at seeded random rows, so two models agree on some rows and not on others."""
    a, b = {"xnli": ("accuracy", "test"), "tydiqa": ("mono", "mrr@10"), "sib-200": ("accuracy", "cross"),
            "tatoeba": ("accuracy", "mean")}[task]
    rows = {}
    for i, (lang, v) in enumerate(out[a][b]["per_lang"].items()):
        hit = np.zeros(N_ROWS, dtype=bool)
        hit[np.random.default_rng([i, seed, int(offset * 100)]).permutation(N_ROWS)[:round(v * N_ROWS)]] = True
        rows[lang] = hit
    if task == "tydiqa":  # rank 1 (RR 1) or 20 (RR@10 0)
        return {"rank": {l: " ".join("1" if h else "20" for h in hit) for l, hit in rows.items()}}
    digits = {l: "".join("1" if h else "0" for h in hit) for l, hit in rows.items()}
    return {"to_eng": digits, "from_eng": digits} if task == "tatoeba" else {"correct": digits}


def paired_rows(text: str) -> dict[str, list[str]]:
    lines = text.split("### Paired differences", 1)[1].split("###", 1)[0].splitlines()
    rows = [l for l in lines if l.startswith("| ") and not l.startswith("| models")]
    return {r.strip("|").split("|")[0].strip(): [c.strip() for c in r.strip("|").split("|")[1:]] for r in rows}


def row_values(result: dict, task: str) -> dict[str, np.ndarray]:
    """Each row's headline value, decoded here without minihbt."""
    r = result["rows"]
    if task == "tydiqa":
        return {l: np.array([1 / int(x) if int(x) <= 10 else 0.0 for x in s.split()]) for l, s in r["rank"].items()}
    if task == "tatoeba":
        return {l: np.array([(int(x) + int(y)) / 2 for x, y in zip(s, r["from_eng"][l])]) for l, s in r["to_eng"].items()}
    return {l: np.array([float(x) for x in s]) for l, s in r["correct"].items()}


PARALLEL = ("xnli", "sib-200")  # test sets whose rows are translations of one another, row for row


def seed_differences(files: dict, task: str, train: str, a: str, b: str, split: str) -> list[tuple[float, float]]:
    """[(D, SE) per seed] of model a minus model b on `task` over the split's languages, from the rows:
    D the mean over languages of the mean row difference; SE, where the languages' rows are
    parallel (XNLI, SIB-200), the sd over items of the language-mean difference / sqrt(n), else
    sqrt(sum of the languages' variances of the mean) / L; seeds matched by file name."""
    ds = []
    for seed in range(10):
        ra = files.get(file_name(task, train, a, seed))
        rb = files.get(f"{task}__zero-shot" if b == "zero-shot" else file_name(task, train, b, seed))
        if ra is None or rb is None:
            continue
        va, vb = row_values(ra, task), row_values(rb, task)
        langs = [l for l in va if split == "mean" or (l in ra["seen_langs"]) == (split == "seen")]
        if not langs:
            continue
        d = [np.mean(va[l] - vb[l]) for l in langs]
        if task in PARALLEL:
            m = np.mean([va[l] - vb[l] for l in langs], axis=0)  # (n,) per item
            se = np.std(m, ddof=1) / math.sqrt(len(m))
        else:
            se = math.sqrt(sum(np.var(va[l] - vb[l], ddof=1) / len(va[l]) for l in langs)) / len(langs)
        ds.append((sum(d) / len(langs), se))
    return ds


def check_paired_against_json(text: str, results_dir) -> int:
    """Recompute every paired cell: D = mean over languages of the mean row difference; SE, where
    the languages' rows are parallel (XNLI, SIB-200: row i the same item in every language), the sd
    over items of the language-mean difference / sqrt(n), else (TyDi QA, Tatoeba) sqrt(sum of the
    languages' variances of the mean) / L; seeds matched by file name."""
    files = {p.stem: json.loads(p.read_text()) for p in results_dir.glob("*.json")}
    checked = 0
    for name, cells in paired_rows(text).items():
        pair, train = name.rsplit(" (", 1)
        train = train.rstrip(")")
        a, b = ({v: k for k, v in recipes.LABELS.items()}[x.strip()] for x in pair.split("−"))
        tasks = ["xnli", "tydiqa", "sib-200", "tatoeba"]
        for t_i, task in enumerate(tasks):
            for s_i, split in enumerate(("mean", "seen", "unseen")):
                ds = seed_differences(files, task, train, a, b, split)
                got = cells[1 + 3 * t_i + s_i]
                if not ds:
                    assert got == "-", (name, task, split)
                    continue
                d, se = statistics.mean(x for x, _ in ds), statistics.mean(s for _, s in ds)
                want = f"{d:+.3f} ±{1.96 * se:.3f}"
                want = f"**{want}**" if abs(d) > 1.96 * se else want
                want += f", sd {statistics.stdev(x for x, _ in ds):.3f}" if len(ds) > 1 else ""
                assert got == want, (name, task, split)
                checked += 1
    return checked


def test_tables_recomputed_from_fake_json(tmp_path, monkeypatch):
    """Always runs: two seeds of three models, one of them missing a task."""
    monkeypatch.setattr(recipes, "DOWNSTREAM", tmp_path)
    for task in downstream_runs.TASKS:
        (tmp_path / f"{task}__zero-shot.json").write_text(json.dumps(fake_result(task, 0, 0.0)))
        for seed in (0, 1):
            for sampler, off in (("xx", 0.02), ("hybrid", 0.05)):
                if sampler == "xx" and task == "tatoeba":
                    continue
                (tmp_path / f"{task}__xquad-r-{sampler}-s{seed}.json").write_text(
                    json.dumps(fake_result(task, seed, off)))
    text = downstream_report.tables(downstream_report.load_results())
    assert check_summary_against_json(text, tmp_path) == 3 * len(downstream_report.COLUMNS)
    # hybrid - X-X, hybrid - zero-shot, X-X - zero-shot (no X-Y here); X-X has no Tatoeba (3 cells "-")
    assert list(paired_rows(text)) == ["hybrid − X-X (xquad-r)", "hybrid − zero-shot (xquad-r)",
                                       "X-X − zero-shot (xquad-r)"]
    assert check_paired_against_json(text, tmp_path) == 3 * 12 - 2 * 3
    assert "**" in text.split("### Paired", 1)[1] and ", sd " in text  # some differences stand out
    rows = summary_rows(text)
    assert list(rows) == ["zero-shot", "X-X (xquad-r)", "hybrid (xquad-r)"]
    assert rows["hybrid (xquad-r)"][0] == "2" and rows["X-X (xquad-r)"][-1] == "-"
    assert "sw" in text.split("Unseen:", 1)[1].split(";")[0]  # xnli's unseen language, from the JSON


def test_recipes_are_rows_of_their_own_and_paired_within_their_recipe(tmp_path, monkeypatch):
    monkeypatch.setattr(recipes, "DOWNSTREAM", tmp_path)
    for task in downstream_runs.TASKS:
        (tmp_path / f"{task}__zero-shot.json").write_text(json.dumps(fake_result(task, 0, 0.0)))
        for name, off in (("xquad-r-hybrid-s0", 0.05), ("xquad-r-xy-s0", 0.03),
                          ("xquad-r-hybrid-paper-s0", 0.08), ("xquad-r-xy-paper-s0", 0.01)):
            (tmp_path / f"{task}__{name}.json").write_text(json.dumps(fake_result(task, 0, off)))
    text = downstream_report.tables(downstream_report.load_results())
    assert list(summary_rows(text)) == ["zero-shot", "X-Y (xquad-r)", "hybrid (xquad-r)", "X-Y (xquad-r, paper)",
                                        "hybrid (xquad-r, paper)"]
    assert check_summary_against_json(text, tmp_path) == 5 * len(downstream_report.COLUMNS)
    assert list(paired_rows(text))[:2] == ["hybrid − X-Y (xquad-r)", "hybrid − zero-shot (xquad-r)"]
    assert "hybrid − X-Y (xquad-r, paper)" in paired_rows(text)
    # hybrid − X-Y differs between the recipes (+0.02 old, +0.07 paper): the pairs do not mix them
    assert paired_rows(text)["hybrid − X-Y (xquad-r, paper)"][1] != paired_rows(text)["hybrid − X-Y (xquad-r)"][1]
    assert check_paired_against_json(text, tmp_path) == 6 * 12


def test_mean_sd_and_cell():
    m, sd = recipes.mean_sd([0.5, 0.7])
    assert math.isclose(m, 0.6) and math.isclose(sd, math.sqrt(0.02))
    assert downstream_report.fmt([0.5, 0.7]) == "0.600 ± 0.141" == cell([0.5, 0.7]) and downstream_report.fmt([None]) == "-"


def test_committed_downstream_md_equals_report():
    files = sorted(recipes.DOWNSTREAM.glob("*.json")) if recipes.DOWNSTREAM.is_dir() else []
    if not files:
        pytest.skip(f"no results in {recipes.DOWNSTREAM} yet: run python reproduce_downstream.py (the lead schedules it)")
    found = downstream_report.load_results()
    text = (recipes.ROOT / "docs" / "DOWNSTREAM.md").read_text()
    committed = text.split(downstream_report.BEGIN, 1)[1].split(downstream_report.END, 1)[0].strip()
    assert committed == downstream_report.tables(found).strip()
    assert check_summary_against_json(committed, recipes.DOWNSTREAM) > 0
    if "### Paired differences" in committed:
        assert check_paired_against_json(committed, recipes.DOWNSTREAM) > 0


def test_a_result_without_rows_is_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(recipes, "DOWNSTREAM", tmp_path)
    for name in ("zero-shot", "xquad-r-hybrid-s0"):
        res = fake_result("sib-200", 0, 0.0)
        res.pop("rows") if name == "zero-shot" else None
        (tmp_path / f"sib-200__{name}.json").write_text(json.dumps(res))
    with pytest.raises(UserError, match="sib-200__zero-shot.json: no usable per-row values"):
        downstream_report.tables(downstream_report.load_results())


def bar_stats(results: list[dict], task: str, split: str):
    """(mean, 1.96 SE, sd or None) of one model's macro mean over the split, recomputed here without
    minihbt: SE of a macro mean from the test rows, the item as the unit where rows are parallel."""
    means, ses = [], []
    for r in results:
        v = row_values(r, task)
        langs = [l for l in v if (l in r["seen_langs"]) == (split == "seen")]
        if task in PARALLEL:
            m = np.mean([v[l] for l in langs], axis=0)
            se = np.std(m, ddof=1) / math.sqrt(len(m))
        else:
            se = math.sqrt(sum(np.var(v[l], ddof=1) / len(v[l]) for l in langs)) / len(langs)
        means.append(float(np.mean([np.mean(v[l]) for l in langs])))
        ses.append(se)
    return statistics.mean(means), 1.96 * statistics.mean(ses), statistics.stdev(means) if len(means) > 1 else None


def test_figure_draws_test_row_intervals_and_a_seed_spread_only_with_several_seeds(tmp_path, monkeypatch):
    """docs/downstream.png's bars: the test-row 95% interval for every bar, the sd over seeds only for
    rows with several seeds (zero-shot and a one-seed X-Y here have none)."""
    monkeypatch.setattr(recipes, "DOWNSTREAM", tmp_path)
    files: dict[str, list[dict]] = {}
    for task in downstream_runs.TASKS:
        for name, seed, off in (("zero-shot", None, 0.0), ("xquad-r-hybrid-s0", 0, 0.05), ("xquad-r-hybrid-s1", 1, 0.05),
                                ("xquad-r-xy-s0", 0, 0.03)):
            res = fake_result(task, seed or 0, off)
            (tmp_path / f"{task}__{name}.json").write_text(json.dumps(res))
            files.setdefault(f"{task} {name if seed is None else name.rsplit('-s', 1)[0]}", []).append(res)
    found = downstream_report.load_results()
    bars = downstream_report.figure_bars(found)
    assert list(bars) == list(downstream_report.HEADLINE)
    checked = 0
    for task, rows in bars.items():
        assert [n for n, _ in rows] == ["zero-shot", "X-Y (xquad-r)", "hybrid (xquad-r)"]
        for (name, stats), key in zip(rows, ("zero-shot", "xquad-r-xy", "xquad-r-hybrid")):
            for split in ("seen", "unseen"):
                m, ci, sd = stats[split]
                wm, wci, wsd = bar_stats(files[f"{task} {key}"], task, split)
                assert math.isclose(m, wm, abs_tol=1e-12) and math.isclose(ci, wci, rel_tol=1e-9), (task, name, split)
                assert ci > 0
                assert (sd is None) == (key != "xquad-r-hybrid") and (sd is None or math.isclose(sd, wsd)), (task, name)
                checked += 1
    assert checked == 4 * 3 * 2
    pytest.importorskip("matplotlib")
    downstream_report.figure(found, tmp_path / "downstream.png")
    assert (tmp_path / "downstream.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_committed_figure_bars_have_a_seed_spread_exactly_where_there_are_several_seeds():
    """The committed results' figure: a test-row interval on every bar, a seed-spread bar on the rows
    with several seeds (the default recipe's) and on no other."""
    if not (recipes.DOWNSTREAM.is_dir() and any(recipes.DOWNSTREAM.glob("*.json"))):
        pytest.skip(f"no results in {recipes.DOWNSTREAM}")
    found = downstream_report.load_results()
    n_seeds = {downstream_report.row_name(k): max(len(v) for v in runs.values()) for k, runs in found.items()}
    for rows in downstream_report.figure_bars(found).values():
        for name, stats in rows:
            for m, ci, sd in stats.values():
                assert 0 < ci < 0.2 and (sd is not None) == (n_seeds[name] > 1), name


def test_the_answer_table_recomputed_from_the_rows():
    """Every cell of DOWNSTREAM.md's answer table: the mean difference over seeds, each seed's, the
    mean 1.96 SE and the verdict (better / worse: every seed's difference of that sign and outside
    its own interval), recomputed from the committed rows without minihbt."""
    text = (recipes.ROOT / "docs" / "DOWNSTREAM.md").read_text()
    section = text.split(downstream_report.ANSWER[0], 1)[1].split(downstream_report.ANSWER[1], 1)[0]
    files = {p.stem: json.loads(p.read_text()) for p in recipes.DOWNSTREAM.glob("*.json")}
    tasks = {"XNLI accuracy": "xnli", "TyDi QA MRR@10": "tydiqa", "SIB-200 accuracy": "sib-200",
             "Tatoeba accuracy": "tatoeba"}
    labels = {v: k for k, v in recipes.LABELS.items()}
    checked = 0
    for line in section.strip().splitlines()[2:]:
        pair, train, task, seeds, *cells = [c.strip() for c in line.strip("|").split("|")]
        a, b = (labels[x.strip()] for x in pair.split("−"))
        for split, got in zip(("mean", "seen", "unseen"), cells):
            ds = seed_differences(files, tasks[task], train, a, b, split)
            if not ds:
                assert got == "-"
                continue
            ci = 1.96 * statistics.mean(s for _, s in ds)
            if all(d > 1.96 * s for d, s in ds):
                word = "better"
            elif all(d < -1.96 * s for d, s in ds):
                word = "worse"
            else:
                word = "not distinguishable"
            each = " (" + ", ".join(f"{d:+.3f}" for d, _ in ds) + ")" if len(ds) > 1 else ""
            assert got == f"{statistics.mean(d for d, _ in ds):+.3f}{each} ±{ci:.3f} {word}", (line, split)
            assert int(seeds) == len(seed_differences(files, tasks[task], train, a, b, "mean"))
            checked += 1
    assert checked >= 60  # 5 pairs x 4 tasks x 3 splits for the old recipe alone
