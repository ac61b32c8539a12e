"""The LAReQA datasets (XQuAD-R, MLQA-R) as questions, candidates and parallel training groups.

LAReQA (Roy et al. 2020, section 3.1; the evaluation protocol of arXiv 2408.10536, section 4)
    A file is SQuAD v1.1 JSON plus, per paragraph, `sentence_breaks` ([start, end) offsets into
    `context`) and `sentences`. Every sentence of every paragraph is one candidate (no
    de-duplication: two equal sentences are two candidates, as in the published counts). The
    candidate text is the `sentences` field, which LAReQA encodes; where it differs from
    `context[start:end]` (two sentences of XQuAD-R tr, after a mis-encoded character) the
    reader warns with a count. A question's answer sentence is the break with
    start <= answer_start < end of its first answer; a question whose answer falls in no
    sentence is skipped and counted. Question ids are shared across languages: the relevant
    candidates of question `qid` are its answer sentences in every language of the pool.

Contract
    load_lareqa(name_or_dir, langs) -> LAReQA: per language, questions and candidates in file
        order; answer[lang][qid] indexes candidates[lang]. A name is fetched and verified by
        minihbt.io.artifacts; a directory of <lang>.json files is read as it is.
    load_groups(name_or_dir, langs) -> {qid: {lang: Example}}: the training view, one parallel
        group per question id, holding the languages in which it has an answer sentence; each
        Example names its answer sentence (sid) and its paragraph's other sentences (negatives).
    dataset_fingerprint(name_or_dir, langs) -> 16 hex digits of the files' sha256, for cache keys.
"""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Hashable, Sequence

from minihbt.config import TRAIN_LANGS  # noqa: F401  (the paper's training languages, re-exported)
from minihbt.io.artifacts import DataWarning, fetch  # one warning class for all data problems
from minihbt.io.files import UserError, sha256_file

LANGS = {
    "xquad-r": ["ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh"],
    "mlqa-r": ["ar", "de", "en", "es", "hi", "vi", "zh"],
}


@dataclass(frozen=True)
class Question:
    qid: str
    lang: str
    text: str


@dataclass(frozen=True)
class Candidate:
    lang: str
    pid: str   # paragraph id "<article index>.<paragraph index>" in file order
    sent: int  # sentence index within the paragraph
    text: str
    context: str


@dataclass(frozen=True)
class Example:
    """One group's training example in one language (the training view; jsonl_groups builds the same).

    sid: the identity of `sentence` within its dataset and language: two examples of one language
        have equal sids exactly when their answer is the same sentence. LAReQA: (paragraph id,
        sentence index); None (the default) makes it the text itself, so equal texts are one
        sentence. The sampler's hard negatives and the loss's false-negative mask compare sids.
    negatives: candidate hard negatives, (sid, text) pairs in the same language, never `sentence`
        itself. LAReQA: the other sentences of the paragraph, in order; JSONL: its hard_negatives.
    """
    question: str
    sentence: str          # the answer sentence: the query's positive passage
    context: str
    sid: Hashable = None
    negatives: tuple[tuple[Hashable, str], ...] = ()

    def __post_init__(self):
        if self.sid is None:
            object.__setattr__(self, "sid", self.sentence)  # frozen: set once, here


@dataclass
class LAReQA:
    name: str
    langs: list[str]
    questions: dict[str, list[Question]]    # answerable questions, per language, file order
    candidates: dict[str, list[Candidate]]  # every sentence, per language, file order
    answer: dict[str, dict[str, int]]       # lang -> qid -> index into candidates[lang]
    skipped: dict[str, int]                 # questions whose answer lies in no sentence
    paragraphs: dict[str, int] = field(default_factory=dict)

    def relevant(self, qid: str, langs: Sequence[str] | None = None) -> list[tuple[str, int]]:
        """(lang, candidate index) of the answer sentence of `qid` in each language that has one."""
        return [(l, self.answer[l][qid]) for l in (langs or self.langs) if qid in self.answer[l]]


def _lang_files(name_or_dir: str, langs: Sequence[str] | None) -> tuple[str, dict[str, Path]]:
    """Resolve a dataset name or a directory of `<lang>.json` files to verified paths per language."""
    if os.path.isdir(name_or_dir):
        root = Path(name_or_dir)
        available = sorted(p.stem for p in root.glob("*.json"))
        name = root.name
    else:
        if name_or_dir not in LANGS:
            raise UserError(f"unknown dataset '{name_or_dir}': expected one of {', '.join(LANGS)} "
                            "or a directory of <lang>.json files in LAReQA format")
        available, name, root = LANGS[name_or_dir], name_or_dir, None
    langs = list(available if langs is None else langs)
    if not langs:
        raise UserError(f"{name}: empty language list")
    unknown = [l for l in langs if l not in available]
    if unknown:
        raise UserError(f"{name} has no language {', '.join(unknown)}: expected some of {', '.join(available)}")
    if root is not None:
        return name, {l: root / f"{l}.json" for l in langs}
    paths = fetch(name_or_dir, [f"{l}.json" for l in langs])
    return name, {l: paths[f"{l}.json"] for l in langs}


def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: malformed or truncated JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 ({e.reason} at byte {e.start})") from None


def _get(obj, key: str, path: Path, where: str, kind: type):
    if not isinstance(obj, dict) or key not in obj:
        raise UserError(f"{path}: {where}: missing field '{key}'")
    value = obj[key]
    if not isinstance(value, kind):
        raise UserError(f"{path}: {where}.{key}: expected {kind.__name__}, got {type(value).__name__}")
    return value


def _read_lang(path: Path, lang: str):
    """Parse one LAReQA file: (questions, candidates, answer, skipped, paragraphs, disagreements)."""
    doc = _read_json(path)
    questions, candidates, answer, skipped, n_par, disagree = [], [], {}, 0, 0, []
    for ai, article in enumerate(_get(doc, "data", path, "top level", list)):
        for pi, par in enumerate(_get(article, "paragraphs", path, f"data[{ai}]", list)):
            where = f"data[{ai}].paragraphs[{pi}]"
            context = _get(par, "context", path, where, str)
            breaks = _get(par, "sentence_breaks", path, where, list)
            sentences = _get(par, "sentences", path, where, list)
            if len(breaks) != len(sentences):
                raise UserError(f"{path}: {where}: {len(breaks)} sentence_breaks but {len(sentences)} sentences")
            pid, first = f"{ai}.{pi}", len(candidates)
            n_par += 1
            for si, (br, text) in enumerate(zip(breaks, sentences)):
                if not (isinstance(br, list) and len(br) == 2 and all(isinstance(x, int) for x in br)):
                    raise UserError(f"{path}: {where}.sentence_breaks[{si}]: expected [start, end], got {br!r}")
                if context[br[0]:br[1]] != text:
                    disagree.append(f"{where}.sentences[{si}]")
                candidates.append(Candidate(lang, pid, si, text, context))
            for qi, qa in enumerate(_get(par, "qas", path, where, list)):
                qwhere = f"{where}.qas[{qi}]"
                qid = _get(qa, "id", path, qwhere, str)
                answers = _get(qa, "answers", path, qwhere, list)
                if not answers:
                    raise UserError(f"{path}: {qwhere}.answers: expected at least one answer")
                start = _get(answers[0], "answer_start", path, f"{qwhere}.answers[0]", int)
                hit = [si for si, (s, e) in enumerate(breaks) if s <= start < e]
                if not hit:
                    skipped += 1
                    continue
                if qid in answer:
                    raise UserError(f"{path}: {qwhere}.id: question id {qid} appears twice")
                answer[qid] = first + hit[0]
                questions.append(Question(qid, lang, _get(qa, "question", path, qwhere, str)))
    return questions, candidates, answer, skipped, n_par, disagree


def load_lareqa(name_or_dir: str, langs: Sequence[str] | None = None) -> LAReQA:
    """Questions, candidates and answers of a LAReQA dataset (a manifest name or a directory)."""
    name, files = _lang_files(name_or_dir, langs)
    ds = LAReQA(name, list(files), {}, {}, {}, {}, {})
    for lang, path in files.items():
        q, c, a, skipped, n_par, disagree = _read_lang(path, lang)
        ds.questions[lang], ds.candidates[lang], ds.answer[lang] = q, c, a
        ds.skipped[lang], ds.paragraphs[lang] = skipped, n_par
        if skipped:
            warnings.warn(f"{path}: {skipped} question(s) skipped: answer_start lies in no sentence_breaks span",
                          DataWarning)
        if disagree:
            warnings.warn(f"{path}: {len(disagree)} sentence(s) differ from context[start:end] "
                          f"(first: {disagree[0]}); the 'sentences' field is used", DataWarning)
    return ds


def load_groups(name_or_dir: str, langs: Sequence[str]) -> dict[str, dict[str, Example]]:
    """Parallel training groups: qid -> {lang: Example}, each with its paragraph's other sentences
    as candidate negatives and sid = (paragraph id, sentence index)."""
    ds = load_lareqa(name_or_dir, langs)
    groups: dict[str, dict[str, Example]] = {}
    for lang in ds.langs:
        paragraphs: dict[str, list[Candidate]] = {}
        for c in ds.candidates[lang]:
            paragraphs.setdefault(c.pid, []).append(c)
        for q in ds.questions[lang]:
            c = ds.candidates[lang][ds.answer[lang][q.qid]]
            others = tuple(((o.pid, o.sent), o.text) for o in paragraphs[c.pid] if o.sent != c.sent)
            groups.setdefault(q.qid, {})[lang] = Example(q.text, c.text, c.context, (c.pid, c.sent), others)
    return groups


def dataset_fingerprint(name_or_dir: str, langs: Sequence[str] | None = None) -> str:
    """A short hash of the exact files behind (dataset, langs), for cache keys."""
    name, files = _lang_files(name_or_dir, langs)
    h = hashlib.sha256()
    for lang, path in files.items():
        h.update(f"{lang}:{sha256_file(path)}\n".encode())
    return h.hexdigest()[:16]


def stats(name_or_dir: str, langs: Sequence[str] | None = None) -> dict[str, dict[str, int]]:
    ds = load_lareqa(name_or_dir, langs)
    return {l: {"questions": len(ds.questions[l]) + ds.skipped[l], "candidates": len(ds.candidates[l]),
                "paragraphs": ds.paragraphs[l], "skipped": ds.skipped[l]} for l in ds.langs}
