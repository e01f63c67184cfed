"""The unified margin family as pure tensor functions (no state, no modules).

Conventions (all functions):

* Angles are in **radians**. θ is the angle between an embedding and its class weight,
  cos θ ∈ [−1, 1]; inputs are clamped to that range first, so values such as 1.0000001
  that normalisation produces in low precision are harmless.
* sin θ is computed as ``sqrt(max(1 − cos², eps))`` with ``eps = finfo(dtype).eps`` so
  neither the value nor the gradient is ever NaN or infinite, even at |cos θ| = 1.
* A *target function* ``f`` maps cos θ_y to the value that replaces cos θ_y in the target
  logit (``s·f(θ_y)`` instead of ``s·cos θ_y``); every member satisfies f(θ) ≤ cos θ
  for its documented parameter range.
* The modulating factor is written **A ≥ 1** (public convention):

      p_m = h(A, p) = p / (p + A·(1 − p)),      A = exp(s·(cos θ_y − f(θ_y))).

  The Search-Softmax paper (Wang et al., ICML 2020) writes the same family as
  p / (α·p + 1 − α) with α = 1 − A ≤ 0 (:func:`alpha_from_a`, :func:`a_from_alpha`);
  its released code searches α scaled by exp(s/3) (one global α) or exp(s/2)
  (per-bin α) (:func:`a_from_lfs_code_alpha`).
* −log h(A, p) is computed in log space as cross entropy with the target logit lowered
  by log A (:func:`modulated_cross_entropy`); probabilities are never divided.
* AM-LFS (Li et al., ICCV 2019) piecewise-linear transforms: K equal intervals of a
  domain, interval i = [lo + i·w, lo + (i+1)·w), w = (hi − lo)/K (the last one closed),
  each with its own line ``slope_i·x + intercept_i`` in the *global* coordinate x.
  τ acts on the softmax probability p ∈ [0, 1] (:func:`tau`); t acts on
  cos θ_y ∈ [−1, 1] (:func:`t_transform`). Identity: every slope 1, every intercept 0.

Scalar parameters are Python numbers validated here; a bad one raises ``ValueError``
naming the parameter and its allowed values. The derivations: docs/math.md.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "FALLBACKS",
    "no_margin",
    "multiplicative_angular",
    "additive_cosine",
    "additive_angular",
    "combined_margin",
    "multiplicative_angular_and_slope",
    "additive_angular_and_slope",
    "combined_margin_and_slope",
    "t_transform_and_slope",
    "sin_from_cos",
    "angle_from_cos",
    "modulating_factor",
    "log_modulating_factor",
    "modulated_probability",
    "modulated_cross_entropy",
    "alpha_from_a",
    "a_from_alpha",
    "a_from_lfs_code_alpha",
    "bin_index",
    "piecewise_linear",
    "tau",
    "t_transform",
    "log_tau",
    "TAU_DOMAIN",
    "T_DOMAIN",
]

#: Behaviours of the angular margin past the point where m1·θ + m2 > π (see
#: :func:`combined_margin`).
FALLBACKS = ("linear", "none", "easy", "cos")

#: Domain of AM-LFS's τ (the softmax probability) and of t (the target cosine).
TAU_DOMAIN = (0.0, 1.0)
T_DOMAIN = (-1.0, 1.0)


# ----------------------------------------------------------------------------- checks
def _number(name: str, value, allowed: str) -> float:
    if isinstance(value, (str, bytes)):  # "16" is text, not a number (float() would take it)
        raise ValueError(f"{name} must be a number in {allowed}; got the text {value!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(value)  # numpy scalars, 0-d tensors
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a number in {allowed}; got {value!r}") from None
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number in {allowed}; got {value!r}")
    return value


def check_nonnegative(name: str, value, high: float | None = None) -> float:
    """Validate 0 ≤ value (≤ high); return it as a float."""
    allowed = f"[0, {high:g}]" if high is not None else "[0, inf)"
    v = _number(name, value, allowed)
    if v < 0 or (high is not None and v > high):
        raise ValueError(f"{name} must lie in {allowed}; got {v:g}")
    return v


def check_positive(name: str, value) -> float:
    """Validate value > 0; return it as a float."""
    v = _number(name, value, "(0, inf)")
    if v <= 0:
        raise ValueError(f"{name} must be > 0 (allowed: (0, inf)); got {v:g}")
    return v


def check_angle(name: str, value) -> float:
    """Validate an angular margin in radians, 0 ≤ value ≤ π (degrees are rejected)."""
    v = _number(name, value, "[0, π] radians")
    if v < 0:
        raise ValueError(f"{name} must lie in [0, π] radians (a negative margin is not a "
                         f"margin); got {v:g}")
    if v > math.pi:
        raise ValueError(f"{name} is an angle in radians and must lie in [0, π] "
                         f"(got {v:g}; if that was degrees, {v:g}° = "
                         f"{math.radians(v):.4f} rad)")
    return v


def check_integer(name: str, value, low: int = 1) -> int:
    """Validate an integer ≥ low (integral floats such as 4.0 are accepted)."""
    allowed = f"an integer >= {low}"
    v = _number(name, value, allowed)
    if v != int(v) or v < low:
        raise ValueError(f"{name} must be {allowed}; got {value!r}")
    return int(v)


def check_fallback(value: str) -> str:
    if value not in FALLBACKS:
        raise ValueError(f"fallback must be one of {', '.join(FALLBACKS)}; got {value!r}")
    return value


# ------------------------------------------------------------------------ trigonometry
def _eps(t: Tensor) -> float:
    return torch.finfo(t.dtype).eps if t.is_floating_point() else 1e-7


def sin_from_cos(cos: Tensor) -> Tensor:
    """sin θ = sqrt(max(1 − cos² θ, eps)) for θ ∈ [0, π]; finite value and gradient."""
    c = cos.clamp(-1.0, 1.0)
    return (1.0 - c * c).clamp_min(_eps(c)).sqrt()


def angle_from_cos(cos: Tensor) -> Tensor:
    """θ = atan2(sin θ, cos θ) ∈ [0, π] — acos with a finite gradient at |cos θ| = 1."""
    c = cos.clamp(-1.0, 1.0)
    return torch.atan2(sin_from_cos(c), c)


# -------------------------------------------------------------------- target functions
def no_margin(cos: Tensor) -> Tensor:
    """f(θ) = cos θ (softmax, NormFace, L2-softmax): no margin, A = 1."""
    return cos


def multiplicative_angular(cos: Tensor, m: int, lam: float = 0.0) -> Tensor:
    """L-Softmax / SphereFace ψ(θ) = (−1)^k cos(mθ) − 2k for θ ∈ [kπ/m, (k+1)π/m].

    m is an integer ≥ 1 (m = 1 gives cos θ); k ∈ {0, …, m−1}. ψ is continuous and
    decreasing in θ over [0, π], from ψ(0) = 1 to ψ(π) = 1 − 2m. cos(mθ) is the
    Chebyshev polynomial T_m(cos θ), so the gradient is a polynomial in cos θ (finite
    everywhere); k is piecewise constant (no gradient).

    With the annealing weight λ ≥ 0 of the papers the target is
    f(θ) = (λ·cos θ + ψ(θ)) / (1 + λ).
    """
    m = check_integer("m", m, 1)
    lam = check_nonnegative("lambda", lam)
    c = cos.clamp(-1.0, 1.0)
    t_prev, t_cur = torch.ones_like(c), c
    for _ in range(m - 1):  # T_{n+1} = 2x·T_n − T_{n−1}
        t_prev, t_cur = t_cur, 2.0 * c * t_cur - t_prev
    if m == 1:
        psi = t_cur
    else:
        with torch.no_grad():
            k = torch.floor(torch.acos(c.detach()) * (m / math.pi)).clamp_(0, m - 1)
            sign = 1.0 - 2.0 * torch.remainder(k, 2.0)
        psi = sign * t_cur - 2.0 * k
    if lam == 0.0:
        return psi
    return (lam * c + psi) / (1.0 + lam)


def additive_cosine(cos: Tensor, m: float) -> Tensor:
    """CosFace / AM-Softmax f(θ) = cos θ − m, m ≥ 0 a cosine offset (not an angle)."""
    m = check_nonnegative("m", m, 2.0)
    return cos - m


def additive_angular(cos: Tensor, m: float, fallback: str = "linear") -> Tensor:
    """ArcFace f(θ) = cos(θ + m) = cos θ·cos m − sin θ·sin m, m ∈ [0, π] radians.

    Past θ > π − m, cos(θ + m) would increase again; ``fallback`` chooses the value there:

    * ``"linear"`` (default, monotone): cos θ − m·sin m, as in insightface's mxnet code,
      face.evoLVe and pytorch-metric-learning (here the offset becomes 1 − cos m for
      m > 2.33 rad, where m·sin m would no longer keep f monotone);
    * ``"none"``: cos(θ + m) everywhere (arcface_torch; not monotone);
    * ``"easy"``: the margin only where cos θ > 0, else cos θ (the LFS code's easy margin);
    * ``"cos"``: plain cos θ past the threshold (FaceX-Zoo; not monotone).

    Equal to :func:`combined_margin` (cos, 1, m, 0).
    """
    m = check_angle("m", m)
    return combined_margin(cos, 1.0, m, 0.0, fallback=fallback)


def combined_margin(cos: Tensor, m1: float, m2: float, m3: float,
                    fallback: str = "linear") -> Tensor:
    """insightface's combined margin f(θ) = cos(m1·θ + m2) − m3.

    m1 > 0 multiplies the angle, m2 ∈ [0, π] radians is added to it, m3 ≥ 0 is
    subtracted from the cosine. The main branch holds for θ ≤ θ_b = (π − m2)/m1 (where
    m1·θ + m2 reaches π); past θ_b (only when θ_b < π) ``fallback`` decides, with
    u = π − θ_b:

    * ``"linear"`` (default): cos θ − m3 − max(u·sin u, 1 − cos u) — insightface's
      offset u·sin u (= m·sin m for ArcFace), raised where needed so that the fallback
      never exceeds the value −1 − m3 reached at θ_b: f stays monotone in θ;
    * ``"none"``: cos(m1·θ + m2) − m3 everywhere; ``"easy"``: the margin only where
      cos θ > 0, else cos θ; ``"cos"``: cos θ − m3 past θ_b.

    m1 = 1 uses cos θ·cos m2 − sin θ·sin m2; otherwise θ = atan2(sin θ, cos θ).

    A margin (f ≤ cos θ on all of [0, π], i.e. a modulating factor A ≥ 1) for m1 ≥ 1,
    m2, m3 ≥ 0 with the "linear" or "cos" fallback. m1 < 1 can give f > cos θ at large θ
    (m1 = 0.5, m2 = m3 = 0: cos(θ/2) > cos θ), i.e. A < 1: the target made easier.
    """
    m1 = check_positive("m1", m1)
    m2 = check_angle("m2", m2)
    m3 = check_nonnegative("m3", m3, 2.0)
    fallback = check_fallback(fallback)
    c = cos.clamp(-1.0, 1.0)
    if m1 == 1.0:
        target = c * math.cos(m2) - sin_from_cos(c) * math.sin(m2) if m2 != 0.0 else c
    else:
        target = torch.cos(m1 * angle_from_cos(c) + m2)
    if m3 != 0.0:
        target = target - m3
    if fallback == "none":
        return target
    if fallback == "easy":
        return torch.where(c > 0, target, c)
    theta_b = (math.pi - m2) / m1
    if theta_b >= math.pi:
        return target
    inside = c >= math.cos(theta_b)
    if fallback == "cos":
        return torch.where(inside, target, c - m3)
    u = math.pi - theta_b
    offset = max(u * math.sin(u), 1.0 - math.cos(u))
    return torch.where(inside, target, c - (m3 + offset))


# -------------------------------------------------- values with their slopes d f / d cos
# The fused cross entropy of lfsearch.losses needs f and f' = df/dcos θ on N values;
# these compute both without autograd. Each slope is the derivative of the value function
# above (clamps included: sin θ is constant where 1 − cos² θ < eps), cos θ ∈ [−1, 1].

def _sin_and_slope(c: Tensor) -> tuple[Tensor, Tensor]:
    eps = _eps(c)
    one_minus = 1.0 - c * c
    sin = one_minus.clamp_min(eps).sqrt()
    return sin, torch.where(one_minus > eps, -c / sin, torch.zeros_like(c))


def multiplicative_angular_and_slope(cos: Tensor, m: int, lam: float = 0.0
                                     ) -> tuple[Tensor, Tensor]:
    """(f, df/dcos θ) of :func:`multiplicative_angular`: d cos(mθ)/d cos θ = m·U_{m−1}(cos θ)
    (Chebyshev polynomial of the second kind), so ψ' = (−1)^k·m·U_{m−1}, and with λ
    f' = (λ + ψ') / (1 + λ)."""
    m = check_integer("m", m, 1)
    lam = check_nonnegative("lambda", lam)
    c = cos.clamp(-1.0, 1.0)
    t_prev, t_cur = torch.ones_like(c), c  # T_0, T_1
    u_prev, u_cur = torch.zeros_like(c), torch.ones_like(c)  # U_{-1}, U_0
    for _ in range(m - 1):
        t_prev, t_cur = t_cur, 2.0 * c * t_cur - t_prev
        u_prev, u_cur = u_cur, 2.0 * c * u_cur - u_prev
    if m == 1:
        psi, slope = c, torch.ones_like(c)
    else:
        k = torch.floor(torch.acos(c) * (m / math.pi)).clamp_(0, m - 1)
        sign = 1.0 - 2.0 * torch.remainder(k, 2.0)
        psi = sign * t_cur - 2.0 * k
        slope = sign * m * u_cur
    if lam == 0.0:
        return psi, slope
    return (lam * c + psi) / (1.0 + lam), (lam + slope) / (1.0 + lam)


def combined_margin_and_slope(cos: Tensor, m1: float, m2: float, m3: float,
                              fallback: str = "linear") -> tuple[Tensor, Tensor]:
    """(f, df/dcos θ) of :func:`combined_margin` (and of ArcFace with m1 = 1, m3 = 0):
    m1 = 1: f' = cos m2 − sin m2·d sin θ/d cos θ; otherwise
    f' = −m1·sin(m1θ + m2)·dθ/dcos θ with θ = atan2(sin θ, cos θ); fallback branches
    have slope 1."""
    m1 = check_positive("m1", m1)
    m2 = check_angle("m2", m2)
    m3 = check_nonnegative("m3", m3, 2.0)
    fallback = check_fallback(fallback)
    c = cos.clamp(-1.0, 1.0)
    sin, dsin = _sin_and_slope(c)
    if m1 == 1.0:
        value = c * math.cos(m2) - sin * math.sin(m2) - m3
        slope = math.cos(m2) - dsin * math.sin(m2)
    else:
        theta = torch.atan2(sin, c)
        dtheta = (c * dsin - sin) / (c * c + sin * sin)
        arg = m1 * theta + m2
        value = torch.cos(arg) - m3
        slope = -m1 * torch.sin(arg) * dtheta
    if fallback == "none":
        return value, slope
    one = torch.ones_like(c)
    if fallback == "easy":
        keep = c > 0
        return torch.where(keep, value, c), torch.where(keep, slope, one)
    theta_b = (math.pi - m2) / m1
    if theta_b >= math.pi:
        return value, slope
    inside = c >= math.cos(theta_b)
    if fallback == "cos":
        return torch.where(inside, value, c - m3), torch.where(inside, slope, one)
    u = math.pi - theta_b
    offset = max(u * math.sin(u), 1.0 - math.cos(u))
    return torch.where(inside, value, c - (m3 + offset)), torch.where(inside, slope, one)


def additive_angular_and_slope(cos: Tensor, m: float, fallback: str = "linear"
                               ) -> tuple[Tensor, Tensor]:
    """(f, df/dcos θ) of :func:`additive_angular`."""
    m = check_angle("m", m)
    return combined_margin_and_slope(cos, 1.0, m, 0.0, fallback)


def t_transform_and_slope(cos: Tensor, slopes, intercepts) -> tuple[Tensor, Tensor]:
    """(t(cos θ), dt/dcos θ = slope_i) of :func:`t_transform`."""
    c = cos.clamp(-1.0, 1.0)
    a = _coefficients(slopes, c, "slopes")
    b = _coefficients(intercepts, c, "intercepts")
    if a.numel() != b.numel():
        raise ValueError(f"slopes and intercepts must have the same length (one per "
                         f"interval); got {a.numel()} and {b.numel()}")
    i = bin_index(c, a.numel(), T_DOMAIN)
    return a[i] * c + b[i], a[i]


# ------------------------------------------------------------------ modulating factor
def log_modulating_factor(cos_y: Tensor, f_cos_y: Tensor, s) -> Tensor:
    """log A = s·(cos θ_y − f(θ_y)): how much a margin lowers the target logit.

    s is the scale that multiplies the cosine in the logit: a number > 0, or a tensor
    broadcastable to cos_y (e.g. ‖x‖ for SphereFace, ‖W_y‖·‖x‖ for L-Softmax).
    """
    if not isinstance(s, Tensor):
        s = check_positive("s", s)
    return s * (cos_y - f_cos_y)


def modulating_factor(cos_y: Tensor, f_cos_y: Tensor, s) -> Tensor:
    """A = exp(s·(cos θ_y − f(θ_y))) ≥ 1 for any margin f ≤ cos at scale s > 0.

    With it the margin-based probability is p_m = h(A, p) (:func:`modulated_probability`).
    """
    return torch.exp(log_modulating_factor(cos_y, f_cos_y, s))


def _check_a(a) -> None:
    if isinstance(a, Tensor):
        if a.numel() and bool(torch.any(~(a >= 1.0))):
            bad = a[~(a >= 1.0)].flatten()[0].item()
            raise ValueError(f"a (the modulating factor A) must be >= 1 (allowed: [1, inf)); "
                             f"got {bad:g}")
    else:
        v = _number("a", a, "[1, inf)")
        if v < 1.0:
            raise ValueError(f"a (the modulating factor A) must be >= 1 (allowed: [1, inf)); "
                             f"got {v:g} (the paper's alpha = 1 - A <= 0: use a_from_alpha)")


def modulated_probability(a, p):
    """h(A, p) = p / (p + A·(1 − p)) with A ≥ 1, so h ≤ p, and h = p at A = 1.

    Paper form (Search-Softmax): p / (α·p + 1 − α) with α = 1 − A ≤ 0.
    For a loss use :func:`modulated_cross_entropy` (log space) instead.
    """
    _check_a(a)
    return p / (p + a * (1.0 - p))


def modulated_cross_entropy(logits: Tensor, labels: Tensor, log_a, reduction: str = "mean"
                            ) -> Tensor:
    """−log h(A, p) = cross entropy of the logits with the target logit lowered by log A.

    p = softmax(logits)_y; log_a ≥ 0 is a number or an (N,) tensor. Exact identity:
    exp(z_y − log A) / (Σ_{j≠y} exp z_j + exp(z_y − log A)) = h(A, p). Out of place.
    """
    rows = torch.arange(logits.shape[0], device=logits.device)
    if not isinstance(log_a, Tensor):
        log_a = torch.full((logits.shape[0],), float(log_a), dtype=logits.dtype,
                           device=logits.device)
    shifted = logits.index_put((rows, labels), -log_a.to(logits.dtype), accumulate=True)
    return F.cross_entropy(shifted, labels, reduction=reduction)


def alpha_from_a(a):
    """Search-Softmax paper's α = 1 − A (≤ 0) from the public A (≥ 1)."""
    return 1.0 - a


def a_from_alpha(alpha):
    """Public A = 1 − α from the paper's α ≤ 0."""
    return 1.0 - alpha


def a_from_lfs_code_alpha(alpha, s: float, per_bin: bool = False):
    """A from the α searched by the released LFS code: A = 1 − α·exp(s/3)
    (one global α) or 1 − α·exp(s/2) (per-probability-bin α), for α ≤ 0."""
    s = check_positive("s", s)
    return 1.0 - alpha * math.exp(s / (2.0 if per_bin else 3.0))


# ------------------------------------------------------------ AM-LFS piecewise linear
def _coefficients(values, like: Tensor, name: str) -> Tensor:
    t = torch.as_tensor(values, dtype=like.dtype if like.is_floating_point() else None,
                        device=like.device)
    if t.dim() != 1 or t.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence (one value per interval); "
                         f"got shape {tuple(t.shape)}")
    return t


def bin_index(x: Tensor, bins: int, domain: tuple[float, float] = TAU_DOMAIN) -> Tensor:
    """Interval index i = clamp(floor((x − lo)/(hi − lo)·K), 0, K − 1) (no gradient)."""
    bins = check_integer("bins", bins, 1)
    lo, hi = domain
    with torch.no_grad():
        return torch.floor((x.detach() - lo) * (bins / (hi - lo))).clamp_(0, bins - 1).long()


def piecewise_linear(x: Tensor, slopes: Sequence[float] | Tensor,
                     intercepts: Sequence[float] | Tensor,
                     domain: tuple[float, float] = TAU_DOMAIN) -> Tensor:
    """y = slope_i·x + intercept_i for x in the i-th of K equal intervals of ``domain``.

    Values outside the domain use the first or last interval's line.
    """
    a = _coefficients(slopes, x, "slopes")
    b = _coefficients(intercepts, x, "intercepts")
    if a.numel() != b.numel():
        raise ValueError(f"slopes and intercepts must have the same length (one per "
                         f"interval); got {a.numel()} and {b.numel()}")
    i = bin_index(x, a.numel(), domain)
    return a[i] * x + b[i]


def tau(p: Tensor, slopes, intercepts) -> Tensor:
    """AM-LFS τ(p) = slope_i·p + intercept_i, p ∈ [0, 1] split into K equal intervals."""
    return piecewise_linear(p, slopes, intercepts, TAU_DOMAIN)


def t_transform(cos: Tensor, slopes, intercepts) -> Tensor:
    """AM-LFS t(cos θ_y) = slope_i·cos θ_y + intercept_i over K equal intervals of [−1, 1]."""
    return piecewise_linear(cos.clamp(-1.0, 1.0), slopes, intercepts, T_DOMAIN)


def log_tau(log_p: Tensor, slopes, intercepts) -> Tensor:
    """log τ(p) from log p, the AM-LFS loss being −log τ(p).

    Where the interval's intercept is 0 and slope > 0 this is log slope + log p exactly
    (no underflow for tiny p); elsewhere log(max(τ(p), tiny)) — τ is unconstrained, and
    where τ(p) ≤ 0 the loss is capped at −log(tiny) with zero gradient.
    """
    a = _coefficients(slopes, log_p, "slopes")
    b = _coefficients(intercepts, log_p, "intercepts")
    p = log_p.exp()
    i = bin_index(p, a.numel(), TAU_DOMAIN)
    ai, bi = a[i], b[i]
    tiny = torch.finfo(log_p.dtype).tiny
    exact = (bi == 0) & (ai > 0)
    general = torch.log((ai * p + bi).clamp_min(tiny))
    return torch.where(exact, torch.log(ai.clamp_min(tiny)) + log_p, general)
