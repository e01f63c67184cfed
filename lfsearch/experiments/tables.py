"""The comparison table formatted: for the terminal, as Markdown, and one block per [test]
benchmark.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd


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
    """The comparison as text columns, for Markdown and HTML: the primary metric's mean ±
    std and CI, each extra metric's mean ± CI half-width (columns no row has are left out),
    the paired tests and the compute."""
    extras = [c[:-len(":mean")] for c in summary.columns if c.endswith(":mean")]
    has_selected = "vs_selected_diff" in summary and (summary["controller"] == "selected").any()
    out = []
    for row in summary.to_dict("records"):
        method = row["method"] + ("" if row["controller"] in ("fixed", "selected") else " *")
        if row.get("selected"):
            method += f" ({row['selected']})"
        item = {
            "benchmark": row["benchmark"],
            "method": method,
            "n": str(row["n"]),
            f"test {row['metric']}": f"{_fmt(row['mean'])} ± {_fmt(row['std'])}",
            "95% CI": f"[{_fmt(row['ci_low'])}, {_fmt(row['ci_high'])}]",
        }
        for x in extras:
            mean, half = row.get(f"{x}:mean"), row.get(f"{x}:ci_half")
            item[f"{x} ± CI"] = ("–" if mean is None or not math.isfinite(mean)
                                 else f"{_fmt(mean)} ± {_fmt(half)}")
        item["vs softmax"] = _fmt_test(row, "softmax")
        item["vs best margin (test oracle)"] = (
            ((row["best_margin"] + ": ") if row["best_margin"]
             and row["best_margin"] != row["method"] else "") + _fmt_test(row, "best_margin"))
        if has_selected:
            item["vs validation-selected"] = _fmt_test(row, "selected")
        item["candidate-epochs"] = f"{row['candidate_epochs']:g}"
        out.append(item)
    frame = pd.DataFrame(out)
    empty = [c for c in frame.columns if c.endswith(" ± CI") and (frame[c] == "–").all()]
    return frame.drop(columns=empty)


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
    "pairs or no variation). Best margin (test oracle): the fixed-controller method other than "
    "softmax with the highest TEST mean (a tuned one included); it peeks at the test split. "
    "Validation-selected best fixed: per seed, among every fixed-controller method (tuned "
    "ones included) the run with the best final validation reward, its own test metrics; its "
    "compute is the sum of those methods' candidate-epochs; in brackets how often each was "
    "chosen. The first metric is the benchmark's primary metric, chosen in advance "
    "(lfsearch/experiments/statistics.py PRIMARY_METRICS); X ± CI: mean and 95% CI "
    "half-width of another test metric (_all: over all pairs of the test identities). "
    "* marks a searched loss. candidate-epochs: "
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
