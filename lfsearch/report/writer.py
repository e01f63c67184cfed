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
               its 16th–84th percentile band shaded (lfsearch/report/member_figures.py);
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

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lfsearch.experiments import compare as compare_mod
from lfsearch.experiments import run_plan, statistics
from lfsearch.experiments import tables as tables_mod
from lfsearch.report import member_figures
from lfsearch.report.document import Document, _fmt, _write_document
from lfsearch.report.figures import plot_comparison, plot_rewards, plot_trajectories
from lfsearch.report.loss_figures import _describe_loss, _num_classes, default_references, plot_losses
from lfsearch.report.plotting import _colors
from lfsearch.report.roc import plot_roc, roc_points
from lfsearch.report.runs import load_run
from lfsearch.search import config as config_mod


# ------------------------------------------------------------------------------ run report
def test_benchmarks_table(entries: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """One row per test benchmark: its main metric, the verification metrics, or its error."""
    keys = ("verification_accuracy", "verification_accuracy_std", "roc_auc", "eer",
            "tar@far=1e-5", "tar@far=1e-4", "tar@far=1e-3", "rank1", "accuracy")
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


SNR_NOTE = ("spread: sample std of the epoch's candidate rewards; noise: bootstrap std of the "
            "chosen candidate's reward over its validation pairs (or images); SNR = spread / "
            "noise (lfsearch/evaluation/reward_noise.py). Below 1 the candidates differ by less "
            "than one reward's own noise.")


def snr_section(doc: Document, run: Any) -> None:
    """The run's reward signal-to-noise per epoch (snr.csv) and its median, flagged below 1."""
    if run.snr.empty or "snr" not in run.snr:
        return
    snr = run.snr["snr"].astype(float)
    finite = snr[snr.notna()]
    doc.heading(2, "Reward signal-to-noise")
    if finite.empty:
        doc.para("One candidate per epoch: no spread to compare with the reward's noise "
                 f"(median bootstrap noise {_fmt(float(run.snr['reward_noise'].median()))}).")
        return
    median = float(finite.median())
    doc.para(f"Median SNR over {len(finite)} epochs: **{median:.2f}**."
             + (" **Below 1: the controller is learning from noise** (more validation pairs, "
                "`[reward] pairs`, or a smoother reward would help)." if median < 1 else ""))
    doc.table(pd.DataFrame([{"epoch": int(r["epoch"]) + 1, "candidates": int(r["candidates"]),
                             "spread": _fmt(float(r["reward_spread"])),
                             "noise": _fmt(float(r["reward_noise"])),
                             "SNR": _fmt(float(r["snr"]))} for _, r in run.snr.iterrows()]),
              SNR_NOTE)


def snr_table(runs: list[Any]) -> pd.DataFrame:
    """benchmark, method, runs, median SNR, flagged: the searched runs' reward_snr summaries."""
    rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in runs:
        entry = (r.results or {}).get("reward_snr") or {}
        if entry.get("median") is not None:
            rows.setdefault((r.benchmark, r.method), []).append(entry)
    return pd.DataFrame([{"benchmark": b, "method": m, "runs": len(e),
                          "median SNR": _fmt(float(np.median([x["median"] for x in e]))),
                          "flagged": sum(bool(x.get("flagged")) for x in e)}
                         for (b, m), e in rows.items()])


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
    snr_section(doc, run)
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
    p = member_figures.plot_changes([run], figdir / "changes.png",
                                    f"{run.method}: negatives and class weights", colors)
    if p is not None:
        doc.figure(p, member_figures.CAPTION)
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
    dirs = run_plan.find_run_dirs(folder)
    if not dirs:
        raise FileNotFoundError(f"{folder} holds no run folders (config.toml + manifest.json) "
                                "and is not a run folder itself")
    settings_path = folder / "compare.json"
    settings = json.loads(settings_path.read_text()) if settings_path.is_file() else {}
    dirs = _ordered(folder, dirs, settings)
    runs_frame = run_plan.collect_runs(dirs)
    metric = settings.get("metric")
    complete = runs_frame[runs_frame["status"] == "complete"]
    summary = statistics.summarise(complete, metric) if not complete.empty else pd.DataFrame()
    tests = statistics.summarise_tests(complete, metric) if not complete.empty else None
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
        doc.table(tables_mod.display_table(summary), tables_mod.TABLE_NOTE)
        p = plot_comparison(summary, runs_frame, figdir / "comparison.png", colors)
        doc.figure(p, "Test metric per method: bar = mean over seeds, error bar = 95% CI, dots = "
                      "seeds; under each name the training compute in candidate-epochs.")
        figures.append(p)
    snr = snr_table(runs)
    if not snr.empty:
        doc.heading(2, "Reward signal-to-noise")
        doc.table(snr, "Per method with more than one candidate per epoch: the median over its "
                       "runs of each run's median SNR (results.json reward_snr), and how many "
                       "runs were flagged (median SNR < 1: learning from noise). " + SNR_NOTE)
    for spec, block in tables_mod.test_blocks(tests):
        doc.heading(2, f"Test benchmark {spec}")
        doc.para("The final models of the runs above, tested once on this benchmark's test "
                 "split (a [test] benchmark: never seen by the search).")
        doc.table(tables_mod.display_table(block), tables_mod.TABLE_NOTE)
    for bench in benches:
        b_runs = [r for r in runs if r.benchmark == bench]
        tag = run_plan.safe_name(bench)
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
        p = member_figures.plot_changes(b_runs, figdir / f"changes_{tag}.png",
                                        f"{bench}: negatives and class weights", colors)
        if p is not None:
            doc.figure(p, member_figures.CAPTION)
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
        for spec in statistics.test_benchmark_specs(complete):  # each one's main metric
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
        group = 0 if method == statistics.BASELINE else 1 if cfg["controller"]["kind"] == "fixed" else 2
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
