"""`lfsearch compare`: run every method × seed × benchmark (experiments/run_plan.py), then write
the tables of experiments/statistics.py (table.csv, table.md, runs.csv, compare.json).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd

from lfsearch import paths
from lfsearch.experiments import tuning
from lfsearch.experiments.run_plan import (
    DEFAULT_SPACES,
    CompareProgress,
    collect_runs,
    parse_seeds,
    parse_spaces,
    plan,
    run_one,
    safe_name,
)
from lfsearch.experiments.statistics import summarise, summarise_tests
from lfsearch.experiments.tables import table_markdown
from lfsearch.search import config as config_mod


def write_tables(out: Path, runs: pd.DataFrame, summary: pd.DataFrame,
                 tests: pd.DataFrame | None = None) -> dict[str, Path]:
    """runs.csv, table.csv, table.md (and table_tests.csv with test benchmarks) in `out`,
    each written atomically."""
    paths = {"runs": out / "runs.csv", "table": out / "table.csv", "markdown": out / "table.md"}
    config_mod.atomic_write_text(paths["runs"], runs.to_csv(index=False))
    config_mod.atomic_write_text(paths["table"], summary.to_csv(index=False))
    config_mod.atomic_write_text(paths["markdown"], table_markdown(summary, tests))
    if tests is not None and not tests.empty:
        paths["tests"] = out / "table_tests.csv"
        config_mod.atomic_write_text(paths["tests"], tests.to_csv(index=False))
    return paths


def compare(benchmarks: Sequence[str], spaces: str | Sequence[str] = DEFAULT_SPACES,
            seeds: int | str | Sequence[int] = 5, *, out: str | os.PathLike | None = None,
            epochs: int | None = None, candidates: int | None = None, model: str | None = None,
            device: str | None = None, threads: int | None = None, metric: str | None = None,
            force: bool = False, test_benchmarks: Sequence[str] | None = None,
            runs_dir: str | os.PathLike = "runs",
            tuned: str | Sequence[str] = (), tune_budget: int | None = None,
            tune_pruner: str = "none",
            progress: Callable[[CompareProgress], None] | None = None) -> dict[str, Any]:
    """Run every method x seed x benchmark (complete runs are skipped, interrupted ones resumed),
    then write runs.csv, table.csv, table.md and compare.json in `out`.

    `tuned`: fixed methods also run as compute-matched baselines, each tuned per seed by an
    Optuna study on the validation reward within `tune_budget` candidate-epochs (default: the
    compared searches' E × M); see lfsearch.experiments.tuning.

    Returns {"out", "runs" (DataFrame), "table" (DataFrame), "files", "done" (what happened to
    each run: ran / resumed / skipped)}. test_benchmarks replaces every space's [test]
    benchmarks; "table_tests" (DataFrame) summarises them.
    """
    benchmarks = [benchmarks] if isinstance(benchmarks, str) else list(benchmarks)
    spaces = parse_spaces(spaces)
    seed_list = parse_seeds(seeds)
    overrides = {k: v for k, v in dict(epochs=epochs, candidates=candidates, model=model,
                                       device=device, threads=threads,
                                       test_benchmarks=None if test_benchmarks is None
                                       else list(test_benchmarks)).items() if v is not None}
    if out is None:
        out = Path(runs_dir) / ("compare-" + "-".join(safe_name(b) for b in benchmarks))
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    specs: list[Any] = plan(benchmarks, spaces, seed_list, out, overrides)
    tuned = parse_spaces(tuned) if tuned else []
    if tuned:
        compared = [config_mod.resolve(config_mod.load(s), **overrides) for s in spaces]
        if tune_budget is None:
            tune_budget = tuning.search_budget(compared)
        if tune_budget is None:
            raise ValueError("--tuned needs a budget: a searched method in --spaces (its "
                             "epochs x candidates) or --tune-budget N (candidate-epochs)")
        specs += tuning.plan_tuned(benchmarks, tuned, seed_list, out, overrides, tune_budget,
                                   pruner=tune_pruner,
                                   searched=compared)
    created = not out.exists()
    paths.make_folder(out)  # an --out that cannot be created is refused before any run
    # one process per compare folder: a second one gets one line naming this PID
    with paths.folder_lock(out, "compare folder"):
        done: dict[str, str] = {}
        try:
            for i, spec in enumerate(specs):
                if progress:
                    progress(CompareProgress("start", i, len(specs), spec))

                def inner(event, i=i, spec=spec) -> None:
                    if progress:
                        progress(CompareProgress("search", i, len(specs), spec, event))

                if isinstance(spec, tuning.TunedSpec):
                    what = tuning.run_tuned(spec, overrides, force=force, progress=inner)
                else:
                    what = run_one(spec, overrides, force=force, progress=inner)
                done[str(spec.out.relative_to(out))] = what
                if progress:
                    progress(CompareProgress("skip" if what == "skipped" else "done", i,
                                             len(specs), spec))
        except BaseException:
            _remove_empty_dirs(out, keep_root=not created)
            raise
        runs = collect_runs([s.out for s in specs])
        summary = summarise(runs, metric)
        tests = summarise_tests(runs[runs["status"] == "complete"], metric)
        files = write_tables(out, runs, summary, tests)
        settings = {"benchmarks": benchmarks, "spaces": spaces, "seeds": seed_list,
                    "overrides": overrides, "metric": metric,
                    "tuned": {"spaces": tuned, "budget": tune_budget, "pruner": tune_pruner}
                    if tuned else None,
                    "runs": [{"benchmark": s.benchmark,
                              "method": getattr(s, "label", s.method), "seed": s.seed,
                              "space": s.space, "dir": str(s.out.relative_to(out))} for s in specs]}
        files["compare"] = out / "compare.json"
        config_mod.atomic_write_text(files["compare"], json.dumps(settings, indent=2) + "\n")
        return {"out": out, "runs": runs, "table": summary, "table_tests": tests, "files": files,
                "done": done}


def _remove_empty_dirs(root: Path, keep_root: bool) -> None:
    """Remove folders left empty under root (deepest first) after a failed start."""
    if not root.is_dir():
        return
    for path in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        _rmdir_if_only_lock(path)
    if not keep_root:
        _rmdir_if_only_lock(root)


def _rmdir_if_only_lock(path: Path) -> None:
    """Remove a folder that holds nothing but its lock file (paths.folder_lock)."""
    try:
        if [p.name for p in path.iterdir()] == [paths.LOCK_NAME]:
            (path / paths.LOCK_NAME).unlink()
        path.rmdir()
    except OSError:
        pass
