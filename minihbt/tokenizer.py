"""Text -> token ids, read from a Hugging Face `tokenizer.json`, with the file as the only authority.

The dual encoder of the paper (Elmahdy et al. 2024, sec. 3) tokenises a query and a passage
with the tokenizer of its pretrained transformer: SentencePiece Unigram for XLM-R and
multilingual-e5, WordPiece for LaBSE. We load that file with the `tokenizers` library and use
its normaliser, pre-tokeniser, model and post-processor exactly as written; nothing is rebuilt.

Contract
- Special tokens and the pad id come from the file: the padding entry when it is set, else the
  special added token `<pad>` (SentencePiece: `<s>` 0, `<pad>` 1, `</s>` 2) or `[PAD]`
  (WordPiece: `[PAD]` 0). Library defaults are never used.
- `encode(texts, prefix, max_len)`: one id list per text; the prefix ("query: ") is prepended to
  the raw text; truncation keeps at most `max_len` ids *including* the special tokens, so the
  post-processor's `</s>` / `[SEP]` always survives.
- `pad(ids)`: right-pads to the longest list -> {"input_ids", "attention_mask"}, LongTensors
  (B, T); the mask is 1 on real tokens, 0 on padding.
- `__call__(texts, prefix, max_len)` = `pad(encode(...))`.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from tokenizers import Tokenizer as HFTokenizer

from minihbt.io.files import UserError, atomic_write_bytes, atomic_write_json

PAD_TOKENS = ("<pad>", "[PAD]")  # SentencePiece (XLM-R, e5), WordPiece (BERT, LaBSE)


class Tokenizer:
    def __init__(self, raw_json: str, source: str = "<memory>"):
        self.raw_json = raw_json  # kept verbatim so `save` writes the same bytes it read
        self.source = source
        try:
            self._tok = HFTokenizer.from_str(raw_json)
        except Exception as e:  # the Rust error names the bad JSON field
            raise UserError(f"{source}: not a valid Hugging Face tokenizer.json ({e})") from None
        added = sorted(self._tok.get_added_tokens_decoder().items())
        self.special_tokens = [t.content for _, t in added if t.special]
        padding = self._tok.padding
        if padding:
            self.pad_token, self.pad_id = padding["pad_token"], padding["pad_id"]
        else:
            found = [t for t in PAD_TOKENS if t in self.special_tokens]
            if not found:
                raise UserError(f"{source}: no padding entry and no special token "
                                f"{' or '.join(PAD_TOKENS)}; cannot tell the pad id")
            self.pad_token = found[0]
            self.pad_id = self._tok.token_to_id(self.pad_token)
        self._tok.no_padding()  # we pad ourselves, to the longest text of each batch
        self._max_len = None

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "Tokenizer":
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{path}: tokenizer file not found (expected a Hugging Face tokenizer.json)")
        return cls(path.read_text(encoding="utf-8"), str(path))

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def encode(self, texts: list[str], prefix: str = "", max_len: int = 512) -> list[list[int]]:
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, not one string")
        if max_len != self._max_len:
            # Truncation happens inside `tokenizers`, before the post-processor adds `<s> ... </s>`;
            # the library subtracts the special tokens from `max_len`, so both ends survive.
            self._tok.enable_truncation(max_length=max_len)
            self._max_len = max_len
        return [e.ids for e in self._tok.encode_batch([prefix + t for t in texts], add_special_tokens=True)]

    def pad(self, ids: list[list[int]]) -> dict[str, torch.Tensor]:
        T = max((len(x) for x in ids), default=0)
        input_ids = torch.full((len(ids), T), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(ids), T), dtype=torch.long)
        for i, x in enumerate(ids):
            input_ids[i, : len(x)] = torch.tensor(x, dtype=torch.long)
            attention_mask[i, : len(x)] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def __call__(self, texts: list[str], prefix: str = "", max_len: int = 512) -> dict[str, torch.Tensor]:
        return self.pad(self.encode(texts, prefix, max_len))

    def save(self, dir: str | os.PathLike, model_max_length: int = 512) -> None:
        """Write `tokenizer.json` verbatim, and a `tokenizer_config.json` that makes transformers'
        AutoTokenizer load the file as is (PreTrainedTokenizerFast) instead of rebuilding it."""
        dir = Path(dir)
        atomic_write_bytes(dir / "tokenizer.json", self.raw_json.encode("utf-8"))
        sp = self.pad_token == "<pad>"
        names = (("bos_token", "<s>"), ("eos_token", "</s>"), ("cls_token", "<s>"), ("sep_token", "</s>"),
                 ("unk_token", "<unk>"), ("mask_token", "<mask>")) if sp else \
                (("cls_token", "[CLS]"), ("sep_token", "[SEP]"), ("unk_token", "[UNK]"), ("mask_token", "[MASK]"))
        config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": model_max_length,
                  "pad_token": self.pad_token, "padding_side": "right"}
        config.update({k: v for k, v in names if v in self.special_tokens})
        atomic_write_json(dir / "tokenizer_config.json", config)
