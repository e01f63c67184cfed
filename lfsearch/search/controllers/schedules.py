"""Whole-run schedules of a loss parameter: v(t) for training progress t ∈ [0, 1].

A schedule is {start = a, end = b, shape = ...} (and `at` for a step):

    linear      v(t) = a + (b − a)·t
    cosine      v(t) = b + (a − b)·(1 + cos(π t)) / 2          (flat at both ends)
    log_linear  v(t) = a · (b / a)^t                            (a, b > 0: geometric, for scales)
    step        v(t) = a for t < at, b from t ≥ at              (at ∈ [0, 1], default 0.5)

v(0) = a and v(1) = b for every shape, and v(t) lies between a and b, so a schedule whose ends
are inside a parameter's [low, high] stays inside it. The fixed controller's `curve` setting
(controllers/fixed.py) replays them: update u of U (one per epoch, or per interval) is at
t = u / (U − 1) (t = 0 when U = 1), so the first epoch trains with `start` and the last with
`end`, as SphereFace anneals λ from softmax to its margin.
"""

from __future__ import annotations

import math
from typing import Any

SHAPES = ("linear", "cosine", "log_linear", "step")
KEYS = ("start", "end", "shape", "at")


def value(schedule: dict[str, Any], t: float) -> float:
    """v(t) of one checked schedule (see the module docstring)."""
    a, b, shape = float(schedule["start"]), float(schedule["end"]), schedule["shape"]
    if shape == "linear":
        return a + (b - a) * t
    if shape == "cosine":
        return b + (a - b) * (1.0 + math.cos(math.pi * t)) / 2.0
    if shape == "log_linear":
        return a * (b / a) ** t
    if shape == "step":
        return a if t < float(schedule.get("at", 0.5)) else b
    raise ValueError(f"shape must be one of {', '.join(SHAPES)}, got {shape!r}")


def progress(update: int, updates: int | None) -> float:
    """t = u / (U − 1), clipped to [0, 1]; 0 when the run has one update (or U is unknown)."""
    if not updates or updates <= 1:
        return 0.0
    return min(max(update / (updates - 1), 0.0), 1.0)


def check(name: str, schedule: Any, low: float, high: float) -> dict[str, Any]:
    """A schedule table checked against the parameter's [low, high]; ValueError naming
    `curve.<name>.<key>` and the allowed values."""
    where = f"curve.{name}"
    if not isinstance(schedule, dict):
        raise ValueError(f"{where} must be a table {{start, end, shape}}, got {schedule!r}")
    unknown = sorted(set(schedule) - set(KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(KEYS)}")
    out = {"shape": schedule.get("shape", "linear")}
    if out["shape"] not in SHAPES:
        raise ValueError(f"{where}.shape must be one of {', '.join(SHAPES)}, "
                         f"got {out['shape']!r}")
    for key in ("start", "end"):
        v = schedule.get(key)
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            raise ValueError(f"{where}.{key} must be a finite number, got {v!r}")
        if not low <= v <= high:
            raise ValueError(f"{where}.{key} = {v:g} is outside [low, high] = "
                             f"[{low:g}, {high:g}]")
        out[key] = float(v)
    if out["shape"] == "log_linear" and min(out["start"], out["end"]) <= 0:
        raise ValueError(f"{where}: shape \"log_linear\" needs start and end > 0")
    if "at" in schedule:
        at = schedule["at"]
        if not isinstance(at, (int, float)) or isinstance(at, bool) or not 0 <= at <= 1:
            raise ValueError(f"{where}.at must be a number in [0, 1], got {at!r}")
        out["at"] = float(at)
    return out
