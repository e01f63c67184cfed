"""Print the option ablation of benchmarks/RESULTS.md from a compare folder's runs.csv.

    python3 benchmarks/ablation_table.py COMPARE_DIR [--reference search_softmax] [--prefix abl_]

Each row is a method whose name starts with the prefix (a copy of the reference space with one
option changed: benchmarks/ablation/*.toml). Columns: test metric mean ± std over seeds, the
paired difference against the reference on the same seeds, d = mean_k(x_k − ref_k), with its
95% Student-t CI and the two-sided paired t-test p, and the test ROC AUC's paired difference.
A CI that holds 0 means the option did not measurably change the result at this many seeds.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd
from scipy import stats


def paired(x: pd.Series, ref: pd.Series) -> tuple[float, float, float, float, int]:
    """(mean difference, CI low, CI high, paired t-test p, n) over the seeds both have."""
    both = pd.concat([x, ref], axis=1, keys=["x", "ref"]).dropna()
    d = both["x"] - both["ref"]
    n = len(d)
    if n < 2:
        return (float(d.mean()) if n else math.nan, math.nan, math.nan, math.nan, n)
    half = stats.t.ppf(0.975, n - 1) * d.std(ddof=1) / math.sqrt(n)
    p = stats.ttest_rel(both["x"], both["ref"]).pvalue if d.std(ddof=1) > 0 else math.nan
    return float(d.mean()), float(d.mean() - half), float(d.mean() + half), float(p), n


def table(compare_dir: Path, reference: str, prefix: str) -> str:
    runs = pd.read_csv(compare_dir / "runs.csv")
    runs = runs[runs["status"] == "complete"]
    lines = []
    for bench, group in runs.groupby("benchmark"):
        by = {m: g.set_index("seed") for m, g in group.groupby("method")}
        if reference not in by:
            continue
        ref = by[reference]
        lines += [f"**{bench}** (reference: {reference}, test {ref['test_metric'].iloc[0]})", "",
                  "| option changed | n | test mean ± std | Δ vs reference [95% CI] (p) "
                  "| Δ test ROC AUC [95% CI] (p) |", "|---|---|---|---|---|"]
        names = [reference] + sorted(m for m in by if m.startswith(prefix))
        for name in names:
            g = by[name]
            metric = g["test/" + g["test_metric"].iloc[0]]
            mean, std = metric.mean(), metric.std(ddof=1)
            if name == reference:
                cells = ["–", "–"]
            else:
                cells = []
                for col in ("test/" + g["test_metric"].iloc[0], "test/roc_auc"):
                    d, lo, hi, p, n = paired(g[col], ref[col])
                    cells.append(f"{d:+.4f} [{lo:+.4f}, {hi:+.4f}] ({p:.3f})")
            label = name[len(prefix):] if name.startswith(prefix) else f"none ({name})"
            lines.append(f"| {label} | {len(metric)} | {mean:.4f} ± {std:.4f} | "
                         f"{cells[0]} | {cells[1]} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("compare_dir", type=Path)
    parser.add_argument("--reference", default="search_softmax")
    parser.add_argument("--prefix", default="abl_")
    args = parser.parse_args()
    print(table(args.compare_dir, args.reference, args.prefix))


if __name__ == "__main__":
    main()
