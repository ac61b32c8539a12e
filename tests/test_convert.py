"""minihbt.convert: the Q4_0 dequantiser, the E5S1 reader and the e5-small directory it writes.

The dequantiser is checked on hand-built blocks whose values are worked out below; the reader on a
small synthetic E5S1 file; the real e5-small against transformers' BertModel + masked mean pooling
on the converted directory (golden: tools/gen_encoder_golden.py e5 -> tests/golden/e5_small.json).
"""
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from minihbt.convert import dequantize_q4_0, q4_to_hf, read_e5s1
from minihbt.text_encoder import load_encoder
from minihbt.files import UserError, sha256_file

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
