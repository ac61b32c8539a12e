"""reproduce_downstream.py: docs/DOWNSTREAM.md holds exactly the tables built from the committed
JSON, and those tables' numbers are recomputed here from the JSON's per-language values alone."""
import json
import math
import statistics
import subprocess

import pytest

import reproduce_downstream as rd

LANGS = {"xnli": ["en", "sw"], "tydiqa": ["ar", "bn"], "sib-200": ["en", "vi"], "tatoeba": ["de", "el"]}
SEEN = ["ar", "de", "en"]


def macro(per_lang: dict, seen: list[str], which: str):
    """Mean of per_lang over all / seen / unseen languages, from the per-language values only."""
    keep = [v for l, v in per_lang.items() if which == "mean" or (l in seen) == (which == "seen")]
    return sum(keep) / len(keep) if keep else None


def cell(values: list) -> str:
    """The table's cell format: mean ± sample sd over seeds, 3 decimals."""
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    m = sum(values) / len(values)
    return f"{m:.3f}" + (f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else "")


def summary_rows(text: str) -> dict[str, list[str]]:
    """{row name: cells} of the first table (the summary) in `text`."""
    lines = text.split("### Summary", 1)[1].split("###", 1)[0].splitlines()
    rows = [l for l in lines if l.startswith("| ") and not l.startswith("| model")]
    return {r.strip("|").split("|")[0].strip(): [c.strip() for c in r.strip("|").split("|")[1:]] for r in rows}


def check_summary_against_json(text: str, results_dir) -> int:
    """Recompute every summary cell from the JSON files' per_lang values; return the cells checked."""
    groups: dict[str, dict[str, list[dict]]] = {}
    for path in sorted(results_dir.glob("*.json")):
        task, _, name = path.stem.partition("__")
        m = rd.RUN.fullmatch(name)
        row = "zero-shot" if m is None else f"{rd.LABELS[m['sampler']]} ({m['train']})"
        groups.setdefault(row, {}).setdefault(task, []).append(json.loads(path.read_text()))
    rows, checked = summary_rows(text), 0
    assert set(rows) == set(groups)
    for row, tasks in groups.items():
        cells = rows[row][1:]  # after the seeds column
        for (title, task, (a, b)), got in zip(rd.COLUMNS, cells):
            runs = tasks.get(task, [])
            want = cell([macro(r[a][b]["per_lang"], r["seen_langs"], "mean") for r in runs])
            assert got == want, (row, title)
            checked += 1
    return checked


def fake_result(task: str, seed: int, offset: float) -> dict:
    def s(base: float) -> dict:
        per = {l: round(base + offset + 0.01 * i + 0.003 * seed, 6) for i, l in enumerate(LANGS[task])}
        return {"mean": macro(per, SEEN, "mean"), "seen": macro(per, SEEN, "seen"),
                "unseen": macro(per, SEEN, "unseen"), "per_lang": per}

    out = {"task": task, "seen_langs": SEEN}
    if task == "xnli":
        out |= {"accuracy": {"test": s(0.5), "dev": s(0.4)}, "pair_ap": {"test": s(0.7), "dev": s(0.6)}}
    elif task == "tydiqa":
        out |= {"mono": {m: s(0.6) for m in ("mrr@10", "r@1", "r@5", "ndcg@10")},
                "pooled": {"mrr@10": s(0.5), "other_lang_top1": s(0.1)}}
    elif task == "sib-200":
        out |= {"accuracy": {"cross": s(0.7), "within": s(0.75)}}
    else:
        out |= {"accuracy": {k: s(0.8) for k in ("to_eng", "from_eng", "mean")}}
    return out


def test_tables_recomputed_from_fake_json(tmp_path, monkeypatch):
    """Always runs: two seeds of three models, one of them missing a task."""
    monkeypatch.setattr(rd, "RESULTS", tmp_path)
    for task in rd.TASKS:
        (tmp_path / f"{task}__zero-shot.json").write_text(json.dumps(fake_result(task, 0, 0.0)))
        for seed in (0, 1):
            for sampler, off in (("xx", 0.02), ("hybrid", 0.05)):
                if sampler == "xx" and task == "tatoeba":
                    continue
                (tmp_path / f"{task}__xquad-r-{sampler}-s{seed}.json").write_text(
                    json.dumps(fake_result(task, seed, off)))
    text = rd.tables(rd.load_results())
    assert check_summary_against_json(text, tmp_path) == 3 * len(rd.COLUMNS)
    rows = summary_rows(text)
    assert list(rows) == ["zero-shot", "X-X (xquad-r)", "hybrid (xquad-r)"]
    assert rows["hybrid (xquad-r)"][0] == "2" and rows["X-X (xquad-r)"][-1] == "-"
    assert "sw" in text.split("Unseen:", 1)[1].split(";")[0]  # xnli's unseen language, from the JSON


def test_evaluate_runs_eval_py_per_task_and_skips_done(tmp_path, monkeypatch):
    monkeypatch.setattr(rd, "ROOT", tmp_path)
    monkeypatch.setattr(rd, "RESULTS", tmp_path / "docs" / "downstream")
    ckpt = tmp_path / "runs" / "reproduce" / "xquad-r-xy-s1" / "checkpoint"
    ckpt.mkdir(parents=True)
    (ckpt / "trainer.json").write_text(json.dumps({"step": 300, "config": {"max_steps": 300}}))
    unfinished = tmp_path / "runs" / "reproduce" / "xquad-r-xx-s1" / "checkpoint"
    unfinished.mkdir(parents=True)
    (unfinished / "trainer.json").write_text(json.dumps({"step": 100, "config": {"max_steps": 300}}))
    assert rd.models() == {"zero-shot": "e5-small", "xquad-r-xy-s1": "runs/reproduce/xquad-r-xy-s1/checkpoint"}
    calls = []

    def fake_run(cmd, cwd):
        calls.append(cmd[2:])
        (cwd / cmd[cmd.index("--out") + 1]).write_text("{}")
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(rd.subprocess, "run", fake_run)
    (rd.RESULTS).mkdir(parents=True)
    (rd.RESULTS / "xnli__zero-shot.json").write_text("{}")  # done before: not redone
    rd.evaluate(["zero-shot", "xquad-r-xy-s1"], ["xnli", "tatoeba"])
    assert calls == [["--dataset", "tatoeba", "--model", "e5-small", "--out", "docs/downstream/tatoeba__zero-shot.json"],
                     ["--dataset", "xnli", "--model", "runs/reproduce/xquad-r-xy-s1/checkpoint",
                      "--out", "docs/downstream/xnli__xquad-r-xy-s1.json"],
                     ["--dataset", "tatoeba", "--model", "runs/reproduce/xquad-r-xy-s1/checkpoint",
                      "--out", "docs/downstream/tatoeba__xquad-r-xy-s1.json"]]
    with pytest.raises(rd.UserError, match="xquad-r-xx-s1 not found or not finished"):
        rd.evaluate(["xquad-r-xx-s1"], ["xnli"])


def test_mean_sd_and_cell():
    m, sd = rd.mean_sd([0.5, 0.7])
    assert math.isclose(m, 0.6) and math.isclose(sd, math.sqrt(0.02))
    assert rd.fmt([0.5, 0.7]) == "0.600 ± 0.141" == cell([0.5, 0.7]) and rd.fmt([None]) == "-"


def test_committed_downstream_md_equals_report():
    files = sorted(rd.RESULTS.glob("*.json")) if rd.RESULTS.is_dir() else []
    if not files:
        pytest.skip(f"no results in {rd.RESULTS} yet: run python reproduce_downstream.py (the lead schedules it)")
    found = rd.load_results()
    text = rd.DOC.read_text()
    committed = text.split(rd.BEGIN, 1)[1].split(rd.END, 1)[0].strip()
    assert committed == rd.tables(found).strip()
    assert check_summary_against_json(committed, rd.RESULTS) > 0
