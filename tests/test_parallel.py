"""minihbt/parallel.py and its use in train.py: data-parallel steps over processes, GradCache,
checkpoints and resumption under torchrun. Processes talk over gloo on 127.0.0.1; tiny-bert."""
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from conftest import cli, train_cli
from minihbt import load_encoder, parallel
from minihbt.config import TrainConfig
from minihbt import step as train_step
from minihbt.lareqa import load_groups
from minihbt.loss import info_nce
from minihbt.sampler import Batch, draw_hard_negatives
from test_train import LANGS, TINY_BERT, args, losses, steps, write_lareqa
from test_train import data, one_thread  # noqa: F401  pytest fixtures shared with test_train

ROOT = Path(__file__).resolve().parent.parent


def without_dropout(dir: Path) -> str:
    shutil.copytree(TINY_BERT, dir)
    config = json.loads((dir / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (dir / "config.json").write_text(json.dumps(config))
    return str(dir)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(fn, world_size: int, *fn_args):
    """Run fn(*fn_args) in `world_size` fresh processes set up as torchrun sets up its workers."""
    mp.spawn(_worker, args=(world_size, free_port(), fn, fn_args), nprocs=world_size)


def _worker(rank, world_size, port, fn, fn_args):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world_size))
    torch.set_num_threads(1)
    fn(*fn_args)


# --- data parallel == one process -------------------------------------------------------------

# Global batches over write_lareqa(shared=True), where q<k>b shares q<k>'s answer sentence: each
# pair sits on different ranks (examples 0-1 on rank 0, 2-3 on rank 1), so their masked columns
# are gathered ones. Hand count, 2 masked (query, column) pairs per batch: (0, 2) and (2, 0) in
# batches 1 and 2 (the same en sentence twice); in batch 3, column 0 (q06b's passage, de) is
# q06's answer in de and column 3 (q06's passage, es) is q06b's answer in es: (3, 0) and (0, 3).
BATCHES = [
    ("mono", ["q00", "q04", "q00b", "q07"], [("en", "en")] * 4),
    ("cross", ["q03b", "q06", "q03", "q10"], [("de", "en"), ("en", "es"), ("es", "en"), ("de", "es")]),
    ("cross", ["q06b", "q01", "q09", "q06"], [("es", "de"), ("de", "en"), ("en", "es"), ("en", "es")]),
]


def three_steps(model_dir: str, data: str, chunk: int, recipe: bool, out: str | None = None,
                world: parallel.World = parallel.SINGLE) -> dict:
    """Three AdamW steps of train.py's step on the global BATCHES, in float64, on this process's
    shard. recipe: the paper recipe, 2 hard negatives per example drawn by the sampler's rule (batch 1
    leaves q00b's slots empty: q00 took its paragraph's other sentences) and the false-negative mask;
    else neither (the false negatives stay in as negatives)."""
    torch.manual_seed(0)
    cfg = TrainConfig(batch_size=4, lr=1e-3, max_steps=3, warmup=1, grad_cache_chunk=chunk,
                            hard_negatives=2 * recipe, false_negatives="mask" if recipe else "keep")
    encoder = load_encoder(model_dir)
    encoder.model.double().train()  # float64: differences are summation order, ~1e-16, not float32 noise
    embed = train_step.make_embed(encoder, cfg)
    optimizer = train_step.make_optimizer(encoder.model, cfg)
    groups = {data: load_groups(data, LANGS)}
    rng = np.random.default_rng(0)
    logged, masked, empty = [], [], []
    for step, (kind, gids, pairs) in enumerate(BATCHES, 1):
        hard = draw_hard_negatives(rng, groups[data], gids, pairs, cfg.hard_negatives) if recipe else []
        batch = Batch(kind, data, gids, pairs, hard)
        x = train_step.inputs(batch, groups[data], cfg.false_negatives == "mask")
        texts, mask, n_false = x.hard, x.mask, x.false_negatives
        masked.append(0 if mask is None else int(mask[:, :4].sum()))  # the mask's in-batch part
        assert n_false == 2  # found either way; with "keep" they stay in the softmax
        empty.append(texts.count(None))
        for g in optimizer.param_groups:
            g["lr"] = train_step.lr_at(step, cfg)
        loss = train_step.loss_and_backward(encoder, embed, parallel.shard_inputs(x, world), cfg, world)
        logged.append(parallel.mean(loss, world))
        parallel.average_gradients(encoder.model, world)
        if step == 1:  # AdamW would hide a wrong gradient scale; compare the gradient itself too
            first_grads = grads(encoder.model)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    result = {"losses": logged, "grads": first_grads, "weights": encoder.model.state_dict(), "masked": masked,
              "empty": empty}
    if out and world.rank == 0:
        torch.save(result, out)
    return result


def two_ranks(model_dir, data, out):
    # One process group for both runs: re-creating it on the same port races with its teardown.
    world = parallel.init("cpu")
    three_steps(model_dir, data, 0, True, f"{out}-plain.pt", world)
    three_steps(model_dir, data, 2, True, f"{out}-gradcache.pt", world)  # GradCache over gathered embeddings
    parallel.finish(world)


def max_diff(a: dict, b: dict) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    return str(write_lareqa(tmp_path_factory.mktemp("lareqa") / "shared", shared=True))


def test_two_processes_match_one_process(shared, tmp_path):
    data = shared
    model = without_dropout(tmp_path / "tiny-bert")  # the ranks' dropout masks would differ
    one = three_steps(model, data, 0, recipe=True)
    assert one["masked"] == [2, 2, 2] and one["empty"][0] == 2  # the hand count; q00b's two empty slots
    spawn(two_ranks, 2, model, data, str(tmp_path / "two"))
    for variant in ("plain", "gradcache"):
        two = torch.load(tmp_path / f"two-{variant}.pt")
        assert two["losses"] == pytest.approx(one["losses"], abs=1e-12), variant
        assert max_diff(two["grads"], one["grads"]) <= 1e-12, variant
        assert max_diff(two["weights"], one["weights"]) <= 1e-6, variant
    # The comparison can fail: the hard negatives and the mask are in the loss and move the weights.
    assert max_diff(three_steps(model, data, 0, recipe=False)["weights"], one["weights"]) > 1e-4


# --- one rank with no hard negatives (JSONL data where only en has them) ---------------------

def write_groups_en_hard_only(path: Path) -> str:
    """A minihbt/jsonl_groups.py file, 12 groups in en and de; only the en examples have hard_negatives,
    so every slot of an example whose passage is German stays empty."""
    colors = {"en": ["red", "green", "blue", "white", "black", "grey"],
              "de": ["rote", "grüne", "blaue", "weiße", "schwarze", "graue"]}
    animals = {"en": ["cat", "horse", "bird", "fish"], "de": ["Katze", "Pferd", "Vogel", "Fisch"]}
    lines = []
    for k in range(12):
        ex = {}
        for lang in ("en", "de"):
            c, a = colors[lang][k % 6], animals[lang][k // 6 * 2 + k % 2]
            ex[lang] = ({"query": f"Where does the {c} {a} live?", "passage": f"The {c} {a} lives in town {k}.",
                         "hard_negatives": [f"The {c} {a} sleeps in house {k}.", f"A {c} dog lives near {k}."]}
                        if lang == "en" else
                        {"query": f"Wo lebt die {c} {a}?", "passage": f"Die {c} {a} lebt in Stadt {k}."})
        lines.append(json.dumps({"id": f"g{k}", "examples": ex}, ensure_ascii=False))
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def ranks_with_timeout(argv: list[str], world_size: int, out: Path, timeout: float) -> list[int]:
    """`python train.py argv` in `world_size` processes set up as torchrun sets up its workers (one
    process each, so each can be killed): their exit codes. Past the timeout every one is killed
    and the test fails, so a hang fails rather than blocks."""
    env = os.environ | {"OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
                        "WORLD_SIZE": str(world_size)}
    procs = []
    for rank in range(world_size):
        with open(out / f"rank{rank}.err", "w") as err:
            procs.append(subprocess.Popen([sys.executable, str(ROOT / "train.py"), *map(str, argv)], cwd=ROOT,
                                          stdout=subprocess.DEVNULL, stderr=err,
                                          env=env | {"RANK": str(rank), "LOCAL_RANK": str(rank)}))
    deadline = time.monotonic() + timeout
    try:
        return [p.wait(timeout=max(deadline - time.monotonic(), 0.1)) for p in procs]
    except subprocess.TimeoutExpired:
        pytest.fail(f"train.py over {world_size} processes did not finish in {timeout} s (a rank waits in a "
                    "collective)")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.mark.parametrize("extra", [[], ["--grad-cache-chunk", "1"]], ids=["direct", "grad-cache"])
def test_rank_without_hard_negatives_does_not_hang(extra, tmp_path, capsys):
    model = without_dropout(tmp_path / "tiny-bert")  # the ranks' dropout masks would differ from 1 process
    jsonl = write_groups_en_hard_only(tmp_path / "groups.jsonl")
    flags = ["--sampler", "hybrid", "--model", model, "--train-data", jsonl, "--langs", "de,en", "--batch-size", "4",
             "--hard-negatives", "1", "--seed", "3", "--max-steps", "4", "--val-every", "0", "--log-every", "1",
             "--lr", "1e-3", *extra]
    # The case is drawn: in some batch one rank's examples (0-1 or 2-3) have only empty slots and
    # the other rank's do not.
    capsys.readouterr()
    assert cli("train.py", flags + ["--show-batches", "4"]) == 0
    batches = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    filled = [[any(s is not None for e in b["hard_negatives"][r:r + 2] for s in e) for r in (0, 2)] for b in batches]
    assert [True, False] in filled or [False, True] in filled, filled

    assert cli("train.py", flags + ["--out", tmp_path / "one"]) == 0
    codes = ranks_with_timeout(flags + ["--out", tmp_path / "two"], 2, tmp_path, timeout=120)
    assert codes == [0, 0], (tmp_path / "rank0.err").read_text()[-3000:]
    assert steps(tmp_path / "two") == [1, 2, 3, 4]
    assert losses(tmp_path / "two") == pytest.approx(losses(tmp_path / "one"), rel=1e-5)


# --- GradCache == the whole batch -------------------------------------------------------------

TEXTS = {
    "query": ["Where does the red cat live?", "Wo lebt die blaue Katze?", "¿Dónde vive el pez?",
              "Where does the white horse live?", "Wo lebt der Vogel?"],
    "passage": ["The red cat lives in Paris.", "Die blaue Katze lebt in Rom.", "El pez vive en Oslo.",
                "The white horse lives in Rome.", "Der Vogel lebt in Oslo."],
    "hard": ["The green bird lives in Oslo.", "Die rote Katze lebt in Paris.", "La gata blanca vive en Roma."],
}


def grads(model) -> dict:
    return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def grad_cache_step(encoder, chunk):
    cfg = TrainConfig(grad_cache_chunk=chunk)
    torch.manual_seed(0)
    loss = train_step.loss_and_backward(encoder, train_step.make_embed(encoder, cfg),
                                        train_step.Inputs(TEXTS["query"], TEXTS["passage"], TEXTS["hard"]), cfg)
    out = loss.item(), grads(encoder.model), torch.get_rng_state()
    encoder.model.zero_grad(set_to_none=True)
    return out


def whole_batch_step(encoder, chunk):
    """Reference: all chunks embedded with autograd at once (every activation held), one backward."""
    torch.manual_seed(0)
    embs = [torch.cat([encoder.model.embed(**encoder.tokenize(t[i:i + chunk], kind, 128))
                       for i in range(0, len(t), chunk)])
            for t, kind in [(TEXTS["query"], "query"), (TEXTS["passage"], "passage"), (TEXTS["hard"], "passage")]]
    loss = info_nce(*embs[:2], hard_negatives=embs[2])
    loss.backward()
    out = loss.item(), grads(encoder.model), torch.get_rng_state()
    encoder.model.zero_grad(set_to_none=True)
    return out


def test_grad_cache_matches_whole_batch_with_dropout(monkeypatch):
    encoder = load_encoder(TINY_BERT)  # dropout 0.1 on: the masks must be replayed
    encoder.model.double().train()
    loss, g, rng = grad_cache_step(encoder, chunk=2)
    ref_loss, ref_g, ref_rng = whole_batch_step(encoder, chunk=2)  # same chunks, so the same masks
    assert abs(loss - ref_loss) <= 1e-6
    assert g.keys() == ref_g.keys() and max_diff(g, ref_g) <= 1e-6
    assert torch.equal(rng, ref_rng)  # later steps draw the masks a whole-batch run would
    # Without the replay the second forward draws new masks and the gradients are wrong.
    monkeypatch.setattr(parallel, "_replay_rng", lambda state, device: contextlib.nullcontext())
    assert max_diff(grad_cache_step(encoder, chunk=2)[1], ref_g) > 1e-3


def test_grad_cache_matches_one_forward_without_dropout(tmp_path):
    encoder = load_encoder(without_dropout(tmp_path / "tiny-bert"))
    encoder.model.double().train()
    ref_loss, ref_g, _ = grad_cache_step(encoder, chunk=0)  # 0: the plain path, one forward per group
    for chunk in (1, 2, 5):
        loss, g, _ = grad_cache_step(encoder, chunk)
        assert abs(loss - ref_loss) <= 1e-6 and max_diff(g, ref_g) <= 1e-6, chunk


# --- train.py under torchrun ------------------------------------------------------------------

class Killed(Exception):
    pass


def train_killed_at_step(argv, n):
    calls = []
    real = train_step.info_nce

    def patched(*a, **kw):
        calls.append(1)
        if len(calls) == n:
            raise Killed
        return real(*a, **kw)

    train_step.info_nce = patched
    cli("train.py", argv)


def test_torchrun_logs_once_checkpoints_and_resumes_exactly(data, tmp_path, monkeypatch, capsys):
    full, cut = tmp_path / "full", tmp_path / "cut"
    flags = ["--max-steps", "4", "--save-every", "2", "--grad-cache-chunk", "1", "--log-every", "1"]
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                        str(ROOT / "train.py"), *args(data, full, *flags)],
                       capture_output=True, text=True, cwd=ROOT, env=os.environ | {"OMP_NUM_THREADS": "1"}, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert steps(full) == [1, 2, 3, 4]  # written by rank 0 alone
    assert [line.split("|")[0].split()[1] for line in r.stderr.splitlines() if line.startswith("step ")] \
        == ["1/4", "2/4", "3/4", "4/4"]
    trainer = json.loads((full / "checkpoint" / "trainer.json").read_text())
    assert trainer["world_size"] == 2 and trainer["step"] == 4
    rank_rngs = torch.load(full / "checkpoint" / "trainer.pt")["rank_rngs"]
    assert len(rank_rngs) == 2 and not torch.equal(rank_rngs[0]["torch"], rank_rngs[1]["torch"])
    assert not [k for k in load_encoder(full / "checkpoint").model.state_dict() if "_orig_mod" in k]

    # Killed in step 3 (after the step-2 checkpoint), resumed with 2 processes: the same losses,
    # dropout on, so each rank's own RNG state came back.
    with pytest.raises(Exception, match="Killed"):
        spawn(train_killed_at_step, 2, args(data, cut, *flags), 3)
    assert steps(cut) == [1, 2]
    spawn(train_cli, 2, ["--resume", str(cut / "checkpoint")])
    assert losses(cut) == losses(full)
    a = load_encoder(full / "checkpoint").model.state_dict()
    b = load_encoder(cut / "checkpoint").model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)

    # ... and not with another number of processes.
    capsys.readouterr()
    assert 0 != cli("train.py", ["--resume", str(cut / "checkpoint")])
    assert capsys.readouterr().err.strip() == (
        "error: --resume: the checkpoint was written by 2 processes, this run has 1; "
        "resume with as many (each one's dropout RNG state is stored)")


def test_global_batch_must_split_evenly(data, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "3")  # checked before any process group is joined
    code = cli("train.py", args(data, tmp_path))
    assert code == 2
    assert capsys.readouterr().err.strip() == ("error: --batch-size 4: the global batch must split evenly over "
                                               "the 3 processes (a multiple of 3)")


# --- CUDA: bf16 autocast, compile (skipped without a GPU) ------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (bf16 autocast, nccl)")


@cuda
def test_bf16_step_matches_fp32_loosely():
    cpu = load_encoder(TINY_BERT)
    gpu = load_encoder(TINY_BERT, device="cuda", dtype="bf16")  # train.py's default on cuda
    cpu.model.eval(), gpu.model.eval()  # same function: no dropout
    cfg = TrainConfig()
    x = train_step.Inputs(TEXTS["query"], TEXTS["passage"])
    ref = train_step.loss_and_backward(cpu, train_step.make_embed(cpu, cfg), x, cfg)
    loss = train_step.loss_and_backward(gpu, train_step.make_embed(gpu, cfg), x, cfg)
    assert loss.dtype == torch.float32  # the loss is computed in fp32 from bf16 activations
    assert abs(loss.item() - ref.item()) < 0.05  # bf16 keeps ~3 significant digits
    g, ref_g = grads(gpu.model), grads(cpu.model)
    assert all(torch.isfinite(v).all() for v in g.values())
    cos = torch.nn.functional.cosine_similarity(torch.cat([v.flatten().cpu() for v in g.values()]),
                                                torch.cat([ref_g[k].flatten() for k in g]), dim=0)
    assert cos > 0.98


@cuda
def test_cuda_compile_run_saves_plain_names(data, tmp_path):
    assert cli("train.py", args(data, tmp_path, "--max-steps", "2", "--device", "cuda", "--compile",
                           "--grad-cache-chunk", "2")) == 0
    names = load_encoder(tmp_path / "checkpoint").model.state_dict().keys()
    assert names == load_encoder(TINY_BERT).model.state_dict().keys()
