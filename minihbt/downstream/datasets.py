"""Readers of the downstream evaluation sets: XNLI, TyDi QA GoldP, SIB-200 and Tatoeba.

Every file comes from `data_manifest.json` through `minihbt.io.artifacts.fetch` (cache -> mirror ->
URL, sha256-checked, atomic), or from a path given to a `read_*` function. Rows are kept in file
order; labels become int64 arrays; languages are keyed by ISO 639-1 codes (those of train.py's
`--langs`), whatever the dataset calls them.

Formats
- XNLI (Conneau et al. 2018). `test-<lang>.jsonl`, `train-en.jsonl`: one JSON object per line
  with string `premise`, `hypothesis` and integer `label`, 0 entailment, 1 neutral,
  2 contradiction. `dev-<lang>.tsv`: premise, hypothesis and the label as a word, tab-separated,
  no header and *no quoting* (a `"` is text: csv's default dialect would swallow it), CRLF line
  ends. Test exists for 11 languages; dev is read for el, ru, th, which have no test file here.
- TyDi QA GoldP v1.1 dev (Clark et al. 2020), SQuAD v1.1 JSON. The candidates of a language are
  its distinct `context` strings in first-occurrence order (several questions share a passage);
  a question's one relevant candidate is its own paragraph's context.
- SIB-200 (Adelani et al. 2024): `<code>/{train,test}.tsv` with header `index_id category text`
  and csv quoting (`"` doubled inside quoted fields); the 7 categories are `labels.txt`, label i
  is line i. The dev split is not read: nothing here is tuned.
- Tatoeba (LASER, Artetxe and Schwenk 2019): `tatoeba.<x>-eng.<x>` and `tatoeba.<x>-eng.eng`,
  one sentence per line, line i of one translating line i of the other.

Contract
- `limit`: only the first N rows (questions, lines) of every file; None reads all. The files a
  probe is trained on (XNLI train-en.jsonl, SIB-200 train.tsv) are cut per label instead: the
  first N rows of each label, in file order (deterministic; train-en.jsonl is sorted by label, so
  its first N rows would be one class only, and a probe needs every class).
- A bad file is one `UserError` naming it and the 1-based line (or JSON path) of the first bad
  row: malformed JSON, a missing or mistyped field, an unknown label, a wrong column count, an
  empty text, an empty file, Tatoeba files of different lengths. Lines split on "\\n" only, so a
  U+2028 inside a sentence stays inside it.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from minihbt.io.artifacts import fetch
from minihbt.io.files import UserError, nonblank_text as _text

NLI_LABELS = ("entailment", "neutral", "contradiction")  # label i is NLI_LABELS[i]
XNLI_TEST_LANGS = ["ar", "de", "en", "es", "fr", "hi", "sw", "tr", "ur", "vi", "zh"]
XNLI_DEV_LANGS = ["el", "ru", "th"]
TYDI_LANGS = ["ar", "bn", "en", "fi", "id", "ko", "ru", "sw", "te"]
SIB_CODES = {"ar": "arb_Arab", "de": "deu_Latn", "el": "ell_Grek", "en": "eng_Latn", "es": "spa_Latn",
             "hi": "hin_Deva", "ru": "rus_Cyrl", "th": "tha_Thai", "tr": "tur_Latn", "vi": "vie_Latn",
             "zh": "zho_Hans"}
TATOEBA_CODES = {"ar": "ara", "de": "deu", "el": "ell", "es": "spa", "hi": "hin", "ru": "rus", "th": "tha",
                 "tr": "tur", "vi": "vie", "zh": "cmn"}


@dataclass
class NLI:
    premise: list[str]
    hypothesis: list[str]
    label: np.ndarray  # int64 (n,), index into NLI_LABELS


@dataclass
class XNLI:
    train: NLI              # English MultiNLI training pairs
    test: dict[str, NLI]    # XNLI_TEST_LANGS
    dev: dict[str, NLI]     # XNLI_DEV_LANGS


@dataclass
class QA:
    qids: list[str]
    questions: list[str]
    contexts: list[str]   # distinct, first-occurrence order
    answer: np.ndarray    # int64 (n,), index into contexts


@dataclass
class Topics:
    text: list[str]
    label: np.ndarray  # int64 (n,), index into the label names


@dataclass
class Bitext:
    src: list[str]  # the non-English side
    eng: list[str]  # eng[i] translates src[i]


# ----------------------------------------------------------------------------- line files

def _lines(path: Path, limit: int | None) -> list[str]:
    """The lines of a UTF-8 text file without their "\\n" / "\\r\\n" ends; an empty file is an error."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 ({e.reason} at byte {e.start})") from None
    if not text.strip():
        raise UserError(f"{path}: empty file")
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()  # the final newline ends the last line; it starts no new one
    lines = [l[:-1] if l.endswith("\r") else l for l in lines]
    return lines if limit is None else lines[:limit]



def _nli(premise: list[str], hypothesis: list[str], label: list[int]) -> NLI:
    return NLI(premise, hypothesis, np.array(label, dtype=np.int64).reshape(-1))


def read_nli_jsonl(path: Path, limit: int | None = None) -> NLI:
    """XNLI / MultiNLI JSON lines: premise, hypothesis, label 0 | 1 | 2."""
    p, h, y = [], [], []
    for i, line in enumerate(_lines(path, limit), 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{i}: malformed JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(row, dict) or not {"premise", "hypothesis", "label"} <= set(row):
            raise UserError(f"{path}:{i}: expected an object with premise, hypothesis and label")
        label = row["label"]
        if type(label) is not int or not 0 <= label < len(NLI_LABELS):  # bool is not a label
            raise UserError(f"{path}:{i}: label {label!r}: expected 0, 1 or 2 ({', '.join(NLI_LABELS)})")
        p.append(_text(row["premise"], f"{path}:{i}: premise"))
        h.append(_text(row["hypothesis"], f"{path}:{i}: hypothesis"))
        y.append(label)
    return _nli(p, h, y)


def read_nli_tsv(path: Path, limit: int | None = None) -> NLI:
    """XNLI dev TSV: premise <tab> hypothesis <tab> label word; no header, no quoting."""
    p, h, y = [], [], []
    for i, line in enumerate(_lines(path, limit), 1):
        cols = line.split("\t")
        if len(cols) != 3:
            raise UserError(f"{path}:{i}: {len(cols)} tab-separated columns, expected 3 (premise, hypothesis, label)")
        if cols[2] not in NLI_LABELS:
            raise UserError(f"{path}:{i}: label {cols[2]!r}: expected one of {', '.join(NLI_LABELS)}")
        p.append(_text(cols[0], f"{path}:{i}: premise"))
        h.append(_text(cols[1], f"{path}:{i}: hypothesis"))
        y.append(NLI_LABELS.index(cols[2]))
    return _nli(p, h, y)


def read_bitext(src_path: Path, eng_path: Path, limit: int | None = None) -> Bitext:
    src, eng = _lines(src_path, None), _lines(eng_path, None)
    if len(src) != len(eng):
        raise UserError(f"{src_path}: {len(src)} lines, but {eng_path} has {len(eng)}; line i must translate line i")
    src, eng = src[:limit], eng[:limit]
    for path, lines in ((src_path, src), (eng_path, eng)):
        for i, line in enumerate(lines, 1):
            _text(line, f"{path}:{i}")
    return Bitext(src, eng)


# ----------------------------------------------------------------------------- SIB-200

def read_labels(path: Path) -> list[str]:
    names = _lines(path, None)
    if len(set(names)) != len(names) or not all(n.strip() for n in names):
        raise UserError(f"{path}: expected distinct, non-empty label names, one per line")
    return names


def read_topics(path: Path, labels: list[str], limit: int | None = None) -> Topics:
    """A SIB-200 split: header index_id, category, text; csv quoting; category in `labels`."""
    _lines(path, 0)  # an empty file is an error before csv sees it
    text, y = [], []
    with open(path, encoding="utf-8", newline="") as f:
        rows = csv.reader(f, delimiter="\t", strict=True)
        try:
            header = next(rows)
            if header != ["index_id", "category", "text"]:
                raise UserError(f"{path}:1: header {header}, expected index_id, category, text")
            for row in rows:
                if limit is not None and len(text) >= limit:
                    break
                line = rows.line_num
                if len(row) != 3:
                    raise UserError(f"{path}:{line}: {len(row)} tab-separated columns, "
                                    "expected 3 (index_id, category, text)")
                if row[1] not in labels:
                    raise UserError(f"{path}:{line}: category {row[1]!r}: expected one of {', '.join(labels)}")
                text.append(_text(row[2], f"{path}:{line}: text"))
                y.append(labels.index(row[1]))
        except csv.Error as e:
            raise UserError(f"{path}:{rows.line_num}: bad TSV quoting ({e})") from None
    if not text:
        raise UserError(f"{path}: no rows after the header")
    return Topics(text, np.array(y, dtype=np.int64).reshape(-1))


# ----------------------------------------------------------------------------- TyDi QA GoldP

def read_squad_qa(path: Path, limit: int | None = None) -> QA:
    """Questions and their gold passages from SQuAD v1.1 JSON; candidates are the distinct contexts."""
    try:
        doc = json.loads(Path(path).read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: malformed or truncated JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None

    def get(obj, key: str, where: str, kind: type):
        if not isinstance(obj, dict) or not isinstance(obj.get(key), kind):
            raise UserError(f"{path}: {where}.{key}: missing, or not a {kind.__name__}")
        return obj[key]

    qids, questions, contexts, answer, index_of = [], [], [], [], {}
    for ai, article in enumerate(get(doc, "data", "top level", list)):
        for pi, par in enumerate(get(article, "paragraphs", f"data[{ai}]", list)):
            where = f"data[{ai}].paragraphs[{pi}]"
            context = _text(get(par, "context", where, str), f"{path}: {where}.context")
            for qi, q in enumerate(get(par, "qas", where, list)):
                if limit is not None and len(answer) >= limit:
                    break
                qids.append(get(q, "id", f"{where}.qas[{qi}]", str))
                questions.append(_text(get(q, "question", f"{where}.qas[{qi}]", str),
                                       f"{path}: {where}.qas[{qi}].question"))
                if context not in index_of:
                    index_of[context] = len(contexts)
                    contexts.append(context)
                answer.append(index_of[context])
    if not answer:
        raise UserError(f"{path}: no questions")
    return QA(qids, questions, contexts, np.array(answer, dtype=np.int64))


# ----------------------------------------------------------------------------- whole datasets

def first_per_label(label: np.ndarray, limit: int | None) -> np.ndarray:
    """The indices, in file order, of the first `limit` rows of each label (all rows for None)."""
    keep = np.zeros(len(label), dtype=bool)
    for k in np.unique(label):
        keep[np.flatnonzero(label == k)[:limit]] = True
    return np.flatnonzero(keep)


def _nli_rows(d: NLI, idx: np.ndarray) -> NLI:
    return NLI([d.premise[i] for i in idx], [d.hypothesis[i] for i in idx], d.label[idx])


def _topic_rows(d: Topics, idx: np.ndarray) -> Topics:
    return Topics([d.text[i] for i in idx], d.label[idx])


def load_xnli(limit: int | None = None) -> XNLI:
    names = ["train-en.jsonl"] + [f"test-{l}.jsonl" for l in XNLI_TEST_LANGS] + [f"dev-{l}.tsv" for l in XNLI_DEV_LANGS]
    paths = fetch("xnli", names)
    train = read_nli_jsonl(paths["train-en.jsonl"])  # sorted by label: cut per label (Contract)
    return XNLI(_nli_rows(train, first_per_label(train.label, limit)),
                {l: read_nli_jsonl(paths[f"test-{l}.jsonl"], limit) for l in XNLI_TEST_LANGS},
                {l: read_nli_tsv(paths[f"dev-{l}.tsv"], limit) for l in XNLI_DEV_LANGS})


def load_tydiqa(limit: int | None = None) -> dict[str, QA]:
    paths = fetch("tydiqa-goldp", [f"tydiqa.goldp.{l}.dev.json" for l in TYDI_LANGS])
    return {l: read_squad_qa(paths[f"tydiqa.goldp.{l}.dev.json"], limit) for l in TYDI_LANGS}


def load_sib(limit: int | None = None) -> tuple[list[str], dict[str, dict[str, Topics]]]:
    """(label names, {lang: {"train": Topics, "test": Topics}}); every language must share the labels."""
    names = [f"{c}/{f}" for c in SIB_CODES.values() for f in ("labels.txt", "train.tsv", "test.tsv")]
    paths = fetch("sib-200", names)
    labels = read_labels(paths[f"{SIB_CODES['en']}/labels.txt"])
    out = {}
    for lang, code in SIB_CODES.items():
        own = read_labels(paths[f"{code}/labels.txt"])
        if own != labels:
            raise UserError(f"{paths[f'{code}/labels.txt']}: labels {own} differ from English's {labels}")
        train = read_topics(paths[f"{code}/train.tsv"], labels)  # a probe's training set: cut per label
        out[lang] = {"train": _topic_rows(train, first_per_label(train.label, limit)),
                     "test": read_topics(paths[f"{code}/test.tsv"], labels, limit)}
    return labels, out


def load_tatoeba(limit: int | None = None) -> dict[str, Bitext]:
    names = [f"tatoeba.{c}-eng.{side}" for c in TATOEBA_CODES.values() for side in (c, "eng")]
    paths = fetch("tatoeba", names)
    return {l: read_bitext(paths[f"tatoeba.{c}-eng.{c}"], paths[f"tatoeba.{c}-eng.eng"], limit)
            for l, c in TATOEBA_CODES.items()}
