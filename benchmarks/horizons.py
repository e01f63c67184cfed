"""Learning curves over training horizons: the test metric of each method after E epochs, for
several compare folders that differ only in --epochs (issue 19, "longer horizons").

    python3 benchmarks/horizons.py runs/results/omni_E8 runs/results/omni_E16 runs/results/omni_E32 \
        --out benchmarks/figures/omni_horizons.png

Reads each folder's table.csv (mean, 95% CI, n per method) and the epochs from compare.json;
prints one row per method with its mean [95% CI] at every horizon, and draws mean ± CI against
E (log2 axis). Methods missing at a horizon are left out there.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import tempfile
from pathlib import Path


def _f(value: str) -> float:
    return float(value) if value not in ("", None) else math.nan


def read(folder: Path) -> tuple[int, dict[str, dict[str, float]]]:
    """(epochs, {method: {mean, ci_low, ci_high, n}}) of one compare folder."""
    settings = json.loads((folder / "compare.json").read_text())
    epochs = int(settings["overrides"]["epochs"])
    rows = {}
    for r in csv.DictReader(open(folder / "table.csv", newline="")):
        rows[r["method"]] = {"mean": _f(r["mean"]), "low": _f(r["ci_low"]),
                             "high": _f(r["ci_high"]), "n": int(float(r["n"]))}
    return epochs, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path, help="compare folders (one per horizon)")
    parser.add_argument("--out", type=Path, help="PNG of the curves (optional)")
    args = parser.parse_args()
    horizons = sorted(read(f) for f in args.folders)
    methods = sorted({m for _, rows in horizons for m in rows})
    header = "| method | " + " | ".join(f"E = {e}" for e, _ in horizons) + " |"
    print(header)
    print("|---" * (len(horizons) + 1) + "|")
    for m in methods:
        cells = []
        for _, rows in horizons:
            r = rows.get(m)
            cells.append("–" if r is None else f"{r['mean']:.4f} [{r['low']:.4f}, {r['high']:.4f}] (n={r['n']})")
        print(f"| {m} | " + " | ".join(cells) + " |")
    if args.out:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(6.4, 4.2), dpi=110, layout="constrained")
        ax = fig.add_subplot()
        for m in methods:
            pts = [(e, rows[m]) for e, rows in horizons if m in rows]
            xs = [e for e, _ in pts]
            ax.errorbar(xs, [r["mean"] for _, r in pts],
                        yerr=[[r["mean"] - r["low"] for _, r in pts],
                              [r["high"] - r["mean"] for _, r in pts]],
                        marker="o", capsize=3, label=m)
        ax.set_xscale("log", base=2)
        ax.set_xticks([e for e, _ in horizons], [str(e) for e, _ in horizons])
        ax.set_xlabel("training epochs E")
        ax.set_ylabel("test metric (mean, 95% CI over seeds)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=args.out.parent, suffix=".png")
        os.close(fd)
        fig.savefig(tmp)
        os.replace(tmp, args.out)
        print(f"figure: {args.out}")


if __name__ == "__main__":
    main()
