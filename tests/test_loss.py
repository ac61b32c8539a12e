"""minihbt/loss.py against a float64 numpy hand computation and sentence-transformers values."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from minihbt.loss import info_nce

GOLDEN = json.loads((Path(__file__).parent / "golden" / "loss_infonce.json").read_text())
CASES = {c["name"]: c for c in GOLDEN["cases"]}


def numpy_info_nce(q, d, temperature, offset=0):
    """Eq. 1 written out: -log of the positive's share of exp(cos / tau) over all passages."""
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    d = d / np.linalg.norm(d, axis=1, keepdims=True)
    losses = []
    for i in range(len(q)):
        s = np.array([q[i] @ d[j] for j in range(len(d))]) / temperature
        positive = s[offset + i]
        losses.append(-(positive - (s.max() + np.log(np.exp(s - s.max()).sum()))))
    return float(np.mean(losses))


def tensors(case):
    q = torch.tensor(case["queries"], dtype=torch.float64)
    p = torch.tensor(case["positives"], dtype=torch.float64)
    h = None if case["hard_negatives"] is None else torch.tensor(case["hard_negatives"], dtype=torch.float64)
    return q, p, h


@pytest.mark.parametrize("name", sorted(CASES))
def test_equals_numpy_and_sentence_transformers(name):
    case = CASES[name]
    q, p, h = tensors(case)
    got = info_nce(q, p, case["temperature"], hard_negatives=h).item()
    d = p.numpy() if h is None else np.concatenate([p.numpy(), h.numpy()])
    assert got == pytest.approx(numpy_info_nce(q.numpy(), d, case["temperature"]), rel=1e-12, abs=1e-14)
    assert got == pytest.approx(case["st_mnrl"], rel=1e-12, abs=1e-14)


def test_hard_negatives_are_extra_columns_and_raise_the_loss():
    q, p, h = tensors(CASES["hard_negatives_2"])
    with_hard = info_nce(q, p, hard_negatives=h)
    assert with_hard.item() == pytest.approx(info_nce(q, torch.cat([p, h])).item(), rel=1e-15)
    assert with_hard > info_nce(q, p)


def test_default_temperature_is_scale_20():
    q, p, _ = tensors(CASES["in_batch"])
    assert info_nce(q, p).item() == pytest.approx(CASES["in_batch"]["st_mnrl"], rel=1e-12)


def test_offset_picks_this_ranks_columns():
    # A rank holding queries 2..3 of a global batch of 4 sees all 4 passages; its loss is the
    # mean of those two rows of the full loss.
    q, p, _ = tensors(CASES["in_batch"])
    got = info_nce(q[2:], p, offset=2).item()
    assert got == pytest.approx(numpy_info_nce(q[2:].numpy(), p.numpy(), 0.05, offset=2), rel=1e-12)
    full_rows = [numpy_info_nce(q[i:i + 1].numpy(), p.numpy(), 0.05, offset=i) for i in range(4)]
    assert got == pytest.approx(np.mean(full_rows[2:]), rel=1e-12)


def test_scale_invariant_inputs():
    # The score is a cosine: rescaling an embedding leaves the loss unchanged.
    q, p, h = tensors(CASES["hard_negatives_1"])
    scaled = info_nce(q * torch.tensor([[3.0], [0.1], [7.0], [1.0]], dtype=torch.float64), p * 2, hard_negatives=h * 5)
    assert scaled.item() == pytest.approx(info_nce(q, p, hard_negatives=h).item(), rel=1e-12)


def test_gradcheck_float64():
    q, p, h = tensors(CASES["hard_negatives_2"])
    inputs = tuple(t.clone().requires_grad_(True) for t in (q, p, h))
    assert torch.autograd.gradcheck(
        lambda a, b, c: info_nce(a, b, 0.05, hard_negatives=c), inputs, eps=1e-6, atol=1e-6
    )
    inputs = tuple(t.clone().requires_grad_(True) for t in (q[1:], p))
    assert torch.autograd.gradcheck(lambda a, b: info_nce(a, b, 0.05, offset=1), inputs, eps=1e-6, atol=1e-6)


def test_mask_leaves_columns_out_of_the_softmax_float64():
    # Hand-written softmax over the unmasked columns only, in float64:
    #   L_i = -(s_ii - log sum_{j not masked for i} exp s_ij),  s = cos / tau.
    q, p, h = tensors(CASES["hard_negatives_2"])  # 3 queries, 3 positives, 6 hard negatives
    d = torch.cat([p, h])  # (9, H): columns 0-2 the positives, 3-8 the hard negatives
    mask = torch.zeros(3, 9, dtype=torch.bool)
    mask[0, 2] = mask[2, 0] = True  # examples 0 and 2 share an answer sentence
    mask[1, 8] = True               # a hard negative that is query 1's answer in another language
    mask[:, 3] = True               # an empty hard-negative slot, out for every query
    qn = q.numpy() / np.linalg.norm(q.numpy(), axis=1, keepdims=True)
    dn = d.numpy() / np.linalg.norm(d.numpy(), axis=1, keepdims=True)
    hand = []
    for i in range(3):
        s = [qn[i] @ dn[j] / 0.05 for j in range(9) if not mask[i, j]]
        hand.append(-(qn[i] @ dn[i] / 0.05 - np.log(np.sum(np.exp(s)))))
    got = info_nce(q, p, 0.05, hard_negatives=h, mask=mask)
    assert got.item() == pytest.approx(float(np.mean(hand)), rel=1e-12)
    # ... a different number from the unmasked loss, which counts those columns as negatives,
    assert abs(got.item() - info_nce(q, p, 0.05, hard_negatives=h).item()) > 1e-3
    # and no gradient reaches a column through a query that masks it.
    dd = d.clone().requires_grad_(True)
    info_nce(q[:1], dd, 0.05, mask=mask[:1]).backward()
    assert torch.all(dd.grad[[2, 3]] == 0) and torch.all(dd.grad[[1, 4, 8]].abs().sum(dim=1) > 0)


def test_mask_rows_follow_the_offset():
    # A rank holding queries 2..3 passes its rows of the global mask; its loss is the mean of
    # those rows of the one-process masked loss.
    q, p, _ = tensors(CASES["in_batch"])
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[0, 2] = mask[2, 0] = mask[3, 1] = True
    rows = [info_nce(q[i:i + 1], p, offset=i, mask=mask[i:i + 1]).item() for i in range(4)]
    assert info_nce(q, p, mask=mask).item() == pytest.approx(np.mean(rows), rel=1e-12)
    assert info_nce(q[2:], p, offset=2, mask=mask[2:]).item() == pytest.approx(np.mean(rows[2:]), rel=1e-12)


def test_masking_a_positive_is_an_error():
    q, p, _ = tensors(CASES["in_batch"])
    mask = torch.zeros(2, 4, dtype=torch.bool)
    mask[1, 3] = True  # query 1 of a rank at offset 2 owns column 3
    with pytest.raises(ValueError, match="own positive"):
        info_nce(q[2:], p, offset=2, mask=mask)


def test_gradcheck_float64_with_mask():
    q, p, h = tensors(CASES["hard_negatives_2"])
    mask = torch.zeros(3, 9, dtype=torch.bool)
    mask[0, 2] = mask[2, 8] = True
    inputs = tuple(t.clone().requires_grad_(True) for t in (q, p, h))
    assert torch.autograd.gradcheck(lambda a, b, c: info_nce(a, b, 0.05, hard_negatives=c, mask=mask), inputs,
                                    eps=1e-6, atol=1e-6)
