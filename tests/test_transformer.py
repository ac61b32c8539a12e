"""minihbt.transformer against transformers on tiny random BERT and XLM-R checkpoints.

Goldens (tools/gen_encoder_golden.py tiny): tests/golden/tiny-{bert,xlmr}/ were written by
transformers' BertModel / XLMRobertaModel.save_pretrained with random weights (LayerNorm gains and
biases included); encoder_tiny-*.safetensors hold, for two padded batches of different lengths,
the ids and masks from PreTrainedTokenizerFast and the last hidden states, masked mean, CLS and
pooler outputs that transformers computed.
"""
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from minihbt.io.hf_format import load_pretrained
from minihbt.transformer import EncoderConfig

GOLDEN = Path(__file__).parent / "golden"

KINDS = ["bert", "xlmr"]


@pytest.mark.parametrize("kind", KINDS)
def test_tiny_matches_transformers(kind):
    golden = load_file(GOLDEN / f"encoder_tiny-{kind}.safetensors")
    model = load_pretrained(GOLDEN / f"tiny-{kind}")
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
    model = load_pretrained(GOLDEN / f"tiny-{kind}")
    pooling = model.config.pooling  # tiny-bert: pooler (LaBSE style), tiny-xlmr: mean
    e = model.embed(golden["1.input_ids"], golden["1.attention_mask"])
    assert e.requires_grad
    want = torch.nn.functional.normalize(golden[f"1.{pooling}"], dim=-1)
    assert (e.detach() - want).abs().max() <= 1e-5


def test_xlmr_positions_count_real_tokens_from_padding_idx_plus_one():
    model = load_pretrained(GOLDEN / "tiny-xlmr")
    seen = []
    model.embeddings.position_embeddings.register_forward_hook(lambda m, inp, out: seen.append(inp[0]) and None)
    ids = torch.tensor([[0, 10, 11, 2, 1, 1]])  # <s> a b </s> <pad> <pad>
    model(ids, (ids != 1).long())
    assert seen[0].tolist() == [[2, 3, 4, 5, 1, 1]]


def test_config_round_trip():
    c = EncoderConfig(vocab_size=10, model_type="xlm-roberta", pad_token_id=1, max_position_embeddings=514)
    assert c.max_tokens == 512
    assert EncoderConfig.from_hf(c.to_hf()) == EncoderConfig(**{**c.__dict__, "pooling": "mean"})
