"""The shared text encoder of the dual encoder: BERT / XLM-RoBERTa in plain torch.

Paper: Elmahdy, Lin, Ahmad 2024 (arXiv 2408.10536), sec. 3: one multilingual transformer encodes
queries and passages alike; score(q, p) = cos(E(q), E(p)). The transformer is the post-LayerNorm
encoder of Devlin et al. 2019 (BERT); XLM-R (Conneau et al. 2020) is the same network with other
position ids. Parameter names equal the Hugging Face `BertModel` / `XLMRobertaModel` names, so
loading a checkpoint is one checked loop over the state dict.

Contract
- `Encoder.forward(input_ids, attention_mask)`: LongTensors (B, T) -> last hidden states (B, T, H).
  Positions: BERT 0..T-1; XLM-R counts non-pad tokens from padding_idx + 1 (pad tokens keep
  position padding_idx), as transformers' `create_position_ids_from_input_ids`. Token type 0.
- `Encoder.pool(hidden, attention_mask)` -> (B, H): `mean` over tokens whose mask is 1
  (sentence-transformers' masked mean), `cls` the first token, `pooler` tanh(dense(CLS)) (LaBSE).
- `Encoder.embed(input_ids, attention_mask)` -> pool, then L2-normalised (B, H); keeps the graph,
  so training calls it.
- `Encoder.from_pretrained(dir)`: `config.json` + `model.safetensors` (or `pytorch_model.bin`,
  read with `torch.load(weights_only=True)`), pooling from `minihbt.json` (default `mean`). Strips a
  `bert.` / `roberta.` prefix, maps legacy LayerNorm `gamma`/`beta`, drops MLM heads (`cls.*`,
  `lm_head.*`) with a note. The pooler is always part of the model, as in transformers' default
  `BertModel`; a checkpoint without one is accepted only when the pooling does not read it (it is
  then initialised like transformers does, with a fixed seed, and a note says so). Any other
  missing, unexpected or wrongly shaped tensor is one `UserError` that lists them all.
- `load_encoder(name_or_dir)` -> `TextEncoder`, which adds the tokenizer, the "query: " /
  "passage: " prefixes and `encode(texts) -> np.float32 (n, H)`, L2-normalised, in input order.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save

from minihbt.files import UserError, atomic_dir, atomic_write_bytes, atomic_write_json
from minihbt.tokenizer import Tokenizer

POOLINGS = ("mean", "cls", "pooler")
MODEL_TYPES = {"bert": "BertModel", "xlm-roberta": "XLMRobertaModel", "roberta": "RobertaModel"}


@dataclass
class EncoderConfig:
    vocab_size: int
    model_type: str = "bert"  # "bert" (BERT, LaBSE, e5) | "xlm-roberta" / "roberta" (other positions)
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    pooling: str = "mean"  # from minihbt.json, not config.json
    normalize: bool = True

    @property
    def roberta_positions(self) -> bool:
        return self.model_type in ("xlm-roberta", "roberta")

    @property
    def max_tokens(self) -> int:
        """Longest input the position table allows (XLM-R spends padding_idx + 1 rows)."""
        offset = self.pad_token_id + 1 if self.roberta_positions else 0
        return self.max_position_embeddings - offset

    @classmethod
    def from_hf(cls, hf: dict, pooling: str = "mean", normalize: bool = True, source: str = "config.json"):
        if hf.get("model_type") not in MODEL_TYPES:
            raise UserError(f"{source}: model_type {hf.get('model_type')!r} is not supported "
                            f"(expected one of {', '.join(MODEL_TYPES)})")
        if hf.get("hidden_act", "gelu") != "gelu":
            raise UserError(f"{source}: hidden_act {hf['hidden_act']!r} is not supported "
                            f"(expected 'gelu', the erf form)")
        if hf.get("position_embedding_type", "absolute") != "absolute":
            raise UserError(f"{source}: position_embedding_type {hf['position_embedding_type']!r} "
                            f"is not supported (expected 'absolute')")
        if pooling not in POOLINGS:
            raise UserError(f"{source}: pooling {pooling!r} is not one of {', '.join(POOLINGS)}")
        names = {f.name for f in fields(cls)} - {"pooling", "normalize"}
        missing = sorted(n for n in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                                     "intermediate_size", "max_position_embeddings") if n not in hf)
        if missing:
            raise UserError(f"{source}: missing field(s) {', '.join(missing)}")
        config = cls(**{k: v for k, v in hf.items() if k in names}, pooling=pooling, normalize=normalize)
        if config.hidden_size % config.num_attention_heads:
            raise UserError(f"{source}: hidden_size {config.hidden_size} is not divisible by "
                            f"num_attention_heads {config.num_attention_heads}")
        return config

    def to_hf(self) -> dict:
        hf = {k: v for k, v in asdict(self).items() if k not in ("pooling", "normalize")}
        hf.update(architectures=[MODEL_TYPES[self.model_type]], hidden_act="gelu",
                  position_embedding_type="absolute", initializer_range=0.02)
        if self.roberta_positions:
            hf.update(bos_token_id=0, eos_token_id=2)
        return hf


class Embeddings(nn.Module):
    def __init__(self, c: EncoderConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size, padding_idx=c.pad_token_id)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size,
                                                padding_idx=c.pad_token_id if c.roberta_positions else None)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.hidden_dropout_prob)
        self.roberta_positions = c.roberta_positions
        self.pad_token_id = c.pad_token_id

    def forward(self, input_ids):
        B, T = input_ids.shape
        if self.roberta_positions:
            # XLM-R: real tokens are numbered padding_idx+1, padding_idx+2, ...; pads stay padding_idx
            real = input_ids.ne(self.pad_token_id).long()
            positions = torch.cumsum(real, dim=1) * real + self.pad_token_id  # (B, T)
        else:
            positions = torch.arange(T, device=input_ids.device).expand(B, T)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)
        x = x + self.token_type_embeddings.weight[0]  # one segment: token type 0 everywhere
        return self.dropout(self.LayerNorm(x))


class SelfAttention(nn.Module):
    """Multi-head attention; padding keys are masked out (`attention.self` in HF)."""

    def __init__(self, c: EncoderConfig):
        super().__init__()
        self.n_head = c.num_attention_heads
        self.query = nn.Linear(c.hidden_size, c.hidden_size)
        self.key = nn.Linear(c.hidden_size, c.hidden_size)
        self.value = nn.Linear(c.hidden_size, c.hidden_size)
        self.dropout_p = c.attention_probs_dropout_prob

    def forward(self, x, key_mask):
        B, T, H = x.shape
        # (B, T, H) -> (B, n_head, T, H / n_head)
        q, k, v = (lin(x).view(B, T, self.n_head, H // self.n_head).transpose(1, 2)
                   for lin in (self.query, self.key, self.value))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask,
                                           dropout_p=self.dropout_p if self.training else 0.0)
        return y.transpose(1, 2).reshape(B, T, H)  # (B, n_head, T, H / n_head) -> (B, T, H)


class AddNorm(nn.Module):
    """dense -> dropout -> + residual -> LayerNorm: the post-LN step after attention and the MLP."""

    def __init__(self, c: EncoderConfig, d_in: int):
        super().__init__()
        self.dense = nn.Linear(d_in, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.dropout = nn.Dropout(c.hidden_dropout_prob)

    def forward(self, x, residual):
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class Attention(nn.Module):
    def __init__(self, c: EncoderConfig):
        super().__init__()
        self.self = SelfAttention(c)  # the name HF checkpoints use
        self.output = AddNorm(c, c.hidden_size)

    def forward(self, x, key_mask):
        return self.output(self.self(x, key_mask), x)


class Intermediate(nn.Module):
    def __init__(self, c: EncoderConfig):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.intermediate_size)

    def forward(self, x):
        return F.gelu(self.dense(x))  # exact (erf) GELU, as BERT's "gelu"


class Layer(nn.Module):
    def __init__(self, c: EncoderConfig):
        super().__init__()
        self.attention = Attention(c)
        self.intermediate = Intermediate(c)
        self.output = AddNorm(c, c.intermediate_size)

    def forward(self, x, key_mask):
        x = self.attention(x, key_mask)
        return self.output(self.intermediate(x), x)


class Layers(nn.Module):
    def __init__(self, c: EncoderConfig):
        super().__init__()
        self.layer = nn.ModuleList(Layer(c) for _ in range(c.num_hidden_layers))


class Pooler(nn.Module):
    def __init__(self, c: EncoderConfig):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.hidden_size)

    def forward(self, hidden):
        return torch.tanh(self.dense(hidden[:, 0]))


class Encoder(nn.Module):
    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.encoder = Layers(config)
        self.pooler = Pooler(config)
        self.apply(_init_weights)

    def forward(self, input_ids, attention_mask):
        # (B, T) -> (B, 1, 1, T): every query may attend to every real key, never to padding.
        # A batch without padding (common once encode sorts by length) needs no mask at all,
        # which lets SDPA take its fastest kernel.
        key_mask = None if bool(attention_mask.all()) else attention_mask.bool()[:, None, None, :]
        x = self.embeddings(input_ids)
        for layer in self.encoder.layer:
            x = layer(x, key_mask)
        return x

    def pool(self, hidden, attention_mask):
        pooling = self.config.pooling
        if pooling == "mean":
            m = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T) -> (B, T, 1)
            return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
        if pooling == "cls":
            return hidden[:, 0]
        return self.pooler(hidden)

    def embed(self, input_ids, attention_mask):
        e = self.pool(self.forward(input_ids, attention_mask), attention_mask)
        return F.normalize(e, dim=-1) if self.config.normalize else e

    @classmethod
    def from_pretrained(cls, dir: str | os.PathLike, pooling: str | None = None) -> "Encoder":
        dir = Path(dir)
        meta = read_meta(dir)
        config = EncoderConfig.from_hf(_read_json(dir / "config.json"), pooling=pooling or meta["pooling"],
                                       normalize=meta["normalize"], source=str(dir / "config.json"))
        model = cls.empty(config)
        model.load_hf_state_dict(read_state_dict(dir), source=str(dir))
        return model.eval()

    @classmethod
    def empty(cls, config: EncoderConfig) -> "Encoder":
        """A model with uninitialised weights, for `load_hf_state_dict` to fill (skips a slow random init)."""
        with torch.device("meta"):
            model = cls(config)
        return model.to_empty(device="cpu")

    def load_hf_state_dict(self, sd: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
        """Copy a Hugging Face state dict into the model, checking every name and shape."""
        sd, notes = _hf_names(sd)
        own = self.state_dict()
        pooler = [k for k in own if k.startswith("pooler.")]
        if not any(k in sd for k in pooler) and self.config.pooling != "pooler":
            # transformers' default BertModel has a pooler; keeping one makes our saves complete
            g = torch.Generator().manual_seed(0)
            sd["pooler.dense.weight"] = torch.randn(own["pooler.dense.weight"].shape, generator=g) * 0.02
            sd["pooler.dense.bias"] = torch.zeros_like(own["pooler.dense.bias"])
            notes.append(f"no pooler in the checkpoint; pooling {self.config.pooling!r} does not use it, "
                         f"so it was initialised (seed 0)")
        missing = sorted(set(own) - set(sd))
        unexpected = sorted(set(sd) - set(own))
        wrong = sorted(f"{k} {tuple(sd[k].shape)} (expected {tuple(own[k].shape)})"
                       for k in set(sd) & set(own) if sd[k].shape != own[k].shape)
        problems = [f"{what}: {_short(names)}" for what, names in
                    (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if names]
        if problems:
            raise UserError(f"{source}: weights do not match config.json; " + "; ".join(problems))
        # assign: take the loaded tensors as the parameters instead of copying 470 MB into fresh ones
        self.load_state_dict({k: sd[k].to(own[k].device, own[k].dtype).contiguous() for k in own}, assign=True)
        for note in notes:
            print(f"note: {source}: {note}", file=sys.stderr)

    def save_pretrained(self, dir: str | os.PathLike) -> None:
        """config.json + model.safetensors (fp32), loadable by transformers' AutoModel; each file atomic."""
        dir = Path(dir)
        sd = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in self.state_dict().items()}
        atomic_write_json(dir / "config.json", self.config.to_hf())
        atomic_write_bytes(dir / "model.safetensors", save(sd, metadata={"format": "pt"}))


def _init_weights(m: nn.Module) -> None:
    # transformers' BERT init, for a model built from a config instead of loaded
    if isinstance(m, (nn.Linear, nn.Embedding)):
        nn.init.normal_(m.weight, std=0.02)
    if isinstance(m, nn.Linear):
        nn.init.zeros_(m.bias)


def _hf_names(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Map checkpoint names onto ours: strip `bert.`/`roberta.`, rename `gamma`/`beta`, drop heads."""
    out, dropped = {}, []
    for k, v in sd.items():
        for prefix in ("bert.", "roberta."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        if k.endswith("LayerNorm.gamma"):
            k = k[: -len("gamma")] + "weight"
        elif k.endswith("LayerNorm.beta"):
            k = k[: -len("beta")] + "bias"
        if k.startswith(("cls.", "lm_head.")):
            dropped.append(k)  # pretraining heads: no pooling reads them
            continue
        if k.endswith("position_ids") or k.endswith("token_type_ids"):
            continue  # buffers older transformers versions saved; recomputed here
        out[k] = v
    notes = [f"ignored the pretraining head ({_short(dropped)}); no pooling uses it"] if dropped else []
    return out, notes


def _short(names: list[str], n: int = 8) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"{path}: not found (expected a Hugging Face model directory)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: invalid JSON ({e})") from None


def read_meta(dir: Path) -> dict:
    """minihbt.json with defaults: mean pooling, normalised, no prefixes."""
    meta = {"pooling": "mean", "normalize": True, "prefixes": {"query": "", "passage": ""}}
    if (dir / "minihbt.json").is_file():
        meta.update(_read_json(dir / "minihbt.json"))
        bad = set(meta["prefixes"]) ^ {"query", "passage"}
        if bad:
            raise UserError(f"{dir / 'minihbt.json'}: prefixes must have exactly the keys query and passage")
    return meta


def read_state_dict(dir: Path) -> dict[str, torch.Tensor]:
    if (dir / "model.safetensors").is_file():
        return load_file(dir / "model.safetensors")
    if (dir / "pytorch_model.bin").is_file():
        try:
            return torch.load(dir / "pytorch_model.bin", map_location="cpu", weights_only=True)
        except Exception as e:
            raise UserError(f"{dir / 'pytorch_model.bin'}: cannot be read as plain tensors ({e})") from None
    raise UserError(f"{dir}: no model.safetensors or pytorch_model.bin")


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
        """A complete model directory, replaced atomically: HF weights + config, tokenizer,
        minihbt.json, and the sentence-transformers module files."""
        meta = {"pooling": self.model.config.pooling, "normalize": self.model.config.normalize,
                "prefixes": self.prefixes}
        prov = provenance if provenance is not None else self.meta.get("provenance")
        if prov is not None:
            meta["provenance"] = prov
        with atomic_dir(dir) as tmp:
            self.model.save_pretrained(tmp)
            self.tokenizer.save(tmp, model_max_length=self.model.config.max_tokens)
            atomic_write_json(tmp / "minihbt.json", meta)
            _write_sentence_transformers(tmp, self.model, self.prefixes)
        self.meta = meta


def _write_sentence_transformers(dir: Path, model: Encoder, prefixes: dict[str, str]) -> None:
    """modules.json and friends: Transformer -> Pooling (-> Dense tanh for LaBSE's pooler) -> Normalize."""
    c = model.config
    H = c.hidden_size
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]
    pool_mode = {"mean": "mean", "cls": "cls", "pooler": "cls"}[c.pooling]
    atomic_write_json(dir / "1_Pooling" / "config.json", {
        "word_embedding_dimension": H, "pooling_mode_cls_token": pool_mode == "cls",
        "pooling_mode_mean_tokens": pool_mode == "mean", "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False, "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": False, "include_prompt": True})
    modules.append({"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"})
    if c.pooling == "pooler":
        # sentence-transformers writes LaBSE's pooler as a Dense layer with tanh after CLS pooling
        atomic_write_json(dir / "2_Dense" / "config.json", {
            "in_features": H, "out_features": H, "bias": True,
            "activation_function": "torch.nn.modules.activation.Tanh"})
        dense = {"linear.weight": model.pooler.dense.weight.detach().cpu().float().contiguous(),
                 "linear.bias": model.pooler.dense.bias.detach().cpu().float().contiguous()}
        atomic_write_bytes(dir / "2_Dense" / "model.safetensors", save(dense, metadata={"format": "pt"}))
        modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    if c.normalize:
        modules.append({"idx": len(modules), "name": str(len(modules)), "path": "",
                        "type": "sentence_transformers.models.Normalize"})
    atomic_write_json(dir / "modules.json", modules)
    atomic_write_json(dir / "sentence_bert_config.json", {"max_seq_length": c.max_tokens, "do_lower_case": False})
    atomic_write_json(dir / "config_sentence_transformers.json", {
        "prompts": dict(prefixes), "default_prompt_name": None, "similarity_fn_name": "cosine"})


def load_encoder(name_or_dir: str | os.PathLike, device: str = "cpu") -> TextEncoder:
    """A model directory, or a manifest name such as "e5-small" (fetched and converted once)."""
    path = Path(name_or_dir)
    if not path.is_dir():
        if os.sep in str(name_or_dir) or not str(name_or_dir):
            raise UserError(f"{name_or_dir}: model directory not found")
        from minihbt.data import model_dir  # late: data imports convert, which imports this module
        path = model_dir(str(name_or_dir))
    meta = read_meta(path)
    model = Encoder.from_pretrained(path).to(device)
    tokenizer = Tokenizer.from_file(path / "tokenizer.json")
    return TextEncoder(model, tokenizer, meta["prefixes"], meta)
