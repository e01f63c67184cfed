"""The fixed controller: a hand-crafted loss (every candidate gets the ``init`` values), or a
replayed per-epoch schedule such as a finished search's discovered.toml.
"""

from __future__ import annotations

from typing import Any

from lfsearch.search.controllers.base import ParamSpec, _as_float, _Base, _check_params, _clean_rewards


class FixedController(_Base):
    """The init values (hand-crafted baselines), or a per-epoch schedule replayed in order."""

    kind = "fixed"

    def __init__(self, space: list[ParamSpec], seed: int, schedule: Any = None) -> None:
        super().__init__(space, seed)
        self.schedule = self._check_schedule(schedule)

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
        return state

    def load_state_dict(self, state: dict) -> None:
        self._check_header(state)
        self.schedule = self._check_schedule(state.get("schedule"))

    def describe(self) -> dict[str, float]:
        row = {"epoch": float(self.epoch)}
        row.update({f"value_{k}": v for k, v in self.current().items()})
        return row
