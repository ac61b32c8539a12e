"""int8 inference for the encoder's Linear layers: int8 weights per output channel, int8 activations
quantised on the fly per token, exact integer products, fp32 out.

What is quantised (and what is not)
- every nn.Linear of the transformer (q, k, v, the attention output, both MLP matrices; the
  pooler too, where LaBSE uses it): its weight W (N, K) becomes int8 once, one scale per output
  channel (row of W); its input x (M, K) becomes int8 at each call, one scale per token (row of
  x). Both are symmetric (zero point 0):
      s_w[n] = max_k |W[n, k]| / Q_W    q_w = round(W / s_w[:, None])   (int8 in [-Q_W, Q_W], once)
      s_x[m] = max_k |x[m, k]| / 127    q_x = round(x / s_x[:, None])   (int8 in [-127, 127], per call)
      y[m, n] = (sum_k q_x[m, k] q_w[n, k]) * s_w[n] * s_x[m] + b[n]
  The integer sum is exact (|q| <= 127, K <= 3072: at most 127^2 * 3072 < 2^26), so the errors
  are the two roundings to int8 and the sum's final rounding to fp32; `round` is torch's (half to
  even); an all-zero row gets a tiny positive scale and q = 0. `int8_linear` below is that
  formula, line for line. Exact sums do not make int8 bit-reproducible across CPUs or batches: a
  last-bit change of x (another summation order upstream) can move it across a rounding boundary.
- bias correction (Nagel et al. 2019, "Data-Free Quantization", section 4.2): the weight's
  rounding E = W - s_w q_w is the same for every input, so on inputs with a large common part
  (every token's mean input mu) it adds the same error E mu to every output: a shift shared by
  all embeddings. Folding it into the bias, b' = b + E mu, cancels that part. A fine-tuned model
  needs it: fine-tuning moves weights by less than an int8 step, and without the correction its
  embeddings fall to cosine ~0.986 of fp32 (docs/PRECISION.md). mu comes from `input_means`, run
  by text_encoder.quantize on seeded random token ids (no text, so nothing is fitted to data).
- in fp32, as before: the embedding lookups, every LayerNorm, residual adds, GELU, attention
  (q k^T, softmax, the weighted sum of v: activations times activations), the biases, mean
  pooling and the L2 normalisation. So only weights-times-activations run in int8.

Why per token and per channel. A token's hidden state after a LayerNorm can have a few large
channels (BERT-style "outlier dimensions"), and the GELU output of the MLP is mostly small with
some large entries; one scale for a whole batch (per tensor) is set by the largest value of any
token, which leaves the other tokens few levels. One scale per token costs one max per row, and
per output channel is free (the GEMM applies it to each column). docs/PRECISION.md has the
measured choice (cosine to fp32 on real text, per tensor vs per token).

Q_W, the weight range, is 127 where the CPU's int8 GEMM sums products exactly and 63 where it
does not. CPUs with VNNI (AVX512-VNNI, AVX-VNNI, AMX) add u8 x s8 products straight into int32;
AVX2 alone has only `vpmaddubsw`, which adds two u8 x s8 products into a saturating int16, and
the activation goes in shifted to u8 (q_x + 128 <= 255, `onednn_mm`): 2 * 255 * 127 = 64,770
overflows 32,767, but 2 * 255 * 63 = 32,130 does not. `backend()` finds out by multiplying the
worst case once and comparing with the exact sum; the choice is part of `scheme()`, so of every
int8 cache key. (Whether the input goes in as u8 or s8 is not: both give the same exact sums.)

Why this implementation (oneDNN's `qlinear_pointwise`). torch's CPU build carries oneDNN's int8
GEMM as `torch.ops.onednn.qlinear_pointwise` (what inductor emits for quantised Linears): u8
activations with a zero point (128 here, so the integers are the symmetric ones), an int8 weight
packed once with per-channel scales, fp32 out, so s_w costs nothing and only s_x and b are one
pass after it. The input is u8, not int8, because oneDNN runs int8 inputs through its
reference kernel on AVX512-VNNI CPUs without AMX (8 s for one 640 x 384 x 1536 product, where
u8 takes ~8 ms); on AVX2 both take its jit GEMM. Where oneDNN has AMX, which multiplies s8 x s8,
the input is int8 instead: there oneDNN's u8 kernel turns the shifted sum sum_k (q_x + 128) q_w
into fp32 before it takes away the zero point's share, so it rounds sums past 2^24 (weight rows
with a large sum, K = 3072), and s8 is also faster (no shift, no share to take away); only tiny
products (M x N <= 256 outputs; an encoder's Linears have N >= 384) run the reference kernel then.
Measured on e5-small's shapes and
the alternatives (docs/PRECISION.md): `torch._int_mm` (the first version's) was >10x faster than
fp32 on a VNNI CPU but ~40x slower on AVX2 alone (a reference kernel); `torch.ao` dynamic quantisation
(deprecated for torchao) scales activations per tensor only; weight-only int8
(`_weight_int8pack_mm`) is slower than fp32 on CPU; torchao would be a new dependency. A torch
built without oneDNN, or whose oneDNN sums neither range exactly, multiplies the same integers
with `torch._int_mm` (or an int32 `torch.mm` where that refuses the shape): exact, but slower.
The oneDNN call is wrapped as an op of our own (`torch.ops.minihbt.onednn_mm`), so that
torch.compile (eval.py --compile) keeps it whole and fuses the per-token quantisation, GELU and
LayerNorm around it.

Contract
- `quantize_weight(w, qmax)` -> (q_w int8 (N, K), s_w fp32 (N,)).
- `quantize_rows(x, per)` -> (q_x int8 (M, K), s_x fp32 (M, 1)); per "token" (a scale per row) or
  "tensor" (one scale for all rows, broadcast to (M, 1)).
- `backend()` -> ("onednn_s8" | "onednn_u8" | "int_mm", Q_W), probed once; `weight_qmax()` -> Q_W.
- `Int8Weight.from_float(w)`: q_w, s_w and the packed GEMM operand; `w.matmul(q_x)` -> fp32
  (M, N) = (q_x q_w^T) * s_w.
- `int8_linear(x, w, bias, per)`: x (..., K) fp32 -> (..., N) fp32, as above.
- `Int8Linear.from_linear(lin, per, mean_x=None)`: an nn.Module with the quantised weight (buffers,
  no parameters: nothing here trains), its bias corrected with mean_x (K,) when given;
  `input_means(model, run)` -> {Linear: mean input (K,)} over what `run()` feeds them;
  `quantize_model(model, per, means=None)` swaps every nn.Linear of a model in place and returns it.
"""
from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

import torch
import torch.nn as nn

QMAX = 127          # activations: symmetric int8, [-127, 127], so -q is representable for every q
PER = ("token", "tensor")
TINY = 1e-12        # the scale of an all-zero row: q = 0 whatever it is
ONEDNN = hasattr(torch.ops.onednn, "qlinear_pointwise")


def quantize_weight(w: torch.Tensor, qmax: int = QMAX) -> tuple[torch.Tensor, torch.Tensor]:
    """Per output channel (row of W): s_w = max|W[n, :]| / qmax, q_w = round(W / s_w)."""
    w = w.detach().float()
    s_w = w.abs().amax(dim=1).clamp(min=TINY) / qmax
    return torch.round(w / s_w[:, None]).clamp(-qmax, qmax).to(torch.int8).contiguous(), s_w


def quantize_rows(x: torch.Tensor, per: str = "token") -> tuple[torch.Tensor, torch.Tensor]:
    """x (M, K) fp32 -> int8 and its scale (M, 1): per token s_x = max|x[m, :]| / 127, or one per tensor."""
    if per == "token":  # max |x[m, :]| as max(max x, -min x): no |x| temporary (M, K) to allocate
        amax = torch.maximum(x.amax(dim=1, keepdim=True), x.amin(dim=1, keepdim=True).neg_())
    elif per == "tensor":
        amax = torch.maximum(x.amax(), -x.amin()).expand(x.shape[0], 1)
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


def onednn_mm(q_x: torch.Tensor, packed: torch.Tensor, s_w: torch.Tensor, u8: bool = True) -> torch.Tensor:
    """oneDNN's int8 GEMM: q_x int8 (M, K), a weight packed by qlinear_prepack -> (q_x q_w^T) * s_w,
    fp32 (M, N). With u8, oneDNN gets q_x as unsigned bytes u = q_x + 128 with zero point 128, so
    it computes sum_k (u - 128) q_w, the same integers: without AMX its fast int8 kernels take u8
    inputs (an int8 input on an AVX512-VNNI CPU runs its reference kernel, ~360x the fp32 GEMM).
    q_x + 128 is q_x's bytes with the sign bit flipped (two's complement), one pass over bytes.
    Without u8 (AMX, which multiplies s8 x s8), q_x goes in as it is, zero point 0."""
    if u8:
        q_x = torch.bitwise_xor(q_x.view(torch.uint8), 128)  # uint8 (M, K), q_x + 128 in [1, 255]
    return torch.ops.minihbt.onednn_mm(q_x, packed, s_w)


if ONEDNN:
    # The GEMM as one op of our own: eager runs it as it is, and torch.compile (TextEncoder.compile)
    # calls it as an opaque kernel and fuses what is around it (the quantisation, GELU, LayerNorm);
    # inductor cannot lower qlinear_pointwise with an eagerly packed weight itself.
    @torch.library.custom_op("minihbt::onednn_mm", mutates_args=())
    def onednn_mm_op(x: torch.Tensor, packed: torch.Tensor, s_w: torch.Tensor) -> torch.Tensor:
        """x uint8 (M, K) = q_x + 128 or int8 q_x, packed q_w, s_w fp32 (N,) -> (q_x q_w^T) * s_w, fp32 (M, N)."""
        zero_point = 128 if x.dtype == torch.uint8 else 0
        zero = torch.zeros(len(s_w), dtype=torch.long)
        return torch.ops.onednn.qlinear_pointwise(x, 1.0, zero_point, packed, s_w, zero, None, 1.0, 0,
                                                  torch.float32, "none", [], "")

    @onednn_mm_op.register_fake
    def _(x, packed, s_w):  # what torch.compile traces with: the result's shape and dtype
        return x.new_empty((x.shape[0], s_w.shape[0]), dtype=torch.float32)


def onednn_has_amx() -> bool:
    """Whether oneDNN may use AMX here: the CPU has AMX tiles (torch's cpuinfo) and ONEDNN_MAX_CPU_ISA
    (or its old name DNNL_MAX_CPU_ISA) does not cap oneDNN below an AMX ISA."""
    cap = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "ALL").upper()
    tiles = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()
    return bool(tiles) and (cap == "ALL" or "AMX" in cap)


def exact_at_the_extremes(gemm: str, qmax: int) -> bool:
    """Whether `gemm` sums exactly with weights in [-qmax, qmax]: K = 3072 (the widest input of the
    supported models), N = 384 (the narrowest output), rows of +-127 against rows of +-qmax (int16
    saturation, sums past 2^24) and seeded random rows, against the int64 sums."""
    g = torch.Generator().manual_seed(0)
    q_x = torch.randint(-QMAX, QMAX + 1, (8, 3072), generator=g, dtype=torch.int8)
    q_w = torch.randint(-qmax, qmax + 1, (384, 3072), generator=g, dtype=torch.int8)
    q_x[0], q_x[1], q_w[0], q_w[1] = QMAX, -QMAX, qmax, -qmax
    got = onednn_mm(q_x, torch.ops.onednn.qlinear_prepack(q_w, None), torch.ones(384), u8=gemm == "onednn_u8")
    return torch.equal(got.double(), (q_x.long() @ q_w.long().t()).double())


@functools.cache
def backend() -> tuple[str, int]:
    """(GEMM, Q_W): the first of these that sums exactly at the extremes, else torch._int_mm (exact
    whatever the CPU, but slower): oneDNN with s8 inputs where it has AMX (its u8 path with a zero
    point rounds sums past 2^24 there), oneDNN with u8 inputs and 8-bit weights (VNNI), with 7-bit
    weights (AVX2 alone)."""
    if ONEDNN:
        for gemm, qmax in ([("onednn_s8", QMAX)] if onednn_has_amx() else []) + [("onednn_u8", QMAX),
                                                                               ("onednn_u8", 63)]:
            if exact_at_the_extremes(gemm, qmax):
                return gemm, qmax
    return "int_mm", QMAX


def weight_qmax() -> int:
    """Q_W: the weights' range, [-Q_W, Q_W], on this CPU (`backend`)."""
    return backend()[1]


class Int8Weight:
    """A quantised weight: q_w int8 (N, K), s_w fp32 (N,), and q_w packed for the GEMM (`backend`;
    oneDNN's prepack reads the raw buffer, so q_w must be contiguous)."""

    def __init__(self, q_w: torch.Tensor, s_w: torch.Tensor):
        self.q_w, self.s_w = q_w.contiguous(), s_w.float().contiguous()
        self.gemm = backend()[0]  # decided here, not per call (torch.compile traces matmul)
        self.onednn = self.gemm != "int_mm"
        self.packed = torch.ops.onednn.qlinear_prepack(self.q_w, None) if self.onednn else self.q_w.t().contiguous()

    @classmethod
    def from_float(cls, w: torch.Tensor) -> "Int8Weight":
        return cls(*quantize_weight(w, weight_qmax()))

    def matmul(self, q_x: torch.Tensor) -> torch.Tensor:
        """q_x int8 (M, K) -> (q_x q_w^T) * s_w, fp32 (M, N): the sums exact, then one fp32 rounding."""
        if self.onednn:
            return onednn_mm(q_x, self.packed, self.s_w, u8=self.gemm == "onednn_u8")
        return int_mm(q_x, self.packed).float().mul_(self.s_w)


def int8_linear(x: torch.Tensor, w: Int8Weight, bias: torch.Tensor | None, per: str = "token") -> torch.Tensor:
    """y = (q_x q_w^T) * s_w * s_x + b: x (..., K) fp32 -> (..., N) fp32."""
    shape = x.shape
    if x.numel() == 0:  # no rows (a max over nothing is undefined): an empty result of the right width
        return x.new_zeros(*shape[:-1], w.q_w.shape[0])
    q_x, s_x = quantize_rows(x.reshape(-1, shape[-1]).float(), per)   # int8 (M, K), (M, 1)
    y = w.matmul(q_x)                                                 # (q_x q_w^T) * s_w, fp32 (M, N)
    y = torch.addcmul(bias, y, s_x, out=y) if bias is not None else y.mul_(s_x)  # * s_x + b, in place
    return y.reshape(*shape[:-1], -1)


class Int8Linear(nn.Module):
    """An nn.Linear for inference with int8 weights (per output channel) and int8 activations (`per`)."""

    def __init__(self, w: Int8Weight, bias: torch.Tensor | None, per: str = "token"):
        super().__init__()
        if per not in PER:
            raise ValueError(f"per must be one of {PER}, got {per!r}")
        self.out_features, self.in_features = w.q_w.shape
        self.per, self.w = per, w
        self.register_buffer("q_w", w.q_w)  # in the state dict, so in the model's fingerprint
        self.register_buffer("s_w", w.s_w)
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())

    @classmethod
    def from_linear(cls, lin: nn.Linear, per: str = "token", mean_x: torch.Tensor | None = None) -> "Int8Linear":
        """With mean_x (K,), the mean input: b' = b + (W - s_w q_w) mean_x (bias correction)."""
        w = Int8Weight.from_float(lin.weight)
        bias = lin.bias
        if mean_x is not None:  # the weight's rounding error on the mean input, put back through the bias
            error = lin.weight.detach().double() - w.q_w.double() * w.s_w.double()[:, None]  # (N, K)
            bias = (0 if bias is None else bias.detach().double()) + error @ mean_x.double()
        return cls(w, bias, per)

    def forward(self, x):
        return int8_linear(x, self.w, self.bias, self.per)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, int8, per={self.per}"


def input_means(model: nn.Module, run) -> dict[nn.Linear, torch.Tensor]:
    """The mean input (K,) of every nn.Linear of `model`, over every row it sees while `run()` runs."""
    sums: dict[nn.Linear, list] = {}

    def add(lin, args, out):
        x = args[0].detach().reshape(-1, args[0].shape[-1]).double()  # (rows, K)
        total = sums.setdefault(lin, [0.0, 0])
        total[0], total[1] = total[0] + x.sum(0), total[1] + len(x)

    hooks = [m.register_forward_hook(add) for m in model.modules() if isinstance(m, nn.Linear)]
    try:
        with torch.no_grad():
            run()
    finally:
        for h in hooks:
            h.remove()
    return {lin: (s / n).float() for lin, (s, n) in sums.items()}


def quantize_model(model: nn.Module, per: str = "token", means: dict | None = None) -> nn.Module:
    """Replace every nn.Linear of `model` (in place) by an Int8Linear, its bias corrected where `means`
    (input_means) has the Linear's mean input; returns the model, in eval mode."""
    for name, child in list(model.named_children()):
        if isinstance(child, nn.Linear):
            if child.weight.device.type != "cpu":
                raise ValueError("int8 Linears run on the CPU")
            setattr(model, name, Int8Linear.from_linear(child, per, (means or {}).get(child)))
        else:
            quantize_model(child, per, means)
    return model.eval()


def scheme() -> str:
    """What an int8 embedding depends on besides the weights, for cache keys (text_encoder.py)."""
    gemm = "torch._int_mm" if backend()[0] == "int_mm" else "oneDNN qlinear"  # s8 or u8: the same sums
    return (f"int8 Linear: weights per output channel in [-{weight_qmax()}, {weight_qmax()}], activations "
            f"per token in [-{QMAX}, {QMAX}], symmetric; {gemm}")


# This file's own hash goes into an int8 encoder's fingerprint (text_encoder.py), so a change to
# the quantisation gets new embedding-cache keys by itself (as embed_cache.ENCODING_CODE does for
# the fp32 code) and fp32 keys do not depend on this file.
SOURCE_HASH = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


def is_quantized(model: nn.Module) -> bool:
    """Whether any module of `model` is an Int8Linear."""
    return any(isinstance(m, Int8Linear) for m in model.modules())
