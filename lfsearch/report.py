"""Figures and a self-contained report (report.md, report.html) for a run or a compare folder.

Figures (matplotlib, drawn on Agg figures without pyplot, written to DIR/figures/*.png):

- rewards      validation reward of every candidate per epoch, the chosen one marked;
- trajectory   the controller's parameters per epoch: the policy mean μ with μ ± σ (σ is
               kept in the unit space of the (log-)range, mapped back to parameter units),
               the sampled candidates and the chosen one; for random search the bounds;
- losses       the losses found against the hand-crafted members, as transforms of the
               softmax probability p of the true class: p_m = h(A, p) = p / (p + A(1 − p))
               for margins and the modulated family, τ(p) for AM-LFS, with the region where
               τ(p) > p marked (there the "margin" favours the true class: no margin at all);
               and the effective modulating factor log A = log(p(1 − p_m) / (p_m(1 − p))),
               which is s·(cos θ − f(θ)) for a margin and negative exactly where τ(p) > p;
               a per-sample margin (AdaFace, MagFace, ElasticFace) is its median curve with
               its 16th–84th percentile band shaded (lfsearch/figures_recent.py);
- changes      hard-negative transforms (CurricularFace, MV-Softmax) and Sub-center
               ArcFace's class weights, for the members outside the target-logit family;
- roc          test ROC (TAR against FAR, linear and log FAR) of open-set benchmarks,
               recomputed from each run's checkpoint.pt and cached in the run's roc.csv;
- comparison   bar chart of the test metric per method (mean, 95% CI error bars, seeds).

For ArcFace and other angular margins A depends on θ, not on p alone. To draw them against p
the curves assume every non-target cosine is 0, so p = e^{s cos θ} / (e^{s cos θ} + C − 1)
with C training classes (stated in the figure). CosFace and the modulated family need no
such assumption (A is a constant, or a constant per probability bin).

The HTML embeds every image as base64, so one file can be mailed or archived.
"""

from __future__ import annotations

import base64
import copy
import html
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from lfsearch import compare as compare_mod
from lfsearch import config as config_mod
from lfsearch import figures_recent

log = logging.getLogger(__name__)

DPI = 110
ROC_FILE = "roc.csv"


# ------------------------------------------------------------------------------------ runs
@dataclass
class Run:
    """What a run folder holds, read once."""

    dir: Path
    config: dict[str, Any]
    manifest: dict[str, Any]
    results: dict[str, Any] | None
    epochs: pd.DataFrame
    controller: pd.DataFrame
    specs: list = field(default_factory=list)

    @property
    def method(self) -> str:
        return self.config["method"]["name"]

    @property
    def seed(self) -> int:
        return int(self.config["run"]["seed"])

    @property
    def benchmark(self) -> str:
        return self.config["training"]["benchmark"]

    @property
    def kind(self) -> str:
        return self.config["controller"]["kind"]

    @property
    def loss_name(self) -> str:
        return self.config["loss"]["name"]

    @property
    def searched(self) -> bool:
        return self.kind != "fixed" and bool(self.specs)

    @property
    def status(self) -> str:
        return compare_mod.run_state(self.dir)

    def final_params(self) -> dict[str, float]:
        """The parameters of the last chosen candidate (the loss the final model trained with)."""
        chosen = (self.results or {}).get("chosen_params") or []
        if chosen:
            return {k: float(v) for k, v in chosen[-1].items()}
        if not self.epochs.empty and "chosen" in self.epochs:
            rows = self.epochs[self.epochs["chosen"].astype(bool)]
            if not rows.empty:
                return {s.name: float(rows.iloc[-1][s.name]) for s in self.specs}
        return {s.name: s.init for s in self.specs}


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file() or path.stat().st_size == 0:
        return pd.DataFrame()
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def load_run(folder: str | os.PathLike) -> Run:
    """Read a run folder (config.toml, manifest.json, epochs.csv, controller.csv, results.json)."""
    folder = Path(folder)
    if not (folder / "config.toml").is_file():
        raise FileNotFoundError(f"{folder} is not a run folder: it has no config.toml")
    cfg = config_mod.load(folder / "config.toml")
    manifest = json.loads((folder / "manifest.json").read_text()) \
        if (folder / "manifest.json").is_file() else {}
    results = json.loads((folder / "results.json").read_text()) \
        if (folder / "results.json").is_file() else None
    epochs = _read_csv(folder / "epochs.csv")
    if "chosen" in epochs:
        epochs["chosen"] = epochs["chosen"].astype(str).str.lower().isin(["true", "1"])
    return Run(folder, cfg, manifest, results, epochs, _read_csv(folder / "controller.csv"),
               config_mod.param_specs(cfg))


# ----------------------------------------------------------------------------- plot helpers
def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _fit_titles(fig, max_rounds: int = 6) -> None:
    """Wrap (textwrap) every title that does not fit: the suptitle within 96% of the figure's
    width, an axes title within its axes (10% wider at most) and inside the figure. Widths are
    measured on the drawn figure, so a benchmark spec of any length is wrapped, never clipped.
    Lines break at spaces and after the spec's separators / ? & (inside a long word if needed)."""
    import re
    import textwrap

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    titles = [t for t in [getattr(fig, "_suptitle", None)] +
              [ax.title for ax in fig.axes if ax.get_visible()] if t is not None and t.get_text()]
    original = {id(t): t.get_text().split("\n") for t in titles}
    chars = {id(t): max(map(len, original[id(t)])) for t in titles}
    wrapper = textwrap.TextWrapper(break_on_hyphens=True)  # its chunks: wordsep_re below
    wrapper.wordsep_re = re.compile(r"(\s+|[^\s/?&]*[/?&]|[^\s/?&]+)")
    for _ in range(max_rounds):
        fig.draw_without_rendering()  # runs the constrained layout with the current titles
        renderer = canvas.get_renderer()
        width = fig.bbox.width
        changed = False
        for t in titles:
            box = t.get_window_extent(renderer)
            if t is getattr(fig, "_suptitle", None):
                allowed = 0.96 * width
            else:
                ax_box = t.axes.bbox
                center = (ax_box.x0 + ax_box.x1) / 2
                allowed = min(1.1 * ax_box.width, 2 * min(center, width - center) - 4)
            if box.width <= allowed:
                continue
            longest = max(map(len, t.get_text().split("\n")))
            chars[id(t)] = max(8, min(chars[id(t)] - 1, int(longest * allowed / box.width)))
            wrapper.width = chars[id(t)]
            t.set_text("\n".join(wrapper.fill(line) or line for line in original[id(t)]))
            changed = True
        if not changed:
            return


def _save(fig, path: Path) -> Path:
    """PNG written atomically (temp file + rename), its titles wrapped to fit."""
    _fit_titles(fig)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.png")
    fig.savefig(tmp, dpi=DPI)
    os.replace(tmp, path)
    return path


def _colors(names: Sequence[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {n: cmap(i % 10) for i, n in enumerate(names)}


def _grid(n: int, max_cols: int = 3) -> tuple[int, int]:
    cols = min(n, max_cols)
    return math.ceil(n / cols), cols


def _epoch_axis(ax, epochs: int) -> None:
    """x axis of whole epochs 1..E (ticks at every epoch up to 20)."""
    ax.set_xlim(0.5, epochs + 0.5)
    if epochs <= 20:
        ax.set_xticks(range(1, epochs + 1))
    else:
        ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("epoch")


def _logit_axis(ax) -> None:
    """A logit-scaled probability axis with plain tick labels."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    ax.set_xscale("logit")
    ax.set_xlim(P_GRID[0], P_GRID[-1])
    ticks = [1e-3, 1e-2, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))


def _metric_label(run: Run) -> str:
    metric = run.config["reward"]["metric"]
    if metric == "auto" and "val/verification_accuracy" in run.epochs:
        metric = "verification_accuracy"
    elif metric == "auto" and "val/accuracy" in run.epochs:
        metric = "accuracy"
    return f"validation reward ({metric})"


# ---------------------------------------------------------------------------------- rewards
def plot_rewards(groups: dict[str, list[Run]], path: Path, title: str) -> Path | None:
    """One panel per method: every candidate's validation reward per epoch (dots, one colour
    per seed), the chosen candidate of each epoch joined by a line and ringed; diverged ×."""
    groups = {m: [r for r in runs if not r.epochs.empty] for m, runs in groups.items()}
    groups = {m: runs for m, runs in groups.items() if runs}
    if not groups:
        return None
    rows, cols = _grid(len(groups))
    fig = _figure(4.4 * cols, 3.4 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols, sharey=True, squeeze=False)).ravel()
    seed_colors = _colors([str(s) for s in sorted({r.seed for rs in groups.values() for r in rs})])
    for ax, (method, runs) in zip(axes, groups.items()):
        for run in runs:
            e = run.epochs
            color = seed_colors[str(run.seed)]
            m = int(e["candidate"].max()) + 1
            x = e["epoch"] + 1 + (e["candidate"] - (m - 1) / 2) * (0.5 / max(m, 1))
            ok = e["status"] == "ok" if "status" in e else pd.Series(True, index=e.index)
            ax.scatter(x[ok], e["reward"][ok], s=14, color=color, alpha=0.55, linewidths=0)
            if (~ok).any():
                ax.scatter(x[~ok], e["reward"][~ok], s=30, marker="x", color=color)
            chosen = e[e["chosen"]]
            xc = x[e["chosen"]]
            ax.plot(xc, chosen["reward"], "-", color=color, lw=1.4, label=f"seed {run.seed}")
            ax.scatter(xc, chosen["reward"], s=46, facecolors="none", edgecolors="black",
                       linewidths=1.0, zorder=3)
        kind = runs[0].kind
        cand = int(runs[0].config["controller"]["candidates"])
        ax.set_title(f"{method} ({kind}, M={cand})", fontsize=10)
        _epoch_axis(ax, max(int(r.config["training"]["epochs"]) for r in runs))
        ax.grid(alpha=0.3)
    for ax in axes[len(groups):]:
        ax.set_visible(False)
    for i in range(0, len(axes), cols):
        axes[i].set_ylabel(_metric_label(next(iter(groups.values()))[0]))
    handles, labels = axes[0].get_legend_handles_labels()
    from matplotlib.lines import Line2D

    handles.append(Line2D([], [], marker="o", ls="", markerfacecolor="none",
                          markeredgecolor="black", label="chosen (weights kept)"))
    handles.append(Line2D([], [], marker="o", ls="", color="grey", alpha=0.6, markersize=4,
                          label="candidate"))
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6),
               fontsize=8)
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


# ------------------------------------------------------------------------------- trajectory
def _policy(run: Run, spec) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(epochs, μ, σ) of the policy each epoch sampled from (controller.csv holds the state
    after each epoch's update, so epoch e used the row of e − 1; epoch 0 the initial μ, σ)."""
    c = run.controller
    mu_col, sigma_col = f"mu_{spec.name}", f"sigma_{spec.name}"
    if c.empty or mu_col not in c or sigma_col not in c:
        return None
    c = c.sort_values("epoch")
    setting = run.config["controller"].get("sigma", 0.1)
    sigma0 = float(setting.get(spec.name, 0.1)) if isinstance(setting, dict) else float(setting)
    mu_u = [spec.to_unit(spec.init)] + [spec.to_unit(float(v)) for v in c[mu_col]][:-1]
    sigma = [sigma0] + [float(v) for v in c[sigma_col]][:-1]
    epochs = np.arange(1, len(mu_u) + 1)
    return epochs, np.array(mu_u), np.array(sigma)


def _draw_trajectory(ax, run: Run, spec, color) -> None:
    e = run.epochs
    if spec.name not in e:
        return
    m = int(e["candidate"].max()) + 1
    x = e["epoch"] + 1 + (e["candidate"] - (m - 1) / 2) * (0.4 / max(m, 1))
    ax.scatter(x, e[spec.name], s=14, color=color, alpha=0.6, linewidths=0, label="samples")
    chosen = e[e["chosen"]]
    ax.plot(chosen["epoch"] + 1, chosen[spec.name], "*", color="black", markersize=7,
            label="chosen")
    policy = _policy(run, spec)
    if policy is not None:
        ep, mu, sigma = policy
        ep = ep[: int(e["epoch"].max()) + 1]
        mu, sigma = mu[: len(ep)], sigma[: len(ep)]
        to = np.vectorize(spec.from_unit)
        # the policy is constant within an epoch: draw it as steps over [e − ½, e + ½]
        xs = (np.repeat(ep, 2) + np.tile([-0.5, 0.5], len(ep))).astype(float)
        ax.plot(xs, to(np.repeat(mu, 2)), "-", color=color, lw=1.6, label="policy mean μ")
        ax.fill_between(xs, to(np.repeat(mu - sigma, 2)), to(np.repeat(mu + sigma, 2)),
                        color=color, alpha=0.18, label="μ ± σ")
    elif run.kind == "random":
        ax.axhspan(spec.low, spec.high, color=color, alpha=0.08, label="sampling range")
    if spec.log:
        ax.set_yscale("log")
    ax.set_ylim(spec.low * (0.8 if spec.log else 1) - (0 if spec.log else 0.03 * (spec.high - spec.low)),
                spec.high * (1.25 if spec.log else 1) + (0 if spec.log else 0.03 * (spec.high - spec.low)))
    _epoch_axis(ax, int(run.config["training"]["epochs"]))
    ax.set_ylabel(spec.name + (" (log scale)" if spec.log else ""))
    ax.grid(alpha=0.3)


def plot_trajectories(panels: list[tuple[str, Run, Any]], path: Path, title: str,
                      colors: dict[str, Any] | None = None, max_cols: int = 3) -> Path | None:
    """One panel per (title, run, parameter): samples, chosen, μ and μ ± σ per epoch."""
    panels = [p for p in panels if not p[1].epochs.empty and p[2].name in p[1].epochs]
    if not panels:
        return None
    rows, cols = _grid(len(panels), max_cols)
    fig = _figure(4.2 * cols, 3.2 * rows + 0.5)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, (label, run, spec) in zip(axes, panels):
        color = (colors or {}).get(run.method, "tab:blue")
        _draw_trajectory(ax, run, spec, color)
        ax.set_title(label, fontsize=9)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    handles, labels = [], []
    for ax in axes[:len(panels)]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), fontsize=8)
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


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


P_GRID = 1.0 / (1.0 + np.exp(-np.linspace(-9.0, 11.5, 1200)))  # p from 1.2e-4 to 1 − 1e-5


def _num_classes(run: Run) -> int:
    ckpt = run.dir / "checkpoint.pt"
    if ckpt.is_file():
        try:
            import torch

            state = torch.load(ckpt, map_location="cpu", weights_only=False)["state"]["loss"]
            extra = state.get("_extra_state")
            if isinstance(extra, dict) and "num_classes" in extra:  # sub-centres: C·K rows
                return int(extra["num_classes"])
            if "weight" in state:
                return int(state["weight"].shape[0])
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
    from lfsearch import losses, margins

    params = run.final_params()
    label = run.method if label is None else label
    p = P_GRID
    name = run.loss_name
    if name in ("softmax", "weighted_softmax", "normface", "l2_softmax", "adacos"):
        return [Curve(label, p, p.copy(), color, style, alpha)]
    if name == "modulated":  # A = a_i, or exp(s·m_i) in the margin form, per p-bin
        head = losses.build(name, embedding_size=4, num_classes=2,
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
        loss = losses.build(name, embedding_size=4, num_classes=max(num_classes or 2, 2),
                            **config_mod.loss_arguments(run.config))
        if params:
            loss.set_params(**params)
        figures_recent.load_running_state(loss, run)  # final running statistics
    except (ValueError, TypeError) as exc:
        log.info("loss %s cannot be drawn: %s", name, exc)
        return []
    C = num_classes or _num_classes(run)
    log_a = _margin_log_a(loss, p, C)
    if log_a is None:
        return []
    a = np.exp(np.minimum(log_a, 700))
    band = figures_recent.spread_curves(
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
    return _save(fig, path)


# ------------------------------------------------------------------------------------- ROC
def roc_points(run: Run, *, cache: bool = True) -> tuple[np.ndarray, np.ndarray] | None:
    """Test ROC (FAR, TAR) of a complete run on an open-set benchmark, from checkpoint.pt
    (the tested weights), cached in the run's roc.csv. None for closed-set benchmarks."""
    path = run.dir / ROC_FILE
    ckpt = run.dir / "checkpoint.pt"
    if run.results is None or not ckpt.is_file():
        return None
    if cache and path.is_file() and path.stat().st_mtime >= ckpt.stat().st_mtime:
        frame = pd.read_csv(path)
        if frame.empty:
            return None
        return frame["fpr"].to_numpy(), frame["tpr"].to_numpy()
    import torch
    from sklearn.metrics import auc, roc_curve

    from lfsearch import data, evaluate
    from lfsearch.search import Search

    cfg = copy.deepcopy(run.config)
    cfg["run"]["device"] = "cpu"
    cfg["reward"]["validation"] = [{"benchmark": "main", "weight": 1.0}]
    searcher = Search(cfg, run.dir)
    split = searcher.benchmark.test
    if not isinstance(split, data.VerificationSplit):
        config_mod.atomic_write_text(path, "fpr,tpr\n")
        return None
    trainee = searcher.build_trainee()
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state"]
    trainee.load(state)
    embeddings = evaluate.embed(trainee.model, split.images, normalise=split.normalise)
    scores = evaluate.pair_scores(embeddings, split.pairs)
    fpr, tpr, _ = roc_curve(split.same.cpu().numpy(), scores.cpu().numpy())
    want = (run.results.get("test") or {}).get("roc_auc")
    if want is not None and abs(auc(fpr, tpr) - want) > 1e-3:
        log.warning("%s: recomputed test ROC AUC %.4f differs from results.json's %.4f",
                    run.dir, auc(fpr, tpr), want)
    if cache:
        config_mod.atomic_write_text(path, pd.DataFrame({"fpr": fpr, "tpr": tpr}).to_csv(
            index=False))
    return fpr, tpr


def plot_roc(curves: dict[str, list[tuple[np.ndarray, np.ndarray]]], path: Path, title: str,
             colors: dict[str, Any]) -> Path | None:
    """Left: ROC on linear axes; right: TAR against FAR on a log axis. Thin lines: seeds;
    thick: the mean TAR over seeds at each FAR (vertical averaging)."""
    curves = {m: c for m, c in curves.items() if c}
    if not curves:
        return None
    fig = _figure(11.5, 4.6)
    ax1, ax2 = fig.subplots(1, 2)
    grid = np.unique(np.concatenate([np.logspace(-4, 0, 400), np.linspace(0, 1, 201)]))
    min_far = 1.0
    for method, items in curves.items():
        color = colors.get(method, None)
        tars = []
        for fpr, tpr in items:
            positive = fpr[fpr > 0]
            if positive.size:
                min_far = min(min_far, float(positive.min()))
            if len(items) > 1:
                ax1.plot(fpr, tpr, color=color, alpha=0.25, lw=0.8)
                ax2.plot(fpr, tpr, color=color, alpha=0.25, lw=0.8)
            tars.append(np.interp(grid, fpr, tpr))
        mean = np.mean(tars, axis=0)
        label = method + (f" (mean of {len(items)} seeds)" if len(items) > 1 else "")
        ax1.plot(grid, mean, color=color, lw=1.8, label=label)
        ax2.plot(grid, mean, color=color, lw=1.8, label=label)
    ax1.plot([0, 1], [0, 1], color="grey", ls=":", lw=1, label="chance")
    ax1.set_xlabel("FAR (false accept rate)")
    ax1.set_ylabel("TAR (true accept rate)")
    ax1.set_xlim(0, 1)
    ax1.set_ylim(0, 1.01)
    ax1.grid(alpha=0.3)
    ax1.set_title("test ROC", fontsize=10)
    ax2.set_xscale("log")
    ax2.set_xlim(max(min_far, 1e-4), 1)
    ax2.set_ylim(0, 1.01)
    ax2.set_xlabel("FAR (log scale)")
    ax2.set_ylabel("TAR")
    ax2.grid(alpha=0.3, which="both")
    ax2.set_title("TAR at low FAR", fontsize=10)
    handles, labels = ax1.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 4),
               fontsize=8)
    fig.suptitle(title, fontsize=11)
    return _save(fig, path)


# ------------------------------------------------------------------------------ comparison
def plot_comparison(summary: pd.DataFrame, runs: pd.DataFrame, path: Path,
                    colors: dict[str, Any]) -> Path | None:
    """One panel per benchmark: bars at the mean test metric with 95% CI error bars, each
    seed's value as a dot, and the compute (candidate-epochs) under each method's name."""
    if summary.empty:
        return None
    benches = list(dict.fromkeys(summary["benchmark"]))
    rows, cols = _grid(len(benches), 2)
    n_methods = summary.groupby("benchmark").size().max()
    fig = _figure(max(5.0, 1.15 * n_methods + 1.5) * cols, 4.4 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    done = runs[runs["status"] == "complete"]
    for ax, bench in zip(axes, benches):
        s = summary[summary["benchmark"] == bench].reset_index(drop=True)
        metric = s["metric"].iloc[0]
        x = np.arange(len(s))
        means = s["mean"].to_numpy(float)
        half = np.nan_to_num(s["ci_half"].to_numpy(float))
        ax.bar(x, means, yerr=half, capsize=5, width=0.65,
               color=[colors.get(m, "grey") for m in s["method"]], alpha=0.75,
               edgecolor="black", linewidth=0.6, error_kw={"elinewidth": 1.2})
        values = []
        for i, method in enumerate(s["method"]):
            v = done[(done["benchmark"] == bench) & (done["method"] == method)][f"test/{metric}"]
            v = v.to_numpy(float)
            values.extend(v.tolist())
            jitter = (np.arange(len(v)) - (len(v) - 1) / 2) * 0.08
            ax.scatter(i + jitter, v, s=16, color="black", zorder=3,
                       label="one seed" if i == 0 else None)
            ax.annotate(f"{means[i]:.3f}", (i, means[i] + half[i]), textcoords="offset points",
                        xytext=(0, 4), ha="center", fontsize=8)
        lo = np.nanmin(np.concatenate([means - half, values])) if len(values) else np.nanmin(means)
        hi = np.nanmax(np.concatenate([means + half, values])) if len(values) else np.nanmax(means)
        pad = max(0.15 * (hi - lo), 0.005)
        ax.set_ylim(max(lo - pad, 0.0) if lo >= 0 else lo - pad, min(hi + 2 * pad, 1.0)
                    if hi <= 1 else hi + 2 * pad)
        ax.set_xticks(x)
        # "cosface (tuned, 32 cand-epochs)" -> "cosface (tuned)", its budget on the next line;
        # many bars: slanted labels, so that neighbours never overlap
        names = [str(m).split(" (tuned")[0] + (" (tuned)" if "(tuned" in str(m) else "")
                 for m in s["method"]]
        slant = dict(rotation=35, ha="right", rotation_mode="anchor") if len(names) > 10 else {}
        ax.set_xticklabels([f"{m}\n{ce:g} cand-ep" for m, ce in
                            zip(names, s["candidate_epochs"])], fontsize=8, **slant)
        ax.set_ylabel(f"test {metric}")
        ax.set_title(f"{bench}: mean over seeds, error bars 95% CI (y axis does not start at 0)",
                     fontsize=9)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    for ax in axes[len(benches):]:
        ax.set_visible(False)
    return _save(fig, path)


# --------------------------------------------------------------------------------- document
class Document:
    """Blocks rendered both to Markdown (figures as relative links) and to self-contained HTML."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blocks: list[tuple] = []

    def heading(self, level: int, text: str) -> None:
        self.blocks.append(("h", level, text))

    def para(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, frame: pd.DataFrame, note: str | None = None) -> None:
        self.blocks.append(("table", frame, note))

    def figure(self, path: Path | None, caption: str) -> None:
        if path is not None:
            self.blocks.append(("img", path, caption))

    def markdown(self) -> str:
        out = []
        for b in self.blocks:
            if b[0] == "h":
                out.append("#" * b[1] + " " + b[2] + "\n")
            elif b[0] == "p":
                out.append(b[1] + "\n")
            elif b[0] == "table":
                out.append(compare_mod.markdown_table(b[1]))
                if b[2]:
                    out.append(b[2] + "\n")
            elif b[0] == "img":
                rel = b[1].relative_to(self.root).as_posix()
                out.append(f"![{b[2]}]({rel})\n\n*{b[2]}*\n")
        return "\n".join(out)

    def html(self, title: str) -> str:
        e = html.escape
        body = []
        for b in self.blocks:
            if b[0] == "h":
                body.append(f"<h{b[1]}>{e(b[2])}</h{b[1]}>")
            elif b[0] == "p":
                body.append(f"<p>{_inline(b[1])}</p>")
            elif b[0] == "table":
                head = "".join(f"<th>{e(str(c))}</th>" for c in b[1].columns)
                rows = "".join("<tr>" + "".join(f"<td>{e(str(v))}</td>" for v in r) + "</tr>"
                               for r in b[1].itertuples(index=False))
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
                if b[2]:
                    body.append(f'<p class="note">{e(b[2])}</p>')
            elif b[0] == "img":
                data = base64.b64encode(b[1].read_bytes()).decode("ascii")
                body.append(f'<figure><img alt="{e(b[2])}" src="data:image/png;base64,{data}">'
                            f"<figcaption>{e(b[2])}</figcaption></figure>")
        style = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;"
                 "padding:0 1em;color:#222}table{border-collapse:collapse;margin:1em 0;"
                 "font-size:0.9em}th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}"
                 "th{background:#f3f3f3}img{max-width:100%}figure{margin:1.5em 0}"
                 "figcaption{font-size:0.9em;color:#555}.note{font-size:0.85em;color:#555}"
                 "code{background:#f3f3f3;padding:0 3px}")
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<title>{e(title)}</title><style>{style}</style></head><body>\n"
                + "\n".join(body) + "\n</body></html>\n")


def _inline(text: str) -> str:
    """Escape text and turn `code` spans into <code>."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _write_document(doc: Document, root: Path, title: str) -> dict[str, Path]:
    md, page = root / "report.md", root / "report.html"
    config_mod.atomic_write_text(md, doc.markdown())
    config_mod.atomic_write_text(page, doc.html(title))
    return {"markdown": md, "html": page}


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "–" if not math.isfinite(v) else f"{v:.4g}"
    return str(v)


# ------------------------------------------------------------------------------ run report
def test_benchmarks_table(entries: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """One row per test benchmark: its main metric, the verification metrics, or its error."""
    keys = ("verification_accuracy", "verification_accuracy_std", "roc_auc", "eer",
            "tar@far=1e-3", "rank1", "accuracy")
    rows = []
    for spec, entry in entries.items():
        if "error" in entry:
            rows.append({"benchmark": spec, "metric": "error: " + entry["error"]})
            continue
        m = entry["metrics"]
        rows.append({"benchmark": spec, "metric": entry["metric"],
                     **{k: _fmt(math.nan if m[k] is None else float(m[k]))
                        for k in keys if k in m}})
    return pd.DataFrame(rows).fillna("–")


def run_report(folder: Path, *, roc: bool = True) -> dict[str, Any]:
    """report.md / report.html and figures for one run folder."""
    run = load_run(folder)
    figdir = folder / "figures"
    figures: list[Path] = []
    title = f"lfsearch run: {run.method} on {run.benchmark} (seed {run.seed})"
    doc = Document(folder)
    doc.heading(1, title)
    cfg = run.config
    doc.para(f"Loss `{run.loss_name}` ({_describe_loss(run)}), controller `{run.kind}` with "
             f"M = {cfg['controller']['candidates']} candidates per epoch, "
             f"{cfg['training']['epochs']} epochs, model `{run.manifest.get('model', '?')}`, "
             f"device `{run.manifest.get('device', '?')}`, status **{run.status}**"
             + (f", {run.manifest['search_seconds_this_session']:.0f} s of search"
                if run.manifest.get("search_seconds_this_session") else "") + ".")
    if cfg["method"].get("description"):
        doc.para(cfg["method"]["description"])
    if run.results:
        res = run.results
        doc.heading(2, "Test metrics")
        doc.para(f"Measured once, after the search, on the test split (never seen by the search); "
                 f"compute: {res['candidate_epochs']} candidate-epochs.")
        doc.table(pd.DataFrame([{"metric": k, "value": _fmt(float(v) if v is not None else
                                                            math.nan)}
                                for k, v in res["test"].items()]))
        if res.get("test_benchmarks"):
            doc.heading(2, "Test benchmarks")
            doc.para("Each [test] benchmark's test split, measured once with the final model; "
                     "none of them was seen by the search.")
            doc.table(test_benchmarks_table(res["test_benchmarks"]))
    if not run.epochs.empty and run.specs:
        chosen = run.epochs[run.epochs["chosen"]]
        doc.heading(2, "Chosen loss parameters per epoch")
        doc.table(pd.DataFrame([{"epoch": int(r["epoch"]) + 1, "reward": _fmt(r["reward"]),
                                 **{s.name: _fmt(float(r[s.name])) for s in run.specs[:8]}}
                                for _, r in chosen.iterrows()]),
                  "first 8 parameters" if len(run.specs) > 8 else None)
    doc.heading(2, "Figures")
    colors = _colors([run.method, "cosface", "arcface", "softmax"])
    p = plot_rewards({run.method: [run]}, figdir / "rewards.png",
                     f"{run.method}: validation reward per epoch")
    doc.figure(p, "Validation reward of every candidate per epoch; the ringed one was chosen "
                  "and its weights carried to the next epoch.")
    figures.append(p)
    if run.searched:
        p = plot_trajectories([(f"{run.method}: {s.name}", run, s) for s in run.specs],
                              figdir / "trajectory.png",
                              f"{run.method}: controller trajectory", colors,
                              max_cols=4 if len(run.specs) > 6 else 3)
        doc.figure(p, "Searched parameters per epoch: sampled candidates, the chosen one (★), "
                      "and for REINFORCE the policy mean μ with μ ± σ.")
        figures.append(p)
    C = _num_classes(run)
    refs = [r for r in default_references(C) if r.method != run.method]
    p = plot_losses([run] if run.kind != "fixed" else [], refs + ([run] if run.kind == "fixed"
                                                                  else []),
                    figdir / "losses.png", f"{run.method}: loss as a transform of p", colors, C)
    doc.figure(p, "Left: p_m (or AM-LFS τ) against the softmax probability p; dashed: "
                  "hand-crafted margins; red: where τ(p) > p. Right: the effective log A. "
                  "Shaded: the spread of a per-sample margin over a batch (16th-84th "
                  "percentile).")
    figures.append(p)
    p = figures_recent.plot_changes([run], figdir / "changes.png",
                                    f"{run.method}: negatives and class weights", colors)
    if p is not None:
        doc.figure(p, figures_recent.CAPTION)
        figures.append(p)
    if roc and run.results:
        points = roc_points(run)
        if points is not None:
            p = plot_roc({run.method: [points]}, figdir / "roc.png",
                         f"{run.method} on {run.benchmark}: test ROC", colors)
            doc.figure(p, "Test verification ROC (cosine scores of the test pairs).")
            figures.append(p)
    figures = [f for f in figures if f is not None]
    written = _write_document(doc, folder, title)
    return {**written, "figures": figures}


# -------------------------------------------------------------------------- compare report
def compare_report(folder: Path, *, roc: bool = True) -> dict[str, Any]:
    """report.md / report.html, tables and figures for a compare folder."""
    dirs = compare_mod.find_run_dirs(folder)
    if not dirs:
        raise FileNotFoundError(f"{folder} holds no run folders (config.toml + manifest.json) "
                                "and is not a run folder itself")
    settings_path = folder / "compare.json"
    settings = json.loads(settings_path.read_text()) if settings_path.is_file() else {}
    dirs = _ordered(folder, dirs, settings)
    runs_frame = compare_mod.collect_runs(dirs)
    metric = settings.get("metric")
    complete = runs_frame[runs_frame["status"] == "complete"]
    summary = compare_mod.summarise(complete, metric) if not complete.empty else pd.DataFrame()
    tests = compare_mod.summarise_tests(complete, metric) if not complete.empty else None
    if not summary.empty:
        compare_mod.write_tables(folder, runs_frame, summary, tests)
    runs = [load_run(d) for d in dirs]
    methods = list(dict.fromkeys(r.method for r in runs))
    colors = _colors(methods)
    figdir = folder / "figures"
    figures: list[Path] = []
    benches = list(dict.fromkeys(r.benchmark for r in runs))
    title = "lfsearch comparison on " + ", ".join(benches)
    doc = Document(folder)
    doc.heading(1, title)
    seeds = sorted({r.seed for r in runs})
    seconds = runs_frame.get("seconds", pd.Series(dtype=float)).sum(min_count=1)
    doc.para(f"{len(runs)} runs: {len(methods)} methods ({', '.join(methods)}) × "
             f"{len(seeds)} seeds ({', '.join(map(str, seeds))}) × {len(benches)} benchmark(s); "
             f"{len(complete)} complete."
             + (f" Search time {seconds / 60:.1f} min in all (runs not resumed)."
                if isinstance(seconds, float) and math.isfinite(seconds) else ""))
    unfinished = runs_frame[runs_frame["status"] != "complete"]
    if not unfinished.empty:
        doc.para("Not complete (left out of the table; rerun the compare command to finish them): "
                 + ", ".join(f"{r.method} seed {r.seed} on {r.benchmark} ({r.status})"
                             for r in unfinished.itertuples()) + ".")
    if not summary.empty:
        doc.heading(2, "Comparison")
        doc.table(compare_mod.display_table(summary), compare_mod.TABLE_NOTE)
        p = plot_comparison(summary, runs_frame, figdir / "comparison.png", colors)
        doc.figure(p, "Test metric per method: bar = mean over seeds, error bar = 95% CI, dots = "
                      "seeds; under each name the training compute in candidate-epochs.")
        figures.append(p)
    for spec, block in compare_mod.test_blocks(tests):
        doc.heading(2, f"Test benchmark {spec}")
        doc.para("The final models of the runs above, tested once on this benchmark's test "
                 "split (a [test] benchmark: never seen by the search).")
        doc.table(compare_mod.display_table(block), compare_mod.TABLE_NOTE)
    for bench in benches:
        b_runs = [r for r in runs if r.benchmark == bench]
        tag = compare_mod.safe_name(bench)
        doc.heading(2, f"{bench}")
        groups = {m: [r for r in b_runs if r.method == m] for m in methods}
        groups = {m: rs for m, rs in groups.items() if rs}
        p = plot_rewards(groups, figdir / f"rewards_{tag}.png",
                         f"{bench}: validation reward per epoch (every candidate, all seeds)")
        doc.figure(p, "Validation reward of every candidate per epoch, one colour per seed; the "
                      "ringed candidate was chosen and carried its weights to the next epoch.")
        figures.append(p)
        panels = []
        for m, rs in groups.items():
            searched = [r for r in rs if r.searched]
            if not searched:
                continue
            specs = searched[0].specs
            if len(specs) == 1:
                panels += [(f"{m} seed {r.seed}: {specs[0].name}", r, specs[0]) for r in searched]
            else:
                panels += [(f"{m} seed {searched[0].seed}: {s.name}", searched[0], s)
                           for s in specs[:6]]
        if panels:
            p = plot_trajectories(panels, figdir / f"trajectory_{tag}.png",
                                  f"{bench}: controller trajectories", colors)
            doc.figure(p, "Searched parameters per epoch: samples, the chosen candidate (★) and "
                          "for REINFORCE the policy mean μ with μ ± σ (σ is a fraction of the "
                          "(log-)range, mapped back to parameter units); random search samples "
                          "the shaded range. Methods with many parameters: first seed, first 6.")
            figures.append(p)
        C = _num_classes(b_runs[0])
        fixed = [r for r in b_runs if r.kind == "fixed"]
        refs, have = [], set()
        for r in fixed:
            if r.method not in have:
                refs.append(r)
                have.add(r.method)
        if not any(r.loss_name not in ("softmax", "normface") for r in refs):
            refs += default_references(C)
        found = [r for r in b_runs if r.searched and r.status == "complete"]
        p = plot_losses(found, refs, figdir / f"losses_{tag}.png",
                        f"{bench}: losses found (solid, final epoch, every seed) against "
                        "hand-crafted margins (dashed)", colors, C)
        doc.figure(p, "Left: p_m = h(A, p) (τ(p) for AM-LFS) against the softmax probability p "
                      "of the true class; red: where τ(p) exceeds p. Right: effective log A, "
                      "the amount the target logit is lowered by. Shaded: the spread of a "
                      "per-sample margin (AdaFace, MagFace, ElasticFace), 16th to 84th "
                      "percentile over a batch.")
        figures.append(p)
        p = figures_recent.plot_changes(b_runs, figdir / f"changes_{tag}.png",
                                        f"{bench}: negatives and class weights", colors)
        if p is not None:
            doc.figure(p, figures_recent.CAPTION)
            figures.append(p)
        if roc:
            curves: dict[str, list] = {}
            for r in b_runs:
                if r.status != "complete":
                    continue
                pts = roc_points(r)
                if pts is not None:
                    curves.setdefault(r.method, []).append(pts)
            p = plot_roc(curves, figdir / f"roc_{tag}.png", f"{bench}: test ROC", colors)
            doc.figure(p, "Test verification ROC per method: thin lines are seeds, thick lines "
                          "the mean TAR over seeds at each FAR.")
            figures.append(p)
    if not complete.empty:
        doc.heading(2, "Runs")
        cols = [c for c in ("test/verification_accuracy", "test/accuracy", "test/roc_auc",
                            "test/eer", "test/tar@far=1e-2") if c in complete]
        finals = [c for c in complete.columns if c.startswith("final/")][:4]
        for spec in compare_mod.test_benchmark_specs(complete):  # each one's main metric
            names = complete[f"test[{spec}]:metric"].dropna()
            if not names.empty and f"test[{spec}]/{names.iloc[0]}" in complete:
                cols.append(f"test[{spec}]/{names.iloc[0]}")
        table = complete[["benchmark", "method", "seed", "candidate_epochs", *cols, *finals]]
        if "seconds" in complete:
            table = table.assign(seconds=complete["seconds"])
        table = table.rename(columns=lambda c: c[5:] if c.startswith("test/") else
                             "final " + c[6:] if c.startswith("final/") else c)
        doc.table(table.map(_fmt))
    figures = [f for f in figures if f is not None]
    written = _write_document(doc, folder, title)
    return {**written, "figures": figures, "table": summary}


def _ordered(folder: Path, dirs: list[Path], settings: dict[str, Any]) -> list[Path]:
    """Run folders in the compare's own order (compare.json), else softmax first, then the
    other fixed losses, then the searches, each by name and seed."""
    listed = [folder / r["dir"] for r in settings.get("runs", [])]
    rank = {d.resolve(): i for i, d in enumerate(listed)}

    def key(d: Path):
        if d.resolve() in rank:
            return (0, rank[d.resolve()], "", 0)
        cfg = config_mod.load(d / "config.toml")
        method = cfg["method"]["name"]
        group = 0 if method == compare_mod.BASELINE else 1 if cfg["controller"]["kind"] == "fixed" else 2
        return (1, group, f"{cfg['training']['benchmark']}/{method}", int(cfg["run"]["seed"]))

    return sorted(dirs, key=key)


def report(folder: str | os.PathLike, *, roc: bool = True) -> dict[str, Any]:
    """Write report.md, report.html and figures/*.png for a run folder or a compare folder.

    Returns {"markdown", "html", "figures"} (paths)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"report: {folder} is not a folder (give a run folder or a "
                                "compare folder)")
    if (folder / "config.toml").is_file():
        return run_report(folder, roc=roc)
    return compare_report(folder, roc=roc)
