"""Downstream comparison: do X-X, X-Y or hybrid batches help XNLI, TyDi QA, SIB-200 and Tatoeba?

    python experiments/reproduce_downstream.py                        # every model present, every task
    python experiments/reproduce_downstream.py --models zero-shot     # some models (comma-separated names)
    python experiments/reproduce_downstream.py --tasks xnli,tatoeba   # some tasks
    python experiments/reproduce_downstream.py --report               # only rebuild docs/DOWNSTREAM.md and the figure

Models: "zero-shot" (e5-small as released) and every finished `reproduce.py` run (finished:
trainer.json's step has reached its max_steps), named as in reproduce.py,
"<train>-<xx|xy|hybrid>[-<recipe>]-s<seed>": its checkpoint-best where the recipe selects on
held-out groups (paper), else its last checkpoint. A run named in --models that is not here
(or not finished) is trained first, as reproduce.py trains it (and evaluated on LAReQA), even
where its LAReQA result is committed:

    python experiments/reproduce_downstream.py --models xquad-r-xx-s1,xquad-r-xy-s1,xquad-r-hybrid-s1

Each (task, model) is one `eval.py --dataset <task> --model <dir> --out
docs/downstream/<task>__<model>.json`; a JSON of the model at hand (its "model_fingerprint") is
not redone, so the command resumes where it stopped, and one of another model is. The protocol is
minihbt/downstream.py's. The tables between the markers in docs/DOWNSTREAM.md and
docs/downstream.png are built from those JSON files alone, the paired differences (hybrid minus
X-X, ...: same seed, same test rows) from their per-row values with minihbt.paired, the item as
the unit where the languages' test rows are parallel (paired.TASK_ITEMS: XNLI, SIB-200).
"""
import sys
from pathlib import Path

# This checkout's minihbt first, whatever `pip install -e` points at: a clone pinned at a commit
# (git clone . ../exp) runs, trains and writes with its own code, into its own runs/ and docs/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from minihbt.experiments.downstream_runs import main  # noqa: E402
from minihbt.io.files import run_cli  # noqa: E402

if __name__ == "__main__":
    run_cli(main)
