"""Hugging Face and sentence-transformers model directories: read them into an `Encoder`, write them back.

A model directory is what transformers' `save_pretrained` writes (`config.json`,
`model.safetensors` or `pytorch_model.bin`, `tokenizer.json`) plus `minihbt.json` (pooling,
normalisation, the "query: " / "passage: " prefixes, provenance). Our parameter names are the
Hugging Face `BertModel` / `XLMRobertaModel` names (minihbt/transformer.py), so loading is one
checked pass over the state dict and saving needs no renaming.

Contract
- `load_pretrained(dir, pooling=None)` -> Encoder in eval mode: `config.json` + `model.safetensors`
  (or `pytorch_model.bin`, read with `torch.load(weights_only=True)`), pooling from `minihbt.json`
  (default `mean`) unless `pooling` is given.
- `load_hf_state_dict(model, sd)`: strips a `bert.` / `roberta.` prefix, maps legacy LayerNorm
  `gamma`/`beta`, drops MLM heads (`cls.*`, `lm_head.*`) with a note. The pooler is always part
  of the model, as in transformers' default `BertModel`; a checkpoint without one is accepted only
  when the pooling does not read it (it is then initialised like transformers does, with a fixed
  seed, and a note says so). Any other missing, unexpected or wrongly shaped tensor is one
  `UserError` that lists them all.
- `save_model_dir(dir, model, tokenizer, prefixes, provenance)`: the complete directory, replaced
  atomically: config.json + model.safetensors (fp32, loadable by transformers' AutoModel),
  tokenizer.json, minihbt.json and the sentence-transformers module files (loadable by
  `SentenceTransformer(dir)` with the same embeddings). Returns the minihbt.json it wrote.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from minihbt.io.files import UserError, atomic_dir, atomic_write_bytes, atomic_write_json, weights_only_refusal
from minihbt.tokenizer import Tokenizer
from minihbt.transformer import Encoder, EncoderConfig


def load_pretrained(dir: str | os.PathLike, pooling: str | None = None) -> Encoder:
    dir = Path(dir)
    meta = read_meta(dir)
    config = EncoderConfig.from_hf(_read_json(dir / "config.json"), pooling=pooling or meta["pooling"],
                                   normalize=meta["normalize"], source=str(dir / "config.json"))
    model = Encoder.empty(config)
    load_hf_state_dict(model, read_state_dict(dir), source=str(dir))
    return model.eval()


def load_hf_state_dict(model: Encoder, sd: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Copy a Hugging Face state dict into the model, checking every name and shape."""
    sd, notes = _hf_names(sd)
    own = model.state_dict()
    pooler = [k for k in own if k.startswith("pooler.")]
    if not any(k in sd for k in pooler) and model.config.pooling != "pooler":
        # transformers' default BertModel has a pooler; keeping one makes our saves complete
        g = torch.Generator().manual_seed(0)
        sd["pooler.dense.weight"] = torch.randn(own["pooler.dense.weight"].shape, generator=g) * 0.02
        sd["pooler.dense.bias"] = torch.zeros_like(own["pooler.dense.bias"])
        notes.append(f"no pooler in the checkpoint; pooling {model.config.pooling!r} does not use it, "
                     f"so it was initialised (seed 0)")
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    wrong = sorted(f"{k} {tuple(sd[k].shape)} (expected {tuple(own[k].shape)})"
                   for k in set(sd) & set(own) if sd[k].shape != own[k].shape)
    problems = [f"{what}: {_short(names)}" for what, names in
                (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if names]
    if problems:
        raise UserError(f"{source}: weights do not match config.json; " + "; ".join(problems))
    # assign: take the loaded tensors as the parameters instead of copying 470 MB into fresh ones
    model.load_state_dict({k: sd[k].to(own[k].device, own[k].dtype).contiguous() for k in own}, assign=True)
    for note in notes:
        print(f"note: {source}: {note}", file=sys.stderr)


def save_pretrained(model: Encoder, dir: str | os.PathLike) -> None:
    """config.json + model.safetensors (fp32), loadable by transformers' AutoModel; each file atomic."""
    dir = Path(dir)
    sd = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    atomic_write_json(dir / "config.json", model.config.to_hf())
    atomic_write_bytes(dir / "model.safetensors", save(sd, metadata={"format": "pt"}))


def save_model_dir(dir: str | os.PathLike, model: Encoder, tokenizer: Tokenizer, prefixes: dict[str, str],
                   provenance: dict | None = None) -> dict:
    """A complete model directory, replaced atomically: HF weights + config, tokenizer,
    minihbt.json, and the sentence-transformers module files. Returns minihbt.json's content."""
    meta = {"pooling": model.config.pooling, "normalize": model.config.normalize, "prefixes": dict(prefixes)}
    if provenance is not None:
        meta["provenance"] = provenance
    with atomic_dir(dir) as tmp:
        save_pretrained(model, tmp)
        tokenizer.save(tmp, model_max_length=model.config.max_tokens)
        atomic_write_json(tmp / "minihbt.json", meta)
        _write_sentence_transformers(tmp, model, prefixes)
    return meta


def _hf_names(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Map checkpoint names onto ours: strip `bert.`/`roberta.`, rename `gamma`/`beta`, drop heads."""
    out, dropped = {}, []
    for k, v in sd.items():
        for prefix in ("bert.", "roberta."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        if k.endswith("LayerNorm.gamma"):
            k = k[: -len("gamma")] + "weight"
        elif k.endswith("LayerNorm.beta"):
            k = k[: -len("beta")] + "bias"
        if k.startswith(("cls.", "lm_head.")):
            dropped.append(k)  # pretraining heads: no pooling reads them
            continue
        if k.endswith("position_ids") or k.endswith("token_type_ids"):
            continue  # buffers older transformers versions saved; recomputed here
        out[k] = v
    notes = [f"ignored the pretraining head ({_short(dropped)}); no pooling uses it"] if dropped else []
    return out, notes


def _short(names: list[str], n: int = 8) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise UserError(f"{path}: not found (expected a Hugging Face model directory)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: invalid JSON ({e})") from None


def read_meta(dir: Path) -> dict:
    """minihbt.json with defaults: mean pooling, normalised, no prefixes."""
    meta = {"pooling": "mean", "normalize": True, "prefixes": {"query": "", "passage": ""}}
    if (dir / "minihbt.json").is_file():
        meta.update(_read_json(dir / "minihbt.json"))
        bad = set(meta["prefixes"]) ^ {"query", "passage"}
        if bad:
            raise UserError(f"{dir / 'minihbt.json'}: prefixes must have exactly the keys query and passage")
    return meta


def read_state_dict(dir: Path) -> dict[str, torch.Tensor]:
    if (dir / "model.safetensors").is_file():
        return load_file(dir / "model.safetensors")
    if (dir / "pytorch_model.bin").is_file():
        try:
            return torch.load(dir / "pytorch_model.bin", map_location="cpu", weights_only=True)
        except Exception as e:
            why = weights_only_refusal(e) or f"cannot be read as plain tensors ({str(e).strip().splitlines()[0]})"
            raise UserError(f"{dir / 'pytorch_model.bin'}: {why}") from None
    raise UserError(f"{dir}: no model.safetensors or pytorch_model.bin")


def _write_sentence_transformers(dir: Path, model: Encoder, prefixes: dict[str, str]) -> None:
    """modules.json and friends: Transformer -> Pooling (-> Dense tanh for LaBSE's pooler) -> Normalize."""
    c = model.config
    H = c.hidden_size
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]
    pool_mode = {"mean": "mean", "cls": "cls", "pooler": "cls"}[c.pooling]
    atomic_write_json(dir / "1_Pooling" / "config.json", {
        "word_embedding_dimension": H, "pooling_mode_cls_token": pool_mode == "cls",
        "pooling_mode_mean_tokens": pool_mode == "mean", "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False, "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": False, "include_prompt": True})
    modules.append({"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"})
    if c.pooling == "pooler":
        # sentence-transformers writes LaBSE's pooler as a Dense layer with tanh after CLS pooling
        atomic_write_json(dir / "2_Dense" / "config.json", {
            "in_features": H, "out_features": H, "bias": True,
            "activation_function": "torch.nn.modules.activation.Tanh"})
        dense = {"linear.weight": model.pooler.dense.weight.detach().cpu().float().contiguous(),
                 "linear.bias": model.pooler.dense.bias.detach().cpu().float().contiguous()}
        atomic_write_bytes(dir / "2_Dense" / "model.safetensors", save(dense, metadata={"format": "pt"}))
        modules.append({"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    if c.normalize:
        modules.append({"idx": len(modules), "name": str(len(modules)), "path": "",
                        "type": "sentence_transformers.models.Normalize"})
    atomic_write_json(dir / "modules.json", modules)
    atomic_write_json(dir / "sentence_bert_config.json", {"max_seq_length": c.max_tokens, "do_lower_case": False})
    atomic_write_json(dir / "config_sentence_transformers.json", {
        "prompts": dict(prefixes), "default_prompt_name": None, "similarity_fn_name": "cosine"})
