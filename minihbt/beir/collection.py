"""BEIR and MIRACL collections: a corpus, queries and graded relevance judgments (qrels), read as is.

Layouts (a directory DIR)
  BEIR (Thakur et al. 2021):
    DIR/corpus.jsonl       {"_id": "d1", "title": "...", "text": "..."} per line
    DIR/queries.jsonl      {"_id": "q1", "text": "..."} per line (the queries of every split)
    DIR/qrels/<split>.tsv  header `query-id<TAB>corpus-id<TAB>score`, then one judgment per line
  MIRACL (Zhang et al. 2022): its language directory miracl-v1.0-<lang> as distributed, plus a corpus:
    DIR/topics/topics.miracl-v1.0-<lang>-<split>.tsv   `qid<TAB>query`, no header
    DIR/qrels/qrels.miracl-v1.0-<lang>-<split>.tsv     TREC qrels `qid Q0 docid relevance`, no header
    DIR/corpus.jsonl       the user's: MIRACL's passages as one file of {"docid", "title", "text"}
                           lines, e.g. `zcat miracl-corpus-v1.0-sw/docs-*.jsonl.gz > DIR/corpus.jsonl`
  A corpus line names its id `_id` (BEIR) or `docid` (MIRACL); `title` may be absent or empty;
  other fields (BEIR's `metadata`) are ignored. A qrels file is read as BEIR (its header) or as
  TREC qrels (four columns) by its first line. The split's qrels file is `<split>.tsv` or
  `*-<split>.tsv` in qrels/; without --split the only one is used, else `test`.

What is evaluated
- Passage text: `title + " " + text` when the title is not empty, else `text` (BEIR's and
  MTEB's convention). An empty passage is kept (it is a document of the collection) and counted.
- Queries: those judged in the split's qrels (queries.jsonl holds every split), in the order of
  the queries file. Judged query ids absent from it are skipped and counted.
- Relevance: grade >= 1 (trec_eval's default relevance level); the grade is the nDCG gain.
  Judged documents absent from the corpus stay in the denominators (trec_eval reads the qrels,
  not the corpus) and are counted, so a user's partial corpus shows in the report.

Memory: the corpus is validated in one streaming pass that keeps the byte offset of each
passage (8 bytes), a 64-bit hash of its id (duplicates are found by sorting the hashes, then
confirmed on the text) and the index of each judged document. Passages are read back a range
at a time (`Corpus.texts(a, b)`), so a MIRACL-size corpus is encoded shard by shard without its
text ever being in memory.

Every problem is a `UserError` of one line naming the file and line: bad JSON or not UTF-8, a
missing field, a wrong type, an empty query, a duplicate id or judgment, a non-integer grade.
"""
from __future__ import annotations

import bisect
import hashlib
import json
import re
import warnings
from array import array
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from minihbt.io.artifacts import DataWarning
from minihbt.io.files import UserError

BEIR_QRELS_HEADER = ["query-id", "corpus-id", "score"]


def is_collection(path) -> bool:
    """A BEIR (corpus.jsonl + queries.jsonl) or MIRACL (corpus.jsonl + topics/) directory."""
    p = Path(path)
    return (p / "corpus.jsonl").is_file() and ((p / "queries.jsonl").is_file() or (p / "topics").is_dir())


def _json_line(raw: bytes, at: str) -> dict:
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise UserError(f"{at}: not UTF-8 ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{at}: malformed JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(obj, dict):
        raise UserError(f"{at}: expected a JSON object, got {type(obj).__name__}")
    return obj


def _str_field(obj: dict, key: str, at: str, default=None) -> str:
    if key not in obj:
        if default is not None:
            return default
        raise UserError(f"{at}: missing field '{key}'")
    if not isinstance(obj[key], str):
        raise UserError(f"{at}: field '{key}': expected a string, got {type(obj[key]).__name__}")
    return obj[key]


def _doc(obj: dict, at: str) -> tuple[str, str]:
    """(id, passage text) of a corpus line."""
    if ("_id" in obj) == ("docid" in obj):
        raise UserError(f"{at}: expected exactly one id field, '_id' (BEIR) or 'docid' (MIRACL)")
    did = _str_field(obj, "_id" if "_id" in obj else "docid", at)
    if not did:
        raise UserError(f"{at}: empty document id")
    title, text = _str_field(obj, "title", at, ""), _str_field(obj, "text", at)
    return did, f"{title} {text}" if title else text


@dataclass
class Corpus:
    path: Path
    starts: np.ndarray          # int64 (N,): byte offset of each passage's line
    judged: dict[str, int]      # judged document id -> corpus index
    sha256: str
    empty: int = 0              # passages whose text (and title) are empty
    blank_before: list[int] = field(default_factory=list)  # corpus indices preceded by a blank line

    def __len__(self) -> int:
        return len(self.starts)

    def line(self, i: int) -> int:
        return i + 1 + bisect.bisect_right(self.blank_before, i)

    def _lines(self, a: int, b: int) -> list[bytes]:
        with open(self.path, "rb") as f:
            f.seek(int(self.starts[a]))
            data = f.read(int(self.starts[b]) - int(self.starts[a])) if b < len(self) else f.read()
        return [raw for raw in data.split(b"\n") if raw.strip()][: b - a]  # as `for raw in file` splits

    def texts(self, a: int, b: int) -> list[str]:
        """Passage texts of corpus rows [a, b), read back from the file."""
        return [_doc(json.loads(raw), "")[1] for raw in self._lines(a, b)] if b > a else []

    def ids(self, indices) -> list[str]:
        out = []
        with open(self.path, "rb") as f:
            for i in indices:
                f.seek(int(self.starts[i]))
                out.append(_doc(json.loads(f.readline()), "")[0])
        return out


def read_corpus(path: Path, judged_ids: set[str]) -> Corpus:
    starts, hashes, judged, blank_before = array("q"), array("q"), {}, []
    h, pos, empty, n = hashlib.sha256(), 0, 0, 0
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            h.update(raw)
            if raw.strip():
                did, text = _doc(_json_line(raw, f"{path}:{n}"), f"{path}:{n}")
                if did in judged_ids:
                    judged[did] = len(starts)
                empty += not text.strip()
                starts.append(pos)
                hashes.append(hash(did))
            else:
                blank_before.append(len(starts))
            pos += len(raw)
    if not starts:
        raise UserError(f"{path}: empty corpus; expected one JSON object per passage")
    corpus = Corpus(path, np.frombuffer(starts, dtype=np.int64).copy(), judged, h.hexdigest(), empty, blank_before)
    # Duplicate ids: equal ids have equal hashes; sort the hashes and confirm candidates on the text.
    hv = np.frombuffer(hashes, dtype=np.int64)
    order = np.argsort(hv, kind="stable")
    pairs = [(int(order[s + 1]), int(order[s])) for s in np.nonzero(hv[order][1:] == hv[order][:-1])[0]]
    for j, i in sorted(pairs):  # stable sort: i < j; the first repeated line in the file is reported
        a, b = corpus.ids([i, j])
        if a == b:
            raise UserError(f"{path}:{corpus.line(j)}: duplicate document id '{a}' (first on line {corpus.line(i)})")
    return corpus


def read_queries_jsonl(path: Path) -> dict[str, str]:
    out, first = {}, {}
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            if raw.strip():
                at = f"{path}:{n}"
                obj = _json_line(raw, at)
                qid, text = _str_field(obj, "_id", at), _str_field(obj, "text", at)
                out[_new_query(qid, first, n, at)] = _query_text(text, at)
    return out


def read_topics_tsv(path: Path) -> dict[str, str]:
    out, first = {}, {}
    for n, line in _tsv_lines(path):
        at = f"{path}:{n}"
        cols = line.split("\t")
        if len(cols) != 2:
            raise UserError(f"{at}: expected 2 tab-separated columns (qid, query), got {len(cols)}")
        out[_new_query(cols[0], first, n, at)] = _query_text(cols[1], at)
    return out


def _new_query(qid: str, first: dict, n: int, at: str) -> str:
    if not qid:
        raise UserError(f"{at}: empty query id")
    if qid in first:
        raise UserError(f"{at}: duplicate query id '{qid}' (first on line {first[qid]})")
    first[qid] = n
    return qid


def _query_text(text: str, at: str) -> str:
    if not text.strip():
        raise UserError(f"{at}: empty query text")
    return text


def _tsv_lines(path: Path):
    try:
        with open(path, encoding="utf-8", newline="") as f:
            for n, line in enumerate(f, 1):
                line = line.rstrip("\r\n")
                if line.strip():
                    yield n, line
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 ({e.reason} at byte {e.start})") from None


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """{query id: {document id: grade}} from a BEIR (header) or TREC (4 columns) qrels file."""
    qrels, first, trec = {}, {}, None
    for n, line in _tsv_lines(path):
        at = f"{path}:{n}"
        cols = line.split("\t") if trec is False else line.split()
        if trec is None:
            if line.split("\t") == BEIR_QRELS_HEADER:
                trec = False
                continue
            trec = True
            if len(cols) != 4:
                raise UserError(f"{at}: expected the BEIR header '{chr(9).join(BEIR_QRELS_HEADER)}' "
                                f"or TREC qrels 'qid Q0 docid relevance', got {line[:60]!r}")
        want = 4 if trec else 3
        if len(cols) != want:
            raise UserError(f"{at}: expected {want} columns, got {len(cols)}")
        qid, did, grade = (cols[0], cols[2], cols[3]) if trec else cols
        if not re.fullmatch(r"-?[0-9]+", grade):
            raise UserError(f"{at}: relevance grade: expected an integer, got {grade!r}")
        if (qid, did) in first:
            raise UserError(f"{at}: duplicate judgment of {qid} {did} (first on line {first[qid, did]})")
        first[qid, did] = n
        qrels.setdefault(qid, {})[did] = int(grade)
    if not qrels:
        raise UserError(f"{path}: no judgments")
    return qrels


@dataclass
class Collection:
    name: str
    root: Path
    layout: str                        # "beir" | "miracl"
    split: str
    corpus: Corpus
    queries: dict[str, str]            # the evaluated queries, file order
    qrels: dict[str, dict[str, int]]   # their judgments: query id -> document id -> grade
    missing_docs: int                  # relevant judgments whose document is not in the corpus
    missing_queries: int               # judged query ids not in the queries file
    files: dict[str, Path] = field(default_factory=dict)


def _split_file(folder: Path, split: str | None, what: str) -> tuple[str, Path]:
    files = sorted(p for p in folder.glob("*.tsv")) if folder.is_dir() else []
    splits = {re.split(r"[-.]", p.stem)[-1]: p for p in files}
    if not splits:
        raise UserError(f"{folder}: no {what} files (*.tsv)")
    if split is None:
        split = next(iter(splits)) if len(splits) == 1 else "test"
    if split not in splits:
        raise UserError(f"{folder}: no {what} for split '{split}' (expected one of {', '.join(splits)}; "
                        "choose with --split)")
    return split, splits[split]


def load(root, split: str | None = None) -> Collection:
    """The collection in `root` (BEIR or MIRACL layout) for one split of its qrels."""
    root = Path(root)
    if not is_collection(root):
        raise UserError(f"{root}: expected corpus.jsonl and queries.jsonl (BEIR) or topics/ (MIRACL)")
    split, qrels_path = _split_file(root / "qrels", split, "qrels")
    if (root / "queries.jsonl").is_file():
        layout, queries_path = "beir", root / "queries.jsonl"
        all_queries = read_queries_jsonl(queries_path)
    else:
        layout = "miracl"
        _, queries_path = _split_file(root / "topics", split, "topics")
        all_queries = read_topics_tsv(queries_path)
    qrels = read_qrels(qrels_path)
    corpus = read_corpus(root / "corpus.jsonl", {d for judged in qrels.values() for d in judged})
    missing_queries = sum(q not in all_queries for q in qrels)
    queries = {q: t for q, t in all_queries.items() if q in qrels}
    if not queries:
        raise UserError(f"{qrels_path}: none of its {len(qrels)} judged queries is in {queries_path}")
    qrels = {q: qrels[q] for q in queries}
    missing_docs = sum(g >= 1 and d not in corpus.judged for j in qrels.values() for d, g in j.items())
    for count, what in [(missing_queries, f"judged queries of {qrels_path.name} are not in {queries_path.name}: "
                                          "skipped"),
                        (missing_docs, "relevant judgments name a document not in corpus.jsonl: they count as "
                                       "never retrieved (trec_eval's reading)"),
                        (corpus.empty, "passages of corpus.jsonl are empty: kept, as documents of the collection")]:
        if count:
            warnings.warn(f"{root}: {count} {what}", DataWarning)
    return Collection(root.resolve().name, root, layout, split, corpus, queries, qrels, missing_docs,
                      missing_queries, {"corpus": root / "corpus.jsonl", "queries": queries_path, "qrels": qrels_path})
