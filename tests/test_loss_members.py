"""The members published after ArcFace (lfsearch/losses_recent.py) against float64
transcriptions of their papers' formulas (written here, from the papers and the authors'
code, with plain autograd on full N×C matrices), numbers worked by hand, and properties."""

import math

import pytest
import torch
import torch.nn.functional as F

from lfsearch import losses

f64 = torch.float64
N, D, C = 24, 6, 5
RECENT = [cls.name for cls in losses.MEMBERS]


def _build(name, seed=0, c=C, **params):
    return losses.build(name, embedding_size=D, num_classes=c,
                        generator=torch.Generator().manual_seed(seed),
                        **params).double()


def _inputs(loss, seed=1, scale=5.0, opposite=4, c=C):
    """Random embeddings of norm ~ scale·sqrt(D); a few almost opposite their class."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, D, generator=g, dtype=f64) * scale
    y = torch.randint(0, c, (N,), generator=g)
    w = loss.weight.detach()
    if w.shape[0] == c:
        wy = w[y[:opposite]]
        x[:opposite] = -wy / wy.norm(dim=1, keepdim=True) * 20.0 + 0.05 * torch.randn(
            opposite, D, generator=g, dtype=f64)
    return x, y


def _cosines(x, w):
    return F.normalize(x, dim=1) @ F.normalize(w, dim=1).t()


def _one_hot(y, c):
    return F.one_hot(y, c).to(f64)


def _ce(logits, y):
    """−log softmax_y written out: logsumexp − z_y, mean over the batch."""
    rows = torch.arange(len(y))
    return (torch.logsumexp(logits, dim=1) - logits[rows, y]).mean()


def _arc_paper(cos, m):
    """The authors' ArcFace target: cos(θ + m) where θ + m ≤ π, else cos θ − m·sin m."""
    theta = torch.acos(cos.clamp(-1, 1))
    return torch.where(theta + m <= math.pi, torch.cos(theta + m), cos - m * torch.sin(
        torch.as_tensor(m, dtype=f64)))


def _grads(value, tensors):
    return torch.autograd.grad(value, tensors)


def _compare(ours_value, ref_value, tensors_ours, tensors_ref, rtol=1e-9):
    assert ours_value.item() == pytest.approx(ref_value.item(), rel=rtol, abs=1e-12)
    for a, b in zip(_grads(ours_value, tensors_ours), _grads(ref_value, tensors_ref)):
        assert torch.allclose(a, b, rtol=1e-7, atol=1e-10), (a - b).abs().max()


# ----------------------------------------------------------------------------- AdaFace
def _adaface_paper(x, w, y, mean, std, *, m=0.4, h=0.333, s=64.0, t_alpha=0.01, eps=1e-3):
    """AdaFace eq. (8)-(11) and the authors' head.py, on float64; returns (loss, mean, std)."""
    norms = x.norm(dim=1).clamp(0.001, 100).detach()
    mean = t_alpha * norms.mean() + (1 - t_alpha) * mean
    std = t_alpha * norms.std() + (1 - t_alpha) * std
    zhat = ((norms - mean) / (std + eps) * h).clamp(-1, 1)
    cos = _cosines(x, w)
    one = _one_hot(y, w.shape[0])
    g_angle = (-m * zhat)[:, None] * one
    g_add = (m * zhat + m)[:, None] * one
    theta = torch.acos(cos.clamp(-1, 1))
    # the clip to [eps, π − eps] applies to the target (θ + g_angle) only: other logits stay
    theta_m = torch.where(one > 0, (theta + g_angle).clamp(eps, math.pi - eps), theta)
    logits = s * (torch.cos(theta_m) - g_add)
    return _ce(logits, y), mean, std


def test_adaface_matches_paper_over_two_steps():
    loss = _build("adaface", s=30.0, m=0.4, h=0.333, t_alpha=0.3)
    mean, std = torch.tensor(20.0, dtype=f64), torch.tensor(100.0, dtype=f64)
    for step in range(2):
        x, y = _inputs(loss, seed=step, scale=3.0 + 4 * step)
        x_ours, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
        ours = loss(x_ours, y)
        ref, mean, std = _adaface_paper(x_ref, loss.weight, y, mean, std, s=30.0, t_alpha=0.3)
        _compare(ours, ref, [x_ours, loss.weight], [x_ref, loss.weight])
        assert loss.batch_mean.item() == pytest.approx(mean.item(), rel=1e-12)
        assert loss.batch_std.item() == pytest.approx(std.item(), rel=1e-12)


def test_adaface_hand_values():
    # cos θ = 0.5 (θ = π/3 = 1.047198), m = 0.4
    c = torch.tensor([0.5], dtype=f64)
    # ẑ = 0: CosFace, 0.5 − 0.4
    assert losses.AdaFace.formula_at(c, 0.0, 0.4).item() == pytest.approx(0.1, abs=1e-12)
    # ẑ = −1: ArcFace, cos(1.447198) = sin(π/2 − 1.447198) = sin(0.123598) = 0.123284
    assert losses.AdaFace.formula_at(c, -1.0, 0.4).item() == pytest.approx(0.123284, abs=1e-6)
    # ẑ = 1: cos(1.047198 − 0.4) − 0.8 = cos(0.647198) − 0.8 = 0.797777 − 0.8
    assert losses.AdaFace.formula_at(c, 1.0, 0.4).item() == pytest.approx(-0.002223, abs=1e-6)
    # ẑ from a batch: norms 10 and 30 with μ = 20, σ = 100 and t_alpha = 1 (stats = batch):
    # mean 20, unbiased std sqrt(200) = 14.142136; ẑ = ±10/(14.142136 + 0.001)·h
    loss = losses.build("adaface", embedding_size=2, num_classes=3, t_alpha=1.0, h=1.0)
    x = torch.tensor([[10.0, 0.0], [0.0, 30.0]])
    zhat = loss._zhat(x, update=True)
    assert loss.batch_mean.item() == pytest.approx(20.0)
    assert loss.batch_std.item() == pytest.approx(14.142136, rel=1e-6)
    assert zhat.tolist() == pytest.approx([-0.707057, 0.707057], abs=1e-6)


def test_adaface_h0_is_cosface_and_h0_sigma_is_elasticface_cos():
    ada = _build("adaface", s=20.0, m=0.3, h=0.0)
    cos = _build("cosface", s=20.0, m=0.3)
    x, y = _inputs(ada)
    assert torch.allclose(ada(x, y), cos(x, y), rtol=1e-12)
    ada = _build("adaface", s=20.0, m=0.3, h=0.0, sigma=0.1, seed=7)
    ela = _build("elasticface_cos", s=20.0, m=0.3, sigma=0.1, seed=7)
    for _ in range(2):  # the same seeded draws, step after step
        assert torch.allclose(ada(x, y), ela(x, y), rtol=1e-12)


def test_adaface_statistics_move_in_training_only_and_travel_with_state_dict():
    loss = _build("adaface")
    x, y = _inputs(loss)
    loss.eval()
    loss(x, y)
    assert loss.batch_mean.item() == 20.0 and loss.batch_std.item() == 100.0
    loss.train()
    with torch.no_grad():
        loss(x, y)
    assert loss.batch_mean.item() == 20.0
    loss(x, y)
    assert loss.batch_mean.item() != 20.0
    other = _build("adaface", seed=3)
    other.load_state_dict(loss.state_dict())
    assert torch.equal(other.batch_mean, loss.batch_mean)
    assert torch.equal(other.zhat_quantiles, loss.zhat_quantiles)
    other.eval(), loss.eval()
    assert torch.equal(other(x, y), loss(x, y))


# ----------------------------------------------------------------------------- MagFace
def _magface_paper(x, w, y, *, s=64.0, l_a=10.0, u_a=110.0, l_m=0.45, u_m=0.8, lambda_g=35.0):
    """MagFace eq. (3)-(5) and the authors' MagLinear/MagLoss (non-easy margin), float64."""
    a = x.norm(dim=1, keepdim=True).clamp(l_a, u_a)
    m = (u_m - l_m) / (u_a - l_a) * (a - l_a) + l_m
    cos = _cosines(x, w).clamp(-1, 1)
    sin = torch.sqrt((1.0 - cos ** 2).clamp_min(0))
    cos_m = cos * torch.cos(m) - sin * torch.sin(m)
    cos_m = torch.where(cos > torch.cos(math.pi - m), cos_m, cos - torch.sin(math.pi - m) * m)
    one = _one_hot(y, w.shape[0])
    logits = s * (one * cos_m + (1 - one) * cos)
    g = 1.0 / a + a / u_a ** 2
    return _ce(logits, y) + lambda_g * g.mean()


def test_magface_matches_paper_including_gradient_through_the_norm():
    loss = _build("magface", s=32.0)
    x, y = _inputs(loss, scale=25.0)  # norms ~ 60: inside [l_a, u_a]
    x[5] *= 0.05  # one below l_a, one above u_a: clipped
    x[6] *= 3.0
    x_ours, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    _compare(loss(x_ours, y), _magface_paper(x_ref, loss.weight, y, s=32.0),
             [x_ours, loss.weight], [x_ref, loss.weight])


def test_magface_hand_values():
    loss = losses.build("magface", embedding_size=2, num_classes=3)
    a = torch.tensor([60.0], dtype=f64)
    # m(60) = 0.35/100·50 + 0.45 = 0.625;  g(60) = 1/60 + 60/110² = 0.0166667 + 0.0049587
    assert loss.margin(a).item() == pytest.approx(0.625, abs=1e-12)
    assert loss.regulariser(a).item() == pytest.approx(0.0216253, abs=1e-7)
    # ‖x‖ = 5 and 500 are clipped to l_a = 10 and u_a = 110
    x = torch.tensor([[3.0, 4.0], [300.0, 400.0]], dtype=f64)
    assert loss.magnitude(x).tolist() == [10.0, 110.0]


def test_magface_bad_relations_change_nothing():
    with pytest.raises(ValueError, match="u_a must be > l_a"):
        losses.build("magface", embedding_size=4, num_classes=3, l_a=50.0, u_a=40.0)
    loss = losses.build("magface", embedding_size=4, num_classes=3)
    with pytest.raises(ValueError, match="u_m must be >= l_m"):
        loss.set_params(l_m=0.9)
    assert loss.get_params()["l_m"] == 0.45


# ------------------------------------------------------------------------- ElasticFace
def _fixed_draws(loss, values):
    values = torch.as_tensor(values, dtype=f64)
    loss._draws.normal = lambda n, like: values[:n].to(like.dtype)


def _elastic_paper(x, w, y, margins, *, s, arc, plus):
    """ElasticFace eq. (4)/(5) and the authors' losses.py, float64, with the N(0, 1) draws
    given, the '+' variant matched by rank (largest cos θ_y, smallest margin)."""
    cos = _cosines(x, w).clamp(-1, 1)
    rows = torch.arange(len(y))
    if plus:
        order = torch.argsort(cos[rows, y].detach(), descending=True)
        ranked = torch.empty_like(margins)
        ranked[order] = torch.sort(margins).values
        margins = ranked
    one = _one_hot(y, w.shape[0])
    if arc:
        theta = torch.acos(cos)
        logits = torch.cos(theta + one * margins[:, None]) * s  # the authors' code: no fallback
    else:
        logits = (cos - one * margins[:, None]) * s
    return _ce(logits, y)


@pytest.mark.parametrize("name,arc,plus", [
    ("elasticface_arc", True, False), ("elasticface_cos", False, False),
    ("elasticface_arc_plus", True, True), ("elasticface_cos_plus", False, True)])
def test_elasticface_matches_paper_with_given_draws(name, arc, plus):
    params = {"fallback": "none"} if arc else {}
    loss = _build(name, s=16.0, m=0.4, sigma=0.1, **params)
    x, y = _inputs(loss, opposite=0)
    z = torch.randn(N, generator=torch.Generator().manual_seed(9), dtype=f64)
    _fixed_draws(loss, z)
    x_ours, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    _compare(loss(x_ours, y), _elastic_paper(x_ref, loss.weight, y, 0.4 + 0.1 * z, s=16.0,
                                              arc=arc, plus=plus),
             [x_ours, loss.weight], [x_ref, loss.weight])


def test_elasticface_plus_gives_larger_margins_to_smaller_cosines():
    loss = _build("elasticface_cos_plus", sigma=0.05)
    cos_y = torch.tensor([0.1, 0.9, 0.5, -0.3], dtype=f64)
    _fixed_draws(loss, [2.0, -1.0, 0.5, 0.0])  # margins 0.45, 0.30, 0.375, 0.35
    margins = loss.draw_margins(cos_y)
    # by cos: 0.9 -> 0.30, 0.5 -> 0.35, 0.1 -> 0.375, -0.3 -> 0.45
    assert margins.tolist() == pytest.approx([0.375, 0.30, 0.35, 0.45])


def test_elasticface_draws_are_seeded_resumable_and_n_m_sigma():
    a = _build("elasticface_arc", m=0.5, sigma=0.05, seed=3)
    cos_y = torch.zeros(20000, dtype=f64)
    first = a.draw_margins(cos_y)
    assert first.mean().item() == pytest.approx(0.5, abs=0.002)  # 5 σ/√n
    assert first.std().item() == pytest.approx(0.05, rel=0.03)
    a.draw_margins(cos_y)
    b = _build("elasticface_arc", m=0.5, sigma=0.05, seed=11)
    b.load_state_dict(a.state_dict())  # seed 3, step 2
    assert torch.equal(a.draw_margins(cos_y), b.draw_margins(cos_y))
    assert not torch.equal(first, a.draw_margins(cos_y))


def test_elasticface_sigma0_and_eval_mode_are_arcface_and_cosface():
    x, y = None, None
    for name, ref_name, m in (("elasticface_arc", "arcface", 0.5),
                              ("elasticface_cos", "cosface", 0.35)):
        ref = _build(ref_name, s=20.0, m=m)
        x, y = _inputs(ref)
        assert torch.allclose(_build(name, s=20.0, m=m, sigma=0.0)(x, y), ref(x, y),
                              rtol=1e-12)
        assert torch.allclose(_build(name, s=20.0, m=m).eval()(x, y), ref(x, y), rtol=1e-12)


# ---------------------------------------------------------------------- CurricularFace
def _curricular_paper(x, w, y, t, *, m=0.5, s=64.0):
    """CurricularFace eq. (7)-(9) and the authors' head/metrics.py, float64; (loss, new t)."""
    cos = _cosines(x, w).clamp(-1, 1)
    rows = torch.arange(len(y))
    target = cos[rows, y][:, None]
    sin = torch.sqrt(1.0 - target ** 2)
    cos_m = target * math.cos(m) - sin * math.sin(m)
    mask = cos > cos_m
    final = torch.where(target > math.cos(math.pi - m), cos_m, target - math.sin(math.pi - m) * m)
    t = target.mean().detach() * 0.01 + (1 - 0.01) * t
    out = torch.where(mask, cos * (t + cos), cos)
    one = _one_hot(y, w.shape[0]) > 0
    out = torch.where(one, final.expand_as(out), out)
    return _ce(out * s, y), t


def test_curricularface_matches_paper_over_three_steps():
    loss = _build("curricularface", s=16.0)
    loss.t.fill_(0.6)  # a later stage of training: hard negatives emphasised
    t = torch.tensor(0.6, dtype=f64)
    for step in range(3):
        x, y = _inputs(loss, seed=step)
        x_ours, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
        ours = loss(x_ours, y)
        ref, t = _curricular_paper(x_ref, loss.weight, y, t, s=16.0)
        _compare(ours, ref, [x_ours, loss.weight], [x_ref, loss.weight])
        assert loss.t.item() == pytest.approx(t.item(), rel=1e-12)


def test_curricularface_hand_values():
    # one step from t = 0 with mean target cosine 0.5: t = 0.01·0.5 = 0.005; a hard negative
    # at cos 0.6 becomes 0.6·(0.005 + 0.6) = 0.363
    loss = losses.build("curricularface", embedding_size=2, num_classes=3).double()
    loss._negatives(torch.tensor([0.4, 0.6], dtype=f64), update=True)
    assert loss.t.item() == pytest.approx(0.005)
    assert loss.negative_transform(torch.tensor(0.6, dtype=f64)).item() == pytest.approx(0.363)


# -------------------------------------------------------------------------- MV-Softmax
def _mv_paper(x, w, y, *, m, t, s, arc, adaptive):
    """MV-Softmax eq. (10)-(12) and the authors' SV-X-Softmax fc_layers.py, float64."""
    cos = _cosines(x, w).clamp(-1, 1)
    rows = torch.arange(len(y))
    gt = cos[rows, y][:, None]
    if arc:
        threshold = torch.cos(torch.acos(gt) + m)
        final = _arc_paper(gt, m)
    else:
        threshold = final = gt - m
    mask = cos > threshold
    hard = (t + 1.0) * cos + t if adaptive else cos + t
    out = torch.where(mask, hard, cos)
    out = torch.where(_one_hot(y, w.shape[0]) > 0, final.expand_as(out), out)
    return _ce(out * s, y)


@pytest.mark.parametrize("margin_type,hard", [("am", "adaptive"), ("am", "fixed"),
                                              ("arc", "adaptive"), ("arc", "fixed")])
def test_mv_softmax_matches_paper(margin_type, hard):
    m = 0.35 if margin_type == "am" else 0.5
    loss = _build("mv_softmax", m=m, t=0.2, s=32.0, margin_type=margin_type, hard=hard)
    x, y = _inputs(loss)
    x_ours, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    ref = _mv_paper(x_ref, loss.weight, y, m=m, t=0.2, s=32.0, arc=margin_type == "arc",
                    adaptive=hard == "adaptive")
    _compare(loss(x_ours, y), ref, [x_ours, loss.weight], [x_ref, loss.weight])


def test_mv_softmax_two_classes_by_hand():
    # W = e_0, e_1; x with cos θ_0 = 0.6 (target), cos θ_1 = 0.8: hard (0.8 > 0.6 − 0.35).
    # logits s·(0.6 − 0.35) = 2.5 and s·(1.2·0.8 + 0.2) = 11.6 at s = 10;
    # loss = log(1 + e^(11.6 − 2.5)) = 9.100112
    loss = losses.build("mv_softmax", embedding_size=2, num_classes=2, s=10.0).double()
    with torch.no_grad():
        loss.weight.copy_(torch.eye(2, dtype=f64))
    x = torch.tensor([[0.6, 0.8]], dtype=f64)
    assert loss(x, torch.tensor([0])).item() == pytest.approx(math.log1p(math.exp(9.1)),
                                                             rel=1e-12)
    assert math.log1p(math.exp(9.1)) == pytest.approx(9.100112, abs=1e-6)


# ------------------------------------------------------------------------------ AdaCos
def _adacos_paper(x, w, y, s):
    """AdaCos eq. (13)-(16) (dynamic), float64: update s on the batch, then the loss."""
    cos = _cosines(x, w).clamp(-1, 1)
    rows = torch.arange(len(y))
    one = _one_hot(y, w.shape[0])
    b_avg = (torch.exp(s * cos.detach()) * (1 - one)).sum() / len(y)
    theta_med = torch.median(torch.acos(cos.detach()[rows, y]))
    s = torch.log(b_avg) / torch.cos(torch.clamp(theta_med, max=math.pi / 4))
    return _ce(s * cos, y), s


def test_adacos_matches_paper_and_hand_value():
    loss = _build("adacos", c=11)
    # fixed scale √2·ln(10) = 1.4142136·2.3025851 = 3.256347
    assert loss.s == pytest.approx(3.256347, abs=1e-6)
    s = torch.tensor(loss.s, dtype=f64)
    for step in range(2):
        x, y = _inputs(loss, seed=step, c=11, opposite=0)
        x_ours, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
        ours = loss(x_ours, y)
        ref, s = _adacos_paper(x_ref, loss.weight, y, s)
        _compare(ours, ref, [x_ours, loss.weight], [x_ref, loss.weight])
        assert loss.s == pytest.approx(s.item(), rel=1e-12)
    fixed = _build("adacos", c=11, dynamic=False)
    fixed(x, y)
    assert fixed.s == pytest.approx(3.256347, abs=1e-6)


# -------------------------------------------------------------- every member: properties
@pytest.mark.parametrize("name", RECENT)
def test_fused_path_equals_autograd_on_margin_logits(name):
    """In eval mode (no statistics move, mean margins) the fused cross entropy equals
    F.cross_entropy on margin_logits(), value and gradients (magface adds λ_g·g)."""
    loss = _build(name).eval()
    x, y = _inputs(loss)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    ref = F.cross_entropy(loss.margin_logits(x2, y), y)
    if name == "magface":
        ref = ref + loss.get_params()["lambda_g"] * loss.regulariser(loss.magnitude(x2)).mean()
    _compare(loss(x1, y), ref, [x1, loss.weight], [x2, loss.weight], rtol=1e-12)


@pytest.mark.parametrize("name", RECENT)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("ends", [(1.0, 1.0, 1.0, 1.0), (-1.0, -1.0, -1.0, -1.0),
                                  (1.0, -1.0, 0.0, 1.0)])
def test_finite_loss_and_gradient_at_cos_plus_minus_one(name, dtype, ends):
    d, c = 4, 3
    loss = losses.build(name, embedding_size=d, num_classes=c)
    k = getattr(loss, "K", 1)
    with torch.no_grad():  # class j (every sub-centre of it) along e_j
        loss.weight.copy_(torch.eye(c, d).repeat_interleave(k, dim=0) * 2.0)
    loss = loss.to(dtype).train()
    y = torch.tensor([0, 1, 2, 0])
    cos = torch.tensor(ends, dtype=f64)
    x = torch.zeros(4, d, dtype=f64)
    x[torch.arange(4), y] = cos
    x[:, 3] = (1 - cos * cos).clamp_min(0).sqrt()
    x = (x * 30.0).to(dtype).requires_grad_()  # norm 30: inside MagFace's [l_a, u_a]
    for _ in range(2):  # the second step sees moved statistics
        x.grad, loss.weight.grad = None, None
        value = loss(x, y)
        value.backward()
        assert math.isfinite(value.float().item())
        assert bool(torch.isfinite(x.grad.float()).all())
        assert bool(torch.isfinite(loss.weight.grad.float()).all())


def test_registry_lists_every_recent_member_and_the_unified_view():
    names = losses.available()
    for name in ["adaface", "magface", "elasticface_arc", "elasticface_cos", "curricularface",
                 "mv_softmax", "subcenter_arcface", "adacos", "elasticface_arc_plus",
                 "elasticface_cos_plus"]:
        assert name in names
        assert name in losses.describe_table()
    table = losses.modulation_table()
    lines = table.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("---")) + 1
    rows = {line.split()[0]: line for line in lines[start:] if line.strip()}
    assert set(rows) == set(RECENT)
    # CosFace-like AdaFace median (ẑ = 0): log A = s·m = 64·0.4 = 25.6
    assert rows["adaface"].split()[3] == "25.60"
    # ElasticFace-Cos spread: s·(m ± σ) = 64·(0.35 ± 0.05) = 19.2 .. 25.6 (16/84%: ±0.9945σ)
    lo, mid, hi = map(float, rows["elasticface_cos"].split()[2:5])
    assert (lo, mid, hi) == pytest.approx((64 * (0.35 - 0.05 * 0.99446), 22.4,
                                           64 * (0.35 + 0.05 * 0.99446)), abs=0.01)
    assert "sub-centres" in rows["subcenter_arcface"]


@pytest.mark.parametrize("name,params,match", [
    ("adaface", {"m": -0.1}, "m must lie in"),
    ("adaface", {"h": -1.0}, "h must lie in"),
    ("adaface", {"t_alpha": 1.5}, r"t_alpha must lie in \[0, 1\]"),
    ("magface", {"lambda_g": -1.0}, "lambda_g must lie in"),
    ("magface", {"l_m": 30.0}, "radians"),
    ("elasticface_arc", {"sigma": -0.1}, "sigma must lie in"),
    ("elasticface_arc", {"fallback": "easy"}, "fallback must be one of linear, none"),
    ("elasticface_cos", {"m": 3.0}, r"m must lie in \[0, 2\]"),
    ("curricularface", {"momentum": 1.2}, "momentum must lie in"),
    ("mv_softmax", {"margin_type": "sphere"}, "margin_type must be one of am, arc"),
    ("mv_softmax", {"hard": "soft"}, "hard must be one of adaptive, fixed"),
    ("subcenter_arcface", {"K": 0}, "K must be an integer >= 1"),
    ("adacos", {"dynamic": "yes"}, "dynamic must be true or false"),
])
def test_bad_parameters_name_the_field(name, params, match):
    with pytest.raises(ValueError, match=match):
        losses.build(name, embedding_size=4, num_classes=3, **params)


def test_adacos_needs_three_classes():
    with pytest.raises(ValueError, match="num_classes >= 3"):
        losses.build("adacos", embedding_size=4, num_classes=2)
