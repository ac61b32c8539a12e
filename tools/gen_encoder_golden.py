"""Golden files for tests/test_tokenizer.py, test_transformer.py, test_hf_format.py, test_text_encoder.py
and test_convert.py, from the references.

Every expected value here comes from transformers / tokenizers / sentence-transformers, never
from minihbt's own forward pass. Needs the `golden` extra (transformers, sentence-transformers).

    python tools/gen_encoder_golden.py tiny        # tests/golden/tiny-{bert,xlmr}/ + encoder_tiny-*.safetensors
                                                   # + tokenizer_tiny.json
    python tools/gen_encoder_golden.py tokenizer   # tests/golden/tokenizer_e5.json (needs the e5 tokenizer.json)
    python tools/gen_encoder_golden.py e5          # tests/golden/e5_small.json (needs the converted e5-small)

`tiny` trains two small tokenizers with the `tokenizers` library on XQuAD-R text (WordPiece
as BERT / LaBSE, Unigram with a Metaspace pre-tokeniser as XLM-R) and saves random-weight
`BertModel` / `XLMRobertaModel` checkpoints made by transformers.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections import Counter
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
GOLDEN = ROOT / "tests" / "golden"
LANGS = ["ar", "de", "el", "en", "es", "hi", "ru", "th", "tr", "vi", "zh"]

# Texts for the tokenizer goldens: every XQuAD-R language plus the edge cases the issue lists.
TOKENIZER_TEXTS = [
    "What is the capital of France?",
    "Paris is the capital and most populous city of France.",
    "ما هي عاصمة فرنسا؟",
    "Wie heißt die Hauptstadt von Frankreich?",
    "Ποια είναι η πρωτεύουσα της Γαλλίας;",
    "¿Cuál es la capital de Francia?",
    "फ्रांस की राजधानी क्या है?",
    "Какая столица у Франции?",
    "เมืองหลวงของฝรั่งเศสคืออะไร",
    "Fransa'nın başkenti neresidir?",
    "Thủ đô của Pháp là gì?",
    "法国的首都是哪里？",
    "",
    " ",
    "hello 👋🏽 world 🇫🇷 👨‍👩‍👧",
    "many   spaces\tand\ttabs\nand\n\nnewlines",
    "a trailing space ",
    "  leading spaces",
    "ＦＵＬＬＷＩＤＴＨ ｶﾀｶﾅ and ligatures ﬁ ﬀ",
    "Café naïve coöperate — “quotes” … 1,234.56 €",
    "e\u0301 (combining accent) and \u200b zero-width space",
    "<s> </s> <pad> <mask> [CLS] look like special tokens",
    "UPPER lower MiXeD 12345 3.14159 user@example.com https://example.com/a?b=c",
    "日本語の文章とカタカナ、한국어 문장도 섞여 있습니다.",
    "a" * 700,
    " ".join(["The quick brown fox jumps over the lazy dog."] * 80),
    "ก" * 10 + " " + "α" * 10 + " " + "ж" * 10,
    "query: What is the capital of France?",
]


def xquad_questions(data_dir: Path, per_lang: int) -> list[str]:
    out = []
    for lang in LANGS:
        d = json.loads((data_dir / "xquad-r" / f"{lang}.json").read_text(encoding="utf-8"))
        qs = [qa["question"] for art in d["data"] for p in art["paragraphs"] for qa in p["qas"]]
        sents = [s for art in d["data"] for p in art["paragraphs"] for s in p["sentences"]]
        out += qs[:per_lang] + sents[:per_lang]
    return out


def train_wordpiece(corpus: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors, trainers
    from tokenizers.models import WordPiece
    tok = Tokenizer(WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                strip_accents=False, lowercase=False)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials,
                                                              limit_alphabet=400))
    assert [tok.token_to_id(t) for t in specials] == [0, 1, 2, 3, 4]
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok.decoder = decoders.WordPiece()
    return tok


def train_unigram(corpus: list[str], vocab_size: int):
    from tokenizers import Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors, trainers
    from tokenizers.models import Unigram
    tok = Tokenizer(Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    # A small Unigram vocabulary must hold every character it saw; keep the frequent ones only
    # (the rest become <unk>, as rare characters do in any SentencePiece model).
    counts = Counter(ch for t in corpus for ch in t)
    corpus = ["".join(ch for ch in t if counts[ch] >= 20) for t in corpus]
    tok.train_from_iterator(corpus, trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=specials,
                                                            unk_token="<unk>", max_piece_length=8))
    tok.add_special_tokens(["<mask>"])
    assert [tok.token_to_id(t) for t in specials] == [0, 1, 2, 3]
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)])
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    return tok


def hf_tokenizer(tokenizer_file: Path):
    """transformers reading the file verbatim (no rebuilt pipeline); only the pad token is named."""
    from transformers import PreTrainedTokenizerFast
    vocab = json.loads(tokenizer_file.read_text(encoding="utf-8"))["added_tokens"]
    pad = next(t["content"] for t in vocab if t["content"] in ("<pad>", "[PAD]"))
    return PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_file), pad_token=pad)


def hf_tokenize(tokenizer_file: Path, texts: list[str], max_len: int, prefix: str = "") -> dict:
    """Padded ids and masks, as transformers returns them for one batch."""
    enc = hf_tokenizer(tokenizer_file)([prefix + t for t in texts], truncation=True, max_length=max_len,
                                       padding=True)
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def dump_rows(obj: dict) -> str:
    """JSON with one list of ids per line, so that a failing row is easy to find in a diff."""
    def rows(v):
        return "[\n" + ",\n".join(json.dumps(r) for r in v) + "\n]"
    parts = [f"{json.dumps(k)}: " + (rows(v) if isinstance(v, list) and v and isinstance(v[0], list)
                                     else json.dumps(v, ensure_ascii=False)) for k, v in obj.items()]
    return "{\n" + ",\n".join(parts) + "\n}\n"


def randomise(model: torch.nn.Module, seed: int) -> None:
    """Random weights far from the usual init (LayerNorm gains away from 1, biases away from 0),
    so that a swapped or skipped tensor changes the outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g) * 0.2
            p.copy_(1.0 + noise if name.endswith("LayerNorm.weight") else noise)


def make_tiny(kind: str, data_dir: Path, retrain: bool) -> None:
    from tokenizers import Tokenizer
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast, XLMRobertaConfig, XLMRobertaModel
    out = GOLDEN / f"tiny-{kind}"
    # Tokenizer training is not bit-reproducible (hash-map order, float sums), so an existing
    # tokenizer is reused; everything else below is seeded and comes out the same every run.
    reuse = not retrain and (out / "tokenizer.json").is_file()
    old = Tokenizer.from_file(str(out / "tokenizer.json")) if reuse else None
    out.mkdir(parents=True, exist_ok=True)
    corpus = xquad_questions(data_dir, per_lang=150) if old is None else []
    if kind == "bert":
        tok = old or train_wordpiece(corpus, vocab_size=900)
        cfg = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=4, intermediate_size=64, max_position_embeddings=128,
                         type_vocab_size=2, pad_token_id=0)
        model, meta = BertModel(cfg), {"pooling": "pooler", "normalize": True,
                                       "prefixes": {"query": "", "passage": ""}}
        special = dict(cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]", unk_token="[UNK]",
                       mask_token="[MASK]")
    else:
        tok = old or train_unigram(corpus, vocab_size=1000)
        cfg = XLMRobertaConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2,
                               num_attention_heads=4, intermediate_size=64, max_position_embeddings=130,
                               type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                               layer_norm_eps=1e-5)
        model, meta = XLMRobertaModel(cfg), {"pooling": "mean", "normalize": True,
                                             "prefixes": {"query": "query: ", "passage": "passage: "}}
        special = dict(bos_token="<s>", eos_token="</s>", cls_token="<s>", sep_token="</s>",
                       pad_token="<pad>", unk_token="<unk>", mask_token="<mask>")
    randomise(model, seed=1 if kind == "bert" else 2)
    model.eval()
    model.save_pretrained(out)  # transformers writes config.json + model.safetensors
    PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=128, **special).save_pretrained(out)
    (out / "minihbt.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")

    # Two padded batches of different lengths; the first has a text cut at max_len (40: a small file).
    batches = [TOKENIZER_TEXTS[:12] + [TOKENIZER_TEXTS[25]], TOKENIZER_TEXTS[12:18]]
    tensors = {}
    for b, texts in enumerate(batches):
        enc = hf_tokenizer(out / "tokenizer.json")(
            texts, truncation=True, max_length=40, padding=True, return_tensors="pt")
        with torch.no_grad():
            o = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
        h, m = o.last_hidden_state, enc["attention_mask"]
        mean = (h * m[..., None]).sum(1) / m.sum(1, keepdim=True)  # masked mean, as sentence-transformers
        tensors.update({f"{b}.input_ids": enc["input_ids"], f"{b}.attention_mask": m, f"{b}.last_hidden": h,
                        f"{b}.mean": mean, f"{b}.cls": h[:, 0], f"{b}.pooler": o.pooler_output})
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in tensors.items()}, GOLDEN / f"encoder_tiny-{kind}.safetensors")
    print(f"wrote {out} and encoder_tiny-{kind}.safetensors", file=sys.stderr)


def tokenizer_golden(tokenizer_file: Path, out: Path, max_len: int) -> None:
    golden = {"tokenizer_sha256": hashlib.sha256(tokenizer_file.read_bytes()).hexdigest(),
              "max_len": max_len, "texts": TOKENIZER_TEXTS}
    for name, prefix in (("plain", ""), ("query", "query: ")):
        enc = hf_tokenize(tokenizer_file, TOKENIZER_TEXTS, max_len, prefix)
        golden[f"{name}.input_ids"], golden[f"{name}.attention_mask"] = enc["input_ids"], enc["attention_mask"]
    out.write_text(dump_rows(golden))
    print(f"wrote {out} ({len(TOKENIZER_TEXTS)} texts x 2 prefixes)", file=sys.stderr)


E5_TEXTS = [
    ("query", "how much protein should a female eat"),
    ("passage", "As a general guideline, the average requirement of protein for women ages 19 to 70 "
                "is 46 grams per day."),
    ("query", "ما هي عاصمة مصر؟"),
    ("passage", "القاهرة هي عاصمة جمهورية مصر العربية وأكبر مدنها."),
    ("query", "Wann wurde die Berliner Mauer gebaut?"),
    ("passage", "Die Berliner Mauer wurde am 13. August 1961 errichtet."),
    ("query", "Ποιος έγραψε την Οδύσσεια;"),
    ("passage", "¿Quién pintó la Mona Lisa? Leonardo da Vinci la pintó a principios del siglo XVI."),
    ("query", "भारत की राजधानी क्या है?"),
    ("passage", "Москва — столица России и крупнейший по численности населения город страны."),
    ("query", "ประเทศไทยมีกี่จังหวัด"),
    ("passage", "İstanbul, Türkiye'nin en kalabalık şehridir."),
    ("query", "Hà Nội là thủ đô của nước nào?"),
    ("passage", "长城是中国古代的军事防御工程，全长两万多公里。"),
    ("query", ""),
    ("passage", " ".join(["Long passages are truncated at the maximum length of the model."] * 60)),
]


def e5_golden(model_dir: Path, out: Path) -> None:
    """Embeddings from transformers BertModel + masked mean pooling on the converted directory."""
    from transformers import BertModel
    meta = json.loads((model_dir / "minihbt.json").read_text())
    tok = hf_tokenizer(model_dir / "tokenizer.json")
    model = BertModel.from_pretrained(model_dir, attn_implementation="eager").eval()
    texts = [meta["prefixes"][k] + t for k, t in E5_TEXTS]
    enc = tok(texts, truncation=True, max_length=512, padding=True, return_tensors="pt")
    with torch.no_grad():
        h = model(**enc).last_hidden_state.double()
    m = enc["attention_mask"][..., None].double()
    e = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1).float()
    golden = {"model_sha256": hashlib.sha256((model_dir / "model.safetensors").read_bytes()).hexdigest(),
              "texts": [{"kind": k, "text": t} for k, t in E5_TEXTS],
              "input_ids": [[int(i) for i, a in zip(row, mask) if a] for row, mask in
                            zip(enc["input_ids"].tolist(), enc["attention_mask"].tolist())],
              "embeddings": [[round(float(x), 8) for x in row] for row in e]}
    out.write_text(json.dumps(golden, ensure_ascii=False) + "\n")
    print(f"wrote {out}", file=sys.stderr)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["tiny", "tokenizer", "e5"])
    ap.add_argument("--data", type=Path,
                    default=Path(os.environ.get("MINIHBT_MIRROR", ROOT.parent / "shared" / "data")),
                    help="data mirror with xquad-r/<lang>.json (tiny tokenizers are trained on it)")
    ap.add_argument("--retrain-tokenizers", action="store_true",
                    help="tiny: train new tokenizers instead of reusing tests/golden/tiny-*/tokenizer.json")
    ap.add_argument("--tokenizer", type=Path, help="the e5-small tokenizer.json (default: from the model cache)")
    ap.add_argument("--model-dir", type=Path,
                    help="the converted e5-small directory (default: minihbt.convert.model_dir)")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    if args.what == "tiny":
        for kind in ("bert", "xlmr"):
            make_tiny(kind, args.data, args.retrain_tokenizers)
        golden = {"max_len": 128, "texts": TOKENIZER_TEXTS}
        for kind in ("bert", "xlmr"):
            enc = hf_tokenize(GOLDEN / f"tiny-{kind}" / "tokenizer.json", TOKENIZER_TEXTS, 128)
            golden[f"{kind}.input_ids"], golden[f"{kind}.attention_mask"] = enc["input_ids"], enc["attention_mask"]
        (GOLDEN / "tokenizer_tiny.json").write_text(dump_rows(golden))
    else:
        model_dir = args.model_dir
        if model_dir is None:
            from minihbt.io.convert import model_dir as fetch_model_dir
            model_dir = fetch_model_dir("e5-small")
        if args.what == "tokenizer":
            tokenizer_golden(args.tokenizer or model_dir / "tokenizer.json", GOLDEN / "tokenizer_e5.json",
                             max_len=64)
        else:
            e5_golden(model_dir, GOLDEN / "e5_small.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
