"""Sub-center ArcFace: K sub-centres per class, the class cosine the largest of its K, then
ArcFace's margin on the target.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from lfsearch.losses import margins
from lfsearch.losses.base import _normalized_scores
from lfsearch.losses.target_logit import _check_fallback, _ReplacedTargetHead, arc_target_and_slope


# --------------------------------------------------------------------- Sub-center ArcFace
class SubCenterArcFace(_ReplacedTargetHead):
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
        self.K = margins.check_integer("K", K, 1)
        self._values["m"] = self._validate("m", m)
        self.fallback = _check_fallback(fallback)
        weight = torch.empty(self.num_classes * self.K, self.embedding_size)
        bound = 1.0 / math.sqrt(self.embedding_size)
        with torch.no_grad():
            weight.uniform_(-bound, bound, generator=generator)
        self.weight = nn.Parameter(weight)

    def _validate(self, name, value):
        if name == "m":
            return margins.check_angle("m", value)
        return super()._validate(name, value)

    def _scores(self, x):
        z = _normalized_scores(x, self.weight, self.s)
        return z.view(z.shape[0], self.num_classes, self.K).max(dim=2).values

    def _fixed_target_and_slope(self, cos):
        return arc_target_and_slope(cos, self._values["m"], self.fallback)

    def get_extra_state(self) -> dict:
        return {"values": dict(self._values), "num_classes": self.num_classes, "K": self.K}
