"""Evaluate a dual encoder on LAReQA: monolingual, cross-lingual and multilingual retrieval.

    python eval.py --dataset xquad-r|mlqa-r|DIR [--model e5-small|DIR] [--langs en de ...]
                   [--out FILE.json] [--batch-size 64] [--max-len 512] [--context] [--allow-seen]
                   [--dtype fp32|bf16|int8] [--compile] [--device cpu|cuda]   # every flag: minihbt/config.py
    python eval.py --dataset xnli|tydiqa|sib-200|tatoeba [--model M] [--limit N] [--out FILE.json]
    python eval.py --dataset DIR [--split test] [--run-out run.trec] [--model M] [--out FILE.json]
                                                        # DIR: a BEIR or MIRACL collection

Prints the paper's table (mAP mono / cross / multi, R@1, R@10, rank distance; one row per
language) and, with --out, writes the JSON results. The protocol, what each number counts and
its denominators, is minihbt/lareqa_eval.py; embeddings are cached per (model, language file,
kind, max_len, --context) by minihbt/io/embed_cache.py, so a second run encodes nothing. A model
whose provenance lists the dataset as training data is refused unless --allow-seen is given.
The downstream tasks read frozen embeddings (a linear probe, passage retrieval, nearest
neighbours): their protocols are minihbt/downstream/tasks.py, run by minihbt/downstream/suite.py.
A BEIR / MIRACL directory (corpus.jsonl with queries.jsonl or topics/; minihbt/beir/collection.py) gets
nDCG@10, Recall@100, MRR@10 and full-depth MAP as trec_eval defines them, the corpus encoded
into resumable shards and searched exactly a shard at a time (minihbt/beir/evaluate.py), and with
--run-out a TREC run file of each query's top 100.
"""

import sys

from minihbt import lareqa_eval
from minihbt.beir import collection, evaluate as beir_eval
from minihbt.config import eval_args
from minihbt.downstream import suite
from minihbt.io.files import atomic_write_json, run_cli
from minihbt.step import keep_freed_memory


def main(argv=None) -> int:
    cfg = eval_args(argv)
    keep_freed_memory()  # encoding frees and allocates the same large buffers every batch: no page faults
    if cfg.dataset in suite.TASKS:  # XNLI, TyDi QA, SIB-200, Tatoeba
        out = suite.evaluate(cfg)
        print(suite.table(out))
    elif collection.is_collection(cfg.dataset):  # BEIR / MIRACL
        out = beir_eval.run(cfg)
        print(beir_eval.table(out))
    else:  # LAReQA: XQuAD-R, MLQA-R or a directory of <lang>.json files
        out = lareqa_eval.run(cfg)
        print(lareqa_eval.table(out))
    if cfg.out:
        atomic_write_json(cfg.out, out)
        print(f"wrote {cfg.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    run_cli(main)
