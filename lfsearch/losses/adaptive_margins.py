"""Members whose target margin adapts per sample (the target-logit family with log A_i per
sample): AdaFace (by the feature norm), MagFace (by the magnitude), ElasticFace (a random margin
per sample, and the "+" variants sorted by difficulty), and AdaCos (the scale s, no margin).
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from lfsearch.losses import margins as margins_mod
from lfsearch.losses.base import _NORM_EPS, _Head, _MarginCrossEntropy, _normalized_scores
from lfsearch.losses.target_logit import (
    _Z,
    QUANTILES,
    _check_fallback,
    _Draws,
    _ReplacedTargetHead,
    arc_target,
    arc_target_and_slope,
)

log = logging.getLogger(__name__)
_LEVELS: dict[tuple[torch.dtype, torch.device], Tensor] = {}


def _quantile_levels(like: Tensor) -> Tensor:
    """QUANTILES as a tensor on `like`'s device and dtype, made once (no copy per step)."""
    key = (like.dtype, like.device)
    if key not in _LEVELS:
        _LEVELS[key] = torch.tensor(QUANTILES, dtype=like.dtype, device=like.device)
    return _LEVELS[key]


# ------------------------------------------------------------------------------ AdaFace
class AdaFace(_ReplacedTargetHead):
    """AdaFace (Kim, Jain, Liu, "AdaFace: Quality Adaptive Margin for Face Recognition",
    CVPR 2022): the margin follows each sample's feature norm ‖z_i‖, a proxy of image quality.

        ẑ_i     = clip( (‖z_i‖ − μ_z) / (σ_z / h), −1, 1 )
        g_angle = −m·ẑ_i,     g_add = m·ẑ_i + m
        target  = s·( cos(clip(θ_y + g_angle, ε, π − ε)) − g_add )

    μ_z, σ_z: EMA of the batch mean and (unbiased) standard deviation of the detached norms
    clipped to [0.001, 100], μ ← t_alpha·mean + (1 − t_alpha)·μ (initial μ = 20, σ = 100, as the
    authors' code; updated before use, in training only; σ is not updated on a batch of 1).
    ẑ = −1 gives ArcFace (angular margin m), ẑ = 0 CosFace (m), ẑ = 1 a negative angular
    margin and an additive 2m. ε = 1e-3. Paper defaults m = 0.4, h = 0.333, s = 64,
    t_alpha = 0.01.

    lfsearch extension: ``sigma`` > 0 draws the margin per sample, m_i ~ N(m, sigma)
    (ElasticFace's elastic margin), in training; with h = 0 this is ElasticFace-Cos, with
    sigma = 0 (default) the paper's AdaFace.
    """

    name = "adaface"
    formula = ("target s (cos(clip(theta_y - m z_i, eps, pi-eps)) - m z_i - m), "
               "z_i = clip(h (||x_i|| - mu)/sigma_norm, -1, 1), EMA batch norm stats")
    varies = "feature norm ||x|| through z_i (EMA batch statistics)"
    EPS = 1e-3

    def __init__(self, embedding_size=None, num_classes=None, *, m: float = 0.4,
                 h: float = 0.333, s: float = 64.0, t_alpha: float = 0.01,
                 sigma: float = 0.0, seed: int | None = None, reduction: str = "mean",
                 generator=None) -> None:
        super().__init__(embedding_size, num_classes, s=s, reduction=reduction,
                         generator=generator)
        for key, value in (("m", m), ("h", h), ("t_alpha", t_alpha), ("sigma", sigma)):
            self._values[key] = self._validate(key, value)
        self.register_buffer("batch_mean", torch.tensor(20.0))
        self.register_buffer("batch_std", torch.tensor(100.0))
        #: ẑ's 16/50/84th percentiles over the last training batch (before one: ±h, the
        #: paper's "68% within [−h, h]").
        self.register_buffer("zhat_quantiles", torch.tensor(
            [max(-1.0, min(1.0, self._values["h"] * z)) for z in _Z]))
        self._draws = _Draws(seed, generator)

    def _validate(self, name, value):
        if name == "m":
            return margins_mod.check_angle("m", value)
        if name == "t_alpha":
            return margins_mod.check_nonnegative("t_alpha", value, 1.0)
        if name in ("h", "sigma"):
            return margins_mod.check_nonnegative(name, value)
        return super()._validate(name, value)

    def _zhat(self, x: Tensor, update: bool) -> Tensor:
        with torch.no_grad():
            xf = x.detach().float() if x.element_size() < 4 else x.detach()
            norms = torch.linalg.vector_norm(xf, dim=1).clamp(0.001, 100.0)
            if update:
                a = self._values["t_alpha"]
                mean = self.batch_mean.to(norms.dtype)
                self.batch_mean.copy_(a * norms.mean() + (1 - a) * mean)
                if norms.numel() > 1:
                    std = self.batch_std.to(norms.dtype)
                    self.batch_std.copy_(a * norms.std() + (1 - a) * std)
            scaled = (norms - self.batch_mean.to(norms.dtype)) / (
                self.batch_std.to(norms.dtype) + self.EPS)
            zhat = (scaled * self._values["h"]).clamp(-1.0, 1.0)
            if update:
                self.zhat_quantiles.copy_(torch.quantile(zhat, _quantile_levels(zhat)))
            return zhat

    def _margin(self, like: Tensor, update: bool) -> Tensor | float:
        m, sigma = self._values["m"], self._values["sigma"]
        if sigma > 0 and update:
            return m + sigma * self._draws.normal(like.shape[0], like)
        return m

    @classmethod
    def formula_at(cls, cos: Tensor, zhat, m) -> Tensor:
        """f(θ) = cos(clip(θ − m·ẑ, ε, π − ε)) − (m·ẑ + m) for given ẑ and m."""
        return cls.formula_and_slope(cos, zhat, m)[0]

    @classmethod
    def formula_and_slope(cls, cos: Tensor, zhat, m) -> tuple[Tensor, Tensor]:
        """(f, df/dcos θ): f' = −sin(θ − m·ẑ)·dθ/dcos θ inside the clip, 0 outside;
        θ = atan2(sin θ, cos θ) with sin θ clamped as in :mod:`lfsearch.losses.margins`."""
        c = cos.clamp(-1.0, 1.0)
        zhat = torch.as_tensor(zhat, dtype=c.dtype, device=c.device)
        m = m.to(c.dtype) if isinstance(m, Tensor) else float(m)  # a number: no copy
        sin, dsin = margins_mod._sin_and_slope(c)
        theta = torch.atan2(sin, c)
        dtheta = (c * dsin - sin) / (c * c + sin * sin)
        arg = theta - m * zhat
        inside = (arg >= cls.EPS) & (arg <= math.pi - cls.EPS)
        theta_m = arg.clamp(cls.EPS, math.pi - cls.EPS)
        value = torch.cos(theta_m) - (m * zhat + m)
        slope = torch.where(inside, -torch.sin(theta_m) * dtheta, torch.zeros_like(c))
        return value, slope

    def _target_and_slope(self, cos_y, x, update):
        zhat = self._zhat(x, update).to(cos_y.dtype)
        return self.formula_and_slope(cos_y, zhat, self._margin(cos_y, update))

    def target_quantiles(self, cos):
        q = self.zhat_quantiles.to(cos.dtype)
        return torch.stack([self.formula_at(cos, q[i], self._values["m"]) for i in range(3)])

    def get_extra_state(self) -> dict:
        return {"values": dict(self._values), **self._draws.state()}

    def set_extra_state(self, state: dict) -> None:
        super().set_extra_state(state)
        self._draws.load(state)


# ------------------------------------------------------------------------------ MagFace
class MagFace(_ReplacedTargetHead):
    """MagFace (Meng, Zhao, Huang, Hu, "MagFace: A Universal Representation for Face
    Recognition and Quality Assessment", CVPR 2021): an angular margin that grows with the
    feature magnitude a = ‖x‖, plus a regulariser g(a) that rewards large magnitudes.

        a     = clip(‖x_i‖, l_a, u_a)
        m(a)  = (u_m − l_m)/(u_a − l_a)·(a − l_a) + l_m
        g(a)  = 1/a + a/u_a²
        L_i   = −log softmax with target s·cos(θ_y + m(a_i))  +  λ_g·g(a_i)

    The gradient flows through a into m(a) and g(a) (zero outside [l_a, u_a]). Past
    θ + m(a) > π: ``fallback`` as ArcFace (default "linear"; the authors' code uses an easy
    margin). Paper defaults l_a = 10, u_a = 110, l_m = 0.45, u_m = 0.8, λ_g = 35, s = 64;
    the paper's convergence condition λ_g ≥ s·k·u_a²·l_a²/(u_a² − l_a²), k the slope of m(a),
    is logged as a warning when it fails.
    """

    name = "magface"
    formula = ("target s cos(theta_y + m(a)), m(a) = l_m + (u_m-l_m)(a-l_a)/(u_a-l_a), "
               "a = clip(||x||, l_a, u_a); + lambda_g (1/a + a/u_a^2)")
    varies = "feature magnitude a = ||x|| in [l_a, u_a]"

    def __init__(self, embedding_size=None, num_classes=None, *, s: float = 64.0,
                 l_a: float = 10.0, u_a: float = 110.0, l_m: float = 0.45, u_m: float = 0.8,
                 lambda_g: float = 35.0, fallback: str = "linear", reduction: str = "mean",
                 generator=None) -> None:
        super().__init__(embedding_size, num_classes, s=s, reduction=reduction,
                         generator=generator)
        for key, value in (("l_a", l_a), ("u_a", u_a), ("l_m", l_m), ("u_m", u_m),
                           ("lambda_g", lambda_g)):
            self._values[key] = self._validate(key, value)
        self._check_relations(self._values)
        self.fallback = _check_fallback(fallback)
        #: 16/50/84th percentiles of a over the last training batch (before one: l_a,
        #: the middle and u_a).
        self.register_buffer("a_quantiles", torch.tensor(
            [l_a, 0.5 * (l_a + u_a), u_a], dtype=torch.float32))

    def _validate(self, name, value):
        if name in ("l_a", "u_a"):
            return margins_mod.check_positive(name, value)
        if name in ("l_m", "u_m"):
            return margins_mod.check_angle(name, value)
        if name == "lambda_g":
            return margins_mod.check_nonnegative(name, value)
        return super()._validate(name, value)

    def _check_relations(self, v):
        if not v["u_a"] > v["l_a"]:
            raise ValueError(f"u_a must be > l_a (allowed: l_a < u_a); got l_a={v['l_a']:g}, "
                             f"u_a={v['u_a']:g}")
        if not v["u_m"] >= v["l_m"]:
            raise ValueError(f"u_m must be >= l_m (allowed: l_m <= u_m); got "
                             f"l_m={v['l_m']:g}, u_m={v['u_m']:g}")
        k = (v["u_m"] - v["l_m"]) / (v["u_a"] - v["l_a"])
        need = v["s"] * k * v["u_a"] ** 2 * v["l_a"] ** 2 / (v["u_a"] ** 2 - v["l_a"] ** 2)
        if v["lambda_g"] < need:
            log.warning("magface: lambda_g = %g is below the paper's bound %.3g "
                        "(s·k·u_a²·l_a²/(u_a² − l_a²)); the magnitude may not converge",
                        v["lambda_g"], need)

    _norm: Tensor | None = None  # ‖x‖ of the step under way, shared by logits, m(a), g(a)

    def _feature_norm(self, x: Tensor) -> Tensor:
        if self._norm is not None:
            return self._norm
        return torch.linalg.vector_norm(x.float() if x.element_size() < 4 else x, dim=1)

    def magnitude(self, x: Tensor) -> Tensor:
        """a = clip(‖x‖, l_a, u_a), (N,), with autograd."""
        return self._feature_norm(x).clamp(self._values["l_a"], self._values["u_a"])

    def _scores(self, x: Tensor) -> Tensor:
        scale = (self.s / self._feature_norm(x).clamp_min(_NORM_EPS)).to(x.dtype)
        return F.linear(x * scale[:, None], F.normalize(self.weight, dim=1, eps=_NORM_EPS))

    def _cross_entropy(self, x, labels, reduction):
        self._norm = self._feature_norm(x)  # one norm (and one backward through it) per step
        try:
            return super()._cross_entropy(x, labels, reduction)
        finally:
            self._norm = None

    def margin(self, a):
        """m(a) = (u_m − l_m)/(u_a − l_a)·(a − l_a) + l_m."""
        v = self._values
        return (v["u_m"] - v["l_m"]) / (v["u_a"] - v["l_a"]) * (a - v["l_a"]) + v["l_m"]

    def regulariser(self, a):
        """g(a) = 1/a + a/u_a²."""
        return 1.0 / a + a / self._values["u_a"] ** 2

    def _target_and_slope(self, cos_y, x, update):
        a = self.magnitude(x).to(cos_y.dtype)  # with autograd: m(a) has a gradient via ‖x‖
        if update:
            with torch.no_grad():
                self.a_quantiles.copy_(torch.quantile(a.detach(), _quantile_levels(a)))
        return arc_target_and_slope(cos_y, self.margin(a), self.fallback)

    def _extra_loss(self, x):
        lam = self._values["lambda_g"]
        return None if lam == 0.0 else lam * self.regulariser(self.magnitude(x))

    def target_quantiles(self, cos):
        a = self.a_quantiles.to(cos.dtype)
        return torch.stack([arc_target(cos, self.margin(a[i]), self.fallback)
                            for i in range(3)])


# --------------------------------------------------------------------------- ElasticFace
class _Elastic(_ReplacedTargetHead):
    """ElasticFace (Boutros, Damer, Kirchbuchner, Kuijper, "ElasticFace: Elastic Margin Loss
    for Deep Face Recognition", CVPR Workshops 2022): the margin of each sample is drawn
    anew every step from N(m, σ) (``sigma``).

    ``plus`` (ElasticFace+): the drawn margins are sorted and matched by rank to the
    samples' target cosines, the largest cos θ_y getting the smallest margin (samples far
    from their class centre get the larger margins). The authors' code indexes the sorted
    margins by the argsort of the cosines (the permutation itself, not its inverse), which
    matches by rank only for N ≤ 2; this follows the description.

    In eval mode (or without autograd) the margin is the mean m. Draws are seeded by
    (seed, step); ``seed`` None takes one from ``generator`` or torch's global generator.

    The two members differ only in where the margin goes: each defines
    ``apply_margin_and_slope(cos, m) -> (target cosine, its derivative in cos)``.
    """

    varies = "margin drawn per sample, m_i ~ N(m, sigma)"
    plus = False

    def __init__(self, embedding_size, num_classes, *, s, m, sigma, seed, reduction,
                 generator, angular: bool) -> None:
        super().__init__(embedding_size, num_classes, s=s, reduction=reduction,
                         generator=generator)
        self._angular = angular
        self._values["m"] = self._validate("m", m)
        self._values["sigma"] = self._validate("sigma", sigma)
        self._draws = _Draws(seed, generator)

    def _validate(self, name, value):
        if name == "m":
            return margins_mod.check_angle("m", value) if self._angular else margins_mod.check_nonnegative(
                "m", value, 2.0)
        if name == "sigma":
            return margins_mod.check_nonnegative("sigma", value)
        return super()._validate(name, value)

    def draw_margins(self, cos_y: Tensor) -> Tensor:
        """Margins for one step: m + σ·N(0, 1) per sample (rank-matched with ``plus``)."""
        v = self._values
        margins = v["m"] + v["sigma"] * self._draws.normal(cos_y.shape[0], cos_y)
        if self.plus:
            with torch.no_grad():
                ascending = torch.sort(margins).values
                order = torch.argsort(cos_y.detach(), descending=True)
                margins = torch.empty_like(margins)
                margins[order] = ascending  # k-th largest cos θ_y gets the k-th smallest m
        return margins

    def apply_margin(self, cos: Tensor, m) -> Tensor:
        return self.apply_margin_and_slope(cos, m)[0]

    def _target_and_slope(self, cos_y, x, update):
        m = self.draw_margins(cos_y) if update and self._values["sigma"] > 0 else \
            self._values["m"]
        return self.apply_margin_and_slope(cos_y, m)

    def target_quantiles(self, cos):
        v = self._values
        return torch.stack([self.apply_margin(cos, v["m"] + v["sigma"] * z) for z in _Z])

    def get_extra_state(self) -> dict:
        return {"values": dict(self._values), **self._draws.state()}

    def set_extra_state(self, state: dict) -> None:
        super().set_extra_state(state)
        self._draws.load(state)


class ElasticFaceArc(_Elastic):
    __doc__ = (_Elastic.__doc__ or "") + """
    ElasticFace-Arc: target s·cos(θ_y + m_i), m_i ~ N(m, σ); past θ + m_i > π the ArcFace
    ``fallback`` ("linear" default; "none" = the authors' code). Released defaults m = 0.5,
    σ = 0.05, s = 64 (ElasticFace-Arc+: σ = 0.0175).
    """

    name = "elasticface_arc"
    formula = "target s cos(theta_y + m_i), m_i ~ N(m, sigma) per sample and step"

    def __init__(self, embedding_size=None, num_classes=None, *, s: float = 64.0,
                 m: float = 0.5, sigma: float = 0.05, fallback: str = "linear",
                 seed: int | None = None, reduction: str = "mean", generator=None) -> None:
        super().__init__(embedding_size, num_classes, s=s, m=m, sigma=sigma, seed=seed,
                         reduction=reduction, generator=generator, angular=True)
        self.fallback = _check_fallback(fallback)

    def apply_margin_and_slope(self, cos, m):
        return arc_target_and_slope(cos, m, self.fallback)


class ElasticFaceCos(_Elastic):
    __doc__ = (_Elastic.__doc__ or "") + """
    ElasticFace-Cos: target s·(cos θ_y − m_i), m_i ~ N(m, σ). Released defaults m = 0.35,
    σ = 0.05, s = 64 (ElasticFace-Cos+: σ = 0.02).
    """

    name = "elasticface_cos"
    formula = "target s (cos theta_y - m_i), m_i ~ N(m, sigma) per sample and step"

    def __init__(self, embedding_size=None, num_classes=None, *, s: float = 64.0,
                 m: float = 0.35, sigma: float = 0.05, seed: int | None = None,
                 reduction: str = "mean", generator=None) -> None:
        super().__init__(embedding_size, num_classes, s=s, m=m, sigma=sigma, seed=seed,
                         reduction=reduction, generator=generator, angular=False)

    def apply_margin_and_slope(self, cos, m):
        return cos - m, torch.ones_like(cos)


class ElasticFaceArcPlus(ElasticFaceArc):
    """ElasticFace-Arc+: ElasticFace-Arc with the drawn margins ordered by cos θ_y (the
    largest cos θ_y gets the smallest margin); released defaults m = 0.5, σ = 0.0175."""

    name = "elasticface_arc_plus"
    formula = "elasticface_arc with sorted m_i: larger cos theta_y, smaller m_i"
    plus = True

    def __init__(self, embedding_size=None, num_classes=None, *, s: float = 64.0,
                 m: float = 0.5, sigma: float = 0.0175, fallback: str = "linear",
                 seed: int | None = None, reduction: str = "mean", generator=None) -> None:
        super().__init__(embedding_size, num_classes, s=s, m=m, sigma=sigma,
                         fallback=fallback, seed=seed, reduction=reduction,
                         generator=generator)


class ElasticFaceCosPlus(ElasticFaceCos):
    """ElasticFace-Cos+: ElasticFace-Cos with the drawn margins ordered by cos θ_y (the
    largest cos θ_y gets the smallest margin); released defaults m = 0.35, σ = 0.02."""

    name = "elasticface_cos_plus"
    formula = "elasticface_cos with sorted m_i: larger cos theta_y, smaller m_i"
    plus = True

    def __init__(self, embedding_size=None, num_classes=None, *, s: float = 64.0,
                 m: float = 0.35, sigma: float = 0.02, seed: int | None = None,
                 reduction: str = "mean", generator=None) -> None:
        super().__init__(embedding_size, num_classes, s=s, m=m, sigma=sigma, seed=seed,
                         reduction=reduction, generator=generator)

# ------------------------------------------------------------------------------- AdaCos
class AdaCos(_Head):
    """AdaCos (Zhang, Zhao, Yan, Yi, Chen, "AdaCos: Adaptively Scaling Cosine Logits for
    Effectively Learning Deep Face Representations", CVPR 2019): no margin (A = 1), softmax on
    s·cos θ_j with the scale set automatically.

        fixed:    s = √2·log(C − 1)
        dynamic:  s ← log B_avg / cos(min(π/4, θ_med)),
                  B_avg = (1/N) Σ_i Σ_{j ≠ y_i} exp(s·cos θ_{i,j}),  θ_med the median θ_y

    The dynamic update uses the batch with the current s, then the loss uses the new s (as
    the reference implementations); training only; a non-finite or non-positive result
    keeps the old s. s is a buffer (``state_dict()``), not a searchable parameter.
    Needs C ≥ 3 (s = 0 at C = 2).
    """

    name = "adacos"
    formula = ("-log softmax(s cos theta_j)_y, s = sqrt(2) log(C-1), dynamic: "
               "s = log B_avg / cos(min(pi/4, median theta_y))")
    changes = "scale"

    def __init__(self, embedding_size=None, num_classes=None, *, dynamic: bool = True,
                 reduction: str = "mean", generator=None) -> None:
        super().__init__(embedding_size, num_classes, reduction=reduction,
                         generator=generator)
        if self.num_classes < 3:
            raise ValueError(f"adacos needs num_classes >= 3 (its fixed scale √2·log(C − 1) "
                             f"is 0 at C = 2); got {self.num_classes}")
        if not isinstance(dynamic, bool):
            raise ValueError(f"dynamic must be true or false; got {dynamic!r}")
        self.dynamic = dynamic
        self.register_buffer("scale", torch.tensor(math.sqrt(2.0) * math.log(
            self.num_classes - 1), dtype=torch.float64))

    @property
    def s(self) -> float:
        return float(self.scale)

    def _scores(self, x):
        return _normalized_scores(x, self.weight, self.scale.to(x.dtype))

    def target(self, cos):
        return cos

    def _cross_entropy(self, x, labels, reduction):
        z = _normalized_scores(x, self.weight, self.scale.to(x.dtype).clone())
        if self.dynamic and self.training and torch.is_grad_enabled():
            with torch.no_grad():
                new = self.next_scale(z.detach(), labels)
                ratio = (new / self.scale).to(z.dtype)
                self.scale.copy_(new)
            z = z.mul_(ratio)
        return _MarginCrossEntropy.apply(z, None, None, labels, None, None, reduction)

    def next_scale(self, z: Tensor, labels: Tensor) -> Tensor:
        """log B_avg / cos(min(π/4, θ_med)) from logits z = s·cos θ at the current s."""
        zf = z.double()
        rows = torch.arange(zf.shape[0], device=zf.device)
        cos_y = (zf[rows, labels] / self.scale).clamp(-1.0, 1.0)
        masked = zf.index_put((rows, labels), torch.tensor(float("-inf"), dtype=zf.dtype,
                                                           device=zf.device))
        log_b = torch.logsumexp(masked.flatten(), dim=0) - math.log(zf.shape[0])
        return self.scale_from(log_b, cos_y)

    def scale_from(self, log_b: Tensor, cos_y: Tensor) -> Tensor:
        """The dynamic scale from log B_avg and the batch's cos θ_y (float64; the old scale
        where the result is not finite and positive). The sharded head
        (losses/sharded_fc.py) gives B_avg and cos θ_y over every rank's classes."""
        theta_med = torch.median(torch.arccos(cos_y.clamp(-1.0, 1.0)))
        new = log_b / torch.cos(theta_med.clamp(max=math.pi / 4))
        ok = torch.isfinite(new) & (new > 0)
        return torch.where(ok, new, self.scale)

    def get_extra_state(self) -> dict:
        return {"values": {}}
