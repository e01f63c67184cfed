"""Figures of a search's course: candidates' rewards per epoch, the controller's trajectory
(μ, μ ± σ, the candidates and the chosen one), and the comparison bars of a compare folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lfsearch.report import plotting
from lfsearch.report.plotting import _colors, _epoch_axis, _figure, _grid, _metric_label
from lfsearch.report.runs import Run


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
    return plotting._save(fig, path)


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
    return plotting._save(fig, path)

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
    return plotting._save(fig, path)
