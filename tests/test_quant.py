"""minihbt.quant: the int8 Linear against a float64 numpy hand computation of the same quantisation
(the integers exactly, then the scales and outputs), int8 e5-small embeddings against fp32 on
real MLQA-R text, and the dtype in every cache key (int8 and fp32 never share an entry)."""
import copy

import numpy as np
import pytest
import torch

from minihbt import quant
from minihbt.io import embed_cache
from minihbt.io.files import UserError
from minihbt.text_encoder import TextEncoder, load_encoder, quantize
from test_hf_format import TEXTS
from test_transformer import GOLDEN


def hand_quantize(a: np.ndarray, per_row: bool, qmax: int = 127):
    """numpy, float64: s = max|a| / qmax per row (or over all of a), q = round(a / s) (half to even)."""
    a = a.astype(np.float64)
    amax = np.abs(a).max(axis=1, keepdims=True) if per_row else np.full((len(a), 1), np.abs(a).max())
    s = np.maximum(amax, quant.TINY) / qmax
    return np.clip(np.round(a / s), -qmax, qmax), s, a / s


def assert_same_integers(q: torch.Tensor, ref: np.ndarray, quotient: np.ndarray):
    """Equal integers, except where the float64 quotient is within 1e-5 of a rounding boundary (x.5):
    torch divides in float32, so there (and only there) the two may round to neighbours."""
    q = q.numpy().astype(np.int64)
    differ = q != ref
    near_tie = np.abs(np.abs(quotient - np.floor(quotient)) - 0.5) < 1e-5
    assert not (differ & ~near_tie).any()
    assert np.abs(q - ref).max() <= 1 and differ.sum() <= 2


def sample(M=37, K=96, N=48, seed=0):
    """Activations with two outlier channels (as after a LayerNorm), a weight and a bias."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(M, K, generator=g)
    x[:, 5] *= 20
    x[:, 70] *= -8
    x[3] = 0  # an all-zero token: scale TINY, all q = 0
    return x, torch.randn(N, K, generator=g) * 0.05, torch.randn(N, generator=g)


def exact_sums(q_x: torch.Tensor, q_w: torch.Tensor) -> np.ndarray:
    """sum_k q_x[m, k] q_w[n, k] in int64 (numpy), then rounded once to float32 as the GEMM's output is."""
    return (q_x.numpy().astype(np.int64) @ q_w.numpy().astype(np.int64).T).astype(np.float32)


@pytest.mark.parametrize("per", quant.PER)
def test_int8_linear_is_the_hand_computation(per):
    x, w, b = sample()
    qmax = quant.weight_qmax()
    W = quant.Int8Weight.from_float(w)
    q_x, s_x = quant.quantize_rows(x, per)
    hq_w, hs_w, quot_w = hand_quantize(w.numpy(), per_row=True, qmax=qmax)
    hq_x, hs_x, quot_x = hand_quantize(x.numpy(), per_row=per == "token")
    # 1. the integers: int8, in [-qmax, qmax] and [-127, 127], equal to the hand computation
    assert W.q_w.dtype == torch.int8 and q_x.dtype == torch.int8
    assert_same_integers(W.q_w, hq_w, quot_w)
    assert_same_integers(q_x, hq_x, quot_x)
    assert (q_x[3] == 0).all()
    # the integer product is exact: with unit weight scales, the int64 sums rounded to float32
    unit = quant.Int8Weight(W.q_w, torch.ones(len(w)))
    np.testing.assert_array_equal(unit.matmul(q_x).numpy(), exact_sums(q_x, W.q_w))
    # 2. the scales, fp32 against float64: max|row| / qmax (weights), / 127 (activations)
    np.testing.assert_allclose(W.s_w.numpy(), hs_w[:, 0], rtol=1e-6)
    np.testing.assert_allclose(s_x.numpy(), hs_x, rtol=1e-6)
    # 3. the output: (q_x q_w^T) s_w s_x + b, from torch's integers, in float64
    y = quant.int8_linear(x, W, b, per)
    ref = exact_sums(q_x, W.q_w).astype(np.float64) * hs_w[:, 0] * hs_x + b.numpy()
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-5, atol=1e-5)
    # and the module does the same, on (B, T, K) inputs
    m = quant.Int8Linear.from_linear(_linear(w, b), per)
    np.testing.assert_array_equal(m(x.reshape(1, 37, 96)).reshape(37, 48).numpy(), y.numpy())
    assert not list(m.parameters())  # buffers only: nothing to train
    assert m(torch.zeros(2, 0, 96)).shape == (2, 0, 48)  # no rows: an empty result of the right width


@pytest.mark.parametrize("qmax", [63, 127])
def test_integer_sums_are_exact_at_the_extremes(qmax):
    """K = 3072 (the widest e5 / XLM-R input), activations +-127: exact for the weight range that
    weight_qmax() picks (and for 63 everywhere); 127 only where the probe found it exact."""
    if qmax > quant.weight_qmax():
        pytest.skip(f"this CPU's int8 GEMM saturates 8-bit weights: weights are in [-{quant.weight_qmax()}, ...]")
    g = torch.Generator().manual_seed(1)
    a = torch.randint(-127, 128, (40, 3072), generator=g, dtype=torch.int8)
    a[0], a[1] = 127, -127
    q_w = torch.randint(-qmax, qmax + 1, (24, 3072), generator=g, dtype=torch.int8)
    q_w[0], q_w[1] = qmax, -qmax
    got = quant.Int8Weight(q_w, torch.ones(24)).matmul(a)
    np.testing.assert_array_equal(got.numpy(), exact_sums(a, q_w))
    assert got[0, 0] == 127 * qmax * 3072 and got[0, 1] == -127 * qmax * 3072
    np.testing.assert_array_equal(quant.int_mm(a, q_w.t().contiguous()).numpy(),
                                  a.numpy().astype(np.int64) @ q_w.numpy().astype(np.int64).T)


def test_weight_qmax_is_the_widest_exact_range():
    """The probe's answer holds: at weight_qmax() the worst case is exact; above it (if any), it is not."""
    qmax = quant.weight_qmax()
    assert qmax in (63, 127)
    q_x = torch.full((3, 256), 127, dtype=torch.int8)
    for r, exact in ((qmax, True), (127, qmax == 127)):
        q_w = torch.full((2, 256), r, dtype=torch.int8)
        got = quant.Int8Weight(q_w, torch.ones(2)).matmul(q_x)
        assert torch.equal(got, torch.from_numpy(exact_sums(q_x, q_w))) == exact


def test_per_tensor_outliers_cost_levels_per_token_keeps_them():
    """Why per token: with one outlier token the per-tensor scale leaves the others few levels."""
    x, w, b = sample()
    x[10] *= 50
    exact = torch.nn.functional.linear(x, w, b)
    err = {per: (quant.Int8Linear.from_linear(_linear(w, b), per)(x) - exact).abs().max(1).values
           for per in quant.PER}
    others = torch.arange(len(x)) != 10
    assert (err["token"][others] < err["tensor"][others]).float().mean() > 0.9


def _linear(w, b):
    lin = torch.nn.Linear(w.shape[1], w.shape[0])
    lin.weight.data, lin.bias.data = w.clone(), b.clone()
    return lin


def test_quantize_model_swaps_every_linear_and_keeps_the_rest_fp32():
    te = load_encoder(GOLDEN / "tiny-bert", dtype="int8")
    mods = list(te.model.modules())
    assert not any(isinstance(m, torch.nn.Linear) for m in mods)
    assert sum(isinstance(m, quant.Int8Linear) for m in mods) == 6 * te.model.config.num_hidden_layers + 1
    assert all(p.dtype == torch.float32 for p in te.model.parameters())  # embeddings, LayerNorms
    ref = load_encoder(GOLDEN / "tiny-bert")
    E, F = te.encode(TEXTS, kind="passage"), ref.encode(TEXTS, kind="passage")
    np.testing.assert_allclose(np.linalg.norm(E, axis=1), 1.0, atol=1e-5)
    assert np.abs(E - F).max() > 1e-6 and (E * F).sum(1).min() > 0.99  # int8 ran, and close


def test_input_means_are_the_mean_input_of_each_linear():
    g = torch.Generator().manual_seed(1)
    a, b = torch.nn.Linear(6, 5), torch.nn.Linear(5, 3)
    model = torch.nn.Sequential(a, torch.nn.GELU(), b)
    x = torch.randn(4, 7, 6, generator=g)  # (batch, tokens, K): every token is a row
    means = quant.input_means(model, lambda: model(x))
    h = torch.nn.functional.gelu(a(x)).detach()
    np.testing.assert_allclose(means[a].numpy(), x.reshape(-1, 6).double().mean(0).numpy(), atol=1e-6)
    np.testing.assert_allclose(means[b].numpy(), h.reshape(-1, 5).double().mean(0).numpy(), atol=1e-6)
    assert not a._forward_hooks and not b._forward_hooks  # the hooks are gone


def test_bias_correction_is_the_hand_computation():
    """b' = b + (W - s_w q_w) mu, in float64 numpy from the hand quantisation of W."""
    x, w, b = sample()
    mu = x.mean(0)
    qmax = quant.weight_qmax()
    q_w, s_w, _ = hand_quantize(w.numpy(), per_row=True, qmax=qmax)
    want = b.numpy().astype(np.float64) + (w.numpy().astype(np.float64) - q_w * s_w) @ mu.numpy().astype(np.float64)
    got = quant.Int8Linear.from_linear(_linear(w, b), mean_x=mu).bias
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(quant.Int8Linear.from_linear(_linear(w, b)).bias.numpy(), b.numpy())


def test_bias_correction_cancels_the_error_shared_by_every_row():
    """Inputs with a large common part (every row mu + small noise): the weight's rounding adds
    about the same error E mu to every output row; corrected, the mean error over rows is gone,
    uncorrected it is most of the error."""
    g = torch.Generator().manual_seed(2)
    K, N = 384, 64
    mu = torch.randn(K, generator=g) * 3
    x = mu + 0.1 * torch.randn(256, K, generator=g)
    w, b = torch.randn(N, K, generator=g) * 0.05, torch.zeros(N)
    ref = x @ w.T
    err = {c: quant.Int8Linear.from_linear(_linear(w, b), mean_x=mu if c else None)(x) - ref for c in (False, True)}
    shared = {c: e.mean(0).norm().item() for c, e in err.items()}
    assert shared[True] < 0.2 * shared[False], shared
    assert err[True].norm() < err[False].norm()


def test_int8_is_refused_for_training_saving_and_cuda(tmp_path):
    from minihbt.config import TrainConfig
    with pytest.raises(UserError, match="--dtype int8: inference only"):
        TrainConfig(sampler="hybrid", dtype="int8")
    te = load_encoder(GOLDEN / "tiny-bert", dtype="int8")
    with pytest.raises(UserError, match="not saved"):
        te.save(tmp_path / "m")
    with pytest.raises(UserError, match="CPU"):
        load_encoder(GOLDEN / "tiny-bert", device="cuda", dtype="int8")
    with pytest.raises(ValueError, match="quantises"):  # the label must say what the model is
        TextEncoder(te.model, te.tokenizer, te.prefixes, te.meta, dtype="fp32")
    fp = load_encoder(GOLDEN / "tiny-bert")
    with pytest.raises(ValueError, match="quantises"):
        TextEncoder(fp.model, fp.tokenizer, fp.prefixes, fp.meta, dtype="int8")


def test_int8_and_fp32_never_share_a_cache_entry(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIHBT_CACHE", str(tmp_path))
    encs = {d: load_encoder(GOLDEN / "tiny-xlmr", dtype=d) for d in ("fp32", "bf16", "int8")}
    fps = {d: e.fingerprint for d, e in encs.items()}
    assert len(set(fps.values())) == 3
    assert fps["int8"] == load_encoder(GOLDEN / "tiny-xlmr", dtype="int8").fingerprint  # stable
    out = {d: embed_cache.encode_cached(e, TEXTS, "passage", [fps[d], "texts"], "t", progress=False)
           for d, e in encs.items()}
    assert len(list((tmp_path / "embeddings").glob("t-*.npy"))) == 3
    assert np.abs(out["int8"] - out["fp32"]).max() > 1e-6  # int8 did not read fp32's entry
    np.testing.assert_array_equal(out["int8"], encs["int8"].encode(TEXTS, kind="passage"))


# Stated tolerance on real text (e5-small, MLQA-R candidates, "passage: "): per-token int8 keeps
# every embedding within cosine 0.997 of fp32 and the mean above 0.9985 (measured on 512 such
# sentences with 7-bit weights, AVX2: mean 0.99883, 1st percentile 0.99827, min 0.99807; with
# 8-bit weights, VNNI, on 256: 0.99917 / 0.99882 / 0.99851; docs/PRECISION.md).
def test_int8_e5_small_embeddings_are_close_to_fp32_on_real_text(e5_dir):
    from minihbt.lareqa import load_lareqa
    data = load_lareqa("mlqa-r")
    texts = [c.text for lang in data.langs for c in data.candidates[lang]]
    texts = [texts[i] for i in np.random.default_rng(0).choice(len(texts), 48, replace=False)]
    fp32 = load_encoder(e5_dir)
    int8 = TextEncoder(quantize(copy.deepcopy(fp32.model)), fp32.tokenizer, fp32.prefixes, fp32.meta, dtype="int8")
    cos = (int8.encode(texts, kind="passage") * fp32.encode(texts, kind="passage")).sum(1)
    assert cos.min() >= 0.997 and cos.mean() >= 0.9985, (cos.min(), cos.mean())


@pytest.mark.parametrize("cap", [None, "AVX512_CORE_VNNI", "AVX2"])
def test_the_int8_gemm_is_exact_and_never_onednns_reference_kernel(cap):
    """oneDNN runs an int8 (s8) input through `ref_int8`, a reference loop ~360x slower than fp32,
    on AVX512-VNNI CPUs without AMX, so quant feeds it u8 there and s8 only where oneDNN has AMX.
    Checked in oneDNN's own log of the product (a subprocess: ONEDNN_VERBOSE and ONEDNN_MAX_CPU_ISA
    are read once per process) on this CPU's ISA, and with oneDNN capped below it (as a CPU without
    AMX, or without VNNI, would run), each time with the probe's choice exact at the extremes. The
    products: the probe's own and e5-small's shapes, from one token (M = 1, the smallest an encoder
    makes) up; s8 runs oneDNN's reference kernel on AMX too when M x N <= 256."""
    import os
    import subprocess
    import sys
    code = ("import torch; from minihbt import quant\n"
            "gemm, qmax = quant.backend()\n"
            "for m, k, n in ((1, 384, 384), (64, 384, 1536), (64, 1536, 384)) if gemm != 'int_mm' else ():\n"
            "    quant.int8_linear(torch.randn(m, k), quant.Int8Weight.from_float(torch.randn(n, k)), None)\n"
            "print('backend', gemm, qmax, quant.onednn_has_amx(), quant.exact_at_the_extremes(gemm, qmax))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")}
    env = {**env, "ONEDNN_VERBOSE": "1", **({"ONEDNN_MAX_CPU_ISA": cap} if cap else {})}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    gemm, qmax, amx, exact = next(line for line in out.splitlines() if line.startswith("backend ")).split()[1:]
    if gemm == "int_mm":
        pytest.skip("torch without oneDNN's int8 GEMM (or none exact here): torch._int_mm multiplies")
    assert exact == "True" and gemm == ("onednn_s8" if amx == "True" else "onednn_u8"), out[-400:]
    assert cap is None or amx == "False"  # a cap below AMX is seen
    matmuls = [line for line in out.splitlines() if ",exec,cpu,matmul," in line or ",exec,cpu,inner_product," in line]
    assert matmuls, "oneDNN's log shows no product: ONEDNN_VERBOSE did not take"
    assert not [line for line in matmuls if line.split(",")[6].startswith("ref")], matmuls  # the implementation


def test_onednn_has_amx_reads_the_cpu_and_onednns_isa_cap(monkeypatch):
    """AMX counts only where the CPU has tiles and ONEDNN_MAX_CPU_ISA (or DNNL_MAX_CPU_ISA) allows an AMX ISA."""
    for tiles, cap, old, want in ((True, None, None, True), (True, "ALL", None, True), (True, "avx10_1_512_amx", None, True),
                                  (True, "AVX512_CORE_VNNI", None, False), (True, None, "AVX2", False),
                                  (False, None, None, False), (False, "ALL", None, False)):
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda tiles=tiles: tiles)
        for name, value in (("ONEDNN_MAX_CPU_ISA", cap), ("DNNL_MAX_CPU_ISA", old)):
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
        assert quant.onednn_has_amx() == want, (tiles, cap, old)
