"""The experiments' recipes and names, defined once for both experiment scripts.

A recipe is a set of today's train.py flags (and eval.py flags for its evaluation); every run and
result is named `<train data>-<sampler>[-<recipe>]-s<seed>` (the old recipe's names carry no tag:
they predate recipes). `RUN` parses a name back; `run_name` builds one. Results live in
docs/results/ (LAReQA) and docs/downstream/ (the downstream suite), runs in runs/reproduce/.
"""
from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import time
from pathlib import Path

from minihbt.config import SAMPLERS
from minihbt.io.files import UserError
from minihbt.lareqa import LANGS

ROOT = Path(__file__).resolve().parents[2]  # the checkout: train.py, eval.py, docs/, runs/
RESULTS = ROOT / "docs" / "results"
DOWNSTREAM = ROOT / "docs" / "downstream"
LABELS = {"zero-shot": "zero-shot", "xx": "X-X", "xy": "X-Y", "hybrid": "hybrid"}
# The paper's XLM-R hybrid model: mAP mono / cross / multi (Table 1), mean rank distance (Table 2).
PAPER = {"xquad-r": (0.798, 0.705, 0.593, 286.6), "mlqa-r": (0.648, 0.623, 0.512, 227.1)}

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


def sh(cmd: list[str]) -> None:
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    t0 = time.time()
    if subprocess.run(cmd, cwd=ROOT).returncode != 0:
        raise UserError(f"command failed: {' '.join(cmd)}")
    print(f"({cmd[1]}: {time.time() - t0:.1f} s)", file=sys.stderr, flush=True)


def result_path(eval_data: str, model: str) -> Path:
    return RESULTS / f"{eval_data}__{model}.json"


_FINGERPRINTS: dict = {}


def model_fingerprint(model_dir: Path) -> str:
    """TextEncoder.fingerprint of a model directory, as eval.py records it in a result's
    "model_fingerprint" (fp32): loaded and hashed once per version of its files in a process."""
    model_dir = Path(model_dir).resolve()
    version = (str(model_dir), tuple(sorted((f.name, f.stat().st_mtime_ns, f.stat().st_size)
                                            for f in model_dir.iterdir() if f.is_file())))
    if version not in _FINGERPRINTS:
        from minihbt import load_encoder  # torch: only when a result has to be checked
        _FINGERPRINTS[version] = load_encoder(model_dir).fingerprint
    return _FINGERPRINTS[version]


def of_model(result: Path, model_dir: Path) -> bool:
    """Whether the result JSON `result` exists and is of the model in `model_dir` (its stored
    "model_fingerprint" is that model's; a result without one, written before results stored it,
    is of no model that can be checked). The model is hashed only if the result exists."""
    if not result.is_file():
        return False
    stored = json.loads(result.read_text()).get("model_fingerprint")
    if stored is not None and stored == model_fingerprint(model_dir):
        return True
    print(f"{result.relative_to(ROOT) if result.is_relative_to(ROOT) else result}: of model "
          f"{stored or '(no fingerprint)'}, not of {model_dir} ({model_fingerprint(model_dir)}): evaluated again",
          file=sys.stderr, flush=True)
    return False


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


def mean_sd(values: list[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    return m, (math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0)
