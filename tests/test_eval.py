"""eval.py end to end: the JSON schema and the table from the command line, the zero-shot guard
and bad input (one-line errors). The protocol's numbers are checked in test_lareqa_eval.py."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

import eval as eval_cli
from minihbt.files import UserError
from test_lareqa_eval import FakeEncoder, run, write_dataset

ROOT = Path(__file__).resolve().parent.parent

TINY_BERT = ROOT / "tests" / "golden" / "tiny-bert"


def test_zero_shot_guard(tmp_path, monkeypatch):
    seen = FakeEncoder(provenance={"train_data": ["tiny"], "langs": ["en"]})
    with pytest.raises(UserError, match="--allow-seen"):
        run(tmp_path, monkeypatch, encoder=seen)
    out = run(tmp_path, monkeypatch, encoder=seen, allow_seen=True)
    assert out["zero_shot"] is False
    assert run(tmp_path, monkeypatch, encoder=FakeEncoder({"train_data": ["xquad-r"]}))["zero_shot"] is True


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "nope"], "unknown dataset 'nope'"),
    (["--dataset", "{tiny}", "--langs", "en", "xx"], "no language xx"),
    (["--dataset", "{tiny}", "--langs", ""], "--langs: empty language set"),
    (["--dataset", "{tiny}", "--model", "{broken}"], "--model"),
    (["--dataset", "{tiny}", "--model", "{tmp}/missing/model"], "--model"),
    (["--dataset", "{tiny}", "--batch-size", "0"], "--batch-size"),
    (["--dataset", "{tiny}", "--out", "{tmp}/no/such/dir/x.json"], "--out"),
    (["--dataset", "{tiny}", "--out", "{tmp}"], "is a directory"),
])
def test_bad_input_is_one_user_error(tmp_path, monkeypatch, argv, message):
    monkeypatch.setenv("MINIHBT_CACHE", str(tmp_path / "cache"))
    write_dataset(tmp_path / "tiny")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    argv = [a.format(tiny=tmp_path / "tiny", broken=broken, tmp=tmp_path) for a in argv]
    with pytest.raises(UserError, match=message.replace("-", r"\-")):
        eval_cli.main(argv + ["--quiet"])


def test_cli_with_tiny_bert_writes_the_schema(tmp_path):
    write_dataset(tmp_path / "tiny")
    out = tmp_path / "res.json"
    env = {"MINIHBT_CACHE": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"}
    p = subprocess.run([sys.executable, str(ROOT / "eval.py"), "--dataset", str(tmp_path / "tiny"),
                        "--model", str(TINY_BERT), "--out", str(out), "--quiet"],
                       capture_output=True, text=True, cwd=tmp_path, env=env)
    assert p.returncode == 0, p.stderr
    res = json.loads(out.read_text())
    assert list(res) == ["dataset", "model", "langs", "map", "recall", "rank_distance", "counts",
                         "zero_shot", "seconds"]
    assert set(res["map"]) == {"mono", "cross", "multi"}
    assert set(res["map"]["cross"]) == {"mean", "per_pair"}
    assert set(res["recall"]) == {"mono@1", "cross@1", "multi@10"}
    assert set(res["recall"]["multi@10"]) == {"mean", "per_lang"}
    assert set(res["rank_distance"]["per_lang"]) == {"de", "en", "zh"}
    assert 0 < res["map"]["mono"]["mean"] <= 1
    assert "mean" in p.stdout.splitlines()[-1]  # the table's last row

    bad = subprocess.run([sys.executable, str(ROOT / "eval.py"), "--dataset", str(tmp_path / "tiny"),
                          "--langs", "en", "xx", "--model", str(TINY_BERT)],
                         capture_output=True, text=True, cwd=tmp_path, env=env)
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and bad.stderr.startswith("error: ") and "xx" in bad.stderr
