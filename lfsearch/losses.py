"""Losses of the unified margin family as ``nn.Module``s, plus joint-supervision terms.

Every loss is called as ``loss(embeddings (N, D) float, labels (N,) long) -> scalar``
(``reduction="none"`` on a head loss gives the (N,) per-sample values instead).

Head losses (the softmax family) own a class head ``.weight`` of shape
(num_classes, embedding_size) and expose ``.logits(embeddings)``: the plain class scores
with no margin (``s·cos θ_j`` for normalised heads, ``W x + b`` for softmax), and
``.margin_logits(embeddings, labels)``: the N×C logits the cross entropy sees.
They compute the N×C logit matrix once (the scale s folded into the normalised embedding)
and change only its target column, in place, inside one fused cross entropy
(:class:`_MarginCrossEntropy`) that keeps one N×C buffer for backward and builds one
gradient — fewer N×C tensors than ``F.cross_entropy`` on the plain logits; no one-hot
N×C mask is ever built. The margin's derivative df/dcos θ comes in closed form from
:mod:`lfsearch.margins` (``*_and_slope``). Not twice differentiable.

Parameters a search changes during training (s, m, a, the AM-LFS coefficients, …) are
read with ``get_params() -> dict[str, float]`` and changed between steps with
``set_params(**values)`` (validated, no rebuild). They are kept exactly as given and
travel with ``state_dict()`` (as the module's extra state).

Joint supervision: ``build("cosface", D, C, aux="center", aux_weight=0.01,
aux_params={...})`` returns a :class:`Joint` loss  L = L_main + aux_weight·L_aux whose
``.weight``/``.logits`` are the main head's; its searchable parameters are the main
loss's, ``aux_weight`` and the aux term's prefixed with its name (``triplet_margin``).

Angles are in radians (see :mod:`lfsearch.margins`). Bad input raises ``ValueError``
naming the field and its allowed values.
"""

from __future__ import annotations

import abc

import inspect
import math
import textwrap
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from lfsearch import margins as M

__all__ = [
    "Loss", "build", "available", "describe", "describe_table", "AUX_NAMES", "Joint",
    "Softmax", "WeightedSoftmax", "LSoftmax", "SphereFace", "L2Softmax", "NormFace",
    "CosFace", "ArcFace", "CombinedMargin", "Modulated", "AMLFS",
    "CenterLoss", "RangeLoss", "ContrastiveLoss", "TripletLoss",
]

REDUCTIONS = ("mean", "sum", "none")
_NORM_EPS = 1e-12


# ----------------------------------------------------------------------------- checks
def _check_size(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    return value


def _check_reduction(value: str) -> str:
    if value not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}; got {value!r}")
    return value


def _check_finite(name: str, value) -> float:
    return M._number(name, value, "(-inf, inf)")


def _check_embeddings(x, embedding_size: int | None) -> None:
    d = embedding_size if embedding_size is not None else "D"
    if not isinstance(x, Tensor) or x.dim() != 2 or not x.is_floating_point():
        got = (f"{x.dtype} tensor of shape {tuple(x.shape)}" if isinstance(x, Tensor)
               else type(x).__name__)
        raise ValueError(f"embeddings must be a floating-point tensor of shape (N, {d}); "
                         f"got {got}")
    if embedding_size is not None and x.shape[1] != embedding_size:
        raise ValueError(f"embeddings must have shape (N, {embedding_size}) "
                         f"(embedding_size={embedding_size}); got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError("embeddings must hold at least one row (N >= 1); got N = 0")


def _check_labels(labels, n: int) -> None:
    if (not isinstance(labels, Tensor) or labels.dim() != 1 or labels.is_floating_point()
            or labels.is_complex() or labels.dtype == torch.bool):
        got = (f"{labels.dtype} tensor of shape {tuple(labels.shape)}"
               if isinstance(labels, Tensor) else type(labels).__name__)
        raise ValueError(f"labels must be an integer (long) tensor of shape ({n},); got {got}")
    if labels.shape[0] != n:
        raise ValueError(f"labels must have shape ({n},) to match the embeddings; "
                         f"got {tuple(labels.shape)}")


def _check_values(x: Tensor, labels: Tensor, num_classes: int | None) -> None:
    """One host sync: embeddings finite and labels in [0, C−1]; diagnose only on failure."""
    bad = ~torch.isfinite(x.sum())
    if num_classes is not None:
        lo, hi = torch.aminmax(labels)
        bad = bad | (lo < 0) | (hi >= num_classes)
    else:
        lo, hi = None, None
        bad = bad | (labels.min() < 0)
    if not bool(bad):
        return
    if not bool(torch.isfinite(x).all()):
        raise ValueError("embeddings contain NaN or infinite values (allowed: finite values)")
    lo, hi = int(labels.min()), int(labels.max())
    if num_classes is not None and (lo < 0 or hi >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes - 1}] "
                         f"(num_classes={num_classes}); got min {lo}, max {hi}")
    if lo < 0:
        raise ValueError(f"labels must be >= 0; got min {lo}")


# ------------------------------------------------------------------------------- base
class Loss(nn.Module):
    """Base of every loss: input checks and the searchable-parameter protocol.

    Subclasses list their searchable parameter names in ``param_names()`` and validate a
    value in ``_validate(name, value)``; values live in ``self._values`` (exact floats,
    saved as extra state) and ``_apply_params()`` refreshes derived tensors.
    """

    name = ""
    formula = ""
    family = "softmax"  # "softmax": a head loss; "aux": a joint-supervision term

    def __init__(self) -> None:
        super().__init__()
        self._values: dict[str, float] = {}
        #: Check inputs (shape, finiteness, label range) on every call (one host sync).
        self.validate = True

    # -- parameters
    def param_names(self) -> list[str]:
        return list(self._values)

    def get_params(self) -> dict[str, float]:
        """Current searchable parameters as {name: float}."""
        return dict(self._values)

    def set_params(self, **values) -> None:
        """Change searchable parameters between steps (validated; no rebuild)."""
        allowed = self.param_names()
        for key in values:
            if key not in allowed:
                raise ValueError(f"unknown parameter {key!r} for loss {self.name!r}; "
                                 f"allowed: {', '.join(allowed) if allowed else '(none)'}")
        checked = {key: self._validate(key, value) for key, value in values.items()}
        self._values.update(checked)
        self._apply_params()

    def plan_training(self, total_steps: int) -> None:
        """Told by a run before training how many optimiser steps T it will take (members
        with a schedule over training progress, e.g. SphereFace's λ, use it)."""

    def _validate(self, name: str, value) -> float:  # pragma: no cover - overridden
        return _check_finite(name, value)

    def _apply_params(self) -> None:
        """Refresh attributes/buffers derived from ``self._values``."""

    def _apply(self, fn, *args, **kwargs):
        # .to()/.double()/.cuda() convert buffers; rewrite derived ones from the exact values
        out = super()._apply(fn, *args, **kwargs)
        self._apply_params()
        return out

    def get_extra_state(self) -> dict:
        return {"values": dict(self._values)}

    def set_extra_state(self, state: dict) -> None:
        self._values.update(state.get("values", {}))
        self._apply_params()

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v:g}" for k, v in self._values.items())


# ------------------------------------------------------------------------------ heads
class _Head(Loss, metaclass=abc.ABCMeta):
    """A class head W (C, D) (+ optional bias) trained with a softmax cross entropy."""

    def __init__(self, embedding_size: int | None, num_classes: int | None, *,
                 bias: bool = False, reduction: str = "mean",
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.embedding_size = _check_size("embedding_size", embedding_size)
        self.num_classes = _check_size("num_classes", num_classes)
        self.reduction = _check_reduction(reduction)
        self.weight = nn.Parameter(torch.empty(self.num_classes, self.embedding_size))
        bound = 1.0 / math.sqrt(self.embedding_size)
        with torch.no_grad():
            self.weight.uniform_(-bound, bound, generator=generator)
        if bias:
            self.bias = nn.Parameter(torch.zeros(self.num_classes))
        else:
            self.register_parameter("bias", None)

    def _check(self, embeddings: Tensor, labels: Tensor | None) -> None:
        if not self.validate:
            return
        _check_embeddings(embeddings, self.embedding_size)
        if labels is None:
            return
        _check_labels(labels, embeddings.shape[0])
        _check_values(embeddings, labels, self.num_classes)

    @abc.abstractmethod
    def _scores(self, x: Tensor) -> Tensor:
        """The plain N×C class scores (a fresh tensor, safe to modify in place)."""

    def logits(self, embeddings: Tensor) -> Tensor:
        """Plain class scores with no margin, (N, C) — for closed-set accuracy."""
        if self.validate:
            _check_embeddings(embeddings, self.embedding_size)
        return self._scores(embeddings)

    def margin_logits(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """The N×C logits the cross entropy sees (the target column changed); for
        inspection and plots — training uses a fused path that never builds them."""
        self._check(embeddings, labels)
        z = self._scores(embeddings)
        spec = self._target(embeddings, labels, z)
        if spec is None:
            return z
        fn, shift, scale = spec
        rows = torch.arange(z.shape[0], device=z.device)
        z_y = z[rows, labels]
        new = z_y + shift if fn is None else scale * self.target(z_y / scale)
        z.index_put_((rows, labels), (new - z_y).to(z.dtype), accumulate=True)
        return z

    def _target(self, x: Tensor, labels: Tensor, z: Tensor):
        """How the target logit z_y changes: None (it does not), or (fn, shift, scale):
        z_y ← scale·f(z_y / scale) with ``fn(cos) -> (f, df/dcos)`` (elementwise), or
        z_y ← z_y + shift when fn is None (shift a number or an (N,) tensor, no gradient).
        """
        return None

    def _class_weight(self, labels: Tensor) -> Tensor | None:
        return None

    def _cross_entropy(self, x: Tensor, labels: Tensor, reduction: str) -> Tensor:
        z = self._scores(x)
        spec = self._target(x, labels, z)
        fn, shift, scale = (None, None, None) if spec is None else spec
        return _MarginCrossEntropy.apply(z, scale, shift, labels, fn,
                                         self._class_weight(labels), reduction)

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        self._check(embeddings, labels)
        return self._cross_entropy(embeddings, labels, self.reduction)


class _MarginCrossEntropy(torch.autograd.Function):
    """Softmax cross entropy of fresh logits z (N, C) whose target column is replaced,
    in place, by new_y = scale·f(z_y / scale) (``fn(cos) -> (f, df/dcos)``) or z_y + shift.

    Memory: z changes in its target column only; one N×C buffer (the log-probabilities)
    is saved and one (the gradient) is built in backward — fewer than
    ``F.cross_entropy`` needs. With c = z_y/scale, ∂new/∂z_y = f'(c) and
    ∂new/∂scale = f(c) − c·f'(c) are (N,) vectors. Half / bfloat16 logits: margin and
    log-softmax in float32. Not twice differentiable.
    """

    @staticmethod
    def forward(ctx, z, scale, shift, labels, fn, weight, reduction):
        n = z.shape[0]
        rows = torch.arange(n, device=z.device)
        d_zy = d_sc = None
        if fn is not None or shift is not None:
            z_y = z[rows, labels]
            if fn is None:
                new = z_y + shift
            else:
                if z_y.element_size() < 4:
                    z_y = z_y.float()
                sc = scale.to(z_y.dtype) if isinstance(scale, Tensor) else scale
                c = z_y / sc
                f, slope = fn(c)
                new = sc * f
                d_zy = slope
                if isinstance(scale, Tensor) and ctx.needs_input_grad[1]:
                    d_sc = f - c * slope
            z.index_put_((rows, labels), new.to(z.dtype))
        logp = torch.log_softmax(z, dim=1, dtype=torch.float32 if z.element_size() < 4 else None)
        nll = -logp[rows, labels]
        w_y = None
        if weight is not None:
            w_y = weight.to(device=nll.device, dtype=nll.dtype)[labels]
            nll = nll * w_y
        if reduction == "mean":
            denom = w_y.sum() if w_y is not None else nll.new_tensor(float(n))
            loss = nll.sum() / denom
        else:
            denom = None
            loss = nll.sum() if reduction == "sum" else nll
        ctx.save_for_backward(logp, labels, d_zy, d_sc, w_y, denom)
        ctx.reduction = reduction
        ctx.z_dtype = z.dtype
        ctx.scale_dtype = scale.dtype if isinstance(scale, Tensor) else None
        return loss.to(z.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        logp, labels, d_zy, d_sc, w_y, denom = ctx.saved_tensors
        n = logp.shape[0]
        rows = torch.arange(n, device=logp.device)
        coef = g.to(logp.dtype)
        if ctx.reduction != "none":
            coef = coef.expand(n)
            if ctx.reduction == "mean":
                coef = coef / denom
        if w_y is not None:
            coef = coef * w_y
        grad = logp.exp()
        grad.mul_(coef[:, None])
        grad.index_put_((rows, labels), -coef, accumulate=True)  # coef·(p_j − [j = y])
        grad_scale = None
        if d_zy is not None:
            g_y = grad[rows, labels]
            if d_sc is not None:
                grad_scale = (g_y * d_sc).to(ctx.scale_dtype)
            grad.index_put_((rows, labels), (g_y * d_zy).to(grad.dtype))
        return grad.to(ctx.z_dtype), grad_scale, None, None, None, None, None


def _normalized_scores(x: Tensor, weight: Tensor, s: float) -> Tensor:
    """s·cos θ_j = <s·x/‖x‖, W_j/‖W_j‖> with s folded into the (N, D) embedding."""
    xs = x * (s / torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min(_NORM_EPS))
    return F.linear(xs, F.normalize(weight, dim=1, eps=_NORM_EPS))


class _MarginHead(_Head):
    """A head whose target logit is replaced: z_y ← scale_y·f(z_y / scale_y)."""

    @abc.abstractmethod
    def _target_scale(self, x: Tensor, labels: Tensor):
        """The factor scale_y with z_y = scale_y·cos θ_y (a number or an (N,) tensor)."""

    def target(self, cos: Tensor) -> Tensor:
        """The target function f(θ) of this member, on cos θ."""
        return cos

    def target_and_slope(self, cos: Tensor) -> tuple[Tensor, Tensor]:
        """(f(θ), df/dcos θ) on cos θ, without autograd (the fused cross entropy's input)."""
        return cos, torch.ones_like(cos)

    def _target(self, x, labels, z):
        return self.target_and_slope, None, self._target_scale(x, labels)


class _NormalizedHead(_MarginHead):
    """‖W_j‖ = ‖x‖ = 1, logits s·cos θ_j, target s·f(θ_y)."""

    def __init__(self, embedding_size=None, num_classes=None, *, s: float = 64.0,
                 reduction: str = "mean", generator=None) -> None:
        super().__init__(embedding_size, num_classes, reduction=reduction,
                         generator=generator)
        self._values["s"] = M.check_positive("s", s)

    @property
    def s(self) -> float:
        return self._values["s"]

    def _validate(self, name, value):
        if name == "s":
            return M.check_positive("s", value)
        return _check_finite(name, value)

    def _scores(self, x: Tensor) -> Tensor:
        return _normalized_scores(x, self.weight, self.s)

    def _target_scale(self, x, labels):
        return self.s


class Softmax(_Head):
    """Plain softmax cross entropy on an unnormalised linear head W x + b."""

    name = "softmax"
    formula = "-log softmax(W x + b)_y"

    def __init__(self, embedding_size=None, num_classes=None, *, bias: bool = True,
                 reduction: str = "mean", generator=None) -> None:
        super().__init__(embedding_size, num_classes, bias=bias, reduction=reduction,
                         generator=generator)

    def _scores(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)


class WeightedSoftmax(Softmax):
    """Softmax with a weight per class: L = Σ_i w_{y_i}·CE_i / Σ_i w_{y_i}.

    ``class_weights``: C positive numbers, or ``"balanced"``: w_c = n / (C·n_c) from the
    class counts n_c (``class_counts``, or else the running counts of the labels seen in
    training mode, the current batch included).
    """

    name = "weighted_softmax"
    formula = "-sum_i w_(y_i) log softmax(W x_i + b)_(y_i) / sum_i w_(y_i)"

    def __init__(self, embedding_size=None, num_classes=None, *,
                 class_weights: Sequence[float] | Tensor | str = "balanced",
                 class_counts: Sequence[float] | Tensor | None = None, bias: bool = True,
                 reduction: str = "mean", generator=None) -> None:
        super().__init__(embedding_size, num_classes, bias=bias, reduction=reduction,
                         generator=generator)
        C = self.num_classes
        self.balanced = isinstance(class_weights, str)
        self.register_buffer("class_weight", torch.ones(C))
        self.register_buffer("class_counts", torch.zeros(C))
        if self.balanced:
            if class_weights != "balanced":
                raise ValueError("class_weights must be 'balanced' or a sequence of "
                                 f"{C} positive numbers; got {class_weights!r}")
            if class_counts is not None:
                counts = self._vector("class_counts", class_counts, allow_zero=True)
                self.class_counts.copy_(counts)
                self._rebalance()
                self.balanced = False  # fixed from the given counts
        else:
            self.class_weight.copy_(self._vector("class_weights", class_weights))

    def _vector(self, name, values, allow_zero=False) -> Tensor:
        allowed = (f"{self.num_classes} finite numbers {'>= 0' if allow_zero else '> 0'} "
                   f"(one per class)")
        try:
            t = torch.as_tensor(values, dtype=torch.float32).flatten()
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"{name} must be {allowed}; got {values!r}") from None
        bad = (t < 0) if allow_zero else (t <= 0)
        if t.numel() != self.num_classes or not bool(torch.isfinite(t).all()) or bool(bad.any()):
            shown = t.tolist() if t.numel() <= 8 else f"{t.numel()} values"
            raise ValueError(f"{name} must be {allowed}; got {shown}")
        return t

    def _rebalance(self) -> None:
        counts = self.class_counts
        total = counts.sum()
        w = torch.where(counts > 0, total / (self.num_classes * counts.clamp_min(1)),
                        torch.zeros_like(counts))
        self.class_weight.copy_(w)

    def _class_weight(self, labels: Tensor) -> Tensor:
        if self.balanced and self.training:
            self.class_counts.index_add_(
                0, labels, torch.ones_like(labels, dtype=self.class_counts.dtype))
            self._rebalance()
        return self.class_weight


class L2Softmax(_Head):
    """L2-constrained softmax (Ranjan et al. 2017): features scaled to ‖x‖ = α.

    α fixed, or learned (``learn_alpha=True``; a parameter trained with the network).
    The weights stay unnormalised.
    """

    name = "l2_softmax"
    formula = "-log softmax(W (alpha x/||x||) + b)_y"

    def __init__(self, embedding_size=None, num_classes=None, *, alpha: float = 16.0,
                 learn_alpha: bool = False, bias: bool = False, reduction: str = "mean",
                 generator=None) -> None:
        super().__init__(embedding_size, num_classes, bias=bias, reduction=reduction,
                         generator=generator)
        alpha = M.check_positive("alpha", alpha)
        self.learn_alpha = bool(learn_alpha)
        if self.learn_alpha:
            self.alpha_param = nn.Parameter(torch.tensor(alpha))
        self._values["alpha"] = alpha

    def _validate(self, name, value):
        return M.check_positive(name, value)

    def set_params(self, **values) -> None:
        super().set_params(**values)
        if self.learn_alpha and "alpha" in values:
            with torch.no_grad():
                self.alpha_param.fill_(self._values["alpha"])

    def get_params(self) -> dict[str, float]:
        if self.learn_alpha:
            return {"alpha": float(self.alpha_param.detach())}
        return dict(self._values)

    def get_extra_state(self) -> dict:
        return {"values": self.get_params()}

    def set_extra_state(self, state: dict) -> None:
        self._values.update(state.get("values", {}))  # a learned alpha comes as a parameter

    def _scores(self, x: Tensor) -> Tensor:
        alpha = self.alpha_param if self.learn_alpha else self._values["alpha"]
        norm = torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min(_NORM_EPS)
        return F.linear(x * (alpha / norm), self.weight, self.bias)


class NormFace(_NormalizedHead):
    """NormFace: softmax on s·cos θ (weights and features normalised); f(θ) = cos θ."""

    name = "normface"
    formula = "-log softmax(s cos theta_j)_y"

    def __init__(self, embedding_size=None, num_classes=None, *, s: float = 16.0,
                 reduction: str = "mean", generator=None) -> None:
        super().__init__(embedding_size, num_classes, s=s, reduction=reduction,
                         generator=generator)

    def _target(self, x, labels, z):
        return None


class CosFace(_NormalizedHead):
    """CosFace / AM-Softmax: target s·(cos θ_y − m); m a cosine offset in [0, 2]."""

    name = "cosface"
    formula = "target s (cos theta_y - m)"

    def __init__(self, embedding_size=None, num_classes=None, *, s: float = 64.0,
                 m: float = 0.35, reduction: str = "mean", generator=None) -> None:
        super().__init__(embedding_size, num_classes, s=s, reduction=reduction,
                         generator=generator)
        self._values["m"] = M.check_nonnegative("m", m, 2.0)

    def _validate(self, name, value):
        if name == "m":
            return M.check_nonnegative("m", value, 2.0)
        return super()._validate(name, value)

    def target(self, cos):
        return M.additive_cosine(cos, self._values["m"])

    def _target(self, x, labels, z):
        return None, -self.s * self._values["m"], None


class ArcFace(_NormalizedHead):
    """ArcFace: target s·cos(θ_y + m), m in radians; past θ > π − m the ``fallback``
    of :func:`lfsearch.margins.additive_angular` (default "linear": cos θ − m·sin m)."""

    name = "arcface"
    formula = "target s cos(theta_y + m); past pi - m: s (cos theta_y - m sin m)"

    def __init__(self, embedding_size=None, num_classes=None, *, s: float = 64.0,
                 m: float = 0.5, fallback: str = "linear", reduction: str = "mean",
                 generator=None) -> None:
        super().__init__(embedding_size, num_classes, s=s, reduction=reduction,
                         generator=generator)
        self._values["m"] = M.check_angle("m", m)
        self.fallback = M.check_fallback(fallback)

    def _validate(self, name, value):
        if name == "m":
            return M.check_angle("m", value)
        return super()._validate(name, value)

    def target(self, cos):
        return M.additive_angular(cos, self._values["m"], self.fallback)

    def target_and_slope(self, cos):
        return M.additive_angular_and_slope(cos, self._values["m"], self.fallback)


class CombinedMargin(_NormalizedHead):
    """insightface's combined margin: target s·(cos(m1·θ_y + m2) − m3).

    f(θ) = cos(m1·θ + m2) − m3 ≤ cos θ (a margin, A ≥ 1) holds for every θ ∈ [0, π] when
    m1 ≥ 1, m2 ≥ 0 and m3 ≥ 0 (with m1·θ + m2 ≤ π; beyond it the member's fallback
    applies). With m1 < 1, f > cos θ for large θ (cos(m1·θ) > cos θ): A < 1, a negative
    margin that makes the target easier, not harder."""

    name = "combined_margin"
    formula = "target s (cos(m1 theta_y + m2) - m3); a margin (f <= cos) for m1 >= 1, m2, m3 >= 0"

    def __init__(self, embedding_size=None, num_classes=None, *, s: float = 64.0,
                 m1: float = 1.0, m2: float = 0.3, m3: float = 0.2,
                 fallback: str = "linear", reduction: str = "mean", generator=None) -> None:
        super().__init__(embedding_size, num_classes, s=s, reduction=reduction,
                         generator=generator)
        for key, value in (("m1", m1), ("m2", m2), ("m3", m3)):
            self._values[key] = self._validate(key, value)
        self.fallback = M.check_fallback(fallback)

    def _validate(self, name, value):
        if name == "m1":
            return M.check_positive("m1", value)
        if name == "m2":
            return M.check_angle("m2", value)
        if name == "m3":
            return M.check_nonnegative("m3", value, 2.0)
        return super()._validate(name, value)

    def target(self, cos):
        v = self._values
        return M.combined_margin(cos, v["m1"], v["m2"], v["m3"], self.fallback)

    def target_and_slope(self, cos):
        v = self._values
        return M.combined_margin_and_slope(cos, v["m1"], v["m2"], v["m3"], self.fallback)


class _Annealed(_MarginHead):
    """ψ-margin heads with the papers' λ annealing: f = (λ cos θ + ψ(θ)) / (1 + λ),
    λ_t = max(lambda_min, lambda_base·(1 + lambda_gamma·t)^(−lambda_power)), t counting the
    training steps (forward calls in training mode with autograd on).

    The papers' step counts belong to their own runs (SphereFace reaches λ_min = 5 at step
    1,658 of 28,000, about 6% of training). Once a run tells the head its length T with
    `plan_training(T)`, the same curve is stretched over training progress u = t / T: t is
    replaced by u / lambda_end · t*, where t* is the step at which the paper's curve meets
    λ* = max(lambda_min, 1e-3·lambda_base); from u = lambda_end on, λ = lambda_min exactly.
    So λ reaches λ_min at the same fraction of training whatever the dataset size."""

    def __init__(self, embedding_size, num_classes, *, m, lambda_base, lambda_gamma,
                 lambda_power, lambda_min, lambda_end, reduction, generator) -> None:
        super().__init__(embedding_size, num_classes, reduction=reduction,
                         generator=generator)
        self._values["m"] = float(M.check_integer("m", m, 1))
        self.lambda_base = M.check_nonnegative("lambda_base", lambda_base)
        self.lambda_gamma = M.check_nonnegative("lambda_gamma", lambda_gamma)
        self.lambda_power = M.check_nonnegative("lambda_power", lambda_power)
        self.lambda_min = M.check_nonnegative("lambda_min", lambda_min)
        self.lambda_end = M._number("lambda_end", lambda_end, "(0, 1]")
        if not 0.0 < self.lambda_end <= 1.0:
            raise ValueError(f"lambda_end (the fraction of training at which λ reaches "
                             f"lambda_min) must be in (0, 1]; got {self.lambda_end:g}")
        self.step = 0
        #: training steps T of the whole run (None: the papers' raw step schedule)
        self.total_steps: int | None = None

    def plan_training(self, total_steps: int) -> None:
        self.total_steps = max(int(total_steps), 1)

    def _paper_lambda(self, t: float) -> float:
        return self.lambda_base * (1.0 + self.lambda_gamma * t) ** (-self.lambda_power)

    def _meeting_step(self) -> float:
        """t* with lambda_base·(1 + γ t*)^(−power) = λ* = max(lambda_min, 1e-3·lambda_base)."""
        target = max(self.lambda_min, 1e-3 * self.lambda_base)
        if self.lambda_base <= target or self.lambda_gamma == 0 or self.lambda_power == 0:
            return 0.0
        return ((self.lambda_base / target) ** (1.0 / self.lambda_power) - 1.0) / self.lambda_gamma

    def _validate(self, name, value):
        if name == "m":
            return float(M.check_integer("m", value, 1))
        return _check_finite(name, value)

    @property
    def lam(self) -> float:
        """The current annealing weight λ."""
        if self.total_steps is None:
            return max(self.lambda_min, self._paper_lambda(self.step))
        u = self.step / self.total_steps
        if u >= self.lambda_end:
            return self.lambda_min
        return max(self.lambda_min, self._paper_lambda(u / self.lambda_end * self._meeting_step()))

    def target(self, cos):
        return M.multiplicative_angular(cos, int(self._values["m"]), self.lam)

    def target_and_slope(self, cos):
        return M.multiplicative_angular_and_slope(cos, int(self._values["m"]), self.lam)

    def forward(self, embeddings, labels):
        loss = super().forward(embeddings, labels)
        if self.training and torch.is_grad_enabled():
            self.step += 1
        return loss

    def get_extra_state(self) -> dict:
        return {"values": dict(self._values), "step": self.step}

    def set_extra_state(self, state: dict) -> None:
        super().set_extra_state(state)
        self.step = int(state.get("step", 0))


class LSoftmax(_Annealed):
    """L-Softmax (Liu et al. 2016): unnormalised head, target ‖W_y‖‖x‖·f(θ_y) with
    f = (λ cos θ + ψ_m(θ))/(1 + λ), ψ_m(θ) = (−1)^k cos(mθ) − 2k, m an integer."""

    name = "lsoftmax"
    formula = "target ||W_y|| ||x|| (lam cos theta_y + psi_m(theta_y)) / (1 + lam)"

    def __init__(self, embedding_size=None, num_classes=None, *, m: int = 4,
                 lambda_base: float = 1000.0, lambda_gamma: float = 0.12,
                 lambda_power: float = 1.0, lambda_min: float = 0.0, lambda_end: float = 0.5,
                 reduction: str = "mean", generator=None) -> None:
        super().__init__(embedding_size, num_classes, m=m, lambda_base=lambda_base,
                         lambda_gamma=lambda_gamma, lambda_power=lambda_power,
                         lambda_min=lambda_min, lambda_end=lambda_end, reduction=reduction,
                         generator=generator)

    def _scores(self, x):
        return F.linear(x, self.weight)

    def _target_scale(self, x, labels):
        xn = torch.linalg.vector_norm(x, dim=1)
        wn = torch.linalg.vector_norm(self.weight.index_select(0, labels), dim=1)
        return (xn * wn).clamp_min(_NORM_EPS)


class SphereFace(_Annealed):
    """SphereFace / A-Softmax (Liu et al. 2017): ‖W_j‖ = 1, no bias, target
    ‖x‖·f(θ_y) with f = (λ cos θ + ψ_m(θ))/(1 + λ)."""

    name = "sphereface"
    formula = "target ||x|| (lam cos theta_y + psi_m(theta_y)) / (1 + lam), ||W_j|| = 1"

    def __init__(self, embedding_size=None, num_classes=None, *, m: int = 4,
                 lambda_base: float = 1000.0, lambda_gamma: float = 0.12,
                 lambda_power: float = 1.0, lambda_min: float = 5.0, lambda_end: float = 0.06,
                 reduction: str = "mean", generator=None) -> None:
        super().__init__(embedding_size, num_classes, m=m, lambda_base=lambda_base,
                         lambda_gamma=lambda_gamma, lambda_power=lambda_power,
                         lambda_min=lambda_min, lambda_end=lambda_end, reduction=reduction,
                         generator=generator)

    def _scores(self, x):
        return F.linear(x, F.normalize(self.weight, dim=1, eps=_NORM_EPS))

    def _target_scale(self, x, labels):
        return torch.linalg.vector_norm(x, dim=1).clamp_min(_NORM_EPS)


class Modulated(_NormalizedHead):
    """Random-/Search-Softmax: −log h(a, p), h = p / (p + a(1 − p)), a ≥ 1, computed as
    cross entropy with the target logit s·cos θ_y lowered by log a.

    One global ``a``, or with ``bins=K`` one a_i per interval [i/K, (i+1)/K) of the
    (detached) softmax probability p of the true class; params ``a_0 … a_{K−1}``.
    Paper form: α = 1 − a ≤ 0 (see :mod:`lfsearch.margins`).

    Margin form (give ``m`` instead of ``a``; params ``m`` or ``m_0 … m_{K−1}``):
    log a = s·m, so the target logit is s·(cos θ_y − m) — exactly CosFace(s, m) for one
    global m, NormFace at m = 0 — and a search over (log s, m) holds both scales and margins
    whatever s is (docs/search_space.md).
    """

    name = "modulated"
    formula = "-log h(a, p), h = p / (p + a (1 - p)), a >= 1 (a_i per p-bin with bins=K)"

    def __init__(self, embedding_size=None, num_classes=None, *, s: float = 64.0,
                 a: float | Sequence[float] | None = None,
                 m: float | Sequence[float] | None = None, bins: int | None = None,
                 reduction: str = "mean", generator=None) -> None:
        super().__init__(embedding_size, num_classes, s=s, reduction=reduction,
                         generator=generator)
        self.bins = None if bins is None else M.check_integer("bins", bins, 1)
        if a is not None and m is not None:
            raise ValueError("give either a (the modulating factor) or m (the margin form, "
                             "log a = s·m), not both")
        #: "a": params a / a_i; "m": params m / m_i with log a = s·m
        self.form = "m" if m is not None else "a"
        given = (m if m is not None else a if a is not None else 1.0)
        k = 1 if self.bins is None else self.bins
        if isinstance(given, (int, float)) or (isinstance(given, Tensor) and given.dim() == 0):
            values = [given] * k
        else:
            values = list(given)
            if len(values) != k:
                raise ValueError(f"{self.form} must be one number or {k} numbers (one per bin, "
                                 f"bins={self.bins}); got {len(values)}")
        self.register_buffer("log_a", torch.zeros(k))
        for key, value in zip(self._factor_names(), values):
            self._values[key] = self._validate(key, value)
        self._apply_params()

    def _factor_names(self) -> list[str]:
        if self.bins is None:
            return [self.form]
        return [f"{self.form}_{i}" for i in range(self.bins)]

    def _validate(self, name, value):
        if name == "a" or name.startswith("a_"):
            v = M._number(name, value, "[1, inf)")
            if v < 1.0:
                raise ValueError(f"{name} (the modulating factor A) must be >= 1 "
                                 f"(allowed: [1, inf)); got {v:g}")
            return v
        if name == "m" or name.startswith("m_"):
            v = M._number(name, value, "[0, inf)")
            if v < 0.0:
                raise ValueError(f"{name} (the margin, log A = s·m) must be >= 0 "
                                 f"(allowed: [0, inf)); got {v:g}")
            return v
        return super()._validate(name, value)

    def modulating_factors(self) -> list[float]:
        """The factors A (one, or one per bin) the current parameters give."""
        return [math.exp(v) for v in self.log_a.tolist()]

    def _apply_params(self):
        names = self._factor_names()
        if self.form == "a":
            logs = [math.log(self._values[n]) for n in names]
        else:
            logs = [self.s * self._values[n] for n in names]
        self.log_a.copy_(torch.tensor(logs, dtype=torch.float64))

    def _target(self, x, labels, z):
        if self.bins is None:
            return None, -self.log_a.to(z.dtype), None
        with torch.no_grad():  # the bin of p, the true class's plain softmax probability
            rows = torch.arange(z.shape[0], device=z.device)
            log_p = z[rows, labels].float() - torch.logsumexp(z, dim=1).float()
            idx = M.bin_index(log_p.exp(), self.bins, M.TAU_DOMAIN)
            return None, -self.log_a[idx].to(z.dtype), None


class AMLFS(_NormalizedHead):
    """AM-LFS (Li et al. 2019): −log τ(p) where p is the softmax probability of the true
    class after its logit is replaced by s·t(cos θ_y) (``use_t``); τ and t are
    piecewise linear over K equal intervals of [0, 1] and [−1, 1] (see
    :mod:`lfsearch.margins`). Params ``tau_slope_i``, ``tau_intercept_i``, ``t_slope_i``,
    ``t_intercept_i`` (i < K); identity (slopes 1, intercepts 0) by default.

    The loss needs τ(p) > 0: where τ(p) ≤ 0 it is capped at −log(tiny) with no gradient.
    Each piece is linear, so τ > 0 on (0, 1] for every value in a search box iff, for each
    bin i with edges p_i < p_{i+1}, min(a_lo·p, a_hi·p) + b_lo > 0 at each edge p > 0 and
    b_lo ≥ 0 at the edge p = 0 (τ(0) = 0 is the identity's own value, never reached by a
    softmax probability). :meth:`check_ranges` refuses a search box that breaks this; the
    shipped space keeps slopes in [0.5, 1.5] and intercepts in [0, 0.2].
    """

    name = "am_lfs"
    formula = "-log tau(p), p = softmax with target s t(cos theta_y); tau, t piecewise linear"

    def __init__(self, embedding_size=None, num_classes=None, *, s: float = 64.0,
                 bins: int = 6, use_t: bool = True,
                 tau_slopes: Sequence[float] | None = None,
                 tau_intercepts: Sequence[float] | None = None,
                 t_slopes: Sequence[float] | None = None,
                 t_intercepts: Sequence[float] | None = None,
                 reduction: str = "mean", generator=None) -> None:
        super().__init__(embedding_size, num_classes, s=s, reduction=reduction,
                         generator=generator)
        self.bins = M.check_integer("bins", bins, 1)
        self.use_t = bool(use_t)
        k = self.bins
        self.register_buffer("tau_coef", torch.zeros(2, k))
        self.register_buffer("t_coef", torch.zeros(2, k))
        groups = [("tau_slope", tau_slopes, 1.0), ("tau_intercept", tau_intercepts, 0.0)]
        if self.use_t:
            groups += [("t_slope", t_slopes, 1.0), ("t_intercept", t_intercepts, 0.0)]
        elif t_slopes is not None or t_intercepts is not None:
            raise ValueError("t_slopes/t_intercepts need use_t=True (allowed with "
                             "use_t=False: None)")
        for prefix, values, default in groups:
            values = [default] * k if values is None else list(values)
            if len(values) != k:
                raise ValueError(f"{prefix}s must hold {k} numbers (bins={k}); "
                                 f"got {len(values)}")
            for i, v in enumerate(values):
                self._values[f"{prefix}_{i}"] = _check_finite(f"{prefix}_{i}", v)
        self._apply_params()

    def _apply_params(self):
        v, k = self._values, self.bins
        tau = [[v[f"tau_slope_{i}"] for i in range(k)], [v[f"tau_intercept_{i}"] for i in range(k)]]
        self.tau_coef.copy_(torch.tensor(tau, dtype=torch.float64))
        if self.use_t:
            t = [[v[f"t_slope_{i}"] for i in range(k)], [v[f"t_intercept_{i}"] for i in range(k)]]
            self.t_coef.copy_(torch.tensor(t, dtype=torch.float64))

    def check_ranges(self, ranges: dict[str, tuple[float, float]]) -> None:
        """Refuse searched ranges {name: (low, high)} that allow τ(p) ≤ 0 somewhere on (0, 1]
        (the condition of the class docstring; unsearched values count as low = high)."""
        k = self.bins
        for i in range(k):
            a_lo, a_hi = ranges.get(f"tau_slope_{i}", (self._values[f"tau_slope_{i}"],) * 2)
            b_lo, _ = ranges.get(f"tau_intercept_{i}", (self._values[f"tau_intercept_{i}"],) * 2)
            for p in (i / k, (i + 1) / k):
                worst = min(a_lo * p, a_hi * p) + b_lo
                if (worst < 0) if p == 0 else (worst <= 0):
                    raise ValueError(
                        f"tau_slope_{i} in [{a_lo:g}, {a_hi:g}] with tau_intercept_{i} low = "
                        f"{b_lo:g} allows tau(p) = {worst:g} <= 0 at p = {p:g}; allowed: ranges "
                        "with slope*p + intercept > 0 on every bin of (0, 1] (e.g. intercept "
                        "low >= 0 and slope low > 0)")

    def target(self, cos):
        coef = self.t_coef.to(cos.dtype)
        return M.t_transform(cos, coef[0], coef[1])

    def target_and_slope(self, cos):
        coef = self.t_coef.to(cos.dtype)
        return M.t_transform_and_slope(cos, coef[0], coef[1])

    def _target(self, x, labels, z):
        return super()._target(x, labels, z) if self.use_t else None

    def forward(self, embeddings, labels):
        self._check(embeddings, labels)
        log_p = -self._cross_entropy(embeddings, labels, "none")
        coef = self.tau_coef.to(log_p.dtype)
        loss = -M.log_tau(log_p, coef[0], coef[1])
        if self.reduction == "mean":
            return loss.mean()
        if self.reduction == "sum":
            return loss.sum()
        return loss


# ---------------------------------------------------------------- auxiliary (joint) terms
def _pairwise_sq_distances(x: Tensor, normalized: bool) -> Tensor:
    gram = x @ x.t()
    if normalized:
        return (2.0 - 2.0 * gram).clamp_min(0.0)
    sq = (x * x).sum(dim=1)
    return (sq[:, None] + sq[None, :] - 2.0 * gram).clamp_min(0.0)


def _sqrt_safe(d2: Tensor) -> Tensor:
    return d2.clamp_min(_NORM_EPS).sqrt()


class _Aux(Loss):
    family = "aux"

    def __init__(self, embedding_size=None, num_classes=None, *, normalize: bool) -> None:
        super().__init__()
        self.embedding_size = (None if embedding_size is None
                               else _check_size("embedding_size", embedding_size))
        self.num_classes = (None if num_classes is None
                            else _check_size("num_classes", num_classes))
        self.normalize = bool(normalize)

    def _validate(self, name, value):
        return M.check_nonnegative(name, value)

    def _prepare(self, x: Tensor, labels: Tensor) -> Tensor:
        if self.validate:
            _check_embeddings(x, self.embedding_size)
            _check_labels(labels, x.shape[0])
            _check_values(x, labels, self.num_classes)
        return F.normalize(x, dim=1, eps=_NORM_EPS) if self.normalize else x


class CenterLoss(_Aux):
    """Center loss (Wen et al. 2016): ½·mean_i ‖x_i − c_{y_i}‖².

    The centres are not trained by the optimiser: after each training batch they move at
    their own rate α (the paper's update, α = 0.5 by default),
    c_j ← c_j − α·Δc_j,  Δc_j = Σ_{i: y_i = j} (c_j − x_i) / (1 + n_j),
    n_j the batch's samples of class j. They are a buffer, so they live in state_dict."""

    name = "center"
    formula = "1/2 mean_i ||x_i - c_(y_i)||^2; c_j -= alpha sum_(y_i=j)(c_j - x_i)/(1 + n_j)"

    def __init__(self, embedding_size=None, num_classes=None, *, normalize: bool = False,
                 alpha: float = 0.5, generator: torch.Generator | None = None) -> None:
        super().__init__(_check_size("embedding_size", embedding_size),
                         _check_size("num_classes", num_classes), normalize=normalize)
        self.alpha = M._number("alpha", alpha, "(0, 1]")
        if not 0.0 < self.alpha <= 1.0:
            raise ValueError(f"alpha (the centres' rate) must be in (0, 1]; got {self.alpha:g}")
        self.register_buffer("centers", torch.empty(self.num_classes, self.embedding_size))
        with torch.no_grad():
            self.centers.normal_(0.0, 0.01, generator=generator)

    def forward(self, embeddings, labels):
        x = self._prepare(embeddings, labels)
        diff = x - self.centers.index_select(0, labels).to(x.dtype)
        loss = 0.5 * (diff * diff).sum(dim=1).mean()
        if self.training and torch.is_grad_enabled():
            self.update_centers(x.detach(), labels)
        return loss

    @torch.no_grad()
    def update_centers(self, x: Tensor, labels: Tensor) -> None:
        """c_j ← c_j − α·Σ_{i: y_i = j}(c_j − x_i)/(1 + n_j) for the classes of the batch."""
        c = self.centers
        gap = c.index_select(0, labels) - x.to(c.dtype)
        sums = torch.zeros_like(c).index_add_(0, labels, gap)
        counts = torch.zeros(c.shape[0], dtype=c.dtype, device=c.device)
        counts.index_add_(0, labels, torch.ones_like(labels, dtype=c.dtype))
        c.sub_(self.alpha * sums / (1.0 + counts)[:, None])


class RangeLoss(_Aux):
    """Range loss (Zhang et al. 2017): alpha·L_intra + beta·L_inter.

    L_intra: per class of the batch, the harmonic mean of its k largest intra-class
    distances, averaged over the classes with ≥ 2 samples (the paper sums; multiply by
    the class count to match); L_inter = max(margin − D_center, 0), D_center the
    shortest Euclidean distance between two class means of the batch.
    """

    name = "range"
    formula = "alpha mean_c k/sum_(k largest) 1/d + beta max(margin - min center dist, 0)"

    def __init__(self, embedding_size=None, num_classes=None, *, k: int = 2,
                 margin: float = 1.0, alpha: float = 1.0, beta: float = 1.0,
                 normalize: bool = False) -> None:
        super().__init__(embedding_size, num_classes, normalize=normalize)
        self.k = M.check_integer("k", k, 1)
        for key, value in (("margin", margin), ("alpha", alpha), ("beta", beta)):
            self._values[key] = M.check_nonnegative(key, value)

    def forward(self, embeddings, labels):
        x = self._prepare(embeddings, labels)
        v = self._values
        d = _sqrt_safe(_pairwise_sq_distances(x, self.normalize))
        same = labels[:, None] == labels[None, :]
        pi, pj = torch.nonzero(torch.triu(same, diagonal=1), as_tuple=True)
        intra = x.new_zeros(())
        if pi.numel():
            dist, cls = d[pi, pj], labels[pi]
            order = torch.argsort(dist.detach(), descending=True)
            order = order[torch.argsort(cls[order], stable=True)]
            cls, dist = cls[order], dist[order]
            _, counts = torch.unique_consecutive(cls, return_counts=True)
            starts = torch.cumsum(counts, 0) - counts
            group = torch.repeat_interleave(torch.arange(counts.numel(), device=x.device),
                                            counts)
            rank = torch.arange(cls.numel(), device=x.device) - starts[group]
            keep = rank < self.k
            inv_sum = x.new_zeros(counts.numel()).index_add(0, group[keep], 1.0 / dist[keep])
            intra = (counts.clamp(max=self.k).to(x.dtype) / inv_sum).mean()
        classes, inverse = torch.unique(labels, return_inverse=True)
        inter = x.new_zeros(())
        if classes.numel() >= 2:
            n = x.new_zeros(classes.numel()).index_add(0, inverse, x.new_ones(x.shape[0]))
            centers = x.new_zeros(classes.numel(), x.shape[1]).index_add(0, inverse, x)
            centers = centers / n[:, None]
            dc = _sqrt_safe(_pairwise_sq_distances(centers, False))
            dc = dc + torch.diag(torch.full_like(n, float("inf")))
            inter = torch.relu(v["margin"] - dc.min())
        return v["alpha"] * intra + v["beta"] * inter


class ContrastiveLoss(_Aux):
    """Contrastive loss (Hadsell et al. 2006; DeepID2) over every pair of the batch:
    ½·[mean_pos d² + mean_neg max(margin − d, 0)²], d the Euclidean distance
    (between L2-normalised embeddings by default)."""

    name = "contrastive"
    formula = "1/2 [mean_pos d^2 + mean_neg max(margin - d, 0)^2]"

    def __init__(self, embedding_size=None, num_classes=None, *, margin: float = 1.0,
                 normalize: bool = True) -> None:
        super().__init__(embedding_size, num_classes, normalize=normalize)
        self._values["margin"] = M.check_nonnegative("margin", margin)

    def forward(self, embeddings, labels):
        x = self._prepare(embeddings, labels)
        d2 = _pairwise_sq_distances(x, self.normalize)
        upper = torch.ones_like(d2, dtype=torch.bool).triu_(1)
        same = labels[:, None] == labels[None, :]
        pos, neg = (same & upper).to(x.dtype), (~same & upper).to(x.dtype)
        hinge = torch.relu(self._values["margin"] - _sqrt_safe(d2))
        pos_term = (d2 * pos).sum() / pos.sum().clamp_min(1.0)
        neg_term = (hinge * hinge * neg).sum() / neg.sum().clamp_min(1.0)
        return 0.5 * (pos_term + neg_term)


class TripletLoss(_Aux):
    """Batch-hard triplet loss (Hermans et al. 2017): for each anchor with a positive and
    a negative in the batch, max(d(a, hardest positive) − d(a, hardest negative) +
    margin, 0), averaged over those anchors (L2-normalised embeddings by default)."""

    name = "triplet"
    formula = "mean_a max(max_p d(a,p) - min_n d(a,n) + margin, 0)  (batch-hard)"

    def __init__(self, embedding_size=None, num_classes=None, *, margin: float = 0.2,
                 normalize: bool = True) -> None:
        super().__init__(embedding_size, num_classes, normalize=normalize)
        self._values["margin"] = M.check_nonnegative("margin", margin)

    def forward(self, embeddings, labels):
        x = self._prepare(embeddings, labels)
        d = _sqrt_safe(_pairwise_sq_distances(x, self.normalize))
        same = labels[:, None] == labels[None, :]
        eye = torch.eye(x.shape[0], dtype=torch.bool, device=x.device)
        pos, neg = same & ~eye, ~same
        hardest_pos = d.masked_fill(~pos, float("-inf")).amax(dim=1)
        hardest_neg = d.masked_fill(~neg, float("inf")).amin(dim=1)
        valid = pos.any(dim=1) & neg.any(dim=1)
        gap = torch.relu(hardest_pos - hardest_neg + self._values["margin"])
        gap = torch.where(valid, gap, torch.zeros_like(gap))
        return gap.sum() / valid.sum().clamp_min(1).to(x.dtype)


# ------------------------------------------------------------------------------- joint
class Joint(Loss):
    """L = main(x, y) + aux_weight·aux(x, y); ``.weight`` and ``.logits`` are the main
    head's. Searchable: the main loss's params, ``aux_weight``, and the aux term's
    params prefixed with its name (e.g. ``triplet_margin``)."""

    def __init__(self, main: Loss, aux: Loss, aux_weight: float) -> None:
        super().__init__()
        self.main = main
        self.aux = aux
        aux.validate = False  # the main loss checks the same inputs
        self.name = f"{main.name}+{aux.name}"
        self.formula = f"{main.formula} + aux_weight * [{aux.formula}]"
        self._values["aux_weight"] = M.check_nonnegative("aux_weight", aux_weight)

    @property
    def weight(self) -> Tensor:
        return self.main.weight

    def logits(self, embeddings: Tensor) -> Tensor:
        return self.main.logits(embeddings)

    def margin_logits(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        return self.main.margin_logits(embeddings, labels)

    def plan_training(self, total_steps: int) -> None:
        self.main.plan_training(total_steps)
        self.aux.plan_training(total_steps)

    def param_names(self) -> list[str]:
        return (self.main.param_names() + ["aux_weight"]
                + [f"{self.aux.name}_{n}" for n in self.aux.param_names()])

    def get_params(self) -> dict[str, float]:
        out = self.main.get_params()
        out["aux_weight"] = self._values["aux_weight"]
        out.update({f"{self.aux.name}_{k}": v for k, v in self.aux.get_params().items()})
        return out

    def set_params(self, **values) -> None:
        allowed = self.param_names()
        for key in values:
            if key not in allowed:
                raise ValueError(f"unknown parameter {key!r} for loss {self.name!r}; "
                                 f"allowed: {', '.join(allowed)}")
        prefix = f"{self.aux.name}_"
        main_names = set(self.main.param_names())
        main = {k: v for k, v in values.items() if k in main_names}
        aux = {k[len(prefix):]: v for k, v in values.items()
               if k not in main_names and k != "aux_weight"}
        weight = values.get("aux_weight")
        if weight is not None:
            weight = M.check_nonnegative("aux_weight", weight)
        self.main.set_params(**main)
        self.aux.set_params(**aux)
        if weight is not None:
            self._values["aux_weight"] = weight

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        loss = self.main(embeddings, labels)
        w = self._values["aux_weight"]
        if w == 0.0:
            return loss
        return loss + w * self.aux(embeddings, labels)


# ---------------------------------------------------------------------------- registry
_REGISTRY: dict[str, type[Loss]] = {
    cls.name: cls for cls in (
        Softmax, WeightedSoftmax, LSoftmax, SphereFace, L2Softmax, NormFace, CosFace,
        ArcFace, CombinedMargin, Modulated, AMLFS,
        CenterLoss, RangeLoss, ContrastiveLoss, TripletLoss)
}
# the members published after ArcFace (AdaFace, MagFace, ElasticFace, ...): lfsearch/losses_recent.py
from lfsearch import losses_recent as _recent  # noqa: E402  (it builds on the classes above)

_REGISTRY.update({cls.name: cls for cls in _recent.MEMBERS})
_ALIASES = {"am_softmax": "cosface"}
#: Joint-supervision terms usable alone or as ``aux=`` of a softmax-family member.
AUX_NAMES = tuple(n for n, c in _REGISTRY.items() if c.family == "aux")
_BUILD_ONLY = ("embedding_size", "num_classes", "generator")


def available() -> list[str]:
    """Every name ``build`` accepts (aliases included), in registry order."""
    return list(_REGISTRY) + list(_ALIASES)


def _resolve(name) -> type[Loss]:
    if not isinstance(name, str) or _ALIASES.get(name, name) not in _REGISTRY:
        raise ValueError(f"unknown loss {name!r}; available: {', '.join(available())}")
    return _REGISTRY[_ALIASES.get(name, name)]


def _options(cls: type[Loss]) -> dict[str, Any]:
    """Keyword options of a loss class with their defaults (build-only ones excluded)."""
    sig = inspect.signature(cls.__init__)
    return {p.name: p.default for p in sig.parameters.values()
            if p.kind == p.KEYWORD_ONLY and p.name not in _BUILD_ONLY}


def _construct(cls: type[Loss], embedding_size, num_classes, params: dict,
               generator) -> Loss:
    options = _options(cls)
    unknown = [k for k in params if k not in options]
    if unknown:
        raise ValueError(f"unknown parameter {unknown[0]!r} for loss {cls.name!r}; "
                         f"allowed: {', '.join(options) or '(none)'}")
    if "generator" in inspect.signature(cls.__init__).parameters:
        params = {**params, "generator": generator}
    return cls(embedding_size, num_classes, **params)


def build(name: str, embedding_size: int | None = None, num_classes: int | None = None, *,
          aux: str | None = None, aux_weight: float = 0.01,
          aux_params: dict | None = None, generator: torch.Generator | None = None,
          **params) -> Loss:
    """Build the loss ``name`` (see :func:`available`) with its keyword ``params``.

    ``aux`` adds a joint-supervision term (one of :data:`AUX_NAMES`) to a softmax-family
    member: L = L_name + aux_weight·L_aux, the aux term built with ``aux_params``.
    ``generator`` seeds the initial class weights / centers.
    """
    cls = _resolve(name)
    loss = _construct(cls, embedding_size, num_classes, params, generator)
    if aux is None:
        if aux_params:
            raise ValueError("aux_params needs aux (allowed aux: " + ", ".join(AUX_NAMES) + ")")
        return loss
    if not isinstance(aux, str) or aux not in AUX_NAMES:
        raise ValueError(f"aux must be one of {', '.join(AUX_NAMES)}; got {aux!r}")
    if cls.family != "softmax":
        raise ValueError(f"aux terms combine with a softmax-family loss; {name!r} is itself "
                         f"a joint term (allowed: {', '.join(n for n in available() if n not in AUX_NAMES)})")
    aux_loss = _construct(_REGISTRY[aux], embedding_size, num_classes, dict(aux_params or {}),
                          generator)
    return Joint(loss, aux_loss, aux_weight)


def describe(name: str) -> dict[str, Any]:
    """{'name', 'formula', 'family', 'params': {option: default}} for one member."""
    cls = _resolve(name)
    return {"name": cls.name, "formula": cls.formula, "family": cls.family,
            "params": _options(cls)}


def describe_table() -> str:
    """A text table of every member: name, formula, parameters with their defaults."""
    aliases = {}
    for alias, target in _ALIASES.items():
        aliases.setdefault(target, []).append(alias)
    rows = [("name", "formula", "parameters (defaults)")]
    for name, cls in _REGISTRY.items():
        label = name + "".join(f" (alias {a})" for a in aliases.get(name, []))
        params = ", ".join(f"{k}={v!r}" for k, v in _options(cls).items()
                           if k != "reduction")
        rows.append((label, cls.formula, params or "-"))
    widths = (max(len(r[0]) for r in rows), 46, 52)
    lines = []
    for i, (a, b, c) in enumerate(rows):
        fb = textwrap.wrap(b, widths[1]) or [""]
        fc = textwrap.wrap(c, widths[2]) or [""]
        for j in range(max(len(fb), len(fc))):
            lines.append("  ".join((
                (a if j == 0 else "").ljust(widths[0]),
                (fb[j] if j < len(fb) else "").ljust(widths[1]),
                fc[j] if j < len(fc) else "")).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    notes = [
        "Softmax-family members also take reduction='mean' (or 'sum', 'none') and expose "
        ".weight (num_classes, embedding_size), .logits(x), get_params(), set_params(...).",
        "Joint supervision: build(NAME, D, C, aux=" + "|".join(AUX_NAMES)
        + ", aux_weight=0.01, aux_params={...}) gives NAME + aux_weight * aux.",
        "Angles in radians. psi_m(theta) = (-1)^k cos(m theta) - 2k on [k pi/m, (k+1) pi/m]; "
        "lam = max(lambda_min, lambda_base (1 + lambda_gamma t)^-lambda_power) at step t.",
        "Modulated: h(a, p) with a >= 1 (paper: alpha = 1 - a <= 0); with bins=K params "
        "a_0..a_(K-1) by the bin of p. AM-LFS params: tau_slope_i, tau_intercept_i, "
        "t_slope_i, t_intercept_i over K equal bins of p in [0, 1] and cos in [-1, 1].",
    ]
    lines.append("")
    for note in notes:
        lines.extend(textwrap.wrap(note, 100, subsequent_indent="  "))
    return "\n".join(lines)
