"""The loss registry: `build(name, num_classes=C, embedding_size=D, **params)`, the member names
(`available`, `MEMBERS`), their descriptions, and the table of what each member's modulating
factor A is.
"""

from __future__ import annotations

import inspect
import textwrap
from typing import Any

import torch

from lfsearch.losses.adaptive_margins import (
    AdaCos,
    AdaFace,
    ElasticFaceArc,
    ElasticFaceArcPlus,
    ElasticFaceCos,
    ElasticFaceCosPlus,
    MagFace,
)
from lfsearch.losses.am_lfs import AMLFS
from lfsearch.losses.base import Loss
from lfsearch.losses.fixed_margins import (
    ArcFace,
    CombinedMargin,
    CosFace,
    L2Softmax,
    LSoftmax,
    NormFace,
    Softmax,
    SphereFace,
    WeightedSoftmax,
)
from lfsearch.losses.joint import CenterLoss, ContrastiveLoss, Joint, RangeLoss, TripletLoss
from lfsearch.losses.modulated import Modulated
from lfsearch.losses.negative_reweighting import CurricularFace, MVSoftmax
from lfsearch.losses.partial_fc import PartialFC
from lfsearch.losses.subcenters import SubCenterArcFace

# ---------------------------------------------------------------------------- registry
_REGISTRY: dict[str, type[Loss]] = {
    cls.name: cls for cls in (
        Softmax, WeightedSoftmax, LSoftmax, SphereFace, L2Softmax, NormFace, CosFace,
        ArcFace, CombinedMargin, Modulated, AMLFS,
        CenterLoss, RangeLoss, ContrastiveLoss, TripletLoss)
}
#: The members published after ArcFace (adaptive margins, negative re-weighting, sub-centres).
MEMBERS = (AdaFace, MagFace, ElasticFaceArc, ElasticFaceCos, ElasticFaceArcPlus,
           ElasticFaceCosPlus, CurricularFace, MVSoftmax, SubCenterArcFace, AdaCos)

_REGISTRY.update({cls.name: cls for cls in MEMBERS})
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


def build(name: str, *sizes, embedding_size: int | None = None,
          num_classes: int | None = None, aux: str | None = None, aux_weight: float = 0.01,
          aux_params: dict | None = None, generator: torch.Generator | None = None,
          partial_fc: float | None = None, **params) -> Loss:
    """Build the loss ``name`` (see :func:`available`) with keyword arguments only:
    ``build("arcface", num_classes=C, embedding_size=D, m=0.5)``.

    ``aux`` adds a joint-supervision term (one of :data:`AUX_NAMES`) to a softmax-family
    member: L = L_name + aux_weight·L_aux, the aux term built with ``aux_params``.
    ``generator`` seeds the initial class weights / centers. Sizes given by position are
    refused (pytorch-metric-learning's order is (num_classes, embedding_size); ours was the
    reverse, so names leave no doubt). ``partial_fc = r`` trains the head on the batch's
    classes plus a share r of the others (:class:`lfsearch.losses.partial_fc.PartialFC`;
    r = 1 is the full head).
    """
    if sizes:
        given = ", ".join(repr(v) for v in (name, *sizes))
        raise TypeError(f"build({given}): the sizes are keyword-only; write "
                        f"build({name!r}, num_classes=C, embedding_size=D)")
    cls = _resolve(name)
    loss = _construct(cls, embedding_size, num_classes, params, generator)
    if partial_fc is not None:
        if aux is not None:
            raise ValueError("partial_fc does not combine with aux terms (the aux term's "
                             "class centres are not sampled); drop one of them")
        return PartialFC(loss, partial_fc, generator=generator)
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
        "Joint supervision: build(NAME, num_classes=C, embedding_size=D, aux="
        + "|".join(AUX_NAMES)
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



# ---------------------------------------------------------------------- the unified view
def modulation_table(cos_y: float = 0.5, num_classes: int = 10) -> str:
    """What each member beyond the fixed margins changes, at its defaults: for the target-only members the
    effective log A = s·(cos θ_y − f_i(θ_y)) at cos θ_y = ``cos_y`` with its spread over a
    batch (16th / 50th / 84th percentile of the per-sample margin); for the others, the
    change they make instead."""
    pass

    c = torch.tensor([cos_y], dtype=torch.float64)
    intro = (f"Members beyond the fixed margins (docs/loss_members.md). Effective modulating factor "
             f"log A = s (cos theta_y - f(theta_y)) at cos theta_y = {cos_y:g}, defaults; "
             f"spread = 16th / 50th / 84th percentile of the per-sample margin over a batch. "
             f"Members that change negatives, class weights or the scale: the change.")
    lines = textwrap.wrap(intro, 100) + [""]
    header = f"{'member':<22}{'changes':<15}{'log A p16':>10}{'p50':>8}{'p84':>8}  varies with"
    lines += [header, "-" * len(header)]
    for cls in MEMBERS:
        loss = build(cls.name, embedding_size=4, num_classes=num_classes).double()
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
