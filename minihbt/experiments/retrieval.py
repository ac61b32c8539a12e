"""The retrieval experiment's runner: train X-X, X-Y and hybrid models with train.py, evaluate each
with eval.py on the other LAReQA dataset, record what validation chose (experiments/reproduce.py).

Nothing is done twice: a run whose result JSON (and, for a recipe that selects on validation,
selection JSON) is committed and whose checkpoint is not here is skipped, even in a fresh checkout
without runs/; a run whose checkpoint has reached the last step is not retrained (a stopped one
is resumed with `train.py --resume`), and an evaluation whose JSON is of the checkpoint at hand
(its "model_fingerprint") is not redone; one of another model (a retrained run), or with no
fingerprint, is evaluated again. `train_and_eval(..., need_model=True)` (reproduce_downstream.py
asking for a model) also trains a run whose result is committed but whose checkpoint is missing.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from minihbt.config import SAMPLERS, TRAIN_LANGS, TrainConfig
from minihbt.experiments import recipes, retrieval_report
from minihbt.io.files import ArgumentParser, UserError, atomic_write_bytes, recover_dir


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


def budget(recipe: str, max_steps: int | None = None, batch_size: int | None = None,
           langs: list[str] = TRAIN_LANGS) -> argparse.Namespace:
    """What train_and_eval reads of the command line: the recipe, its budget (train.py's defaults
    unless given; a recipe may pin the batch size) and the training languages."""
    d, pinned = TrainConfig(), recipes.BATCH_SIZE.get(recipe)
    if pinned and batch_size not in (None, pinned):
        raise UserError(f"--batch-size {batch_size}: --recipe {recipe} trains at batch {pinned}")
    return argparse.Namespace(recipe=recipe, max_steps=max_steps or d.max_steps,
                              batch_size=batch_size or pinned or d.batch_size, langs=list(langs))


def train_and_eval(train_data: str, eval_data: str, sampler: str, seed: int, args, need_model: bool = False) -> Path:
    """Train (or resume) the run and evaluate its model unless done; its model directory (relative
    to recipes.ROOT). need_model: train it even where its result is committed and it is not here."""
    name = recipes.run_name(train_data, sampler, seed, args.recipe)
    res = recipes.result_path(eval_data, name)
    selection = recipes.RESULTS / "selection" / f"{name}.json"
    out = Path("runs") / "reproduce" / name  # relative to recipes.ROOT, the commands' working directory
    ckpt = out / "checkpoint"
    model = out / ("checkpoint-best" if recipes.selects_on_validation(args.recipe) else "checkpoint")
    step = trained_step(recipes.ROOT / ckpt, args)
    if step == 0 and not need_model and res.is_file() and (
            selection.is_file() or not recipes.selects_on_validation(args.recipe)):
        if "per_query" in json.loads(res.read_text()):
            print(f"{name}: result committed, no checkpoint here: not trained (experiments/reproduce_downstream.py "
                  f"--models {name} trains it)", file=sys.stderr)
            return model  # finished and committed: runs/ is not, so a fresh checkout must not train it again
        # a result from before results kept each query's values: RESULTS.md's test-row intervals need them
        print(f"{name}: result committed without per-query values: trained again for them", file=sys.stderr)
    if step == 0:
        recipes.sh([sys.executable, "train.py", "--sampler", sampler, "--train-data", train_data, "--seed", str(seed),
            "--langs", ",".join(recipes.train_langs(train_data, args.langs)), *recipes.RECIPES[args.recipe],
            "--batch-size", str(args.batch_size), "--max-steps", str(args.max_steps), "--out", str(out),
            "--overwrite"])  # no checkpoint: what a run stopped before its first save left is replaced
    elif step < args.max_steps:
        recipes.sh([sys.executable, "train.py", "--resume", str(ckpt)])
    if recipes.selects_on_validation(args.recipe):
        record_selection(name, recipes.ROOT / out)
    if not recipes.of_model(res, recipes.ROOT / model):  # none yet, or of another model (a retrained run)
        recipes.sh([sys.executable, "eval.py", "--dataset", eval_data, "--model", str(model), "--out", str(res.relative_to(recipes.ROOT)),
            *recipes.EVAL_FLAGS.get(args.recipe, [])])
    return model


def record_selection(name: str, out: Path) -> None:
    """docs/results/selection/<run>.json: the run's validation scores by step and the step its
    checkpoint-best holds, so that RESULTS.md says what was chosen on what without runs/ (not
    committed). The log keeps only the steps that led to the checkpoint (train.py), one line each."""
    lines = [json.loads(l) for l in (out / "log.jsonl").read_text().splitlines()]
    scores = {str(l["step"]): l["val_map_multi"] for l in lines if "val_map_multi" in l}
    chosen = json.loads((out / "checkpoint-best" / "minihbt.json").read_text())["provenance"]["step"]
    atomic_write_bytes(recipes.RESULTS / "selection" / f"{name}.json",
                       (json.dumps({"val_map_multi": scores, "chosen_step": chosen}, indent=1) + "\n").encode())


def reproduce(args) -> None:
    pairs = [("xquad-r", "mlqa-r")] + ([("mlqa-r", "xquad-r")] if args.swap else [])
    for train_data, _ in pairs:
        recipes.train_langs(train_data, args.langs)  # fail before the first hour of training, not after
    for train_data, eval_data in pairs:
        zero = recipes.result_path(eval_data, "zero-shot")
        if not zero.is_file():
            recipes.sh([sys.executable, "eval.py", "--dataset", eval_data, "--model", "e5-small", "--out", str(zero.relative_to(recipes.ROOT))])
        for seed in args.seeds:
            for sampler in args.samplers:
                t0 = time.time()
                train_and_eval(train_data, eval_data, sampler, seed, args)
                print(f"{recipes.run_name(train_data, sampler, seed, args.recipe)}: {time.time() - t0:.0f} s", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python experiments/reproduce.py", description="Reproduce the paper's comparison at small scale: X-X vs X-Y vs hybrid batches.")
    p.add_argument("--swap", action="store_true", help="also train on mlqa-r and evaluate on xquad-r")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (0)")
    p.add_argument("--samplers", default=",".join(SAMPLERS), help="comma-separated, e.g. hybrid for an ablation "
                                                                  f"({','.join(SAMPLERS)})")
    p.add_argument("--max-steps", type=int, default=None, help="training steps per run (train.py's default)")
    p.add_argument("--batch-size", type=int, default=None, help="batch size per run (train.py's default)")
    p.add_argument("--recipe", choices=list(recipes.RECIPES), default="paper",
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
        b = budget(args.recipe, args.max_steps, args.batch_size, args.langs)  # train.py's defaults unless given
        args.max_steps, args.batch_size = b.max_steps, b.batch_size
        reproduce(args)
    retrieval_report.report()
    return 0
