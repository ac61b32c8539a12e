"""Reproduce the paper's comparison at small scale: X-X vs X-Y vs hybrid batches.

    python reproduce.py                      # train xx, xy, hybrid on XQuAD-R; evaluate on MLQA-R
    python reproduce.py --swap               # also train on MLQA-R and evaluate on XQuAD-R
    python reproduce.py --seeds 0,1,2        # several seeds: tables show the mean and the spread
    python reproduce.py --recipe old         # the recipe of the first reproduction (docs/RESULTS.md)
    python reproduce.py --report             # only rebuild docs/RESULTS.md tables and the figure

Claim under test (Elmahdy et al., arXiv 2408.10536, sections 5-6): X-X batches are best
monolingually, X-Y best cross-lingually, and hybrid batches match or beat both in every setting
while lowering language bias (rank distance). Every model starts from the same pretrained
encoder and is trained with the same budget, batch size and seed(s) by `train.py`; each is then
evaluated zero-shot by `eval.py` on the other dataset (XQuAD-R and MLQA-R share no contexts),
next to the untrained model. The tables add the paper's row and the paired per-seed differences
(hybrid minus X-X, hybrid minus X-Y).

Recipes (--recipe, part of every run and result name), each adding one change to the one before:
- old: the first reproduction's, kept exactly reproducible: in-batch negatives only, false
  negatives left in, no held-out split, the last checkpoint, fp32 and the for-loop AdamW. Its
  names carry no recipe tag (they predate the recipe): runs/reproduce/<train>-<sampler>-s<seed>.
- hardneg: + one hard negative per example from its paragraph (paper eq. 1's triplets).
- masked: + known false negatives masked out of the softmax.
- paper (the default, train.py's defaults pinned here): + 10% of the training groups held out and
  the checkpoint with the best validation score (multilingual mAP on them) evaluated.
- batch32: paper at batch 32. cuda: paper trained (fp32) and evaluated on a GPU (--device cuda).
The three new ones train with train.py's fused AdamW, equal to the for-loop one to fp32 rounding.
Training languages: --langs (the paper's nine, ar de en es hi ru th tr zh) intersected with the
languages the training dataset has: XQuAD-R all nine (el, vi unseen), MLQA-R ar de en es hi zh
(its vi unseen; evaluated on XQuAD-R, el ru th tr vi are unseen there).

Nothing is done twice: a run whose result JSON (and, for a recipe that selects on validation,
selection JSON) is committed is skipped, even in a fresh checkout without runs/; a run whose
checkpoint has reached the last step is not retrained (a stopped one is resumed with
`train.py --resume`), and an evaluation whose JSON exists is not redone. Runs go to `runs/reproduce/`, results to `docs/results/*.json`, and what validation chose
(each check's score, the step evaluated) to `docs/results/selection/<run>.json`; the tables between
the markers in `docs/RESULTS.md` and `docs/results.png` are built from those JSON files alone.
"""
from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

from minihbt.io.files import ArgumentParser, UserError, atomic_write_bytes, recover_dir, run_cli
from minihbt.lareqa import LANGS, TRAIN_LANGS

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "docs" / "results"
SAMPLERS = ("xx", "xy", "hybrid")
LABELS = {"zero-shot": "zero-shot", "xx": "X-X", "xy": "X-Y", "hybrid": "hybrid"}
# The paper's XLM-R hybrid model: mAP mono / cross / multi (Table 1), mean rank distance (Table 2).
PAPER = {"xquad-r": (0.798, 0.705, 0.593, 286.6), "mlqa-r": (0.648, 0.623, 0.512, 227.1)}
BEGIN, END = "<!-- reproduce.py: tables begin -->", "<!-- reproduce.py: tables end -->"
# train.py flags of each recipe; the old one pins what train.py's defaults were when it ran.
RECIPES = {
    "old": ["--hard-negatives", "0", "--false-negatives", "keep", "--val-every", "0", "--dtype", "fp32",
            "--adamw", "for-loop"],
    "hardneg": ["--hard-negatives", "1", "--false-negatives", "keep", "--val-every", "0"],
    "masked": ["--hard-negatives", "1", "--false-negatives", "mask", "--val-every", "0"],
    "paper": ["--hard-negatives", "1", "--false-negatives", "mask", "--val-every", "50", "--val-fraction", "0.1"],
}
# The ablation's batch-size step: the paper recipe at twice the batch, the same 300 steps. A pinned
# batch size is the run's budget (args.batch_size), passed once and checked on resume like any other.
RECIPES["batch32"] = RECIPES["paper"]
BATCH_SIZE = {"batch32": 32}
# The paper recipe on a GPU: only the device differs (fp32, as on the CPU, not train.py's bf16 default
# on cuda); its evaluation encodes on the GPU too. Runs xquad-r-<sampler>-cuda-s<seed>.
RECIPES["cuda"] = RECIPES["paper"] + ["--device", "cuda", "--dtype", "fp32"]
EVAL_FLAGS = {"cuda": ["--device", "cuda"]}  # eval.py flags of a recipe's evaluation (default: none)
# A run's (and its result's) name, as run_name builds it; the old recipe's names carry no tag.
TAGS = "|".join(r for r in RECIPES if r != "old")
RUN = re.compile(rf"(?P<train>.+?)-(?P<sampler>{'|'.join(SAMPLERS)})(?:-(?P<recipe>{TAGS}))?-s(?P<seed>\d+)")
# The old recipe's tables, then the others' (an ablation table across recipes, then each recipe's).
NEW_BEGIN, NEW_END = "<!-- reproduce.py: recipe tables begin -->", "<!-- reproduce.py: recipe tables end -->"


def sh(cmd: list[str]) -> None:
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    t0 = time.time()
    if subprocess.run(cmd, cwd=ROOT).returncode != 0:
        raise UserError(f"command failed: {' '.join(cmd)}")
    print(f"({cmd[1]}: {time.time() - t0:.1f} s)", file=sys.stderr, flush=True)


def trained_step(ckpt: Path, args) -> int:
    """Steps already done by the run in `ckpt` (0: none), refusing a run made with another budget."""
    recover_dir(ckpt)  # a save killed between its two renames left the previous checkpoint aside
    state = ckpt / "trainer.json"
    if not state.is_file():
        return 0
    saved = json.loads(state.read_text())
    budget = {k: saved["config"][k] for k in ("max_steps", "batch_size")}
    if budget != {"max_steps": args.max_steps, "batch_size": args.batch_size}:
        raise UserError(f"{ckpt} was trained with {budget}, not --max-steps {args.max_steps} --batch-size "
                        f"{args.batch_size}; move runs/reproduce and docs/results aside to start afresh")
    return saved["step"]


def result_path(eval_data: str, model: str) -> Path:
    return RESULTS / f"{eval_data}__{model}.json"


def run_name(train_data: str, sampler: str, seed: int, recipe: str) -> str:
    return f"{train_data}-{sampler}" + ("" if recipe == "old" else f"-{recipe}") + f"-s{seed}"


def train_langs(train_data: str, langs: list[str]) -> list[str]:
    """--langs intersected with the languages the training dataset has; none is a user error."""
    have = [l for l in langs if l in LANGS[train_data]]
    if not have:
        raise UserError(f"--langs {','.join(langs)}: none of them is in {train_data} "
                        f"(it has {', '.join(LANGS[train_data])})")
    return have


def selects_on_validation(recipe: str) -> bool:
    """Whether the recipe holds groups out and evaluates the checkpoint they select (checkpoint-best)."""
    flags = RECIPES[recipe]
    return flags[flags.index("--val-every") + 1] != "0"


def train_and_eval(train_data: str, eval_data: str, sampler: str, seed: int, args) -> None:
    name = run_name(train_data, sampler, seed, args.recipe)
    res = result_path(eval_data, name)
    selection = RESULTS / "selection" / f"{name}.json"
    if res.is_file() and (selection.is_file() or not selects_on_validation(args.recipe)):
        return  # finished and committed: runs/ is not, so a fresh checkout must not train it again
    out = Path("runs") / "reproduce" / name  # relative to ROOT, the commands' working directory
    ckpt = out / "checkpoint"
    step = trained_step(ROOT / ckpt, args)
    if step == 0:
        sh([sys.executable, "train.py", "--sampler", sampler, "--train-data", train_data, "--seed", str(seed),
            "--langs", ",".join(train_langs(train_data, args.langs)), *RECIPES[args.recipe],
            "--batch-size", str(args.batch_size), "--max-steps", str(args.max_steps), "--out", str(out),
            "--overwrite"])  # no checkpoint: what a run stopped before its first save left is replaced
    elif step < args.max_steps:
        sh([sys.executable, "train.py", "--resume", str(ckpt)])
    model = out / ("checkpoint-best" if selects_on_validation(args.recipe) else "checkpoint")
    if selects_on_validation(args.recipe):
        record_selection(name, ROOT / out)
    if not res.is_file():
        sh([sys.executable, "eval.py", "--dataset", eval_data, "--model", str(model), "--out", str(res.relative_to(ROOT)),
            *EVAL_FLAGS.get(args.recipe, [])])


def record_selection(name: str, out: Path) -> None:
    """docs/results/selection/<run>.json: the run's validation scores by step and the step its
    checkpoint-best holds, so that RESULTS.md says what was chosen on what without runs/ (not
    committed). The log keeps only the steps that led to the checkpoint (train.py), one line each."""
    lines = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()]
    scores = {str(l["step"]): l["val_map_multi"] for l in lines if "val_map_multi" in l}
    chosen = json.loads((out / "checkpoint-best" / "minihbt.json").read_text())["provenance"]["step"]
    atomic_write_bytes(RESULTS / "selection" / f"{name}.json",
                       (json.dumps({"val_map_multi": scores, "chosen_step": chosen}, indent=1) + "\n").encode())


def reproduce(args) -> None:
    pairs = [("xquad-r", "mlqa-r")] + ([("mlqa-r", "xquad-r")] if args.swap else [])
    for train_data, _ in pairs:
        train_langs(train_data, args.langs)  # fail before the first hour of training, not after
    for train_data, eval_data in pairs:
        zero = result_path(eval_data, "zero-shot")
        if not zero.is_file():
            sh([sys.executable, "eval.py", "--dataset", eval_data, "--model", "e5-small", "--out", str(zero.relative_to(ROOT))])
        for seed in args.seeds:
            for sampler in args.samplers:
                t0 = time.time()
                train_and_eval(train_data, eval_data, sampler, seed, args)
                print(f"{run_name(train_data, sampler, seed, args.recipe)}: {time.time() - t0:.0f} s", file=sys.stderr)


# ----------------------------------------------------------------------------- report

def load_results(recipe: str = "old") -> dict[tuple[str, str, str], list[dict]]:
    """{(eval dataset, model label, training dataset): [result per seed, in seed order]} of one recipe
    (and the untrained model) from docs/results/*.json."""
    found: dict[tuple[str, str, str], list[tuple[int, dict]]] = {}
    for path in sorted(RESULTS.glob("*.json")):
        eval_data, _, model = path.stem.partition("__")
        m = RUN.fullmatch(model)
        if model != "zero-shot" and m is None:
            raise UserError(f"{path}: not a reproduce.py result (expected <eval>__zero-shot.json or "
                            f"<eval>__<train>-<xx|xy|hybrid>[-<{TAGS}>]-s<seed>.json)")
        if model != "zero-shot" and (m["recipe"] or "old") != recipe:
            continue
        key = (eval_data, "zero-shot", "") if model == "zero-shot" else (eval_data, m["sampler"], m["train"])
        seed = -1 if model == "zero-shot" else int(m["seed"])
        found.setdefault(key, []).append((seed, json.loads(path.read_text())))
    return {k: [r | {"seed": seed} for seed, r in sorted(v, key=lambda x: x[0])] for k, v in found.items()}


def mean_sd(values: list[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    return m, (math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0)


def fmt(values: list[float], digits: int = 3) -> str:
    m, sd = mean_sd(values)
    return f"{m:.{digits}f}" + (f" ± {sd:.{digits}f}" if len(values) > 1 else "")


def tables(found, recipe: str = "old") -> str:
    out = []
    for eval_data in sorted({k[0] for k in found}, reverse=True):
        rows = [(label, train, runs) for (e, label, train), runs in found.items() if e == eval_data]
        if all(label == "zero-shot" for label, _, _ in rows):
            continue  # nothing of this recipe was evaluated there yet: no table of the zero-shot row alone
        rows.sort(key=lambda r: list(LABELS).index(r[0]))
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
            out.append(f"| {LABELS[label]} (e5-small) | {train or '-'} | " + " | ".join(cells) + " |")
        p = PAPER[eval_data]
        out.append(f"| paper, hybrid (XLM-R, Tables 1-2) | their training data | {p[0]:.3f} | {p[1]:.3f} | {p[2]:.3f} | "
                   f"{p[3]:.1f} | | | |\n")
        out += paired_differences(rows)
        for setting, field in (("mono", "per_lang"), ("multi", "per_lang")):
            out.append(f"{setting} mAP per language:\n")
            out.append("| model | " + " | ".join(langs) + " |")
            out.append("|---|" + "---|" * len(langs))
            for label, _, runs in rows:
                out.append(f"| {LABELS[label]} | " + " | ".join(
                    fmt([r["map"][setting][field][l] for r in runs]) for l in langs) + " |")
            out.append("")
        out.append("cross mAP per query language (mean over its candidate languages):\n")
        out.append("| model | " + " | ".join(langs) + " |")
        out.append("|---|" + "---|" * len(langs))
        for label, _, runs in rows:
            cells = [fmt([query_mean(r["map"]["cross"]["per_pair"], l, r["langs"]) for r in runs]) for l in langs]
            out.append(f"| {LABELS[label]} | " + " | ".join(cells) + " |")
        out.append("\nrank distance per query language:\n")
        out.append("| model | " + " | ".join(langs) + " |")
        out.append("|---|" + "---|" * len(langs))
        for label, _, runs in rows:
            out.append(f"| {LABELS[label]} | " + " | ".join(fmt([r["rank_distance"]["per_lang"][l] for r in runs], 1)
                                                          for l in langs) + " |")
        out.append("")
    return "\n".join(out)


METRICS = {"mono mAP": lambda r: r["map"]["mono"]["mean"], "cross mAP": lambda r: r["map"]["cross"]["mean"],
           "multi mAP": lambda r: r["map"]["multi"]["mean"], "rank distance": lambda r: r["rank_distance"]["mean"]}


def paired_differences(rows) -> list[str]:
    """Hybrid minus X-X and minus X-Y, seed by seed (same seed: same start, same data seed), as a
    table: mean ± standard deviation over seeds, then each seed's difference."""
    by = {(label, train): {r.get("seed", i): r for i, r in enumerate(runs)} for label, train, runs in rows
          if label != "zero-shot"}
    lines = []
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
                m, sd = mean_sd(d)
                cells.append(f"{m:+.{digits}f}" + (f" ± {sd:.{digits}f}" if len(d) > 1 else "")
                             + " (" + ", ".join(f"{x:+.{digits}f}" for x in d) + ")")
            lines.append(f"| hybrid - {LABELS[other]} | {train} | {','.join(map(str, seeds))} | " + " | ".join(cells) + " |")
    if not lines:
        return []
    return ["Paired differences, hybrid minus X-X and minus X-Y, taken seed by seed (a seed fixes the start, "
            "the sampler's seed and the dropout stream): mean ± standard deviation over the seeds, then each "
            "seed's difference. Positive is better for mAP, negative for rank distance.\n",
            "| difference | trained on | seeds | " + " | ".join(METRICS) + " |", "|---|---|---|" + "---|" * len(METRICS),
            *lines, ""]


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
                  key=lambda r: list(LABELS).index(r[0]))
    fig, (ax, hx) = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [1, 1.1]})
    settings = ("mono", "cross", "multi")
    width = 0.8 / len(rows)
    for i, (label, runs) in enumerate(rows):
        means = [mean_sd([r["map"][s]["mean"] for r in runs])[0] for s in settings]
        ax.bar(np.arange(3) + i * width, means, width, label=LABELS[label])
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
    runs = {p.stem: json.loads(p.read_text()) for p in sorted((RESULTS / "selection").glob("*.json"))
            if (m := RUN.fullmatch(p.stem)) and m["recipe"] == recipe}
    if not runs:
        return ""
    steps = sorted({int(s) for r in runs.values() for s in r["val_map_multi"]})
    flags = RECIPES[recipe]
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
        raise UserError(f"no results in {RESULTS}: run python reproduce.py first")
    doc = ROOT / "docs" / "RESULTS.md"
    text = doc.read_text() if doc.is_file() else f"# Results\n\n{BEGIN}\n{END}\n"
    text = replace_between(text, BEGIN, END, tables(found), doc)
    by_recipe = {r: load_results(r) for r in RECIPES}
    trained = [r for r in RECIPES if r != "old" and any(label != "zero-shot" for _, label, _ in by_recipe[r])]
    if trained:
        body = [ablation({r: by_recipe[r] for r in ["old", *trained]})]
        body += [t for r in trained for t in (tables(by_recipe[r], r), selection(r))]
        text = replace_between(text, NEW_BEGIN, NEW_END, "\n".join(b for b in body if b), doc)
    atomic_write_bytes(doc, text.encode())
    print(f"wrote {doc}", file=sys.stderr)
    figure(found, ROOT / "docs" / "results.png")


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--swap", action="store_true", help="also train on mlqa-r and evaluate on xquad-r")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (0)")
    p.add_argument("--samplers", default=",".join(SAMPLERS), help="comma-separated, e.g. hybrid for an ablation "
                                                                  f"({','.join(SAMPLERS)})")
    p.add_argument("--max-steps", type=int, default=None, help="training steps per run (train.py's default)")
    p.add_argument("--batch-size", type=int, default=None, help="batch size per run (train.py's default)")
    p.add_argument("--recipe", choices=list(RECIPES), default="paper",
                   help="paper (hard negatives, masking, validation selection), old (the first reproduction's), "
                        "or the steps between: hardneg (+ hard negatives), masked (+ masking); "
                        "batch32: paper at batch 32; cuda: paper on a GPU (fp32)")
    p.add_argument("--langs", default=",".join(TRAIN_LANGS),
                   help="training languages, intersected with each training dataset's (the paper's nine)")
    p.add_argument("--report", action="store_true", help="only rebuild the tables and the figure")
    args = p.parse_args(argv)
    args.langs = [l for l in args.langs.split(",") if l]
    try:
        args.seeds = [int(s) for s in args.seeds.split(",") if s]
    except ValueError:
        raise UserError(f"--seeds: expected comma-separated integers, got {args.seeds!r}") from None
    args.samplers = [x for x in args.samplers.split(",") if x]
    if not args.samplers or any(x not in SAMPLERS for x in args.samplers):
        raise UserError(f"--samplers: expected some of {', '.join(SAMPLERS)}, got {','.join(args.samplers) or 'none'}")
    if not args.report:
        from train import TrainConfig  # the budget is train.py's default unless given

        d = TrainConfig()
        pinned = BATCH_SIZE.get(args.recipe)
        if pinned and args.batch_size not in (None, pinned):
            raise UserError(f"--batch-size {args.batch_size}: --recipe {args.recipe} trains at batch {pinned}")
        args.max_steps = args.max_steps or d.max_steps
        args.batch_size = args.batch_size or pinned or d.batch_size
        reproduce(args)
    report()
    return 0


if __name__ == "__main__":
    run_cli(main)
