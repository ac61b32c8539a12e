"""minihbt: a minimal reference implementation of hybrid batch training for multilingual retrieval.

Elmahdy, Lin, Ahmad, "Synergistic Approach for Simultaneous Optimization of Monolingual,
Cross-lingual, and Multilingual Information Retrieval" (arXiv 2408.10536).
"""
__version__ = "0.1.0"


def load_encoder(name_or_dir: str, device: str = "cpu", dtype: str = "fp32"):
    """A `TextEncoder` for a manifest model name (e.g. "e5-small") or a Hugging Face directory;
    dtype "fp32" | "bf16" | "int8" (minihbt/text_encoder.py, minihbt/quant.py)."""
    # Imported here, not at the top, only so that `import minihbt` stays free of torch (import
    # cost): text_encoder never imports this package's __init__, so there is no cycle to dodge.
    from minihbt.text_encoder import load_encoder as _load

    return _load(name_or_dir, device=device, dtype=dtype)
