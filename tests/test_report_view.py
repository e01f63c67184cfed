"""The report looked at as a person would: report.html rendered by headless Chromium (every
image loaded, a full-page screenshot), and figure titles that fit whatever the spec's length.

Chromium and its driver are Debian's `chromium` and `chromium-driver` packages (.ci/run installs
them when missing); Selenium (the [test] extra) drives them. Missing, the test fails, naming
them.
"""

from __future__ import annotations

import base64
import io
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

# the session's tiny compare folder (softmax and search_softmax, 2 seeds) is test_compare's
from test_compare import compared  # noqa: E402,F401  (a session fixture)

from lfsearch import report as report_mod
from lfsearch.report import figures as figures_mod
from lfsearch.report import plotting
from lfsearch.report import roc as roc_mod

LONG_SPEC = ("folder:/home/someone/datasets/omniglot/images_background_small1_and_small2/"
             "omniglot_small?size=28x28&channels=1&pairs=3000&val=0.2&test=0.2")


def _chrome():
    """A headless Chromium under Selenium, with the system's chromedriver."""
    binary = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                   if shutil.which(n)), None)
    driver = shutil.which("chromedriver")
    if binary is None or driver is None:
        pytest.fail("headless Chromium is missing: install Debian's chromium and "
                    f"chromium-driver packages (.ci/run does); found chromium={binary}, "
                    f"chromedriver={driver}")
    try:
        from selenium import webdriver
    except ImportError:
        pytest.fail("selenium is missing: it is a [test] dependency (pip install -e '.[test]')")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000", "--hide-scrollbars"):
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(driver))


def test_the_compare_report_renders_in_chromium_with_every_image_loaded(compared, tmp_path):
    folder = compared[0]
    written = report_mod.report(folder, roc=True)
    page = written["html"]
    figures = {p.name: Image.open(p).size for p in written["figures"]}
    browser = _chrome()
    try:
        browser.get(page.resolve().as_uri())
        assert browser.execute_script("return document.readyState") == "complete"
        images = browser.execute_script(
            "return Array.from(document.images).map(i => ({complete: i.complete, "
            "w: i.naturalWidth, h: i.naturalHeight, shown: i.getBoundingClientRect().width}))")
        view = browser.execute_script("return document.documentElement.clientWidth")
        tables = browser.execute_script("return document.querySelectorAll('table').length")
        height = browser.execute_script("return document.documentElement.scrollHeight")
        shot = browser.execute_cdp_cmd("Page.captureScreenshot",
                                       {"format": "png", "captureBeyondViewport": True})
    finally:
        browser.quit()
    # every figure decoded by the browser at the size the PNG file has, none wider than the page
    assert len(images) == len(figures) == 5
    assert all(i["complete"] and i["w"] > 0 for i in images), images
    assert sorted((i["w"], i["h"]) for i in images) == sorted(figures.values())
    assert all(0 < i["shown"] <= view for i in images), (images, view)
    assert tables >= 2  # the comparison table and the runs table
    png = Image.open(io.BytesIO(base64.b64decode(shot["data"])))
    png.save(tmp_path / "report.png")  # the screenshot, for a person to look at
    assert png.format == "PNG" and png.height >= min(height, 16384) - 2 and png.width >= 1000
    pixels = np.asarray(png.convert("L"), dtype=float)
    assert pixels.std() > 10  # not a blank page: text, tables and figures drawn


def _captured_figures(monkeypatch) -> list:
    """Figures passed to report.plotting._save (which wraps their titles, then writes the PNG)."""
    figures = []
    save = plotting._save

    def capture(fig, path):
        out = save(fig, path)
        figures.append(fig)
        return out

    monkeypatch.setattr(plotting, "_save", capture)
    return figures


def _titles_inside(fig) -> list[tuple[str, tuple[float, float], float]]:
    renderer = fig.canvas.get_renderer()
    texts = [fig._suptitle] if fig._suptitle is not None else []
    texts += [ax.title for ax in fig.axes if ax.get_visible() and ax.title.get_text()]
    out = []
    for t in texts:
        box = t.get_window_extent(renderer)
        out.append((t.get_text(), (box.x0, box.x1), fig.bbox.width))
    return out


@pytest.mark.parametrize("spec", ["digits", LONG_SPEC, "folder:" + "x" * 300])
def test_figure_titles_wrap_inside_the_figure_whatever_the_spec(tmp_path, monkeypatch, spec):
    figures = _captured_figures(monkeypatch)
    methods = ["softmax", "cosface", "arcface", "search_softmax"]
    summary = pd.DataFrame({"benchmark": spec, "metric": "verification_accuracy",
                            "method": methods, "mean": [0.80, 0.82, 0.81, 0.83],
                            "ci_half": [0.01, 0.02, 0.015, 0.01],
                            "candidate_epochs": [10, 10, 10, 40]})
    runs = pd.DataFrame({"benchmark": spec, "method": methods, "status": "complete",
                         "test/verification_accuracy": [0.80, 0.82, 0.81, 0.83]})
    figures_mod.plot_comparison(summary, runs, tmp_path / "comparison.png", {})
    fpr = np.linspace(0, 1, 50)
    roc_mod.plot_roc({"softmax": [(fpr, np.sqrt(fpr))]}, tmp_path / "roc.png",
                 f"{spec}: test ROC", {})
    assert len(figures) == 2
    wanted = {f"{spec}: mean over seeds, error bars 95% CI (y axis does not start at 0)",
              f"{spec}: test ROC"}
    seen = set()
    for fig in figures:
        for text, (x0, x1), width in _titles_inside(fig):
            assert 0 <= x0 and x1 <= width, (text, x0, x1, width)  # nothing clipped
            seen.add("".join(text.split()))
    # wrapping only adds line breaks: every character of each title is still there
    assert {"".join(t.split()) for t in wanted} <= seen
    for name in ("comparison.png", "roc.png"):
        with Image.open(tmp_path / name) as img:
            assert img.format == "PNG"
