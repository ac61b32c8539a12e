"""Command line for the artifacts and datasets: fetch and verify them, count what the reader sees.

    python -m minihbt.data fetch xquad-r      # a dataset's files (minihbt.artifacts.fetch)
    python -m minihbt.data fetch e5-small     # a model directory (minihbt.convert.model_dir)
    python -m minihbt.data fetch all          # every artifact of data_manifest.json
    python -m minihbt.data stats mlqa-r       # per language: questions, candidates, paragraphs, skipped

Fetching and verification live in minihbt/artifacts.py, the LAReQA reader in minihbt/lareqa.py,
the model conversion in minihbt/convert.py; this file only wires them to a command line.
"""
from __future__ import annotations

import json
import sys
import warnings

from minihbt import artifacts, convert, lareqa
from minihbt.files import ArgumentParser, run_cli


def fetch(name: str) -> dict:
    """{file name: verified path} of a dataset, or {"model": directory} of a model."""
    if artifacts.artifact(name)["kind"] == "model":
        return {"model": convert.model_dir(name)}
    return artifacts.fetch(name)


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
