"""minihbt.text_encoder: tokenise with prefixes, encode in input order whatever the batching and
padding, fingerprints, load_encoder's errors; on the tiny random BERT and XLM-R checkpoints."""
import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from minihbt import quant
from minihbt.io.files import UserError
from minihbt.text_encoder import load_encoder
from test_hf_format import TEXTS, copy_tiny, set_meta
from test_transformer import GOLDEN, KINDS


@pytest.mark.parametrize("kind", KINDS)
def test_padding_does_not_change_real_tokens(kind):
    te = load_encoder(GOLDEN / f"tiny-{kind}")
    batch = te.tokenize(TEXTS)
    with torch.no_grad():
        padded = te.model(batch["input_ids"], batch["attention_mask"])
        for i in range(len(TEXTS)):
            n = int(batch["attention_mask"][i].sum())
            alone = te.model(batch["input_ids"][i:i + 1, :n], batch["attention_mask"][i:i + 1, :n])
            assert (padded[i, :n] - alone[0]).abs().max() <= 1e-5


@pytest.mark.parametrize("kind", KINDS)
def test_encode_restores_input_order(kind):
    te = load_encoder(GOLDEN / f"tiny-{kind}")
    texts = TEXTS * 3
    E = te.encode(texts, kind="passage", batch_size=4)
    assert E.dtype == np.float32 and E.shape == (len(texts), te.model.config.hidden_size)
    np.testing.assert_allclose(np.linalg.norm(E, axis=1), 1.0, atol=1e-5)
    for i, t in enumerate(texts):  # one text at a time: no padding, no sorting
        b = te.tokenize([t], kind="passage")
        with torch.no_grad():
            want = te.model.embed(b["input_ids"], b["attention_mask"])[0].numpy()
        np.testing.assert_allclose(E[i], want, atol=1e-5)
    assert te.model.training is False


def test_encode_applies_prefixes_and_caps_max_len():
    te = load_encoder(GOLDEN / "tiny-xlmr")
    assert te.prefixes == {"query": "query: ", "passage": "passage: "}
    q = te.encode(["Paris"], kind="query")
    p = te.encode(["Paris"], kind="passage")
    assert not np.allclose(q, p)
    b = te.tokenize(["Paris"], kind="query")
    assert b["input_ids"][0].tolist() == te.tokenizer.encode(["query: Paris"])[0]
    assert te.encode(["word " * 1000]).shape == (1, 32)  # longer than the 128 positions: truncated, no error
    with pytest.raises(UserError, match="kind"):
        te.encode(["x"], kind="document")


def test_load_encoder_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_encoder(tmp_path / "nothing" / "here")
    with pytest.raises(UserError, match="config.json"):
        load_encoder(tmp_path)
    d = copy_tiny("bert", tmp_path / "m")
    set_meta(d, pooling="max")
    with pytest.raises(UserError, match="pooling"):
        load_encoder(d)


def test_fingerprint_follows_weights_and_prefixes():
    te = load_encoder(GOLDEN / "tiny-xlmr")
    fp = te.fingerprint
    te.prefixes["query"] = "q: "
    assert te.fingerprint != fp
    te.prefixes["query"] = "query: "
    assert te.fingerprint == fp
    with torch.no_grad():
        te.model.encoder.layer[0].output.dense.bias[0] += 1e-3
    assert te.fingerprint != fp


# --- precision: bf16 autocast (the golden tests above stay fp32) ------------------------------

class OpDtypes(TorchDispatchMode):
    """Records (op name, dtypes of its floating-point tensor arguments) for every op that runs."""

    def __init__(self):
        super().__init__()
        self.seen = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        dtypes = {a.dtype for a in torch.utils._pytree.tree_leaves((args, kwargs))
                  if isinstance(a, torch.Tensor) and a.is_floating_point()}
        self.seen.add((func.overloadpacket.__name__, frozenset(dtypes)))
        return func(*args, **(kwargs or {}))

    def dtypes(self, op: str) -> set:
        return {d for name, ds in self.seen if name == op for d in ds}


BF16, FP32 = torch.bfloat16, torch.float32


@pytest.mark.parametrize("kind", KINDS)
def test_bf16_encode_is_close_to_fp32(kind):
    te = load_encoder(GOLDEN / f"tiny-{kind}")
    ref = te.encode(TEXTS * 2, kind="passage", batch_size=3)
    te.dtype = "bf16"
    E = te.encode(TEXTS * 2, kind="passage", batch_size=3)
    assert E.dtype == np.float32
    cos = (E * ref).sum(1)  # both unit rows
    # Stated tolerance: bf16 keeps 8 significant bits (relative rounding 2^-9 per value), so a
    # 2-layer encoder's embeddings stay within cosine 0.999 of fp32 (measured: >= 0.99997), and
    # they are still unit rows (normalised in fp32).
    assert cos.min() >= 0.999
    np.testing.assert_allclose(np.linalg.norm(E, axis=1), 1.0, atol=1e-6)
    assert np.abs(E - ref).max() > 1e-6  # and bf16 did run: the rows are not the fp32 ones


def test_bf16_runs_matrix_products_in_bf16_and_the_rest_in_fp32():
    """What the text_encoder docstring says runs in which precision, op by op (CPU, this torch)."""
    from minihbt.loss import info_nce
    from minihbt.text_encoder import autocast
    from minihbt.step import make_embed

    te = load_encoder(GOLDEN / "tiny-bert", dtype="bf16")
    batch = te.tokenize(TEXTS, kind="passage")  # padded: the attention mask is used
    assert not bool(batch["attention_mask"].all())
    # encode's forward, outside inference_mode (under it the mode sees only composite ops)
    with OpDtypes() as inference, autocast(te.device, te.dtype):
        assert te.model.embed(**batch).dtype == FP32
    te.model.train()  # dropout on: the training path
    embed = make_embed(te, type("Cfg", (), {"compile": False})())
    with OpDtypes() as training:
        e = embed(batch)
        loss = info_nce(e[:3], e[3:6])
        loss.backward()
    assert e.dtype == FP32 and loss.dtype == FP32
    for rec in (inference, training):
        assert rec.dtypes("addmm") == {BF16}                    # every nn.Linear
        assert rec.dtypes("native_layer_norm") == {FP32}        # every LayerNorm gets fp32
        assert rec.dtypes("embedding") == {FP32}
        assert rec.dtypes("gelu") == {BF16}
        assert rec.dtypes("linalg_vector_norm") == {FP32}       # the L2 normalisation
    # attention: the flash kernel on bf16 q, k, v without dropout; with dropout, the math kernel in fp32
    assert inference.dtypes("_scaled_dot_product_flash_attention_for_cpu") == {BF16}
    assert training.dtypes("_safe_softmax") == {FP32} and training.dtypes("bmm") == {FP32}
    # the loss outside autocast: scores, log-softmax and NLL in fp32; the backward's products in bf16
    assert training.dtypes("_log_softmax") == {FP32} and training.dtypes("nll_loss_forward") == {FP32}
    assert BF16 in training.dtypes("mm")
    assert all(p.dtype == FP32 and p.grad.dtype == FP32 for p in te.model.parameters() if p.grad is not None)


def test_dtype_is_checked_and_keys_the_fingerprint():
    te = load_encoder(GOLDEN / "tiny-xlmr")
    fp32 = te.fingerprint
    te.dtype = "bf16"
    assert te.fingerprint != fp32  # bf16 embeddings are cached under keys of their own
    te.dtype = "fp32"
    assert te.fingerprint == fp32
    with pytest.raises(UserError, match="dtype"):
        load_encoder(GOLDEN / "tiny-xlmr", dtype="fp16")


def test_compiled_encode_equals_eager_and_has_its_own_fingerprint(tmp_path):
    """eval.py --compile: inductor with frozen weights gives eager's embeddings (to fp32 rounding;
    it fuses and reorders sums), over batches of several padded lengths (dynamic shapes), and its
    own cache keys."""
    from torch._dynamo.utils import counters
    counters.clear()
    eager = load_encoder(GOLDEN / "tiny-bert")
    te = load_encoder(GOLDEN / "tiny-bert").compile()
    texts = TEXTS * 3 + ["a much longer text than the others, " * 6]
    E, C = eager.encode(texts, kind="passage", batch_size=4), te.encode(texts, kind="passage", batch_size=4)
    np.testing.assert_allclose(C, E, atol=1e-5)
    assert counters["stats"]["unique_graphs"] >= 1  # inductor, not eager, encoded
    assert te.compiled and te.fingerprint != eager.fingerprint
    te.compiled = False
    assert te.fingerprint == eager.fingerprint  # the flag alone, not a changed model, made the difference


@pytest.mark.skipif(quant.backend()[0] == "int_mm", reason="int8 --compile needs torch's oneDNN int8 GEMM")
def test_compiled_int8_equals_eager_int8(monkeypatch):
    """--dtype int8 --compile: the oneDNN GEMM is one opaque op (torch.ops.minihbt.onednn_mm) that
    inductor calls as it is, fusing the quantisation around it, so the integers are eager's and the
    embeddings equal eager int8's to fp32 rounding; a torch without that GEMM is refused in one line."""
    from torch._dynamo.utils import counters
    counters.clear()
    eager = load_encoder(GOLDEN / "tiny-bert", dtype="int8")
    te = load_encoder(GOLDEN / "tiny-bert", dtype="int8").compile()
    texts = TEXTS * 3 + ["a much longer text than the others, " * 6]
    E, C = eager.encode(texts, kind="passage", batch_size=4), te.encode(texts, kind="passage", batch_size=4)
    np.testing.assert_allclose(C, E, atol=1e-5)
    assert counters["stats"]["unique_graphs"] >= 1 and te.fingerprint != eager.fingerprint
    monkeypatch.setattr(quant, "backend", lambda: ("int_mm", 127))
    with pytest.raises(UserError, match="--compile with --dtype int8 needs torch's oneDNN"):
        load_encoder(GOLDEN / "tiny-bert", dtype="int8").compile()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_cuda_encode_matches_cpu(dtype):
    ref = load_encoder(GOLDEN / "tiny-bert").encode(TEXTS, kind="passage")
    E = load_encoder(GOLDEN / "tiny-bert", device="cuda", dtype=dtype).encode(TEXTS, kind="passage")
    assert E.dtype == np.float32 and (E * ref).sum(1).min() >= (0.99999 if dtype == "fp32" else 0.999)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_point10_normalize_false_still_scores_by_cosine(tmp_path, kind, dtype):
    # The loss scores by cosine whatever the encoder returns (minihbt/loss.py); with normalize:
    # false, encode returned raw pooled vectors, so evaluation ranked by dot product. Now encode
    # gives unit vectors either way: the same weights give exactly the same embeddings.
    raw = copy_tiny(kind, tmp_path / "raw")
    set_meta(raw, normalize=False)
    unit = load_encoder(GOLDEN / f"tiny-{kind}", dtype=dtype)
    plain = load_encoder(raw, dtype=dtype)
    assert plain.model.config.normalize is False
    E = plain.encode(TEXTS, kind="passage")
    np.testing.assert_array_equal(E, unit.encode(TEXTS, kind="passage"))
    np.testing.assert_allclose(np.linalg.norm(E, axis=1), 1.0, rtol=0, atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_point10_the_loss_of_raw_embeddings_is_the_loss_of_encode(tmp_path, kind):
    # embed() itself stays raw with normalize: false (the training path: the loss normalises), and
    # its loss is that of encode's unit vectors: one score, the cosine, in training and evaluation.
    from minihbt.loss import info_nce

    raw = copy_tiny(kind, tmp_path / "raw")
    set_meta(raw, normalize=False)
    plain = load_encoder(raw)
    E = plain.encode(TEXTS, kind="passage")
    batch = plain.tokenize(TEXTS, kind="passage")
    with torch.no_grad():
        e = plain.model.eval().embed(batch["input_ids"], batch["attention_mask"])
    assert not torch.allclose(e.norm(dim=1), torch.ones(len(TEXTS)))
    q, d = e[:3], e[3:]
    assert info_nce(q, d).item() == pytest.approx(info_nce(torch.from_numpy(E[:3]), torch.from_numpy(E[3:])).item(),
                                                  abs=1e-5)
