"""minihbt.text_encoder: tokenise with prefixes, encode in input order whatever the batching and
padding, fingerprints, load_encoder's errors; on the tiny random BERT and XLM-R checkpoints."""
import numpy as np
import pytest
import torch

from minihbt.files import UserError
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
