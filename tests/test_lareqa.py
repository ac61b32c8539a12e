"""minihbt.lareqa: the LAReQA reader, its training view and its fingerprints.

Expected counts are the published ones (LAReQA README, ../shared/data/README.md), and the raw
JSON is re-read here with the standard library to check that no candidate is lost or doubled.
"""
import json
from pathlib import Path

import pytest

from minihbt import lareqa
from minihbt.io import artifacts
from minihbt.io.files import UserError
from test_data import run_cli

MLQA_R = {"ar": (517, 2545), "de": (512, 2362), "en": (1148, 6264), "es": (500, 1787),
          "hi": (507, 2426), "vi": (511, 2828), "zh": (504, 2322)}


def test_stats_mlqa_r_matches_published_counts():
    table = lareqa.stats("mlqa-r")
    assert {l: (row["questions"], row["candidates"]) for l, row in table.items()} == MLQA_R
    assert all(row["skipped"] == 0 for row in table.values())


def test_manifest_languages_agree_with_reader():
    m = artifacts.manifest()
    for name, langs in lareqa.LANGS.items():
        assert m[name]["languages"] == langs
        assert {f"{l}.json" for l in langs} <= set(m[name]["files"])
    assert set(lareqa.TRAIN_LANGS) == set(lareqa.LANGS["xquad-r"]) - {"el", "vi"}


def test_every_xquad_r_question_has_eleven_relevant():
    ds = lareqa.load_lareqa("xquad-r")
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
    ds = lareqa.load_lareqa("mlqa-r")
    qids = {q.qid for qs in ds.questions.values() for q in qs}
    sizes = [len(ds.relevant(qid)) for qid in qids]
    assert min(sizes) == 2 and max(sizes) == 4
    # published: 820 ids in 4 languages, 263 in 3, 65 in 2
    assert {k: sizes.count(k) for k in (2, 3, 4)} == {2: 65, 3: 263, 4: 820}


@pytest.mark.parametrize("name", ["xquad-r", "mlqa-r"])
def test_no_candidate_lost_or_duplicated(name):
    ds = lareqa.load_lareqa(name)
    for lang in ds.langs:
        raw = json.loads(Path(artifacts.fetch(name, [f"{lang}.json"])[f"{lang}.json"]).read_text())
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
    ds = lareqa.load_lareqa("xquad-r", ["de", "zh"])
    raw = json.loads(artifacts.fetch("xquad-r", ["de.json"])["de.json"].read_text())
    qa = raw["data"][0]["paragraphs"][0]["qas"][0]
    c = ds.candidates["de"][ds.answer["de"][qa["id"]]]
    par = raw["data"][0]["paragraphs"][0]
    start, end = par["sentence_breaks"][c.sent]
    assert c.pid == "0.0" and start <= qa["answers"][0]["answer_start"] < end


def test_groups_are_parallel_across_training_languages():
    groups = lareqa.load_groups("xquad-r", lareqa.TRAIN_LANGS)
    assert len(groups) == 1190
    assert all(sorted(g) == sorted(lareqa.TRAIN_LANGS) for g in groups.values())
    ds = lareqa.load_lareqa("xquad-r", ["en"])
    q = ds.questions["en"][5]
    ex = groups[q.qid]["en"]
    assert ex.question == q.text and ex.sentence == ds.candidates["en"][ds.answer["en"][q.qid]].text
    assert ex.sentence in ex.context


def test_examples_name_their_sentence_and_carry_the_paragraph_as_negatives():
    # Re-read from the raw JSON: sid = (paragraph id, sentence index), negatives = the paragraph's
    # other sentences in order, each with its own sid.
    groups = lareqa.load_groups("mlqa-r", ["de"])
    doc = json.loads(artifacts.fetch("mlqa-r", ["de.json"])["de.json"].read_text())
    checked = 0
    for ai, article in enumerate(doc["data"][:40]):
        for pi, par in enumerate(article["paragraphs"]):
            for qa in par["qas"]:
                start = qa["answers"][0]["answer_start"]
                hit = [k for k, (s, e) in enumerate(par["sentence_breaks"]) if s <= start < e]
                ex = groups[qa["id"]]["de"]
                assert ex.sid == (f"{ai}.{pi}", hit[0]) and ex.sentence == par["sentences"][hit[0]]
                assert ex.negatives == tuple(((f"{ai}.{pi}", k), t) for k, t in enumerate(par["sentences"])
                                             if k != hit[0])
                checked += 1
    assert checked > 50


def test_example_without_sid_is_identified_by_its_text():
    assert lareqa.Example("q", "The cat.", "ctx").sid == "The cat."
    assert lareqa.Example("q", "The cat.", "ctx", ("0.1", 2)).sid == ("0.1", 2)


def test_fingerprint_depends_on_languages_and_content(tmp_path):
    assert lareqa.dataset_fingerprint("mlqa-r", ["en"]) != lareqa.dataset_fingerprint("mlqa-r", ["en", "de"])
    d = write_lareqa(tmp_path / "toy")
    before = lareqa.dataset_fingerprint(str(d))
    (d / "en.json").write_text((d / "en.json").read_text().replace("Paris", "Lyon"))
    assert lareqa.dataset_fingerprint(str(d)) != before


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
    ds = lareqa.load_lareqa(str(write_lareqa(tmp_path / "toy")))
    assert ds.langs == ["de", "en"]
    assert ds.relevant("q1") == [("de", 1), ("en", 1)] and ds.relevant("q2") == [("de", 0), ("en", 0)]


def test_answer_outside_every_sentence_is_skipped_and_counted(tmp_path):
    d = write_lareqa(tmp_path / "toy", {"en": toy_doc(answer_start=13)})  # 13: the space between sentences
    with pytest.warns(lareqa.DataWarning, match=r"en.json: 1 question\(s\) skipped"):
        ds = lareqa.load_lareqa(str(d))
    assert ds.skipped == {"en": 1} and [q.qid for q in ds.questions["en"]] == ["q1"]
    r = run_cli("stats", str(d), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["en"]["skipped"] == 1
    assert "1 question(s) skipped" in r.stderr


def test_paragraph_without_sentence_breaks(tmp_path):
    d = write_lareqa(tmp_path / "toy", {"en": toy_doc(breaks=False)})
    with pytest.raises(UserError, match=r"en.json: data\[0\].paragraphs\[0\]: missing field 'sentence_breaks'"):
        lareqa.load_lareqa(str(d))
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
        lareqa.load_lareqa(str(d))
    r = run_cli("stats", str(d))
    assert r.returncode == 2 and f"{d / 'en.json'}" in r.stderr and msg in r.stderr
