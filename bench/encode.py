"""Encoding throughput: minihbt TextEncoder.encode (fp32, bf16, int8) against transformers,
sentence-transformers and ONNX Runtime / OpenVINO (fp32 and int8).

--n real MLQA-R candidate sentences (a seeded sample over its 7 languages; 2,000 by default),
e5-small, "passage: " prefix, batch 64, max_len 512, on CPU with --threads torch threads (2 by
default, as the project machine). Every system uses the same converted directory:
  minihbt_fp32              TextEncoder.encode, dtype "fp32" (length-sorted batches);
  minihbt_bf16              the same model, dtype "bf16" (autocast; minihbt/text_encoder.py);
  minihbt_bf16_inductor     a copy of it whose forward is torch.compile'd (inductor, dynamic shapes,
                            freezing: weights folded in as constants), the fastest bf16 path torch
                            offers on a CPU; its compile time falls in the warm-up;
  minihbt_int8              the same weights quantised, dtype "int8" (minihbt/quant.py);
  minihbt_int8_inductor     that int8 model through TextEncoder.compile (eval.py --dtype int8
                            --compile): inductor fuses what surrounds the int8 GEMMs;
  transformers              BertModel (attn_implementation="sdpa") + masked mean pooling + L2, the
                            loop of the e5 model card: batches in input order, fp32;
  transformers_sorted       the same model, batches sorted by token length as minihbt does, fp32;
  transformers_sorted_bf16  that loop under torch.autocast("cpu", bfloat16), as a user would add it;
  sentence_transformers     SentenceTransformer(dir).encode(prompt_name="passage"), which sorts too.
  onnxruntime_fp32          the transformers BertModel + mean pooling + L2 exported once with
                            torch.onnx.export (cached under $MINIHBT_CACHE/bench), ONNX Runtime CPU,
                            minihbt's token ids, length-sorted batches;
  onnxruntime_int8          that export through onnxruntime.quantization.quantize_dynamic with its
                            defaults (uint8 activations per tensor, int8 weights), what
                            sentence-transformers' export_dynamic_quantized_onnx_model does;
  openvino_fp32 / openvino_int8  the same two ONNX files compiled by OpenVINO for its CPU plugin.
The ONNX / OpenVINO systems need `pip install -e ".[bench-int8]"` (onnxruntime, onnx, onnxscript,
openvino; no optimum, so transformers 5 stays).
The machine is shared, so the systems take turns on slices of --chunk texts (the order of turns
rotates from slice to slice), and each one's time is the sum over the slices: load from other
processes falls on all of them alike. Each system sorts (or not) within a slice, as it would in
one call. The fp32 systems' embeddings must equal minihbt_fp32's (max abs difference <= 1e-4);
for the bf16 and int8 ones the mean, 1st percentile and minimum cosine to minihbt_fp32's rows are
reported. Every system is warmed up first on a full slice (the first --chunk texts, untimed), so
no one-time cost (allocations, oneDNN kernel selection, lazy imports) falls on whoever runs first;
--passes P times every system P times over the texts and keeps, per system, the faster pass.

    MINIHBT_MIRROR=../shared/data python bench/encode.py [--n 2000] [--threads 2] [--chunk 250]
        [--batch-size 64] [--systems minihbt_fp32,minihbt_bf16,...]
Last line: {"name": "encode", "texts_per_s": {system: rate}, "vs_transformers_sorted": {system:
rate / transformers_sorted's rate}, "min_cosine_vs_fp32": {...}, "machine": {...}, ...}
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from minihbt import quant  # noqa: E402
from minihbt.io.convert import model_dir  # noqa: E402
from minihbt.lareqa import load_lareqa  # noqa: E402
from minihbt.text_encoder import TextEncoder, cpu_has_bf16, load_encoder, quantize  # noqa: E402

SYSTEMS = ("minihbt_fp32", "minihbt_bf16", "minihbt_bf16_inductor", "minihbt_int8", "minihbt_int8_inductor",
           "transformers", "transformers_sorted", "transformers_sorted_bf16", "sentence_transformers",
           "onnxruntime_fp32", "onnxruntime_int8", "openvino_fp32", "openvino_int8")
LOW = ("bf16", "int8", "inductor")  # systems compared with minihbt_fp32 by cosine, not by max abs difference


def sample_sentences(n: int, seed: int = 0) -> list[str]:
    data = load_lareqa("mlqa-r")
    texts = [c.text for lang in data.langs for c in data.candidates[lang]]
    idx = np.random.default_rng(seed).choice(len(texts), size=n, replace=False)
    return [texts[i] for i in idx]


def machine() -> dict:
    """What the figures depend on: load, cores, bf16 instructions, library versions."""
    import importlib.metadata
    flags = set()
    try:
        flags = {f for line in open("/proc/cpuinfo") if line.startswith("flags") for f in line.split()[2:]}
    except OSError:
        pass
    versions = {}
    for pkg in ("transformers", "sentence-transformers", "onnxruntime", "openvino"):
        try:
            versions[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "loadavg": os.getloadavg(),
            "cpus": os.cpu_count(), "cpu_bf16": cpu_has_bf16(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_flags": sorted(f for f in flags if f.startswith(("avx", "amx")) or f in ("fma", "f16c")),
            "torch": torch.__version__, **versions}


def onnx_files(path: Path) -> dict[str, Path]:
    """e5-small (transformers BertModel + masked mean pooling + L2) as ONNX, fp32 and int8 (quantize_dynamic)."""
    from minihbt.io.artifacts import cache_dir
    out = cache_dir() / "bench"
    files = {"fp32": out / "e5-small-fp32.onnx", "int8": out / "e5-small-int8.onnx"}
    if not files["fp32"].is_file():
        from transformers import BertModel
        bert = BertModel.from_pretrained(path, attn_implementation="eager").eval()

        class Pooled(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.bert = bert

            def forward(self, input_ids, attention_mask):
                h = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
                m = attention_mask[..., None].to(h.dtype)
                return torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1)

        out.mkdir(parents=True, exist_ok=True)
        ids = torch.ones(2, 16, dtype=torch.long)
        tmp = files["fp32"].with_suffix(".tmp.onnx")
        with torch.no_grad():
            torch.onnx.export(Pooled().eval(), (ids, ids), str(tmp), input_names=["input_ids", "attention_mask"],
                              output_names=["embedding"], opset_version=17, dynamo=False,
                              dynamic_axes={"input_ids": {0: "B", 1: "T"}, "attention_mask": {0: "B", 1: "T"}})
        tmp.replace(files["fp32"])
    if not files["int8"].is_file():
        from onnxruntime.quantization import QuantType, quantize_dynamic
        tmp = files["int8"].with_suffix(".tmp.onnx")
        quantize_dynamic(str(files["fp32"]), str(tmp), weight_type=QuantType.QInt8)
        tmp.replace(files["int8"])
    return files


def onnx_encoder(te: TextEncoder, file: Path, batch_size: int, threads: int, runtime: str):
    """ONNX Runtime or OpenVINO on `file`, fed minihbt's token ids in length-sorted batches."""
    if runtime == "onnxruntime":
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        sess = ort.InferenceSession(str(file), so, providers=["CPUExecutionProvider"])
        run = lambda ids, mask: sess.run(None, {"input_ids": ids, "attention_mask": mask})[0]  # noqa: E731
    else:
        import openvino as ov
        compiled = ov.Core().compile_model(str(file), "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                              "INFERENCE_PRECISION_HINT": "f32"})
        run = lambda ids, mask: compiled({"input_ids": ids, "attention_mask": mask})[0]  # noqa: E731

    def encode(texts):
        ids = te.tokenizer.encode(list(texts), te.prefixes["passage"], 512)
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        out = np.empty((len(ids), te.model.config.hidden_size), dtype=np.float32)
        for s in range(0, len(order), batch_size):
            rows = order[s:s + batch_size]
            b = te.tokenizer.pad([ids[i] for i in rows])
            out[rows] = run(b["input_ids"].numpy(), b["attention_mask"].numpy())
        return out

    return encode


def transformers_encoder(path: Path, batch_size: int, sort: bool, bf16: bool = False):
    from transformers import BertModel, PreTrainedTokenizerFast
    tok = PreTrainedTokenizerFast(tokenizer_file=str(path / "tokenizer.json"), pad_token="<pad>")
    model = BertModel.from_pretrained(path, attn_implementation="sdpa").eval()

    def encode(texts):
        texts = ["passage: " + t for t in texts]
        order = list(range(len(texts)))
        if sort:
            lengths = [len(ids) for ids in tok(texts, truncation=True, max_length=512)["input_ids"]]
            order.sort(key=lambda i: -lengths[i])
        out = np.empty((len(texts), model.config.hidden_size), dtype=np.float32)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            for s in range(0, len(order), batch_size):
                rows = order[s:s + batch_size]
                enc = tok([texts[i] for i in rows], truncation=True, max_length=512, padding=True,
                          return_tensors="pt")
                h = model(**enc).last_hidden_state.float()
                m = enc["attention_mask"][..., None].to(h.dtype)
                out[rows] = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=-1).numpy()
        return out

    return encode


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--chunk", type=int, default=250, help="texts per turn")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated subset of " + ",".join(SYSTEMS))
    p.add_argument("--passes", type=int, default=1, help="timed passes over the texts; each system's fastest counts")
    p.add_argument("--out", help="also write the last line's JSON to this file")
    p.add_argument("--keep-freed-memory", action="store_true",
                   help="what eval.py does (minihbt.step.keep_freed_memory): every system alike, no page faults")
    a = p.parse_args()
    names = [s for s in a.systems.split(",") if s]
    if set(names) - set(SYSTEMS) or "minihbt_fp32" not in names:
        sys.exit(f"--systems: a subset of {','.join(SYSTEMS)} that includes minihbt_fp32")
    torch.set_num_threads(a.threads)
    if a.keep_freed_memory:
        from minihbt.step import keep_freed_memory
        keep_freed_memory()
    texts = sample_sentences(a.n)
    path = model_dir("e5-small")
    before = machine()

    te = load_encoder(path)
    te16 = TextEncoder(te.model, te.tokenizer, te.prefixes, te.meta, dtype="bf16")  # same weights
    te8 = te8c = te16c = None
    if "minihbt_bf16_inductor" in names:  # a copy: compiling replaces forward on the object it is given
        import copy

        from torch._inductor import config as inductor_config
        inductor_config.freezing = True
        te16c = TextEncoder(copy.deepcopy(te.model), te.tokenizer, te.prefixes, te.meta, dtype="bf16")
        te16c.model.forward = torch.compile(te16c.model.forward, dynamic=True)
    if "minihbt_int8" in names:  # a quantised copy (quantize swaps the Linears in place)
        import copy
        te8 = TextEncoder(quantize(copy.deepcopy(te.model)), te.tokenizer, te.prefixes, te.meta, dtype="int8")
    if "minihbt_int8_inductor" in names:  # another quantised copy, compiled as eval.py --compile does
        import copy
        te8c = TextEncoder(quantize(copy.deepcopy(te.model)), te.tokenizer, te.prefixes, te.meta,
                           dtype="int8").compile()
    onnx = onnx_files(path) if any(k.startswith(("onnx", "openvino")) for k in names) else {}
    make = {
        "minihbt_fp32": lambda: lambda x: te.encode(x, kind="passage", batch_size=a.batch_size, progress=False),
        "minihbt_bf16": lambda: lambda x: te16.encode(x, kind="passage", batch_size=a.batch_size, progress=False),
        "minihbt_bf16_inductor": lambda: lambda x: te16c.encode(x, kind="passage", batch_size=a.batch_size,
                                                               progress=False),
        "transformers": lambda: transformers_encoder(path, a.batch_size, sort=False),
        "transformers_sorted": lambda: transformers_encoder(path, a.batch_size, sort=True),
        "transformers_sorted_bf16": lambda: transformers_encoder(path, a.batch_size, sort=True, bf16=True),
        "sentence_transformers": lambda: sentence_transformers_encoder(path, a.batch_size),
        "minihbt_int8": lambda: lambda x: te8.encode(x, kind="passage", batch_size=a.batch_size, progress=False),
        "minihbt_int8_inductor": lambda: lambda x: te8c.encode(x, kind="passage", batch_size=a.batch_size,
                                                               progress=False),
        **{f"{rt}_{d}": (lambda rt=rt, d=d: onnx_encoder(te, onnx[d], a.batch_size, a.threads, rt))
           for rt in ("onnxruntime", "openvino") for d in ("fp32", "int8")},
    }
    systems = {k: make[k]() for k in names}
    warmup = {}
    for name, fn in systems.items():  # warm-up on a whole slice: allocations, kernel selection, lazy imports
        t = time.perf_counter()
        fn(texts[:a.chunk])
        warmup[name] = round(time.perf_counter() - t, 1)  # inductor's compile time is here
    passes = []
    for pass_ in range(a.passes):
        total, outputs = dict.fromkeys(names, 0.0), {k: [] for k in names}
        for c, start in enumerate(range(0, len(texts), a.chunk)):
            chunk = texts[start:start + a.chunk]
            c += pass_
            for name in names[c % len(names):] + names[:c % len(names)]:
                t = time.perf_counter()
                outputs[name].append(systems[name](chunk))
                total[name] += time.perf_counter() - t
            print(f"pass {pass_ + 1}, {start + len(chunk)}/{len(texts)} texts (load {os.getloadavg()[0]:.1f}): "
                  + ", ".join(f"{k} {v:.1f} s" for k, v in total.items()), file=sys.stderr)
        passes.append({k: round(v, 2) for k, v in total.items()})
    total = {k: min(p[k] for p in passes) for k in names}
    outputs = {k: np.concatenate(v) for k, v in outputs.items()}
    ref = outputs["minihbt_fp32"]
    diff = {k: float(np.abs(v - ref).max()) for k, v in outputs.items()
            if k != "minihbt_fp32" and not k.endswith(LOW)}
    assert not diff or max(diff.values()) <= 1e-4, f"fp32 embeddings differ from minihbt's: {diff}"
    cosines = {k: (v * ref).sum(1) for k, v in outputs.items() if k.endswith(LOW)}
    min_cos = {k: round(float(c.min()), 6) for k, c in cosines.items()}
    cos = {k: {"mean": round(float(c.mean()), 6), "p1": round(float(np.percentile(c, 1)), 6),
               "min": round(float(c.min()), 6)} for k, c in cosines.items()}
    rate = {k: round(len(texts) / v, 2) for k, v in total.items()}
    base = rate.get("transformers_sorted")
    print(f"{'system':26s} {'texts/s':>8s} {'vs transformers_sorted':>23s} {'vs minihbt_fp32':>16s}")
    for k, v in rate.items():
        print(f"{k:26s} {v:8.2f} {v / base if base else float('nan'):23.2f} {v / rate['minihbt_fp32']:16.2f}")
    print(f"cosine to minihbt fp32 (mean, 1st percentile, min): {cos}   max abs diff (fp32): {diff}")
    result = {"name": "encode", "model": "e5-small", "n": len(texts), "threads": a.threads,
              "batch_size": a.batch_size, "chunk": a.chunk, "unit": "texts/s", "texts_per_s": rate,
              "vs_transformers_sorted": {k: round(v / base, 3) for k, v in rate.items()} if base else None,
              "vs_minihbt_fp32": {k: round(v / rate["minihbt_fp32"], 3) for k, v in rate.items()},
              "min_cosine_vs_fp32": min_cos, "cosine_vs_fp32": cos, "max_abs_diff_fp32": diff,
              "seconds": {k: round(v, 1) for k, v in total.items()}, "passes": passes, "warmup_s": warmup,
              "machine": before, "keep_freed_memory": a.keep_freed_memory, "loadavg_after": os.getloadavg(),
              "int8_gemm": quant.scheme() + f" ({quant.backend()[0]})" if any("int8" in k for k in rate) else None}
    print(json.dumps(result))
    if a.out:
        Path(a.out).write_text(json.dumps(result, indent=1) + "\n")


def sentence_transformers_encoder(path: Path, batch_size: int):
    from sentence_transformers import SentenceTransformer
    st = SentenceTransformer(str(path), device="cpu")
    return lambda x: st.encode(x, prompt_name="passage", batch_size=batch_size, show_progress_bar=False)


if __name__ == "__main__":
    main()
