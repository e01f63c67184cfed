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
benchmarks, lfsearch/evaluation/heldout.py) get the same table, one block per test benchmark, from the
runs.csv columns ``test[<spec>]/<metric>``.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Sequence

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

BASELINE = "softmax"
CONFIDENCE = 0.95


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
