"""The hand-crafted members with a margin fixed by their parameters: softmax, weighted softmax,
L2-softmax, NormFace, CosFace (s(cos θ − m)), ArcFace (s cos(θ + m)), the combined margin
(s(cos(m1 θ + m2) − m3)), L-Softmax and SphereFace (ψ(θ) = (−1)^k cos(mθ) − 2k).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from lfsearch.losses import margins
from lfsearch.losses.base import _NORM_EPS, _check_finite, _Head, _MarginHead, _NormalizedHead


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
        alpha = margins.check_positive("alpha", alpha)
        self.learn_alpha = bool(learn_alpha)
        if self.learn_alpha:
            self.alpha_param = nn.Parameter(torch.tensor(alpha))
        self._values["alpha"] = alpha

    def _validate(self, name, value):
        return margins.check_positive(name, value)

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
        self._values["m"] = margins.check_nonnegative("m", m, 2.0)

    def _validate(self, name, value):
        if name == "m":
            return margins.check_nonnegative("m", value, 2.0)
        return super()._validate(name, value)

    def target(self, cos):
        return margins.additive_cosine(cos, self._values["m"])

    def _target(self, x, labels, z):
        return None, -self.s * self._values["m"], None


class ArcFace(_NormalizedHead):
    """ArcFace: target s·cos(θ_y + m), m in radians; past θ > π − m the ``fallback``
    of :func:`lfsearch.losses.margins.additive_angular` (default "linear": cos θ − m·sin m)."""

    name = "arcface"
    formula = "target s cos(theta_y + m); past pi - m: s (cos theta_y - m sin m)"

    def __init__(self, embedding_size=None, num_classes=None, *, s: float = 64.0,
                 m: float = 0.5, fallback: str = "linear", reduction: str = "mean",
                 generator=None) -> None:
        super().__init__(embedding_size, num_classes, s=s, reduction=reduction,
                         generator=generator)
        self._values["m"] = margins.check_angle("m", m)
        self.fallback = margins.check_fallback(fallback)

    def _validate(self, name, value):
        if name == "m":
            return margins.check_angle("m", value)
        return super()._validate(name, value)

    def target(self, cos):
        return margins.additive_angular(cos, self._values["m"], self.fallback)

    def target_and_slope(self, cos):
        return margins.additive_angular_and_slope(cos, self._values["m"], self.fallback)


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
        self.fallback = margins.check_fallback(fallback)

    def _validate(self, name, value):
        if name == "m1":
            return margins.check_positive("m1", value)
        if name == "m2":
            return margins.check_angle("m2", value)
        if name == "m3":
            return margins.check_nonnegative("m3", value, 2.0)
        return super()._validate(name, value)

    def target(self, cos):
        v = self._values
        return margins.combined_margin(cos, v["m1"], v["m2"], v["m3"], self.fallback)

    def target_and_slope(self, cos):
        v = self._values
        return margins.combined_margin_and_slope(cos, v["m1"], v["m2"], v["m3"], self.fallback)


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
        self._values["m"] = float(margins.check_integer("m", m, 1))
        self.lambda_base = margins.check_nonnegative("lambda_base", lambda_base)
        self.lambda_gamma = margins.check_nonnegative("lambda_gamma", lambda_gamma)
        self.lambda_power = margins.check_nonnegative("lambda_power", lambda_power)
        self.lambda_min = margins.check_nonnegative("lambda_min", lambda_min)
        self.lambda_end = margins._number("lambda_end", lambda_end, "(0, 1]")
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
            return float(margins.check_integer("m", value, 1))
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
        return margins.multiplicative_angular(cos, int(self._values["m"]), self.lam)

    def target_and_slope(self, cos):
        return margins.multiplicative_angular_and_slope(cos, int(self._values["m"]), self.lam)

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
