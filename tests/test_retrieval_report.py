"""minihbt/experiments/retrieval_report.py (experiments/reproduce.py --report) and docs/RESULTS.md: every number in the committed tables is recomputed here from
the committed docs/results/*.json, with this file's own reading of the JSON and the tables and
its own mean and standard deviation (the statistics module, not recipes.mean_sd), so a wrong
number in the tables, or a table builder that computes one, fails a test."""
import json
import math
import re
import statistics
from pathlib import Path

import pytest

from minihbt.experiments import recipes, retrieval, retrieval_report

ROOT = Path(__file__).resolve().parent.parent
RESULTS_MD = ROOT / "docs" / "RESULTS.md"
LABEL = {"zero-shot": "zero-shot", "xx": "X-X", "xy": "X-Y", "hybrid": "hybrid"}
OLD_SECTION = ("<!-- reproduce.py: tables begin -->", "<!-- reproduce.py: tables end -->")
RECIPE_SECTION = ("<!-- reproduce.py: recipe tables begin -->", "<!-- reproduce.py: recipe tables end -->")


def committed_runs() -> dict[tuple[str | None, str, str], list[dict]]:
    """{(recipe, eval dataset, table label): [result per seed, in seed order]}, from the file names
    (<eval>__zero-shot.json, recipe None: every section shows it; <eval>__<train>-<sampler>[-<recipe>]
    -s<seed>.json, no recipe tag: the first reproduction's, "old")."""
    runs: dict[tuple[str | None, str, str], list[tuple[int, dict]]] = {}
    for path in sorted((ROOT / "docs" / "results").glob("*.json")):
        m = re.fullmatch(r"(?P<eval>[a-z-]+)__(?:zero-shot|.+?-(?P<sampler>xx|xy|hybrid)(?:-(?P<recipe>[a-z]+\d*))?"
                         r"-s(?P<seed>\d+))", path.stem)
        assert m, f"{path.name}: unexpected result file name"
        recipe = None if m["sampler"] is None else m["recipe"] or "old"
        key = (recipe, m["eval"], LABEL[m["sampler"] or "zero-shot"])
        runs.setdefault(key, []).append((int(m["seed"] or 0), json.loads(path.read_text())))
    return {k: [r | {"_seed": seed} for seed, r in sorted(v, key=lambda x: x[0])] for k, v in runs.items()}


def parse_sections(text: str) -> dict[str, dict[tuple[str, str], dict[str, list[str]]]]:
    """{recipe: {(eval dataset, table title): {first cell: the other cells}}}; a table's title is
    the text line above it. The old recipe's tables lie between the first pair of markers under
    "### Evaluated on <eval>"; the other recipes' between the recipe markers, each under "### Recipe
    <recipe>: evaluated on <eval>", after the ablation tables (recipe "ablation", eval dataset from
    "### Ablation: hybrid trained on <train>, evaluated on <eval>")."""
    sections: dict = {}
    for (begin, end), first in ((OLD_SECTION, "old"), (RECIPE_SECTION, None)):
        if begin not in text:
            continue
        recipe, eval_data, title, current = first, None, None, None
        for line in text.split(begin, 1)[1].split(end, 1)[0].splitlines():
            if m := re.match(r"### (?:Recipe (\w+): e|E)valuated on (\S+) ", line):
                recipe, eval_data = m[1] or "old", m[2]
            elif m := re.match(r"### Ablation: hybrid trained on \S+, evaluated on (\S+)$", line):
                recipe, eval_data = "ablation", m[1]
            if not line.startswith("|"):
                current = None
                if line.strip():
                    title = line.strip()
            elif current is None:  # a table's header row
                current = sections.setdefault(recipe, {}).setdefault((eval_data, title), {})
            elif not line.startswith("|---"):
                cells = [c.strip() for c in line.strip().strip("|").split("|")]
                current[cells[0]] = cells[1:]
    return sections


def table(tables: dict, eval_data: str, title_start: str) -> dict[str, list[str]]:
    [found] = [t for (e, title), t in tables.items() if e == eval_data and title.startswith(title_start)]
    return found


def check_cell(cell: str, values: list[float], digits: int, where: str) -> None:
    """`cell` is "m" (one run) or "m ± sd" (several, sample standard deviation), each rounded to
    `digits` decimals."""
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else None
    parts = cell.split(" ± ")
    assert len(parts) == (1 if sd is None else 2), f"{where}: {cell!r} for {len(values)} run(s)"
    half = 0.5 * 10 ** -digits + 1e-12  # a rounded figure lies within half a unit of its last digit
    assert re.fullmatch(rf"-?\d+\.\d{{{digits}}}", parts[0]), f"{where}: {parts[0]!r} has not {digits} decimals"
    assert abs(float(parts[0]) - mean) <= half, f"{where}: table {parts[0]}, recomputed mean {mean}"
    if sd is not None:
        assert abs(float(parts[1]) - sd) <= half, f"{where}: table sd {parts[1]}, recomputed sd {sd}"


def cross_query_mean(r: dict, x: str) -> float:
    # "x-y" keys are built from the language list, never split; a null pair (no question) is skipped
    values = [r["map"]["cross"]["per_pair"][f"{x}-{y}"] for y in r["langs"] if y != x]
    return statistics.fmean(v for v in values if v is not None)


MAIN = [("mono mAP", 3, lambda r: r["map"]["mono"]["mean"]),  # the columns after "trained on"
        ("cross mAP", 3, lambda r: r["map"]["cross"]["mean"]),
        ("multi mAP", 3, lambda r: r["map"]["multi"]["mean"]),
        ("rank distance", 1, lambda r: r["rank_distance"]["mean"]),
        ("mono R@1", 3, lambda r: r["recall"]["mono@1"]["mean"]),
        ("cross R@1", 3, lambda r: r["recall"]["cross@1"]["mean"]),
        ("multi R@10", 3, lambda r: r["recall"]["multi@10"]["mean"])]
PER_LANG = [("mono mAP per language", 3, lambda r, x: r["map"]["mono"]["per_lang"][x]),
            ("multi mAP per language", 3, lambda r, x: r["map"]["multi"]["per_lang"][x]),
            ("cross mAP per query language", 3, cross_query_mean),
            ("rank distance per query language", 1, lambda r, x: r["rank_distance"]["per_lang"][x])]


def test_point12_results_md_numbers_recomputed_from_json():
    runs = committed_runs()
    sections = parse_sections(RESULTS_MD.read_text())
    assert (None, "mlqa-r", "zero-shot") in runs, "docs/results/mlqa-r__zero-shot.json is missing"
    recipes = {recipe for recipe, _, _ in runs if recipe is not None}
    assert recipes <= set(sections), f"results of recipes {recipes - set(sections)} have no tables"
    # a recipe has tables on the datasets its trained models were evaluated on, the zero-shot row in each
    evaluated = {(recipe, eval_data) for recipe, eval_data, _ in runs if recipe is not None}
    assert {(r, e) for r, tables in sections.items() if r != "ablation" for e, _ in tables} == evaluated
    checked = 0
    for recipe in recipes:
        tables = sections[recipe]
        for (rec, eval_data, label), results in runs.items():
            if rec not in (None, recipe) or (recipe, eval_data) not in evaluated:
                continue
            langs = results[0]["langs"]
            assert all(r["langs"] == langs for r in results)
            main = table(tables, eval_data, "mAP per setting")[f"{label} (e5-small)"]
            for cell, (what, digits, value) in zip(main[1:], MAIN, strict=True):
                check_cell(cell, [value(r) for r in results], digits, f"{recipe} {eval_data} {label} {what}")
                checked += 1
            for title, digits, value in PER_LANG:
                row = table(tables, eval_data, title)[label]
                for cell, x in zip(row, langs, strict=True):
                    where = f"{recipe} {eval_data} {label} {title} {x}"
                    check_cell(cell, [value(r, x) for r in results], digits, where)
                    checked += 1
    assert checked >= 4 * (7 + 4 * 7)  # at least the first reproduction: 4 models, every figure of each


def test_point12_json_means_are_macro_means_of_their_parts():
    for results in committed_runs().values():
        for r in results:
            langs = r["langs"]
            pairs = [f"{x}-{y}" for x in langs for y in langs if x != y]
            for block, keys in ((r["map"]["mono"], langs), (r["map"]["multi"], langs), (r["map"]["cross"], pairs),
                                (r["recall"]["mono@1"], langs), (r["recall"]["multi@10"], langs),
                                (r["recall"]["cross@1"], pairs), (r["rank_distance"], langs)):
                values = block.get("per_lang") or block.get("per_pair")
                assert sorted(values) == sorted(keys)
                assert block["mean"] == pytest.approx(statistics.fmean(values[k] for k in keys), rel=1e-12)


def test_point12_a_wrong_figure_is_caught():
    """The check can fail: a table figure one unit off in its last digit is found."""
    zero = committed_runs()[(None, "mlqa-r", "zero-shot")]
    good = f"{zero[0]['map']['mono']['mean']:.3f}"
    check_cell(good, [r["map"]["mono"]["mean"] for r in zero], 3, "mono")
    with pytest.raises(AssertionError, match="recomputed mean"):
        check_cell(f"{float(good) + 0.001:.3f}", [r["map"]["mono"]["mean"] for r in zero], 3, "mono")
    with pytest.raises(AssertionError, match="recomputed sd"):
        check_cell("0.600 ± 0.142", [0.5, 0.7], 3, "sd")


def test_point11_query_language_means_with_hyphenated_codes():
    per_pair = {"zh-CN-en": 0.5, "zh-CN-de": 0.7, "en-zh-CN": 0.1, "de-zh-CN": 0.2, "en-de": 0.3, "de-en": None}
    langs = ["de", "en", "zh-CN"]
    assert retrieval_report.query_mean(per_pair, "zh-CN", langs) == pytest.approx(0.6)  # split("-") found none
    assert retrieval_report.query_mean(per_pair, "en", langs) == pytest.approx(0.2)
    assert retrieval_report.query_mean(per_pair, "de", langs) == pytest.approx(0.2)  # the null pair is skipped


def test_results_md_tables_equal_committed_json():
    found = retrieval_report.load_results()
    text = RESULTS_MD.read_text()
    committed = text.split(retrieval_report.BEGIN, 1)[1].split(retrieval_report.END, 1)[0].strip()
    assert committed == retrieval_report.tables(found).strip()


def test_mean_and_spread():
    m, sd = recipes.mean_sd([0.5, 0.7])
    assert math.isclose(m, 0.6) and math.isclose(sd, math.sqrt(0.02))
    assert retrieval_report.fmt([0.5, 0.7]) == "0.600 ± 0.141" and retrieval_report.fmt([0.25]) == "0.250"


# The paper's XLM-R hybrid model, copied by hand from arXiv 2408.10536: Table 1 (mAP mono / cross /
# multi) and Table 2 (mean rank distance).
PAPER_ROWS = {"xquad-r": ["0.798", "0.705", "0.593", "286.6"], "mlqa-r": ["0.648", "0.623", "0.512", "227.1"]}


def test_paper_row_of_every_table_is_the_papers_tables_1_and_2():
    checked = 0
    for recipe, tables in parse_sections(RESULTS_MD.read_text()).items():
        for (eval_data, title), rows in tables.items():
            if title.startswith("mAP per setting"):
                [paper] = [cells for first, cells in rows.items() if first.startswith("paper")]
                assert paper[1:5] == PAPER_ROWS[eval_data], f"{recipe} {eval_data}"
                checked += 1
    assert checked >= 1


def test_ablation_rows_recomputed_from_json():
    """Hybrid under each recipe that has results, one row per recipe in the recipes' order, where an
    evaluation dataset has hybrid results of two recipes or more."""
    runs, sections = committed_runs(), parse_sections(RESULTS_MD.read_text())
    order = ["old", "hardneg", "masked", "paper", "batch32", "cuda"]
    checked = expected = 0
    for eval_data in sorted({e for _, e, _ in runs}):
        recipes = [r for r in order if (r, eval_data, "hybrid") in runs]
        tables = [t for (e, _), t in sections.get("ablation", {}).items() if e == eval_data]
        if len(recipes) < 2:
            assert not tables, eval_data
            continue
        [rows] = tables
        assert list(rows) == recipes
        expected += 4 * len(recipes)
        for recipe in recipes:
            results = runs[recipe, eval_data, "hybrid"]
            assert rows[recipe][0] == str(len(results))
            for cell, (what, digits, value) in zip(rows[recipe][1:], MAIN[:4], strict=True):
                check_cell(cell, [value(r) for r in results], digits, f"ablation {eval_data} {recipe} {what}")
                checked += 1
    assert checked == expected


def hand_ap(ranks) -> float:
    """One query's AP from its relevant ranks."""
    ranks = sorted(ranks)
    return sum((k + 1) / r for k, r in enumerate(ranks)) / len(ranks)


def hand_values(res: dict, setting: str) -> dict[str, tuple[list[str], list[float]]]:
    """{language or pair: (question ids, per-query values)} from a result's per_query strings alone."""
    pq, ids = res["per_query"], res["per_query"]["qids"]
    own = {l: [ids[int(i)] for i in pq["questions"][l].split()] for l in res["langs"]}
    out = {}
    for key, s in pq["multi" if setting == "rank_distance" else setting].items():
        rows = [[int(r) for r in row.split(",")] for row in s.split()]
        if setting == "cross":
            x, y = next((x, y) for x in res["langs"] for y in res["langs"] if f"{x}-{y}" == key)
            qids = [q for q in own[x] if q in own[y]]
        else:
            qids = own[key]
        if setting == "rank_distance":
            kept = [(q, max(r) - min(r)) for q, r in zip(qids, rows) if len(r) >= 2]
            qids, vals = [q for q, _ in kept], [v for _, v in kept]
        else:
            vals = [hand_ap(r) for r in rows]
        out[key] = (qids, vals)
    return out


def hand_interval(a: dict, b: dict, setting: str) -> tuple[float, float]:
    """(D, SE): the macro mean of a - b over languages (or pairs) with >= 2 queries, and its standard
    error with the question id as the cluster: each question's share of D, summed over keys."""
    va, vb = hand_values(a, setting), hand_values(b, setting)
    keys = [k for k in va if len(va[k][0]) >= 2]
    D = sum(sum(x - y for x, y in zip(va[k][1], vb[k][1])) / len(va[k][1]) for k in keys) / len(keys)
    totals = {}
    for k in keys:
        for q, x, y in zip(va[k][0], va[k][1], vb[k][1]):
            totals[q] = totals.get(q, 0.0) + (x - y) / (len(keys) * len(va[k][1]))
    C = len(totals)
    return D, math.sqrt(C / (C - 1) * sum((t - D / C) ** 2 for t in totals.values()))


SETTING = {"mono mAP": "mono", "cross mAP": "cross", "multi mAP": "multi", "rank distance": "rank_distance"}


def test_paired_differences_of_every_recipe_recomputed_from_json():
    """hybrid - X-X and hybrid - X-Y: the seeds both have, each seed's difference, their mean and
    sample sd, in every recipe's tables."""
    runs, sections = committed_runs(), parse_sections(RESULTS_MD.read_text())
    checked = intervals = 0
    for (recipe, eval_data, label), hybrid in runs.items():
        if label != "hybrid":
            continue
        found = [t for (e, title), t in sections[recipe].items() if e == eval_data and title.startswith("Paired")]
        for other in ("X-X", "X-Y"):
            others = {r["_seed"]: r for r in runs.get((recipe, eval_data, other), [])}
            seeds = [r["_seed"] for r in hybrid if r["_seed"] in others]
            if not seeds:
                assert not found or f"hybrid - {other}" not in found[0]
                continue
            cells = found[0][f"hybrid - {other}"]
            assert cells[1] == ",".join(map(str, seeds))
            for cell, (what, digits, value) in zip(cells[2:], MAIN[:4], strict=True):
                by = {r["_seed"]: r for r in hybrid}
                d = [value(by[s]) - value(others[s]) for s in seeds]
                want = f"{statistics.fmean(d):+.{digits}f}"
                if len(d) > 1:
                    want += f" ± {statistics.stdev(d):.{digits}f}"
                each = []
                for s, x in zip(seeds, d):  # a seed's test-row interval where both results carry per-query values
                    both = "per_query" in by[s] and "per_query" in others[s]
                    half = 1.96 * hand_interval(by[s], others[s], SETTING[what])[1] if both else None
                    each.append(f"{x:+.{digits}f}" + (f" rows ±{half:.{digits}f}" if both else ""))
                    intervals += both
                assert cell == want + " (" + ", ".join(each) + ")", (recipe, other, what)
                checked += 1
    assert checked >= 8  # at least the old recipe's two differences
    assert RESULTS_MD.read_text().count(" rows ±") == intervals  # none without both results' per-query values


def test_results_md_is_the_report_of_the_committed_json(tmp_path, monkeypatch):
    """The whole page, old and recipe sections, is what reproduce.py --report writes from the JSON."""
    (tmp_path / "docs" / "results").mkdir(parents=True)
    for f in [*(ROOT / "docs" / "results").glob("*.json"), *(ROOT / "docs" / "results").glob("selection/*.json")]:
        (tmp_path / f.relative_to(ROOT)).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f.relative_to(ROOT)).write_bytes(f.read_bytes())
    (tmp_path / "docs" / "RESULTS.md").write_text(RESULTS_MD.read_text())
    monkeypatch.setattr(recipes, "ROOT", tmp_path)
    monkeypatch.setattr(recipes, "RESULTS", tmp_path / "docs" / "results")
    monkeypatch.setattr(retrieval_report, "figure", lambda found, path: None)
    retrieval_report.report()
    assert (tmp_path / "docs" / "RESULTS.md").read_text() == RESULTS_MD.read_text()


def selection_rows(text: str, recipe: str) -> tuple[list[str], dict[str, list[str]]]:
    """The step columns and {run: cells} of RESULTS.md's "### Recipe <recipe>: checkpoint selection" table."""
    lines = text.split(f"### Recipe {recipe}: checkpoint selection", 1)[1].splitlines()[1:]
    lines = lines[:next(i for i, l in enumerate(lines) if l.startswith(("###", "<!--")))]  # up to the next section
    header, _, *body = [[c.strip() for c in l.strip().strip("|").split("|")] for l in lines if l.startswith("|")]
    return header[1:], {r[0]: r[1:] for r in body}


def test_checkpoint_selection_recomputed_from_json():
    """Every result of a recipe that selects on held-out groups (paper, batch32) has its selection
    record; the chosen step is the earliest best validation score (train.py's tie rule), recomputed
    here; each recipe's table shows its records."""
    results = ROOT / "docs" / "results"
    runs = {recipe: {p.stem.split("__")[1] for p in results.glob("*.json") if f"-{recipe}-s" in p.stem}
            for recipe in ("paper", "batch32", "cuda")}
    records = {p.stem: json.loads(p.read_text()) for p in results.glob("selection/*.json")}
    assert runs["paper"] and set(records) == set().union(*runs.values()), \
        "a selecting recipe's result without its selection record, or the reverse"
    rows = {}
    for recipe, names in runs.items():
        if names:
            steps, rows_of = selection_rows(RESULTS_MD.read_text(), recipe)
            assert set(rows_of) == names, recipe
            rows |= rows_of
    for name, r in records.items():
        scores = {int(s): v for s, v in r["val_map_multi"].items()}
        best = max(scores.values())
        assert r["chosen_step"] == min(s for s, v in scores.items() if v == best), name
        assert rows[name][-1] == str(r["chosen_step"])
        for col, cell in zip(steps[:-1], rows[name][:-1]):
            step = int(col.removeprefix("step "))
            if step in scores:
                assert abs(float(cell) - scores[step]) <= 0.5e-4 + 1e-12, f"{name} step {step}: {cell}"
            else:
                assert cell == "", f"{name} step {step}: {cell!r} without a validation score"
        assert len(scores) == sum(c != "" for c in rows[name][:-1])


def test_test_row_intervals_recomputed_from_per_query_ranks(tmp_path, monkeypatch):
    """Two results of the toy dataset of test_lareqa_eval (every rank known), the second model ranking
    two queries differently: the test-row interval of their difference, recomputed here from the
    stored ranks alone (AP and rank distance by hand, the cluster formula over question ids)."""
    from test_lareqa_eval import FakeEncoder, question, run

    class Other(FakeEncoder):
        fingerprint = "fake-encoder-v2"

        def __init__(self):
            super().__init__()
            for key in (question("en", "q2"), question("de", "q1")):
                self.vectors[key] = self.vectors[key][::-1].copy()  # its ranking turned upside down

    a = json.loads(json.dumps(run(tmp_path / "a", monkeypatch, encoder=FakeEncoder()) | {"model": "a"}))
    b = json.loads(json.dumps(run(tmp_path / "b", monkeypatch, encoder=Other()) | {"model": "b"}))

    checked = 0
    for metric, setting in (("mono mAP", "mono"), ("cross mAP", "cross"), ("multi mAP", "multi"),
                            ("rank distance", "rank_distance")):
        D, se = hand_interval(a, b, setting)
        got = retrieval_report.query_difference(a, b, metric)
        assert got == pytest.approx((D, se), abs=1e-12), metric
        checked += D != 0
    assert checked >= 3  # the second model differs in most settings
    rows = [("hybrid", "toy", [a | {"seed": 0}]), ("xx", "toy", [b | {"seed": 0}])]
    line = [l for l in retrieval_report.paired_differences(rows) if l.startswith("| hybrid - X-X")][0]
    assert line.count(" rows ±") == 4
    assert retrieval_report.query_difference({"model": "old"}, b, "mono mAP") is None  # a result without per-query values
