"""Numerical safety (cos θ anywhere in [−1, 1], float32 and bfloat16) and memory shape of
the head losses: the N×C logits are computed once and only their target column changes."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from lfsearch import losses as losses_mod
from lfsearch.losses import margins

HEADS = [
    ("softmax", {}),
    ("weighted_softmax", {}),
    ("lsoftmax", {}),
    ("lsoftmax", {"lambda_base": 0.0, "lambda_min": 0.0}),
    ("sphereface", {"lambda_base": 0.0, "lambda_min": 0.0}),
    ("sphereface", {}),
    ("l2_softmax", {}),
    ("normface", {}),
    ("cosface", {}),
    ("arcface", {}),
    ("arcface", {"fallback": "none"}),
    ("arcface", {"fallback": "easy"}),
    ("combined_margin", {}),
    ("combined_margin", {"m1": 0.9, "m2": 0.4, "m3": 0.15}),
    ("modulated", {"a": 1e6}),
    ("modulated", {"bins": 4, "a": [1.0, 10.0, 1e3, 1e9]}),
    ("am_lfs", {"bins": 3, "tau_intercepts": [0.0, -0.5, 0.1],
                "t_intercepts": [0.2, -0.1, 0.0]}),
]
D, C = 4, 3
ends = st.sampled_from([-1.0, 1.0, 0.0])
cosines = st.lists(st.one_of(ends, st.floats(-1.0, 1.0)), min_size=4, max_size=4)


def _unit_head_inputs(cos, dtype):
    """Class weights e_0, e_1, e_2; x_i = c_i e_(y_i) + sqrt(1 − c_i²) e_3, so cos θ_y = c_i."""
    y = torch.tensor([0, 1, 2, 0])
    c = torch.tensor(cos, dtype=torch.float64)
    x = torch.zeros(4, D, dtype=torch.float64)
    x[torch.arange(4), y] = c
    x[:, 3] = (1 - c * c).clamp_min(0).sqrt()
    return x.to(dtype).requires_grad_(), y


@pytest.mark.parametrize("name,params", HEADS, ids=[f"{h[0]}-{i}" for i, h in enumerate(HEADS)])
@settings(max_examples=10, deadline=None)
@given(cos=cosines, dtype=st.sampled_from([torch.float32, torch.bfloat16]))
@example(cos=[1.0, 1.0, 1.0, 1.0], dtype=torch.bfloat16)
@example(cos=[-1.0, -1.0, 1.0, -1.0], dtype=torch.float32)
@example(cos=[-1.0, -1.0, -1.0, -1.0], dtype=torch.bfloat16)
def test_loss_and_gradients_finite_for_any_cosine(name, params, cos, dtype):
    loss = losses_mod.build(name, embedding_size=D, num_classes=C, **params)
    with torch.no_grad():
        loss.weight.copy_(torch.eye(C, D) * 2.0)
    loss = loss.to(dtype)
    x, y = _unit_head_inputs(cos, dtype)
    value = loss(x, y)
    value.backward()
    assert math.isfinite(value.float().item())
    assert bool(torch.isfinite(x.grad.float()).all())
    assert bool(torch.isfinite(loss.weight.grad.float()).all())


# --------------------------------------------------------------------------- memory
class _CountLargeAllocations(TorchDispatchMode):
    """Counts op outputs of at least `numel` elements that are new storage (not a view of,
    nor an in-place write into, one of the op's inputs)."""

    def __init__(self, numel):
        super().__init__()
        self.numel = numel
        self.count = 0
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = {a.untyped_storage().data_ptr() for a in torch.utils._pytree.tree_leaves(
            (args, kwargs)) if isinstance(a, torch.Tensor) and a.layout == torch.strided}
        for o in torch.utils._pytree.tree_leaves(out):
            if (isinstance(o, torch.Tensor) and o.layout == torch.strided
                    and o.numel() >= self.numel
                    and o.untyped_storage().data_ptr() not in inputs):
                self.count += 1
                self.ops.append(str(func))
        return out


def _count(step, numel):
    mode = _CountLargeAllocations(numel)
    with mode:
        step()
    return mode.count, mode.ops


@pytest.mark.parametrize("name,params", [h for h in HEADS if h[0] != "weighted_softmax"],
                         ids=[f"{h[0]}-{i}" for i, h in enumerate(HEADS) if h[0] != "weighted_softmax"])
def test_no_extra_NxC_tensors_beyond_plain_cross_entropy(name, params):
    n, d, c = 16, 8, 1000  # N×C = 16 000 > C×D = 8 000 > N×D
    x = torch.randn(n, d, requires_grad=True)
    y = torch.randint(0, c, (n,))
    w = torch.nn.Parameter(torch.randn(c, d))

    def plain():
        F.cross_entropy(F.linear(F.normalize(x) * 30.0, F.normalize(w)), y).backward()

    loss = losses_mod.build(name, embedding_size=d, num_classes=c, **params)
    baseline, _ = _count(plain, n * c)
    used, ops = _count(lambda: loss(x, y).backward(), n * c)
    assert used <= baseline, ops


# ------------------------------------------------- fused path equals plain autograd
FUSED_CASES = HEADS + [
    ("weighted_softmax", {"class_weights": [0.5, 2.0, 1.0, 3.0, 0.25]}),
    ("cosface", {"reduction": "sum"}),
    ("lsoftmax", {"reduction": "none", "lambda_min": 1.0}),
    ("arcface", {"reduction": "none"}),
]


@pytest.mark.parametrize("name,params", FUSED_CASES,
                         ids=[f"{h[0]}-{i}" for i, h in enumerate(FUSED_CASES)])
def test_fused_cross_entropy_matches_autograd_on_margin_logits(name, params):
    """Value and gradients of the fused path equal F.cross_entropy on margin_logits()."""
    d, c, n = 6, 5, 20
    g = torch.Generator().manual_seed(11)
    loss = losses_mod.build(name, embedding_size=d, num_classes=c,
                            generator=g, **params).double().eval()  # λ stays put
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randint(0, c, (n,), generator=g)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    fused = loss(x1, y)
    (gw1,) = torch.autograd.grad(fused.sum(), [loss.weight], retain_graph=True)
    fused.sum().backward(inputs=[x1])
    z = loss.margin_logits(x2, y)
    weight = getattr(loss, "class_weight", None)
    reduction = params.get("reduction", "mean")
    if name == "am_lfs":
        coef = loss.tau_coef
        ref = -margins.log_tau(-F.cross_entropy(z, y, reduction="none"), coef[0], coef[1]).mean()
    else:
        ref = F.cross_entropy(z, y, weight=weight, reduction=reduction)
    (gw2,) = torch.autograd.grad(ref.sum(), [loss.weight], retain_graph=True)
    ref.sum().backward(inputs=[x2])
    assert torch.allclose(fused, ref, rtol=1e-12, atol=1e-12)
    assert torch.allclose(x1.grad, x2.grad, rtol=1e-9, atol=1e-12)
    assert torch.allclose(gw1, gw2, rtol=1e-9, atol=1e-12)
