"""Random-Softmax: every candidate, every epoch, each parameter uniform inside its bounds
(uniform in log space for log parameters).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lfsearch.search.controllers.base import ParamSpec, _Base, _check_int, _check_params, _clean_rewards


class _SeededBase(_Base):
    """Shared by random and reinforce: a numpy Generator, warm-up, best-so-far bookkeeping."""

    def __init__(self, space: list[ParamSpec], seed: int, warmup_epochs: Any = 0) -> None:
        super().__init__(space, seed)
        self.warmup_epochs = _check_int("warmup_epochs", warmup_epochs, 0)
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.best_reward = -math.inf
        self.best_params: dict[str, float] | None = None

    @property
    def warming_up(self) -> bool:
        return self.epoch < self.warmup_epochs

    def _note_best(self, params: list[dict[str, float]], rewards: np.ndarray) -> None:
        if len(rewards) and float(rewards.max()) > self.best_reward:
            i = int(np.argmax(rewards))
            self.best_reward = float(rewards[i])
            self.best_params = dict(params[i])

    def _seeded_state(self) -> dict[str, Any]:
        state = self._header()
        state["rng"] = self.rng.bit_generator.state
        state["warmup_epochs"] = self.warmup_epochs
        state["best_reward"] = self.best_reward
        state["best_params"] = None if self.best_params is None else dict(self.best_params)
        return state

    def _load_seeded(self, state: dict) -> None:
        self._check_header(state)
        self.rng = np.random.Generator(np.random.PCG64())
        self.rng.bit_generator.state = state["rng"]
        self.warmup_epochs = int(state["warmup_epochs"])
        self.best_reward = float(state["best_reward"])
        self.best_params = None if state["best_params"] is None else dict(state["best_params"])

    def _describe_best(self) -> dict[str, float]:
        row = {"best_reward": self.best_reward if self.best_params is not None else math.nan}
        for p in self.space:
            row[f"best_{p.name}"] = (self.best_params[p.name] if self.best_params is not None
                                     else math.nan)
        return row


class RandomController(_SeededBase):
    """Random-Softmax: each parameter of each candidate uniform in [low, high] (log-uniform
    when ``log``), independently, every epoch; learns nothing."""

    kind = "random"

    def sample(self, n: int) -> list[dict[str, float]]:
        n = self._check_n(n)
        if self.warming_up:
            return [self._init_params() for _ in range(n)]
        u = self.rng.random((n, len(self.space)))
        return [{p.name: p.from_unit(u[i, j]) for j, p in enumerate(self.space)}
                for i in range(n)]

    def update(self, params: list[dict[str, float]], rewards: list[float]) -> None:
        params = _check_params(params, self.space)
        r = _clean_rewards(rewards, len(params))
        if not self.warming_up:
            self._note_best(params, r)
        self.epoch += 1

    def state_dict(self) -> dict:
        return self._seeded_state()

    def load_state_dict(self, state: dict) -> None:
        self._load_seeded(state)

    def describe(self) -> dict[str, float]:
        row = {"epoch": float(self.epoch)}
        row.update(self._describe_best())
        return row
