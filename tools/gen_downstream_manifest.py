"""Add the downstream evaluation sets (xnli, tydiqa-goldp, sib-200, tatoeba) to data_manifest.json.

Each file gets its upstream URL at the pinned commit (from ../shared/data/README.md), its size
and sha256. Both are taken from that README's tables and checked against the mirror's bytes, so
an entry is written only when the two agree. The entries are appended after the existing ones
(the rest of the file is left byte for byte as it is); an existing entry is never overwritten.

Usage: python tools/gen_downstream_manifest.py [--mirror ../shared/data] [--check]
    --check: only verify that data_manifest.json already holds exactly these entries.
"""
import argparse
import hashlib
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "data_manifest.json"
RAW = "https://raw.githubusercontent.com"

XNLI_TEST = ("HKUNLP/multilingual-transfer", "ef92deb6bbe55d5d4e49e64fed17f35f133f6030")
XNLI_DEV = ("wuhjie/few_shots_that_matters_wu", "6bfe6324e428ec21a777b5543cd8e50ec82dcb3c")
SIB = ("dadelani/sib-200", "593cea88519930f776c1a4a1980b6a35b39dca57")
LASER = ("facebookresearch/LASER", "74bc6ae7ffb7cba670fe0f428d0ede9f666fb821")

XNLI_TEST_LANGS = "ar de en es fr hi sw tr ur vi zh".split()
XNLI_DEV_LANGS = "ar bg de el en es fr hi ru sw th tr ur vi zh".split()
TYDI_LANGS = "ar bn en fi id ko ru sw te".split()
SIB_LANGS = "arb_Arab deu_Latn ell_Grek eng_Latn hin_Deva rus_Cyrl spa_Latn tha_Thai tur_Latn vie_Latn zho_Hans".split()
TATOEBA_LANGS = "ara cmn deu ell hin rus spa tha tur vie".split()


def url(repo_commit: tuple[str, str], path: str) -> str:
    return f"{RAW}/{repo_commit[0]}/{repo_commit[1]}/{path}"


def readme_table(readme: Path) -> dict[str, tuple[int, str]]:
    """{file as written in a README table row: (bytes, sha256)}."""
    rows = {}
    for m in re.finditer(r"^\| (\S+) \| (\d+) \| ([0-9a-f]{64}) \|", readme.read_text(), re.M):
        rows[m[1]] = (int(m[2]), m[3])
    return rows


def file_entry(mirror: Path, dataset: str, fname: str, table: dict, key: str, **fields) -> dict:
    path = mirror / dataset / fname
    data = path.read_bytes()
    size, sha = len(data), hashlib.sha256(data).hexdigest()
    if table.get(key) != (size, sha):
        sys.exit(f"{path}: {size} bytes, sha256 {sha}; the mirror README says {table.get(key)}")
    return {"url": fields.pop("url"), "bytes": size, "sha256": sha, **fields}


def entries(mirror: Path) -> dict:
    table = readme_table(mirror / "README.md")
    xnli_files = {}
    for lang in XNLI_DEV_LANGS:
        f = f"dev-{lang}.tsv"
        xnli_files[f] = file_entry(mirror, "xnli", f, table, f, url=url(XNLI_DEV, f"data/xnli/{f}"), lang=lang,
                                   role="data", split="dev", repo=XNLI_DEV[0], commit=XNLI_DEV[1])
    for lang in XNLI_TEST_LANGS:
        f = f"test-{lang}.jsonl"
        xnli_files[f] = file_entry(mirror, "xnli", f, table, f, url=url(XNLI_TEST, f"data/xnli/{lang}/test.jsonl"),
                                   lang=lang, role="data", split="test")
    xnli_files["train-en.jsonl"] = file_entry(mirror, "xnli", "train-en.jsonl", table, "train-en.jsonl",
                                              url=url(XNLI_TEST, "data/xnli/en/train.jsonl"), lang="en",
                                              role="data", split="train")
    tydi_files = {}
    for lang in TYDI_LANGS:
        f = f"tydiqa.goldp.{lang}.dev.json"
        tydi_files[f] = file_entry(mirror, "tydiqa-goldp", f, table, f, lang=lang, role="data", split="dev",
                                   url=url(XNLI_DEV, f"data/tydiqa/tydiqa-goldp-v1.1-dev/{f}"))
    sib_files = {"LICENSE": file_entry(mirror, "sib-200", "LICENSE", table, "sib-200/LICENSE",
                                       url=url(SIB, "LICENSE"), role="licence",
                                       note="the repository's licence (Apache-2.0, its code); the text is FLORES-200, CC BY-SA 4.0")}
    for code in SIB_LANGS:
        for f in ("train.tsv", "dev.tsv", "test.tsv", "labels.txt"):
            name = f"{code}/{f}"
            sib_files[name] = file_entry(mirror, "sib-200", name, table, f"sib-200/{name}", lang=code,
                                         url=url(SIB, f"data/annotated/{name}"),
                                         role="labels" if f == "labels.txt" else "data",
                                         **({} if f == "labels.txt" else {"split": f.removesuffix(".tsv")}))
    tat_files = {
        "LICENSE.LASER": file_entry(mirror, "tatoeba", "LICENSE.LASER", table, "tatoeba/LICENSE.LASER",
                                    url=url(LASER, "LICENSE"), role="licence",
                                    note="the LASER repository's LICENSE (BSD, its code), stored under this name"),
        "README.md": file_entry(mirror, "tatoeba", "README.md", table, "tatoeba/README.md",
                                url=url(LASER, "data/tatoeba/v1/README.md"), role="documentation"),
    }
    for code in TATOEBA_LANGS:
        for side in (code, "eng"):
            f = f"tatoeba.{code}-eng.{side}"
            tat_files[f] = file_entry(mirror, "tatoeba", f, table, f"tatoeba/{f}", lang=code, side=side,
                                      url=url(LASER, f"data/tatoeba/v1/{f}"), role="data")
    return {
        "xnli": {
            "kind": "dataset", "format": "xnli", "repo": XNLI_TEST[0], "commit": XNLI_TEST[1],
            "license": "CC BY-NC 4.0 (XNLI; research use); the MultiNLI training text is under the licences of its "
                       "sources (see the MultiNLI paper); neither upstream repository carries a licence file",
            "languages": XNLI_DEV_LANGS,
            "role": "downstream evaluation (issue 10): a linear probe trained on train-en, accuracy on every test "
                    "language and on dev for el, ru, th; a training-free pair score",
            "description": "XNLI (Conneau et al. 2018) premise / hypothesis / label. test-<lang>.jsonl (5,010 pairs, "
                           "label 0 entailment, 1 neutral, 2 contradiction) and train-en.jsonl (9,000 MultiNLI pairs) "
                           "from repo/commit above; dev-<lang>.tsv (2,490 pairs, header-less TSV with raw quote "
                           "characters, label as a word) from the repo and commit given on each dev file",
            "files": xnli_files,
        },
        "tydiqa-goldp": {
            "kind": "dataset", "format": "squad", "repo": XNLI_DEV[0], "commit": XNLI_DEV[1],
            "license": "Apache-2.0 (TyDi QA, google-research-datasets/tydiqa); the passages are Wikipedia text",
            "languages": TYDI_LANGS,
            "role": "downstream evaluation (issue 10): question -> gold passage retrieval, per language and pooled",
            "description": "TyDi QA GoldP v1.1 dev (Clark et al. 2020), the per-language SQuAD v1.1 files of the "
                           "official tydiqa-goldp-v1.1-dev archive; one gold passage per question",
            "files": tydi_files,
        },
        "sib-200": {
            "kind": "dataset", "format": "sib-200", "repo": SIB[0], "commit": SIB[1],
            "license": "CC BY-SA 4.0 (FLORES-200 text); the repository's code is Apache-2.0 (LICENSE)",
            "languages": SIB_LANGS,
            "role": "downstream evaluation (issue 10): topic classification by a linear probe, cross-lingual "
                    "(train English) and within each language",
            "description": "SIB-200 (Adelani et al. 2024): FLORES-200 sentences with 7 topic labels, TSV with header "
                           "index_id / category / text; 701 / 99 / 204 train / dev / test rows per language, the same "
                           "sentences (index_id) in every language",
            "files": sib_files,
        },
        "tatoeba": {
            "kind": "dataset", "format": "tatoeba", "repo": LASER[0], "commit": LASER[1],
            "license": "CC BY 2.0 FR (Tatoeba corpus); the LASER repository's code is BSD (LICENSE.LASER)",
            "languages": TATOEBA_LANGS,
            "role": "downstream evaluation (issue 10): bitext retrieval by nearest neighbour, x -> eng and eng -> x",
            "description": "Tatoeba test set of LASER (Artetxe and Schwenk 2019): line i of tatoeba.<x>-eng.<x> "
                           "translates line i of tatoeba.<x>-eng.eng; 1,000 pairs per language (tha 548)",
            "files": tat_files,
        },
    }


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mirror", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--check", action="store_true")
    args = p.parse_args()
    new = entries(Path(args.mirror))
    text = MANIFEST.read_text()
    current = json.loads(text)
    if args.check:
        bad = [k for k, v in new.items() if current.get(k) != v]
        sys.exit(f"data_manifest.json differs from the mirror for: {', '.join(bad)}" if bad else 0)
    clash = [k for k in new if k in current]
    if clash:
        sys.exit(f"data_manifest.json already has {', '.join(clash)}; nothing written")
    # Append after the last entry, in the file's own format (indent 2), leaving the rest untouched.
    if not text.endswith("\n  }\n}\n"):
        sys.exit("data_manifest.json does not end as expected; add the entries by hand")
    block = json.dumps(new, indent=2, ensure_ascii=False)[1:-2]  # the members, without the outer braces
    MANIFEST.write_text(text[:-3] + "," + block + "\n}\n")
    merged = json.loads(MANIFEST.read_text())
    assert list(merged) == list(current) + list(new) and all(merged[k] == v for k, v in new.items())
    print(f"added {', '.join(new)} ({sum(len(v['files']) for v in new.values())} files)")


if __name__ == "__main__":
    main()
