"""Your own training data: parallel groups in JSON Lines, one group per line, any languages.

A group is one question with its relevant passage in several languages, translations of one
another (the paper trains on English QA data machine-translated into 9 languages, sec. 4.1).
The sampler never puts two examples of one group in a batch (their translations would be false
negatives), so the group is the unit that must be right.

Format (UTF-8, one JSON object per line; blank lines are skipped):

    {"id": "q17", "examples": {"en": {"query": "Where is Kiel?", "passage": "Kiel lies on the Baltic.",
                                      "hard_negatives": ["Bonn lies on the Rhine."]},
                               "de": {"query": "Wo liegt Kiel?", "passage": "Kiel liegt an der Ostsee."}}}

- `id`: a non-empty string, unique in the file.
- `examples`: {language code: example}, at least one language.
- An example: `query` and `passage` (strings with at least one non-space character), optionally
  `context` (the document the passage comes from; default: the passage itself) and
  `hard_negatives` (a list of such strings, none equal to the passage or repeated: candidates the
  sampler draws `--hard-negatives N` from, e.g. other passages of the same document).
  No other field: a misspelt field name is an error, not a silently missing value.
- A passage is identified by its text (`Example.sid`): within a language, two examples with equal
  passages share one answer, and a hard negative equal to another example's passage is that
  passage, so the sampler never draws it against that example's query and the loss masks it.
- A language code is checked for its form, not looked up in a registry: a lowercase ISO 639
  code of 2 or 3 letters, optionally followed by a script (`-Hans`, `-Latn`) and/or a region
  (`-BR`, `-419`), as in BCP 47: `en`, `fil`, `zh-Hans`, `pt-BR`, `sr-Latn-RS`. `EN`, `english`
  or `en_US` are rejected. The sampler treats every distinct code as its own language, so
  `--langs` must name the codes exactly as the file writes them.

Every problem is a `UserError` of one line naming the file and line: bad JSON (or not UTF-8),
a missing or unknown field, a wrong type, an invalid language code, an empty text, a duplicate
id or duplicate key. `python -m minihbt.data check FILE` validates a file without training.

Contract
    load_groups(path, langs=None) -> {id: {lang: Example}}: the training view that
        lareqa.load_groups returns: Example(question=query, sentence=passage, context,
        sid=passage, negatives=((text, text) for each hard negative)), restricted to `langs`
        (groups left with no language are dropped); file order.
    languages(path) -> sorted language codes; fingerprint(path) -> 16 hex digits of its sha256.
    stats(path) -> {"groups", "lines", "languages": {lang: {"examples", "hard_negatives"}},
        "cross_groups" (groups with >= 2 languages)}.
A file is parsed once per (path, size, mtime): train.py asks for its languages and groups.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from minihbt.io.files import UserError, nonblank_text as _text
from minihbt import lareqa
from minihbt.lareqa import LANGS, Example

LANG_CODE = re.compile(r"[a-z]{2,3}(-[A-Z][a-z]{3})?(-(?:[A-Z]{2}|[0-9]{3}))?")
GROUP_FIELDS = ("id", "examples")
EXAMPLE_FIELDS = ("query", "passage", "context", "hard_negatives")


def is_jsonl(name: str) -> bool:
    """Whether a --train-data entry names a groups file (by its suffix) rather than a dataset."""
    return str(name).endswith(".jsonl")


@dataclass(frozen=True)
class _Parsed:
    groups: dict[str, dict[str, Example]]
    lines: int
    sha256: str


def _no_duplicate_keys(where: str):
    def hook(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise UserError(f"{where}: duplicate key '{key}' in one JSON object")
            seen.add(key)
        return dict(pairs)
    return hook



def _fields(obj, allowed: Sequence[str], required: Sequence[str], where: str, what: str) -> dict:
    if not isinstance(obj, dict):
        raise UserError(f"{where}: expected {what}, got {type(obj).__name__}")
    for key in obj:
        if key not in allowed:
            raise UserError(f"{where}: unknown field '{key}' (expected {', '.join(allowed)})")
    for key in required:
        if key not in obj:
            raise UserError(f"{where}: missing field '{key}'")
    return obj


def _parse_line(raw: bytes, at: str) -> tuple[str, dict[str, Example]]:
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{at}: not UTF-8 ({e.reason} at byte {e.start})") from None
    try:
        obj = json.loads(line, object_pairs_hook=_no_duplicate_keys(at))
    except json.JSONDecodeError as e:
        raise UserError(f"{at}: malformed JSON ({e.msg} at column {e.colno})") from None
    obj = _fields(obj, GROUP_FIELDS, GROUP_FIELDS, at, 'an object {"id": ..., "examples": {...}}')
    gid = obj["id"]
    if not isinstance(gid, str) or not gid:
        raise UserError(f"{at}: id: expected a non-empty string, got {gid!r}")
    examples = obj["examples"]
    if not isinstance(examples, dict) or not examples:
        raise UserError(f"{at}: examples: expected an object {{language code: example}} with at least one language")
    out = {}
    for lang, ex in examples.items():
        if not LANG_CODE.fullmatch(lang):
            raise UserError(f"{at}: examples: unknown language code '{lang}' (expected a lowercase ISO 639 code "
                            "of 2-3 letters, optionally -Script and/or -REGION, e.g. en, zh-Hans, pt-BR)")
        w = f"{at}: examples.{lang}"
        ex = _fields(ex, EXAMPLE_FIELDS, ("query", "passage"), w, "an object with query and passage")
        query, passage = _text(ex["query"], f"{w}.query"), _text(ex["passage"], f"{w}.passage")
        context = _text(ex["context"], f"{w}.context") if "context" in ex else passage
        hard = ex.get("hard_negatives", [])
        if not isinstance(hard, list):
            raise UserError(f"{w}.hard_negatives: expected a list of strings, got {type(hard).__name__}")
        seen: dict[str, int] = {}
        for i, h in enumerate(hard):
            hw = f"{w}.hard_negatives[{i}]"
            if _text(h, hw) == passage:
                raise UserError(f"{hw}: equals the passage (a hard negative cannot be the positive)")
            if h in seen:
                raise UserError(f"{hw}: repeats hard_negatives[{seen[h]}]")
            seen[h] = i
        out[lang] = Example(query, passage, context, negatives=tuple((h, h) for h in hard))  # sid: the text
    return gid, out


@functools.lru_cache(maxsize=4)
def _read(path: str, size: int, mtime_ns: int) -> _Parsed:
    groups, first_line = {}, {}
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            h.update(raw)
            if not raw.strip():
                continue
            at = f"{path}:{n}"
            gid, examples = _parse_line(raw, at)
            if gid in first_line:
                raise UserError(f"{at}: duplicate id '{gid}' (first on line {first_line[gid]})")
            first_line[gid] = n
            groups[gid] = examples
    if not groups:
        raise UserError(f"{path}: no groups (the file is empty); expected one JSON object per line")
    return _Parsed(groups, n, h.hexdigest())


def _parsed(path: str | os.PathLike) -> _Parsed:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{p}: no such file (expected a JSON Lines file of training groups)")
    st = p.stat()
    return _read(str(p), st.st_size, st.st_mtime_ns)


def languages(path: str | os.PathLike) -> list[str]:
    return sorted({lang for g in _parsed(path).groups.values() for lang in g})


def _keep(path, langs: Sequence[str] | None) -> set[str] | None:
    if langs is None:
        return None
    have = languages(path)
    missing = [l for l in langs if l not in have]
    if missing:
        raise UserError(f"{path} has no language {', '.join(missing)}: expected some of {', '.join(have)}")
    return set(langs)


def load_groups(path: str | os.PathLike, langs: Sequence[str] | None = None) -> dict[str, dict[str, Example]]:
    """{group id: {lang: Example}} of the file, restricted to `langs`, in file order."""
    keep, groups = _keep(path, langs), _parsed(path).groups
    if keep is None:
        return {gid: dict(g) for gid, g in groups.items()}
    out = {gid: {l: e for l, e in g.items() if l in keep} for gid, g in groups.items()}
    return {gid: g for gid, g in out.items() if g}


def fingerprint(path: str | os.PathLike) -> str:
    """A short hash of the file's bytes, for provenance and resume checks."""
    return _parsed(path).sha256[:16]


def stats(path: str | os.PathLike) -> dict:
    parsed = _parsed(path)
    per_lang: dict[str, dict[str, int]] = {}
    for g in parsed.groups.values():
        for lang, ex in g.items():
            row = per_lang.setdefault(lang, {"examples": 0, "hard_negatives": 0})
            row["examples"] += 1
            row["hard_negatives"] += len(ex.negatives)
    return {"groups": len(parsed.groups), "lines": parsed.lines,
            "languages": dict(sorted(per_lang.items())),
            "cross_groups": sum(len(g) >= 2 for g in parsed.groups.values())}


# ----------------------------------------------------------------------------- training data

def dataset_langs(name: str) -> list[str]:
    """The languages a dataset name, LAReQA directory or JSONL groups file offers."""
    if name in LANGS:
        return LANGS[name]
    if is_jsonl(name):
        return languages(name)
    if not Path(name).is_dir():
        raise UserError(f"--train-data: unknown dataset '{name}': expected one of {', '.join(LANGS)} "
                        "a directory of <lang>.json files in LAReQA format, or a .jsonl groups file")
    return sorted(p.stem for p in Path(name).glob("*.json"))


def training_groups(names: list[str], langs: list[str]) -> tuple[dict, dict, dict]:
    """--train-data and --langs -> ({dataset: {group id: {lang: Example}}}, {dataset: its training
    languages}, {dataset: data fingerprint}). Each dataset trains on its share of the languages
    (MLQA-R lacks ru, th, tr: fine, if another dataset has them); a language none has is an error."""
    missing = [l for l in langs if not any(l in dataset_langs(n) for n in names)]
    if missing:
        raise UserError(f"--langs: {', '.join(missing)} not in --train-data {','.join(names)}")
    share = {n: [l for l in langs if l in dataset_langs(n)] for n in names}
    groups = {n: load_groups(n, share[n]) if is_jsonl(n) else lareqa.load_groups(n, share[n]) for n in names}
    prints = {n: fingerprint(n) if is_jsonl(n) else lareqa.dataset_fingerprint(n, share[n]) for n in names}
    return groups, share, prints
