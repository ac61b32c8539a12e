"""Texts in, unit vectors out: an `Encoder` with its tokenizer and prefixes, and `load_encoder`.

Paper: Elmahdy, Lin, Ahmad 2024 (arXiv 2408.10536), sec. 3: queries and passages go through the
same encoder; multilingual-e5 marks them with the prefixes "query: " and "passage: " (its model
card), which the model directory's minihbt.json carries (minihbt/io/hf_format.py).

Contract
- `load_encoder(name_or_dir, device, dtype)` -> TextEncoder: a model directory, or a manifest name such
  as "e5-small" (fetched, verified and converted once into the cache, minihbt/io/convert.py).
- `TextEncoder.tokenize(texts, kind, max_len)` -> {"input_ids", "attention_mask"} (B, T) on the
  model's device, with the prefix of `kind` ("query" | "passage") prepended.
- `TextEncoder.encode(texts, kind, batch_size, max_len)` -> np.float32 (n, H), L2-normalised,
  row i for texts[i]; no gradients, dropout off, the model's train/eval mode restored.
  Always unit vectors: every score in minihbt is a cosine, as in the loss (InfoNCE normalises
  its inputs, minihbt/loss.py), so search's inner product is the score training optimised.
  `normalize: false` in minihbt.json only makes `Encoder.embed` return the raw pooled vector
  (and the sentence-transformers export omit its Normalize module); encode then normalises.
- `TextEncoder.fingerprint`: a hash of weights, tokenizer, prefixes, pooling and precision (the
  inputs that fix what `encode` returns), for caches.
- `TextEncoder.save(dir, provenance)`: a complete model directory (hf_format.save_model_dir).
- `TextEncoder.dtype` ("fp32" | "bf16" | "int8", from `load_encoder(..., dtype=)`): the precision of
  `encode` and of train_step.make_embed, on CPU and CUDA alike; "int8" (CPU, encoding only: never
  for training, and such an encoder is not saved) is an encoder whose nn.Linear layers are
  minihbt/quant.py's Int8Linear (int8 weights per output channel, int8 activations per token),
  built by `quantize(model)` (biases corrected for the weights' rounding).
- `TextEncoder.compile()` (eval.py --compile): `encode` runs a torch.compile'd embed (inductor,
  dynamic shapes, freezing: the weights become constants at the first call, so only for a model
  that no longer changes); fp32, bf16 and int8 (there the int8 GEMM stays one opaque op and
  inductor fuses the quantisation around it). Its embeddings differ from eager ones in the last
  bits, so the fingerprint says so.

Precision (every detail, and measurements: docs/PRECISION.md). "fp32" computes everything in
float32. "bf16" runs the encoder under `torch.autocast(bfloat16)` with the weights kept in fp32
(the master copy AdamW updates): every nn.Linear in bf16, embeddings, LayerNorms, residual adds,
pooling and the L2 normalisation in fp32; the loss is computed outside autocast, in fp32. It pays
only where the hardware multiplies bf16 natively (CUDA GPUs; CPUs with AVX512-BF16 or AMX);
elsewhere torch emulates it, so `load_encoder` prints a note there. "int8" (CPU, encoding only)
replaces every nn.Linear by minihbt/quant.py's Int8Linear (`quantize`); the rest stays fp32.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

from minihbt import quant
from minihbt.config import DTYPES
from minihbt.io import convert, hf_format
from minihbt.io.files import UserError, old_copy
from minihbt.tokenizer import Tokenizer
from minihbt.transformer import Encoder



def autocast(device: torch.device, dtype: str):
    """The context that runs the encoder in `dtype`: bf16 autocast, or nothing for fp32 and int8
    (whose int8 Linears are in the model itself)."""
    if dtype not in DTYPES:
        raise UserError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if dtype in ("fp32", "int8"):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def cpu_has_bf16() -> bool:
    """Whether oneDNN finds native bf16 matrix instructions (AVX512-BF16 / AMX) on this CPU."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch without the check: assume native
        return True


class TextEncoder:
    """An Encoder with its tokenizer and prefixes: texts in, unit vectors out."""

    def __init__(self, model: Encoder, tokenizer: Tokenizer, prefixes: dict[str, str], meta: dict | None = None,
                 dtype: str = "fp32"):
        self.model, self.tokenizer = model, tokenizer
        self.prefixes = dict(prefixes)
        self.meta = dict(meta or {})
        autocast(torch.device("cpu"), dtype)  # refuses an unknown dtype now rather than at the first batch
        if (dtype == "int8") != quant.is_quantized(model):
            raise ValueError(f"dtype {dtype!r} with a model whose Linears are "
                             f"{'int8' if quant.is_quantized(model) else 'float'} (load_encoder(..., dtype='int8') quantises)")
        self.dtype = dtype
        self.compiled = False
        self._embed = model.embed

    def compile(self) -> "TextEncoder":
        """encode through torch.compile(embed) with inductor's freezing (module docstring); returns self."""
        if self.dtype == "int8" and quant.backend()[0] == "int_mm":
            raise UserError("--compile with --dtype int8 needs torch's oneDNN int8 GEMM, which this torch "
                            "lacks (or cannot sum exactly here); compile fp32 or bf16")
        self._embed = torch.compile(self.model.embed, dynamic=True, options={"freezing": True})
        self.compiled = True
        return self

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def fingerprint(self) -> str:
        """Hash of the weights, tokenizer, prefixes, pooling and precision as they are now (for caches).

        fp32 adds nothing to the hash, so fp32 fingerprints (and caches keyed by them) are those
        of the code before `dtype` existed; bf16 embeddings get keys of their own."""
        h = hashlib.sha256()
        parts = [self.model.config.to_hf(), self.model.config.pooling, self.model.config.normalize, self.prefixes]
        parts += [self.dtype] if self.dtype != "fp32" else []
        parts += ["inductor, freezing"] if self.compiled else []
        parts += [quant.scheme(), quant.SOURCE_HASH] if self.dtype == "int8" else []  # + the int8 weights below
        h.update(json.dumps(parts, sort_keys=True).encode())
        h.update(self.tokenizer.raw_json.encode("utf-8"))
        for k, v in self.model.state_dict().items():
            h.update(k.encode())
            h.update(memoryview(v.detach().to("cpu").contiguous().numpy()).cast("B"))
        return h.hexdigest()[:16]

    def _prefix(self, kind: str) -> str:
        if kind not in self.prefixes:
            raise UserError(f"kind must be one of {', '.join(self.prefixes)}, got {kind!r}")
        return self.prefixes[kind]

    def tokenize(self, texts: list[str], kind: str = "query", max_len: int = 512) -> dict[str, torch.Tensor]:
        max_len = min(max_len, self.model.config.max_tokens)
        batch = self.tokenizer(texts, prefix=self._prefix(kind), max_len=max_len)
        return {k: v.to(self.device) for k, v in batch.items()}

    def encode(self, texts: list[str], kind: str = "query", batch_size: int = 64, max_len: int = 512,
               progress: bool | None = None) -> np.ndarray:
        """L2-normalised embeddings (n, H) as float32, row i for texts[i], computed in `self.dtype`:
        unit vectors whatever minihbt.json's `normalize` says, so that inner products are the
        cosine scores of the loss (see the module docstring).

        Texts are tokenised once, sorted by length (longest first, so an out-of-memory shows at
        once) and batched, so little compute goes to padding; rows are put back in input order.
        """
        ids = self.tokenizer.encode(list(texts), self._prefix(kind), min(max_len, self.model.config.max_tokens))
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        out = np.empty((len(ids), self.model.config.hidden_size), dtype=np.float32)
        show = len(ids) >= 2000 if progress is None else progress
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode(), autocast(self.device, self.dtype):
                for start in range(0, len(order), batch_size):
                    rows = order[start:start + batch_size]
                    batch = {k: v.to(self.device) for k, v in self.tokenizer.pad([ids[i] for i in rows]).items()}
                    e = self._embed(batch["input_ids"], batch["attention_mask"])
                    if not self.model.config.normalize:  # the same op embed applies when it normalises
                        e = torch.nn.functional.normalize(e, dim=-1)
                    out[rows] = e.float().cpu().numpy()
                    if show:
                        print(f"\rencode: {start + len(rows)}/{len(ids)} texts", end="", file=sys.stderr)
            if show:
                print(file=sys.stderr)
        finally:
            self.model.train(was_training)
        return out

    def save(self, dir: str | os.PathLike, provenance: dict | None = None) -> None:
        """A complete model directory, replaced atomically (hf_format.save_model_dir); the
        provenance defaults to the one this model was loaded with."""
        if self.dtype == "int8":
            raise UserError("an int8 encoder is not saved: save the fp32 model, load_encoder(..., dtype='int8') quantises it")
        prov = provenance if provenance is not None else self.meta.get("provenance")
        self.meta = hf_format.save_model_dir(dir, self.model, self.tokenizer, self.prefixes, prov)


def load_encoder(name_or_dir: str | os.PathLike, device: str = "cpu", dtype: str = "fp32") -> TextEncoder:
    """A model directory, or a manifest name such as "e5-small" (fetched and converted once), on
    `device`, encoding in `dtype` ("fp32" | "bf16" | "int8", see the module docstring)."""
    if dtype == "int8" and torch.device(device).type != "cpu":
        raise UserError(f"dtype int8 is for CPU encoding; on {device} use bf16")
    path = Path(name_or_dir)
    if not path.is_dir():
        if os.sep in str(name_or_dir) or not str(name_or_dir):
            old = old_copy(path)  # a save (of a checkpoint) killed between its two renames
            raise UserError(f"{name_or_dir}: model directory not found" + (
                f"; an interrupted save left its previous version as {old} (train.py --resume {path} "
                "restores a checkpoint; or rename it back)" if old else ""))
        path = convert.model_dir(str(name_or_dir))
    meta = hf_format.read_meta(path)
    model = hf_format.load_pretrained(path).to(device)
    tokenizer = Tokenizer.from_file(path / "tokenizer.json")
    if dtype == "int8":
        quantize(model)  # every nn.Linear -> Int8Linear (minihbt/quant.py), biases corrected
    te = TextEncoder(model, tokenizer, meta["prefixes"], meta, dtype)
    if dtype == "bf16" and te.device.type == "cpu" and not cpu_has_bf16():
        print("note: bf16 on a CPU without AVX512-BF16 / AMX: torch emulates it, expect it slower "
              "than fp32 (docs/PRECISION.md)", file=sys.stderr)
    return te


def quantize(model: Encoder, per: str = "token") -> Encoder:
    """`model` with int8 Linears (quant.quantize_model, in place), each bias corrected for its weight's
    rounding on the mean input that 64 x 32 seeded random token ids give it (quant.py: bias
    correction): text-free and deterministic, so the same weights give the same int8 model."""
    ids = torch.randint(0, model.config.vocab_size, (64, 32), generator=torch.Generator().manual_seed(0))
    means = quant.input_means(model, lambda: model.embed(ids, torch.ones_like(ids)))  # {Linear: (K,)}
    return quant.quantize_model(model, per, means)
