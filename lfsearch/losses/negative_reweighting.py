"""Members that change the hard negatives' logits, outside the target-logit family:
CurricularFace (N(cos θ_j) = cos θ_j (t + cos θ_j) for hard negatives, t a running mean) and
MV-Softmax (N(cos θ_j) = (t + 1) cos θ_j + t, or t' for the adaptive variant).
"""

from __future__ import annotations

import torch
from torch import Tensor

from lfsearch.losses import margins
from lfsearch.losses.target_logit import _ReplacedTargetHead, arc_target, arc_target_and_slope


# ------------------------------------------------------------------ hard-negative members
class CurricularFace(_ReplacedTargetHead):
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
            return margins.check_angle("m", value)
        if name == "momentum":
            return margins.check_nonnegative("momentum", value, 1.0)
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


class MVSoftmax(_ReplacedTargetHead):
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
                return margins.check_angle("m", value)
            return margins.check_nonnegative("m", value, 2.0)
        if name == "t":
            return margins.check_nonnegative("t", value)
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
