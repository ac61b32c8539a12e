"""minihbt.train_step: the learning-rate schedule and AdamW's parameter groups worked by hand, and
the texts of a batch. The step's loss and gradients (whole batch, GradCache, several processes)
are checked against references in test_parallel.py; the loop around it in test_train.py."""
import pytest
import torch

import train
from minihbt import train_step
from minihbt.sampler import Batch


def test_learning_rate_schedule_by_hand():
    cfg = train.TrainConfig(lr=1.0, warmup=2, max_steps=5)
    assert [train_step.lr_at(s, cfg) for s in range(1, 6)] == pytest.approx([0.5, 1.0, 1.0, 2 / 3, 1 / 3])
    assert train.TrainConfig(max_steps=300).warmup == 30


def test_weight_decay_on_matrices_only():
    model = torch.nn.Sequential(torch.nn.Embedding(5, 3), torch.nn.Linear(3, 2), torch.nn.LayerNorm(2))
    model[2].bias.requires_grad_(False)  # frozen parameters are left out
    opt = train_step.make_optimizer(model, train.TrainConfig(lr=0.5, weight_decay=0.01))
    decay, no_decay = opt.param_groups
    assert [p.shape for p in decay["params"]] == [(5, 3), (2, 3)] and decay["weight_decay"] == 0.01
    assert [p.shape for p in no_decay["params"]] == [(2,), (2,)] and no_decay["weight_decay"] == 0.0
    assert no_decay["params"][1] is model[2].weight
    assert opt.defaults["lr"] == 0.5 and opt.defaults["betas"] == (0.9, 0.999) and opt.defaults["eps"] == 1e-8


def test_batch_texts_take_each_side_in_its_language():
    class Ex:
        def __init__(self, lang, gid):
            self.question, self.sentence = f"q {gid} {lang}", f"s {gid} {lang}"

    groups = {"d": {g: {l: Ex(l, g) for l in ("de", "en")} for g in ("g1", "g2")}}
    batch = Batch(kind="cross", dataset="d", groups=["g2", "g1"], pairs=[("de", "en"), ("en", "de")])
    assert train_step.batch_texts(batch, groups) == (["q g2 de", "q g1 en"], ["s g2 en", "s g1 de"])
