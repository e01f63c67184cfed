"""lfsearch.losses: the identity p_m = h(A, p), the registry, parameters, joint terms."""

import math

import pytest
import torch
import torch.nn.functional as F

from lfsearch import losses
from lfsearch.losses import margins

f64 = torch.float64
N, D, C = 48, 6, 7


def _data(seed=0, n=N, d=D, c=C, near_opposite=8):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=f64)
    y = torch.randint(0, c, (n,), generator=g)
    return x, y, g, near_opposite


def _head(name, seed=0, **params):
    loss = losses.build(name, embedding_size=D, num_classes=C,
                        generator=torch.Generator().manual_seed(seed), **params)
    return loss.double()


def _inputs_for(loss, seed=0):
    """Random embeddings; a few placed almost opposite their class weight (θ near π)."""
    x, y, g, k = _data(seed)
    w = loss.weight.detach()
    x[:k] = -w[y[:k]] / w[y[:k]].norm(dim=1, keepdim=True) * 2.0 + 0.03 * torch.randn(
        k, D, generator=g, dtype=f64)
    return x, y


# ------------------------------------------------------------------- p_m = h(A, p)
def _normalized_scale(loss, x, y):
    return loss.s


def _sphere_scale(loss, x, y):
    return x.norm(dim=1)


def _lsoftmax_scale(loss, x, y):
    return x.norm(dim=1) * loss.weight.detach()[y].norm(dim=1)


def _p_and_rest(logits, y):
    """p = softmax_y and q = 1 − p summed over the other classes (no cancellation at p ≈ 1)."""
    probs = logits.softmax(dim=1)
    p = probs[torch.arange(len(y)), y]
    return p, probs.scatter(1, y[:, None], 0.0).sum(dim=1)


def _h(a, p, q):
    """h(A, p) = p / (p + A (1 − p)) with 1 − p given as q, for a float64 reference at p ≈ 1."""
    return p / (p + a * q)


IDENTITY_CASES = [
    ("softmax", {}, None, None),
    ("l2_softmax", {"alpha": 5.0}, None, None),
    ("weighted_softmax", {"class_weights": [1.0] * C}, None, None),
    ("normface", {"s": 16.0}, lambda c: c, _normalized_scale),
    ("cosface", {"s": 30.0, "m": 0.35}, lambda c: margins.additive_cosine(c, 0.35),
     _normalized_scale),
    ("arcface", {"s": 64.0, "m": 0.5}, lambda c: margins.additive_angular(c, 0.5),
     _normalized_scale),
    ("arcface", {"s": 32.0, "m": 0.7, "fallback": "easy"},
     lambda c: margins.additive_angular(c, 0.7, "easy"), _normalized_scale),
    ("arcface", {"s": 32.0, "m": 0.4, "fallback": "cos"},
     lambda c: margins.additive_angular(c, 0.4, "cos"), _normalized_scale),
    ("combined_margin", {"s": 64.0}, lambda c: margins.combined_margin(c, 1.0, 0.3, 0.2),
     _normalized_scale),
    ("combined_margin", {"s": 30.0, "m1": 0.9, "m2": 0.4, "m3": 0.15},
     lambda c: margins.combined_margin(c, 0.9, 0.4, 0.15), _normalized_scale),
    ("combined_margin", {"s": 30.0, "m1": 2.0, "m2": 0.1, "m3": 0.0},
     lambda c: margins.combined_margin(c, 2.0, 0.1, 0.0), _normalized_scale),
    ("sphereface", {"m": 4, "lambda_base": 0.0, "lambda_min": 0.0},
     lambda c: margins.multiplicative_angular(c, 4), _sphere_scale),
    ("sphereface", {"m": 3, "lambda_base": 0.0, "lambda_min": 2.5},
     lambda c: margins.multiplicative_angular(c, 3, lam=2.5), _sphere_scale),
    ("lsoftmax", {"m": 2, "lambda_base": 0.0, "lambda_min": 0.0},
     lambda c: margins.multiplicative_angular(c, 2), _lsoftmax_scale),
    ("lsoftmax", {"m": 4, "lambda_base": 0.0, "lambda_min": 1.0},
     lambda c: margins.multiplicative_angular(c, 4, lam=1.0), _lsoftmax_scale),
    ("am_lfs", {"s": 20.0, "bins": 3, "t_intercepts": [-0.3, -0.2, -0.1]},
     lambda c: margins.t_transform(c, [1.0] * 3, [-0.3, -0.2, -0.1]), _normalized_scale),
]


@pytest.mark.parametrize("name,params,f,scale", IDENTITY_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(IDENTITY_CASES)])
def test_margin_probability_is_modulated_softmax_probability(name, params, f, scale):
    loss = _head(name, reduction="none", **params)
    x, y = _inputs_for(loss)
    with torch.no_grad():
        p_m = torch.exp(-loss(x, y))
        p, q = _p_and_rest(loss.logits(x), y)
        if f is None:
            a = torch.ones_like(p)
        else:
            w = F.normalize(loss.weight.detach(), dim=1)
            cos_y = (F.normalize(x, dim=1) * w[y]).sum(dim=1)
            a = margins.modulating_factor(cos_y, f(cos_y), scale(loss, x, y))
    assert bool((a >= 1.0).all())
    assert torch.allclose(p_m, _h(a, p, q), rtol=1e-9, atol=0.0)
    low = p < 0.5  # where 1 − p has no cancellation the library's h is the reference too
    assert torch.allclose(p_m[low], margins.modulated_probability(a[low], p[low]), rtol=1e-9, atol=0.0)


@pytest.mark.parametrize("params", [{"a": 2.5}, {"a": 1.0}, {"bins": 4, "a": [1.0, 2.0, 5.0, 40.0]},
                                    {"bins": 2, "a": 3.0}])
def test_modulated_is_h_of_a_in_its_probability_bin(params):
    loss = _head("modulated", s=8.0, reduction="none", **params)
    x, y = _inputs_for(loss)
    with torch.no_grad():
        p_m = torch.exp(-loss(x, y))
        p, q = _p_and_rest(loss.logits(x), y)
    a_values = torch.tensor([v for v in loss.get_params().values()][1:], dtype=f64)
    bins = params.get("bins", 1)
    a = a_values[margins.bin_index(p, bins)]
    if bins > 1:  # the data spread over several bins
        assert margins.bin_index(p, bins).unique().numel() > 1
    assert torch.allclose(p_m, _h(a, p, q), rtol=1e-9, atol=0.0)


def test_am_lfs_is_minus_log_tau_of_p():
    slopes, intercepts = [2.0, 1.0, 0.5], [0.0, 0.1, 0.4]
    loss = _head("am_lfs", s=4.0, bins=3, use_t=False, tau_slopes=slopes,
                 tau_intercepts=intercepts, reduction="none")
    x, y = _inputs_for(loss)
    with torch.no_grad():
        p = loss.logits(x).softmax(dim=1)[torch.arange(N), y]
        expected = -torch.log(margins.tau(p, slopes, intercepts))
        assert torch.allclose(loss(x, y), expected, rtol=1e-9)
    # identity τ and t: plain NormFace at the same scale
    plain = _head("am_lfs", s=4.0, bins=3)
    ref = _head("normface", s=4.0)
    assert torch.allclose(plain(x, y), ref(x, y), rtol=1e-12)


def test_margin_changes_only_the_target_column():
    loss = _head("arcface")
    x, y = _inputs_for(loss)
    z = loss.logits(x)
    zm = loss.margin_logits(x, y)
    mask = torch.zeros_like(z, dtype=torch.bool)
    mask[torch.arange(N), y] = True
    assert torch.equal(z[~mask], zm[~mask])
    assert bool((zm[mask] < z[mask]).all())


# ------------------------------------------------------------ registry and parameters
def test_available_and_heads():
    names = losses.available()
    for name in ["softmax", "weighted_softmax", "lsoftmax", "sphereface", "l2_softmax",
                 "normface", "cosface", "am_softmax", "arcface", "combined_margin",
                 "modulated", "am_lfs", "center", "range", "contrastive", "triplet"]:
        assert name in names
    for name in names:
        loss = losses.build(name, embedding_size=D, num_classes=C)
        if name in losses.AUX_NAMES:
            continue
        # Sub-center ArcFace: K sub-centres per class, class-major (C·K, D)
        assert loss.weight.shape == (C * getattr(loss, "K", 1), D)
        x = torch.randn(5, D)
        assert loss.logits(x).shape == (5, C)
        value = loss(x, torch.tensor([0, 1, 2, 3, 6]))
        assert value.dim() == 0 and math.isfinite(value.item())
    table = losses.describe_table()
    for name in names:
        assert name in table


def test_am_softmax_is_cosface():
    a = losses.build("am_softmax", embedding_size=D, num_classes=C,
                     generator=torch.Generator().manual_seed(1))
    b = losses.build("cosface", embedding_size=D, num_classes=C,
                     generator=torch.Generator().manual_seed(1))
    x, y = torch.randn(8, D), torch.randint(0, C, (8,))
    assert torch.equal(a(x, y), b(x, y))


def test_set_params_between_steps_equals_a_fresh_build():
    loss = _head("combined_margin")
    x, y = _inputs_for(loss)
    loss.set_params(s=20.0, m2=0.1, m3=0.05)
    assert loss.get_params() == {"s": 20.0, "m1": 1.0, "m2": 0.1, "m3": 0.05}
    fresh = _head("combined_margin", s=20.0, m2=0.1, m3=0.05)
    assert torch.allclose(loss(x, y), fresh(x, y))
    with pytest.raises(ValueError, match=r"unknown parameter 'm'.*allowed: s, m1, m2, m3"):
        loss.set_params(m=0.3)


def test_params_travel_with_state_dict():
    src = _head("modulated", bins=3, a=[1.0, 2.0, 4.0])
    src.set_params(a_1=3.3)
    dst = _head("modulated", bins=3)
    dst.load_state_dict(src.state_dict())
    assert dst.get_params() == src.get_params()
    x, y = _inputs_for(src)
    assert torch.equal(src(x, y), dst(x, y))
    sphere = _head("sphereface")
    for _ in range(3):
        sphere(*_inputs_for(sphere)).backward()
    copy = _head("sphereface")
    copy.load_state_dict(sphere.state_dict())
    assert copy.step == 3 and copy.lam == sphere.lam


def test_lambda_annealing_decays_per_step_to_its_floor():
    loss = _head("sphereface", m=4, lambda_base=1000.0, lambda_gamma=0.5, lambda_power=1.0,
                 lambda_min=5.0)
    x, y = _inputs_for(loss)
    assert loss.lam == 1000.0
    loss(x, y).backward()
    assert loss.lam == pytest.approx(1000.0 / 1.5)
    loss.eval()
    loss(x, y)
    assert loss.step == 1  # evaluation does not anneal
    loss.train()
    with torch.no_grad():
        loss(x, y)
    assert loss.step == 1
    loss.step = 10 ** 6
    assert loss.lam == 5.0
    # large λ: close to the plain (normalised-weight) softmax; λ = 0: full margin
    big = _head("sphereface", lambda_base=1e9, lambda_min=0.0)
    none = _head("sphereface", lambda_base=0.0, lambda_min=0.0)
    plain = F.cross_entropy(big.logits(x), y)
    assert big(x, y).item() == pytest.approx(plain.item(), rel=1e-6)
    assert none(x, y).item() > plain.item()


def test_weighted_softmax_weights():
    w = torch.linspace(0.5, 2.0, C)
    loss = _head("weighted_softmax", class_weights=w.tolist())
    x, y = _inputs_for(loss)
    z = loss.logits(x)
    assert torch.allclose(loss(x, y), F.cross_entropy(z, y, weight=w.double()))
    counts = torch.arange(1, C + 1, dtype=torch.float32)
    bal = _head("weighted_softmax", class_weights="balanced", class_counts=counts.tolist())
    expected = counts.sum() / (C * counts)
    assert torch.allclose(bal.class_weight.float(), expected)
    running = _head("weighted_softmax", class_weights="balanced")
    running(x, y)
    seen = torch.bincount(y, minlength=C).double()
    exp_w = torch.where(seen > 0, seen.sum() / (C * seen.clamp_min(1)), torch.zeros_like(seen))
    assert torch.allclose(running.class_weight, exp_w)


def test_l2_softmax_alpha_fixed_or_learned():
    fixed = _head("l2_softmax", alpha=8.0)
    x, y = _inputs_for(fixed)
    assert torch.allclose(fixed.logits(x), F.linear(8.0 * F.normalize(x), fixed.weight))
    learned = _head("l2_softmax", alpha=8.0, learn_alpha=True)
    learned(x, y).backward()
    assert learned.alpha_param.grad is not None
    learned.set_params(alpha=12.0)
    assert learned.get_params() == {"alpha": 12.0}


# ------------------------------------------------------------------------ joint terms
def test_joint_is_main_plus_weighted_aux():
    g = torch.Generator().manual_seed(3)
    joint = losses.build("cosface", embedding_size=D, num_classes=C, aux="triplet", aux_weight=0.5,
                         aux_params={"margin": 0.3}, generator=g).double()
    x, y = _inputs_for(joint)
    expected = joint.main(x, y) + 0.5 * joint.aux(x, y)
    assert torch.allclose(joint(x, y), expected)
    assert joint.weight is joint.main.weight and joint.weight.shape == (C, D)
    assert joint.logits(x).shape == (N, C)
    assert joint.get_params() == {"s": 64.0, "m": 0.35, "aux_weight": 0.5,
                                  "triplet_margin": 0.3}
    joint.set_params(m=0.2, aux_weight=0.1, triplet_margin=0.5)
    assert joint.get_params() == {"s": 64.0, "m": 0.2, "aux_weight": 0.1,
                                  "triplet_margin": 0.5}
    for aux in losses.AUX_NAMES:
        for main in ["softmax", "arcface", "modulated", "am_lfs", "lsoftmax"]:
            loss = losses.build(main, embedding_size=D, num_classes=C,
                                aux=aux, aux_weight=0.01).double()
            xx = x.clone().requires_grad_()
            loss(xx, y).backward()
            assert bool(torch.isfinite(xx.grad).all())


def _line(values):
    return torch.tensor(values, dtype=f64)[:, None]


def test_aux_hand_values():
    x = _line([0.0, 1.0, 3.0, 3.5])
    y = torch.tensor([0, 0, 1, 1])
    triplet = losses.build("triplet", margin=2.5, normalize=False)
    assert triplet(x, y).item() == pytest.approx((0.5 + 1.5 + 1.0 + 0.5) / 4)
    contrastive = losses.build("contrastive", margin=2.5, normalize=False)
    assert contrastive(x, y).item() == pytest.approx(0.5 * ((1 + 0.25) / 2 + 0.25 / 4))
    rng = losses.build("range", k=2, margin=10.0, normalize=False)
    xr, yr = _line([0.0, 1.0, 3.0, 10.0, 10.5]), torch.tensor([0, 0, 0, 1, 1])
    intra = (2 / (1 / 3 + 1 / 2) + 0.5) / 2
    inter = 10.0 - (10.25 - 4 / 3)
    assert rng(xr, yr).item() == pytest.approx(intra + inter)
    center = losses.build("center", embedding_size=1, num_classes=2).double()
    with torch.no_grad():
        center.centers.copy_(_line([0.5, 3.0]))
    assert center(x, y).item() == pytest.approx(0.5 * (0.25 + 0.25 + 0 + 0.25) / 4)


def test_triplet_without_valid_anchor_is_zero_with_gradient():
    x = torch.randn(3, D, requires_grad=True)
    value = losses.build("triplet")(x, torch.tensor([0, 1, 2]))
    value.backward()
    assert value.item() == 0.0 and bool(torch.isfinite(x.grad).all())


# -------------------------------------------------------------------------- bad input
BAD_BUILDS = [
    (dict(name="nope"), r"unknown loss 'nope'; available: softmax, weighted_softmax, .*am_softmax"),
    (dict(name="modulated", a=0.5), r"a \(the modulating factor A\) must be >= 1.*\[1, inf\)"),
    (dict(name="modulated", bins=2, a=[1.0, 0.9]), r"a_1 .* must be >= 1"),
    (dict(name="cosface", s=0.0), r"s must be > 0 \(allowed: \(0, inf\)\)"),
    (dict(name="arcface", s=-3.0), r"s must be > 0"),
    (dict(name="cosface", m=-0.1), r"m must lie in \[0, 2\]"),
    (dict(name="arcface", m=-0.1), r"m must lie in \[0, π\] radians"),
    (dict(name="arcface", m=28.6), r"m is an angle in radians and must lie in \[0, π\].*28.6° = 0.4992 rad"),
    (dict(name="combined_margin", m2=20.0), r"m2 is an angle in radians"),
    (dict(name="combined_margin", m3=-0.2), r"m3 must lie in \[0, 2\]"),
    (dict(name="arcface", fallback="clip"), r"fallback must be one of linear, none, easy, cos"),
    (dict(name="lsoftmax", m=2.5), r"m must be an integer >= 1; got 2.5"),
    (dict(name="sphereface", m=0), r"m must be an integer >= 1"),
    (dict(name="cosface", margin=0.3), r"unknown parameter 'margin' for loss 'cosface'; allowed: s, m, reduction"),
    (dict(name="cosface", reduction="avg"), r"reduction must be one of mean, sum, none"),
    (dict(name="cosface", aux="ring"), r"aux must be one of center, range, contrastive, triplet"),
    (dict(name="triplet", aux="center"), r"aux terms combine with a softmax-family loss"),
    (dict(name="triplet", margin=-1.0), r"margin must lie in \[0, inf\)"),
    (dict(name="contrastive", margin=-1.0), r"margin must lie in \[0, inf\)"),
    (dict(name="weighted_softmax", class_weights=[1.0, -1.0]), r"class_weights must be 7 finite numbers > 0"),
    (dict(name="weighted_softmax", class_weights="inverse"), r"class_weights must be 'balanced' or"),
    (dict(name="am_lfs", bins=3, tau_slopes=[1.0]), r"tau_slopes must hold 3 numbers"),
    (dict(name="modulated", bins=0), r"bins must be an integer >= 1"),
]


@pytest.mark.parametrize("kwargs,match", BAD_BUILDS, ids=[str(i) for i in range(len(BAD_BUILDS))])
def test_bad_build_names_field_and_allowed_values(kwargs, match):
    kwargs = dict(kwargs)
    name = kwargs.pop("name")
    with pytest.raises(ValueError, match=match):
        losses.build(name, embedding_size=D, num_classes=C, **kwargs)


def test_missing_sizes():
    with pytest.raises(ValueError, match=r"embedding_size must be a positive integer; got None"):
        losses.build("cosface")
    with pytest.raises(ValueError, match=r"num_classes must be a positive integer; got 0"):
        losses.build("arcface", embedding_size=D, num_classes=0)


@pytest.mark.parametrize("name", ["cosface", "softmax", "lsoftmax", "am_lfs", "modulated"])
def test_bad_inputs_at_call_time(name):
    loss = losses.build(name, embedding_size=D, num_classes=C)
    x, y = torch.randn(4, D), torch.tensor([0, 1, 2, 3])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 6\] \(num_classes=7\); got min 0, max 7"):
        loss(x, torch.tensor([0, 1, 2, 7]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 6\].*got min -1"):
        loss(x, torch.tensor([0, -1, 2, 3]))
    bad = x.clone()
    bad[1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"embeddings contain NaN or infinite values \(allowed: finite values\)"):
        loss(bad, y)
    bad[1, 2] = float("inf")
    with pytest.raises(ValueError, match=r"embeddings contain NaN"):
        loss(bad, y)
    with pytest.raises(ValueError, match=r"embeddings must have shape \(N, 6\)"):
        loss(torch.randn(4, D + 1), y)
    with pytest.raises(ValueError, match=r"labels must be an integer \(long\) tensor of shape \(4,\)"):
        loss(x, y.float())
    with pytest.raises(ValueError, match=r"labels must have shape \(4,\)"):
        loss(x, y[:3])


def test_bad_set_params():
    with pytest.raises(ValueError, match=r"a \(the modulating factor A\) must be >= 1"):
        losses.build("modulated", embedding_size=D, num_classes=C).set_params(a=0.99)
    with pytest.raises(ValueError, match=r"m must be an integer >= 1"):
        losses.build("lsoftmax", embedding_size=D, num_classes=C).set_params(m=3.5)
    with pytest.raises(ValueError, match=r"m is an angle in radians"):
        losses.build("arcface", embedding_size=D, num_classes=C).set_params(m=30)
    with pytest.raises(ValueError, match=r"s must be > 0"):
        losses.build("normface", embedding_size=D, num_classes=C).set_params(s=0)
    with pytest.raises(ValueError, match=r"tau_slope_0 must be a finite number"):
        losses.build("am_lfs", embedding_size=D, num_classes=C).set_params(tau_slope_0=float("nan"))
    loss = losses.build("lsoftmax", embedding_size=D, num_classes=C)
    loss.set_params(m=3.0)  # an integral float is an integer
    assert loss.get_params() == {"m": 3.0}


def test_learned_alpha_survives_moving_the_module():
    loss = _head("l2_softmax", alpha=8.0, learn_alpha=True)
    with torch.no_grad():
        loss.alpha_param.fill_(9.5)
    loss = loss.float().double()
    assert loss.get_params() == {"alpha": 9.5}
