"""int8 inference for the encoder's Linear layers: int8 weights per output channel, int8 activations
quantised on the fly per token, int32 products, fp32 out.

What is quantised (and what is not)
- every nn.Linear of the transformer (q, k, v, the attention output, both MLP matrices; the
  pooler too, where LaBSE uses it): its weight W (N, K) becomes int8 once, one scale per output
  channel (row of W); its input x (M, K) becomes int8 at each call, one scale per token (row of
  x). Both are symmetric (zero point 0) over [-127, 127]:
      s_w[n] = max_k |W[n, k]| / 127     q_w = round(W / s_w[:, None])      (int8, once)
      s_x[m] = max_k |x[m, k]| / 127     q_x = round(x / s_x[:, None])      (int8, per call)
      y[m, n] = (sum_k q_x[m, k] q_w[n, k]) * s_x[m] * s_w[n] + b[n]
  The sum is exact in int32 (|q| <= 127, K <= 3072: at most 127^2 * 3072 < 2^26), so the only
  errors are the two roundings to int8; `round` is torch's (half to even), the clamp to
  [-127, 127] is implied by the scale (an all-zero row gets a tiny positive scale and q = 0).
  `int8_linear` below is that formula, line for line.
- in fp32, as before: the embedding lookups, every LayerNorm, residual adds, GELU, attention
  (q k^T, softmax, the weighted sum of v: activations times activations), the biases, mean
  pooling and the L2 normalisation. So only weights-times-activations run in int8.

Why per token and per channel. A token's hidden state after a LayerNorm can have a few large
channels (BERT-style "outlier dimensions"), and the GELU output of the MLP is mostly small with
some large entries; one scale for a whole batch (per tensor) is set by the largest value of any
token, which leaves the other tokens few levels. One scale per token costs one extra max per
row, and per output channel is free (the scale multiplies a column of the result). The
measured choice is in docs/PRECISION.md (cosine to fp32 on real text, per tensor vs per token).

Why this implementation (`torch._int_mm`). torch ships an int8 x int8 -> int32 matrix product,
`torch._int_mm`, which on x86 CPUs with VNNI runs oneDNN's int8 GEMM; the quantisation around it
is a few plain tensor ops (as few as possible: each op is a pass over memory and, with 2 threads,
a synchronisation point). The alternatives, measured on the same shapes (docs/PRECISION.md):
`torch.ao.quantization.quantize_dynamic` (fbgemm / x86 engines; deprecated in favour of torchao)
quantises activations per tensor only, and its packed GEMM was slower than `_int_mm` here;
`torch.ops.aten._weight_int8pack_mm` is weight-only int8 (fp32 activations), slower than fp32
on CPU; torchao would be a new dependency for what these few lines do. Where `_int_mm` refuses
a shape or a device (it wants M > 16 on CUDA, for example), the same integers are multiplied
with an int32 `torch.mm`, slower but bit-identical.

Contract
- `quantize_weight(w)` -> (q_w int8 (N, K), s_w fp32 (N,)).
- `quantize_rows(x, per)` -> (q_x int8 (M, K), s_x fp32 (M, 1)); per "token" (a scale per row) or
  "tensor" (one scale for all rows, broadcast to (M, 1)).
- `int8_linear(x, q_w_t, s_w, bias, per)`: x (..., K) fp32 -> (..., N) fp32, as above.
- `Int8Linear.from_linear(lin, per)`: an nn.Module with the quantised weight (buffers, no
  parameters: nothing here trains); `quantize_model(model, per)` swaps every nn.Linear of a
  model in place and returns it.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn as nn

QMAX = 127          # symmetric int8: [-127, 127], so -q is representable for every q
PER = ("token", "tensor")
TINY = 1e-12        # the scale of an all-zero row: q = 0 whatever it is


def quantize_weight(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per output channel (row of W): s_w = max|W[n, :]| / 127, q_w = round(W / s_w)."""
    w = w.detach().float()
    s_w = w.abs().amax(dim=1).clamp(min=TINY) / QMAX
    return torch.round(w / s_w[:, None]).clamp(-QMAX, QMAX).to(torch.int8), s_w


def quantize_rows(x: torch.Tensor, per: str = "token") -> tuple[torch.Tensor, torch.Tensor]:
    """x (M, K) fp32 -> int8 and its scale (M, 1): per token s_x = max|x[m, :]| / 127, or one per tensor."""
    if per == "token":
        amax = x.abs().amax(dim=1, keepdim=True)  # max |x[m, :]| (linalg.vector_norm(inf) is ~15x slower)
    elif per == "tensor":
        amax = x.abs().amax().expand(x.shape[0], 1)
    else:
        raise ValueError(f"per must be one of {PER}, got {per!r}")
    s_x = amax.clamp(min=TINY) / QMAX
    # |x / s_x| <= 127 up to rounding, so round() stays in [-127, 127]: no clamp pass is needed
    return torch.round_(x / s_x).to(torch.int8), s_x


def int_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """int8 (M, K) @ int8 (K, N) -> int32 (M, N), exact: torch._int_mm where it takes the shape."""
    try:
        return torch._int_mm(a, b)
    except RuntimeError:
        return torch.mm(a.to(torch.int32), b.to(torch.int32))


def int8_linear(x: torch.Tensor, q_w_t: torch.Tensor, s_w: torch.Tensor, bias: torch.Tensor | None,
                per: str = "token") -> torch.Tensor:
    """y = (q_x @ q_w^T) * s_x * s_w + b: x (..., K) fp32, q_w_t int8 (K, N), s_w (N,), bias (N,) or None."""
    shape = x.shape
    q_x, s_x = quantize_rows(x.reshape(-1, shape[-1]).float(), per)   # int8 (M, K), (M, 1)
    acc = int_mm(q_x, q_w_t)                                          # int32 (M, N), exact
    y = acc.float().mul_(s_x)                                         # back to fp32: the token's scale,
    y = torch.addcmul(bias, y, s_w) if bias is not None else y.mul_(s_w)   # the channel's, + b
    return y.reshape(*shape[:-1], -1)


class Int8Linear(nn.Module):
    """An nn.Linear for inference with int8 weights (per output channel) and int8 activations (`per`)."""

    def __init__(self, q_w_t: torch.Tensor, s_w: torch.Tensor, bias: torch.Tensor | None, per: str = "token"):
        super().__init__()
        if per not in PER:
            raise ValueError(f"per must be one of {PER}, got {per!r}")
        self.in_features, self.out_features = q_w_t.shape
        self.per = per
        self.register_buffer("q_w_t", q_w_t.contiguous())  # (K, N): the layout _int_mm multiplies fastest
        self.register_buffer("s_w", s_w)
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())

    @classmethod
    def from_linear(cls, lin: nn.Linear, per: str = "token") -> "Int8Linear":
        q_w, s_w = quantize_weight(lin.weight)
        return cls(q_w.t(), s_w, lin.bias, per)

    def forward(self, x):
        return int8_linear(x, self.q_w_t, self.s_w, self.bias, self.per)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, int8, per={self.per}"


def quantize_model(model: nn.Module, per: str = "token") -> nn.Module:
    """Replace every nn.Linear of `model` (in place) by an Int8Linear; returns the model, in eval mode."""
    for name, child in list(model.named_children()):
        if isinstance(child, nn.Linear):
            setattr(model, name, Int8Linear.from_linear(child, per).to(child.weight.device))
        else:
            quantize_model(child, per)
    return model.eval()


SCHEME = "int8 Linear: weights per output channel, activations per token, symmetric [-127, 127]"
# This file's own hash goes into an int8 encoder's fingerprint (text_encoder.py), so a change to
# the quantisation gets new embedding-cache keys by itself (as embed_cache.ENCODING_CODE does for
# the fp32 code) and fp32 keys do not depend on this file.
SOURCE_HASH = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


def is_quantized(model: nn.Module) -> bool:
    """Whether any module of `model` is an Int8Linear."""
    return any(isinstance(m, Int8Linear) for m in model.modules())
