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
    with pytest.raises(UserError, match="xquad-r-xx-s1 not found or not finished"):
        downstream_runs.evaluate(["xquad-r-xx-s1"], ["xnli"])
    calls.clear()
    downstream_runs.evaluate(["xquad-r-xy-s1"], ["sib-200"], "cuda")  # a model trained on a GPU, evaluated there
    assert calls == [["--dataset", "sib-200", "--model", "runs/reproduce/xquad-r-xy-s1/checkpoint",
                      "--out", "docs/downstream/sib-200__xquad-r-xy-s1.json", "--device", "cuda"]]
    assert NAME.fullmatch("xquad-r-hybrid-cuda-s1")["recipe"] == "cuda" == recipes.RUN.fullmatch("xquad-r-hybrid-cuda-s1")["recipe"]
