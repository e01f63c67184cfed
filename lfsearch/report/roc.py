"""Test ROC curves (TAR against FAR, linear and log FAR) of open-set runs, recomputed from
each run's checkpoint.pt and cached in the run's roc.csv.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lfsearch.evaluation import metrics as metrics_mod
from lfsearch.report import plotting
from lfsearch.report.plotting import ROC_FILE, _figure
from lfsearch.report.runs import Run
from lfsearch.search import checkpoint as checkpoint_mod
from lfsearch.search import config as config_mod

log = logging.getLogger(__name__)

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
    from sklearn.metrics import auc, roc_curve

    from lfsearch import data
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
    state = checkpoint_mod.read(ckpt, map_location="cpu")["state"]  # weights_only
    trainee.load(state)
    # the flip the run was tested with (results.json test_flip; older runs: none)
    flip = bool(run.results.get("test_flip", False))
    embeddings = metrics_mod.embed(trainee.model, split.images, flip=flip,
                                   normalise=split.normalise)
    scores = metrics_mod.pair_scores(embeddings, split.pairs)
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
    return plotting._save(fig, path)
