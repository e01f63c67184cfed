"""Print a compare folder's table.csv as the compact markdown table of benchmarks/RESULTS.md.

    python3 benchmarks/results_table.py COMPARE_DIR [COMPARE_DIR ...]

Columns: test metric mean ± std over seeds, its 95% Student-t CI, the paired difference
against softmax and against the best fixed method other than softmax (paired t-test p, Wilcoxon p), the
candidate-epochs a seed costs and the mean wall time of one seed's run (seconds, one thread).
Searched methods are marked *. Rows are sorted by mean, best first.
"""

from __future__ import annotations

import csv
import math
import sys
from pathlib import Path


def _f(row: dict, key: str) -> float:
    value = row.get(key, "")
    return float(value) if value not in ("", None) else math.nan


def table(compare_dir: Path) -> str:
    rows = list(csv.DictReader(open(compare_dir / "table.csv", newline="")))
    rows.sort(key=lambda r: -_f(r, "mean"))
    fixed = [r for r in rows if r["controller"] == "fixed"]
    best = fixed[0]["method"] if fixed else None
    margin = rows[0].get("best_margin") or None  # compare's best fixed method other than softmax
    lines = [f"**{rows[0]['benchmark']}** ({rows[0]['metric']}, best fixed method: {best})", "",
             f"| method | n | mean ± std | 95% CI | vs softmax (p, W p) | vs {margin} (p, W p) "
             "| candidate-epochs | wall s / seed |", "|---|---|---|---|---|---|---|---|"]
    by_method = {r["method"]: r for r in rows}
    for r in rows:
        star = "*" if r["controller"] != "fixed" else ""

        def paired(other: str) -> str:
            if other is None or other == r["method"] or other not in by_method:
                return "–"
            d = _f(r, "mean") - _f(by_method[other], "mean")
            if other == "softmax":
                p, w = _f(r, "vs_softmax_p"), _f(r, "vs_softmax_wilcoxon_p")
            elif other == r.get("best_margin"):
                p, w = _f(r, "vs_best_margin_p"), _f(r, "vs_best_margin_wilcoxon_p")
            else:
                return f"{d:+.4f}"
            return f"{d:+.4f} ({p:.3f}, {w:.3f})"

        lines.append(
            f"| {r['method']}{star} | {r['n']} | {_f(r, 'mean'):.4f} ± {_f(r, 'std'):.4f} | "
            f"[{_f(r, 'ci_low'):.4f}, {_f(r, 'ci_high'):.4f}] | {paired('softmax')} | "
            f"{paired(margin)} | "
            f"{int(_f(r, 'candidate_epochs'))} | {_f(r, 'seconds'):.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python3 benchmarks/results_table.py COMPARE_DIR [COMPARE_DIR ...]")
    print("\n".join(table(Path(d)) for d in sys.argv[1:]))
