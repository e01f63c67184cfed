"""The losses as transforms of the true-class probability: p_m = h(A, p) = p / (p + A(1 − p))
for the margins and the modulated family, τ(p) for AM-LFS, and log A = log(p(1 − p_m) /
(p_m(1 − p))); the curves of a run's discovered losses against the hand-crafted members.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lfsearch import losses as losses_mod
from lfsearch.losses import margins
from lfsearch.report import member_figures, plotting
from lfsearch.report.plotting import P_GRID, _figure, _logit_axis
from lfsearch.report.runs import Run
from lfsearch.search import checkpoint as checkpoint_mod
from lfsearch.search import config as config_mod

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------ loss curves
@dataclass
class Curve:
    """A loss as a transform of p: p_m(p) on a grid, with its label and style."""

    label: str
    p: np.ndarray
    pm: np.ndarray
    color: Any
    style: str = "-"
    alpha: float = 1.0
    width: float = 1.6
    tau: bool = False  # AM-LFS τ (may exceed p)
    assumed: bool = False  # drawn with the non-target-cosines-at-0 assumption
    band: tuple | None = None  # p_m at the 16th and 84th percentile of a per-sample margin




def _num_classes(run: Run) -> int:
    ckpt = run.dir / "checkpoint.pt"
    if ckpt.is_file():
        try:
            state = checkpoint_mod.read(ckpt, map_location="cpu")["state"]["loss"]
            extra = state.get("_extra_state")
            if isinstance(extra, dict) and "num_classes" in extra:  # sub-centres: C·K rows
                return int(extra["num_classes"])
            if "weight" in state:
                return int(state["weight"].shape[0])
        except checkpoint_mod.UnsafeCheckpoint:
            raise  # refused in one line, never loaded
        except Exception as exc:  # a damaged checkpoint only costs the exact class count
            log.warning("%s: could not read the class count (%s); assuming 10", ckpt, exc)
    return 10


def _margin_log_a(loss, p: np.ndarray, num_classes: int, target=None) -> np.ndarray | None:
    """log A(p) = s·(cos θ − f(θ)) of a margin member, with cos θ from p under the assumption
    that the non-target cosines are 0: cos θ = log(p (C − 1) / (1 − p)) / s, clipped to
    [−1, 1]. None when the member has no fixed scale s or no target function. ``target``:
    another f than ``loss.target`` (a percentile of a per-sample margin)."""
    import torch

    s = getattr(loss, "s", None)
    if s is None or not hasattr(loss, "target"):
        return None
    s = float(s)
    cos = np.clip(np.log(p * (num_classes - 1) / (1 - p)) / s, -1.0, 1.0)
    with torch.no_grad():
        f = (target or loss.target)(torch.as_tensor(cos, dtype=torch.float64)).numpy()
    return s * (cos - f)


def loss_curves(run: Run, color, *, label: str | None = None, alpha: float = 1.0,
                style: str = "-", num_classes: int | None = None) -> list[Curve]:
    """The run's final loss as p_m(p): h(A, p) for margins and the modulated family, τ(p) for
    AM-LFS (a Curve with tau=True). Empty when the member cannot be drawn against p (softmax
    without a fixed scale is drawn as the identity p_m = p)."""

    params = run.final_params()
    label = run.method if label is None else label
    p = P_GRID
    name = run.loss_name
    if name in ("softmax", "weighted_softmax", "normface", "l2_softmax", "adacos"):
        return [Curve(label, p, p.copy(), color, style, alpha)]
    if name == "modulated":  # A = a_i, or exp(s·m_i) in the margin form, per p-bin
        head = losses_mod.build(name, embedding_size=4, num_classes=2,
                            **config_mod.loss_arguments(run.config))
        if params:
            head.set_params(**params)
        values = np.array(head.modulating_factors())
        a = values[np.clip((p * len(values)).astype(int), 0, len(values) - 1)]
        return [Curve(label, p, p / (p + a * (1 - p)), color, style, alpha)]
    if name == "am_lfs":
        bins = int(run.config["loss"].get("bins", 6))
        slopes = [params.get(f"tau_slope_{i}", 1.0) for i in range(bins)]
        intercepts = [params.get(f"tau_intercept_{i}", 0.0) for i in range(bins)]
        import torch

        tau = margins.tau(torch.as_tensor(p, dtype=torch.float64), slopes, intercepts).numpy()
        return [Curve(label, p, tau, color, style, alpha, tau=True)]
    try:
        loss = losses_mod.build(name, embedding_size=4, num_classes=max(num_classes or 2, 2),
                            **config_mod.loss_arguments(run.config))
        if params:
            loss.set_params(**params)
        member_figures.load_running_state(loss, run)  # final running statistics
    except (ValueError, TypeError) as exc:
        log.info("loss %s cannot be drawn: %s", name, exc)
        return []
    C = num_classes or _num_classes(run)
    log_a = _margin_log_a(loss, p, C)
    if log_a is None:
        return []
    a = np.exp(np.minimum(log_a, 700))
    band = member_figures.spread_curves(
        loss, p, lambda loss, p, target: _margin_log_a(loss, p, C, target))
    return [Curve(label, p, p / (p + a * (1 - p)), color, style, alpha,
                  assumed=bool(np.ptp(log_a) > 1e-9), band=band)]


LOG_A_MAX = 15.0  # the effective log A axis stops here (τ(p) ≤ 0 means log A = ∞)


def _effective_log_a(p: np.ndarray, pm: np.ndarray) -> np.ndarray:
    """log A = log(p (1 − p_m) / (p_m (1 − p))): the modulating factor giving p_m = h(A, p)."""
    tiny = 1e-300
    pm = np.clip(pm, tiny, 1 - 1e-15)
    return np.log(p) + np.log1p(-pm) - np.log(pm) - np.log1p(-p)


def default_references(num_classes: int) -> list[Run]:
    """Hand-crafted members at the defaults of search_spaces/ (cosface, arcface), as Runs
    without a folder, for reports that hold no fixed run of their own."""
    out = []
    for name in ("cosface", "arcface"):
        try:
            cfg = config_mod.load(name)
        except (FileNotFoundError, ValueError):
            continue
        out.append(Run(Path("."), cfg, {}, None, pd.DataFrame(), pd.DataFrame(),
                       config_mod.param_specs(cfg)))
    return out


def _describe_loss(run: Run) -> str:
    params = run.final_params()
    s = run.config["loss"].get("s")
    bits = [f"s={s:g}"] if isinstance(s, (int, float)) else []
    if run.loss_name == "am_lfs":
        bits.append(f"K={run.config['loss'].get('bins', 6)}")
    else:
        bits += [f"{k}={v:.3g}" for k, v in list(params.items())[:4]]
    return ", ".join(bits)


def plot_losses(found: list[Run], references: list[Run], path: Path, title: str,
                colors: dict[str, Any], num_classes: int) -> Path | None:
    """Left: p_m against p for the hand-crafted members (dashed), the losses found (solid,
    one line per seed) and softmax (p_m = p); where an AM-LFS τ(p) exceeds p is shaded red.
    Right: the effective log A against p (log A < 0 exactly where τ(p) > p)."""
    curves: list[Curve] = []
    identity = Curve("softmax (p_m = p, A = 1)", P_GRID, P_GRID.copy(), "black", ":", 1.0, 1.2)
    for ref in references:
        if ref.loss_name in ("softmax", "normface", "l2_softmax", "weighted_softmax", "adacos"):
            continue
        curves += loss_curves(ref, colors.get(ref.method, "grey"), style="--",
                              label=f"{ref.method} ({_describe_loss(ref)})",
                              num_classes=num_classes)
    seen: set[str] = set()
    for run in found:
        n_same = sum(r.method == run.method for r in found)
        label = run.method if n_same == 1 else f"{run.method} found (final, per seed)"
        if n_same == 1:
            label = f"{run.method} found ({_describe_loss(run)})"
        curves += loss_curves(run, colors.get(run.method, "tab:blue"),
                              label="" if label in seen else label,
                              alpha=0.9 if n_same == 1 else 0.7, num_classes=num_classes)
        seen.add(label)
    if not curves:
        return None
    has_tau = any(c.tau for c in curves)
    fig = _figure(11.5, 4.6)
    ax1, ax2 = fig.subplots(1, 2)
    for ax in (ax1,):
        ax.plot(identity.p, identity.pm, ls=identity.style, color="black", lw=1.4,
                label=identity.label, zorder=5)  # on top: a search may find A = 1
    ax2.axhline(0.0, color="black", ls=":", lw=1.4, zorder=5)
    labelled: set[str] = set()
    exceed_labelled = False
    for c in curves:
        lab = c.label if c.label and c.label not in labelled else None
        labelled.add(c.label)
        ax1.plot(c.p, c.pm, ls=c.style, color=c.color, alpha=c.alpha, lw=c.width, label=lab)
        # τ(p) ≤ 0 would give log A → ∞ (the loss is capped there): clip for the axis
        ax2.plot(c.p, np.clip(_effective_log_a(c.p, c.pm), -6, LOG_A_MAX), ls=c.style,
                 color=c.color, alpha=c.alpha, lw=c.width)
        if c.band is not None:  # spread of a per-sample margin (16th..84th percentile)
            lo, hi = c.band
            ax1.fill_between(c.p, lo, hi, color=c.color, alpha=0.15, lw=0)
            ax2.fill_between(c.p, np.clip(_effective_log_a(c.p, lo), -6, LOG_A_MAX),
                             np.clip(_effective_log_a(c.p, hi), -6, LOG_A_MAX),
                             color=c.color, alpha=0.15, lw=0)
        if c.tau:
            over = c.pm > c.p + 1e-12
            if over.any():
                ax1.fill_between(c.p, c.p, c.pm, where=over, color="red", alpha=0.25,
                                 label=None if exceed_labelled else "τ(p) > p (no margin)")
                exceed_labelled = True
    if has_tau:
        ax2.axhspan(-6, 0, color="red", alpha=0.08)
        ax2.text(0.02, -0.5, "log A < 0: τ(p) > p", color="darkred", fontsize=8, va="top")
    for ax in (ax1, ax2):
        _logit_axis(ax)
        ax.set_xlabel("p: softmax probability of the true class (logit scale)")
        ax.grid(alpha=0.3)
    ax1.set_ylabel("p_m = h(A, p), or τ(p) for AM-LFS")
    ax1.set_ylim(-0.02, 1.02)
    ax1.set_title("transformed probability (loss = −log p_m)", fontsize=10)
    ax2.set_ylabel(f"log A (target logit lowered by; clipped at {LOG_A_MAX:g})")
    ax2.set_title("effective modulating factor log A = log[p(1−p_m) / (p_m(1−p))]", fontsize=10)
    fig.legend(*ax1.get_legend_handles_labels(), loc="outside lower center",
               ncol=min(3, len(ax1.get_legend_handles_labels()[1])), fontsize=8)
    if any(c.assumed for c in curves):
        title += (f"\n(angular margins drawn assuming every non-target cos θ = 0, "
                  f"C = {num_classes} classes: p = e^(s cos θ) / (e^(s cos θ) + C − 1))")
    fig.suptitle(title, fontsize=10)
    return plotting._save(fig, path)
