"""Texts in, unit vectors out: an `Encoder` with its tokenizer and prefixes, and `load_encoder`.

Paper: Elmahdy, Lin, Ahmad 2024 (arXiv 2408.10536), sec. 3: queries and passages go through the
same encoder; multilingual-e5 marks them with the prefixes "query: " and "passage: " (its model
card), which the model directory's minihbt.json carries (minihbt/hf_format.py).

Contract
- `load_encoder(name_or_dir, device)` -> TextEncoder: a model directory, or a manifest name such
  as "e5-small" (fetched, verified and converted once into the cache, minihbt/convert.py).
- `TextEncoder.tokenize(texts, kind, max_len)` -> {"input_ids", "attention_mask"} (B, T) on the
  model's device, with the prefix of `kind` ("query" | "passage") prepended.
- `TextEncoder.encode(texts, kind, batch_size, max_len)` -> np.float32 (n, H), L2-normalised,
  row i for texts[i]; no gradients, dropout off, the model's train/eval mode restored.
- `TextEncoder.fingerprint`: a hash of weights, tokenizer, prefixes and pooling, for caches.
- `TextEncoder.save(dir, provenance)`: a complete model directory (hf_format.save_model_dir).
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

from minihbt import convert, hf_format
from minihbt.files import UserError
from minihbt.tokenizer import Tokenizer
from minihbt.transformer import Encoder


class TextEncoder:
    """An Encoder with its tokenizer and prefixes: texts in, unit vectors out."""

    def __init__(self, model: Encoder, tokenizer: Tokenizer, prefixes: dict[str, str], meta: dict | None = None):
        self.model, self.tokenizer = model, tokenizer
        self.prefixes = dict(prefixes)
        self.meta = dict(meta or {})

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def fingerprint(self) -> str:
        """Hash of the weights, tokenizer, prefixes and pooling as they are now (for caches)."""
        h = hashlib.sha256()
        h.update(json.dumps([self.model.config.to_hf(), self.model.config.pooling, self.model.config.normalize,
                             self.prefixes], sort_keys=True).encode())
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
        """L2-normalised embeddings (n, H) as float32, row i for texts[i].

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
            with torch.inference_mode():
                for start in range(0, len(order), batch_size):
                    rows = order[start:start + batch_size]
                    batch = {k: v.to(self.device) for k, v in self.tokenizer.pad([ids[i] for i in rows]).items()}
                    e = self.model.embed(batch["input_ids"], batch["attention_mask"])
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
        prov = provenance if provenance is not None else self.meta.get("provenance")
        self.meta = hf_format.save_model_dir(dir, self.model, self.tokenizer, self.prefixes, prov)


def load_encoder(name_or_dir: str | os.PathLike, device: str = "cpu") -> TextEncoder:
    """A model directory, or a manifest name such as "e5-small" (fetched and converted once)."""
    path = Path(name_or_dir)
    if not path.is_dir():
        if os.sep in str(name_or_dir) or not str(name_or_dir):
            raise UserError(f"{name_or_dir}: model directory not found")
        path = convert.model_dir(str(name_or_dir))
    meta = hf_format.read_meta(path)
    model = hf_format.load_pretrained(path).to(device)
    tokenizer = Tokenizer.from_file(path / "tokenizer.json")
    return TextEncoder(model, tokenizer, meta["prefixes"], meta)
