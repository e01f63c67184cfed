"""The shipped modulated search spaces hold their baselines (issue: a space that contains them).

Independent expectations: CosFace's loss value computed by the CosFace member itself, NormFace's
by the NormFace member, and ArcFace's effective margin worked from cos(θ + m) by hand."""

import math

import pytest
import torch

from lfsearch import losses
from lfsearch.search import config as config_mod


def _bounds(space: str) -> dict[str, tuple[float, float]]:
    cfg = config_mod.load(space)
    return {p.name: (p.low, p.high) for p in config_mod.param_specs(cfg)}


@pytest.mark.parametrize("space", ["search_softmax", "search_softmax_local", "random_softmax"])
@pytest.mark.parametrize("s,m", [(16.0, 0.0), (64.0, 0.0), (4.0, 0.0), (2.0, 0.0),
                                 (16.0, 0.35), (64.0, 0.35), (30.0, 0.4)])
def test_space_holds_normface_cosface_and_every_scale(space, s, m):
    bounds = _bounds(space)
    assert bounds["s"][0] <= s <= bounds["s"][1]
    for name, (low, high) in bounds.items():
        if name == "m" or name.startswith("m_"):
            assert low <= m <= high


def test_arcface_like_point_inside_local_space():
    # ArcFace s·cos(θ+m) = s·(cos θ − m_eff), m_eff = cos θ − cos(θ+m) ∈ [0, ~m]; for m = 0.5
    # and θ in [0, π/2] the effective margin stays below 0.5 < 0.6 (the space's upper bound)
    bounds = _bounds("search_softmax_local")
    theta = torch.linspace(0, math.pi / 2, 200, dtype=torch.float64)
    m_eff = torch.cos(theta) - torch.cos(theta + 0.5)
    for i in range(4):
        low, high = bounds[f"m_{i}"]
        assert low <= float(m_eff.min()) and float(m_eff.max()) <= high


def _same_head(a, b):
    b.weight.data.copy_(a.weight.data)


def test_margin_form_equals_cosface_and_normface():
    torch.manual_seed(0)
    x, y = torch.randn(64, 8, dtype=torch.float64), torch.randint(0, 6, (64,))
    cos = losses.build("cosface", embedding_size=8, num_classes=6, s=12.0, m=0.3).double()
    mod = losses.build("modulated", embedding_size=8, num_classes=6, s=12.0, m=0.3).double()
    _same_head(cos, mod)
    assert mod(x, y).item() == pytest.approx(cos(x, y).item(), rel=1e-9)
    norm = losses.build("normface", embedding_size=8, num_classes=6, s=5.0).double()
    mod.set_params(s=5.0, m=0.0)
    _same_head(norm, mod)
    assert mod(x, y).item() == pytest.approx(norm(x, y).item(), rel=1e-9)


def test_margin_form_factor_follows_the_scale():
    mod = losses.build("modulated", embedding_size=4, num_classes=3, s=10.0, m=[0.1, 0.2],
                       bins=2)
    assert mod.param_names() == ["s", "m_0", "m_1"]
    assert mod.modulating_factors() == pytest.approx([math.exp(1.0), math.exp(2.0)], rel=1e-6)
    mod.set_params(s=20.0)
    assert mod.modulating_factors() == pytest.approx([math.exp(2.0), math.exp(4.0)], rel=1e-6)


def test_margin_form_refuses_negative_margin_and_both_forms():
    with pytest.raises(ValueError, match="m .*>= 0"):
        losses.build("modulated", embedding_size=4, num_classes=3, m=-0.1)
    with pytest.raises(ValueError, match="either a .* or m"):
        losses.build("modulated", embedding_size=4, num_classes=3, a=2.0, m=0.1)
