"""AM-LFS's piecewise-linear family: the true-class probability p is replaced by τ(p), a
piecewise-linear function with learnable slopes a_k and offsets b_k on n equal bins of [0, 1]
(Li et al., ICCV 2019; docs/math.md).
"""

from __future__ import annotations

from typing import Sequence

import torch

from lfsearch.losses import margins
from lfsearch.losses.base import _check_finite, _NormalizedHead


class AMLFS(_NormalizedHead):
    """AM-LFS (Li et al. 2019): −log τ(p) where p is the softmax probability of the true
    class after its logit is replaced by s·t(cos θ_y) (``use_t``); τ and t are
    piecewise linear over K equal intervals of [0, 1] and [−1, 1] (see
    :mod:`lfsearch.losses.margins`). Params ``tau_slope_i``, ``tau_intercept_i``, ``t_slope_i``,
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
        self.bins = margins.check_integer("bins", bins, 1)
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
        return margins.t_transform(cos, coef[0], coef[1])

    def target_and_slope(self, cos):
        coef = self.t_coef.to(cos.dtype)
        return margins.t_transform_and_slope(cos, coef[0], coef[1])

    def _target(self, x, labels, z):
        return super()._target(x, labels, z) if self.use_t else None

    def forward(self, embeddings, labels):
        self._check(embeddings, labels)
        log_p = -self._cross_entropy(embeddings, labels, "none")
        coef = self.tau_coef.to(log_p.dtype)
        loss = -margins.log_tau(log_p, coef[0], coef[1])
        if self.reduction == "mean":
            return loss.mean()
        if self.reduction == "sum":
            return loss.sum()
        return loss
