"""minihbt/io/runs.py: a resumed run takes its stored config, and a checkpoint written by code whose
config differs is refused in one line naming that code's version; the log keeps the resumed steps."""
import json
from dataclasses import asdict

import pytest

from conftest import cli, user_error
from minihbt.config import TrainConfig
from minihbt.io import runs
from minihbt.io.files import UserError
from test_train import args
from test_train import data, one_thread  # noqa: F401  pytest fixtures shared with test_train

STATE = {"config": asdict(TrainConfig()), "provenance": {"code_version": {"minihbt": "0.1.0", "git": "abc123"}}}


def test_resumed_config_is_the_stored_one():
    assert runs.resumed_config(STATE, {}, "ckpt") == TrainConfig()
    with pytest.raises(UserError, match=r"^--resume continues the stored run with its own config; remove --lr, --seed$"):
        runs.resumed_config(STATE, {"lr": 1.0, "seed": 2}, "ckpt")


@pytest.mark.parametrize("change, differ", [(lambda c: c.pop("adamw"), "adamw"),
                                            (lambda c: c.update(recipe="x"), "recipe")])
def test_a_config_of_other_code_is_refused_naming_its_version(change, differ):
    state = json.loads(json.dumps(STATE))
    change(state["config"])
    with pytest.raises(UserError) as e:
        runs.resumed_config(state, {}, "runs/x/checkpoint")
    assert str(e.value) == ("--resume runs/x/checkpoint: written by minihbt 0.1.0 (git abc123), whose config differs "
                            f"from this code's in {differ}; it cannot resume here: start a new run")


def test_an_old_checkpoint_is_refused_through_train_py(data, tmp_path):
    assert cli("train.py", args(data, tmp_path, "--max-steps", "1", "--val-every", "0")) == 0
    state_path = tmp_path / "checkpoint" / "trainer.json"
    state = json.loads(state_path.read_text())
    for k in ("hard_negatives", "false_negatives", "val_every"):  # what checkpoints before the recipe lacked
        del state["config"][k]
    state_path.write_text(json.dumps(state))
    version = state["provenance"]["code_version"]
    err = user_error("train.py", ["--resume", str(tmp_path / "checkpoint")])
    assert err.startswith(f"--resume {tmp_path / 'checkpoint'}: written by minihbt {version['minihbt']} "
                          f"(git {version['git']}), whose config differs from this code's in "
                          "false_negatives, hard_negatives, val_every")


def test_resumed_log_keeps_the_runs_own_lines_up_to_the_step(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text("".join(json.dumps({"step": s, "run": "a"}) + "\n" for s in (1, 2, 3)) + '{"step": 4, "ru')
    assert [json.loads(l)["step"] for l in runs.resumed_log(tmp_path / "checkpoint", log, "a", 2)] == [1, 2]
    with pytest.raises(UserError, match="log.jsonl:1: a line of run a, but the resumed checkpoint is run b"):
        runs.resumed_log(tmp_path / "checkpoint", log, "b", 2)


def test_hms():
    assert runs.hms(0) == "0:00:00" and runs.hms(3725.4) == "1:02:05"


def scripted_scores(monkeypatch, scores: list[float]) -> None:
    """Validation scores in the order of the process's validations (steps 3, 6, 9, 10 of a fresh run)."""
    from minihbt.validation import ValidationSet
    left = iter(scores)
    monkeypatch.setattr(ValidationSet, "score", lambda self, *a, **kw: next(left))


def test_a_resumed_run_keeps_the_best_of_its_logged_trajectory(data, tmp_path, monkeypatch):
    """checkpoint-best written after the last checkpoint (step 6's validation, the checkpoint at 5)
    belongs to steps the resume redoes. The killed process's step 6 scores 2.0: a trajectory that
    the resume discards (the redone step 6 scores 0.4); its best must not survive the resume."""
    import shutil

    import torch
    from minihbt import load_encoder
    from test_train import Killed, kill_at_call

    full, cut = tmp_path / "full", tmp_path / "cut"
    flags = ["--max-steps", "10", "--save-every", "5", "--val-every", "3"]
    scripted_scores(monkeypatch, [0.5, 0.4, 0.3, 0.2])  # steps 3, 6, 9, 10: the best is step 3's
    assert cli("train.py", args(data, full, *flags)) == 0
    scripted_scores(monkeypatch, [0.5, 2.0])
    kill_at_call(monkeypatch, 8, lambda _: (_ for _ in ()).throw(Killed()))  # dies in step 8
    with pytest.raises(Killed):
        cli("train.py", args(data, cut, *flags))
    monkeypatch.undo()

    def best(d):
        return json.loads((d / "minihbt.json").read_text())["provenance"]["validation"]

    assert best(full / "checkpoint-best") == {"step": 3, "score": 0.5}
    assert best(cut / "checkpoint-best") == {"step": 6, "score": 2.0}  # of the steps to be redone
    lost = tmp_path / "lost"
    shutil.copytree(cut, lost)
    shutil.rmtree(lost / "checkpoint-best.kept", ignore_errors=True)  # as a run of earlier code leaves it

    scripted_scores(monkeypatch, [0.4, 0.3, 0.2])  # the redone steps 6, 9, 10
    assert cli("train.py", ["--resume", str(cut / "checkpoint")]) == 0
    assert best(cut / "checkpoint-best") == {"step": 3, "score": 0.5}  # the logged trajectory's best
    a = load_encoder(full / "checkpoint-best").model.state_dict()
    b = load_encoder(cut / "checkpoint-best").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not (cut / "checkpoint-best.kept").exists()

    # The recorded best gone: refused, not replaced by a guess.
    assert user_error("train.py", ["--resume", str(lost / "checkpoint")]) == (
        f"--resume: {lost / 'checkpoint-best'} is not the best model that the checkpoint (step 5) records, "
        "the one of step 3, and no copy of it is left; start the run afresh (--overwrite)")
