"""The retrieval experiment's report: docs/RESULTS.md's tables and docs/results.png, from the
committed JSON of docs/results/ alone (experiments/reproduce.py --report).

Tables, per recipe and evaluation dataset: every model's mAP (mono / cross / multi), rank distance
and recall, mean ± sample sd over seeds, beside the paper's row; the paired per-seed differences
(hybrid minus X-X, hybrid minus X-Y); per-language tables; the ablation across recipes; and what
validation chose (docs/results/selection/). tests/test_retrieval_report.py recomputes them.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from minihbt import per_query
from minihbt.downstream import paired
from minihbt.experiments import recipes
from minihbt.io.files import UserError, atomic_write_bytes

BEGIN, END = "<!-- reproduce.py: tables begin -->", "<!-- reproduce.py: tables end -->"
# The old recipe's tables, then the others' (an ablation table across recipes, then each recipe's).
NEW_BEGIN, NEW_END = "<!-- reproduce.py: recipe tables begin -->", "<!-- reproduce.py: recipe tables end -->"


def load_results(recipe: str = "old") -> dict[tuple[str, str, str], list[dict]]:
    """{(eval dataset, model label, training dataset): [result per seed, in seed order]} of one recipe
    (and the untrained model) from docs/results/*.json."""
    found: dict[tuple[str, str, str], list[tuple[int, dict]]] = {}
    for path in sorted(recipes.RESULTS.glob("*.json")):
        eval_data, _, model = path.stem.partition("__")
        m = recipes.RUN.fullmatch(model)
        if model != "zero-shot" and m is None:
            raise UserError(f"{path}: not a reproduce.py result (expected <eval>__zero-shot.json or "
                            f"<eval>__<train>-<xx|xy|hybrid>[-<{recipes.TAGS}>]-s<seed>.json)")
        if model != "zero-shot" and (m["recipe"] or "old") != recipe:
            continue
        key = (eval_data, "zero-shot", "") if model == "zero-shot" else (eval_data, m["sampler"], m["train"])
        seed = -1 if model == "zero-shot" else int(m["seed"])
        found.setdefault(key, []).append((seed, json.loads(path.read_text())))
    return {k: [r | {"seed": seed} for seed, r in sorted(v, key=lambda x: x[0])] for k, v in found.items()}


def fmt(values: list[float], digits: int = 3) -> str:
    m, sd = recipes.mean_sd(values)
    return f"{m:.{digits}f}" + (f" ± {sd:.{digits}f}" if len(values) > 1 else "")


def tables(found, recipe: str = "old") -> str:
    out = []
    for eval_data in sorted({k[0] for k in found}, reverse=True):
        rows = [(label, train, runs) for (e, label, train), runs in found.items() if e == eval_data]
        if all(label == "zero-shot" for label, _, _ in rows):
            continue  # nothing of this recipe was evaluated there yet: no table of the zero-shot row alone
        rows.sort(key=lambda r: list(recipes.LABELS).index(r[0]))
        langs = rows[0][2][0]["langs"]
        n = {len(runs) for label, _, runs in rows if label != "zero-shot"} or {1}
        seeds = f"{max(n)} seed(s)" if max(n) > 1 else "1 seed"
        title = "Evaluated" if recipe == "old" else f"Recipe {recipe}: evaluated"
        out.append(f"### {title} on {eval_data} ({', '.join(langs)}), {seeds}\n")
        out.append("mAP per setting (macro means), mean rank distance (lower: less language bias), "
                   "R@1 mono / cross, R@10 multi.\n")
        out.append("| model | trained on | mono mAP | cross mAP | multi mAP | rank distance | mono R@1 | cross R@1 | multi R@10 |")
        out.append("|---|---|---|---|---|---|---|---|---|")
        for label, train, runs in rows:
            cells = [fmt([r["map"][s]["mean"] for r in runs]) for s in ("mono", "cross", "multi")]
            cells.append(fmt([r["rank_distance"]["mean"] for r in runs], 1))
            cells += [fmt([r["recall"][k]["mean"] for r in runs]) for k in ("mono@1", "cross@1", "multi@10")]
            out.append(f"| {recipes.LABELS[label]} (e5-small) | {train or '-'} | " + " | ".join(cells) + " |")
        p = recipes.PAPER[eval_data]
        out.append(f"| paper, hybrid (XLM-R, Tables 1-2) | their training data | {p[0]:.3f} | {p[1]:.3f} | {p[2]:.3f} | "
                   f"{p[3]:.1f} | | | |\n")
        out += paired_differences(rows)
        for setting, field in (("mono", "per_lang"), ("multi", "per_lang")):
            out.append(f"{setting} mAP per language:\n")
            out.append("| model | " + " | ".join(langs) + " |")
            out.append("|---|" + "---|" * len(langs))
            for label, _, runs in rows:
                out.append(f"| {recipes.LABELS[label]} | " + " | ".join(
                    fmt([r["map"][setting][field][l] for r in runs]) for l in langs) + " |")
            out.append("")
        out.append("cross mAP per query language (mean over its candidate languages):\n")
        out.append("| model | " + " | ".join(langs) + " |")
        out.append("|---|" + "---|" * len(langs))
        for label, _, runs in rows:
            cells = [fmt([query_mean(r["map"]["cross"]["per_pair"], l, r["langs"]) for r in runs]) for l in langs]
            out.append(f"| {recipes.LABELS[label]} | " + " | ".join(cells) + " |")
        out.append("\nrank distance per query language:\n")
        out.append("| model | " + " | ".join(langs) + " |")
        out.append("|---|" + "---|" * len(langs))
        for label, _, runs in rows:
            out.append(f"| {recipes.LABELS[label]} | " + " | ".join(fmt([r["rank_distance"]["per_lang"][l] for r in runs], 1)
                                                          for l in langs) + " |")
        out.append("")
    return "\n".join(out)


METRICS = {"mono mAP": lambda r: r["map"]["mono"]["mean"], "cross mAP": lambda r: r["map"]["cross"]["mean"],
           "multi mAP": lambda r: r["map"]["multi"]["mean"], "rank distance": lambda r: r["rank_distance"]["mean"]}


def paired_differences(rows) -> list[str]:
    """Hybrid minus X-X and minus X-Y, seed by seed (same seed: same start, same data seed), as a
    table: mean ± standard deviation over seeds, then each seed's difference, followed by its 95%
    interval from the test rows (`query_difference`) where both of its results hold per-query values."""
    by = {(label, train): {r.get("seed", i): r for i, r in enumerate(runs)} for label, train, runs in rows
          if label != "zero-shot"}
    lines, intervals = [], False
    for train in sorted({t for _, t in by if t}):
        hybrid = by.get(("hybrid", train), {})
        for other in ("xx", "xy"):
            seeds = sorted(set(hybrid) & set(by.get((other, train), {})))
            if not seeds:
                continue
            cells = []
            for name, get in METRICS.items():
                d = [get(hybrid[s]) - get(by[other, train][s]) for s in seeds]
                digits = 1 if name == "rank distance" else 3
                m, sd = recipes.mean_sd(d)
                each = []
                for s, x in zip(seeds, d):
                    q = query_difference(hybrid[s], by[other, train][s], name)
                    each.append(f"{x:+.{digits}f}" + (f" rows ±{paired.Z95 * q[1]:.{digits}f}" if q else ""))
                    intervals |= q is not None
                cells.append(f"{m:+.{digits}f}" + (f" ± {sd:.{digits}f}" if len(d) > 1 else "") + " (" + ", ".join(each) + ")")
            lines.append(f"| hybrid - {recipes.LABELS[other]} | {train} | {','.join(map(str, seeds))} | " + " | ".join(cells) + " |")
    if not lines:
        return []
    rows_note = (" \"rows ±\" after a seed's difference is its 95% interval from the test rows alone, the question "
                 "id as the unit (1.96 standard errors; minihbt/downstream/paired.py), where both of its results "
                 "carry per-query values." if intervals else "")
    return ["Paired differences, hybrid minus X-X and minus X-Y, taken seed by seed (a seed fixes the start, "
            "the sampler's seed and the dropout stream): mean ± standard deviation over the seeds, then each "
            "seed's difference. Positive is better for mAP, negative for rank distance." + rows_note + "\n",
            "| difference | trained on | seeds | " + " | ".join(METRICS) + " |", "|---|---|---|" + "---|" * len(METRICS),
            *lines, ""]


SETTINGS = {"mono mAP": "mono", "cross mAP": "cross", "multi mAP": "multi", "rank distance": "rank_distance"}


def query_difference(a: dict, b: dict, metric: str) -> tuple[float, float] | None:
    """(D, SE) of result a minus result b in `metric` from their per-query values, the question id
    as the unit (paired.difference, items by id); None unless both results hold them. Languages
    (or pairs) with fewer than 2 queries are left out, as their per-language value is."""
    if "per_query" not in a or "per_query" not in b:
        return None
    va, vb = (per_query.query_values(r)[SETTINGS[metric]] for r in (a, b))
    keys = [k for k in va if len(va[k].qids) >= 2]
    if any(va[k].qids != vb[k].qids for k in keys):
        raise UserError(f"{a['model']} and {b['model']}: their per-query values are not of the same queries")
    return paired.difference({k: va[k].values for k in keys}, {k: vb[k].values for k in keys}, keys,
                             items={k: va[k].qids for k in keys})


def query_mean(per_pair: dict, x: str, langs: list[str]) -> float:
    """Mean over x's pairs "x-y"; keys are built from the languages, never split (codes such as
    zh-CN hold a "-")."""
    vals = [v for y in langs if y != x and (v := per_pair.get(f"{x}-{y}")) is not None]
    return sum(vals) / len(vals) if vals else math.nan


def figure(found, path: Path) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import numpy as np
    except ImportError:
        print("matplotlib not installed (pip install -e '.[plot]'): figure skipped", file=sys.stderr)
        return
    eval_data = "mlqa-r" if any(k[0] == "mlqa-r" for k in found) else sorted(found)[0][0]
    rows = sorted([(l, runs) for (e, l, _), runs in found.items() if e == eval_data],
                  key=lambda r: list(recipes.LABELS).index(r[0]))
    fig, (ax, hx) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [1, 1.1]})
    settings = ("mono", "cross", "multi")
    width = 0.8 / len(rows)
    for i, (label, runs) in enumerate(rows):
        means = [recipes.mean_sd([r["map"][s]["mean"] for r in runs])[0] for s in settings]
        ax.bar(np.arange(3) + i * width, means, width, label=recipes.LABELS[label])
    ax.set_xticks(np.arange(3) + width * (len(rows) - 1) / 2, [f"{s} mAP" for s in settings])
    ax.set_title(f"e5-small on {eval_data}: mAP per setting")
    ax.legend()
    hybrid = dict(rows).get("hybrid")
    if hybrid:
        r = hybrid[0]
        langs = r["langs"]
        grid = np.array([[r["map"]["mono"]["per_lang"][x] if x == y else
                          (r["map"]["cross"]["per_pair"][f"{x}-{y}"] or np.nan) for y in langs] for x in langs])
        im = hx.imshow(grid, cmap="viridis")
        hx.set_xticks(range(len(langs)), langs)
        hx.set_yticks(range(len(langs)), langs)
        hx.set_xlabel("candidate language")
        hx.set_ylabel("query language")
        for i in range(len(langs)):
            for j in range(len(langs)):
                hx.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=7, color="w")
        hx.set_title("hybrid model: mAP by language pair (first seed)")
        fig.colorbar(im, ax=hx)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}", file=sys.stderr)


def ablation(by_recipe: dict[str, dict]) -> str:
    """Hybrid's means under each recipe that has them, one table per evaluation dataset and training set."""
    out = []
    cells = {}  # (eval, train) -> [(recipe, runs)]
    for recipe, found in by_recipe.items():
        for (e, label, train), runs in found.items():
            if label == "hybrid":
                cells.setdefault((e, train), []).append((recipe, runs))
    for (e, train), rows in sorted(cells.items(), reverse=True):
        if len(rows) < 2:
            continue
        out += [f"### Ablation: hybrid trained on {train}, evaluated on {e}\n",
                "| recipe | seeds | " + " | ".join(METRICS) + " |", "|---|---|" + "---|" * len(METRICS)]
        for recipe, runs in rows:
            out.append(f"| {recipe} | {len(runs)} | " + " | ".join(
                fmt([get(r) for r in runs], 1 if name == "rank distance" else 3) for name, get in METRICS.items()) + " |")
        out.append("")
    return "\n".join(out)


def selection(recipe: str) -> str:
    """The recipe's validation scores and chosen steps, one row per run (docs/results/selection/)."""
    runs = {p.stem: json.loads(p.read_text()) for p in sorted((recipes.RESULTS / "selection").glob("*.json"))
            if (m := recipes.RUN.fullmatch(p.stem)) and m["recipe"] == recipe}
    if not runs:
        return ""
    steps = sorted({int(s) for r in runs.values() for s in r["val_map_multi"]})
    flags = recipes.RECIPES[recipe]
    held_out = float(flags[flags.index("--val-fraction") + 1])
    out = [f"### Recipe {recipe}: checkpoint selection on the held-out groups\n",
           f"Multilingual mAP on the {held_out:.0%} of the training groups never trained on, at each check; the "
           "checkpoint evaluated is the best (the earliest of equal scores). No test set is involved.\n",
           "| run | " + " | ".join(f"step {s}" for s in steps) + " | chosen step |", "|---|" + "---|" * (len(steps) + 1)]
    for name, r in runs.items():
        cells = [f"{r['val_map_multi'][str(s)]:.4f}" if str(s) in r["val_map_multi"] else "" for s in steps]
        out.append(f"| {name} | " + " | ".join(cells) + f" | {r['chosen_step']} |")
    return "\n".join(out) + "\n"


def replace_between(text: str, begin: str, end: str, body: str, doc: Path) -> str:
    if begin not in text or end not in text:
        raise UserError(f"{doc}: the markers {begin} / {end} are missing")
    head, rest = text.split(begin, 1)
    return head + begin + "\n" + body + "\n" + end + rest.split(end, 1)[1]


def report() -> None:
    """Fill docs/RESULTS.md between its markers from the JSON files: the old recipe's tables, then
    (once any exist) the ablation across recipes and each new recipe's tables."""
    found = load_results()
    if not found:
        raise UserError(f"no results in {recipes.RESULTS}: run python experiments/reproduce.py first")
    doc = recipes.ROOT / "docs" / "RESULTS.md"
    text = doc.read_text() if doc.is_file() else f"# Results\n\n{BEGIN}\n{END}\n"
    text = replace_between(text, BEGIN, END, tables(found), doc)
    by_recipe = {r: load_results(r) for r in recipes.RECIPES}
    trained = [r for r in recipes.RECIPES if r != "old" and any(label != "zero-shot" for _, label, _ in by_recipe[r])]
    if trained:
        body = [ablation({r: by_recipe[r] for r in ["old", *trained]})]
        body += [t for r in trained for t in (tables(by_recipe[r], r), selection(r))]
        text = replace_between(text, NEW_BEGIN, NEW_END, "\n".join(b for b in body if b), doc)
    atomic_write_bytes(doc, text.encode())
    print(f"wrote {doc}", file=sys.stderr)
    figure(found, recipes.ROOT / "docs" / "results.png")
