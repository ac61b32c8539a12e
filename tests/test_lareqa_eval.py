"""minihbt.lareqa_eval: the LAReQA protocol on a tiny dataset with every number worked by hand
(through eval.py's run, as a user gets them), language subsets, the zero-shot guard's provenance walk."""
import json
from pathlib import Path

import numpy as np
import pytest

from minihbt import lareqa_eval, per_query
from minihbt.config import EvalConfig
from minihbt.io.files import UserError


# ---------------------------------------------------------------- the tiny dataset
# Three languages, each with 5 sentences: paragraph A holds s0 s1 s2, paragraph B holds s3 s4.
# Question q1 is answered by s1 in every language; q2 by s4, and asked only in en and de
# (zh has no q2, as MLQA-R questions missing from some languages).
LANGS = ["en", "de", "zh"]

SENTS = [f"{l}{i}" for l in LANGS for i in range(5)]  # one embedding dimension each

ORDER = {  # each query's full ranking of the 15 candidates, best first
    ("en", "q1"): "en1 en0 de0 de1 en2 de2 zh0 en3 de3 zh2 zh3 zh1 en4 de4 zh4",
    ("en", "q2"): "de4 zh0 en0 en4 de0 zh1 en1 de1 zh2 en2 de2 zh3 en3 de3 zh4",
    ("de", "q1"): "zh1 de1 en1 en0 de0 zh0 en2 de2 zh2 en3 de3 zh3 en4 de4 zh4",
    ("de", "q2"): "en0 en1 en2 en3 en4 de0 de1 de2 de3 de4 zh0 zh1 zh2 zh3 zh4",
    ("zh", "q1"): "zh0 zh2 zh3 zh4 en0 de0 en2 de2 en3 de3 en4 de4 zh1 en1 de1",
}


def sentence(name: str) -> str:
    return f"Sentence {name} ends here."


def question(lang: str, qid: str) -> str:
    return f"Question {qid} in {lang}?"


def write_dataset(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for lang in LANGS:
        paragraphs = []
        for names, qids in (([0, 1, 2], ["q1"]), ([3, 4], ["q2"] if lang != "zh" else [])):
            sents = [sentence(f"{lang}{i}") for i in names]
            context = " ".join(sents)
            breaks, start = [], 0
            for s in sents:
                breaks.append([start, start + len(s)])
                start += len(s) + 1
            answer_at = {"q1": 1, "q2": 1}  # second sentence of the paragraph
            qas = [{"id": q, "question": question(lang, q),
                    "answers": [{"answer_start": breaks[answer_at[q]][0] + 9, "text": "x"}]} for q in qids]
            paragraphs.append({"context": context, "qas": qas, "sentence_breaks": breaks, "sentences": sents})
        doc = {"data": [{"title": "tiny", "paragraphs": paragraphs}], "version": "1.1"}
        (root / f"{lang}.json").write_text(json.dumps(doc, ensure_ascii=False))
    return root


class FakeEncoder:
    """TextEncoder's interface; a sentence is a one-hot vector, a question the vector of its
    chosen scores (16 - position in ORDER), so every inner product is known exactly."""

    prefixes = {"query": "", "passage": ""}
    fingerprint = "fake-encoder-v1"

    def __init__(self, provenance=None):
        self.meta = {"provenance": provenance} if provenance is not None else {}
        self.calls = 0
        self.vectors = {sentence(n): np.eye(15, dtype=np.float32)[i] for i, n in enumerate(SENTS)}
        for (lang, qid), order in ORDER.items():
            ranked = order.split()
            assert sorted(ranked) == sorted(SENTS)
            self.vectors[question(lang, qid)] = np.array([15 - ranked.index(n) for n in SENTS], dtype=np.float32)

    def encode(self, texts, kind="query", batch_size=64, max_len=512, progress=None):
        self.calls += 1
        return np.stack([self.vectors[t] for t in texts])


def run(tmp_path, monkeypatch, encoder=None, **kw):
    monkeypatch.setenv("MINIHBT_CACHE", str(tmp_path / "cache"))
    data_dir = tmp_path / "tiny"
    if not data_dir.exists():
        write_dataset(data_dir)
    cfg = EvalConfig(dataset=str(data_dir), model="fake", progress=False, **kw)
    return lareqa_eval.run(cfg, encoder=encoder or FakeEncoder())


def test_hand_computed_metrics(tmp_path, monkeypatch):
    out = run(tmp_path, monkeypatch)
    assert out["langs"] == ["de", "en", "zh"]  # a directory's languages, sorted
    m, r, approx = out["map"], out["recall"], lambda v: pytest.approx(v, abs=1e-12)

    # Monolingual, rank of the answer among the 5 sentences of the query's language:
    # en q1 1, en q2 2 | de q1 1, de q2 5 | zh q1 5
    assert m["mono"]["per_lang"] == {"en": approx((1 + 1 / 2) / 2), "de": approx((1 + 1 / 5) / 2), "zh": approx(1 / 5)}
    assert m["mono"]["mean"] == approx((0.75 + 0.6 + 0.2) / 3)
    assert r["mono@1"]["per_lang"] == {"en": 0.5, "de": 0.5, "zh": 0.0}

    # Cross-lingual: only questions with an answer in the candidate language (no q2 for zh).
    # en-de: q1 rank 2, q2 rank 1 | en-zh: q1 rank 4 | de-en: q1 1, q2 5 | de-zh: q1 1 | zh-*: q1 5
    assert m["cross"]["per_pair"] == {
        "de-en": approx((1 + 1 / 5) / 2), "de-zh": approx(1.0), "en-de": approx((1 / 2 + 1) / 2),
        "en-zh": approx(1 / 4), "zh-de": approx(1 / 5), "zh-en": approx(1 / 5)}
    assert m["cross"]["mean"] == approx((0.6 + 1 + 0.75 + 0.25 + 0.2 + 0.2) / 6)
    assert r["cross@1"]["per_pair"] == {"de-en": 0.5, "de-zh": 1.0, "en-de": 0.5, "en-zh": 0.0,
                                        "zh-de": 0.0, "zh-en": 0.0}
    assert out["counts"]["cross_questions"] == {"de-en": 2, "de-zh": 1, "en-de": 2, "en-zh": 1,
                                                "zh-de": 1, "zh-en": 1}
    assert out["counts"]["cross_pairs"] == 6

    # Multilingual, ranks of the relevant sentences in the pool of 15:
    # en q1: en1 1, de1 4, zh1 12 | en q2: de4 1, en4 4 | de q1: zh1 1, de1 2, en1 3
    # de q2: en4 5, de4 10 | zh q1: zh1 13, en1 14, de1 15
    ap = {"en": [(1 + 2 / 4 + 3 / 12) / 3, (1 + 2 / 4) / 2], "de": [1.0, (1 / 5 + 2 / 10) / 2],
          "zh": [(1 / 13 + 2 / 14 + 3 / 15) / 3]}
    assert m["multi"]["per_lang"] == {k: approx(np.mean(v)) for k, v in ap.items()}
    assert m["multi"]["mean"] == approx(np.mean([np.mean(v) for v in ap.values()]))
    assert r["multi@10"]["per_lang"] == {"en": approx((2 / 3 + 1) / 2), "de": 1.0, "zh": 0.0}
    rd = {"en": (11 + 3) / 2, "de": (2 + 5) / 2, "zh": 2.0}
    assert out["rank_distance"]["per_lang"] == {k: approx(v) for k, v in rd.items()}
    assert out["rank_distance"]["mean"] == approx(sum(rd.values()) / 3)

    assert out["counts"]["questions"] == {"de": 2, "en": 2, "zh": 1}
    assert out["counts"]["candidates"] == {"de": 5, "en": 5, "zh": 5}
    assert out["zero_shot"] is True


def test_language_subset_pools_only_those_languages(tmp_path, monkeypatch):
    out = run(tmp_path, monkeypatch, langs=["en", "zh"])
    # The pool is en + zh only: each query's ranking is ORDER with the de sentences removed.
    ranked = [n for n in ORDER[("en", "q1")].split() if n[:2] in ("en", "zh")]
    ranks = sorted(ranked.index(n) + 1 for n in ("en1", "zh1"))
    en_q1 = (1 / ranks[0] + 2 / ranks[1]) / 2
    ranked = [n for n in ORDER[("en", "q2")].split() if n[:2] in ("en", "zh")]
    en_q2 = 1 / (ranked.index("en4") + 1)  # q2 has no zh answer: one relevant
    assert out["map"]["multi"]["per_lang"]["en"] == pytest.approx((en_q1 + en_q2) / 2, abs=1e-12)
    assert list(out["map"]["cross"]["per_pair"]) == ["en-zh", "zh-en"]


def test_seen_in_training_follows_base_models():
    prov = {"train_data": ["xquad-r"], "base_model": "e5-small", "langs": ["en"]}
    assert lareqa_eval.seen_in_training(prov, "xquad-r")
    assert not lareqa_eval.seen_in_training(prov, "mlqa-r")
    tuned_again = {"train_data": ["/data/other"], "base_model_provenance": {"train_data": ["mlqa-r"]}}
    assert lareqa_eval.seen_in_training(tuned_again, "mlqa-r")
    assert lareqa_eval.seen_in_training(tuned_again, "/elsewhere/other")  # a directory, by its name
    assert not lareqa_eval.seen_in_training(None, "mlqa-r")


def pooled_rank(lang: str, qid: str, name: str, langs: list[str]) -> int:
    """Rank of sentence `name` for (lang, qid) in the pool of `langs`: ORDER without the others."""
    ranked = [n for n in ORDER[(lang, qid)].split() if n[:2] in langs]
    return ranked.index(name) + 1


def test_point02_rank_distance_leaves_out_queries_with_one_relevant_and_counts_them(tmp_path, monkeypatch):
    # Pool en + zh: en q1's answers en1 and zh1 (distance 7); en q2 is answered in en only, so it
    # has no distance (it counted as 0, halving en's mean); zh q1's answers zh1 and en1 (distance 1).
    langs = ["en", "zh"]
    out = run(tmp_path, monkeypatch, langs=langs)
    en = pooled_rank("en", "q1", "zh1", langs) - pooled_rank("en", "q1", "en1", langs)
    zh = pooled_rank("zh", "q1", "en1", langs) - pooled_rank("zh", "q1", "zh1", langs)
    assert (en, zh) == (7, 1)
    assert out["rank_distance"] == {"mean": (en + zh) / 2, "per_lang": {"en": en, "zh": zh},
                                    "excluded": {"en": 1, "zh": 0}}
    # One language: no query has two answers in the pool, so there is no rank distance (not 0).
    one = run(tmp_path, monkeypatch, langs=["en"])
    assert one["rank_distance"] == {"mean": None, "per_lang": {"en": None}, "excluded": {"en": 2}}
    assert lareqa_eval.table(one).splitlines()[-1].endswith("-")
    # All three languages: every query has >= 2 answers (q2 in en and de), none is left out.
    assert run(tmp_path, monkeypatch)["rank_distance"]["excluded"] == {"de": 0, "en": 0, "zh": 0}


def test_point07_a_renamed_copy_of_the_training_data_is_caught(tmp_path, monkeypatch, capsys):
    # A model trained (by train.py, for real) on a dataset directory, then evaluated on a renamed
    # copy of it: the names differ, the content fingerprint does not.
    from conftest import cli
    from test_train import TINY_BERT, write_lareqa

    trained_on = write_lareqa(tmp_path / "toy")
    assert cli("train.py", ["--sampler", "xx", "--model", TINY_BERT, "--train-data", str(trained_on),
                       "--langs", "en,de", "--batch-size", "2", "--max-steps", "1", "--val-every", "0",
                       "--out", str(tmp_path / "run")]) == 0
    model = str(tmp_path / "run" / "checkpoint")
    copy = tmp_path / "renamed"
    copy.mkdir()
    for f in trained_on.glob("*.json"):
        (copy / f.name).write_bytes(f.read_bytes())
    monkeypatch.setenv("MINIHBT_CACHE", str(tmp_path / "cache"))
    def cfg(dataset, **kw):
        return EvalConfig(dataset=str(dataset), model=model, progress=False, **kw)

    with pytest.raises(UserError, match="provenance lists .*renamed as training data"):
        lareqa_eval.run(cfg(copy))
    assert lareqa_eval.run(cfg(copy, allow_seen=True))["zero_shot"] is False
    # Trained on en and de only: what the copy holds in es does not matter; en and de do.
    (copy / "es.json").write_text((copy / "es.json").read_text().replace("París", "Lyon"))
    with pytest.raises(UserError, match="would not be zero-shot"):
        lareqa_eval.run(cfg(copy))
    (copy / "en.json").write_text((copy / "en.json").read_text().replace("Paris", "Lyon"))
    assert lareqa_eval.run(cfg(copy))["zero_shot"] is True
    # Followed through base models, as the names are.
    prov = json.loads((Path(model) / "minihbt.json").read_text())["provenance"]
    assert lareqa_eval.seen_in_training({"train_data": ["x"], "base_model_provenance": prov}, str(trained_on))


def test_point11_language_codes_with_a_hyphen(tmp_path, monkeypatch):
    # "zh-CN" as a directory dataset's language: the table's cross column used k.split("-")[0]
    # and found no pair for zh-CN. Pair keys are built from the language list instead.
    data_dir = write_dataset(tmp_path / "tiny")
    (data_dir / "zh.json").rename(data_dir / "zh-CN.json")
    out = run(tmp_path, monkeypatch)
    assert out["langs"] == ["de", "en", "zh-CN"]
    pairs = out["map"]["cross"]["per_pair"]
    assert sorted(pairs) == ["de-en", "de-zh-CN", "en-de", "en-zh-CN", "zh-CN-de", "zh-CN-en"]
    row = next(l for l in lareqa_eval.table(out).splitlines() if l.startswith("zh-CN "))
    assert float(row.split()[2]) == pytest.approx((pairs["zh-CN-de"] + pairs["zh-CN-en"]) / 2, abs=5e-4)
    # A language set in which two pairs share a key cannot be reported: one line, before any work.
    with pytest.raises(UserError, match=r"the pairs a/b-c and a-b/c would both be reported as 'a-b-c'"):
        per_query.pair_keys(["a", "a-b", "b-c", "c"])
