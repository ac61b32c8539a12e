"""eval.py end to end: the JSON schema and the table from the command line, the zero-shot guard
and bad input (one-line errors). The protocol's numbers are checked in test_lareqa_eval.py."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import cli, user_error
from minihbt import lareqa_eval, load_encoder
from minihbt.config import EvalConfig, eval_args
from minihbt.io.files import UserError
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
    assert re.search(message.replace("-", r"\-"), user_error("eval.py", argv + ["--quiet"]))


def test_cli_with_tiny_bert_writes_the_schema(tmp_path):
    write_dataset(tmp_path / "tiny")
    out = tmp_path / "res.json"
    env = {"MINIHBT_CACHE": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"}
    p = subprocess.run([sys.executable, str(ROOT / "eval.py"), "--dataset", str(tmp_path / "tiny"),
                        "--model", str(TINY_BERT), "--out", str(out), "--quiet"],
                       capture_output=True, text=True, cwd=tmp_path, env=env)
    assert p.returncode == 0, p.stderr
    res = json.loads(out.read_text())
    assert list(res) == ["dataset", "model", "model_fingerprint", "dtype", "langs", "map", "recall", "rank_distance",
                         "counts", "zero_shot", "seconds", "per_query"]
    assert res["model_fingerprint"] == load_encoder(TINY_BERT).fingerprint  # what the experiment runners check
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


# ----------------------------------------------------------------------------- BEIR / MIRACL directories

def test_cli_beir_directory_with_tiny_bert(tmp_path):
    from test_collection import write_beir

    pytrec_eval = pytest.importorskip("pytrec_eval", reason="pytrec_eval is an optional (golden) extra")
    root = write_beir(tmp_path / "toy")
    out, run_file = tmp_path / "res.json", tmp_path / "run.trec"
    env = {"MINIHBT_CACHE": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"}
    p = subprocess.run([sys.executable, str(ROOT / "eval.py"), "--dataset", str(root), "--model", str(TINY_BERT),
                        "--out", str(out), "--run-out", str(run_file), "--quiet"],
                       capture_output=True, text=True, cwd=tmp_path, env=env)
    assert p.returncode == 0, p.stderr
    res = json.loads(out.read_text())
    assert list(res) == ["dataset", "format", "split", "model", "dtype", "metrics", "per_query", "counts",
                         "zero_shot", "seconds"]
    assert (res["format"], res["split"], set(res["per_query"])) == ("beir", "test", {"q1", "q2"})
    assert list(res["metrics"]) == ["ndcg@10", "recall@100", "mrr@10", "map"]
    assert res["metrics"]["recall@100"] == 1.0  # 3 passages: every relevant one is in the top 100
    assert "nDCG@10" in p.stdout and f"{res['metrics']['map']:.4f}" in p.stdout.splitlines()[-1]
    lines = run_file.read_text().splitlines()
    assert len(lines) == 6 and [l.split()[3] for l in lines] == ["1", "2", "3"] * 2  # 2 queries x 3 passages
    with open(run_file) as f:
        run = pytrec_eval.parse_run(f)
    ev = pytrec_eval.RelevanceEvaluator({"q1": {"d1": 2, "d2": 0}, "q2": {"d3": 1}}, {"map"}).evaluate(run)
    assert [ev[q]["map"] for q in ("q1", "q2")] == pytest.approx([res["per_query"][q]["map"] for q in ("q1", "q2")])
    assert list((tmp_path / "cache" / "embeddings").glob("toy-corpus-*/shard-00000.npy"))


@pytest.mark.parametrize("argv, message", [
    (["--langs", "en"], "--langs and --context apply to LAReQA datasets"),
    (["--split", "dev"], "no qrels for split 'dev'"),
    (["--run-out", "{tmp}/no/such/run.trec"], "--run-out"),
    (["--run-out", "{tmp}"], "--run-out"),
])
def test_bad_beir_input_is_one_user_error(tmp_path, monkeypatch, argv, message):
    from test_collection import write_beir

    monkeypatch.setenv("MINIHBT_CACHE", str(tmp_path / "cache"))
    root = write_beir(tmp_path / "toy")
    argv = [a.format(tmp=tmp_path) for a in ["--dataset", str(root), "--model", "{tmp}/never/loaded", *argv]]
    assert re.search(message, user_error("eval.py", argv + ["--quiet"]))  # the model is loaded after the data are checked
    assert not (tmp_path / "cache").exists()  # nothing encoded, nothing cached


def test_bad_beir_file_exits_2_with_one_line_and_caches_nothing(tmp_path):
    from test_collection import write_beir

    root = write_beir(tmp_path / "toy", corpus=[{"_id": "d1", "text": "x"}, {"_id": "d1", "text": "y"}])
    env = {"MINIHBT_CACHE": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"}
    p = subprocess.run([sys.executable, str(ROOT / "eval.py"), "--dataset", str(root), "--model", str(TINY_BERT)],
                       capture_output=True, text=True, cwd=tmp_path, env=env)
    assert p.returncode == 2 and p.stdout == ""
    assert p.stderr == f"error: {root / 'corpus.jsonl'}:2: duplicate document id 'd1' (first on line 1)\n"
    assert not (tmp_path / "cache").exists()
    lareqa_dir = write_dataset(tmp_path / "tiny")
    assert re.search("--split and --run-out apply to BEIR / MIRACL directories", user_error("eval.py", ["--dataset", str(lareqa_dir), "--run-out", str(tmp_path / "r.trec"), "--quiet"]))


def test_point09_device_flag(tmp_path, monkeypatch):
    # eval.py had no --device: a large model could only be evaluated on the CPU.
    write_dataset(tmp_path / "tiny")
    monkeypatch.setenv("MINIHBT_CACHE", str(tmp_path / "cache"))
    argv = ["--dataset", str(tmp_path / "tiny"), "--model", str(TINY_BERT), "--quiet"]
    assert eval_args(argv).device == "cpu"
    assert eval_args(argv + ["--device", "cuda"]).device == "cuda"
    with pytest.raises(UserError, match="argument --device: invalid choice: 'tpu'"):
        eval_args(argv + ["--device", "tpu"])
    if not torch.cuda.is_available():
        assert re.search("^--device cuda: no CUDA device is visible to torch$", user_error("eval.py", argv + ["--device", "cuda"]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_point09_cuda_evaluation_matches_cpu(tmp_path, monkeypatch):
    write_dataset(tmp_path / "tiny")
    monkeypatch.setenv("MINIHBT_CACHE", str(tmp_path / "cache"))
    cfg = dict(dataset=str(tmp_path / "tiny"), model=str(TINY_BERT), progress=False)
    cpu = lareqa_eval.run(EvalConfig(**cfg))
    cuda = lareqa_eval.run(EvalConfig(**cfg, device="cuda"))
    assert len(list((tmp_path / "cache" / "embeddings").iterdir())) == 12  # cached per device type

    def numbers(tree, path=""):  # every mAP, recall and rank distance, flattened
        if isinstance(tree, dict):
            return {k: v for key, sub in tree.items() for k, v in numbers(sub, f"{path}/{key}").items()}
        return {path: tree}

    assert numbers({k: cuda[k] for k in ("map", "recall", "rank_distance")}) == pytest.approx(
        numbers({k: cpu[k] for k in ("map", "recall", "rank_distance")}), abs=1e-6)
