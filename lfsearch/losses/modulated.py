"""Search-Softmax's modulated family: p_m = h(A, p) = p / (p + A(1 − p)) with a modulating
factor A ≥ 1 per probability bin, i.e. the target logit lowered by log A (Wang et al., CVPR
2020; docs/math.md).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor

from lfsearch.losses import margins as margins_mod
from lfsearch.losses.base import _NormalizedHead


class Modulated(_NormalizedHead):
    """Random-/Search-Softmax: −log h(a, p), h = p / (p + a(1 − p)), a ≥ 1, computed as
    cross entropy with the target logit s·cos θ_y lowered by log a.

    One global ``a``, or with ``bins=K`` one a_i per interval [i/K, (i+1)/K) of the
    (detached) softmax probability p of the true class; params ``a_0 … a_{K−1}``.
    Paper form: α = 1 − a ≤ 0 (see :mod:`lfsearch.losses.margins`).

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
        self.bins = None if bins is None else margins_mod.check_integer("bins", bins, 1)
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
            v = margins_mod._number(name, value, "[1, inf)")
            if v < 1.0:
                raise ValueError(f"{name} (the modulating factor A) must be >= 1 "
                                 f"(allowed: [1, inf)); got {v:g}")
            return v
        if name == "m" or name.startswith("m_"):
            v = margins_mod._number(name, value, "[0, inf)")
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
            return None, self.bin_shift(z[rows, labels], torch.logsumexp(z, dim=1)), None

    def bin_shift(self, z_y: Tensor, lse: Tensor) -> Tensor:
        """The target's shift −log a_i, i the bin of p = exp(z_y − lse) (plain target logit
        z_y and log-sum-exp of the plain logits over the classes; no gradient). The sharded
        head (losses/sharded_fc.py) gives the log-sum-exp over every rank's classes."""
        with torch.no_grad():
            log_p = z_y.detach().float() - lse.detach().float()
            idx = margins_mod.bin_index(log_p.exp(), self.bins, margins_mod.TAU_DOMAIN)
            return -self.log_a[idx].to(z_y.dtype)
