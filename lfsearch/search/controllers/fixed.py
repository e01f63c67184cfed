"""The fixed controller: a hand-crafted loss (every candidate gets the ``init`` values), a
replayed per-epoch schedule such as a finished search's discovered.toml, or a whole-run
``curve`` per parameter, v(t) = start → end with a shape over progress t (controllers/schedules.py).
"""

from __future__ import annotations

from typing import Any

from lfsearch.search.controllers import schedules
from lfsearch.search.controllers.base import ParamSpec, _as_float, _Base, _check_params, _clean_rewards


class FixedController(_Base):
    """The init values (hand-crafted baselines), a per-epoch schedule replayed in order, or
    a curve {parameter: {start, end, shape[, at]}} over the run's `horizon` updates."""

    kind = "fixed"

    def __init__(self, space: list[ParamSpec], seed: int, schedule: Any = None,
                 curve: Any = None, horizon: int | None = None) -> None:
        super().__init__(space, seed)
        self.schedule = self._check_schedule(schedule)
        self.horizon = horizon
        self.curve = self._check_curve(curve)
        if self.schedule is not None and self.curve is not None:
            raise ValueError("schedule and curve exclude each other: give a per-epoch list or "
                             "a curve per parameter")

    def _check_curve(self, curve: Any) -> dict[str, dict[str, Any]] | None:
        if curve is None:
            return None
        by_name = {p.name: p for p in self.space}
        if not isinstance(curve, dict) or not curve:
            raise ValueError("curve must be a table {parameter name = {start, end, shape}}")
        unknown = sorted(set(curve) - set(by_name))
        if unknown:
            raise ValueError(f"curve: unknown parameter {unknown[0]!r}; allowed: "
                             f"{list(by_name)}")
        return {name: schedules.check(name, table, by_name[name].low, by_name[name].high)
                for name, table in curve.items()}

    def _check_schedule(self, schedule: Any) -> list[dict[str, float]] | None:
        if schedule is None:
            return None
        if isinstance(schedule, (dict, str)) or not hasattr(schedule, "__iter__"):
            raise ValueError("schedule must be a list of per-epoch dicts {parameter name: value}")
        entries = list(schedule)
        if not entries:
            raise ValueError("schedule must hold at least one epoch's dict")
        by_name = {p.name: p for p in self.space}
        out = []
        for e, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise ValueError(f"schedule[{e}] must be a dict {{parameter name: value}}, "
                                 f"got {entry!r}")
            unknown = sorted(set(entry) - set(by_name))
            if unknown:
                raise ValueError(f"schedule[{e}]: unknown parameter(s) {unknown}; "
                                 f"allowed: {list(by_name)}")
            row = self._init_params()
            for name, value in entry.items():
                v = _as_float(value, f"schedule[{e}][{name!r}]")
                spec = by_name[name]
                if not spec.contains(v):
                    raise ValueError(f"schedule[{e}][{name!r}] = {v:g} is outside "
                                     f"[low, high] = [{spec.low:g}, {spec.high:g}]")
                row[name] = v
            out.append(row)
        return out

    def current(self) -> dict[str, float]:
        """The parameter values of the current epoch."""
        if self.curve is not None:
            t = schedules.progress(self.epoch, self.horizon)
            row = self._init_params()
            row.update({name: schedules.value(c, t) for name, c in self.curve.items()})
            return row
        if self.schedule is None:
            return self._init_params()
        return dict(self.schedule[min(self.epoch, len(self.schedule) - 1)])

    def sample(self, n: int) -> list[dict[str, float]]:
        n = self._check_n(n)
        return [self.current() for _ in range(n)]

    def update(self, params: list[dict[str, float]], rewards: list[float]) -> None:
        params = _check_params(params, self.space)
        _clean_rewards(rewards, len(params))
        self.epoch += 1

    def state_dict(self) -> dict:
        state = self._header()
        state["schedule"] = None if self.schedule is None else [dict(r) for r in self.schedule]
        if self.curve is not None:
            state["curve"] = {k: dict(v) for k, v in self.curve.items()}
            state["horizon"] = self.horizon
        return state

    def load_state_dict(self, state: dict) -> None:
        self._check_header(state)
        self.schedule = self._check_schedule(state.get("schedule"))
        if "curve" in state:
            self.curve = self._check_curve(state["curve"])
            self.horizon = state.get("horizon")

    def describe(self) -> dict[str, float]:
        row = {"epoch": float(self.epoch)}
        row.update({f"value_{k}": v for k, v in self.current().items()})
        return row
