"""Streamed exact search (minihbt.shards) against faiss IndexFlatIP: 1M x 384 synthetic vectors.

A corpus of --rows unit vectors (seeded Gaussian, generated shard by shard, so the parent never
holds it) is written as a minihbt shard store; --queries unit queries ask for their top --k.
Each contender runs in its own process, so that its peak memory is its own:
- `minihbt_stream`: shards.topk, one shard in memory at a time (read from the page cache);
- `faiss`: IndexFlatIP holding the whole corpus (its add is timed apart from its search);
- `minihbt_memory`: search.topk on the whole corpus as one in-memory matrix (for reference).
"peak MB" is the process's peak resident set above its size after the imports (VmHWM reset via
/proc/self/clear_refs, minus VmRSS then), so it counts what the search holds (faiss: the corpus;
streaming: a shard, the scores of a block of queries, the running top-k). Results are checked
as in bench/search.py: scores equal to 1e-5, the same indices wherever faiss's scores are not
within 1e-6 of a tie.

    python bench/stream_search.py [--rows 1000000] [--dim 384] [--queries 1000] [--k 100]
                                  [--shard-rows 65536] [--repeat 2] [--dir DIR]
Last line: {"name": "stream_search", "minihbt_stream": s, "faiss": s, "ratio_faiss": ..., "peak_mb": {...}}
"""
import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from timing import best_of  # noqa: E402  (bench/ is on sys.path when run as a script)
from minihbt import shards  # noqa: E402


def unit_rows(seed: int, a: int, b: int, dim: int) -> np.ndarray:
    x = np.random.default_rng([seed, a]).standard_normal((b - a, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM := current RSS


def status_mb(field: str) -> float:
    status = Path("/proc/self/status").read_text()
    return int(status.split(f"{field}:")[1].split()[0]) / 1024  # kB


def side(name: str, a) -> dict:
    import torch

    store = shards.open_store(Path(a.dir) / "store")
    q = np.load(Path(a.dir) / "queries.npy")
    out = {"side": name, "threads": torch.get_num_threads()}
    reset_peak()
    base = status_mb("VmRSS")
    if name == "minihbt_stream":
        t, (D, I) = best_of(lambda: shards.topk(q, store, a.k), a.repeat)
    elif name == "minihbt_memory":
        from minihbt import search
        c = store.array()
        t, (D, I) = best_of(lambda: search.topk(q, c, a.k), a.repeat)
    else:
        import faiss
        out["threads"] = faiss.omp_get_max_threads()
        t0 = time.perf_counter()
        index = faiss.IndexFlatIP(store.dim)
        for i in range(store.n_shards):
            index.add(store.shard(i))
        out["add_seconds"] = round(time.perf_counter() - t0, 3)
        t, (D, I) = best_of(lambda: index.search(q, a.k), a.repeat)
    out |= {"seconds": round(t, 3), "peak_mb": round(status_mb("VmHWM") - base, 1)}
    np.savez(Path(a.dir) / f"{name}.npz", D=D, I=I)
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--shard-rows", type=int, default=shards.SHARD_ROWS)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--dir", help="work directory (default: a temporary one, removed at the end)")
    p.add_argument("--side", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.side:
        print(json.dumps(side(a.side, a)))
        return

    own_dir = a.dir is None
    a.dir = a.dir or tempfile.mkdtemp(prefix="stream_search.")
    try:
        t0 = time.perf_counter()
        shards.write_store(Path(a.dir) / "store", a.rows, a.dim, lambda s, e: unit_rows(0, s, e, a.dim), a.shard_rows)
        np.save(Path(a.dir) / "queries.npy", unit_rows(1, 0, a.queries, a.dim))
        print(f"store: {a.rows} x {a.dim} in shards of {a.shard_rows}, written in {time.perf_counter() - t0:.1f} s",
              file=sys.stderr)
        figures = {}
        for name in ("faiss", "minihbt_stream", "minihbt_memory"):
            cmd = [sys.executable, __file__, "--side", name, "--dir", a.dir, "--k", str(a.k), "--repeat", str(a.repeat)]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                sys.exit(f"{name} failed:\n{r.stderr[-3000:]}")
            figures[name] = json.loads(r.stdout.strip().splitlines()[-1])
            print(f"{name:>15}: {figures[name]}", file=sys.stderr)
        res = {n: np.load(Path(a.dir) / f"{n}.npz") for n in figures}
        D, I = res["faiss"]["D"], res["faiss"]["I"]
        near_tie = np.abs(np.diff(D, axis=1, prepend=np.inf)) < 1e-6
        near_tie |= np.abs(np.diff(D, axis=1, append=-np.inf)) < 1e-6
        for n in ("minihbt_stream", "minihbt_memory"):
            np.testing.assert_allclose(res[n]["D"], D, rtol=0, atol=1e-5)
            assert not ((res[n]["I"] != I) & ~near_tie).any(), f"{n}: top-k indices differ away from near-ties"
        same = float((res["minihbt_stream"]["I"] == I).mean())
        stream_vs_memory = bool((res["minihbt_stream"]["I"] == res["minihbt_memory"]["I"]).all())
        t = {n: figures[n]["seconds"] for n in figures}
        print(json.dumps({
            "name": "stream_search", "shape": [a.rows, a.dim], "queries": a.queries, "k": a.k,
            "shard_rows": a.shard_rows, "minihbt_stream": t["minihbt_stream"], "faiss": t["faiss"],
            "minihbt_memory": t["minihbt_memory"], "faiss_add": figures["faiss"]["add_seconds"],
            "ratio_faiss": round(t["minihbt_stream"] / t["faiss"], 3),
            "peak_mb": {n: figures[n]["peak_mb"] for n in figures},
            "indices_equal_faiss": same, "stream_equals_memory": stream_vs_memory,
            "threads": {n: figures[n]["threads"] for n in figures}}))
    finally:
        if own_dir:
            shutil.rmtree(a.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
