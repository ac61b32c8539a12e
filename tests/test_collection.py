"""minihbt.beir.collection: the BEIR and MIRACL layouts as distributed, and one-line errors for bad files."""
import json
import warnings
from pathlib import Path

import pytest

from minihbt.beir import collection as beir
from minihbt.io.artifacts import DataWarning
from minihbt.io.files import UserError

CORPUS = [{"_id": "d1", "title": "Kiel", "text": "Kiel lies on the Baltic.", "metadata": {"url": "x"}},
          {"_id": "d2", "title": "", "text": "Bonn lies on the Rhine."},
          {"_id": "d3", "text": "Ulm lies on the Danube."}]
QUERIES = [{"_id": "q1", "text": "Where is Kiel?"}, {"_id": "q2", "text": "Where is Ulm?"},
           {"_id": "q3", "text": "A training query"}]


def jsonl(rows) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


def write_beir(root: Path, corpus=CORPUS, queries=QUERIES, qrels="query-id\tcorpus-id\tscore\nq2\td3\t1\nq1\td1\t2\n"
               "q1\td2\t0\n", split="test") -> Path:
    (root / "qrels").mkdir(parents=True, exist_ok=True)
    (root / "corpus.jsonl").write_text(jsonl(corpus), encoding="utf-8")
    (root / "queries.jsonl").write_text(jsonl(queries), encoding="utf-8")
    (root / "qrels" / f"{split}.tsv").write_text(qrels, encoding="utf-8")
    return root


def write_miracl(root: Path, lang="sw", split="dev") -> Path:
    for d in ("topics", "qrels"):
        (root / d).mkdir(parents=True, exist_ok=True)
    (root / "corpus.jsonl").write_text(jsonl([{"docid": r["_id"], "title": r.get("title", ""), "text": r["text"]}
                                              for r in CORPUS]), encoding="utf-8")
    (root / "topics" / f"topics.miracl-v1.0-{lang}-{split}.tsv").write_text("q1\tWhere is Kiel?\nq2\tWhere is Ulm?\n")
    (root / "topics" / f"topics.miracl-v1.0-{lang}-testA.tsv").write_text("q9\tHidden\n")
    (root / "qrels" / f"qrels.miracl-v1.0-{lang}-{split}.tsv").write_text("q2 Q0 d3 1\nq1\tQ0\td1\t2\nq1 Q0 d2 0\n")
    return root


def test_beir_directory(tmp_path):
    c = beir.load(write_beir(tmp_path / "toy"))
    assert (c.name, c.layout, c.split) == ("toy", "beir", "test")
    assert c.queries == {"q1": "Where is Kiel?", "q2": "Where is Ulm?"}  # judged ones, file order
    assert c.qrels == {"q1": {"d1": 2, "d2": 0}, "q2": {"d3": 1}}
    assert len(c.corpus) == 3 and c.corpus.judged == {"d1": 0, "d2": 1, "d3": 2}
    # title + " " + text when there is a title (BEIR / MTEB), else the text alone
    assert c.corpus.texts(0, 3) == ["Kiel Kiel lies on the Baltic.", "Bonn lies on the Rhine.",
                                    "Ulm lies on the Danube."]
    assert c.corpus.texts(1, 2) == ["Bonn lies on the Rhine."] and c.corpus.texts(2, 2) == []
    assert c.corpus.ids([2, 0]) == ["d3", "d1"]
    assert (c.missing_docs, c.missing_queries, c.corpus.empty) == (0, 0, 0)
    assert beir.is_collection(tmp_path / "toy") and not beir.is_collection(tmp_path)


def test_miracl_directory_as_distributed(tmp_path):
    m = beir.load(write_miracl(tmp_path / "miracl-v1.0-sw"), split="dev")
    b = beir.load(write_beir(tmp_path / "toy"))
    assert (m.layout, m.split, m.name) == ("miracl", "dev", "miracl-v1.0-sw")
    assert (m.queries, m.qrels) == (b.queries, b.qrels)
    assert m.corpus.texts(0, 3) == b.corpus.texts(0, 3)
    assert beir.load(tmp_path / "miracl-v1.0-sw").split == "dev"  # the only qrels split
    with pytest.raises(UserError, match=r"no qrels for split 'testA' \(expected one of dev; choose with --split\)"):
        beir.load(tmp_path / "miracl-v1.0-sw", split="testA")


def test_split_choice(tmp_path):
    root = write_beir(tmp_path / "toy")
    (root / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\nq3\td2\t1\n")
    assert beir.load(root).split == "test"  # several: test
    assert beir.load(root, "dev").queries == {"q3": "A training query"}
    (root / "qrels" / "test.tsv").unlink()
    (root / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq3\td2\t1\n")
    with pytest.raises(UserError, match="no qrels for split 'test' .expected one of dev, train"):
        beir.load(root)


def test_blank_lines_keep_line_numbers_and_offsets(tmp_path):
    corpus = [CORPUS[0], "", "  ", CORPUS[1], CORPUS[2], {"_id": "d1", "text": "again"}]
    root = write_beir(tmp_path / "toy", corpus=corpus)
    with pytest.raises(UserError) as e:
        beir.load(root)
    assert str(e.value) == f"{root / 'corpus.jsonl'}:6: duplicate document id 'd1' (first on line 1)"
    root = write_beir(tmp_path / "ok", corpus=corpus[:5])
    c = beir.load(root).corpus
    assert c.texts(0, 3)[1:] == ["Bonn lies on the Rhine.", "Ulm lies on the Danube."]
    assert [c.line(i) for i in range(3)] == [1, 4, 5] and c.ids([1]) == ["d2"]


def test_partial_corpus_and_queries_are_counted_with_warnings(tmp_path):
    root = write_beir(tmp_path / "toy", corpus=CORPUS + [{"_id": "d4", "title": "", "text": " "}],
                      qrels="query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\tgone\t2\nq1\tgone0\t0\nq7\td1\t1\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        c = beir.load(root)
    assert (c.missing_docs, c.missing_queries, c.corpus.empty) == (1, 1, 1)
    text = " | ".join(str(w.message) for w in caught)
    assert "1 judged queries of test.tsv are not in queries.jsonl" in text
    assert "1 relevant judgments name a document not in corpus.jsonl" in text and "1 passages" in text
    assert c.qrels == {"q1": {"d1": 1, "gone": 2, "gone0": 0}}


GOOD_QRELS = "query-id\tcorpus-id\tscore\nq1\td1\t1\n"
BAD = [  # (file, content, line, message)
    ("corpus.jsonl", jsonl([CORPUS[0], '{"_id": "d2", "text": ']), 2, "malformed JSON"),
    ("corpus.jsonl", jsonl([CORPUS[0], '["d2"]']), 2, "expected a JSON object, got list"),
    ("corpus.jsonl", jsonl([CORPUS[0], {"_id": "d2"}]), 2, "missing field 'text'"),
    ("corpus.jsonl", jsonl([CORPUS[0], {"text": "t"}]), 2, "expected exactly one id field"),
    ("corpus.jsonl", jsonl([CORPUS[0], {"_id": "d2", "docid": "d2", "text": "t"}]), 2, "expected exactly one id field"),
    ("corpus.jsonl", jsonl([CORPUS[0], {"_id": 2, "text": "t"}]), 2, "field '_id': expected a string, got int"),
    ("corpus.jsonl", jsonl([CORPUS[0], {"_id": "", "text": "t"}]), 2, "empty document id"),
    ("corpus.jsonl", jsonl([CORPUS[0], {"_id": "d2", "title": None, "text": "t"}]), 2, "field 'title'"),
    ("corpus.jsonl", jsonl([CORPUS[0], CORPUS[0]]), 2, "duplicate document id 'd1' (first on line 1)"),
    ("queries.jsonl", jsonl([QUERIES[0], {"text": "t"}]), 2, "missing field '_id'"),
    ("queries.jsonl", jsonl([QUERIES[0], {"_id": "q2", "text": " "}]), 2, "empty query text"),
    ("queries.jsonl", jsonl([QUERIES[0], QUERIES[0]]), 2, "duplicate query id 'q1' (first on line 1)"),
    ("qrels/test.tsv", "query-id\tcorpus-id\n", 1, "expected the BEIR header"),
    ("qrels/test.tsv", GOOD_QRELS + "q1\td2\n", 3, "expected 3 columns, got 2"),
    ("qrels/test.tsv", GOOD_QRELS + "q1\td2\t1.5\n", 3, "relevance grade: expected an integer, got '1.5'"),
    ("qrels/test.tsv", GOOD_QRELS + "q1\td1\t2\n", 3, "duplicate judgment of q1 d1 (first on line 2)"),
    ("qrels/test.tsv", "q1 Q0 d1 1\nq1 Q0 d2\n", 2, "expected 4 columns, got 3"),
]


@pytest.mark.parametrize("name, content, line, message", BAD, ids=[b[3] for b in BAD])
def test_bad_file_is_one_error_naming_file_and_line(tmp_path, name, content, line, message):
    root = write_beir(tmp_path / "toy")
    (root / name).write_text(content, encoding="utf-8")
    with pytest.raises(UserError) as e:
        beir.load(root)
    text = str(e.value)
    assert text.startswith(f"{root / name}:{line}: ") and "\n" not in text, text
    assert message in text, text


def test_bad_collections(tmp_path):
    with pytest.raises(UserError, match="expected corpus.jsonl and queries.jsonl"):
        beir.load(tmp_path)
    root = write_beir(tmp_path / "toy", corpus=[])
    with pytest.raises(UserError, match="empty corpus"):
        beir.load(root)
    root = write_beir(tmp_path / "none", qrels="query-id\tcorpus-id\tscore\nq8\td1\t1\n")
    with pytest.raises(UserError, match="none of its 1 judged queries is in"):
        beir.load(root)
    root = write_beir(tmp_path / "latin1")
    (root / "corpus.jsonl").write_bytes(b'{"_id": "d1", "text": "caf\xe9"}\n')
    with pytest.raises(UserError, match=r"corpus.jsonl:1: not UTF-8"):
        beir.load(root)
    root = write_miracl(tmp_path / "m")
    (root / "topics" / "topics.miracl-v1.0-sw-dev.tsv").write_text("q1\tWhere\tis Kiel?\n")
    with pytest.raises(UserError, match=r"topics.miracl-v1.0-sw-dev.tsv:1: expected 2 tab-separated columns"):
        beir.load(root)
    (root / "topics" / "topics.miracl-v1.0-sw-dev.tsv").write_text("q1\tWhere is Kiel?\n")
    (root / "qrels" / "qrels.miracl-v1.0-sw-dev.tsv").write_text("")
    with pytest.raises(UserError, match="no judgments"):
        beir.load(root)
