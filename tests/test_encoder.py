"""minihbt.encoder against transformers on tiny random BERT and XLM-R checkpoints.

Goldens (tools/gen_encoder_golden.py tiny): tests/golden/tiny-{bert,xlmr}/ were written by
transformers' BertModel / XLMRobertaModel.save_pretrained with random weights (LayerNorm gains and
biases included); encoder_tiny-*.safetensors hold, for two padded batches of different lengths,
the ids and masks from PreTrainedTokenizerFast and the last hidden states, masked mean, CLS and
pooler outputs that transformers computed.
"""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from minihbt.encoder import Encoder, EncoderConfig, load_encoder
from minihbt.files import UserError

GOLDEN = Path(__file__).parent / "golden"
KINDS = ["bert", "xlmr"]
TEXTS = ["Where is the Eiffel tower?", "Der Eiffelturm steht in Paris.", "埃菲尔铁塔在巴黎。", "",
         "Эйфелева башня находится в Париже, на Марсовом поле.", "x"]


def copy_tiny(kind: str, dst: Path) -> Path:
    shutil.copytree(GOLDEN / f"tiny-{kind}", dst)
    return dst


def set_meta(dir: Path, **changes) -> None:
    meta = json.loads((dir / "minihbt.json").read_text())
    meta.update(changes)
    (dir / "minihbt.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("kind", KINDS)
def test_tiny_matches_transformers(kind):
    golden = load_file(GOLDEN / f"encoder_tiny-{kind}.safetensors")
    model = Encoder.from_pretrained(GOLDEN / f"tiny-{kind}")
    for b in ("0", "1"):  # two batches, padded to different lengths
        ids, mask = golden[f"{b}.input_ids"], golden[f"{b}.attention_mask"]
        assert (mask == 0).any(), "the golden batch should contain padding"
        with torch.no_grad():
            hidden = model(ids, mask)
            assert (hidden - golden[f"{b}.last_hidden"]).abs().max() <= 1e-5
            for pooling in ("mean", "cls", "pooler"):
                model.config.pooling = pooling
                assert (model.pool(hidden, mask) - golden[f"{b}.{pooling}"]).abs().max() <= 1e-5, pooling


@pytest.mark.parametrize("kind", KINDS)
def test_embed_is_the_normalised_pooling_and_keeps_the_graph(kind):
    golden = load_file(GOLDEN / f"encoder_tiny-{kind}.safetensors")
    model = Encoder.from_pretrained(GOLDEN / f"tiny-{kind}")
    pooling = model.config.pooling  # tiny-bert: pooler (LaBSE style), tiny-xlmr: mean
    e = model.embed(golden["1.input_ids"], golden["1.attention_mask"])
    assert e.requires_grad
    want = torch.nn.functional.normalize(golden[f"1.{pooling}"], dim=-1)
    assert (e.detach() - want).abs().max() <= 1e-5


def test_xlmr_positions_count_real_tokens_from_padding_idx_plus_one():
    model = Encoder.from_pretrained(GOLDEN / "tiny-xlmr")
    seen = []
    model.embeddings.position_embeddings.register_forward_hook(lambda m, inp, out: seen.append(inp[0]) and None)
    ids = torch.tensor([[0, 10, 11, 2, 1, 1]])  # <s> a b </s> <pad> <pad>
    model(ids, (ids != 1).long())
    assert seen[0].tolist() == [[2, 3, 4, 5, 1, 1]]


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


@pytest.mark.parametrize("kind,prefix", [("bert", "bert."), ("xlmr", "roberta.")])
def test_pytorch_bin_with_prefix_legacy_names_and_head(tmp_path, capsys, kind, prefix):
    d = copy_tiny(kind, tmp_path / "m")
    sd = load_file(d / "model.safetensors")
    renamed = {}
    for k, v in sd.items():
        k = k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        renamed[prefix + k] = v
    head = "cls.predictions.bias" if kind == "bert" else "lm_head.bias"
    renamed[head] = torch.zeros(3)
    (d / "model.safetensors").unlink()
    torch.save(renamed, d / "pytorch_model.bin")
    model = Encoder.from_pretrained(d)
    assert head in capsys.readouterr().err
    golden = load_file(GOLDEN / f"encoder_tiny-{kind}.safetensors")
    with torch.no_grad():
        hidden = model(golden["0.input_ids"], golden["0.attention_mask"])
    assert (hidden - golden["0.last_hidden"]).abs().max() <= 1e-5


def test_mismatched_weights_are_one_error_listing_all(tmp_path):
    d = copy_tiny("xlmr", tmp_path / "m")
    sd = load_file(d / "model.safetensors")
    del sd["encoder.layer.1.output.dense.bias"]
    sd["encoder.layer.9.extra.weight"] = torch.zeros(2)
    sd["embeddings.word_embeddings.weight"] = torch.zeros(5, 32)
    save_file(sd, d / "model.safetensors")
    with pytest.raises(UserError) as e:
        Encoder.from_pretrained(d)
    msg = str(e.value)
    assert "\n" not in msg and str(d) in msg
    for part in ("missing: encoder.layer.1.output.dense.bias", "unexpected: encoder.layer.9.extra.weight",
                 "wrong shape: embeddings.word_embeddings.weight (5, 32) (expected (1001, 32))"):
        assert part in msg


def test_pooler_is_required_only_by_pooler_pooling(tmp_path, capsys):
    d = copy_tiny("bert", tmp_path / "m")  # minihbt.json says pooling "pooler"
    sd = {k: v for k, v in load_file(d / "model.safetensors").items() if not k.startswith("pooler.")}
    save_file(sd, d / "model.safetensors")
    with pytest.raises(UserError, match="missing: pooler.dense.bias, pooler.dense.weight"):
        Encoder.from_pretrained(d)
    set_meta(d, pooling="mean")
    model = Encoder.from_pretrained(d)
    assert "no pooler" in capsys.readouterr().err
    golden = load_file(GOLDEN / "encoder_tiny-bert.safetensors")
    with torch.no_grad():
        e = model.pool(model(golden["1.input_ids"], golden["1.attention_mask"]), golden["1.attention_mask"])
    assert (e - golden["1.mean"]).abs().max() <= 1e-5


@pytest.mark.parametrize("field,value", [("hidden_act", "relu"), ("model_type", "gpt2"),
                                         ("position_embedding_type", "relative_key")])
def test_unsupported_config_is_a_user_error(tmp_path, field, value):
    d = copy_tiny("bert", tmp_path / "m")
    config = json.loads((d / "config.json").read_text())
    config[field] = value
    (d / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match=field):
        Encoder.from_pretrained(d)


def test_load_encoder_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_encoder(tmp_path / "nothing" / "here")
    with pytest.raises(UserError, match="config.json"):
        load_encoder(tmp_path)
    d = copy_tiny("bert", tmp_path / "m")
    set_meta(d, pooling="max")
    with pytest.raises(UserError, match="pooling"):
        load_encoder(d)


@pytest.mark.parametrize("kind", KINDS)
def test_save_round_trip_and_peer_libraries(tmp_path, kind):
    te = load_encoder(GOLDEN / f"tiny-{kind}")
    out = tmp_path / "saved"
    out.mkdir()
    (out / "stale.txt").write_text("replaced as a whole")
    te.save(out, provenance={"step": 3})
    assert not (out / "stale.txt").exists()
    again = load_encoder(out)
    assert again.meta["provenance"] == {"step": 3} and again.fingerprint == te.fingerprint
    E = te.encode(TEXTS, kind="query")
    np.testing.assert_array_equal(again.encode(TEXTS, kind="query"), E)

    transformers = pytest.importorskip("transformers", reason="transformers is an optional (golden) extra")
    model, info = transformers.AutoModel.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    st = pytest.importorskip("sentence_transformers", reason="sentence-transformers is an optional (golden) extra")
    peer = st.SentenceTransformer(str(out), device="cpu").encode(TEXTS, prompt_name="query")
    np.testing.assert_allclose(peer, E, atol=1e-5)


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


def test_config_round_trip():
    c = EncoderConfig(vocab_size=10, model_type="xlm-roberta", pad_token_id=1, max_position_embeddings=514)
    assert c.max_tokens == 512
    assert EncoderConfig.from_hf(c.to_hf()) == EncoderConfig(**{**c.__dict__, "pooling": "mean"})
