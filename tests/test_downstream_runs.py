"""minihbt/experiments/downstream_runs.py: which models the downstream experiment evaluates, and the
eval.py commands it runs (collected here, not run), skipping what is done."""
import json
import subprocess

import pytest

from minihbt.experiments import downstream_runs, recipes
from minihbt.io.files import UserError
from test_downstream_report import NAME


def test_models_evaluates_what_reproduce_evaluated(tmp_path, monkeypatch):
    """The paper recipe's checkpoint chosen on held-out groups; a recipe without validation: the last."""
    monkeypatch.setattr(recipes, "ROOT", tmp_path)
    for name in ("xquad-r-hybrid-paper-s0", "xquad-r-hybrid-hardneg-s0"):
        ckpt = tmp_path / "runs" / "reproduce" / name / "checkpoint"
        ckpt.mkdir(parents=True)
        (ckpt / "trainer.json").write_text(json.dumps({"step": 300, "config": {"max_steps": 300}}))
    assert downstream_runs.models() == {"zero-shot": "e5-small",
                           "xquad-r-hybrid-hardneg-s0": "runs/reproduce/xquad-r-hybrid-hardneg-s0/checkpoint",
                           "xquad-r-hybrid-paper-s0": "runs/reproduce/xquad-r-hybrid-paper-s0/checkpoint-best"}


def test_evaluate_runs_eval_py_per_task_and_skips_done(tmp_path, monkeypatch):
    monkeypatch.setattr(recipes, "ROOT", tmp_path)
    monkeypatch.setattr(recipes, "DOWNSTREAM", tmp_path / "docs" / "downstream")
    ckpt = tmp_path / "runs" / "reproduce" / "xquad-r-xy-s1" / "checkpoint"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer.json").write_text(json.dumps({"step": 300, "config": {"max_steps": 300}}))
    unfinished = tmp_path / "runs" / "reproduce" / "xquad-r-xx-s1" / "checkpoint"
    unfinished.mkdir(parents=True)
    (unfinished / "trainer.json").write_text(json.dumps({"step": 100, "config": {"max_steps": 300}}))
    assert downstream_runs.models() == {"zero-shot": "e5-small", "xquad-r-xy-s1": "runs/reproduce/xquad-r-xy-s1/checkpoint"}
    calls = []

    def fake_run(cmd, cwd):
        calls.append(cmd[2:])
        (cwd / cmd[cmd.index("--out") + 1]).write_text("{}")
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(downstream_runs.subprocess, "run", fake_run)
    (recipes.DOWNSTREAM).mkdir(parents=True)
    (recipes.DOWNSTREAM / "xnli__zero-shot.json").write_text("{}")  # done before: not redone
    downstream_runs.evaluate(["zero-shot", "xquad-r-xy-s1"], ["xnli", "tatoeba"])
    assert calls == [["--dataset", "tatoeba", "--model", "e5-small", "--out", "docs/downstream/tatoeba__zero-shot.json"],
                     ["--dataset", "xnli", "--model", "runs/reproduce/xquad-r-xy-s1/checkpoint",
                      "--out", "docs/downstream/xnli__xquad-r-xy-s1.json"],
                     ["--dataset", "tatoeba", "--model", "runs/reproduce/xquad-r-xy-s1/checkpoint",
                      "--out", "docs/downstream/tatoeba__xquad-r-xy-s1.json"]]
    with pytest.raises(UserError, match="xquad-r-xx not found or not finished"):  # not a run name
        downstream_runs.evaluate(["xquad-r-xx"], ["xnli"])
    calls.clear()
    downstream_runs.evaluate(["xquad-r-xy-s1"], ["sib-200"], "cuda")  # a model trained on a GPU, evaluated there
    assert calls == [["--dataset", "sib-200", "--model", "runs/reproduce/xquad-r-xy-s1/checkpoint",
                      "--out", "docs/downstream/sib-200__xquad-r-xy-s1.json", "--device", "cuda"]]
    assert NAME.fullmatch("xquad-r-hybrid-cuda-s1")["recipe"] == "cuda" == recipes.RUN.fullmatch("xquad-r-hybrid-cuda-s1")["recipe"]


def test_a_named_model_that_is_not_here_is_trained_and_old_results_redone(tmp_path, monkeypatch):
    """docs/DOWNSTREAM.md's next step: the old recipe's seed-1 models, whose LAReQA results are
    committed but whose checkpoints are not (runs/ is not committed). Asking for one trains it
    (through the retrieval runner, the old recipe's flags), and its committed results, of the
    model that was trained then, are evaluated again for the model trained now."""
    from minihbt.config import TrainConfig
    from minihbt.experiments import downstream_report, retrieval, retrieval_report

    monkeypatch.setattr(recipes, "ROOT", tmp_path)
    monkeypatch.setattr(recipes, "RESULTS", tmp_path / "docs" / "results")
    monkeypatch.setattr(recipes, "DOWNSTREAM", tmp_path / "docs" / "downstream")
    monkeypatch.setattr(retrieval_report, "report", lambda: None)
    monkeypatch.setattr(downstream_report, "report", lambda: None)
    monkeypatch.setattr(recipes, "model_fingerprint", lambda d: "new", raising=False)
    name = "xquad-r-hybrid-s1"
    for path in (recipes.RESULTS / f"mlqa-r__{name}.json", recipes.DOWNSTREAM / f"xnli__{name}.json"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"model_fingerprint": "old"}))  # committed, of the model trained back then
    ran = []

    def sh(cmd):  # train.py leaves a finished run; eval.py a result
        ran.append(cmd[1:])
        flags = dict(zip(cmd[2::2], cmd[3::2]))
        if cmd[1] == "train.py":
            cfg = TrainConfig()
            ckpt = tmp_path / flags["--out"] / "checkpoint"
            ckpt.mkdir(parents=True)
            (ckpt / "trainer.json").write_text(json.dumps(
                {"step": cfg.max_steps, "config": {"max_steps": cfg.max_steps, "batch_size": cfg.batch_size}}))

    def fake_run(cmd, cwd):
        ran.append(cmd[1:])
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(recipes, "sh", sh)
    monkeypatch.setattr(downstream_runs.subprocess, "run", fake_run)
    assert downstream_runs.main(["--models", name, "--tasks", "xnli"]) == 0
    out = f"runs/reproduce/{name}"
    assert [c[0] for c in ran] == ["train.py", "eval.py", "eval.py"]
    train = ran[0]
    assert train[train.index("--out") + 1] == out and train[train.index("--seed") + 1] == "1"
    assert all(f in train for f in recipes.RECIPES["old"])
    assert ran[1] == ["eval.py", "--dataset", "mlqa-r", "--model", f"{out}/checkpoint",
                      "--out", f"docs/results/mlqa-r__{name}.json"]
    assert ran[2] == ["eval.py", "--dataset", "xnli", "--model", f"{out}/checkpoint",
                      "--out", f"docs/downstream/xnli__{name}.json"]

    # Once the results are of the model at hand, nothing is done again.
    monkeypatch.setattr(recipes, "model_fingerprint", lambda d: "old", raising=False)
    ran.clear()
    assert downstream_runs.main(["--models", name, "--tasks", "xnli"]) == 0
    assert ran == []


@pytest.mark.parametrize("script", ["reproduce.py", "reproduce_downstream.py"])
def test_an_experiment_script_runs_its_own_checkouts_code(tmp_path, script):
    """A clone pinned at a commit (git clone . ../exp) must not run the minihbt that an editable
    install points at: here a decoy package stands first on PYTHONPATH and would fail the import."""
    import os
    import sys
    from pathlib import Path
    decoy = tmp_path / "minihbt"
    decoy.mkdir()
    (decoy / "__init__.py").write_text("raise ImportError('the decoy minihbt, not this checkout')\n")
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    r = subprocess.run([sys.executable, str(root / "experiments" / script), "--help"], cwd=tmp_path, env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0 and "decoy" not in r.stderr, r.stderr[-500:]
