"""The downstream experiment's report: docs/DOWNSTREAM.md's tables and docs/downstream.png, from
the committed JSON of docs/downstream/ alone (experiments/reproduce_downstream.py --report).

The paired differences (hybrid minus X-X, ...: same seed, same test rows) come from the results'
per-row values with minihbt.downstream.paired, the item as the unit where rows are parallel across
languages (XNLI, SIB-200). tests/test_downstream_report.py recomputes the tables without minihbt.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from minihbt.downstream import paired
from minihbt.downstream.tasks import row_values
from minihbt.experiments import downstream_figure, recipes
from minihbt.io.files import UserError, atomic_write_bytes

TASKS = ("xnli", "tydiqa", "sib-200", "tatoeba")
BEGIN, END = "<!-- reproduce_downstream.py: tables begin -->", "<!-- reproduce_downstream.py: tables end -->"
ANSWER = "<!-- reproduce_downstream.py: answer begins -->", "<!-- reproduce_downstream.py: answer ends -->"
# (column title, task, path to a Summary in that task's results), in table order
COLUMNS = [("XNLI acc", "xnli", ("accuracy", "test")), ("XNLI pair AP", "xnli", ("pair_ap", "test")),
           ("TyDi MRR@10", "tydiqa", ("mono", "mrr@10")), ("TyDi R@1", "tydiqa", ("mono", "r@1")),
           ("TyDi pooled MRR@10", "tydiqa", ("pooled", "mrr@10")),
           ("TyDi other-lang top-1", "tydiqa", ("pooled", "other_lang_top1")),
           ("SIB cross acc", "sib-200", ("accuracy", "cross")), ("SIB within acc", "sib-200", ("accuracy", "within")),
           ("Tatoeba acc", "tatoeba", ("accuracy", "mean"))]
SPLIT_COLUMNS = [c for c in COLUMNS if c[0] in ("XNLI acc", "TyDi MRR@10", "SIB cross acc", "Tatoeba acc")]
HEADLINE = {"xnli": ("XNLI accuracy (probe trained on English)", ("accuracy", "test"), ("accuracy", "dev")),
            "tydiqa": ("TyDi QA MRR@10 (each language's own passages)", ("mono", "mrr@10"), None),
            "sib-200": ("SIB-200 accuracy (probe trained on English)", ("accuracy", "cross"), None),
            "tatoeba": ("Tatoeba accuracy (mean of x->eng and eng->x)", ("accuracy", "mean"), None)}


def training(m: re.Match) -> str:
    """A run's training data and recipe, as its rows show them: "xquad-r" (old), "xquad-r, paper"."""
    return m["train"] + (f", {m['recipe']}" if m["recipe"] else "")


def model_name(sampler: str, train: str, seed: int) -> str:
    """The result name of a run of `sampler` under `training(...)` == train (inverse of recipes.RUN)."""
    data, _, recipe = train.partition(", ")
    return recipes.run_name(data, sampler, seed, recipe or "old")


def by_seed() -> dict[tuple[str, str], dict[int | None, dict[str, dict]]]:
    """{(sampler | "zero-shot", training data): {seed (None: zero-shot): {task: result}}} from
    docs/downstream/*.json, refusing a file name that is not a result's."""
    out: dict = {}
    for path in sorted(recipes.DOWNSTREAM.glob("*.json")):
        task, _, name = path.stem.partition("__")
        m = recipes.RUN.fullmatch(name)
        if task not in TASKS or (name != "zero-shot" and m is None):
            raise UserError(f"{path}: not a reproduce_downstream.py result (expected <task>__zero-shot.json or "
                            f"<task>__<train>-<xx|xy|hybrid>[-<{recipes.TAGS}>]-s<seed>.json)")
        key, seed = (("zero-shot", ""), None) if m is None else ((m["sampler"], training(m)), int(m["seed"]))
        out.setdefault(key, {}).setdefault(seed, {})[task] = json.loads(path.read_text())
    return out


def load_results() -> dict[tuple[str, str], dict[str, list[dict]]]:
    """{(model label, training data): {task: [result per seed, in seed order]}} (by_seed, flattened)."""
    found: dict = {}
    for key, seeds in by_seed().items():
        for seed in sorted(seeds, key=lambda s: -1 if s is None else s):
            for task, res in seeds[seed].items():
                found.setdefault(key, {}).setdefault(task, []).append(res)
    return found


def get(res: dict, path: tuple[str, str]) -> dict:
    return res[path[0]][path[1]]


def fmt(values: list[float | None]) -> str:
    """Mean ± sample sd over seeds, 3 decimals; '-' when there is no value."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    m, sd = recipes.mean_sd(values)
    return f"{m:.3f}" + (f" ± {sd:.3f}" if len(values) > 1 else "")


def ordered(found) -> list[tuple[tuple[str, str], dict]]:
    return sorted(found.items(), key=lambda kv: (kv[0][1], list(recipes.LABELS).index(kv[0][0])))


def row_name(key: tuple[str, str]) -> str:
    label, train = key
    return recipes.LABELS[label] + (f" ({train})" if train else "")


def seeds(runs: dict[str, list[dict]]) -> int:
    return max(len(v) for v in runs.values())


# (model, minus model) of the paired-difference table: the question's two, then what training did
PAIRS = [("hybrid", "xx"), ("hybrid", "xy"), ("hybrid", "zero-shot"), ("xx", "zero-shot"), ("xy", "zero-shot")]


def values(result: dict, task: str, where: Path) -> dict:
    try:
        return row_values(task, result)
    except (KeyError, ValueError) as e:
        raise UserError(f"{where}: no usable per-row values ({e}); rerun it (delete the file, then "
                        "python experiments/reproduce_downstream.py)") from None


def differences(runs: dict, a: str, b: str, train: str, task: str) -> dict[str, list[tuple[float, float]]]:
    """{"mean" | "seen" | "unseen": [(D, SE) per seed]} of model a minus model b on `task`."""
    out = {"mean": [], "seen": [], "unseen": []}
    for seed, res in sorted(runs.get((a, train), {}).items()):
        other = runs.get((b, "" if b == "zero-shot" else train), {}).get(None if b == "zero-shot" else seed, {})
        if task not in res or task not in other:
            continue
        va = values(res[task], task, recipes.DOWNSTREAM / f"{task}__{model_name(a, train, seed)}.json")
        vb = values(other[task], task, recipes.DOWNSTREAM / (f"{task}__zero-shot.json" if b == "zero-shot"
                                                  else f"{task}__{model_name(b, train, seed)}.json"))
        langs = {"mean": list(va), "seen": [l for l in va if l in res[task]["seen_langs"]]}
        langs["unseen"] = [l for l in va if l not in langs["seen"]]
        for split, ls in langs.items():
            if ls:
                out[split].append(paired.difference(va, vb, ls, items=paired.TASK_ITEMS[task]))
    return out


def fmt_diff(ds: list[tuple[float, float]]) -> str:
    """D ± 1.96 SE (test rows), bold when outside it; with several seeds D and SE are their means
    and the sd of D over seeds follows."""
    if not ds:
        return "-"
    (d, sd), se = recipes.mean_sd([x for x, _ in ds]), sum(s for _, s in ds) / len(ds)
    cell = f"{d:+.3f} ±{paired.Z95 * se:.3f}"
    cell = f"**{cell}**" if abs(d) > paired.Z95 * se else cell
    return cell + (f", sd {sd:.3f}" if len(ds) > 1 else "")


def difference_table() -> list[str]:
    runs = by_seed()
    trains = sorted({t for _, t in runs if t})
    cols = [(c, t) for c, t, _ in SPLIT_COLUMNS]
    out = ["", "### Paired differences: same seed, same test rows\n",
           "Difference of the macro means (first model minus second), ± 1.96 standard errors from the "
           "test rows (minihbt.paired: the noise of the test sample, not of training; XNLI and SIB-200 rows "
           "are parallel across languages, so their unit is the item, TyDi QA and Tatoeba rows are "
           "independent per language); bold where the "
           "difference is outside that interval. With several seeds: the mean over seeds and the sd "
           "of the per-seed differences (the seed spread).\n",
           "| models | seeds | " + " | ".join(f"{c} {s}" for c, _ in cols for s in ("all", "seen", "unseen")) + " |",
           "|---|---|" + "---|" * (3 * len(cols))]
    for train in trains:
        for a, b in PAIRS:
            cells = [differences(runs, a, b, train, t) for _, t in cols]
            n = max((len(c["mean"]) for c in cells), default=0)
            if n:
                out.append(f"| {recipes.LABELS[a]} − {recipes.LABELS[b]} ({train}) | {n} | "
                           + " | ".join(fmt_diff(c[s]) for c in cells for s in ("mean", "seen", "unseen")) + " |")
    return out if len(out) > 5 else []


def verdict(ds: list[tuple[float, float]]) -> str:
    """The rule of the answer table: "better" ("worse") when every seed's difference is positive
    (negative) and outside its own test-row 95% interval; else "not distinguishable"."""
    if ds and all(d > paired.Z95 * se for d, se in ds):
        return "better"
    if ds and all(d < -paired.Z95 * se for d, se in ds):
        return "worse"
    return "not distinguishable"


def answer_table() -> str:
    """Per recipe, task (headline metric) and model pair: the mean difference over seeds, each
    seed's, the mean test-row 95% interval and the verdict, for all / seen / unseen languages; the
    default recipe's (paper) rows first."""
    runs = by_seed()
    out = ["| difference | trained on | task | seeds | all languages | seen | unseen |", "|---|---|---|---|---|---|---|"]
    for train in sorted({t for _, t in runs if t}, key=lambda t: ("paper" not in t, t)):  # the default recipe first
        for a, b in PAIRS:
            for task, (title, _, _) in HEADLINE.items():
                d = differences(runs, a, b, train, task)
                if not d["mean"]:
                    continue
                cells = []
                for split in ("mean", "seen", "unseen"):
                    ds = d[split]
                    m = sum(x for x, _ in ds) / len(ds) if ds else None
                    each = " (" + ", ".join(f"{x:+.3f}" for x, _ in ds) + ")" if len(ds) > 1 else ""
                    ci = paired.Z95 * sum(s for _, s in ds) / len(ds) if ds else None
                    cells.append("-" if m is None else f"{m:+.3f}{each} ±{ci:.3f} {verdict(ds)}")
                out.append(f"| {recipes.LABELS[a]} − {recipes.LABELS[b]} | {train} | {title.split(' (')[0]} | "
                           f"{len(d['mean'])} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def split_note(found) -> str:
    """Which languages count as seen, and so which are unseen in each task, as the JSON files say."""
    seen = {tuple(r["seen_langs"]) for runs in found.values() for rs in runs.values() for r in rs}
    if len(seen) != 1:
        return "Seen: each model's own training languages (they differ between models; see the JSON files)."
    langs = seen.pop()
    unseen = []
    for task in TASKS:
        rs = [r for runs in found.values() for r in runs.get(task, [])]
        if rs:
            path = next(p for _, t, p in SPLIT_COLUMNS if t == task)
            per_lang = get(rs[0], path)["per_lang"]
            unseen.append(f"{task} {' '.join(l for l in per_lang if l not in langs) or '(none)'}")
    return (f"Seen: the training languages of the fine-tuned models, {' '.join(langs)} (the same split for "
            f"zero-shot). Unseen: {'; '.join(unseen)}.")


def tables(found) -> str:
    rows = ordered(found)
    out = ["### Summary: macro means over languages\n",
           "Mean ± sample standard deviation over seeds where there are several. Higher is better, except "
           "TyDi other-lang top-1 (the share of questions whose best passage in the pooled 9-language "
           "index is in another language: language bias).\n",
           "| model | seeds | " + " | ".join(c for c, _, _ in COLUMNS) + " |",
           "|---|---|" + "---|" * len(COLUMNS)]
    for key, runs in rows:
        cells = [fmt([get(r, p)["mean"] for r in runs.get(t, [])]) for _, t, p in COLUMNS]
        out.append(f"| {row_name(key)} | {seeds(runs)} | " + " | ".join(cells) + " |")
    out += ["", "### Seen vs unseen languages\n", split_note(found) + "\n",
            "| model | " + " | ".join(f"{c} {s}" for c, _, _ in SPLIT_COLUMNS for s in ("seen", "unseen")) + " |",
            "|---|" + "---|" * (2 * len(SPLIT_COLUMNS))]
    for key, runs in rows:
        cells = [fmt([get(r, p)[s] for r in runs.get(t, [])]) for _, t, p in SPLIT_COLUMNS for s in ("seen", "unseen")]
        out.append(f"| {row_name(key)} | " + " | ".join(cells) + " |")
    out += difference_table()
    for task, (title, path, extra) in HEADLINE.items():
        runs_of = [(key, runs[task]) for key, runs in rows if task in runs]
        if not runs_of:
            continue
        first = runs_of[0][1][0]
        langs = list(get(first, path)["per_lang"])
        more = list(get(first, extra)["per_lang"]) if extra else []
        mark = lambda l: l if l in first["seen_langs"] else f"{l}*"  # noqa: E731
        out += ["", f"### {title}, per language\n", "\\* unseen in training.\n",
                "| model | " + " | ".join([mark(l) for l in langs] + [f"{mark(l)} (dev)" for l in more]) + " |",
                "|---|" + "---|" * (len(langs) + len(more))]
        for key, runs in runs_of:
            cells = [fmt([get(r, path)["per_lang"][l] for r in runs]) for l in langs]
            cells += [fmt([get(r, extra)["per_lang"][l] for r in runs]) for l in more]
            out.append(f"| {row_name(key)} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def figure_bars(found) -> dict[str, list[tuple[str, dict[str, tuple[float, float, float | None]]]]]:
    """What docs/downstream.png draws: {task: [(row name, {"seen" | "unseen": (mean, ci, sd)})]}, in
    table order. mean: the macro mean over the split's languages (mean over seeds); ci: 1.96 standard
    errors of that macro mean from the test rows (minihbt.downstream.paired against zero, the item as
    the unit where rows are parallel; with several seeds the mean of the seeds' errors); sd: the sample
    sd over seeds, None with one seed (one seed has no seed spread to draw)."""
    out: dict = {}
    for task, (_, path, _) in HEADLINE.items():
        for key, runs in ordered(found):
            if task not in runs:
                continue
            stats = {}
            for split in ("seen", "unseen"):
                means, ses = [], []
                for r in runs[task]:
                    va = values(r, task, recipes.DOWNSTREAM)
                    langs = [l for l in va if (l in r["seen_langs"]) == (split == "seen")]
                    if langs:
                        zero = {l: [0.0] * len(va[l]) for l in langs}
                        m, se = paired.difference(va, zero, langs, items=paired.TASK_ITEMS[task])
                        means.append(m)
                        ses.append(se)
                if means:
                    m, sd = recipes.mean_sd(means)
                    stats[split] = (m, paired.Z95 * sum(ses) / len(ses), sd if len(means) > 1 else None)
            out.setdefault(task, []).append((row_name(key), stats))
    return out


def figure(found, path: Path) -> None:
    """docs/downstream.png from the results (drawn by minihbt/experiments/downstream_figure.py)."""
    downstream_figure.draw(figure_bars(found), {t: h[0] for t, h in HEADLINE.items()}, path)


def report() -> None:
    found = load_results()
    if not found:
        raise UserError(f"no results in {recipes.DOWNSTREAM}: run python experiments/reproduce_downstream.py first")
    doc = recipes.ROOT / "docs" / "DOWNSTREAM.md"
    text = doc.read_text() if doc.is_file() else f"# Downstream\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        raise UserError(f"{doc}: the markers {BEGIN} / {END} are missing")
    for (begin, end), body in ((ANSWER, answer_table()), ((BEGIN, END), tables(found))):
        if begin in text:  # the answer table's markers are optional (a page may not show it)
            head, rest = text.split(begin, 1)
            text = head + begin + "\n" + body + end + rest.split(end, 1)[1]
    atomic_write_bytes(doc, text.encode())
    print(f"wrote {doc}", file=sys.stderr)
    figure(found, recipes.ROOT / "docs" / "downstream.png")
