"""minihbt.tokenizer against transformers' PreTrainedTokenizerFast reading the same tokenizer.json.

Goldens: tools/gen_encoder_golden.py (`tiny` -> tokenizer_tiny.json, `tokenizer` -> tokenizer_e5.json).
The file is the authority: transformers 5's XLMRobertaTokenizer rebuilds the pipeline from the
vocabulary and drops the trailing "▁" of a text that ends in whitespace, so the references were
made with PreTrainedTokenizerFast(tokenizer_file=...), which runs the file verbatim.
"""
import json
from pathlib import Path

import pytest
import torch

from minihbt.io.files import UserError, sha256_file
from minihbt.tokenizer import Tokenizer

GOLDEN = Path(__file__).parent / "golden"
LANGS = {"ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh"}


@pytest.fixture(scope="module")
def e5_tokenizer_json(e5_dir) -> Path:
    """The real e5-small tokenizer.json, from the fetched model."""
    path = e5_dir / "tokenizer.json"
    golden = json.loads((GOLDEN / "tokenizer_e5.json").read_text(encoding="utf-8"))
    assert sha256_file(path) == golden["tokenizer_sha256"], "not the tokenizer.json the goldens were made from"
    return path


def check_batch(tok: Tokenizer, texts, prefix, max_len, want_ids, want_mask):
    got = tok(texts, prefix=prefix, max_len=max_len)
    assert got["input_ids"].dtype == torch.long and got["attention_mask"].dtype == torch.long
    for i, text in enumerate(texts):  # row by row, so a failure names the text
        assert got["input_ids"][i].tolist() == want_ids[i], f"input_ids differ for {prefix + text!r}"
        assert got["attention_mask"][i].tolist() == want_mask[i], f"attention_mask differs for {prefix + text!r}"


@pytest.mark.parametrize("kind,pad_id", [("bert", 0), ("xlmr", 1)])
def test_tiny_tokenizers_match_transformers(kind, pad_id):
    golden = json.loads((GOLDEN / "tokenizer_tiny.json").read_text(encoding="utf-8"))
    tok = Tokenizer.from_file(GOLDEN / f"tiny-{kind}" / "tokenizer.json")
    assert tok.pad_id == pad_id
    check_batch(tok, golden["texts"], "", golden["max_len"],
                golden[f"{kind}.input_ids"], golden[f"{kind}.attention_mask"])


def test_golden_covers_languages_and_edge_cases():
    texts = json.loads((GOLDEN / "tokenizer_e5.json").read_text(encoding="utf-8"))["texts"]
    assert len(texts) >= 24
    scripts = {"ar": "ع", "el": "α", "hi": "क", "ru": "с", "th": "ก", "zh": "首", "vi": "ủ", "tr": "ş",
               "de": "ß", "es": "¿", "en": "capital"}
    assert set(scripts) == LANGS
    assert all(any(ch in t for t in texts) for ch in scripts.values())
    assert "" in texts and " " in texts and any(t.endswith(" ") and t.strip() for t in texts)
    assert any("  " in t for t in texts) and any("👋" in t for t in texts) and max(map(len, texts)) > 512


@pytest.mark.parametrize("name,prefix", [("plain", ""), ("query", "query: ")])
def test_e5_tokenizer_matches_transformers(e5_tokenizer_json, name, prefix):
    golden = json.loads((GOLDEN / "tokenizer_e5.json").read_text(encoding="utf-8"))
    tok = Tokenizer.from_file(e5_tokenizer_json)
    assert (tok.pad_id, tok.pad_token) == (1, "<pad>")
    check_batch(tok, golden["texts"], prefix, golden["max_len"],
                golden[f"{name}.input_ids"], golden[f"{name}.attention_mask"])


def test_e5_keeps_the_trailing_metaspace(e5_tokenizer_json):
    # the behaviour transformers 5's rebuilt XLMRobertaTokenizer loses: "▁" (id 6) before </s>
    tok = Tokenizer.from_file(e5_tokenizer_json)
    assert tok.encode(["a trailing space "])[0][-2:] == [6, 2]
    assert tok.encode([" "])[0] == [0, 6, 2]


def test_truncation_keeps_special_tokens_and_pads_right():
    tok = Tokenizer.from_file(GOLDEN / "tiny-xlmr" / "tokenizer.json")
    batch = tok(["word " * 100, "", "hi"], max_len=16)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids.shape == (3, 16)
    assert ids[0, 0] == 0 and ids[0, -1] == 2  # <s> ... </s> survive the cut
    assert ids[1, :2].tolist() == [0, 2] and (ids[1, 2:] == 1).all()  # empty text: <s> </s> then <pad>
    assert mask.sum(1).tolist() == [16, 2, (ids[2] != 1).sum().item()]


def test_prefix_is_prepended_to_the_raw_text():
    tok = Tokenizer.from_file(GOLDEN / "tiny-bert" / "tokenizer.json")
    assert tok.encode(["a question"], prefix="query: ") == tok.encode(["query: a question"])


def test_save_writes_the_file_verbatim(tmp_path):
    src = GOLDEN / "tiny-xlmr" / "tokenizer.json"
    Tokenizer.from_file(src).save(tmp_path)
    assert (tmp_path / "tokenizer.json").read_bytes() == src.read_bytes()
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "PreTrainedTokenizerFast" and config["pad_token"] == "<pad>"


def test_bad_files_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        Tokenizer.from_file(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="bad.json"):
        Tokenizer.from_file(tmp_path / "bad.json")
    spec = json.loads((GOLDEN / "tiny-bert" / "tokenizer.json").read_text(encoding="utf-8"))
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["content"] != "[PAD]"]
    (tmp_path / "nopad.json").write_text(json.dumps(spec))
    with pytest.raises(UserError, match="pad"):
        Tokenizer.from_file(tmp_path / "nopad.json")
