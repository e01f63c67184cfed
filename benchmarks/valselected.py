"""A search against the validation-selected best fixed method, paired by seed (issue 19).

    python benchmarks/valselected.py --fixed runs/results/omni_E32 [--retested runs/reeval/omni_E32] \
        --search abl_top2=runs/levers/omni_E32_top2 --metric tar@far=1e-3_all

Per seed k, among the fixed methods (--methods, default softmax, cosface, sphereface, arcface)
the run with the best final VALIDATION reward is chosen (no test peeking); its test metric is
compared with the search's test metric of the same seed:

    d_k = search_k − selected_k,   mean d ± t_{0.975, n−1} · sd(d) / √n,   paired t-test p

The test-oracle row is the fixed method other than softmax with the best TEST mean. A search's
folder may be split over several compare folders (DIR1+DIR2, seeds split between processes).
Older runs tested before a metric existed are read from --retested: `lfsearch evaluate RUN
--out R/<method>/seed<k>.json` on the run's own test split (benchmarks/RESULTS.md).
Prints one markdown row per search.
"""

from __future__ import annotations

import argparse
import glob
import json
import os

import numpy as np
from scipy import stats

FIXED = ("softmax", "cosface", "sphereface", "arcface")


def _load(path: str) -> dict | None:
    return json.load(open(path)) if os.path.isfile(path) else None


def runs(root: str, method: str) -> dict[int, dict]:
    """seed -> results.json of `method` under a compare folder (any benchmark sub-folder)."""
    out = {}
    for part in root.split("+"):
        for path in glob.glob(os.path.join(part, "*", method, "seed*", "results.json")):
            out[int(path.split(os.sep)[-2][len("seed"):])] = json.load(open(path))
    return out


def test_value(result: dict, metric: str, retested: str | None, method: str, seed: int) -> float:
    """The run's test metric, or the retested one where the run predates the metric."""
    value = result.get("test", {}).get(metric)
    if value is None and retested:
        again = _load(os.path.join(retested, method, f"seed{seed}.json"))
        if again is not None:
            value = next(iter(again["benchmarks"].values()))["metrics"].get(metric)
    if value is None:
        raise SystemExit(f"{method} seed {seed}: no test {metric} (give --retested)")
    return float(value)


def row(fixed_root: str, retested: str | None, label: str, search_root: str, metric: str,
        methods: tuple[str, ...]) -> str:
    search = runs(search_root, label)
    fixed = {m: runs(fixed_root, m) for m in methods}
    a, b, chosen = [], [], []
    for k in sorted(search):
        have = [(fixed[m][k], m) for m in methods if k in fixed[m]]
        best, name = max(have, key=lambda x: x[0]["final_validation_reward"])
        a.append(test_value(search[k], metric, retested, label, k))
        b.append(test_value(best, metric, retested, name, k))
        chosen.append(name)
    a, b = np.array(a), np.array(b)
    d, n = a - b, len(a)
    half = stats.t.ppf(0.975, n - 1) * d.std(ddof=1) / np.sqrt(n) if n > 1 else float("nan")
    p = stats.ttest_rel(a, b).pvalue if n > 1 else float("nan")
    oracle = {m: np.mean([test_value(fixed[m][k], metric, retested, m, k) for k in sorted(search)
                          if k in fixed[m]]) for m in methods if m != "softmax"}
    best_m = max(oracle, key=oracle.get)
    return (f"| {label} | {n} | {a.mean():.4f} | {b.mean():.4f} ({', '.join(chosen)}) | "
            f"{d.mean():+.4f} [{d.mean() - half:+.4f}, {d.mean() + half:+.4f}] | {p:.3f} | "
            f"{best_m} {oracle[best_m]:.4f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fixed", required=True, help="compare folder of the fixed methods")
    ap.add_argument("--retested", help="folder of `lfsearch evaluate` JSONs: METHOD/seedK.json")
    ap.add_argument("--search", action="append", required=True, metavar="METHOD=DIR[+DIR]",
                    help="a searched method and the compare folder(s) holding its runs")
    ap.add_argument("--metric", default="tar@far=1e-3_all")
    ap.add_argument("--methods", default=",".join(FIXED), help="the fixed methods to select from")
    args = ap.parse_args()
    print(f"| search | n | search mean | validation-selected fixed mean (chosen per seed) | "
          f"difference [95% CI] | paired p | test-oracle best fixed |  ({args.metric})")
    print("|---|---|---|---|---|---|---|")
    for item in args.search:
        label, _, root = item.partition("=")
        print(row(args.fixed, args.retested, label, root, args.metric,
                  tuple(args.methods.split(","))))


if __name__ == "__main__":
    main()
