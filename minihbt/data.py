"""Command line for the artifacts and datasets: fetch and verify them, count what the reader sees.

    python -m minihbt.data fetch xquad-r      # a dataset's files (minihbt.io.artifacts.fetch)
    python -m minihbt.data fetch e5-small     # a model directory (minihbt.io.convert.model_dir)
    python -m minihbt.data fetch all          # every artifact of data_manifest.json
    python -m minihbt.data stats mlqa-r       # per language: questions, candidates, paragraphs, skipped
    python -m minihbt.data check my.jsonl     # validate training groups (minihbt/jsonl_groups.py)
    python -m minihbt.data check DIR          # validate a BEIR / MIRACL collection (minihbt/beir/collection.py)

Fetching and verification live in minihbt/io/artifacts.py, the LAReQA reader in minihbt/lareqa.py,
the model conversion in minihbt/io/convert.py; this file only wires them to a command line.
"""
from __future__ import annotations

import json
import os
import sys
import warnings

from minihbt import jsonl_groups, lareqa
from minihbt.io import artifacts
from minihbt.beir import collection as beir
from minihbt.io import convert
from minihbt.io.files import ArgumentParser, run_cli


def fetch(name: str) -> dict:
    """{file name: verified path} of a dataset, or {"model": directory} of a model."""
    if artifacts.artifact(name)["kind"] == "model":
        return {"model": convert.model_dir(name)}
    return artifacts.fetch(name)


def check(path: str, split: str | None) -> None:
    """Read a JSONL groups file or a BEIR / MIRACL directory as training or eval.py would; print counts."""
    if os.path.isdir(path):
        c = beir.load(path, split)
        relevant = sum(g >= 1 for j in c.qrels.values() for g in j.values())
        print(f"{path} [{c.split}]: {c.layout} layout, {len(c.queries)} judged queries, {len(c.corpus)} passages, "
              f"{sum(map(len, c.qrels.values()))} judgments ({relevant} relevant)")
        return
    st = jsonl_groups.stats(path)
    print(f"{path}: {st['groups']} groups on {st['lines']} lines, {len(st['languages'])} languages, "
          f"{st['cross_groups']} groups with two or more (X-Y)")
    print(f"{'lang':<10}{'examples':>10}{'hard_negatives':>16}")
    for lang, row in st["languages"].items():
        print(f"{lang:<10}{row['examples']:>10}{row['hard_negatives']:>16}")


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m minihbt.data", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True, metavar="{fetch,stats,check}")
    f = sub.add_parser("fetch", help="fetch and verify an artifact of data_manifest.json (or all)")
    f.add_argument("name")
    s = sub.add_parser("stats", help="per-language counts of a LAReQA dataset")
    s.add_argument("name")
    s.add_argument("--langs", help="comma-separated subset of languages")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    c = sub.add_parser("check", help="validate a JSONL training-groups file or a BEIR / MIRACL directory")
    c.add_argument("path")
    c.add_argument("--split", help="BEIR / MIRACL: the qrels split (default: the only one, else test)")
    args = p.parse_args(argv)
    if args.cmd == "check":
        check(args.path, args.split)
        return 0
    if args.cmd == "fetch":
        for name in (list(artifacts.manifest()) if args.name == "all" else [args.name]):
            for fname, path in fetch(name).items():
                print(f"{name}/{fname}\t{path}")
        return 0
    langs = args.langs.split(",") if args.langs else None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", lareqa.DataWarning)
        table = lareqa.stats(args.name, langs)
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
