"""Run a downstream task end to end: read the data, embed it (cached), apply the protocol, report.

    python eval.py --dataset xnli|tydiqa|sib-200|tatoeba [--model M] [--limit N] [--out F]

The protocols are minihbt.downstream's; this module decides what is encoded and how.
- Every text with the model's `query` kind (E5's rule for symmetric tasks and for features),
  except TyDi passages (`passage`); at most `max_len` = 512 tokens; L2-normalised rows.
- Each distinct text of a call is encoded once: XNLI repeats each premise for its three
  hypotheses, and equal texts must get equal vectors (a tie is then a true tie, broken by the
  search's rule, not by rounding noise from different batches). Rows are expanded back after.
- The texts of all languages of one kind go to one encode call (XNLI: one per file), so that
  length-sorted batches pad little.
- Embeddings are cached (minihbt.io.embed_cache) per call under a key of the model's
  fingerprint, a sha256 of the distinct texts themselves (so `--limit` and changed data get
  their own entries), the kind and max_len; a second run encodes nothing.
- seen / unseen languages: the model's training languages from its provenance (following
  base-model provenance), else the paper's nine (config.TRAIN_LANGS), reported as `seen_langs`.

Contract
    load(task, limit) -> the task's data (minihbt.downstream_data), read before any model is loaded.
    run(enc, data, cfg, model) -> downstream's results dict for that task plus {"task", "model",
        "model_fingerprint", "seen_langs", "seen_from": "provenance" | "default", "limit",
        "counts": {rows per file and language}, "seconds": {"total", "encode"}}.
    table(results) -> the per-language text table that eval.py prints.
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass

import numpy as np

from minihbt.config import TRAIN_LANGS
from minihbt.downstream import datasets as dd
from minihbt.downstream import tasks as downstream
from minihbt.io.embed_cache import encode_cached
from minihbt.io.files import UserError
from minihbt.lareqa_eval import load_model

TASKS = ("xnli", "tydiqa", "sib-200", "tatoeba")


@dataclass
class TaskConfig:
    task: str = "xnli"
    limit: int | None = None   # first N rows of every file
    batch_size: int = 64
    max_len: int = 512
    progress: bool = True      # progress lines on stderr


class Embedder:
    """enc.encode through the cache, each distinct text once; counts the seconds spent encoding."""

    def __init__(self, enc, cfg: TaskConfig):
        self.enc, self.cfg, self.seconds = enc, cfg, 0.0
        self.model_fp = enc.fingerprint  # hashes every weight: once

    def __call__(self, texts: list[str], kind: str, label: str) -> np.ndarray:
        distinct = list(dict.fromkeys(texts))
        digest = hashlib.sha256(json.dumps(distinct, ensure_ascii=False).encode()).hexdigest()[:16]
        key = ("downstream", self.model_fp, digest, kind, self.cfg.max_len)
        t0 = time.perf_counter()
        E = encode_cached(self.enc, distinct, kind, key, f"{self.cfg.task}-{label}", self.cfg.batch_size,
                          self.cfg.max_len, self.cfg.progress)
        self.seconds += time.perf_counter() - t0
        row = {t: i for i, t in enumerate(distinct)}
        return E[[row[t] for t in texts]]  # (len(texts), H)

    def per_lang(self, texts: dict[str, list[str]], kind: str, label: str) -> dict[str, np.ndarray]:
        """{lang: embeddings of texts[lang]}, all languages in one encode call: sorted by length
        together, the batches pad far less than per language (TyDi's passages: 26% -> 2% padding)."""
        E = self([t for ts in texts.values() for t in ts], kind, label)  # (total, H)
        ends = np.cumsum([len(ts) for ts in texts.values()])
        return dict(zip(texts, np.split(E, ends[:-1])))


def training_langs(provenance: dict | None) -> list[str] | None:
    """Languages the model was trained on, along its provenance chain; None for an untrained model."""
    langs: list[str] = []
    while provenance:
        langs += [l for l in provenance.get("langs") or [] if l not in langs]
        provenance = provenance.get("base_model_provenance")
    return langs or None


# ----------------------------------------------------------------------------- tasks

def run_xnli(embed: Embedder, data: dd.XNLI, seen: set[str]) -> tuple[dict, dict]:
    def pairs(d: dd.NLI, label: str):
        E = embed(d.premise + d.hypothesis, "query", label)  # (2n, H)
        return E[: len(d.premise)], E[len(d.premise):], d.label

    train = pairs(data.train, "train-en")
    test = {l: pairs(d, f"test-{l}") for l, d in data.test.items()}
    dev = {l: pairs(d, f"dev-{l}") for l, d in data.dev.items()}
    counts = {"train": len(data.train.label), "test": {l: len(d.label) for l, d in data.test.items()},
              "dev": {l: len(d.label) for l, d in data.dev.items()}}
    return downstream.xnli(train, test, dev, seen), counts


def run_tydiqa(embed: Embedder, data: dict[str, dd.QA], seen: set[str]) -> tuple[dict, dict]:
    Q = embed.per_lang({l: d.questions for l, d in data.items()}, "query", "questions")
    C = embed.per_lang({l: d.contexts for l, d in data.items()}, "passage", "passages")
    counts = {"questions": {l: len(d.questions) for l, d in data.items()},
              "passages": {l: len(d.contexts) for l, d in data.items()}}
    return downstream.tydiqa(Q, C, {l: d.answer for l, d in data.items()}, seen), counts


def run_sib(embed: Embedder, sib: tuple[list[str], dict], seen: set[str]) -> tuple[dict, dict]:
    labels, data = sib
    E = embed.per_lang({l: s["train"].text + s["test"].text for l, s in data.items()}, "query", "train-test")
    X, y = {}, {}
    for lang, splits in data.items():
        n = len(splits["train"].text)
        X[lang], y[lang] = {"train": E[lang][:n], "test": E[lang][n:]}, {s: t.label for s, t in splits.items()}
    counts = {"labels": labels, "train": {l: len(s["train"].text) for l, s in data.items()},
              "test": {l: len(s["test"].text) for l, s in data.items()}}
    return downstream.sib(X, y, len(labels), seen), counts


def run_tatoeba(embed: Embedder, data: dict[str, dd.Bitext], seen: set[str]) -> tuple[dict, dict]:
    S = embed.per_lang({l: d.src for l, d in data.items()}, "query", "x")
    E = embed.per_lang({l: d.eng for l, d in data.items()}, "query", "eng")  # an English text shared by pairs: once
    return downstream.tatoeba(S, E, seen), {"pairs": {l: len(d.src) for l, d in data.items()}}


LOADERS = {"xnli": dd.load_xnli, "tydiqa": dd.load_tydiqa, "sib-200": dd.load_sib, "tatoeba": dd.load_tatoeba}
RUNNERS = {"xnli": run_xnli, "tydiqa": run_tydiqa, "sib-200": run_sib, "tatoeba": run_tatoeba}


def load(task: str, limit: int | None = None):
    """The task's data (downstream_data), read and checked before any model is loaded."""
    return LOADERS[task](limit)


def run(enc, data, cfg: TaskConfig, model: str) -> dict:
    """The results dict of task `cfg.task` on data = load(cfg.task, cfg.limit), for encoder `enc`."""
    t0 = time.perf_counter()
    own = training_langs(enc.meta.get("provenance"))
    seen = own or list(TRAIN_LANGS)
    embed = Embedder(enc, cfg)
    res, counts = RUNNERS[cfg.task](embed, data, set(seen))
    if cfg.progress:
        print(f"{cfg.task}: encoding {embed.seconds:.1f} s, total {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return {"task": cfg.task, "model": model, "model_fingerprint": embed.model_fp,
            "dtype": getattr(enc, "dtype", "fp32"),  # the encoder's precision (eval.py --dtype)
            "seen_langs": seen,
            "seen_from": "provenance" if own else "default", "limit": cfg.limit, **res, "counts": counts,
            "seconds": {"total": round(time.perf_counter() - t0, 2), "encode": round(embed.seconds, 2)}}


# ----------------------------------------------------------------------------- table

def _rows(out: dict) -> list[tuple[str, dict]]:
    """(column name, Summary) pairs shown by `table`, in order."""
    t = out["task"]
    if t == "xnli":
        a, p = out["accuracy"], out["pair_ap"]
        return [("acc", {**a["test"], "per_lang": {**a["test"]["per_lang"], **a["dev"]["per_lang"]}}),
                ("pair AP", {**p["test"], "per_lang": {**p["test"]["per_lang"], **p["dev"]["per_lang"]}})]
    if t == "tydiqa":
        return [(m, out["mono"][m]) for m in ("mrr@10", "r@1", "r@5", "ndcg@10")] + \
               [("pool mrr@10", out["pooled"]["mrr@10"]), ("other top1", out["pooled"]["other_lang_top1"])]
    if t == "sib-200":
        return [("cross acc", out["accuracy"]["cross"]), ("within acc", out["accuracy"]["within"])]
    return [(name, out["accuracy"][k]) for name, k in (("x->eng", "to_eng"), ("eng->x", "from_eng"), ("mean", "mean"))]


def table(out: dict) -> str:
    """Per-language rows and the mean / seen / unseen rows of a results dict (XNLI: the mean rows
    are over the test languages; the dev languages el, ru, th are listed after them)."""
    cols = _rows(out)
    langs = list(dict.fromkeys(l for _, s in cols for l in s["per_lang"]))
    cell = lambda v: f"{v:>12.3f}" if v is not None else f"{'-':>12}"  # noqa: E731
    lines = [f"{out['task']} / {out['model']}  (seen: {','.join(out['seen_langs'])})",
             f"{'lang':<8}" + "".join(f"{c:>12}" for c, _ in cols)]
    for l in langs:
        lines.append(f"{l:<8}" + "".join(cell(s["per_lang"].get(l)) for _, s in cols))
    for row in ("mean", "seen", "unseen"):
        lines.append(f"{row:<8}" + "".join(cell(s[row]) for _, s in cols))
    return "\n".join(lines)


def evaluate(cfg, encoder=None) -> dict:
    """eval.py on a task (cfg: a minihbt.config.EvalConfig): read the data first, then load the model."""
    if cfg.langs is not None or cfg.context:
        raise UserError(f"--langs and --context apply to LAReQA datasets, not to {cfg.dataset}")
    if cfg.limit is not None and cfg.limit < 1:
        raise UserError(f"--limit must be a positive integer, got {cfg.limit}")
    data = load(cfg.dataset, cfg.limit)
    enc = encoder if encoder is not None else load_model(cfg.model, cfg.dtype, cfg.device, cfg.compile)
    return run(enc, data, TaskConfig(cfg.dataset, cfg.limit, cfg.batch_size, cfg.max_len, cfg.progress), cfg.model)
