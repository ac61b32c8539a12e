"""minihbt.downstream.suite and `eval.py --dataset xnli|tydiqa|sib-200|tatoeba`: what is encoded, with
which kind, cached, the results schema, seen languages from provenance, and bad files through
eval.py (exit 2, one line, nothing written to the embedding cache)."""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minihbt.io import artifacts
from minihbt.downstream import suite as de

ROOT = Path(__file__).resolve().parent.parent
TINY_BERT = ROOT / "tests" / "golden" / "tiny-bert"


class FakeEncoder:
    """TextEncoder's interface: a text's vector is a unit vector drawn from a hash of (kind, text)."""

    fingerprint = "fake-downstream-v1"

    def __init__(self, provenance=None):
        self.meta = {"provenance": provenance} if provenance else {}
        self.calls = []  # (kind, texts) per encode call

    def encode(self, texts, kind="query", batch_size=64, max_len=512, progress=None):
        self.calls.append((kind, list(texts)))
        rows = []
        for t in texts:
            seed = int.from_bytes(hashlib.sha256(f"{kind}|{t}".encode()).digest()[:8], "little")
            v = np.random.default_rng(seed).normal(size=8)
            rows.append(v / np.linalg.norm(v))
        return np.array(rows, dtype=np.float32)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIHBT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def run(task, enc, limit=12):
    return de.run(enc, de.load(task, limit), de.TaskConfig(task=task, limit=limit, progress=False), "fake")


def test_per_lang_splits_one_call_back_into_languages(cache):
    enc = FakeEncoder()
    embed = de.Embedder(enc, de.TaskConfig(task="tatoeba", progress=False))
    E = embed.per_lang({"de": ["a", "b"], "el": ["c"], "vi": ["a", "d", "e"]}, "query", "t")
    assert len(enc.calls) == 1 and enc.calls[0][1] == ["a", "b", "c", "d", "e"]
    assert {l: len(v) for l, v in E.items()} == {"de": 2, "el": 1, "vi": 3}
    assert np.array_equal(E["de"][0], E["vi"][0])  # "a" in both
    assert np.array_equal(E["el"][0], enc.encode(["c"])[0])


def test_embedder_encodes_each_distinct_text_once_and_expands_rows(cache):
    enc = FakeEncoder()
    embed = de.Embedder(enc, de.TaskConfig(task="xnli", progress=False))
    E = embed(["a", "b", "a", "c", "b"], "query", "t")
    assert enc.calls == [("query", ["a", "b", "c"])]
    assert np.array_equal(E[0], E[2]) and np.array_equal(E[1], E[4]) and not np.array_equal(E[0], E[1])
    again = embed(["a", "b", "a", "c", "b"], "query", "t")
    assert len(enc.calls) == 1 and np.array_equal(again, E)  # read back from the cache
    embed(["a", "b"], "query", "t")  # other texts: another key
    assert len(enc.calls) == 2


def test_xnli_plumbing_schema_and_cache(cache):
    enc = FakeEncoder()
    out = run("xnli", enc)
    assert {k for k, _ in enc.calls} == {"query"}
    assert len(enc.calls) == 1 + 11 + 3  # train, each test file, each dev file
    assert all(len(texts) == len(set(texts)) for _, texts in enc.calls)
    # the first 12 test rows are 4 premises x 3 hypotheses: each premise is encoded once
    assert len(enc.calls[1][1]) == 4 + 12
    assert out["counts"]["train"] == 3 * 12 and out["counts"]["test"]["sw"] == 12  # train: 12 per label and out["counts"]["dev"]["th"] == 12
    assert set(out["accuracy"]["test"]["per_lang"]) == set(de.dd.XNLI_TEST_LANGS)
    assert set(out["accuracy"]["dev"]["per_lang"]) == set(de.dd.XNLI_DEV_LANGS)
    assert out["seen_from"] == "default" and out["seen_langs"] == de.TRAIN_LANGS
    assert out["accuracy"]["test"]["unseen"] == pytest.approx(
        np.mean([out["accuracy"]["test"]["per_lang"][l] for l in ("fr", "sw", "ur", "vi")]))
    for key in ("task", "model", "model_fingerprint", "limit", "seconds", "probe", "pair_ap"):
        assert key in out
    n = len(enc.calls)
    assert run("xnli", enc)["accuracy"] == out["accuracy"] and len(enc.calls) == n  # warm: nothing encoded


def test_tydiqa_passages_use_the_passage_kind(cache):
    enc = FakeEncoder()
    out = run("tydiqa", enc, limit=6)
    # one call per kind, all nine languages together (length-sorted batches pad less)
    assert [(k, len(t)) for k, t in enc.calls] == [("query", 9 * 6), ("passage", sum(out["counts"]["passages"].values()))]
    assert out["counts"]["questions"]["bn"] == 6 and out["counts"]["passages"]["bn"] <= 6
    assert set(out["pooled"]) == {"mrr@10", "other_lang_top1"}


def test_sib_and_tatoeba_seen_languages_from_provenance(cache):
    prov = {"langs": ["en", "de"], "base_model_provenance": {"langs": ["de", "vi"]}}
    out = run("sib-200", FakeEncoder(prov))
    assert out["seen_langs"] == ["en", "de", "vi"] and out["seen_from"] == "provenance"
    pl = out["accuracy"]["within"]["per_lang"]
    assert out["accuracy"]["within"]["seen"] == pytest.approx(np.mean([pl["en"], pl["de"], pl["vi"]]))
    assert out["counts"]["train"]["zh"] == 7 * 12 and len(out["counts"]["labels"]) == 7  # 12 per label
    tat = run("tatoeba", FakeEncoder(prov), limit=5)
    assert set(tat["accuracy"]["mean"]["per_lang"]) == set(de.dd.TATOEBA_CODES)
    assert tat["counts"]["pairs"]["th"] == 5


# ----------------------------------------------------------------------------- eval.py

@pytest.mark.parametrize("dtype", ["fp32", "int8"])
def test_eval_cli_tatoeba_end_to_end(tmp_path, dtype):
    out = tmp_path / "tat.json"
    r = subprocess.run([sys.executable, "eval.py", "--dataset", "tatoeba", "--model", str(TINY_BERT),
                        "--limit", "4", "--out", str(out), "--dtype", dtype], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "MINIHBT_CACHE": str(tmp_path / "cache")})
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())
    assert res["task"] == "tatoeba" and res["limit"] == 4 and res["model"] == str(TINY_BERT)
    assert res["dtype"] == dtype  # the results JSON says in which precision it was encoded
    assert "encoding tatoeba-" in r.stderr  # progress on stderr
    assert "x->eng" in r.stdout


BAD = {"xnli": ("test-sw.jsonl", '{"premise": "p", "hypothesis": "h", "label": 7}\n', "test-sw.jsonl:1: label 7"),
       "tydiqa": ("tydiqa.goldp.ko.dev.json", '{"data": [', "malformed or truncated JSON"),
       "sib-200": ("vie_Latn/test.tsv", "index_id\tcategory\ttext\n1\tcooking\tx\n", "test.tsv:2: category 'cooking'"),
       "tatoeba": ("tatoeba.ell-eng.eng", "", "tatoeba.ell-eng.eng: empty file")}


@pytest.mark.parametrize("task", sorted(BAD))
def test_bad_file_through_eval_py_exits_2_with_one_line(task, tmp_path, cache, monkeypatch, capsys):
    from conftest import cli

    if artifacts.mirror_dir() is None:
        pytest.skip("needs the data mirror ($MINIHBT_MIRROR) to assemble a mirror with one bad file")
    fname, text, message = BAD[task]
    dataset = "tydiqa-goldp" if task == "tydiqa" else task
    bad = tmp_path / "mirror" / dataset / fname
    bad.parent.mkdir(parents=True)
    bad.write_text(text, encoding="utf-8")
    real = artifacts.manifest()
    entry = json.loads(json.dumps(real[dataset]))
    entry["files"][fname].update(sha256=hashlib.sha256(text.encode()).hexdigest(), bytes=len(text.encode()))
    monkeypatch.setattr(artifacts, "manifest", lambda: {**real, dataset: entry})
    # the bad file comes from its own mirror; every other file from the shared one, through the cache
    for f in real[dataset]["files"]:
        if f != fname:
            src = Path(artifacts.mirror_dir()) / dataset / f
            (tmp_path / "mirror" / dataset / f).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / "mirror" / dataset / f).symlink_to(src)
    monkeypatch.setenv("MINIHBT_MIRROR", str(tmp_path / "mirror"))
    code = cli("eval.py", ["--dataset", task, "--model", str(TINY_BERT), "--limit", "3", "--quiet"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert not (cache / "embeddings").exists() or not any((cache / "embeddings").iterdir())
    assert not [p for p in cache.rglob("*") if p.name.endswith((".part", ".tmp"))]
