"""minihbt.data, the command line: fetch, stats and check, their output and their one-line errors."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from minihbt import lareqa

ROOT = Path(__file__).resolve().parent.parent
XQUAD_R_CANDIDATES = {"ar": 1222, "de": 1276, "el": 1234, "en": 1180, "es": 1215, "hi": 1244,
                      "ru": 1219, "th": 852, "tr": 1167, "vi": 1209, "zh": 1196}


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "minihbt.data", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env)


def test_stats_xquad_r_matches_published_counts():
    r = run_cli("stats", "xquad-r", "--json")
    assert r.returncode == 0, r.stderr
    table = json.loads(r.stdout)
    assert list(table) == lareqa.LANGS["xquad-r"]
    for lang, n in XQUAD_R_CANDIDATES.items():
        assert table[lang] == {"questions": 1190, "candidates": n, "paragraphs": 240, "skipped": 0}
    assert "tr.json: 2 sentence(s) differ from context[start:end]" in r.stderr


@pytest.mark.parametrize("args,msg", [(["stats", "squad"], "unknown dataset 'squad'"),
                                      (["stats", "xquad-r", "--langs", "en,fr"], "xquad-r has no language fr"),
                                      (["stats", "mlqa-r", "--langs", "el"], "mlqa-r has no language el"),
                                      (["fetch", "nope"], "unknown artifact 'nope'")])
def test_unknown_dataset_or_language(args, msg):
    r = run_cli(*args)
    assert r.returncode == 2 and r.stderr.startswith(f"error: {msg}") and r.stderr.count("\n") == 1


def test_check_a_beir_directory(tmp_path):
    from test_collection import write_beir, write_miracl

    r = run_cli("check", str(write_beir(tmp_path / "toy")))
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"{tmp_path / 'toy'} [test]: beir layout, 2 judged queries, 3 passages, 3 judgments (2 relevant)\n"
    r = run_cli("check", str(write_miracl(tmp_path / "m")), "--split", "dev")
    assert r.returncode == 0 and "[dev]: miracl layout, 2 judged queries" in r.stdout
    (tmp_path / "toy" / "queries.jsonl").write_text('{"_id": "q1", "text": ""}\n')
    r = run_cli("check", str(tmp_path / "toy"))
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == f"error: {tmp_path / 'toy' / 'queries.jsonl'}:1: empty query text\n"
