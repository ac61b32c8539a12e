"""The shared text encoder of the dual encoder: BERT / XLM-RoBERTa in plain torch.

Paper: Elmahdy, Lin, Ahmad 2024 (arXiv 2408.10536), sec. 3: one multilingual transformer encodes
queries and passages alike; score(q, p) = cos(E(q), E(p)). The transformer is the post-LayerNorm
encoder of Devlin et al. 2019 (BERT); XLM-R (Conneau et al. 2020) is the same network with other
position ids. Parameter names equal the Hugging Face `BertModel` / `XLMRobertaModel` names, so
loading a checkpoint (minihbt/io/hf_format.py) is one checked loop over the state dict. This file
holds the network only: no file I/O.

Contract
- `Encoder.forward(input_ids, attention_mask)`: LongTensors (B, T) -> last hidden states (B, T, H).
  Positions: BERT 0..T-1; XLM-R counts non-pad tokens from padding_idx + 1 (pad tokens keep
  position padding_idx), as transformers' `create_position_ids_from_input_ids`. Token type 0.
- `Encoder.pool(hidden, attention_mask)` -> (B, H): `mean` over tokens whose mask is 1
  (sentence-transformers' masked mean), `cls` the first token, `pooler` tanh(dense(CLS)) (LaBSE).
- `Encoder.embed(input_ids, attention_mask)` -> pool, then L2-normalised (B, H); keeps the graph,
  so training calls it.
- `EncoderConfig.from_hf(config.json dict)` / `to_hf()`: the Hugging Face config fields; an
  unsupported model type, activation or position embedding is a `UserError`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

from minihbt.io.files import UserError

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
        if e.dtype == torch.bfloat16:  # the pooler's Linear under bf16 autocast: normalise in fp32
            e = e.float()
        return F.normalize(e, dim=-1) if self.config.normalize else e

    @classmethod
    def empty(cls, config: EncoderConfig) -> "Encoder":
        """A model with uninitialised weights, for `hf_format.load_hf_state_dict` to fill (skips a slow random init)."""
        with torch.device("meta"):
            model = cls(config)
        return model.to_empty(device="cpu")

def _init_weights(m: nn.Module) -> None:
    # transformers' BERT init, for a model built from a config instead of loaded
    if isinstance(m, (nn.Linear, nn.Embedding)):
        nn.init.normal_(m.weight, std=0.02)
    if isinstance(m, nn.Linear):
        nn.init.zeros_(m.bias)
