"""Reproduce the paper's comparison at small scale: X-X vs X-Y vs hybrid batches.

    python experiments/reproduce.py                      # train xx, xy, hybrid on XQuAD-R; evaluate on MLQA-R
    python experiments/reproduce.py --swap               # also train on MLQA-R and evaluate on XQuAD-R
    python experiments/reproduce.py --seeds 0,1,2        # several seeds: tables show the mean and the spread
    python experiments/reproduce.py --recipe old         # the recipe of the first reproduction (docs/RESULTS.md)
    python experiments/reproduce.py --report             # only rebuild docs/RESULTS.md tables and the figure

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
selection JSON) is committed and whose checkpoint is not here is skipped, even in a fresh checkout
without runs/ (`experiments/reproduce_downstream.py --models <run>` trains it when its model is
needed); a run whose checkpoint has reached the last step is not retrained (a stopped one is
resumed with `train.py --resume`), and an evaluation whose JSON is of the checkpoint at hand (its
"model_fingerprint") is not redone, while one of another model (a retrained run) is. Runs go to `runs/reproduce/`, results to `docs/results/*.json`, and what validation chose
(each check's score, the step evaluated) to `docs/results/selection/<run>.json`; the tables between
the markers in `docs/RESULTS.md` and `docs/results.png` are built from those JSON files alone.
"""
import sys
from pathlib import Path

# This checkout's minihbt first, whatever `pip install -e` points at: a clone pinned at a commit
# (git clone . ../exp) runs, trains and writes with its own code, into its own runs/ and docs/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from minihbt.experiments.retrieval import main  # noqa: E402
from minihbt.io.files import run_cli  # noqa: E402

if __name__ == "__main__":
    run_cli(main)
