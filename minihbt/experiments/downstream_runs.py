"""The downstream experiment's runner: every finished experiment run (and e5-small zero-shot) on
XNLI, TyDi QA, SIB-200 and Tatoeba, one `eval.py --dataset <task> --model <dir> --out
docs/downstream/<task>__<model>.json` each (experiments/reproduce_downstream.py).

Models: "zero-shot" (e5-small as released) and every finished run of runs/reproduce/ (finished:
trainer.json's step has reached its max_steps), named as recipes.run_name names it: its
checkpoint-best where the recipe selects on held-out groups, else its last checkpoint. A run named
in --models that is not here (or not finished) is trained first, by the retrieval runner
(minihbt/experiments/retrieval.py, with its recipe's budget; it evaluates it on LAReQA too), even
where its LAReQA result is committed: asking for a model trains it. A JSON that exists is not
redone if it is of the model at hand (its "model_fingerprint"; zero-shot's is not checked), so the
command resumes where it stopped; one of another model (a retrained run) is evaluated again. The
protocol is minihbt/downstream/tasks.py's.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time

from minihbt.experiments import downstream_report, recipes, retrieval
from minihbt.io.files import ArgumentParser, UserError

TASKS = ("xnli", "tydiqa", "sib-200", "tatoeba")
EVALUATED_ON = {"xquad-r": "mlqa-r", "mlqa-r": "xquad-r"}  # a run's LAReQA evaluation (experiments/reproduce.py)


def models() -> dict[str, str]:
    """{name: model argument for eval.py}: zero-shot, then every finished experiments/reproduce.py run."""
    found = {"zero-shot": "e5-small"}
    for ckpt in sorted((recipes.ROOT / "runs" / "reproduce").glob("*/checkpoint")):
        state = ckpt / "trainer.json"
        if (m := recipes.RUN.fullmatch(ckpt.parent.name)) and state.is_file():
            saved = json.loads(state.read_text())
            if saved["step"] >= saved["config"]["max_steps"]:
                best = recipes.selects_on_validation(m["recipe"] or "old")  # the model experiments/reproduce.py evaluated
                found[ckpt.parent.name] = str((ckpt.parent / "checkpoint-best" if best else ckpt).relative_to(recipes.ROOT))
    return found


def training(m: re.Match) -> str:
    """A run's training data and recipe, as its rows show them: "xquad-r" (old), "xquad-r, paper"."""
    return m["train"] + (f", {m['recipe']}" if m["recipe"] else "")


def model_name(sampler: str, train: str, seed: int) -> str:
    """The result name of a run of `sampler` under `training(...)` == train (inverse of recipes.RUN)."""
    data, _, recipe = train.partition(", ")
    return recipes.run_name(data, sampler, seed, recipe or "old")


def trainable(name: str) -> re.Match | None:
    """The parts of a run name that experiments/reproduce.py trains (recipes.RUN), else None."""
    m = recipes.RUN.fullmatch(name)
    return m if m and m["train"] in EVALUATED_ON else None


def evaluate(names: list[str], tasks: list[str], device: str = "cpu") -> None:
    available = models()
    for name in names:
        if name not in available and (m := trainable(name)):  # asked for: trained (or finished) now
            recipe = m["recipe"] or "old"
            retrieval.train_and_eval(m["train"], EVALUATED_ON[m["train"]], m["sampler"], int(m["seed"]),
                                     retrieval.budget(recipe), need_model=True)
            available = models()
    unknown = [n for n in names if n not in available]
    if unknown:
        raise UserError(f"--models: {', '.join(unknown)} not found or not finished; available: {', '.join(available)}")
    recipes.DOWNSTREAM.mkdir(parents=True, exist_ok=True)
    for name in names:
        for task in tasks:
            out = recipes.DOWNSTREAM / f"{task}__{name}.json"
            if out.is_file() and (name == "zero-shot" or recipes.of_model(out, recipes.ROOT / available[name])):
                continue  # done, of this model
            cmd = [sys.executable, "eval.py", "--dataset", task, "--model", available[name],
                   "--out", str(out.relative_to(recipes.ROOT)), *(["--device", device] if device != "cpu" else [])]
            print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
            t0 = time.time()
            if subprocess.run(cmd, cwd=recipes.ROOT).returncode != 0:
                raise UserError(f"command failed: {' '.join(cmd)}")
            print(f"{task} / {name}: {time.time() - t0:.0f} s", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python experiments/reproduce_downstream.py", description="Downstream comparison: do X-X, X-Y or hybrid batches help XNLI, TyDi QA, SIB-200 and Tatoeba?")
    p.add_argument("--models", help="comma-separated model names (default: every one present)")
    p.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated tasks ({','.join(TASKS)})")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where eval.py encodes (cpu)")
    p.add_argument("--report", action="store_true", help="only rebuild the tables and the figure")
    args = p.parse_args(argv)
    tasks = [t for t in args.tasks.split(",") if t]
    bad = [t for t in tasks if t not in TASKS]
    if bad or not tasks:
        raise UserError(f"--tasks: expected some of {', '.join(TASKS)}, got {args.tasks!r}")
    if not args.report:
        names = [n for n in args.models.split(",") if n] if args.models else list(models())
        evaluate(names, tasks, args.device)
    downstream_report.report()
    return 0
