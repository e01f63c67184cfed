"""The margin losses published after ArcFace, as members of the unified family.

What each member changes (docs/loss_members.md has the whole picture):

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
from statistics import NormalDist
from typing import Callable

import torch
from torch import Tensor

from lfsearch.losses import margins as margins_mod
from lfsearch.losses.base import _NormalizedHead

log = logging.getLogger(__name__)


#: Quantiles of a per-sample margin shown as its spread (median and ±1 standard deviation
#: of a normal distribution).
QUANTILES = (0.16, 0.5, 0.84)
_Z = tuple(NormalDist().inv_cdf(q) for q in QUANTILES)


# ------------------------------------------------------------------------ pure helpers
def arc_target(cos: Tensor, m, fallback: str = "linear") -> Tensor:
    """cos(θ + m) = cos θ·cos m − sin θ·sin m with a per-sample margin m (a tensor or number).

    ``fallback="linear"``: past θ > π − m, cos θ − max(m·sin m, 1 − cos m), monotone in θ
    (as :func:`lfsearch.losses.margins.additive_angular`); ``"none"``: cos(θ + m) everywhere.
    """
    c = cos.clamp(-1.0, 1.0)
    m, cm, sm, limit, offset = _margin_terms(m, c)
    value = c * cm - margins_mod.sin_from_cos(c) * sm
    if fallback == "none":
        return value
    return torch.where(c >= limit, value, c - offset)


def _margin_terms(m, c: Tensor):
    """(m, cos m, sin m, cos(π − m), max(m·sin m, 1 − cos m)): tensors for a tensor m, Python
    numbers for a number (no host-to-device copy per call)."""
    if isinstance(m, Tensor):
        m = m.to(c.dtype)
        cm, sm = torch.cos(m), torch.sin(m)
        return m, cm, sm, torch.cos(math.pi - m), torch.maximum(m * sm, 1.0 - cm)
    m = float(m)
    cm, sm = math.cos(m), math.sin(m)
    return m, cm, sm, math.cos(math.pi - m), max(m * sm, 1.0 - cm)


def arc_target_and_slope(cos: Tensor, m, fallback: str = "linear") -> tuple[Tensor, Tensor]:
    """(f, df/dcos θ) of :func:`arc_target`, without autograd: f' = cos m − sin m·dsin θ/dcos θ
    (dsin θ/dcos θ = −cos θ/sin θ, 0 where sin θ is clamped); the fallback has slope 1."""
    c = cos.clamp(-1.0, 1.0)
    m, cm, sm, limit, offset = _margin_terms(m, c)
    sin, dsin = margins_mod._sin_and_slope(c)
    value, slope = c * cm - sin * sm, cm - dsin * sm
    if fallback == "none":
        return value, slope
    inside = c >= limit
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
        self.seed = margins_mod.check_integer("seed", seed, 0)
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
class _ReplacedTargetHead(_NormalizedHead):
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
