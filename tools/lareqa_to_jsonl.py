"""Write a LAReQA dataset (XQuAD-R, MLQA-R or a directory) as training groups in JSON Lines.

    python tools/lareqa_to_jsonl.py xquad-r data/xquad-r.jsonl [--langs ar,de,en] [--no-hard-negatives]

One line per question id (the order of lareqa.load_groups: first appearance), one example per
language in which the question has an answer sentence: query = the question, passage = its
answer sentence, context = the paragraph, hard_negatives = the paragraph's other sentences in
paragraph order (lareqa's Example.negatives: the sampler leaves out, per batch, any that answers
a question of the batch), less any whose text equals the passage or repeats an earlier one.

Training on the output gives the batches and losses of training on the dataset by name
(tests/test_jsonl_groups.py checks it bit for bit) wherever no two sentences of one language
have the same text: the JSONL format identifies a sentence by its text, LAReQA by its position
(XQuAD-R de, en, es, el, th, vi: no such sentences; ar, hi, ru, tr, zh: 1-4 each, such as
"[citation needed]"). The format is minihbt/jsonl_groups.py; the file is written atomically.
"""
import io
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from minihbt import lareqa  # noqa: E402
from minihbt.io.files import ArgumentParser, atomic_write_bytes, run_cli  # noqa: E402


def convert(name: str, langs: list[str] | None, hard: bool) -> bytes:
    groups = lareqa.load_groups(name, langs)  # langs None: every language of the dataset
    buf = io.StringIO()
    for qid, group in groups.items():
        examples = {}
        for lang, ex in group.items():
            examples[lang] = {"query": ex.question, "passage": ex.sentence, "context": ex.context}
            if hard:
                texts = [t for _, t in ex.negatives if t != ex.sentence]
                examples[lang]["hard_negatives"] = list(dict.fromkeys(texts))  # first of equal texts
        buf.write(json.dumps({"id": qid, "examples": examples}, ensure_ascii=False) + "\n")
    return buf.getvalue().encode()


def main(argv=None) -> int:
    p = ArgumentParser(prog="python tools/lareqa_to_jsonl.py", description=__doc__.split("\n")[0])
    p.add_argument("dataset", help="xquad-r, mlqa-r or a directory of <lang>.json LAReQA files")
    p.add_argument("out", help="the .jsonl file to write")
    p.add_argument("--langs", help="comma-separated languages (default: all of the dataset)")
    p.add_argument("--no-hard-negatives", action="store_true", help="leave out the paragraph's other sentences")
    a = p.parse_args(argv)
    data = convert(a.dataset, a.langs.split(",") if a.langs else None, not a.no_hard_negatives)
    atomic_write_bytes(a.out, data)
    n = data.count(b"\n")
    print(f"wrote {a.out} ({n} groups)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(main)
