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
against `softmax`, against the best hand-crafted margin (a TEST ORACLE: the method with the
highest test mean among the fixed-controller methods other than softmax) and against the
`validation-selected best fixed` row: per seed, among every fixed-controller method of the
compare (tuned rows included), the run with the best final validation reward, with its own
test metrics; its compute is the sum of those methods' candidate-epochs (a user who tries
every fixed loss and keeps the best on validation pays for all of them). The metric is the
benchmark's primary metric (PRIMARY_METRICS, chosen in advance, with the reason) unless
--metric names another; EXTRA_METRICS are shown beside it with their CIs.
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
SELECTED = "validation-selected best fixed"

# The primary metric of each benchmark kind, chosen before any result (docs/face_recognition.md):
# open-set kinds with identity labels: TAR at FAR 1e-3 over ALL pairs of the test identities.
#   It uses every image pair (ORL's 80 test images give 2,840 impostor pairs, Omniglot's
#   thousands of images millions), so it is neither saturated nor left to a few thousand
#   sampled pairs, and it reads the low-FAR tail where the margin papers' gains show
#   (IJB-C). FAR 1e-4 would need 10,000 impostor pairs, more than ORL has (NaN there).
# closed-set kinds: top-1 accuracy (the only protocol they have).
# lfw, bin (pairs without identity labels): the protocol's 10-fold verification accuracy.
PRIMARY_METRICS = {
    "digits": "tar@far=1e-3_all", "mnist-open": "tar@far=1e-3_all",
    "cifar10-open": "tar@far=1e-3_all", "cifar100-open": "tar@far=1e-3_all",
    "folder": "tar@far=1e-3_all", "rec": "tar@far=1e-3_all",
    "digits-closed": "accuracy", "mnist": "accuracy", "cifar10": "accuracy",
    "cifar100": "accuracy", "folder-closed": "accuracy",
    "lfw": "verification_accuracy", "bin": "verification_accuracy",
}
# shown beside the primary metric (mean ± 95% CI half-width) where the runs measured them
EXTRA_METRICS = ("verification_accuracy", "tar@far=1e-3_all", "tar@far=1e-4_all", "rank1")


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
    """The test-oracle best margin: the fixed-controller method other than softmax with the
    highest TEST mean (None if none). It peeks at the test split; `SELECTED` does not."""
    cand = summary[(summary["controller"] == "fixed") & (summary["method"] != BASELINE)]
    cand = cand[np.isfinite(cand["mean"].astype(float))]
    if cand.empty:
        return None
    return str(cand.sort_values(["mean", "method"], ascending=[False, True]).iloc[0]["method"])


def primary_metric(benchmark: str) -> str | None:
    """The metric chosen in advance for a benchmark spec's kind (PRIMARY_METRICS), or None."""
    kind = benchmark.strip().split("?", 1)[0].split(":", 1)[0].lower()
    return PRIMARY_METRICS.get(kind)


def _has(group: pd.DataFrame, key: str) -> bool:
    col = f"test/{key}"
    return col in group and bool(np.isfinite(group[col].astype(float)).any())


def select_on_validation(group: pd.DataFrame) -> pd.DataFrame:
    """The `validation-selected best fixed` runs of one benchmark: for each seed that every
    fixed-controller method (tuned ones included) completed with a finite
    final_validation_reward, the run of the highest validation reward (the first method in
    table order on ties), indexed by seed, with a column `selected` naming its method. Empty
    with fewer than two fixed methods."""
    fixed = group[group["controller"] == "fixed"]
    methods = list(dict.fromkeys(fixed["method"]))
    if len(methods) < 2 or "final_validation_reward" not in fixed:
        return fixed[:0]
    chosen = []
    for seed, runs in fixed.groupby("seed", sort=True):
        reward = runs["final_validation_reward"].astype(float)
        if set(runs["method"]) != set(methods) or not np.isfinite(reward).all():
            continue
        order = runs.assign(_rank=[methods.index(m) for m in runs["method"]], _reward=reward)
        best = order.sort_values(["_reward", "_rank"], ascending=[False, True]).iloc[0]
        chosen.append(best.drop(["_rank", "_reward"]))
    if not chosen:
        return fixed[:0]
    out = pd.DataFrame(chosen).assign(selected=lambda f: f["method"])
    return out.assign(method=SELECTED, controller="selected",
                      candidate_epochs=float(sum(fixed.groupby("method")["candidate_epochs"]
                                                 .mean())),
                      candidates=len(methods))


def summarise(runs: pd.DataFrame, metric: str | None = None,
              confidence: float = CONFIDENCE) -> pd.DataFrame:
    """The comparison table from one row per run (see `collect_runs`).

    Uses the completed runs only. `metric` is a test metric key (default: the benchmark's
    primary metric, PRIMARY_METRICS, when its runs measured it; else each run's own
    test_metric, which must then agree within a benchmark). Adds the `validation-selected
    best fixed` row (`select_on_validation`) and, per method, the mean and CI half-width of
    each of EXTRA_METRICS the runs measured (columns <metric>:mean, <metric>:ci_half).
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
        primary = primary_metric(str(bench))
        key = metric or (primary if primary and _has(group, primary)
                         else _single_metric(group, bench))
        col = f"test/{key}"
        if col not in group:
            known = sorted(c[5:] for c in group.columns if c.startswith("test/"))
            raise ValueError(f"metric {key!r} is not among the test metrics of {bench}; "
                             f"allowed: {', '.join(known)}")
        selected = select_on_validation(group)
        frames = {m: g.set_index("seed") for m, g in group.groupby("method", sort=False)}
        if not selected.empty:
            frames[SELECTED] = selected.set_index("seed")
        values = {m: f[col].astype(float) for m, f in frames.items()}
        extras = [x for x in EXTRA_METRICS if x != key and _has(group, x)]
        summary = []
        for method, g in frames.items():
            stats_ = mean_ci(values[method].tolist(), confidence)
            row = {
                "benchmark": bench, "method": method, "controller": g["controller"].iloc[0],
                "metric": key, "n": stats_["n"], "mean": stats_["mean"], "std": stats_["std"],
                "ci_low": stats_["ci_low"], "ci_high": stats_["ci_high"],
                "ci_half": stats_["ci_half"],
                "candidate_epochs": float(g["candidate_epochs"].mean()),
                "epochs": int(g["epochs"].iloc[0]), "candidates": int(g["candidates"].iloc[0]),
                "seconds": (float(group[group["controller"] == "fixed"].groupby("method")
                                  ["seconds"].mean().sum()) if method == SELECTED
                            else float(g["seconds"].mean())) if "seconds" in g else math.nan,
                "selected": (", ".join(f"{m}×{c}" for m, c in
                                       g["selected"].value_counts(sort=False).items())
                             if method == SELECTED else ""),
            }
            for x in extras:
                s = mean_ci(g[f"test/{x}"].astype(float).tolist(), confidence)
                row[f"{x}:mean"], row[f"{x}:ci_half"] = s["mean"], s["ci_half"]
            summary.append(row)
        table = pd.DataFrame(summary)
        best = best_handcrafted(table)
        for row in summary:
            refs = (("softmax", BASELINE if BASELINE in values else None),
                    ("best_margin", best), ("selected", SELECTED if SELECTED in values else None))
            for label, ref in refs:
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
        own = primary_metric(spec)  # the test benchmark's own kind picks its primary metric
        key = (metric if metric is not None and f"test/{metric}" in view
               else own if metric is None and own and _has(view, own) else None)
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
