"""minihbt/experiments/retrieval.py (experiments/reproduce.py): the recipe dimension and both transfer directions: run and result names, the train.py
and eval.py commands of each recipe, --swap's languages, and the paired differences recomputed
from the committed JSON independently of the table code."""
import json

import pytest

from minihbt.experiments import recipes, retrieval, retrieval_report
from minihbt.io.files import run_cli
from minihbt.config import TrainConfig, train_args
from minihbt.lareqa import TRAIN_LANGS


def test_names_carry_the_recipe_and_the_old_names_stay():
    assert recipes.run_name("xquad-r", "hybrid", 0, "old") == "xquad-r-hybrid-s0"  # the committed results
    assert recipes.run_name("mlqa-r", "xy", 1, "paper") == "mlqa-r-xy-paper-s1"


def test_swap_trains_mlqa_r_on_its_six_training_languages():
    assert recipes.train_langs("mlqa-r", TRAIN_LANGS) == ["ar", "de", "en", "es", "hi", "zh"]
    assert recipes.train_langs("xquad-r", TRAIN_LANGS) == TRAIN_LANGS


def test_swap_with_no_language_of_mlqa_r_is_a_one_line_error_before_any_run(monkeypatch, capsys):
    monkeypatch.setattr(recipes, "sh", lambda cmd: pytest.fail(f"ran {cmd}"))
    with pytest.raises(SystemExit) as e:
        run_cli(retrieval.main, ["--swap", "--langs", "ru,th,tr"])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "error: --langs ru,th,tr: none of them is in mlqa-r (it has ar, de, en, es, hi, vi, zh)")


@pytest.mark.parametrize("recipe", ["paper", "masked", "hardneg", "old"])
def test_commands_of_each_recipe_and_direction(recipe, tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr(recipes, "ROOT", tmp_path)  # no checkpoint or result exists there
    monkeypatch.setattr(recipes, "RESULTS", tmp_path / "docs" / "results")
    monkeypatch.setattr(recipes, "sh", lambda cmd: ran.append(cmd[1:]))
    monkeypatch.setattr(retrieval_report, "report", lambda: None)
    recorded = []  # no run happened, so there is no log to read: record what would be recorded
    monkeypatch.setattr(retrieval, "record_selection", lambda name, out: recorded.append(out.relative_to(tmp_path)))
    assert retrieval.main(["--swap", "--seeds", "3", "--recipe", recipe, "--max-steps", "7"]) == 0
    trains = [c for c in ran if c[0] == "train.py"]
    evals = [c for c in ran if c[0] == "eval.py" and "e5-small" not in c]
    assert len(trains) == len(evals) == 6  # 3 samplers x 2 directions
    for cmd in trains:
        flags = dict(zip(cmd[1::2], cmd[2::2]))
        data = flags["--train-data"]
        assert flags["--langs"] == ",".join(recipes.train_langs(data, TRAIN_LANGS))
        assert flags["--seed"] == "3" and flags["--max-steps"] == "7"
        name = recipes.run_name(data, flags["--sampler"], 3, recipe)
        assert flags["--out"] == f"runs/reproduce/{name}"
        # Every flag parses and gives the recipe's config; nothing is left to train.py's defaults.
        given, _ = train_args(cmd[1:])
        cfg = TrainConfig(**given)
        recipe_cfg = (cfg.hard_negatives, cfg.false_negatives, cfg.val_every)
        assert recipe_cfg == {"old": (0, "keep", 0), "hardneg": (1, "keep", 0), "masked": (1, "mask", 0),
                              "paper": (1, "mask", 50)}[recipe]
        if recipe == "old":  # what train.py's defaults were when the committed results were trained
            assert (cfg.dtype, cfg.adamw) == ("fp32", "for-loop")
        if recipe == "paper":
            assert cfg.val_fraction == 0.1
    model = "checkpoint-best" if recipe == "paper" else "checkpoint"  # the paper recipe: selected on validation
    # what validation chose is recorded for every run of the paper recipe, and only there
    assert [str(r) for r in recorded] == ([c[c.index("--out") + 1] for c in trains] if recipe == "paper" else [])
    for cmd in evals:
        flags = dict(zip(cmd[1::2], cmd[2::2]))
        assert flags["--model"].endswith(f"-s3/{model}")
        trained_on = flags["--model"].split("/")[2].split("-")[0] + "-r"  # runs/reproduce/<train>-...
        assert {flags["--dataset"], trained_on} == {"xquad-r", "mlqa-r"}  # trained on one, evaluated on the other


def test_load_results_keeps_the_recipes_apart(tmp_path, monkeypatch):
    res = json.loads((recipes.RESULTS / "mlqa-r__xquad-r-hybrid-s0.json").read_text())
    monkeypatch.setattr(recipes, "RESULTS", tmp_path)
    for name in ("mlqa-r__zero-shot", "mlqa-r__xquad-r-hybrid-s0", "mlqa-r__xquad-r-hybrid-paper-s1",
                 "mlqa-r__xquad-r-xx-paper-s1"):
        (tmp_path / f"{name}.json").write_text(json.dumps(res))
    old, paper = retrieval_report.load_results("old"), retrieval_report.load_results("paper")
    assert set(old) == {("mlqa-r", "zero-shot", ""), ("mlqa-r", "hybrid", "xquad-r")}
    assert set(paper) == {("mlqa-r", "zero-shot", ""), ("mlqa-r", "hybrid", "xquad-r"), ("mlqa-r", "xx", "xquad-r")}
    assert [r["seed"] for r in paper["mlqa-r", "hybrid", "xquad-r"]] == [1]
    assert retrieval_report.tables(paper, "paper").startswith("### Recipe paper: evaluated on mlqa-r")


def test_paired_differences_recomputed_from_the_committed_json():
    table = retrieval_report.tables(retrieval_report.load_results())
    rows = {tuple(c.strip() for c in line.strip("|").split("|")[:2]): [c.strip() for c in line.strip("|").split("|")]
            for line in table.splitlines() if line.startswith("| hybrid - ")}
    assert set(rows) == {("hybrid - X-X", "xquad-r"), ("hybrid - X-Y", "xquad-r")}
    for other, label in (("xx", "X-X"), ("xy", "X-Y")):
        cells = rows["hybrid - " + label, "xquad-r"]
        assert cells[2] == "0,1"
        for col, (path, digits) in enumerate([(("map", "mono"), 3), (("map", "cross"), 3), (("map", "multi"), 3),
                                              (("rank_distance",), 1)], start=3):
            d = []
            for seed in (0, 1):
                a, b = (json.loads((recipes.RESULTS / f"mlqa-r__xquad-r-{s}-s{seed}.json").read_text())
                        for s in ("hybrid", other))
                for k in path:
                    a, b = a[k], b[k]
                d.append(a["mean"] - b["mean"])
            mean = (d[0] + d[1]) / 2
            sd = abs(d[0] - d[1]) / 2 ** 0.5  # the sample standard deviation of two values
            assert cells[col] == f"{mean:+.{digits}f} ± {sd:.{digits}f} ({d[0]:+.{digits}f}, {d[1]:+.{digits}f})"


def test_ablation_and_recipe_sections_fill_their_markers(tmp_path, monkeypatch):
    # Old-recipe results as committed, plus the same JSON under the paper and hardneg tags: the
    # report keeps the old section as it is and fills the recipe section with the ablation table.
    # The committed hardneg results are left out: the hardneg row is then this one JSON, seed 0.
    for f in recipes.RESULTS.glob("*.json"):
        if "-hardneg-" not in f.name:
            (tmp_path / "docs" / "results").mkdir(parents=True, exist_ok=True)
            (tmp_path / "docs" / "results" / f.name).write_bytes(f.read_bytes())
    res = json.loads((recipes.RESULTS / "mlqa-r__xquad-r-hybrid-s0.json").read_text())
    for tag in ("paper", "hardneg"):
        (tmp_path / "docs" / "results" / f"mlqa-r__xquad-r-hybrid-{tag}-s0.json").write_text(json.dumps(res))
    doc = (recipes.ROOT / "docs" / "RESULTS.md").read_text()
    (tmp_path / "docs" / "RESULTS.md").write_text(doc)
    monkeypatch.setattr(recipes, "ROOT", tmp_path)
    monkeypatch.setattr(recipes, "RESULTS", tmp_path / "docs" / "results")
    monkeypatch.setattr(retrieval_report, "figure", lambda found, path: None)
    retrieval_report.report()
    text = (tmp_path / "docs" / "RESULTS.md").read_text()
    section = lambda b, e: text.split(b, 1)[1].split(e, 1)[0]  # noqa: E731
    assert section(retrieval_report.BEGIN, retrieval_report.END).strip() == \
        doc.split(retrieval_report.BEGIN, 1)[1].split(retrieval_report.END, 1)[0].strip()  # the old recipe's, as committed
    new = section(retrieval_report.NEW_BEGIN, retrieval_report.NEW_END)
    assert new.startswith("\n### Ablation: hybrid trained on xquad-r, evaluated on mlqa-r")
    rows = [l for l in new.splitlines() if l.startswith("| old |") or l.startswith("| hardneg |") or l.startswith("| paper |")]
    multi = f"{res['map']['multi']['mean']:.3f}"
    assert [r.split("|")[1].strip() for r in rows] == ["old", "hardneg", "paper"] and rows[1].split("|")[5].strip() == multi
    assert "### Recipe hardneg: evaluated on mlqa-r" in new and "### Recipe paper: evaluated on mlqa-r" in new


def test_samplers_flag_runs_the_hybrid_ablation_alone(tmp_path, monkeypatch, capsys):
    ran, _ = offline(tmp_path, monkeypatch)
    assert retrieval.main(["--samplers", "hybrid", "--recipe", "hardneg", "--seeds", "0,1"]) == 0
    assert [c[c.index("--out") + 1] for c in ran if c[0] == "train.py"] == [
        "runs/reproduce/xquad-r-hybrid-hardneg-s0", "runs/reproduce/xquad-r-hybrid-hardneg-s1"]
    capsys.readouterr()
    with pytest.raises(SystemExit):
        run_cli(retrieval.main, ["--samplers", "hybrid,xz"])
    assert capsys.readouterr().err.strip() == "error: --samplers: expected some of xx, xy, hybrid, got hybrid,xz"


def test_batch32_recipe_trains_at_batch_32_under_its_own_name(tmp_path, monkeypatch, capsys):
    ran, _ = offline(tmp_path, monkeypatch)
    assert retrieval.main(["--samplers", "hybrid", "--recipe", "batch32"]) == 0
    train = [c for c in ran if c[0] == "train.py"]
    assert len(train) == 1 and train[0][train[0].index("--out") + 1] == "runs/reproduce/xquad-r-hybrid-batch32-s0"
    sizes = [train[0][i + 1] for i, f in enumerate(train[0]) if f == "--batch-size"]
    assert sizes == ["32"]
    assert "--hard-negatives" in train[0] and train[0][train[0].index("--val-every") + 1] == "50"  # the paper's
    capsys.readouterr()
    with pytest.raises(SystemExit):
        run_cli(retrieval.main, ["--recipe", "batch32", "--batch-size", "16"])
    assert capsys.readouterr().err.strip() == "error: --batch-size 16: --recipe batch32 trains at batch 32"


def test_record_selection_reads_the_log_and_checkpoint_best(tmp_path, monkeypatch):
    # a hand-built run: validation at steps 2 and 4 (other steps log none), checkpoint-best from step 2
    monkeypatch.setattr(recipes, "RESULTS", tmp_path / "results")
    run = tmp_path / "run"
    (run / "checkpoint-best").mkdir(parents=True)
    log = [{"step": 1, "loss": 1.0}, {"step": 2, "loss": 0.9, "val_map_multi": 0.5},
           {"step": 3, "loss": 0.8}, {"step": 4, "loss": 0.7, "val_map_multi": 0.5}]
    (run / "log.jsonl").write_text("".join(json.dumps(l) + "\n" for l in log))
    (run / "checkpoint-best" / "minihbt.json").write_text(json.dumps({"provenance": {"step": 2}}))
    retrieval.record_selection("xquad-r-xy-paper-s0", run)
    saved = json.loads((tmp_path / "results" / "selection" / "xquad-r-xy-paper-s0.json").read_text())
    assert saved == {"val_map_multi": {"2": 0.5, "4": 0.5}, "chosen_step": 2}
    assert "| xquad-r-xy-paper-s0 | 0.5000 | 0.5000 | 2 |" in retrieval_report.selection("paper")
    assert retrieval_report.selection("masked") == ""  # no run of that recipe: no table



def committed(*paths, per_query: bool = True) -> None:
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"per_query": {}} if per_query else {}))


def offline(tmp_path, monkeypatch) -> tuple[list, list]:
    """reproduce.py rooted in tmp_path, its commands and selection records collected, not run."""
    ran, recorded = [], []
    monkeypatch.setattr(recipes, "ROOT", tmp_path)
    monkeypatch.setattr(recipes, "RESULTS", tmp_path / "docs" / "results")
    monkeypatch.setattr(recipes, "sh", lambda cmd: ran.append(cmd[1:]))
    monkeypatch.setattr(retrieval, "record_selection", lambda name, out: recorded.append(name))
    monkeypatch.setattr(retrieval_report, "report", lambda: None)
    return ran, recorded


@pytest.mark.parametrize("recipe", ["paper", "old"])
def test_a_committed_result_is_not_trained_again_in_a_fresh_checkout(recipe, tmp_path, monkeypatch):
    # runs/ is not committed: a new checkout has only the result JSON (and the selection record)
    ran, recorded = offline(tmp_path, monkeypatch)
    done, todo = (recipes.run_name("xquad-r", s, 0, recipe) for s in ("xx", "xy"))
    committed(recipes.result_path("mlqa-r", done), recipes.result_path("mlqa-r", "zero-shot"),
              *([recipes.RESULTS / "selection" / f"{done}.json"] if recipe == "paper" else []))
    assert retrieval.main(["--samplers", "xx,xy", "--recipe", recipe]) == 0
    assert [c[c.index("--out") + 1] for c in ran] == [f"runs/reproduce/{todo}", f"docs/results/mlqa-r__{todo}.json"]
    assert recorded == ([todo] if recipe == "paper" else [])


def test_a_committed_result_without_per_query_values_is_trained_again(tmp_path, monkeypatch, capsys):
    """Results from before per_query existed cannot give RESULTS.md its test-row intervals: such a
    run is trained again (from scratch, same seed) and evaluated, and says why."""
    ran, recorded = offline(tmp_path, monkeypatch)
    monkeypatch.setattr(recipes, "model_fingerprint", lambda d: "f1", raising=False)  # the model trained
    name = recipes.run_name("mlqa-r", "xy", 1, "paper")
    committed(recipes.result_path("xquad-r", "zero-shot"), recipes.RESULTS / "selection" / f"{name}.json")
    committed(recipes.result_path("xquad-r", name), per_query=False)
    assert retrieval.main(["--samplers", "xy", "--seeds", "1", "--swap", "--langs", "ar,de,en,es,hi,zh"]) == 0
    outs = [c[c.index("--out") + 1] for c in ran]
    assert f"runs/reproduce/{name}" in outs and f"docs/results/xquad-r__{name}.json" in outs
    assert f"{name}: result committed without per-query values: trained again" in capsys.readouterr().err


def finished_run(tmp_path, name: str) -> None:
    ckpt = tmp_path / "runs" / "reproduce" / name / "checkpoint"
    ckpt.mkdir(parents=True)
    cfg = TrainConfig()  # reproduce.py's budget defaults to train.py's
    (ckpt / "trainer.json").write_text(json.dumps(
        {"step": cfg.max_steps, "config": {"max_steps": cfg.max_steps, "batch_size": cfg.batch_size}}))


def test_a_paper_result_without_its_selection_record_is_read_from_its_run(tmp_path, monkeypatch):
    # the result exists but what validation chose does not: the finished run is read, nothing is run
    ran, recorded = offline(tmp_path, monkeypatch)
    monkeypatch.setattr(recipes, "model_fingerprint", lambda d: "f1", raising=False)  # the checkpoint at hand
    name = recipes.run_name("xquad-r", "xx", 0, "paper")
    committed(recipes.result_path("mlqa-r", "zero-shot"))
    recipes.result_path("mlqa-r", name).write_text(json.dumps({"model_fingerprint": "f1"}))  # of that model
    finished_run(tmp_path, name)
    assert retrieval.main(["--samplers", "xx", "--recipe", "paper"]) == 0
    assert ran == [] and recorded == [name]


@pytest.mark.parametrize("stored", ["f0", None])
def test_a_result_of_another_model_is_evaluated_again(stored, tmp_path, monkeypatch):
    """A retrained run (its checkpoint's fingerprint is not the result's), or a result that records
    no fingerprint: the result does not describe the checkpoint at hand, so eval.py runs again."""
    ran, _ = offline(tmp_path, monkeypatch)
    fingerprinted = []
    monkeypatch.setattr(recipes, "model_fingerprint", lambda d: fingerprinted.append(d.name) or "f1", raising=False)
    name = recipes.run_name("xquad-r", "hybrid", 1, "old")
    committed(recipes.result_path("mlqa-r", "zero-shot"))
    recipes.result_path("mlqa-r", name).write_text(json.dumps({"model_fingerprint": stored}))
    finished_run(tmp_path, name)
    assert retrieval.main(["--samplers", "hybrid", "--recipe", "old", "--seeds", "1"]) == 0
    assert ran == [["eval.py", "--dataset", "mlqa-r", "--model", f"runs/reproduce/{name}/checkpoint",
                    "--out", f"docs/results/mlqa-r__{name}.json"]]
    assert set(fingerprinted) == {"checkpoint"}


def test_model_fingerprint_is_eval_pys_and_hashed_once(monkeypatch):
    from minihbt import load_encoder
    from test_train import TINY_BERT
    expected = load_encoder(TINY_BERT).fingerprint  # what eval.py records as "model_fingerprint"
    assert recipes.model_fingerprint(TINY_BERT) == expected
    monkeypatch.setattr("minihbt.load_encoder", lambda *a, **kw: pytest.fail("loaded twice"))
    assert recipes.model_fingerprint(TINY_BERT) == expected
