"""Compare methods across seeds and benchmarks: run every method x seed x benchmark, then
summarise the test metric with confidence intervals and paired tests.

Layout of a compare folder::

    <out>/
      <benchmark>/<method>/seed<k>/   one run folder per run (see lfsearch.search)
      runs.csv                        one row per run: every test metric, compute, status
      table.csv, table.md             the comparison (below)
      table_tests.csv                 the same comparison on each [test] benchmark (if any)
      compare.json                    the settings and the list of runs

The table has one row per benchmark and method, over its n seeds x_1..x_n of the test metric:

    mean  = Σ x_i / n
    std   = sqrt(Σ (x_i − mean)² / (n − 1))                    (sample standard deviation)
    CI95  = mean ± t_{0.975, n−1} · std / sqrt(n)              (Student t interval)

and paired tests over the seeds both methods ran (seed k of method A against seed k of
method B: same data split, same initial weights), with d_k = x_k(A) − x_k(B):

    t = mean(d) / (std(d) / sqrt(n)),   p = 2·P(T_{n−1} > |t|)  (paired t-test, two-sided)

plus the Wilcoxon signed-rank p-value of the same differences. Each method is tested
against `softmax` and against the best hand-crafted margin: the method with the highest
mean among the fixed-controller methods other than softmax on that benchmark.
The compute column is the training cost in candidate-epochs (epochs x candidates M), so a
search is judged against baselines given the same budget. Test benchmarks ([test]
benchmarks, lfsearch/heldout.py) get the same table, one block per test benchmark, from the
runs.csv columns ``test[<spec>]/<metric>``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from lfsearch import config as config_mod
from lfsearch import tuning
from lfsearch import paths

log = logging.getLogger(__name__)

DEFAULT_SPACES = ("softmax", "cosface", "arcface", "random_softmax", "search_softmax")
BASELINE = "softmax"
CONFIDENCE = 0.95
MAX_SEEDS = 1000  # a count beyond this is a typo, not a compare


# ------------------------------------------------------------------------------- statistics
def t_quantile(q: float, df: int) -> float:
    """The q-quantile of Student's t distribution with df degrees of freedom."""
    from scipy import stats

    return float(stats.t.ppf(q, df))


def mean_ci(values: Sequence[float], confidence: float = CONFIDENCE) -> dict[str, float]:
    """n, mean, sample std (ddof 1) and the Student-t confidence interval of the mean.

    half = t_{(1+c)/2, n−1} · std / sqrt(n); with n < 2 the std and interval are NaN.
    """
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    n = int(x.size)
    out = {"n": n, "mean": math.nan, "std": math.nan, "ci_half": math.nan,
           "ci_low": math.nan, "ci_high": math.nan}
    if n == 0:
        return out
    out["mean"] = float(x.mean())
    if n < 2:
        return out
    std = float(x.std(ddof=1))
    half = t_quantile((1.0 + confidence) / 2.0, n - 1) * std / math.sqrt(n)
    out.update(std=std, ci_half=half, ci_low=out["mean"] - half, ci_high=out["mean"] + half)
    return out


def paired_test(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Paired t-test (two-sided) and Wilcoxon signed-rank test of d = a − b.

    t = mean(d) / (std(d, ddof=1) / sqrt(n)), p = 2·sf_t(|t|, n − 1). NaN where it is not
    defined: fewer than 2 pairs, or all differences equal (std(d) = 0).
    """
    from scipy import stats

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired_test needs equally long samples; got {a.size} and {b.size}")
    d = a - b
    d = d[np.isfinite(d)]
    n = int(d.size)
    out = {"n": n, "diff": float(d.mean()) if n else math.nan, "t": math.nan, "p": math.nan,
           "wilcoxon_p": math.nan}
    if n < 2:
        return out
    sd = float(d.std(ddof=1))
    if sd > 0:
        t = out["diff"] / (sd / math.sqrt(n))
        out["t"] = float(t)
        out["p"] = float(2.0 * stats.t.sf(abs(t), n - 1))
    if np.any(d != 0):
        try:
            out["wilcoxon_p"] = float(stats.wilcoxon(d).pvalue)
        except ValueError:  # pragma: no cover - scipy refuses degenerate inputs
            pass
    return out


def best_handcrafted(summary: pd.DataFrame) -> str | None:
    """The fixed-controller method other than softmax with the highest mean (None if none)."""
    cand = summary[(summary["controller"] == "fixed") & (summary["method"] != BASELINE)]
    cand = cand[np.isfinite(cand["mean"].astype(float))]
    if cand.empty:
        return None
    return str(cand.sort_values(["mean", "method"], ascending=[False, True]).iloc[0]["method"])


def summarise(runs: pd.DataFrame, metric: str | None = None,
              confidence: float = CONFIDENCE) -> pd.DataFrame:
    """The comparison table from one row per run (see `collect_runs`).

    Uses the completed runs only. `metric` is a test metric key (default: each run's own
    test_metric, which must then agree within a benchmark).
    """
    runs = runs[runs["status"] == "complete"] if "status" in runs else runs
    twice = runs[runs.duplicated(["benchmark", "method", "seed"], keep=False)]
    if not twice.empty:
        r = twice.iloc[0]
        same = twice[(twice["method"] == r["method"]) & (twice["seed"] == r["seed"])
                     & (twice["benchmark"] == r["benchmark"])]
        dirs = ", ".join(same["run_dir"].astype(str)) if "run_dir" in same else "?"
        raise ValueError(f"two complete runs of {r['method']} seed {r['seed']} on "
                         f"{r['benchmark']} ({dirs}); a comparison needs one per seed: "
                         "report their folders separately")
    rows: list[dict[str, Any]] = []
    for bench, group in runs.groupby("benchmark", sort=False):
        key = metric or _single_metric(group, bench)
        col = f"test/{key}"
        if col not in group:
            known = sorted(c[5:] for c in group.columns if c.startswith("test/"))
            raise ValueError(f"metric {key!r} is not among the test metrics of {bench}; "
                             f"allowed: {', '.join(known)}")
        values = {m: g.set_index("seed")[col].astype(float) for m, g in group.groupby("method",
                                                                                      sort=False)}
        summary = []
        for method, g in group.groupby("method", sort=False):
            stats_ = mean_ci(values[method].tolist(), confidence)
            summary.append({
                "benchmark": bench, "method": method, "controller": g["controller"].iloc[0],
                "metric": key, "n": stats_["n"], "mean": stats_["mean"], "std": stats_["std"],
                "ci_low": stats_["ci_low"], "ci_high": stats_["ci_high"],
                "ci_half": stats_["ci_half"],
                "candidate_epochs": float(g["candidate_epochs"].mean()),
                "epochs": int(g["epochs"].iloc[0]), "candidates": int(g["candidates"].iloc[0]),
                "seconds": float(g["seconds"].mean()) if "seconds" in g else math.nan,
            })
        table = pd.DataFrame(summary)
        best = best_handcrafted(table)
        for row in summary:
            for label, ref in (("softmax", BASELINE if BASELINE in values else None),
                               ("best_margin", best)):
                if label == "best_margin":
                    row["best_margin"] = best or ""
                test = {"n": 0, "diff": math.nan, "t": math.nan, "p": math.nan,
                        "wilcoxon_p": math.nan}
                if ref is not None and ref != row["method"]:
                    a, b = values[row["method"]], values[ref]
                    seeds = sorted(set(a.index) & set(b.index))
                    test = paired_test(a.loc[seeds].tolist(), b.loc[seeds].tolist())
                for k in ("diff", "t", "p", "wilcoxon_p"):
                    row[f"vs_{label}_{k}"] = test[k]
                row[f"vs_{label}_n"] = test["n"]
            rows.append(row)
    return pd.DataFrame(rows)


def test_benchmark_specs(runs: pd.DataFrame) -> list[str]:
    """The [test] benchmarks found in runs.csv columns test[<spec>]/<metric>, in order."""
    return list(dict.fromkeys(c[5:c.rindex("]:metric")] for c in runs.columns
                              if c.startswith("test[") and c.endswith("]:metric")))


def summarise_tests(runs: pd.DataFrame, metric: str | None = None,
                    confidence: float = CONFIDENCE) -> pd.DataFrame:
    """`summarise` on every test benchmark: the same rows (mean, CI, paired tests) for each
    (training benchmark, test benchmark), with a test_benchmark column. Only the runs that
    tested on it count (a run without it is not in its n)."""
    frames = []
    for spec in test_benchmark_specs(runs):
        prefix = f"test[{spec}]"
        have = runs[runs[f"{prefix}:metric"].notna()] if f"{prefix}:metric" in runs else runs[:0]
        if have.empty:
            continue
        cols = {c: "test/" + c[len(prefix) + 1:] for c in have.columns
                if c.startswith(prefix + "/")}
        view = have.drop(columns=[c for c in have.columns if c.startswith("test/")])
        view = view.rename(columns=cols).assign(test_metric=have[f"{prefix}:metric"])
        key = metric if metric is not None and f"test/{metric}" in view else None
        table = summarise(view, key, confidence)
        table.insert(1, "test_benchmark", spec)
        frames.append(table)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _single_metric(group: pd.DataFrame, bench: str) -> str:
    metrics = sorted(set(group["test_metric"]))
    if len(metrics) != 1:
        raise ValueError(f"runs on {bench} report different test metrics ({', '.join(metrics)}); "
                         "choose one with --metric")
    return metrics[0]


# --------------------------------------------------------------------------------- formatting
def _fmt(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{digits}f}"


def _fmt_p(p: float) -> str:
    if p is None or not math.isfinite(p):
        return "–"
    return "<0.001" if p < 1e-3 else f"{p:.3f}"


def _fmt_test(row: dict[str, Any], label: str) -> str:
    diff = row[f"vs_{label}_diff"]
    if not math.isfinite(diff):
        return "–"
    text = f"{diff:+.4f}"
    if math.isfinite(row[f"vs_{label}_t"]):
        text += f" (t={row[f'vs_{label}_t']:.2f}, p={_fmt_p(row[f'vs_{label}_p'])}"
        if math.isfinite(row[f"vs_{label}_wilcoxon_p"]):
            text += f", W p={_fmt_p(row[f'vs_{label}_wilcoxon_p'])}"
        text += ")"
    return text


def display_table(summary: pd.DataFrame) -> pd.DataFrame:
    """The comparison as text columns, for Markdown and HTML."""
    out = []
    for row in summary.to_dict("records"):
        out.append({
            "benchmark": row["benchmark"],
            "method": row["method"] + ("" if row["controller"] == "fixed" else " *"),
            "n": str(row["n"]),
            f"test {row['metric']}": f"{_fmt(row['mean'])} ± {_fmt(row['std'])}",
            "95% CI": f"[{_fmt(row['ci_low'])}, {_fmt(row['ci_high'])}]",
            "vs softmax": _fmt_test(row, "softmax"),
            "vs best margin": ((row["best_margin"] + ": ") if row["best_margin"]
                               and row["best_margin"] != row["method"] else "")
                              + _fmt_test(row, "best_margin"),
            "candidate-epochs": f"{row['candidate_epochs']:g}",
        })
    return pd.DataFrame(out)


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of a DataFrame's text (| escaped)."""
    cols = [str(c) for c in frame.columns]

    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in cols) + " |",
             "|" + "|".join("---" for _ in cols) + "|"]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(cell(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


TABLE_NOTE = (
    "mean ± sample std over seeds; 95% CI: Student t interval of the mean; "
    "vs X: mean paired difference over seeds (this method − X) with the paired t-test "
    "(t, two-sided p) and the Wilcoxon signed-rank p (W p); – where undefined (fewer than 2 "
    "pairs or no variation). Best margin: the fixed-controller method other than softmax "
    "with the highest mean (a tuned one included). * marks a searched loss. candidate-epochs: "
    "training compute (epochs × candidates per epoch). X (tuned, B cand-epochs): X tuned per "
    "seed by an Optuna study on the validation reward within B candidate-epochs, the same "
    "budget as the searches; B counts every trial."
)


def table_markdown(summary: pd.DataFrame, tests: pd.DataFrame | None = None) -> str:
    text = markdown_table(display_table(summary)) + "\n" + TABLE_NOTE + "\n"
    for spec, block in test_blocks(tests):
        text += f"\n## Test benchmark {spec}\n\n" + markdown_table(display_table(block)) + "\n"
    return text


def test_blocks(tests: pd.DataFrame | None) -> list[tuple[str, pd.DataFrame]]:
    """(test benchmark spec, its summarise rows) for every test benchmark of `tests`."""
    if tests is None or tests.empty:
        return []
    return [(spec, block.drop(columns="test_benchmark"))
            for spec, block in tests.groupby("test_benchmark", sort=False)]


# ------------------------------------------------------------------------------------- runs
@dataclass(frozen=True)
class RunSpec:
    """One run of a compare: a search space on a benchmark with a seed, in its folder."""

    space: str
    method: str
    benchmark: str
    seed: int
    out: Path


@dataclass
class CompareProgress:
    """A progress event: a run starts ('start'), was skipped as complete ('skip'), ended
    ('done'), or a candidate of the current run finished ('search', with `search` the event
    of lfsearch.search)."""

    kind: str
    index: int
    total: int
    run: RunSpec
    search: Any = None


def safe_name(text: str) -> str:
    """A benchmark spec made safe as a folder name (mnist:/data/x -> mnist__data_x)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text).strip("_") or "benchmark"


def parse_seeds(seeds: int | str | Iterable[int]) -> list[int]:
    """5 -> [0..4]; '0,3,7' -> [0, 3, 7]; '2-4' -> [2, 3, 4]; a list as is."""
    if isinstance(seeds, bool):
        raise ValueError("--seeds must be a count (5) or a list (0,3,7 or 2-4)")
    if isinstance(seeds, int):
        if not 1 <= seeds <= MAX_SEEDS:
            raise ValueError(f"--seeds must be a count in [1, {MAX_SEEDS}] or a list "
                             f"(0,3,7 or 2-4); got {seeds}")
        return list(range(seeds))
    if isinstance(seeds, str):
        text = seeds.strip()
        if text.isdigit():
            return parse_seeds(int(text))
        out: list[int] = []
        for part in filter(None, (p.strip() for p in text.split(","))):
            lo, dash, hi = part.partition("-")
            if not (lo.strip().isdigit() and (not dash or hi.strip().isdigit())):
                raise ValueError(f"--seeds must be a count (5) or a list (0,3,7 or 2-4); "
                                 f"got {seeds!r}")
            if dash and int(hi) - int(lo) >= MAX_SEEDS:
                raise ValueError(f"--seeds {part}: more than {MAX_SEEDS} seeds")
            out.extend(range(int(lo), int(hi) + 1) if dash else [int(part)])
            if len(out) > MAX_SEEDS:
                raise ValueError(f"--seeds: more than {MAX_SEEDS} seeds")
        seeds = out
    values = [int(s) for s in seeds]
    if not values or any(s < 0 for s in values) or len(set(values)) != len(values):
        raise ValueError(f"--seeds must list distinct integers >= 0; got {values}")
    if len(values) > MAX_SEEDS or max(values) > config_mod.MAX_SEED:
        raise ValueError(f"--seeds must list at most {MAX_SEEDS} seeds, each in "
                         f"[0, {config_mod.MAX_SEED}]")
    return values


def parse_spaces(spaces: str | Sequence[str]) -> list[str]:
    """'softmax,cosface' or a list -> a list of search-space names or paths."""
    items = spaces.split(",") if isinstance(spaces, str) else list(spaces)
    items = [s.strip() for s in items if s and s.strip()]
    if not items:
        raise ValueError("--spaces must name at least one search space, e.g. "
                         + ",".join(DEFAULT_SPACES))
    return items


def plan(benchmarks: Sequence[str], spaces: Sequence[str], seeds: Sequence[int], out: Path,
         overrides: dict[str, Any]) -> list[RunSpec]:
    """Every (benchmark, method, seed) run, validated before anything is trained."""
    from lfsearch import data

    if not benchmarks:
        raise ValueError("--benchmark must be given at least once, e.g. --benchmark digits")
    if len(set(benchmarks)) != len(benchmarks):
        raise ValueError(f"--benchmark repeats a benchmark: {', '.join(benchmarks)}")
    for b in benchmarks:
        kind, _, _ = data.parse_spec(b)
        if kind not in data.available():
            raise ValueError(f"--benchmark {b!r}: kind {kind!r} is not known; allowed: "
                             f"{', '.join(data.available())}")
    methods: dict[str, str] = {}
    for space in spaces:
        for b in benchmarks:  # also checks [test] benchmarks against every training benchmark
            cfg = config_mod.resolve(config_mod.load(space), benchmark=b, **overrides)
        name = cfg["method"]["name"]
        if name in methods:
            raise ValueError(f"--spaces: method {name!r} appears twice ({methods[name]} and "
                             f"{space}); each method needs its own name ([method] name)")
        methods[name] = space
    folders = {safe_name(b) for b in benchmarks}
    if len(folders) != len(benchmarks):
        raise ValueError("--benchmark: two benchmarks map to the same folder name; "
                         f"got {', '.join(benchmarks)}")
    return [RunSpec(space, method, bench, seed, out / safe_name(bench) / method / f"seed{seed}")
            for bench in benchmarks for method, space in methods.items() for seed in seeds]


def run_state(folder: Path) -> str:
    """'complete', 'resumable' (a checkpoint to continue from), 'stale' (a folder with no
    completed epoch) or 'missing'."""
    if not folder.exists():
        return "missing"
    manifest = folder / "manifest.json"
    if manifest.is_file() and (folder / "results.json").is_file():
        try:
            if json.loads(manifest.read_text()).get("status") == "complete":
                return "complete"
        except (OSError, json.JSONDecodeError):
            pass
    if (folder / "checkpoint.pt").is_file() and (folder / "config.toml").is_file():
        return "resumable"
    return "stale"


def _config_differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    keys = sorted((set(a) | set(b)) - {"_source"})
    diffs = []
    for k in keys:
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            diffs += _config_differences(va, vb, f"{prefix}{k}.")
        elif va != vb:
            diffs.append(f"{prefix}{k}")
    return diffs


def _check_existing(spec: RunSpec, overrides: dict[str, Any]) -> None:
    """A run found in the folder must be the run this compare asks for."""
    want = config_mod.resolve(config_mod.load(spec.space), benchmark=spec.benchmark,
                              seed=spec.seed, **overrides)
    have = config_mod.load(spec.out / "config.toml")
    # the device and thread count do not change what a run is (a CPU run may be finished on
    # a GPU, or skipped by a compare given another --threads)
    diffs = [d for d in _config_differences(want, have) if d not in ("run.device", "run.threads")]
    if diffs:
        raise ValueError(f"{spec.out} holds a run with a different configuration "
                         f"({', '.join(diffs[:5])}); use another --out, or --force to redo it")


def run_one(spec: RunSpec, overrides: dict[str, Any], *, force: bool = False,
            progress: Callable[[Any], None] | None = None) -> str:
    """Run, resume or skip one run; returns what was done: skipped, resumed, ran."""
    from lfsearch.search import search

    state = "missing" if force else run_state(spec.out)
    if state in ("complete", "resumable"):
        _check_existing(spec, overrides)
    if state == "complete":
        return "skipped"
    kwargs = dict(benchmark=spec.benchmark, seed=spec.seed, out=spec.out, progress=progress,
                  **overrides)
    if state == "resumable":
        search(spec.space, resume=True, **kwargs)
        return "resumed"
    search(spec.space, force=force or state == "stale", **kwargs)
    return "ran"


def _read_run(folder: Path) -> dict[str, Any] | None:
    """One row of runs.csv from a run folder (None when it holds no run)."""
    config_path = folder / "config.toml"
    if not config_path.is_file():
        return None
    cfg = config_mod.load(config_path)
    state = run_state(folder)
    row: dict[str, Any] = {
        "benchmark": cfg["training"]["benchmark"], "method": cfg["method"]["name"],
        "seed": int(cfg["run"]["seed"]), "controller": cfg["controller"]["kind"],
        "loss": cfg["loss"]["name"], "status": state, "epochs": int(cfg["training"]["epochs"]),
        "candidates": int(cfg["controller"]["candidates"]), "run_dir": str(folder),
    }
    if state == "complete":
        results = json.loads((folder / "results.json").read_text())
        manifest = json.loads((folder / "manifest.json").read_text())
        row.update(candidate_epochs=results["candidate_epochs"],
                   test_metric=results["test_metric"],
                   final_validation_reward=results.get("final_validation_reward"),
                   seconds=manifest.get("search_seconds_this_session", math.nan)
                   if not manifest.get("resumed") else math.nan)
        for k, v in results["test"].items():
            row[f"test/{k}"] = math.nan if v is None else float(v)
        for spec, entry in (results.get("test_benchmarks") or {}).items():
            if "metrics" in entry:
                row[f"test[{spec}]:metric"] = entry["metric"]
                for k, v in entry["metrics"].items():
                    row[f"test[{spec}]/{k}"] = math.nan if v is None else float(v)
        chosen = results.get("chosen_params") or []
        for k, v in (chosen[-1] if chosen else {}).items():
            row[f"final/{k}"] = v
    return row


def find_run_dirs(root: Path) -> list[Path]:
    """Every run folder (one holding config.toml and manifest.json) under root, sorted."""
    root = Path(root)
    found = {p.parent for p in root.rglob("manifest.json") if (p.parent / "config.toml").is_file()
             and not tuning.is_trial_run(p.parent, root)}  # a tuning study's trials are not runs
    return sorted(found, key=lambda p: [(int(s[4:]) if s.startswith("seed") and s[4:].isdigit()
                                         else -1, s) for s in p.relative_to(root).parts])


def collect_runs(folders: Iterable[Path]) -> pd.DataFrame:
    """One row per run folder: benchmark, method, seed, controller, status, compute and every
    test metric (columns test/<metric>) and final chosen parameter (final/<p>)."""
    rows = [r for r in (_read_run(Path(f)) for f in folders) if r is not None]
    if not rows:
        raise FileNotFoundError("no run folders found (expected config.toml and manifest.json)")
    frame = pd.DataFrame(rows)
    if "candidate_epochs" not in frame:
        frame["candidate_epochs"] = math.nan
    return frame


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
            progress: Callable[[CompareProgress], None] | None = None) -> dict[str, Any]:
    """Run every method x seed x benchmark (complete runs are skipped, interrupted ones resumed),
    then write runs.csv, table.csv, table.md and compare.json in `out`.

    `tuned`: fixed methods also run as compute-matched baselines, each tuned per seed by an
    Optuna study on the validation reward within `tune_budget` candidate-epochs (default: the
    compared searches' E × M); see lfsearch.tuning.

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
        if tune_budget is None:
            tune_budget = tuning.search_budget(
                [config_mod.resolve(config_mod.load(s), **overrides) for s in spaces])
        if tune_budget is None:
            raise ValueError("--tuned needs a budget: a searched method in --spaces (its "
                             "epochs x candidates) or --tune-budget N (candidate-epochs)")
        specs += tuning.plan_tuned(benchmarks, tuned, seed_list, out, overrides, tune_budget)
    created = not out.exists()
    paths.make_folder(out)  # an --out that cannot be created is refused before any run
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
                "tuned": {"spaces": tuned, "budget": tune_budget} if tuned else None,
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
        try:
            path.rmdir()
        except OSError:
            pass
    if not keep_root:
        try:
            root.rmdir()
        except OSError:
            pass
