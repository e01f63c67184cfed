"""Figure helpers shared by the report's figures: Agg figures without pyplot, colours,
epoch and logit axes, atomic PNG writes, and the probability grid the loss curves are drawn on.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from lfsearch.report.runs import Run

log = logging.getLogger(__name__)

DPI = 110
ROC_FILE = "roc.csv"
P_GRID = 1.0 / (1.0 + np.exp(-np.linspace(-9.0, 11.5, 1200)))  # p from 1.2e-4 to 1 − 1e-5


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
