"""Write tests/golden/loss_infonce.json: InfoNCE values from sentence-transformers.

The reference is sentence-transformers `MultipleNegativesRankingLoss` (scale 20 = temperature
0.05, cosine similarity, query -> passage direction), fed the same fixed float64 embeddings
through `compute_loss_from_embeddings`, so no model is involved. Its hard negatives are whole
extra columns shared by every query, laid out [positives, negatives_1, negatives_2, ...]; the
test passes the same rows to `info_nce(..., hard_negatives=...)` in that order.

The embeddings are random but deliberately not unit length (the loss must take the cosine
itself) and stored in the file, so the test needs neither this script nor sentence-transformers.

    python tools/gen_loss_golden.py
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from minihbt.io.files import atomic_write_json  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "tests" / "golden" / "loss_infonce.json"


def st_loss(columns: list[np.ndarray], scale: float) -> float:
    mnrl = MultipleNegativesRankingLoss(model=None, scale=scale)
    embeddings = [torch.tensor(c, dtype=torch.float64) for c in columns]
    return mnrl.compute_loss_from_embeddings(embeddings, labels=None).item()


def main() -> None:
    rng = np.random.default_rng(20240820)
    cases = []
    # (name, batch size, dim, number of hard-negative columns, scale)
    for name, b, h, k, scale in [
        ("in_batch", 4, 8, 0, 20.0),
        ("hard_negatives_1", 4, 8, 1, 20.0),
        ("hard_negatives_2", 3, 5, 2, 20.0),
        ("scale_1", 5, 6, 0, 1.0),
    ]:
        queries = rng.normal(size=(b, h)) * rng.uniform(0.5, 3.0, size=(b, 1))
        # Positives near their queries so the loss is not just log(N).
        positives = queries + 2.0 * rng.normal(size=(b, h))
        negatives = [rng.normal(size=(b, h)) for _ in range(k)]
        cases.append({
            "name": name,
            "temperature": 1.0 / scale,
            "queries": queries.tolist(),
            "positives": positives.tolist(),
            "hard_negatives": np.concatenate(negatives).tolist() if k else None,
            "st_mnrl": st_loss([queries, positives, *negatives], scale),
        })
    import sentence_transformers

    atomic_write_json(OUT, {
        "source": f"sentence-transformers {sentence_transformers.__version__} "
                  "MultipleNegativesRankingLoss.compute_loss_from_embeddings, float64",
        "cases": cases,
    })
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
