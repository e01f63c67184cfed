"""Partial FC (lfsearch/losses/partial_fc.py): the sampled class head. With sample rate 1 the
loss and gradients are the member's own; with a lower rate every positive is kept, the loss
is the member's on the sampled rows (built by hand), rows outside get no gradient; the option
runs in a search from a space file."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch

from lfsearch import losses
from lfsearch.losses.partial_fc import PartialFC, sample_classes
from lfsearch.search import search

MEMBERS = [("softmax", {"bias": True}), ("cosface", {}), ("arcface", {}),
           ("modulated", {"bins": 3, "a": [2.0, 5.0, 9.0]}), ("am_lfs", {}),
           ("sphereface", {}), ("l2_softmax", {}), ("adaface", {}), ("magface", {}),
           ("elasticface_arc", {"seed": 3}), ("curricularface", {}), ("mv_softmax", {}),
           ("subcenter_arcface", {}), ("adacos", {}), ("weighted_softmax", {}),
           ("weighted_softmax", {"class_weights": [0.5, 2.0, 1.0, 3.0, 0.25] * 2})]


def batch(n=12, d=8, c=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) * 3
    y = torch.randint(0, c, (n,), generator=g)
    return x, y


@pytest.mark.parametrize("name,params", MEMBERS, ids=[m[0] for m in MEMBERS])
def test_sample_rate_one_gives_the_full_heads_loss_and_gradients(name, params):
    torch.manual_seed(1)
    full = losses.build(name, embedding_size=8, num_classes=10, **params).double()
    pfc = PartialFC(copy.deepcopy(full), 1.0, seed=0).double()
    for step in range(2):  # two steps: running statistics move the same way in both
        x, y = batch(seed=step)
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        la, lb = full(xa, y), pfc(xb, y)
        la.backward()
        lb.backward()
        assert pfc.last_sample.tolist() == list(range(10))
        assert torch.allclose(la, lb, rtol=1e-12, atol=1e-12), (name, step)
        assert torch.allclose(xa.grad, xb.grad, rtol=1e-10, atol=1e-12)
        for (n, p), q in zip(full.named_parameters(), pfc.inner.parameters()):
            assert torch.allclose(p.grad, q.grad, rtol=1e-10, atol=1e-12), n
    for (n, b), c in zip(full.named_buffers(), pfc.inner.buffers()):
        assert torch.equal(b, c), n


def test_sampling_keeps_every_positive_and_the_asked_share():
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([3, 3, 17, 42, 99])
    s = sample_classes(labels, 1000, 0.1, g)
    assert s.numel() == 100 and torch.isin(labels, s).all()
    assert torch.equal(s, s.sort().values) and s.unique().numel() == 100
    # more positives than ceil(r·C): the positives alone
    assert sample_classes(torch.arange(50), 100, 0.1, g).tolist() == list(range(50))


@pytest.mark.parametrize("name", ["arcface", "curricularface", "subcenter_arcface"])
def test_sampled_loss_is_the_member_on_the_sampled_rows(name):
    torch.manual_seed(2)
    pfc = losses.build(name, embedding_size=8, num_classes=40, partial_fc=0.25).double()
    x, y = batch(c=40)
    loss = pfc(x, y)
    loss.backward()
    s = pfc.last_sample
    assert s.numel() == 10 and torch.isin(y, s).all()
    # by hand: the member built on |S| classes with the head's rows of S, labels renumbered
    k = pfc.inner.weight.shape[0] // 40
    small = losses.build(name, embedding_size=8, num_classes=10).double()
    state = {key: v for key, v in pfc.inner.state_dict().items()}
    rows = (s[:, None] * k + torch.arange(k)).reshape(-1)
    state["weight"] = pfc.inner.weight.detach()[rows]
    if name == "curricularface":
        state["t"] = torch.zeros(())  # before this step's update, as the sampled call saw it
    if name == "subcenter_arcface":
        state["_extra_state"] = {**state["_extra_state"], "num_classes": 10}
    small.load_state_dict(state)
    want = small(x, torch.searchsorted(s, y))
    assert torch.allclose(loss, want, rtol=1e-12)
    # rows outside S get no gradient; the sampled rows get the small head's
    want.backward()
    grad = pfc.inner.weight.grad
    outside = torch.ones(grad.shape[0], dtype=torch.bool)
    outside[rows] = False
    assert grad[outside].abs().max() == 0
    assert torch.allclose(grad[rows], small.weight.grad, rtol=1e-10, atol=1e-12)


def test_samples_follow_the_seed_and_step_and_resume_from_state():
    a = losses.build("cosface", embedding_size=8, num_classes=100, partial_fc=0.3,
                     generator=torch.Generator().manual_seed(5))
    b = copy.deepcopy(a)
    x, y = batch(c=100)
    a(x.float(), y)
    first = a.last_sample
    a(x.float(), y)
    assert not torch.equal(first, a.last_sample)  # a new draw each step
    b.load_state_dict(a.state_dict())  # resumes at step 2
    a(x.float(), y)
    b(x.float(), y)
    assert torch.equal(a.last_sample, b.last_sample)
    # evaluation uses the whole head
    a.eval()
    assert torch.allclose(a(x.float(), y), a.inner(x.float(), y))
    assert a.logits(x.float()).shape == (12, 100)


def test_partial_fc_refuses_what_it_cannot_sample():
    for bad in (0, 1.5, "x"):
        with pytest.raises(ValueError, match=r"partial_fc"):
            losses.build("arcface", embedding_size=4, num_classes=10, partial_fc=bad)
    with pytest.raises(ValueError, match="class-head member.*got 'center'"):
        PartialFC(losses.build("center", embedding_size=4, num_classes=10), 0.5)
    with pytest.raises(ValueError, match="aux"):
        losses.build("arcface", embedding_size=4, num_classes=10, partial_fc=0.5, aux="center")


def test_a_search_trains_with_partial_fc(tmp_path):
    space = tmp_path / "pfc.toml"
    text = Path(losses.__file__).parents[2] / "search_spaces" / "cosface.toml"
    body = text.read_text().replace("[loss]\n", "[loss]\npartial_fc = 0.5\n", 1)
    assert "partial_fc = 0.5" in body
    space.write_text(body)
    out = search(space, epochs=1, seed=0, device="cpu", out=tmp_path / "run")
    assert math.isfinite(out["test"][out["test_metric"]])
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=False)["state"]["loss"]
    assert state["_extra_state"]["step"] > 0 and "inner.weight" in state


HEAD_MEMBERS = ("softmax", "weighted_softmax", "lsoftmax", "sphereface", "l2_softmax", "normface", "cosface",
                "arcface", "combined_margin", "modulated", "am_lfs", "adaface", "magface",
                "elasticface_arc", "elasticface_cos", "elasticface_arc_plus",
                "elasticface_cos_plus", "curricularface", "mv_softmax", "subcenter_arcface",
                "adacos")


@pytest.mark.parametrize("name", HEAD_MEMBERS)
def test_every_head_member_searches_with_the_sampled_head(tmp_path, name):
    """One epoch of `lfsearch search` with partial_fc = 0.5 per member: it trains on sampled
    rows (the sample step advanced) and tests with the whole head (C rows per sub-centre)."""
    space = tmp_path / "space.toml"
    space.write_text(f'[loss]\nname = "{name}"\npartial_fc = 0.5\n\n[controller]\nkind = "fixed"\n'
                     'candidates = 1\n\n[training]\nbenchmark = "digits-closed"\n'
                     'embedding_size = 16\nepochs = 1\nbatch_size = 64\nlr = 0.05\n')
    out = search(space, seed=0, device="cpu", out=tmp_path / "run")
    assert math.isfinite(out["test"][out["test_metric"]])
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["state"]["loss"]
    assert state["_extra_state"]["step"] > 0
    assert state["inner.weight"].shape[0] == 10 * (3 if name == "subcenter_arcface" else 1)
