"""lfsearch.margins: hand-worked values, properties, numerical safety, bad input."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given, settings
from hypothesis import strategies as st

from lfsearch.losses import margins

f64 = torch.float64


def t(*values):
    return torch.tensor(values, dtype=f64)


def cos_of(*thetas):
    return torch.cos(t(*thetas))


# ------------------------------------------------------------------ hand-worked values
def test_h_hand_values():
    p = t(0.5, 0.2, 0.9, 0.0, 1.0)
    assert torch.allclose(margins.modulated_probability(1.0, p), p)
    assert margins.modulated_probability(3.0, t(0.5)).item() == pytest.approx(0.25)
    assert margins.modulated_probability(2.0, t(0.2)).item() == pytest.approx(1 / 9)
    assert margins.modulated_probability(4.0, t(0.9)).item() == pytest.approx(0.9 / 1.3)
    assert margins.modulated_probability(5.0, t(0.0, 1.0)).tolist() == [0.0, 1.0]


def test_conventions_and_conversions():
    assert margins.a_from_alpha(-2.0) == 3.0
    assert margins.alpha_from_a(3.0) == -2.0
    # the released LFS code: p / (α' p + 1 − α') with α' = α·exp(s/3) (global) or exp(s/2)
    assert margins.a_from_lfs_code_alpha(-0.1, 30.0) == pytest.approx(1 + 0.1 * math.exp(10))
    assert margins.a_from_lfs_code_alpha(-0.1, 30.0, per_bin=True) == pytest.approx(
        1 + 0.1 * math.exp(15))
    p, alpha = t(0.3), -1.5
    paper = p / (alpha * p + 1 - alpha)
    assert torch.allclose(margins.modulated_probability(margins.a_from_alpha(alpha), p), paper)


def test_psi_hand_values():
    pi = math.pi
    # m = 2: ψ(0)=1, ψ(π/4)=cos(π/2)=0, ψ(π/2)=−cos π − 2 = −1, ψ(3π/4)=−2, ψ(π)=−3
    got = margins.multiplicative_angular(cos_of(0, pi / 4, pi / 2, 3 * pi / 4, pi), 2)
    assert torch.allclose(got, t(1, 0, -1, -2, -3), atol=1e-12)
    # m = 4, θ = π/3: k = 1, −cos(4π/3) − 2 = −1.5 ; m = 3, θ = π/2: k = 1, −cos(3π/2) − 2
    assert margins.multiplicative_angular(cos_of(pi / 3), 4).item() == pytest.approx(-1.5)
    assert margins.multiplicative_angular(cos_of(pi / 2), 3).item() == pytest.approx(-2.0)
    for m in range(1, 7):
        assert margins.multiplicative_angular(t(-1.0), m).item() == pytest.approx(1 - 2 * m)
        assert margins.multiplicative_angular(t(1.0), m).item() == pytest.approx(1.0)
    # λ annealing: (λ cos θ + ψ)/(1 + λ)
    c = cos_of(pi / 3)
    assert margins.multiplicative_angular(c, 4, lam=3.0).item() == pytest.approx((3 * 0.5 - 1.5) / 4)
    # m = 1 is plain cos θ
    c = torch.linspace(-1, 1, 11, dtype=f64)
    assert torch.allclose(margins.multiplicative_angular(c, 1), c)


def test_tau_and_t_hand_values():
    slopes, intercepts = [2.0, 0.5], [0.0, 0.5]
    got = margins.tau(t(0.25, 0.5, 0.75, 1.0, 0.0), slopes, intercepts)
    assert torch.allclose(got, t(0.5, 0.75, 0.875, 1.0, 0.0))
    got = margins.t_transform(t(-0.5, 0.5, 1.0, -1.0), [1.0, 2.0], [0.0, -1.0])
    assert torch.allclose(got, t(-0.5, 0.0, 1.0, -1.0))
    # K = 4 equal bins of [0, 1]
    assert margins.bin_index(t(0.0, 0.24, 0.25, 0.5, 0.99, 1.0), 4).tolist() == [0, 0, 1, 2, 3, 3]
    assert margins.bin_index(t(-1.0, -0.01, 0.0, 1.0), 2, margins.T_DOMAIN).tolist() == [0, 0, 1, 1]
    # identity transform
    p = torch.rand(20, dtype=f64)
    assert torch.allclose(margins.tau(p, [1.0] * 5, [0.0] * 5), p)


def test_log_tau_matches_log_of_tau():
    p = torch.rand(50, dtype=f64) * 0.98 + 0.01
    slopes, intercepts = [2.0, 1.0, 0.5], [0.0, 0.1, 0.3]
    expected = torch.log(margins.tau(p, slopes, intercepts))
    assert torch.allclose(margins.log_tau(p.log(), slopes, intercepts), expected, atol=1e-12)
    # exact branch keeps precision where p underflows
    tiny_log_p = t(-2000.0)
    assert margins.log_tau(tiny_log_p, [2.0], [0.0]).item() == pytest.approx(math.log(2) - 2000)


def test_angular_and_combined_hand_values():
    m = 0.5
    theta = t(0.0, 1.0, math.pi / 3, 2.5)
    assert torch.allclose(margins.additive_angular(theta.cos(), m), torch.cos(theta + m), atol=1e-7)
    # fallback past π − m: cos θ − m sin m (default), plain cos θ ("cos"), no fallback
    c = cos_of(3.0)
    assert margins.additive_angular(c, m).item() == pytest.approx(math.cos(3) - m * math.sin(m))
    assert margins.additive_angular(c, m, "cos").item() == pytest.approx(math.cos(3))
    assert margins.additive_angular(c, m, "none").item() == pytest.approx(math.cos(3.5))
    # easy margin: only where cos θ > 0
    assert margins.additive_angular(cos_of(2.0), m, "easy").item() == pytest.approx(math.cos(2.0))
    assert margins.additive_angular(cos_of(1.0), m, "easy").item() == pytest.approx(math.cos(1.5))
    assert margins.combined_margin(cos_of(1.0), 1.0, 0.3, 0.2).item() == pytest.approx(
        math.cos(1.3) - 0.2)
    assert margins.combined_margin(cos_of(2.0), 0.9, 0.4, 0.15).item() == pytest.approx(
        math.cos(2.2) - 0.15)
    assert margins.additive_cosine(t(0.5), 0.35).item() == pytest.approx(0.15)
    assert torch.equal(margins.no_margin(t(0.3)), t(0.3))


def test_modulating_factor_of_margins():
    c = torch.linspace(-0.9, 0.9, 7, dtype=f64)
    s = 30.0
    a = margins.modulating_factor(c, margins.additive_cosine(c, 0.35), s)
    assert torch.allclose(a, torch.full_like(c, math.exp(s * 0.35)))
    assert torch.allclose(margins.log_modulating_factor(c, c, s), torch.zeros_like(c))
    # per-sample scale tensor (SphereFace: ‖x‖)
    scale = torch.rand(7, dtype=f64) + 0.5
    got = margins.modulating_factor(c, margins.additive_cosine(c, 0.1), scale)
    assert torch.allclose(got, torch.exp(scale * 0.1))


def test_modulated_cross_entropy_is_minus_log_h():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 5, generator=g, dtype=f64) * 3
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    a = torch.tensor([1.0, 2.0, 10.0, 1.5, 100.0, 3.0], dtype=f64)
    p = logits.softmax(1)[torch.arange(6), labels]
    expected = -torch.log(margins.modulated_probability(a, p))
    got = margins.modulated_cross_entropy(logits, labels, a.log(), reduction="none")
    assert torch.allclose(got, expected, rtol=1e-12)
    assert torch.allclose(margins.modulated_cross_entropy(logits, labels, 0.0),
                          F.cross_entropy(logits, labels))


# ------------------------------------------------------------------------- properties
probabilities = st.floats(0.0, 1.0)
factors = st.floats(1.0, 1e6)


@settings(max_examples=200, deadline=None)
@given(p=probabilities, a=factors)
@example(p=0.0, a=1.0)
@example(p=1.0, a=1e6)
def test_h_never_exceeds_p(p, a):
    h = margins.modulated_probability(a, torch.tensor(p, dtype=f64)).item()
    assert 0.0 <= h <= p * (1 + 1e-15)
    assert margins.modulated_probability(1.0, torch.tensor(p, dtype=f64)).item() == pytest.approx(p)


cos_lists = st.lists(st.floats(-1.0, 1.0), min_size=2, max_size=30)


@settings(max_examples=60, deadline=None)
@given(cos=cos_lists, m=st.integers(1, 8))
@example(cos=[-1.0, 1.0], m=4)
def test_psi_monotone_and_below_cos(cos, m):
    c = torch.tensor(sorted(cos), dtype=f64)
    psi = margins.multiplicative_angular(c, m)
    assert bool((psi[1:] >= psi[:-1] - 1e-9).all())  # non-decreasing in cos = decreasing in θ
    assert bool((psi <= c + 1e-12).all())


MONOTONE = [
    ("arcface m=0.5", lambda c: margins.additive_angular(c, 0.5)),
    ("arcface m=1.2", lambda c: margins.additive_angular(c, 1.2)),
    ("arcface m=3.0", lambda c: margins.additive_angular(c, 3.0)),
    ("combined 1,0.3,0.2", lambda c: margins.combined_margin(c, 1.0, 0.3, 0.2)),
    ("combined 0.9,0.4,0.15", lambda c: margins.combined_margin(c, 0.9, 0.4, 0.15)),
    ("combined 4,0,0", lambda c: margins.combined_margin(c, 4.0, 0.0, 0.0)),
    ("combined 2,0.5,0.1", lambda c: margins.combined_margin(c, 2.0, 0.5, 0.1)),
    ("cosface", lambda c: margins.additive_cosine(c, 0.35)),
]


@pytest.mark.parametrize("name,f", MONOTONE, ids=[m[0] for m in MONOTONE])
def test_default_fallbacks_are_monotone_margins(name, f):
    c = torch.linspace(-1, 1, 4001, dtype=f64)
    v = f(c)
    assert bool((v[1:] >= v[:-1] - 1e-12).all()), name
    assert bool((v <= c + 1e-12).all()), name


TARGETS = [
    ("psi4", lambda c: margins.multiplicative_angular(c, 4, lam=0.0)),
    ("psi3 lam", lambda c: margins.multiplicative_angular(c, 3, lam=5.0)),
    ("arcface", lambda c: margins.additive_angular(c, 0.5)),
    ("arcface none", lambda c: margins.additive_angular(c, 0.5, "none")),
    ("arcface easy", lambda c: margins.additive_angular(c, 0.5, "easy")),
    ("combined", lambda c: margins.combined_margin(c, 1.0, 0.3, 0.2)),
    ("combined m1", lambda c: margins.combined_margin(c, 0.9, 0.4, 0.15)),
    ("cosface", lambda c: margins.additive_cosine(c, 0.35)),
    ("t", lambda c: margins.t_transform(c, [1.0, 0.5, 2.0], [0.0, -0.1, 0.2])),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name,f", TARGETS, ids=[x[0] for x in TARGETS])
def test_targets_finite_with_gradient_at_the_ends(name, f, dtype):
    c = torch.tensor([-1.0, -0.999, 0.0, 0.999, 1.0, 1.0000001], dtype=dtype,
                     requires_grad=True)
    v = f(c)
    v.sum().backward()
    assert bool(torch.isfinite(v).all()), name
    assert bool(torch.isfinite(c.grad).all()), name


def test_angle_from_cos_is_acos_with_finite_gradient():
    c = torch.tensor([-1.0, -0.5, 0.0, 0.7, 1.0], dtype=f64, requires_grad=True)
    theta = margins.angle_from_cos(c)
    assert torch.allclose(theta, torch.acos(c.detach()), atol=1e-7)
    theta.sum().backward()
    assert bool(torch.isfinite(c.grad).all())


# ------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("call,match", [
    (lambda: margins.modulated_probability(0.5, t(0.3)), r"a .*>= 1.*\[1, inf\)"),
    (lambda: margins.modulated_probability(t(2.0, 0.9), t(0.3, 0.3)), r"a .*>= 1"),
    (lambda: margins.modulating_factor(t(0.3), t(0.1), 0.0), r"s must be > 0.*\(0, inf\)"),
    (lambda: margins.modulating_factor(t(0.3), t(0.1), -1.0), r"s must be > 0"),
    (lambda: margins.additive_cosine(t(0.3), -0.1), r"m must lie in \[0, 2\]"),
    (lambda: margins.additive_angular(t(0.3), -0.1), r"m must lie in \[0, π\]"),
    (lambda: margins.additive_angular(t(0.3), 28.6), r"m is an angle in radians.*\[0, π\].*degrees"),
    (lambda: margins.combined_margin(t(0.3), 1.0, 30.0, 0.2), r"m2 is an angle in radians"),
    (lambda: margins.combined_margin(t(0.3), 0.0, 0.3, 0.2), r"m1 must be > 0"),
    (lambda: margins.combined_margin(t(0.3), 1.0, 0.3, -0.2), r"m3 must lie in"),
    (lambda: margins.additive_angular(t(0.3), 0.5, "wrap"), r"fallback must be one of linear"),
    (lambda: margins.multiplicative_angular(t(0.3), 2.5), r"m must be an integer >= 1"),
    (lambda: margins.multiplicative_angular(t(0.3), 0), r"m must be an integer >= 1"),
    (lambda: margins.multiplicative_angular(t(0.3), 2, lam=-1.0), r"lambda must lie in \[0, inf\)"),
    (lambda: margins.tau(t(0.3), [1.0, 2.0], [0.0]), r"same length"),
    (lambda: margins.bin_index(t(0.3), 0), r"bins must be an integer >= 1"),
])
def test_bad_input_names_field_and_allowed_values(call, match):
    with pytest.raises(ValueError, match=match):
        call()


SLOPES = [
    ("psi m=1", lambda c: margins.multiplicative_angular(c, 1),
     lambda c: margins.multiplicative_angular_and_slope(c, 1)),
    ("psi m=4", lambda c: margins.multiplicative_angular(c, 4),
     lambda c: margins.multiplicative_angular_and_slope(c, 4)),
    ("psi m=3 lam", lambda c: margins.multiplicative_angular(c, 3, 2.5),
     lambda c: margins.multiplicative_angular_and_slope(c, 3, 2.5)),
    ("arcface", lambda c: margins.additive_angular(c, 0.5),
     lambda c: margins.additive_angular_and_slope(c, 0.5)),
    ("arcface none", lambda c: margins.additive_angular(c, 0.5, "none"),
     lambda c: margins.additive_angular_and_slope(c, 0.5, "none")),
    ("arcface easy", lambda c: margins.additive_angular(c, 0.5, "easy"),
     lambda c: margins.additive_angular_and_slope(c, 0.5, "easy")),
    ("arcface cos", lambda c: margins.additive_angular(c, 0.5, "cos"),
     lambda c: margins.additive_angular_and_slope(c, 0.5, "cos")),
    ("combined", lambda c: margins.combined_margin(c, 1.0, 0.3, 0.2),
     lambda c: margins.combined_margin_and_slope(c, 1.0, 0.3, 0.2)),
    ("combined m1", lambda c: margins.combined_margin(c, 0.9, 0.4, 0.15),
     lambda c: margins.combined_margin_and_slope(c, 0.9, 0.4, 0.15)),
    ("combined m1=2", lambda c: margins.combined_margin(c, 2.0, 0.1, 0.0),
     lambda c: margins.combined_margin_and_slope(c, 2.0, 0.1, 0.0)),
    ("t", lambda c: margins.t_transform(c, [1.0, 0.5, 2.0], [0.0, -0.1, 0.2]),
     lambda c: margins.t_transform_and_slope(c, [1.0, 0.5, 2.0], [0.0, -0.1, 0.2])),
]


@pytest.mark.parametrize("name,value,value_and_slope", SLOPES, ids=[s[0] for s in SLOPES])
def test_slopes_are_the_derivatives_of_the_values(name, value, value_and_slope):
    c = torch.cat([torch.linspace(-1, 1, 201, dtype=f64), t(-1.0, 1.0, 0.0)])
    c = c.requires_grad_()
    f = value(c)
    (grad,) = torch.autograd.grad(f.sum(), [c])
    f2, slope = value_and_slope(c.detach())
    assert torch.allclose(f.detach(), f2, rtol=1e-12, atol=1e-12), name
    assert torch.allclose(grad, slope, rtol=1e-9, atol=1e-9), name


@pytest.mark.parametrize("fallback", ["linear", "cos"])
def test_combined_margin_is_below_cos_on_all_angles_for_m1_at_least_one(fallback):
    # the implementation (fallback past θ_b included) over a grid of m1 >= 1, m2, m3 >= 0
    c = torch.linspace(-1, 1, 2001, dtype=f64)
    for m1 in (1.0, 1.3, 2.0, 4.0):
        for m2 in (0.0, 0.3, 1.0, math.pi / 2, math.pi):
            for m3 in (0.0, 0.2, 1.0):
                f = margins.combined_margin(c, m1, m2, m3, fallback)
                assert bool((f <= c + 1e-12).all()), (m1, m2, m3)


def test_combined_margin_with_m1_below_one_raises_the_target_a_below_one():
    s, c = 16.0, torch.cos(torch.tensor([2.5], dtype=f64))
    f = margins.combined_margin(c, 0.5, 0.0, 0.0)             # cos(1.25) > cos(2.5)
    assert float(f) == pytest.approx(math.cos(1.25))
    assert math.exp(s * float(c - f)) < 1.0              # A = e^{s (cos θ - f)} < 1
