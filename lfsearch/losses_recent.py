"""The margin losses published after ArcFace, as members of the unified family.

What each member changes (docs/losses_recent.md has the whole picture):

* **the target logit only** (members of the Search-Softmax family: the margin lowers the
  target logit by log A_i ≥ 0, now per sample): AdaFace, MagFace, ElasticFace-Arc and
  ElasticFace-Cos (and their "+" variants);
* **negative logits** (outside that family): CurricularFace, MV-Softmax;
* **the class weights** (K sub-centres per class): Sub-center ArcFace;
* **the scale** s (no margin, A = 1): AdaCos.

Common form. With a normalised head, logits s·cos θ_j for every class j; the target logit
becomes s·f_i(θ_y), where f_i may depend on the sample i (its feature norm, a random draw);
the "negatives" members also replace a hard negative's cos θ_j by N(cos θ_j). The N×C
logit matrix is computed once; the target column is replaced, and hard negatives changed,
inside one fused cross entropy (:class:`_ReplacedTargetCrossEntropy`); f_i and ∂f_i/∂cos θ_y
come in closed form on the (N,) target cosines, and a margin that depends on ‖x‖ (MagFace)
also gets its gradient through ‖x‖ by autograd.

Running statistics (AdaFace's norm mean and std, CurricularFace's t, AdaCos's s, the last
batch's margin quantiles) are buffers, so they travel with ``state_dict()`` (resume,
broadcast of the best candidate); they change only in training mode with autograd on.
Random margins (ElasticFace, AdaFace's optional ``sigma``) come from a generator seeded by
(seed, step): the seed and the step count are saved in ``state_dict()`` too.

Angles are in radians. Bad parameters raise ``ValueError`` naming the field and its
allowed values.
"""

from __future__ import annotations

import logging
import math
import textwrap
from statistics import NormalDist
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from lfsearch import margins as M
from lfsearch.losses import (_NORM_EPS, _Head, _MarginCrossEntropy, _NormalizedHead,
                             _normalized_scores)

log = logging.getLogger(__name__)

__all__ = [
    "AdaFace", "MagFace", "ElasticFaceArc", "ElasticFaceCos", "ElasticFaceArcPlus",
    "ElasticFaceCosPlus", "CurricularFace", "MVSoftmax", "SubCenterArcFace", "AdaCos",
    "MEMBERS", "QUANTILES", "modulation_table",
]

#: Quantiles of a per-sample margin shown as its spread (median and ±1 standard deviation
#: of a normal distribution).
QUANTILES = (0.16, 0.5, 0.84)
_Z = tuple(NormalDist().inv_cdf(q) for q in QUANTILES)


# ------------------------------------------------------------------------ pure helpers
def arc_target(cos: Tensor, m, fallback: str = "linear") -> Tensor:
    """cos(θ + m) = cos θ·cos m − sin θ·sin m with a per-sample margin m (a tensor or number).

    ``fallback="linear"``: past θ > π − m, cos θ − max(m·sin m, 1 − cos m), monotone in θ
    (as :func:`lfsearch.margins.additive_angular`); ``"none"``: cos(θ + m) everywhere.
    """
    c = cos.clamp(-1.0, 1.0)
    m = torch.as_tensor(m, dtype=c.dtype, device=c.device)
    cm, sm = torch.cos(m), torch.sin(m)
    value = c * cm - M.sin_from_cos(c) * sm
    if fallback == "none":
        return value
    inside = c >= torch.cos(math.pi - m)
    offset = torch.maximum(m * sm, 1.0 - cm)
    return torch.where(inside, value, c - offset)


def arc_target_and_slope(cos: Tensor, m, fallback: str = "linear") -> tuple[Tensor, Tensor]:
    """(f, df/dcos θ) of :func:`arc_target`, without autograd: f' = cos m − sin m·dsin θ/dcos θ
    (dsin θ/dcos θ = −cos θ/sin θ, 0 where sin θ is clamped); the fallback has slope 1."""
    c = cos.clamp(-1.0, 1.0)
    m = torch.as_tensor(m, dtype=c.dtype, device=c.device)
    cm, sm = torch.cos(m), torch.sin(m)
    sin, dsin = M._sin_and_slope(c)
    value, slope = c * cm - sin * sm, cm - dsin * sm
    if fallback == "none":
        return value, slope
    inside = c >= torch.cos(math.pi - m)
    offset = torch.maximum(m * sm, 1.0 - cm)
    return torch.where(inside, value, c - offset), torch.where(inside, slope, torch.ones_like(c))


def _check_fallback(value: str) -> str:
    allowed = ("linear", "none")
    if value not in allowed:
        raise ValueError(f"fallback must be one of {', '.join(allowed)}; got {value!r}")
    return value


# ------------------------------------------------------------------ fused cross entropy
#: A hard-negative rule: (threshold (N,) in logit units, transform) where transform(z) gives
#: (N(z), dN/dz) on the whole matrix; it applies where z_j > threshold_i, j ≠ y_i.
Negatives = tuple[Tensor, Callable[[Tensor], tuple[Tensor, "Tensor | float"]]]


def _modify(z: Tensor, new_y: Tensor, labels: Tensor, negatives: Negatives | None):
    """z with its hard negatives transformed and its target column set to new_y (in place
    where possible); returns (logits, dN/dz where changed or None)."""
    rows = torch.arange(z.shape[0], device=z.device)
    deriv = None
    if negatives is not None:
        threshold, transform = negatives
        mask = z > threshold.to(z.dtype)[:, None]
        mask[rows, labels] = False
        value, slope = transform(z)
        z = torch.where(mask, value, z)
        deriv = (mask, slope)
    z.index_put_((rows, labels), new_y.to(z.dtype))
    return z, deriv


class _ReplacedTargetCrossEntropy(torch.autograd.Function):
    """Softmax cross entropy of fresh logits z (N, C) whose target column is replaced by
    new_y (N,) and whose hard negatives are optionally transformed (:data:`Negatives`).

    new_y either carries its own autograd graph (``slope_y`` None: ∂L/∂new_y = g_y and the
    old z_y gets no gradient from here), or is a closed-form function of z_y with
    ``slope_y`` = ∂new_y/∂z_y (N,): then ∂L/∂z_y = g_y·slope_y, and if new_y also depends on
    other tensors through its graph (MagFace's ‖x‖, with z_y detached there) it gets g_y.
    g = coef·(softmax − onehot); hard entries get g·dN/dz. Saves the
    log-probabilities (one N×C buffer) and, with negatives, the hard mask and dN/dz.
    Half / bfloat16 logits are handled in float32. Not twice differentiable.
    """

    @staticmethod
    def forward(ctx, z, new_y, labels, reduction, negatives, slope_y=None):
        n = z.shape[0]
        rows = torch.arange(n, device=z.device)
        work = z.float() if z.element_size() < 4 else z
        work, deriv = _modify(work, new_y, labels, negatives)
        logp = torch.log_softmax(work, dim=1)
        nll = -logp[rows, labels]
        if reduction == "mean":
            loss = nll.mean()
        elif reduction == "sum":
            loss = nll.sum()
        else:
            loss = nll
        mask, slope = deriv if deriv is not None else (None, None)
        tensors = [logp, labels, slope_y if slope_y is not None else logp.new_empty(0)]
        tensors += [mask] if mask is not None else []
        if isinstance(slope, Tensor):
            tensors.append(slope)
            ctx.slope = None
        else:
            ctx.slope = slope
        ctx.save_for_backward(*tensors)
        ctx.has_mask = mask is not None
        ctx.closed_form = slope_y is not None
        ctx.reduction = reduction
        ctx.z_dtype, ctx.y_dtype = z.dtype, new_y.dtype
        return loss.to(z.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        saved = ctx.saved_tensors
        logp, labels, slope_y = saved[0], saved[1], saved[2]
        n = logp.shape[0]
        rows = torch.arange(n, device=logp.device)
        coef = g.to(logp.dtype)
        if ctx.reduction != "none":
            coef = coef.expand(n)
            if ctx.reduction == "mean":
                coef = coef / n
        grad = logp.exp()
        grad.mul_(coef[:, None])
        grad.index_put_((rows, labels), -coef, accumulate=True)  # coef·(p_j − [j = y])
        grad_y = grad[rows, labels]
        if ctx.closed_form:  # new_y = F(z_y, …): ∂/∂z_y here, the rest through new_y's graph
            grad.index_put_((rows, labels), grad_y * slope_y.to(grad.dtype))
            grad_new = grad_y.to(ctx.y_dtype) if ctx.needs_input_grad[1] else None
        else:
            grad.index_put_((rows, labels), torch.zeros_like(grad_y))
            grad_new = grad_y.to(ctx.y_dtype)
        if ctx.has_mask:
            mask = saved[3]
            slope = saved[4] if ctx.slope is None else ctx.slope
            grad = torch.where(mask, grad * slope, grad)
        return grad.to(ctx.z_dtype), grad_new, None, None, None, None


def _reduce(values: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    return values


class _Draws:
    """Seeded normal draws for random margins: draw k of a run uses the generator seeded by
    (seed, k), so the sequence resumes exactly from (seed, step)."""

    def __init__(self, seed: int | None, generator: torch.Generator | None) -> None:
        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        self.seed = M.check_integer("seed", seed, 0)
        self.step = 0

    def normal(self, n: int, like: Tensor) -> Tensor:
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.step) % (2**63))
        self.step += 1
        return torch.randn(n, generator=g, dtype=torch.float64).to(like.device, like.dtype)

    def state(self) -> dict:
        return {"seed": self.seed, "step": self.step}

    def load(self, state: dict) -> None:
        self.seed = int(state.get("seed", self.seed))
        self.step = int(state.get("step", 0))


# --------------------------------------------------------------------------- the base
class _RecentHead(_NormalizedHead):
    """A normalised head whose target logit is s·f_i(θ_y), f_i per sample (and, for the
    negatives members, whose hard negatives change).

    Subclasses give ``_target_and_slope(cos_y, x, update) -> (f, ∂f/∂cos θ)`` in closed
    form on the detached target cosines (taken from the logit matrix: no O(N·D) work);
    f may still carry autograd through x itself (MagFace's margin m(‖x‖)); optionally
    ``_negatives(cos_y, update)``. ``update`` is True in training mode with autograd on,
    when running statistics may move.
    """

    #: What the member changes: "target", "negatives", "class weights" or "scale".
    changes = "target"
    #: What makes the margin differ between the samples of a batch ("" if nothing).
    varies = ""

    def _target_values(self, cos_y: Tensor, x: Tensor, labels: Tensor, update: bool) -> Tensor:
        return self._target_and_slope(cos_y, x, update)[0]

    def _target_and_slope(self, cos_y: Tensor, x: Tensor, update: bool):
        return self._fixed_target_and_slope(cos_y)

    def _fixed_target_and_slope(self, cos: Tensor):  # pragma: no cover - overridden
        return cos, torch.ones_like(cos)

    def _fixed_target(self, cos: Tensor) -> Tensor:
        return self._fixed_target_and_slope(cos)[0]

    def _negatives(self, cos_y: Tensor, update: bool) -> Negatives | None:
        return None

    def _extra_loss(self, x: Tensor) -> Tensor | None:
        """A per-sample term added to the cross entropy (MagFace's λ_g·g(a)), or None."""
        return None

    def _updating(self) -> bool:
        return self.training and torch.is_grad_enabled()

    def _plain_cos_y(self, z: Tensor, labels: Tensor) -> Tensor:
        rows = torch.arange(z.shape[0], device=z.device)
        z_y = z[rows, labels]
        return ((z_y.float() if z_y.element_size() < 4 else z_y) / self.s).clamp(-1.0, 1.0)

    def _cross_entropy(self, x: Tensor, labels: Tensor, reduction: str) -> Tensor:
        update = self._updating()
        z = self._scores(x)
        cos_y = self._plain_cos_y(z.detach(), labels)
        f, slope = self._target_and_slope(cos_y, x, update)
        new_y = self.s * f
        negatives = self._negatives(cos_y, update)
        extra = self._extra_loss(x)
        if extra is None:
            return _ReplacedTargetCrossEntropy.apply(z, new_y, labels, reduction, negatives,
                                                     slope)
        ce = _ReplacedTargetCrossEntropy.apply(z, new_y, labels, "none", negatives, slope)
        return _reduce(ce + extra.to(ce.dtype), reduction)

    def margin_logits(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """The N×C logits the cross entropy sees (target replaced, hard negatives changed),
        with the running statistics as they are (no update, mean margin for random ones);
        plain autograd throughout (for inspection and tests)."""
        self._check(embeddings, labels)
        z = self._scores(embeddings)
        rows = torch.arange(z.shape[0], device=z.device)
        cos_y = (z[rows, labels] / self.s).clamp(-1.0, 1.0)
        new_y = self.s * self._target_values(cos_y, embeddings, labels, False)
        out, _ = _modify(z.clone(), new_y, labels, self._negatives(cos_y.detach(), False))
        return out

    def target(self, cos: Tensor) -> Tensor:
        """f(θ) at the median of the per-sample margin (for plots and tables)."""
        return self.target_quantiles(cos)[1]

    def target_quantiles(self, cos: Tensor) -> Tensor:
        """f(θ) at the 16th, 50th and 84th percentile of the per-sample margin (3, *cos)."""
        f = self._fixed_target(cos)
        return torch.stack([f, f, f])

    # relations between parameters, checked on a merged copy so a bad set changes nothing
    def _check_relations(self, values: dict[str, float]) -> None:
        pass

    def set_params(self, **values) -> None:
        old = dict(self._values)
        super().set_params(**values)
        try:
            self._check_relations(self._values)
        except ValueError:
            self._values = old
            self._apply_params()
            raise


# ------------------------------------------------------------------------------ AdaFace
class AdaFace(_RecentHead):
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
            return M.check_angle("m", value)
        if name == "t_alpha":
            return M.check_nonnegative("t_alpha", value, 1.0)
        if name in ("h", "sigma"):
            return M.check_nonnegative(name, value)
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
                q = torch.tensor(QUANTILES, dtype=zhat.dtype, device=zhat.device)
                self.zhat_quantiles.copy_(torch.quantile(zhat, q))
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
        θ = atan2(sin θ, cos θ) with sin θ clamped as in :mod:`lfsearch.margins`."""
        c = cos.clamp(-1.0, 1.0)
        zhat = torch.as_tensor(zhat, dtype=c.dtype, device=c.device)
        m = torch.as_tensor(m, dtype=c.dtype, device=c.device)
        sin, dsin = M._sin_and_slope(c)
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
class MagFace(_RecentHead):
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
            return M.check_positive(name, value)
        if name in ("l_m", "u_m"):
            return M.check_angle(name, value)
        if name == "lambda_g":
            return M.check_nonnegative(name, value)
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
                q = torch.tensor(QUANTILES, dtype=a.dtype, device=a.device)
                self.a_quantiles.copy_(torch.quantile(a.detach(), q))
        return arc_target_and_slope(cos_y, self.margin(a), self.fallback)

    def _extra_loss(self, x):
        lam = self._values["lambda_g"]
        return None if lam == 0.0 else lam * self.regulariser(self.magnitude(x))

    def target_quantiles(self, cos):
        a = self.a_quantiles.to(cos.dtype)
        return torch.stack([arc_target(cos, self.margin(a[i]), self.fallback)
                            for i in range(3)])


# --------------------------------------------------------------------------- ElasticFace
class _Elastic(_RecentHead):
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
            return M.check_angle("m", value) if self._angular else M.check_nonnegative(
                "m", value, 2.0)
        if name == "sigma":
            return M.check_nonnegative("sigma", value)
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


# ------------------------------------------------------------------ hard-negative members
class CurricularFace(_RecentHead):
    """CurricularFace (Huang et al., "CurricularFace: Adaptive Curriculum Learning Loss for
    Deep Face Recognition", CVPR 2020): ArcFace's target T(cos θ_y) = cos(θ_y + m) and hard
    negatives re-weighted by an adaptive t:

        N(t, cos θ_j) = cos θ_j                 if T(cos θ_y) ≥ cos θ_j
                        cos θ_j·(t + cos θ_j)   otherwise (a hard negative)
        t ← momentum·t + (1 − momentum)·mean_i cos θ_{y_i}      (t⁽⁰⁾ = 0, per step)

    t rises from 0 as training goes: early, hard negatives are damped (easy samples first);
    later they are emphasised. The hardness test uses cos(θ_y + m) itself; the target past
    θ_y > π − m is cos θ_y − m·sin m, as the authors' code. t is updated before use, in
    training only, and lives in ``state_dict()``. Paper: m = 0.5, s = 64, momentum 0.99
    (the authors' code: t = 0.01·r + 0.99·t).
    """

    name = "curricularface"
    formula = ("target s cos(theta_y + m); hard negatives (cos theta_j > cos(theta_y + m)) "
               "s cos theta_j (t + cos theta_j), t EMA of mean cos theta_y")
    changes = "negatives"

    def __init__(self, embedding_size=None, num_classes=None, *, m: float = 0.5,
                 s: float = 64.0, momentum: float = 0.99, reduction: str = "mean",
                 generator=None) -> None:
        super().__init__(embedding_size, num_classes, s=s, reduction=reduction,
                         generator=generator)
        self._values["m"] = self._validate("m", m)
        self._values["momentum"] = self._validate("momentum", momentum)
        self.register_buffer("t", torch.zeros(()))

    def _validate(self, name, value):
        if name == "m":
            return M.check_angle("m", value)
        if name == "momentum":
            return M.check_nonnegative("momentum", value, 1.0)
        return super()._validate(name, value)

    def _fixed_target_and_slope(self, cos):
        return arc_target_and_slope(cos, self._values["m"], "linear")

    def negative_transform(self, cos: Tensor, t=None) -> Tensor:
        """N(t, cos θ_j) = cos θ_j·(t + cos θ_j) for a hard negative (t: the current one)."""
        t = self.t.to(cos.dtype) if t is None else t
        return cos * (t + cos)

    def _negatives(self, cos_y, update):
        if update:
            mom = self._values["momentum"]
            with torch.no_grad():
                self.t.copy_(mom * self.t + (1.0 - mom) * cos_y.mean().to(self.t.dtype))
        s, t = self.s, self.t.clone()
        threshold = s * arc_target(cos_y, self._values["m"], "none")

        def transform(z):
            tz = t.to(z.dtype)
            return z * (tz + z / s), tz + (2.0 / s) * z
        return threshold, transform


class MVSoftmax(_RecentHead):
    """MV-Softmax (Wang, Zhang, Wang, Mei, "Mis-classified Vector Guided Softmax Loss for
    Face Recognition", AAAI 2020): a margin target f(θ_y) and mis-classified (hard)
    negatives, cos θ_j > f(θ_y), given a larger logit:

        h(t, θ_j, I_j) = exp(s·t·(cos θ_j + 1)·I_j)   (adaptive: cos θ_j → (1 + t)·cos θ_j + t)
                         exp(s·t·I_j)                  (fixed:    cos θ_j → cos θ_j + t)

    ``margin_type`` "am" (MV-AM-Softmax): f = cos θ_y − m; "arc" (MV-Arc-Softmax):
    f = cos(θ_y + m) (hardness tested against cos(θ_y + m) itself; the target past π − m as
    ArcFace's "linear" fallback). With FaceX-Zoo's ``mv_weight`` w = 1 + t the adaptive rule
    reads w·cos θ_j + w − 1. Paper: t = 0.2, s = 32, m = 0.35 (AM; use m = 0.5 for "arc").
    """

    name = "mv_softmax"
    formula = ("target s (cos theta_y - m) [am] or s cos(theta_y + m) [arc]; hard negatives "
               "(cos theta_j > target) s ((1+t) cos theta_j + t) [adaptive] or s (cos theta_j + t)")
    changes = "negatives"
    MARGIN_TYPES = ("am", "arc")
    HARD = ("adaptive", "fixed")

    def __init__(self, embedding_size=None, num_classes=None, *, m: float = 0.35,
                 t: float = 0.2, s: float = 32.0, margin_type: str = "am",
                 hard: str = "adaptive", reduction: str = "mean", generator=None) -> None:
        super().__init__(embedding_size, num_classes, s=s, reduction=reduction,
                         generator=generator)
        if margin_type not in self.MARGIN_TYPES:
            raise ValueError(f"margin_type must be one of {', '.join(self.MARGIN_TYPES)}; "
                             f"got {margin_type!r}")
        if hard not in self.HARD:
            raise ValueError(f"hard must be one of {', '.join(self.HARD)}; got {hard!r}")
        self.margin_type, self.hard = margin_type, hard
        self._values["m"] = self._validate("m", m)
        self._values["t"] = self._validate("t", t)

    def _validate(self, name, value):
        if name == "m":
            if getattr(self, "margin_type", "am") == "arc":
                return M.check_angle("m", value)
            return M.check_nonnegative("m", value, 2.0)
        if name == "t":
            return M.check_nonnegative("t", value)
        return super()._validate(name, value)

    def _raw_target(self, cos):
        m = self._values["m"]
        return cos - m if self.margin_type == "am" else arc_target(cos, m, "none")

    def _fixed_target_and_slope(self, cos):
        m = self._values["m"]
        if self.margin_type == "am":
            return cos - m, torch.ones_like(cos)
        return arc_target_and_slope(cos, m, "linear")

    def negative_transform(self, cos: Tensor) -> Tensor:
        """The new cos θ_j of a hard negative."""
        t = self._values["t"]
        return (1.0 + t) * cos + t if self.hard == "adaptive" else cos + t

    def _negatives(self, cos_y, update):
        s, t = self.s, self._values["t"]
        threshold = s * self._raw_target(cos_y)
        if self.hard == "adaptive":
            return threshold, lambda z: ((1.0 + t) * z + s * t, 1.0 + t)
        return threshold, lambda z: (z + s * t, 1.0)


# --------------------------------------------------------------------- Sub-center ArcFace
class SubCenterArcFace(_RecentHead):
    """Sub-center ArcFace (Deng, Guo, Liu, Gong, Zafeiriou, "Sub-center ArcFace: Boosting
    Face Recognition by Large-scale Noisy Web Faces", ECCV 2020): K sub-centres per class,
    the class cosine is the largest over them, then ArcFace:

        cos θ_j = max_k <x/‖x‖, W_{j,k}/‖W_{j,k}‖>,     target s·cos(θ_y + m)

    ``.weight`` is (C·K, D) in class-major order (row j·K + k is sub-centre k of class j),
    i.e. pytorch-metric-learning's SubCenterArcFaceLoss ``W.t()``; ``.logits(x)`` is (N, C).
    Past θ + m > π: ``fallback`` as ArcFace (default "linear", as pml). The paper's later
    step (dropping non-dominant sub-centres and outliers) is not part of the loss. Paper:
    K = 3, m = 0.5, s = 64.
    """

    name = "subcenter_arcface"
    formula = "cos theta_j = max_k cos theta_(j,k) over K sub-centres; target s cos(theta_y + m)"
    changes = "class weights"

    def __init__(self, embedding_size=None, num_classes=None, *, s: float = 64.0,
                 m: float = 0.5, K: int = 3, fallback: str = "linear",
                 reduction: str = "mean", generator=None) -> None:
        super().__init__(embedding_size, num_classes, s=s, reduction=reduction,
                         generator=generator)
        self.K = M.check_integer("K", K, 1)
        self._values["m"] = self._validate("m", m)
        self.fallback = _check_fallback(fallback)
        weight = torch.empty(self.num_classes * self.K, self.embedding_size)
        bound = 1.0 / math.sqrt(self.embedding_size)
        with torch.no_grad():
            weight.uniform_(-bound, bound, generator=generator)
        self.weight = nn.Parameter(weight)

    def _validate(self, name, value):
        if name == "m":
            return M.check_angle("m", value)
        return super()._validate(name, value)

    def _scores(self, x):
        z = _normalized_scores(x, self.weight, self.s)
        return z.view(z.shape[0], self.num_classes, self.K).max(dim=2).values

    def _fixed_target_and_slope(self, cos):
        return arc_target_and_slope(cos, self._values["m"], self.fallback)

    def get_extra_state(self) -> dict:
        return {"values": dict(self._values), "num_classes": self.num_classes, "K": self.K}


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
        theta_med = torch.median(torch.arccos(cos_y))
        new = log_b / torch.cos(theta_med.clamp(max=math.pi / 4))
        ok = torch.isfinite(new) & (new > 0)
        return torch.where(ok, new, self.scale)

    def get_extra_state(self) -> dict:
        return {"values": {}}


MEMBERS = (AdaFace, MagFace, ElasticFaceArc, ElasticFaceCos, ElasticFaceArcPlus,
           ElasticFaceCosPlus, CurricularFace, MVSoftmax, SubCenterArcFace, AdaCos)


# ---------------------------------------------------------------------- the unified view
def modulation_table(cos_y: float = 0.5, num_classes: int = 10) -> str:
    """What each recent member changes, at its defaults: for the target-only members the
    effective log A = s·(cos θ_y − f_i(θ_y)) at cos θ_y = ``cos_y`` with its spread over a
    batch (16th / 50th / 84th percentile of the per-sample margin); for the others, the
    change they make instead."""
    from lfsearch.losses import build

    c = torch.tensor([cos_y], dtype=torch.float64)
    intro = (f"Recent members (docs/losses_recent.md). Effective modulating factor "
             f"log A = s (cos theta_y - f(theta_y)) at cos theta_y = {cos_y:g}, defaults; "
             f"spread = 16th / 50th / 84th percentile of the per-sample margin over a batch. "
             f"Members that change negatives, class weights or the scale: the change.")
    lines = textwrap.wrap(intro, 100) + [""]
    header = f"{'member':<22}{'changes':<15}{'log A p16':>10}{'p50':>8}{'p84':>8}  varies with"
    lines += [header, "-" * len(header)]
    for cls in MEMBERS:
        loss = build(cls.name, 4, num_classes).double()
        if cls.changes == "target":
            f = loss.target_quantiles(c)[:, 0]
            log_a = (loss.s * (c[0] - f)).tolist()
            lo, mid, hi = sorted(log_a)
            lines.append(f"{cls.name:<22}{cls.changes:<15}{lo:>10.2f}{mid:>8.2f}{hi:>8.2f}  "
                         f"{cls.varies}")
        else:
            lines.append(f"{cls.name:<22}{cls.changes:<15}  {_change_text(loss, cos_y)}")
    return "\n".join(lines)


def _change_text(loss, cos_y: float) -> str:
    c = torch.tensor([cos_y], dtype=torch.float64)
    if isinstance(loss, (CurricularFace, MVSoftmax)):
        log_a = float(loss.s * (c - loss.target(c))[0])
        if isinstance(loss, CurricularFace):
            what = "hard negatives cos_j -> cos_j (t + cos_j), t = EMA of cos_y (t0 = 0)"
        else:
            what = ("hard negatives cos_j -> (1+t) cos_j + t" if loss.hard == "adaptive"
                    else "hard negatives cos_j -> cos_j + t")
        return f"target log A {log_a:.2f} (fixed); {what}"
    if isinstance(loss, SubCenterArcFace):
        log_a = float(loss.s * (c - loss.target(c))[0])
        return (f"target log A {log_a:.2f} (ArcFace); class cosine = max over K = {loss.K} "
                f"sub-centres (weight: C·K rows, class-major)")
    if isinstance(loss, AdaCos):
        return (f"log A = 0 (no margin); scale s auto: sqrt(2) log(C-1) = {loss.s:.2f} at "
                f"C = {loss.num_classes}, then dynamic")
    return ""  # pragma: no cover
