"""lfsearch report: loss curves against their formulas, and the files written for a run
folder and for a compare folder (figures, report.md, a self-contained report.html)."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

# the session's tiny compare folder (softmax and search_softmax, 2 seeds) is test_compare's
from test_compare import BENCH, compared  # noqa: E402,F401  (a session fixture)

from lfsearch import report as report_mod
from lfsearch.cli import main as cli_main
from lfsearch.experiments import run_plan
from lfsearch.report import loss_figures, plotting
from lfsearch.search import config as config_mod


def fake_run(space: str, params: dict[str, float] | None = None, **loss: object) -> plotting.Run:
    """A Run without a folder: a shipped search space with given final parameters."""
    cfg = config_mod.load(space)
    cfg["loss"].update(loss)
    results = {"chosen_params": [params]} if params is not None else None
    return plotting.Run(Path("."), cfg, {}, results, pd.DataFrame(), pd.DataFrame(),
                   config_mod.param_specs(cfg))


def test_the_modulated_curve_is_h_of_a_and_its_effective_log_a_is_log_a():
    # the paper's A-form: the searched parameter is A itself
    (curve,) = loss_figures.loss_curves(fake_run("search_softmax_paper", {"a": math.e ** 2}), "C0")
    p = curve.p
    np.testing.assert_allclose(curve.pm, p / (p + math.e ** 2 * (1 - p)), rtol=1e-12)
    np.testing.assert_allclose(loss_figures._effective_log_a(p, curve.pm), 2.0, atol=1e-6)
    assert not curve.tau and not curve.assumed


def test_the_margin_form_curve_is_h_of_exp_s_m():
    # search_softmax searches (s, m) with log A = s·m (docs/search_space.md)
    s, m = 8.0, 0.3
    (curve,) = loss_figures.loss_curves(fake_run("search_softmax", {"s": s, "m": m}), "C0")
    p, a = curve.p, math.exp(s * m)
    # the head keeps log A = s·m in a float32 buffer: 2.4 to ~1e-7 relative, hence rtol 1e-6
    np.testing.assert_allclose(curve.pm, p / (p + a * (1 - p)), rtol=1e-6)
    np.testing.assert_allclose(loss_figures._effective_log_a(p, curve.pm), s * m, atol=1e-6)
    assert not curve.tau and not curve.assumed


def test_per_bin_factors_apply_to_their_probability_bin():
    params = {"a_0": 1.0, "a_1": 10.0, "a_2": 100.0, "a_3": 1000.0}
    (curve,) = loss_figures.loss_curves(fake_run("search_softmax_local_paper", params), "C0")
    log_a = loss_figures._effective_log_a(curve.p, curve.pm)
    for k in range(4):
        inside = (curve.p >= k / 4 + 1e-6) & (curve.p < (k + 1) / 4 - 1e-6)
        np.testing.assert_allclose(log_a[inside], math.log(params[f"a_{k}"]), atol=1e-6)


def test_per_bin_margins_apply_to_their_probability_bin():
    params = {"s": 4.0, "m_0": 0.0, "m_1": 0.1, "m_2": 0.35, "m_3": 0.6}
    (curve,) = loss_figures.loss_curves(fake_run("search_softmax_local", params), "C0")
    log_a = loss_figures._effective_log_a(curve.p, curve.pm)
    for k in range(4):
        inside = (curve.p >= k / 4 + 1e-6) & (curve.p < (k + 1) / 4 - 1e-6)
        np.testing.assert_allclose(log_a[inside], 4.0 * params[f"m_{k}"], atol=1e-6)


def test_cosface_lowers_the_target_logit_by_s_m_at_every_p():
    (curve,) = loss_figures.loss_curves(fake_run("cosface", {"m": 0.35}), "C1", num_classes=6)
    np.testing.assert_allclose(loss_figures._effective_log_a(curve.p, curve.pm), 16 * 0.35, atol=1e-6)
    assert not curve.assumed


def test_arcface_is_drawn_with_cos_theta_from_p_under_the_stated_assumption():
    (curve,) = loss_figures.loss_curves(fake_run("arcface", {"m": 0.5}), "C2", num_classes=6)
    assert curve.assumed
    s, m, c = 16.0, 0.5, 6
    i = int(np.argmin(abs(curve.p - 0.9)))
    p = curve.p[i]
    cos = math.log(p * (c - 1) / (1 - p)) / s  # p = e^{s cos} / (e^{s cos} + C − 1)
    want = s * (cos - math.cos(math.acos(cos) + m))
    assert loss_figures._effective_log_a(curve.p, curve.pm)[i] == pytest.approx(want, rel=1e-6)


def am_lfs_run(intercept0: float) -> plotting.Run:
    params = {f"tau_slope_{i}": 1.0 for i in range(4)}
    params.update({f"tau_intercept_{i}": 0.0 for i in range(4)})
    params["tau_intercept_0"] = intercept0
    return fake_run("am_lfs", params)


def test_am_lfs_tau_is_piecewise_linear_and_may_exceed_p():
    (curve,) = loss_figures.loss_curves(am_lfs_run(0.1), "C3")
    assert curve.tau
    low = curve.p < 0.25
    np.testing.assert_allclose(curve.pm[low], curve.p[low] + 0.1)
    np.testing.assert_allclose(curve.pm[~low], curve.p[~low])
    assert (loss_figures._effective_log_a(curve.p, curve.pm)[low] < 0).all()  # log A < 0 where τ > p


def test_the_losses_figure_is_a_png_with_the_tau_region_marked(tmp_path):
    runs = [am_lfs_run(0.1), fake_run("search_softmax", {"s": 8.0, "m": 0.375})]
    refs = [fake_run("cosface", {"m": 0.35}), fake_run("arcface", {"m": 0.5})]
    path = loss_figures.plot_losses(runs, refs, tmp_path / "losses.png", "test",
                           plotting._colors(["am_lfs", "search_softmax", "cosface", "arcface"]), 6)
    with Image.open(path) as img:
        assert img.format == "PNG" and img.width >= 1000 and img.height >= 400
        pixels = np.asarray(img.convert("RGB")).reshape(-1, 3).astype(int)
    # the red τ(p) > p shading: light red pixels (red channel well above green and blue)
    reddish = (pixels[:, 0] > 220) & (pixels[:, 1] < 200) & (pixels[:, 2] < 200)
    assert reddish.sum() > 200


@pytest.fixture(scope="module")
def compare_folder(compared):
    return compared[0]


@pytest.fixture(scope="module")
def one_run(compare_folder, tmp_path_factory):
    """A copy of one run of the compare (a run folder on its own)."""
    out = tmp_path_factory.mktemp("run") / "ss"
    shutil.copytree(compare_folder / run_plan.safe_name(BENCH) / "search_softmax" / "seed0", out)
    return out


def images_in_html(text: str) -> list[str]:
    return re.findall(r'<img [^>]*src="([^"]+)"', text)


def check_report(folder: Path, figures: list[str]) -> str:
    md = (folder / "report.md").read_text()
    page = (folder / "report.html").read_text()
    for name in figures:
        assert (folder / "figures" / name).is_file(), name
        assert f"(figures/{name})" in md, name
    for link in re.findall(r"\]\((figures/[^)]+)\)", md):
        assert (folder / link).is_file()
    sources = images_in_html(page)
    assert len(sources) == len(re.findall(r"!\[", md))
    assert all(s.startswith("data:image/png;base64,") for s in sources)  # self-contained
    for png in (folder / "figures").glob("*.png"):
        with Image.open(png) as img:
            assert img.format == "PNG" and img.width >= 400
    assert not list(folder.rglob(".*tmp*"))
    return md


def test_a_run_report_has_tables_and_every_figure(one_run, capsys):
    assert cli_main(["report", str(one_run)]) == 0
    assert "report:" in capsys.readouterr().out
    md = check_report(one_run, ["rewards.png", "trajectory.png", "losses.png", "roc.png"])
    assert md.startswith("# lfsearch run: search_softmax on " + BENCH)
    assert "| verification_accuracy |" in md and "## Chosen loss parameters per epoch" in md
    assert "| tar@far=1e-3_all |" in md and "| rank1 |" in md
    snr = pd.read_csv(one_run / "snr.csv")  # the reward signal-to-noise, each epoch
    assert "## Reward signal-to-noise" in md and f"over {snr['snr'].notna().sum()} epochs" in md
    # the ROC, recomputed from the checkpoint, agrees with the AUC measured at test time
    roc = pd.read_csv(one_run / "roc.csv")
    auc = float(np.trapezoid(roc["tpr"], roc["fpr"]))
    results = json.loads((one_run / "results.json").read_text())
    assert auc == pytest.approx(results["test"]["roc_auc"], abs=1e-6)


def test_an_interrupted_run_is_reported_without_test_results(one_run, tmp_path):
    run = tmp_path / "interrupted"
    shutil.copytree(one_run, run)
    (run / "results.json").unlink()
    for f in (run / "figures").glob("*"):
        f.unlink()
    out = report_mod.report(run)
    md = out["markdown"].read_text()
    assert "status **resumable**" in md and "## Test metrics" not in md
    assert not (run / "figures" / "roc.png").exists()
    assert (run / "figures" / "rewards.png").is_file()


def test_a_compare_report_has_the_table_and_every_figure(compare_folder):
    written = report_mod.report(compare_folder)
    tag = run_plan.safe_name(BENCH)
    md = check_report(compare_folder, ["comparison.png", f"rewards_{tag}.png",
                                       f"trajectory_{tag}.png", f"losses_{tag}.png",
                                       f"roc_{tag}.png"])
    # digits' primary metric (chosen in advance): TAR at FAR 1e-3 over all test pairs
    assert "## Comparison" in md and "| method | n | test tar@far=1e-3_all | 95% CI" in md
    assert "verification_accuracy ± CI" in md and "rank1 ± CI" in md
    assert "| search_softmax * | 2 |" in md and "## Runs" in md
    # the searched runs' reward signal-to-noise (the fixed softmax has one candidate: none)
    assert "## Reward signal-to-noise" in md and "| search_softmax | 2 |" in md
    assert len(written["figures"]) == 5
    for seed in (0, 1):  # each run's ROC cached beside it
        assert (compare_folder / tag / "softmax" / f"seed{seed}" / "roc.csv").is_file()


def test_report_errors_are_one_line(tmp_path, capsys):
    assert cli_main(["report", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lfsearch: error:") and err.count("\n") == 1
    (tmp_path / "empty").mkdir()
    assert cli_main(["report", str(tmp_path / "empty")]) == 2
    assert "holds no run folders" in capsys.readouterr().err
    assert not list((tmp_path / "empty").iterdir())
