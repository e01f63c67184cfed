"""The report's view of the members published after ArcFace: the median curve and the
spread band of a per-sample margin (against s·m ± σ worked out here), the final running
statistics read back from a checkpoint, and the figure of hard-negative and class-weight
changes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from lfsearch import losses
from lfsearch import report as report_mod
from lfsearch.report import loss_figures, member_figures, plotting
from lfsearch.report import runs as runs_mod
from lfsearch.search import config as config_mod
from lfsearch.search import search

Z84 = 0.994458  # the standard normal's 84th percentile


def fake_run(space: str, params: dict[str, float] | None = None) -> plotting.Run:
    cfg = config_mod.load(space)
    results = {"chosen_params": [params]} if params is not None else None
    return plotting.Run(Path("."), cfg, {}, results, pd.DataFrame(), pd.DataFrame(),
                   config_mod.param_specs(cfg))


def test_elasticface_cos_curve_is_s_m_with_a_band_of_s_m_plus_minus_sigma():
    (curve,) = loss_figures.loss_curves(fake_run("elasticface_cos", {"m": 0.35, "sigma": 0.05}), "C0",
                               num_classes=6)
    np.testing.assert_allclose(loss_figures._effective_log_a(curve.p, curve.pm), 16 * 0.35, atol=1e-6)
    lo, hi = curve.band
    np.testing.assert_allclose(loss_figures._effective_log_a(curve.p, lo), 16 * (0.35 - 0.05 * Z84),
                               atol=1e-5)
    np.testing.assert_allclose(loss_figures._effective_log_a(curve.p, hi), 16 * (0.35 + 0.05 * Z84),
                               atol=1e-5)


def test_adaface_median_is_cosface_and_members_with_one_margin_have_no_band():
    (curve,) = loss_figures.loss_curves(fake_run("adaface", {"m": 0.4}), "C0", num_classes=6)
    # before any step ẑ's quantiles are ±h·0.994 and 0: the median is CosFace's s·m
    np.testing.assert_allclose(loss_figures._effective_log_a(curve.p, curve.pm), 16 * 0.4, atol=1e-6)
    assert curve.band is not None
    for space in ("curricularface", "subcenter_arcface", "mv_softmax"):
        (curve,) = loss_figures.loss_curves(fake_run(space), "C0", num_classes=6)
        assert curve.band is None


@pytest.fixture(scope="module")
def recent_runs(tmp_path_factory):
    """Two real one-epoch runs on the embedded digits: curricularface, subcenter_arcface."""
    root = tmp_path_factory.mktemp("recent")
    out = {}
    for space in ("curricularface", "subcenter_arcface"):
        search(space, epochs=1, seed=0, out=root / space, threads=1)
        out[space] = runs_mod.load_run(root / space)
    return out


def test_final_running_state_and_class_count_come_from_the_checkpoint(recent_runs):
    run = recent_runs["curricularface"]
    state = member_figures.loss_state(run)
    assert float(state["t"]) != 0.0  # t moved during training
    loss = losses.build("curricularface", embedding_size=4, num_classes=3)
    member_figures.load_running_state(loss, run)
    assert float(loss.t) == pytest.approx(float(state["t"]))
    sub = recent_runs["subcenter_arcface"]
    assert member_figures.loss_state(sub)["weight"].shape[0] == 3 * loss_figures._num_classes(sub)


def test_the_changes_figure_draws_negatives_and_sub_centres(recent_runs, tmp_path):
    runs = list(recent_runs.values())
    intra, between = member_figures._subcentre_cosines(recent_runs["subcenter_arcface"])
    C = loss_figures._num_classes(recent_runs["subcenter_arcface"])
    assert intra.shape == (C * 3,) and between.shape == (C * (C - 1),)  # 3 pairs per class
    assert np.all(np.abs(intra) <= 1 + 1e-9)
    label, c, new = member_figures._negative_curve(recent_runs["curricularface"])
    t = float(member_figures.loss_state(recent_runs["curricularface"])["t"])
    np.testing.assert_allclose(new, c * (t + c), rtol=1e-12)
    assert f"{t:.3f}" in label
    path = member_figures.plot_changes(runs, tmp_path / "changes.png", "t", {})
    assert Image.open(path).size[0] > 1000  # two panels
    assert member_figures.plot_changes([], tmp_path / "none.png", "t", {}) is None


def test_a_run_report_of_a_recent_member_has_the_changes_figure(recent_runs):
    out = report_mod.report(recent_runs["curricularface"].dir, roc=False)
    names = {Path(p).name for p in out["figures"]}
    assert {"losses.png", "changes.png"} <= names
