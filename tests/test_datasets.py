"""minihbt.downstream.datasets: the real files read to their published counts, the formats' traps
(raw quotes, CRLF, csv quoting), --limit, and a one-line error naming file and line for bad rows."""
import json

import numpy as np
import pytest

from minihbt.downstream import datasets as dd
from minihbt.io.files import UserError

TYDI_QUESTIONS = {"ar": 921, "bn": 113, "en": 440, "fi": 782, "id": 565, "ko": 276, "ru": 812, "sw": 499, "te": 669}


# ----------------------------------------------------------------------------- the real files

def test_xnli_counts_and_labels_shared_across_languages():
    x = dd.load_xnli()
    assert len(x.train.label) == 9000 and set(x.train.label.tolist()) == {0, 1, 2}
    assert list(x.test) == dd.XNLI_TEST_LANGS and list(x.dev) == dd.XNLI_DEV_LANGS
    for split, n in ((x.test, 5010), (x.dev, 2490)):
        first = next(iter(split.values())).label
        for d in split.values():
            assert len(d.premise) == len(d.hypothesis) == n
            assert np.array_equal(d.label, first)  # translations of one English set, in one order
        assert np.bincount(first).tolist() == [n // 3] * 3
    # CRLF line ends do not leak into the texts (raw quotes: test_tsv_raw_quotes_and_crlf)
    assert not any(t.endswith("\r") for d in x.dev.values() for t in d.premise + d.hypothesis)


def test_tydiqa_counts_and_gold_passages():
    t = dd.load_tydiqa()
    assert {l: len(q.questions) for l, q in t.items()} == TYDI_QUESTIONS
    for q in t.values():
        assert len(set(q.contexts)) == len(q.contexts) < len(q.questions)  # distinct, some shared
        assert q.answer.min() == 0 and q.answer.max() == len(q.contexts) - 1
        assert np.all(np.diff(np.maximum.accumulate(q.answer)) <= 1)  # first-occurrence order


def test_sib_counts_and_labels():
    labels, sib = dd.load_sib()
    assert len(labels) == 7 and list(sib) == list(dd.SIB_CODES)
    for splits in sib.values():
        assert (len(splits["train"].text), len(splits["test"].text)) == (701, 204)
        assert set(splits["test"].label.tolist()) == set(range(7))
    assert np.array_equal(sib["en"]["test"].label, sib["zh"]["test"].label)  # the same FLORES sentences
    # csv quoting: a quoted English field loses its outer quotes and un-doubles the inner ones
    assert any(t.startswith('"She’s very cute') for t in sib["en"]["train"].text)


def test_tatoeba_counts():
    t = dd.load_tatoeba()
    assert {l: len(b.src) for l, b in t.items()} == {l: 548 if l == "th" else 1000 for l in dd.TATOEBA_CODES}
    assert all(len(b.src) == len(b.eng) for b in t.values())


def test_limit_keeps_the_first_rows():
    full, short = dd.load_xnli(), dd.load_xnli(limit=7)
    assert short.test["de"].premise == full.test["de"].premise[:7] and short.test["de"].label.size == 7
    t = dd.load_tydiqa(limit=5)["fi"]
    assert len(t.questions) == 5 and len(t.contexts) <= 5
    assert len(dd.load_tatoeba(limit=3)["zh"].eng) == 3


def test_limit_cuts_the_probe_training_files_per_label():
    """train-en.jsonl is sorted by label (3,000 entailment first): its first N rows would be one class."""
    full, short = dd.load_xnli(), dd.load_xnli(limit=100)
    assert np.bincount(short.train.label).tolist() == [100, 100, 100]
    for k in range(3):  # the first 100 rows of each label, in file order
        first = np.flatnonzero(full.train.label == k)[:100]
        assert short.train.premise[100 * k:100 * (k + 1)] == [full.train.premise[i] for i in first]
    assert dd.load_xnli(limit=1).train.label.tolist() == [0, 1, 2]
    labels, sib = dd.load_sib(limit=5)
    for lang, splits in sib.items():  # SIB-200 train is not sorted, but its first rows miss classes too
        assert np.bincount(splits["train"].label, minlength=len(labels)).tolist() == [5] * len(labels), lang
        assert splits["test"].label.size == 5
    assert dd.first_per_label(np.array([2, 0, 0, 2, 1, 0]), 1).tolist() == [0, 1, 4]
    assert dd.first_per_label(np.array([2, 0]), None).tolist() == [0, 1]


# ----------------------------------------------------------------------------- formats by hand

def write(tmp_path, name: str, text: str):
    p = tmp_path / name
    p.write_bytes(text.encode("utf-8"))
    return p


def test_tsv_raw_quotes_and_crlf(tmp_path):
    p = write(tmp_path, "dev.tsv", 'He said "hi\tShe "left" early\tneutral\r\nA\tB\tentailment\n')
    d = dd.read_nli_tsv(p)
    assert d.premise == ['He said "hi', "A"] and d.hypothesis == ['She "left" early', "B"]
    assert d.label.tolist() == [1, 0]


def test_lines_split_on_newline_only(tmp_path):
    src = write(tmp_path, "x.src", "a\u2028b\nc\n")
    eng = write(tmp_path, "x.eng", "one\ntwo")  # no final newline
    b = dd.read_bitext(src, eng)
    assert b.src == ["a\u2028b", "c"] and b.eng == ["one", "two"]


def test_squad_distinct_contexts_in_first_occurrence_order(tmp_path):
    doc = {"data": [{"paragraphs": [{"context": c, "qas": [{"id": f"q{i}", "question": f"Q{i}?", "answers": []}]}]}
                    for i, c in enumerate(["P", "R", "P", "S"])]}
    qa = dd.read_squad_qa(write(tmp_path, "t.json", json.dumps(doc)))
    assert qa.contexts == ["P", "R", "S"] and qa.answer.tolist() == [0, 1, 0, 2] and qa.qids == ["q0", "q1", "q2", "q3"]


# ----------------------------------------------------------------------------- bad files

LABELS = ["travel", "sports", "health"]
JL = '{"premise": "p", "hypothesis": "h", "label": 0}\n'
SIB_HEAD = "index_id\tcategory\ttext\n"


@pytest.mark.parametrize("name, text, reader, message", [
    ("a.jsonl", JL + '{"premise": "p", "hypothesis": "h", "label": 3}\n', dd.read_nli_jsonl, ":2: label 3: expected 0, 1 or 2"),
    ("a.jsonl", JL + '{"premise": "p", "hypothesis": "h", "label": true}\n', dd.read_nli_jsonl, ":2: label True"),
    ("a.jsonl", JL + '{"premise": "p", "hypothes\n', dd.read_nli_jsonl, ":2: malformed JSON"),
    ("a.jsonl", JL + '{"premise": "p", "label": 1}\n', dd.read_nli_jsonl, ":2: expected an object with premise"),
    ("a.jsonl", JL + '{"premise": " ", "hypothesis": "h", "label": 1}\n', dd.read_nli_jsonl, ":2: premise: empty text"),
    ("a.jsonl", "", dd.read_nli_jsonl, ": empty file"),
    ("a.tsv", "p\th\tneutral\np\th\tneutrall\n", dd.read_nli_tsv, ":2: label 'neutrall': expected one of"),
    ("a.tsv", "p\th\tneutral\np\th\n", dd.read_nli_tsv, ":2: 2 tab-separated columns, expected 3"),
    ("a.tsv", "\n\n", dd.read_nli_tsv, ": empty file"),
    ("s.tsv", SIB_HEAD + "1\ttravel\tx\n2\tcooking\ty\n", lambda p: dd.read_topics(p, LABELS), ":3: category 'cooking'"),
    ("s.tsv", SIB_HEAD + "1\ttravel\tx\textra\n", lambda p: dd.read_topics(p, LABELS), ":2: 4 tab-separated columns"),
    ("s.tsv", "id\tlabel\ttext\n1\ttravel\tx\n", lambda p: dd.read_topics(p, LABELS), ":1: header"),
    ("s.tsv", SIB_HEAD, lambda p: dd.read_topics(p, LABELS), ": no rows after the header"),
    ("s.tsv", "", lambda p: dd.read_topics(p, LABELS), ": empty file"),
    ("t.json", '{"data": [', dd.read_squad_qa, ": malformed or truncated JSON"),
    ("t.json", '{"data": [{"paragraphs": [{"context": "c", "qas": [{"id": "q"}]}]}]}', dd.read_squad_qa,
     ": data[0].paragraphs[0].qas[0].question: missing"),
    ("t.json", '{"data": []}', dd.read_squad_qa, ": no questions"),
    ("l.txt", "travel\ntravel\n", dd.read_labels, ": expected distinct, non-empty label names"),
])
def test_bad_file_is_one_line_error_naming_file_and_line(tmp_path, name, text, reader, message):
    path = write(tmp_path, name, text)
    with pytest.raises(UserError) as e:
        reader(path)
    msg = str(e.value)
    assert msg.startswith(str(path)) and message in msg and "\n" not in msg


def test_bitext_of_different_lengths_and_empty_lines(tmp_path):
    a, b = write(tmp_path, "x.deu", "eins\nzwei\n"), write(tmp_path, "x.eng", "one\n")
    with pytest.raises(UserError, match=r"x.deu: 2 lines, but .*x.eng has 1"):
        dd.read_bitext(a, b)
    c = write(tmp_path, "y.eng", "one\n\n")
    with pytest.raises(UserError, match=r"y.eng:2: empty text"):
        dd.read_bitext(a, c)
