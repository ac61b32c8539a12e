"""minihbt.beir.evaluate: trec_eval's measures (pytrec_eval goldens from tools/gen_beir_golden.py), the
TREC run file read back by pytrec_eval, the MIRACL layout, and the LAReQA cross-check: XQuAD-R en
written as a BEIR directory gives the LAReQA path's mono mAP."""
import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from minihbt import lareqa, lareqa_eval
from minihbt.beir import collection as beir
from minihbt.beir import evaluate as beir_eval
from minihbt.beir import shards
from minihbt.io.files import UserError

GOLDEN = json.loads((Path(__file__).parent / "golden" / "beir_golden.json").read_text())


@dataclass
class Cfg:  # the fields of eval.py's EvalConfig that the protocol reads
    model: str = "fake"
    batch_size: int = 64
    max_len: int = 512
    progress: bool = False


class FakeEncoder:
    """TextEncoder's interface over a fixed table of vectors, counting what it is asked to encode."""

    meta: dict = {}

    def __init__(self, vectors: dict[str, np.ndarray], fingerprint: str = "fake-v1"):
        self.vectors, self.fingerprint, self.encoded = vectors, fingerprint, []

    def encode(self, texts, kind="query", batch_size=64, max_len=512, progress=None):
        self.encoded.append((kind, len(texts)))
        return np.stack([self.vectors[t] for t in texts]).astype(np.float32)


def passage(d: str) -> str:
    return f"passage {d}"


def golden_collection(root: Path, layout: str = "beir") -> tuple[Path, FakeEncoder]:
    """The golden collection on disk, and an encoder that returns its vectors."""
    g = GOLDEN
    vectors = {passage(d): np.array(v, np.float32) for d, v in zip(g["doc_ids"], g["docs"])}
    vectors |= {f"query {q}": np.array(v, np.float32) for q, v in zip(g["query_ids"], g["queries"])}
    (root / "qrels").mkdir(parents=True)
    with open(root / "corpus.jsonl", "w") as f:
        for d in g["doc_ids"]:
            f.write(json.dumps({"_id" if layout == "beir" else "docid": d, "title": "", "text": passage(d)}) + "\n")
    judgments = [(q, d, s) for q in g["query_ids"] for d, s in g["qrels"][q].items()]
    if layout == "beir":
        (root / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": f"query {q}"}) + "\n"
                                                    for q in g["query_ids"] + ["unjudged"]))
        vectors["query unjudged"] = np.zeros(6, np.float32)
        (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n"
                                                 + "".join(f"{q}\t{d}\t{s}\n" for q, d, s in judgments))
    else:
        (root / "topics").mkdir()
        (root / "topics" / "topics.miracl-v1.0-xx-dev.tsv").write_text(
            "".join(f"{q}\tquery {q}\n" for q in g["query_ids"]))
        (root / "qrels" / "qrels.miracl-v1.0-xx-dev.tsv").write_text(
            "".join(f"{q} Q0 {d} {s}\n" for q, d, s in judgments))
    return root, FakeEncoder(vectors)


def run_protocol(root, enc, depth=0, shard_rows=shards.SHARD_ROWS):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", beir.DataWarning)
        coll = beir.load(root)
    Q, store = beir_eval.encode(enc, coll, Cfg(), shard_rows)
    measures, top = beir_eval.evaluate(coll, Q, store, depth)
    return coll, measures, top


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIHBT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.parametrize("layout", ["beir", "miracl"])
def test_measures_equal_pytrec_eval(tmp_path, cache, layout):
    root, enc = golden_collection(tmp_path / "golden", layout)
    coll, measures, _ = run_protocol(root, enc)
    assert list(coll.queries) == GOLDEN["query_ids"]  # "unjudged" is not evaluated
    for m in beir_eval.MEASURES:
        got = dict(zip(coll.queries, measures[m]))
        for q, want in GOLDEN["per_query"].items():
            assert got[q] == pytest.approx(want[m], abs=1e-12), (m, q)
        assert np.mean(measures[m]) == pytest.approx(GOLDEN["mean"][m], abs=1e-12)
    assert coll.missing_docs == 1  # q01's "dmissing": in the denominators, never retrieved


def test_hand_computed_measures():
    # One query, relevant documents at ranks 2 (grade 2) and 12 (grade 1), one missing from the corpus (grade 3).
    m = beir_eval.trec_measures([[2, 12, 0]], [[2, 1, 3]])
    ideal = 3 + 2 / np.log2(3) + 1 / np.log2(4)
    assert m["ndcg@10"][0] == pytest.approx((2 / np.log2(3)) / ideal, abs=1e-15)
    assert m["recall@100"][0] == pytest.approx(2 / 3) and m["mrr@10"][0] == 0.5
    assert m["map"][0] == pytest.approx((1 / 2 + 2 / 12) / 3, abs=1e-15)
    none = beir_eval.trec_measures(np.zeros((2, 0), int), np.zeros((2, 0)))
    assert all((v == 0).all() and v.shape == (2,) for v in none.values())


def test_run_file_reads_back_in_pytrec_eval(tmp_path, cache):
    pytrec_eval = pytest.importorskip("pytrec_eval", reason="pytrec_eval is an optional (golden) extra")
    root, enc = golden_collection(tmp_path / "golden")
    coll, measures, (scores, indices) = run_protocol(root, enc, depth=1000)
    assert scores.shape == (16, 150)  # every passage: a full-depth run
    run_path = tmp_path / "run.trec"
    beir_eval.write_run(run_path, coll, scores, indices, tag="toy")
    lines = run_path.read_text().splitlines()
    assert lines[0].split()[:4] == ["q00", "Q0", coll.corpus.ids([indices[0, 0]])[0], "1"] and lines[0].endswith(" toy")
    with open(run_path) as f:
        run = pytrec_eval.parse_run(f)
    ev = pytrec_eval.RelevanceEvaluator(GOLDEN["qrels"], {"map", "ndcg_cut_10", "recall_100"}).evaluate(run)
    for i, q in enumerate(coll.queries):
        assert ev[q]["map"] == pytest.approx(measures["map"][i], abs=1e-12)
        assert ev[q]["ndcg_cut_10"] == pytest.approx(measures["ndcg@10"][i], abs=1e-12)
        assert ev[q]["recall_100"] == pytest.approx(measures["recall@100"][i], abs=1e-12)
    # MRR@10: recip_rank of the file's first 10 lines per query
    cut = {q: dict(list(docs.items())) for q, docs in run.items()}
    cut = {q: {l.split()[2]: float(l.split()[4]) for l in lines if l.startswith(q + " ") and int(l.split()[3]) <= 10}
           for q in cut}
    rr = pytrec_eval.RelevanceEvaluator(GOLDEN["qrels"], {"recip_rank"}).evaluate(cut)
    assert [rr[q]["recip_rank"] for q in coll.queries] == pytest.approx(list(measures["mrr@10"]), abs=1e-12)


def test_corpus_is_encoded_once_into_a_resumable_store(tmp_path, cache):
    root, enc = golden_collection(tmp_path / "golden")
    _, first, _ = run_protocol(root, enc, shard_rows=40)  # 4 shards of the 150 passages
    assert enc.encoded == [("query", 16), ("passage", 40), ("passage", 40), ("passage", 40), ("passage", 30)]
    store = next((cache / "embeddings").glob("golden-corpus-*"))
    (store / "shard-00002.npy").unlink()  # as if stopped during shard 2
    enc.encoded.clear()
    _, again, _ = run_protocol(root, enc, shard_rows=40)
    assert enc.encoded == [("passage", 40)]  # queries from the cache, one shard encoded again
    assert all((first[m] == again[m]).all() for m in first)
    for m in beir_eval.MEASURES:  # 4 shards give the golden numbers too
        assert list(first[m]) == pytest.approx([GOLDEN["per_query"][q][m] for q in GOLDEN["query_ids"]], abs=1e-12)


def test_run_file_refuses_ids_with_white_space(tmp_path, cache):
    root, enc = golden_collection(tmp_path / "golden")
    coll, _, (s, i) = run_protocol(root, enc, depth=3)
    coll.queries = {"q 0" if q == "q00" else q: t for q, t in coll.queries.items()}
    with pytest.raises(UserError, match="white space"):
        beir_eval.write_run(tmp_path / "run.trec", coll, s, i)
    assert not (tmp_path / "run.trec").exists()


# ----------------------------------------------------------------------------- LAReQA cross-check

def vector(text: str, dim: int = 32) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


class HashEncoder:
    """A random unit vector per text, the same on both paths; passages share 300 vectors, so
    most scores tie exactly with others and both paths must break the ties alike."""

    meta: dict = {}
    fingerprint = "hash-v1"

    def encode(self, texts, kind="query", batch_size=64, max_len=512, progress=None):
        if kind == "passage":
            return np.stack([vector(f"passage {int(hashlib.sha256(t.encode()).hexdigest(), 16) % 300}")
                             for t in texts])
        return np.stack([vector(f"query {t}") for t in texts])


def test_xquad_r_as_beir_gives_the_lareqa_mono_map(tmp_path, cache):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lareqa.DataWarning)
        ds = lareqa.load_lareqa("xquad-r", ["en"])
    root = tmp_path / "xquad-r-en"
    (root / "qrels").mkdir(parents=True)
    cands, questions = ds.candidates["en"], ds.questions["en"]
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"s{i}", "title": "", "text": c.text},
                                                          ensure_ascii=False) + "\n" for i, c in enumerate(cands)))
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": q.qid, "text": q.text}, ensure_ascii=False) + "\n"
                                                for q in questions))
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q.qid}\ts{ds.answer['en'][q.qid]}\t1\n" for q in questions))
    enc = HashEncoder()
    Q = enc.encode([q.text for q in questions], "query")
    C = enc.encode([c.text for c in cands], "passage")
    assert len(np.unique(C, axis=0)) < 300  # 1180 sentences, at most 300 distinct vectors
    lareqa_map = lareqa_eval.evaluate(ds, {"en": Q}, {"en": C})["mono"]["en"].map
    coll, measures, _ = run_protocol(root, enc)
    assert len(coll.queries) == 1190 and len(coll.corpus) == 1180
    assert float(np.mean(measures["map"])) == pytest.approx(lareqa_map, abs=1e-9)
    assert 0.0 < lareqa_map < 0.1  # random vectors: near chance, and not degenerate


def test_corpus_store_key_holds_the_encoding_code_torch_device_and_dtype(tmp_path, cache, monkeypatch):
    """The corpus store was keyed by model, corpus and max_len only: after a fix to the encoding
    code, a torch upgrade, --device cuda or --dtype bf16 the queries were encoded again (their key
    is embed_cache's) but the old corpus shards were read back, silently."""
    import torch

    from minihbt.io import embed_cache
    root, enc = golden_collection(tmp_path / "golden")
    _, first, _ = run_protocol(root, enc)
    stores = lambda: sorted(p.name for p in (cache / "embeddings").glob("golden-corpus-*"))  # noqa: E731
    assert len(stores()) == 1 and enc.encoded == [("query", 16), ("passage", 150)]

    def corpus_encoded_again() -> bool:
        enc.encoded.clear()
        _, again, _ = run_protocol(root, enc)
        assert all((first[m] == again[m]).all() for m in first)
        return ("passage", 150) in enc.encoded

    monkeypatch.setattr(embed_cache, "CODE_VERSION", "after-a-fix")
    assert corpus_encoded_again() and len(stores()) == 2
    monkeypatch.setattr(embed_cache, "_torch_version", lambda: "99.0")
    assert corpus_encoded_again() and len(stores()) == 3
    enc.device = torch.device("cuda", 0)
    assert corpus_encoded_again() and len(stores()) == 4
    enc.dtype = "bf16"
    assert corpus_encoded_again() and len(stores()) == 5
    assert not corpus_encoded_again() and len(stores()) == 5  # nothing changed: read back
