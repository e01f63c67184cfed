"""Report pieces for the members published after ArcFace (lfsearch/losses/ (adaptive_margins.py, negative_reweighting.py, subcenters.py)).

- ``load_running_state``: a run's final running statistics (AdaFace's norm statistics and
  ẑ quantiles, MagFace's magnitude quantiles, CurricularFace's t, AdaCos's s), read back from
  its checkpoint into a loss built from its config, so that figures show the loss the model
  finished with;
- ``spread_curves``: the per-sample margin of AdaFace, MagFace and ElasticFace as a band of
  p_m = h(A, p) between its 16th and 84th percentile over a batch (the report's loss figure
  draws it around the median curve);
- ``plot_changes``: what the members outside the target-logit family change — a hard
  negative's cosine (CurricularFace at its final t, MV-Softmax) and the class weights
  (Sub-center ArcFace: cosines between the sub-centres of one class, against those between
  classes). docs/loss_members.md explains the split.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np

from lfsearch import losses
from lfsearch.report import plotting
from lfsearch.report.plotting import _figure
from lfsearch.search import checkpoint as checkpoint_mod
from lfsearch.search import config as config_mod

log = logging.getLogger(__name__)

NEGATIVES = ("curricularface", "mv_softmax")
CLASS_WEIGHTS = ("subcenter_arcface",)
CAPTION = ("What the members outside the target-logit family change. Left: the new cosine of "
           "a hard negative (cos θ_j above the target's margin curve) against its cosine, at "
           "each run's final parameters (CurricularFace at its final t). Right: Sub-center "
           "ArcFace's class weights at the end of training: cosines between the K sub-centres "
           "of one class, against the largest cosine between sub-centres of two classes.")


def loss_state(run) -> dict | None:
    """The loss's state_dict from the run's checkpoint.pt, or None."""
    ckpt = Path(run.dir) / "checkpoint.pt"
    if not ckpt.is_file():
        return None
    try:
        return checkpoint_mod.read(ckpt, map_location="cpu")["state"]["loss"]
    except checkpoint_mod.UnsafeCheckpoint:
        raise  # refused in one line, never loaded
    except Exception as exc:  # a damaged checkpoint only costs the final statistics
        log.warning("%s: could not read the loss state (%s)", ckpt, exc)
        return None


def load_running_state(loss, run) -> None:
    """Copy the run's final buffers (running statistics) into ``loss`` where the names and
    shapes match; parameters (the class head) are left alone."""
    state = loss_state(run)
    if not state:
        return
    for name, buf in loss.named_buffers():
        value = state.get(name)
        if value is not None and tuple(value.shape) == tuple(buf.shape):
            buf.copy_(value.to(buf.dtype))


def spread_curves(loss, p: np.ndarray, margin_log_a: Callable
                  ) -> tuple[np.ndarray, np.ndarray] | None:
    """p_m at the 16th and 84th percentile of a per-sample margin, or None when the member's
    margin is the same for every sample. ``margin_log_a(loss, p, target=f)`` gives log A(p)."""
    if not hasattr(loss, "target_quantiles"):
        return None
    out = []
    for i in (0, 2):
        log_a = margin_log_a(loss, p, target=lambda c, i=i: loss.target_quantiles(c)[i])
        if log_a is None:
            return None
        a = np.exp(np.minimum(log_a, 700))
        out.append(p / (p + a * (1 - p)))
    if np.allclose(out[0], out[1], rtol=0, atol=1e-12):
        return None
    return out[0], out[1]


def _negative_curve(run) -> tuple[str, np.ndarray, np.ndarray] | None:
    import torch

    pass  # (import moved)

    try:
        loss = losses.build(run.loss_name, embedding_size=4, num_classes=3,
                            **config_mod.loss_arguments(run.config))
        params = run.final_params()
        if params:
            loss.set_params(**params)
    except (ValueError, TypeError) as exc:
        log.info("loss %s cannot be drawn: %s", run.loss_name, exc)
        return None
    load_running_state(loss, run)
    c = np.linspace(-1.0, 1.0, 201)
    new = loss.negative_transform(torch.as_tensor(c, dtype=torch.float64)).numpy()
    if run.loss_name == "curricularface":
        label = f"{run.method}: cos_j (t + cos_j), final t = {float(loss.t):.3f}"
    else:
        t = loss.get_params()["t"]
        label = (f"{run.method}: (1 + t) cos_j + t, t = {t:.3g}" if loss.hard == "adaptive"
                 else f"{run.method}: cos_j + t, t = {t:.3g}")
    return label, c, new


def _subcentre_cosines(run) -> tuple[np.ndarray, np.ndarray] | None:
    import torch

    state = loss_state(run)
    if not state or "weight" not in state:
        return None
    extra = state.get("_extra_state") or {}
    C, K = extra.get("num_classes"), extra.get("K")
    if not C or not K or K < 2:
        return None
    w = torch.nn.functional.normalize(state["weight"].double(), dim=1).view(C, K, -1)
    intra = torch.einsum("ckd,cld->ckl", w, w)
    iu = torch.triu_indices(K, K, 1)
    intra = intra[:, iu[0], iu[1]].flatten()
    flat = w.reshape(C * K, -1)
    between = (flat @ flat.t()).view(C, K, C, K).amax(dim=(1, 3))
    between = between[~torch.eye(C, dtype=torch.bool)]
    return intra.numpy(), between.numpy()


def plot_changes(runs: list, path: Path, title: str, colors: dict[str, Any]) -> Path | None:
    """The figure of :data:`CAPTION` for the runs (of any members; only the negatives and
    class-weight members are drawn); None when there is none."""

    seen: set[str] = set()
    negatives, subcentres = [], []
    for run in runs:
        if run.method in seen or run.status != "complete":
            continue
        if run.loss_name in NEGATIVES:
            curve = _negative_curve(run)
            if curve is not None:
                negatives.append((run, curve))
                seen.add(run.method)
        elif run.loss_name in CLASS_WEIGHTS:
            cosines = _subcentre_cosines(run)
            if cosines is not None:
                subcentres.append((run, cosines))
                seen.add(run.method)
    if not negatives and not subcentres:
        return None
    panels = int(bool(negatives)) + int(bool(subcentres))
    fig = _figure(5.8 * panels, 4.4)
    axes = fig.subplots(1, panels, squeeze=False)[0]
    i = 0
    if negatives:
        ax = axes[i]
        i += 1
        grid = np.linspace(-1, 1, 3)
        ax.plot(grid, grid, ls=":", color="black", lw=1.4, label="unchanged (softmax, ArcFace)")
        for run, (label, c, new) in negatives:
            ax.plot(c, new, color=colors.get(run.method, "tab:blue"), lw=1.6, label=label)
        ax.set_xlabel("cos θ_j of a hard negative")
        ax.set_ylabel("cos θ_j the softmax sees")
        ax.set_title("hard negatives (CurricularFace, MV-Softmax)", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if subcentres:
        ax = axes[i]
        bins = np.linspace(-1, 1, 41)
        for run, (intra, between) in subcentres:
            color = colors.get(run.method, "tab:green")
            ax.hist(intra, bins=bins, color=color, alpha=0.55, density=True,
                    label=f"{run.method}: sub-centres of one class")
            ax.hist(between, bins=bins, color=color, histtype="step", lw=1.6, density=True,
                    label=f"{run.method}: nearest sub-centres of two classes")
        ax.set_xlabel("cosine between class weights")
        ax.set_ylabel("density")
        ax.set_title("class weights (Sub-center ArcFace)", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return plotting._save(fig, path)
