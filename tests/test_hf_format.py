"""minihbt.io.hf_format: Hugging Face checkpoints in (prefixes, legacy names, heads, mismatches), complete
model directories out, read back by minihbt, transformers and sentence-transformers."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from minihbt.io.files import UserError
from minihbt.io.hf_format import load_pretrained
from minihbt.text_encoder import load_encoder
from test_transformer import GOLDEN, KINDS

TEXTS = ["Where is the Eiffel tower?", "Der Eiffelturm steht in Paris.", "埃菲尔铁塔在巴黎。", "",
         "Эйфелева башня находится в Париже, на Марсовом поле.", "x"]


def copy_tiny(kind: str, dst: Path) -> Path:
    shutil.copytree(GOLDEN / f"tiny-{kind}", dst)
    return dst


def set_meta(dir: Path, **changes) -> None:
    meta = json.loads((dir / "minihbt.json").read_text())
    meta.update(changes)
    (dir / "minihbt.json").write_text(json.dumps(meta))


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
    model = load_pretrained(d)
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
        load_pretrained(d)
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
        load_pretrained(d)
    set_meta(d, pooling="mean")
    model = load_pretrained(d)
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
        load_pretrained(d)


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


class Pickled:
    """An object whose unpickling runs code: os.makedirs(marker). weights_only=True must not build it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os
        return os.makedirs, (str(self.marker),)


def test_a_pickle_beyond_tensors_is_one_line_through_the_cli(tmp_path, capsys):
    """torch's refusal was 4-5 lines (advising weights_only=False); now one line naming the file."""
    from conftest import cli
    d = copy_tiny("bert", tmp_path / "m")
    sd = load_file(d / "model.safetensors")
    (d / "model.safetensors").unlink()
    torch.save({**sd, "extra": Pickled(tmp_path / "ran")}, d / "pytorch_model.bin")
    code = cli("eval.py", ["--dataset", "tatoeba", "--limit", "3", "--model", str(d), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert f"{d / 'pytorch_model.bin'}: not a weights-only checkpoint (it pickles " in err
    assert "it was not unpickled" in err and not (tmp_path / "ran").exists()
