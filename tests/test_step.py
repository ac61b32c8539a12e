"""minihbt.step: the learning-rate schedule and AdamW's parameter groups worked by hand, and
the texts of a batch. The step's loss and gradients (whole batch, GradCache, several processes)
are checked against references in test_parallel.py; the loop around it in test_train.py."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minihbt.config import TrainConfig
from minihbt import load_encoder
from minihbt import step as train_step
from minihbt.sampler import Batch


def test_learning_rate_schedule_by_hand():
    cfg = TrainConfig(lr=1.0, warmup=2, max_steps=5)
    assert [train_step.lr_at(s, cfg) for s in range(1, 6)] == pytest.approx([0.5, 1.0, 1.0, 2 / 3, 1 / 3])
    assert TrainConfig(max_steps=300).warmup == 30


def test_weight_decay_on_matrices_only():
    model = torch.nn.Sequential(torch.nn.Embedding(5, 3), torch.nn.Linear(3, 2), torch.nn.LayerNorm(2))
    model[2].bias.requires_grad_(False)  # frozen parameters are left out
    opt = train_step.make_optimizer(model, TrainConfig(lr=0.5, weight_decay=0.01))
    decay, no_decay = opt.param_groups
    assert [p.shape for p in decay["params"]] == [(5, 3), (2, 3)] and decay["weight_decay"] == 0.01
    assert [p.shape for p in no_decay["params"]] == [(2,), (2,)] and no_decay["weight_decay"] == 0.0
    assert no_decay["params"][1] is model[2].weight
    assert opt.defaults["lr"] == 0.5 and opt.defaults["betas"] == (0.9, 0.999) and opt.defaults["eps"] == 1e-8


def test_batch_texts_take_each_side_in_its_language():
    class Ex:
        def __init__(self, lang, gid):
            self.question, self.sentence = f"q {gid} {lang}", f"s {gid} {lang}"
            self.sid = self.sentence

    groups = {"d": {g: {l: Ex(l, g) for l in ("de", "en")} for g in ("g1", "g2")}}
    batch = Batch(kind="cross", dataset="d", groups=["g2", "g1"], pairs=[("de", "en"), ("en", "de")])
    x = train_step.inputs(batch, groups["d"])
    assert (x.queries, x.passages) == (["q g2 de", "q g1 en"], ["s g2 en", "s g1 de"])


# --- the AdamW implementations, allocation, bf16 ----------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
TINY_BERT = ROOT / "tests" / "golden" / "tiny-bert"


def adamw_reference_groups(model, weight_decay):
    """The Hugging Face trainer's rule, by name: no decay for biases and LayerNorm weights."""
    named = list(model.named_parameters())
    no_decay = [p for n, p in named if n.endswith("bias") or "LayerNorm" in n]
    decay = [p for n, p in named if not (n.endswith("bias") or "LayerNorm" in n)]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def adamw_steps(impl: str | None, steps: int = 5, lr: float = 1e-2, weight_decay: float = 0.1):
    """Parameters after `steps` updates with fixed random gradients; impl None: the reference."""
    model = load_encoder(TINY_BERT).model
    if impl is None:
        opt = torch.optim.AdamW(adamw_reference_groups(model, weight_decay), lr=lr, betas=(0.9, 0.999),
                                eps=1e-8, foreach=False)
    else:
        opt = train_step.make_optimizer(model, TrainConfig(lr=lr, weight_decay=weight_decay, adamw=impl))
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=g) * 10.0 ** torch.randint(-4, 1, (), generator=g).item()
        opt.step()
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_adamw_implementations_equal_the_reference():
    ref = adamw_steps(None)
    start = {n: p.detach() for n, p in load_encoder(TINY_BERT).model.named_parameters()}
    assert all(torch.equal(a, b) for a, b in zip(ref.values(), adamw_steps("foreach").values()))
    assert all(torch.equal(a, b) for a, b in zip(ref.values(), adamw_steps("for-loop").values()))
    # fused: one kernel that orders the same arithmetic its own way, so to fp32 rounding: a few
    # elements 1 ulp apart per step (rtol 1e-6 is ~8 ulp), against updates of ~1e-2 per step.
    fused = adamw_steps("fused")
    for n in ref:
        torch.testing.assert_close(fused[n], ref[n], rtol=1e-6, atol=1e-7, msg=n)
    assert min((ref[n] - start[n]).abs().max() for n in ref) > 1e-2  # every tensor moved: the test can fail
    wrong = adamw_steps("fused", weight_decay=0.11)  # a wrong decay is far outside that tolerance
    assert max((wrong[n] - ref[n]).abs().max() for n in ref) > 1e-5


def test_adamw_update_by_hand():
    """Decoupled weight decay and bias correction (Loshchilov & Hutter 2019, Algorithm 2), in float64."""
    lr, wd, (b1, b2), eps = 1e-2, 0.1, (0.9, 0.999), 1e-8
    model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    w0 = model[0].weight.detach().double().clone()
    opt = train_step.make_optimizer(model, TrainConfig(lr=lr, weight_decay=wd))
    w, m, v = w0, torch.zeros_like(w0), torch.zeros_like(w0)
    g = torch.Generator().manual_seed(1)
    for t in range(1, 4):
        grad = torch.randn(3, 4, generator=g, dtype=torch.float64)
        model[0].weight.grad, model[0].bias.grad = grad.float(), torch.zeros(3)
        opt.step()
        w = w * (1 - lr * wd)
        m, v = b1 * m + (1 - b1) * grad, b2 * v + (1 - b2) * grad**2
        w = w - lr * (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + eps)
    torch.testing.assert_close(model[0].weight.detach().double(), w, rtol=1e-6, atol=1e-7)


STEPS = """
import hashlib, resource, sys, torch
from minihbt.config import TrainConfig
from minihbt import load_encoder
from minihbt import step as train_step
kept = train_step.keep_freed_memory() if sys.argv[1] == "keep" else None
def faults_of_64mb_blocks(rounds=8, last=3):
    # a "step" that allocates and frees three 64 MB blocks; the heap settles within ~4 rounds
    r = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for i in range(rounds):
        if i == rounds - last:
            r = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        blocks = [torch.ones(2**24) for _ in range(3)]; del blocks
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r
faults = faults_of_64mb_blocks()
torch.manual_seed(0)
cfg = TrainConfig(batch_size=3, lr=1e-3)
enc = load_encoder(sys.argv[2]); enc.model.train()
embed, opt = train_step.make_embed(enc, cfg), train_step.make_optimizer(enc.model, cfg)
q, p = ["Where is the red cat?", "Wo ist die Katze?", "Où est le chat?"], ["In Paris.", "In Rom.", "À Oslo."]
losses = []
for _ in range(3):
    losses.append(train_step.loss_and_backward(enc, embed, train_step.Inputs(q, p), cfg).item())
    opt.step(); opt.zero_grad(set_to_none=True)
h = hashlib.sha256(b"".join(v.numpy().tobytes() for v in enc.model.state_dict().values())).hexdigest()
print(kept, faults, h, losses)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_keep_freed_memory_reuses_pages_and_changes_no_value():
    def run(mode):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        out = subprocess.run([sys.executable, "-c", STEPS, mode, str(TINY_BERT)], capture_output=True, text=True,
                             env=env, cwd=ROOT)
        assert out.returncode == 0, out.stderr
        return out.stdout.split(maxsplit=3)

    kept, faults, weights, losses = run("keep")
    _, faults_default, weights_default, losses_default = run("default")
    assert kept == "True"
    # Freed 64 MB blocks are reused, not unmapped and faulted in again: by default each of the last
    # 3 rounds faults 3 x 16,384 pages of 4 KB; kept, none (measured 0 in 10 of 10 runs).
    assert int(faults) < 1000 and int(faults_default) >= 3 * 3 * 16_384
    assert (weights, losses) == (weights_default, losses_default)  # three steps, bit for bit


def test_bf16_step_is_close_to_fp32():
    """The CPU bf16 path of train.py's step; tolerances as the CUDA test in test_parallel.py."""
    cfg = TrainConfig()
    q, p = ["Where is the red cat?", "Wo ist die Katze?", "Où est le chat?"], ["In Paris.", "In Rom.", "À Oslo."]
    out = {}
    for dtype in ("fp32", "bf16"):
        enc = load_encoder(TINY_BERT, dtype=dtype)
        enc.model.eval()  # the same function on both sides: no dropout
        loss = train_step.loss_and_backward(enc, train_step.make_embed(enc, cfg), train_step.Inputs(q, p), cfg)
        out[dtype] = loss, torch.cat([w.grad.flatten() for w in enc.model.parameters() if w.grad is not None])
        assert loss.dtype == torch.float32 and out[dtype][1].dtype == torch.float32
    assert out["bf16"][0].item() != out["fp32"][0].item()  # bf16 did run
    assert abs(out["bf16"][0].item() - out["fp32"][0].item()) < 0.05  # bf16 keeps ~3 significant digits
    assert torch.nn.functional.cosine_similarity(out["bf16"][1], out["fp32"][1], dim=0) > 0.98


def test_batch_negatives_mask_false_negatives_and_empty_slots():
    from minihbt.lareqa import Example

    # g1 and g2 ask about one en sentence "s"; g1's slot holds "n1", a sentence no one answers;
    # the slots of g2 and g3 are empty.
    groups = {"d": {"g1": {"en": Example("q1", "S", "", "s", (("n1", "N1"),))},
                    "g2": {"en": Example("q2", "S", "", "s")},
                    "g3": {"en": Example("q3", "T", "", "t")}}}
    batch = Batch("mono", "d", ["g1", "g2", "g3"], [("en", "en")] * 3, [[("n1", "N1")], [None], [None]])
    for mode in ("mask", "keep"):
        x = train_step.inputs(batch, groups["d"], mode == "mask")
        hard, mask, n_false = x.hard, x.mask, x.false_negatives
        assert hard == ["N1", None, None] and n_false == 2  # (g1, column 1) and (g2, column 0)
        expected = torch.zeros(3, 6, dtype=torch.bool)
        expected[:, [4, 5]] = True  # the two empty slots, for every query
        if mode == "mask":
            expected[0, 1] = expected[1, 0] = True
        assert torch.equal(mask, expected), mode
    plain = Batch("mono", "d", ["g1", "g3"], [("en", "en")] * 2)  # no hard negatives, nothing shared
    x = train_step.inputs(plain, groups["d"])
    assert (x.hard, x.mask, x.false_negatives) == ([], None, 0)
