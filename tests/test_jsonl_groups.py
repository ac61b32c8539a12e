"""minihbt.jsonl_groups: the JSON Lines training groups, their validation, and the XQuAD-R round
trip (tools/lareqa_to_jsonl.py): the converted file trains exactly as `xquad-r` by name."""
import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from minihbt import jsonl_groups, lareqa
from minihbt.io.files import UserError
from minihbt.lareqa import Example

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import lareqa_to_jsonl  # noqa: E402

GOOD = [
    {"id": "q1", "examples": {"en": {"query": "Where is Kiel?", "passage": "Kiel lies on the Baltic.",
                                     "hard_negatives": ["Bonn lies on the Rhine."]},
                              "de": {"query": "Wo liegt Kiel?", "passage": "Kiel liegt an der Ostsee.",
                                     "context": "Kiel liegt an der Ostsee. Es regnet oft."}}},
    {"id": "q2", "examples": {"zh-Hans": {"query": "基尔在哪里？", "passage": "基尔位于波罗的海。"},
                              "en": {"query": "Is Kiel big?", "passage": "Kiel has 250,000 people."}}},
]


def write(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows),
                    encoding="utf-8")
    return path


def test_reads_groups_as_the_lareqa_training_view(tmp_path):
    f = write(tmp_path / "g.jsonl", [GOOD[0], "", GOOD[1]])  # a blank line is skipped
    groups = jsonl_groups.load_groups(f)
    kiel = "Kiel lies on the Baltic."
    assert groups == {
        "q1": {"en": Example("Where is Kiel?", kiel, kiel, negatives=(("Bonn lies on the Rhine.",) * 2,)),
               "de": Example("Wo liegt Kiel?", "Kiel liegt an der Ostsee.",
                             "Kiel liegt an der Ostsee. Es regnet oft.")},
        "q2": {"zh-Hans": Example("基尔在哪里？", "基尔位于波罗的海。", "基尔位于波罗的海。"),
               "en": Example("Is Kiel big?", "Kiel has 250,000 people.", "Kiel has 250,000 people.")},
    }
    assert groups["q1"]["en"].sid == kiel  # a passage is identified by its text
    assert jsonl_groups.languages(f) == ["de", "en", "zh-Hans"]
    # A language subset keeps the groups that have one of them, with only those languages.
    assert jsonl_groups.load_groups(f, ["de"]) == {"q1": {"de": groups["q1"]["de"]}}
    assert jsonl_groups.stats(f) == {
        "groups": 2, "lines": 3, "cross_groups": 2,
        "languages": {"de": {"examples": 1, "hard_negatives": 0}, "en": {"examples": 2, "hard_negatives": 1},
                      "zh-Hans": {"examples": 1, "hard_negatives": 0}}}
    with pytest.raises(UserError, match=r"has no language fr: expected some of de, en, zh-Hans"):
        jsonl_groups.load_groups(f, ["en", "fr"])


def test_fingerprint_follows_the_bytes_and_a_rewrite_is_reread(tmp_path):
    f = write(tmp_path / "g.jsonl", GOOD)
    before = jsonl_groups.fingerprint(f)
    assert before == jsonl_groups.fingerprint(write(tmp_path / "copy.jsonl", GOOD))
    write(f, GOOD[:1])
    assert jsonl_groups.fingerprint(f) != before
    assert list(jsonl_groups.load_groups(f)) == ["q1"]  # the parse cache is keyed by size and mtime


@pytest.mark.parametrize("code", ["en", "fil", "zh-Hans", "pt-BR", "es-419", "sr-Latn-RS"])
def test_language_codes_accepted(tmp_path, code):
    f = write(tmp_path / "g.jsonl", [{"id": "a", "examples": {code: {"query": "q", "passage": "p"}}}])
    assert jsonl_groups.languages(f) == [code]


EX = {"query": "q", "passage": "p"}
BAD = [  # (line 2 of a file whose line 1 is GOOD[0], expected message after "FILE:2: ")
    ('{"id": "x", "examples": ', "malformed JSON"),
    ('["x"]', "expected an object"),
    ({"examples": {"en": EX}}, "missing field 'id'"),
    ({"id": "x"}, "missing field 'examples'"),
    ({"id": "x", "examples": {"en": EX}, "lang": "en"}, "unknown field 'lang'"),
    ({"id": 7, "examples": {"en": EX}}, "id: expected a non-empty string"),
    ({"id": "", "examples": {"en": EX}}, "id: expected a non-empty string"),
    ({"id": "x", "examples": {}}, "examples: expected an object"),
    ({"id": "x", "examples": [EX]}, "examples: expected an object"),
    ({"id": "x", "examples": {"EN": EX}}, "unknown language code 'EN'"),
    ({"id": "x", "examples": {"english": EX}}, "unknown language code 'english'"),
    ({"id": "x", "examples": {"en_US": EX}}, "unknown language code 'en_US'"),
    ({"id": "x", "examples": {"zh-hans": EX}}, "unknown language code 'zh-hans'"),
    ({"id": "x", "examples": {"en": {"query": "q"}}}, "examples.en: missing field 'passage'"),
    ({"id": "x", "examples": {"en": {"query": "q", "passage": "p", "negatives": []}}}, "unknown field 'negatives'"),
    ({"id": "x", "examples": {"en": {"query": " \t", "passage": "p"}}}, "examples.en.query: empty text"),
    ({"id": "x", "examples": {"en": {"query": "q", "passage": ""}}}, "examples.en.passage: empty text"),
    ({"id": "x", "examples": {"en": {"query": "q", "passage": 3}}}, "examples.en.passage: expected a string"),
    ({"id": "x", "examples": {"en": EX | {"hard_negatives": "n"}}}, "hard_negatives: expected a list"),
    ({"id": "x", "examples": {"en": EX | {"hard_negatives": ["n", ""]}}}, "hard_negatives[1]: empty text"),
    ({"id": "x", "examples": {"en": EX | {"context": ""}}}, "examples.en.context: empty text"),
    ({"id": "x", "examples": {"en": EX | {"hard_negatives": ["n", "p"]}}}, "hard_negatives[1]: equals the passage"),
    ({"id": "x", "examples": {"en": EX | {"hard_negatives": ["n", "m", "n"]}}},
     "hard_negatives[2]: repeats hard_negatives[0]"),
    ({"id": "q1", "examples": {"en": EX}}, "duplicate id 'q1' (first on line 1)"),
    ('{"id": "x", "examples": {"en": {"query": "q", "passage": "p"}, "en": {"query": "q", "passage": "p"}}}',
     "duplicate key 'en'"),
]


@pytest.mark.parametrize("row, message", BAD, ids=[m for _, m in BAD])
def test_bad_line_is_one_error_naming_file_and_line(tmp_path, row, message):
    f = write(tmp_path / "g.jsonl", [GOOD[0], row])
    with pytest.raises(UserError) as e:
        jsonl_groups.load_groups(f)
    text = str(e.value)
    assert text.startswith(f"{f}:2: ") and "\n" not in text, text
    assert message in text, text


def test_bad_files(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        jsonl_groups.load_groups(tmp_path / "missing.jsonl")
    with pytest.raises(UserError, match=r"no groups \(the file is empty\)"):
        jsonl_groups.load_groups(write(tmp_path / "blank.jsonl", ["", "  "]))
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes(json.dumps(GOOD[0]).encode() + b"\n" + '{"id": "\xe9"}'.encode("latin-1") + b"\n")
    with pytest.raises(UserError, match=rf"^{latin1}:2: not UTF-8"):
        jsonl_groups.load_groups(latin1)


def test_check_cli(tmp_path):
    good = write(tmp_path / "good.jsonl", GOOD)
    r = subprocess.run([sys.executable, "-m", "minihbt.data", "check", str(good)], capture_output=True, text=True,
                       cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert "2 groups" in r.stdout and "zh-Hans" in r.stdout
    bad = write(tmp_path / "bad.jsonl", [GOOD[0], {"id": "q1", "examples": {"en": EX}}])
    r = subprocess.run([sys.executable, "-m", "minihbt.data", "check", str(bad)], capture_output=True, text=True,
                       cwd=ROOT)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == f"error: {bad}:2: duplicate id 'q1' (first on line 1)\n"


# ----------------------------------------------------------------------------- XQuAD-R round trip

LANGS = ["de", "en", "es"]


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("jsonl") / "xquad-r.jsonl"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lareqa.DataWarning)
        assert lareqa_to_jsonl.main(["xquad-r", str(out), "--langs", ",".join(LANGS)]) == 0
        assert lareqa_to_jsonl.main(["xquad-r", str(out.with_suffix(".lean.jsonl")), "--langs", "en",
                                     "--no-hard-negatives"]) == 0
    return out


def canonical(groups):
    """Groups with each sentence id replaced by the first (lang, group, slot) that shows it: equal
    when two views hold the same texts and the same sentence identities, whatever the ids look like."""
    names, out = {}, {}
    for gid, g in groups.items():
        for lang, ex in g.items():
            sid = names.setdefault((lang, ex.sid), (lang, gid, "passage"))
            negs = tuple((names.setdefault((lang, s), (lang, gid, i)), t) for i, (s, t) in enumerate(ex.negatives))
            out.setdefault(gid, {})[lang] = (ex.question, ex.sentence, ex.context, sid, negs)
    return out


def test_converted_xquad_r_is_the_same_training_view(converted):
    mine, theirs = jsonl_groups.load_groups(converted), lareqa.load_groups("xquad-r", LANGS)
    assert canonical(mine) == canonical(theirs)
    assert list(mine) == list(theirs)
    assert canonical(jsonl_groups.load_groups(converted, ["en"])) == canonical(lareqa.load_groups("xquad-r", ["en"]))


def test_converter_without_hard_negatives(converted):
    lean = jsonl_groups.load_groups(converted.with_suffix(".lean.jsonl"))
    assert lean == {gid: {"en": Example(g["en"].question, g["en"].sentence, g["en"].context)}
                    for gid, g in jsonl_groups.load_groups(converted, ["en"]).items()}


def test_converter_bad_input_writes_nothing(tmp_path):
    out = tmp_path / "x.jsonl"
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "lareqa_to_jsonl.py"), "xquad-r", str(out),
                        "--langs", "en,xx"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no language xx" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_training_on_the_converted_file_is_training_on_xquad_r(converted, tmp_path):
    import torch

    from conftest import cli

    tiny = str(ROOT / "tests" / "golden" / "tiny-bert")
    common = ["--sampler", "hybrid", "--model", tiny, "--langs", ",".join(LANGS), "--batch-size", "4",
              "--max-steps", "3", "--lr", "1e-3", "--seed", "5", "--log-every", "100", "--hard-negatives", "2",
              "--val-every", "0"]  # validation's split is built from the same groups: canonical() covers it

    def logged(data, out):
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", lareqa.DataWarning)
                assert cli("train.py", common + ["--train-data", data, "--out", str(out)]) == 0
        finally:
            torch.set_num_threads(threads)
        rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
        return [{k: v for k, v in r.items() if k not in ("dataset", "run", "elapsed")} for r in rows]

    by_name, by_file = logged("xquad-r", tmp_path / "name"), logged(str(converted), tmp_path / "file")
    assert len(by_name) == 3 and by_name == by_file  # kinds, losses, lr, masked pairs, hard negatives: exact
    assert all(r["hard_negatives"] > 0 for r in by_file)  # the file's hard negatives are drawn, as by name
