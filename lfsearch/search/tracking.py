"""Experiment tracking: what a search reports per training step and per epoch, to TensorBoard
event files in the run folder and to the user's own callbacks (MLflow, W&B, ...).
docs/search.md "Tracking".

A callback is any object with an ``on_step(event: StepEvent)`` and/or an
``on_epoch(event: EpochEvent)`` method (and optionally ``close()``, called once at the end of
the run, also when it fails). Only the process that writes the run folder (rank 0 under
torchrun) calls them. ``on_step`` comes for each step of a candidate once that candidate's
epoch is trained (its losses come back with its result, from any training path or rank).

TensorBoard tags (``tensorboard --logdir runs``), x-axis the global step for per-step values
and the epoch (0-based) for per-epoch values:

    train_loss/candidate_<i>, lr/candidate_<i>          per step
    reward/candidate_<i>, params/<p>/candidate_<i>      per epoch, every candidate
    controller/<key>                                    per epoch (mu_<p>, sigma_<p>, ...)
    chosen/candidate, chosen/reward, chosen/<p>         per epoch, the chosen candidate
"""

from __future__ import annotations

import importlib.util
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class StepEvent:
    """One optimiser step of one candidate: its training loss and learning rate."""

    epoch: int
    candidate: int
    step: int  # global, 0-based: epoch * steps_per_epoch + the step within the epoch
    loss: float
    lr: float


@dataclass
class EpochEvent:
    """One epoch's outcome: every candidate's parameters, reward, mean training loss and
    status, the chosen candidate (None when all diverged) and the controller's state
    (``controller.describe()``: REINFORCE's mu_<p>, sigma_<p>, ...)."""

    epoch: int
    params: list[dict[str, float]]
    rewards: list[float]
    train_losses: list[float]
    statuses: list[str]
    chosen: int | None
    controller: dict[str, float] = field(default_factory=dict)
    lr: float = math.nan


def tensorboard_available() -> bool:
    """True when the ``tensorboard`` package (torch.utils.tensorboard's writer) is installed."""
    return importlib.util.find_spec("tensorboard") is not None


def check_callbacks(callbacks: Any) -> list[Any]:
    """The callbacks as a list; each needs a callable on_step or on_epoch."""
    if callbacks is None:
        return []
    if not isinstance(callbacks, (list, tuple)):
        raise ValueError(f"callbacks must be a list of objects with on_step/on_epoch methods; "
                         f"got {type(callbacks).__name__}")
    for i, cb in enumerate(callbacks):
        if not any(callable(getattr(cb, m, None)) for m in ("on_step", "on_epoch")):
            raise ValueError(f"callbacks[{i}] ({type(cb).__name__}) has neither an on_step "
                             "nor an on_epoch method; allowed: objects with on_step(event) "
                             "and/or on_epoch(event)")
    return list(callbacks)


def resolve_tensorboard(value: bool | None) -> bool:
    """None: on when tensorboard is installed; True: required; False: off."""
    if value is None:
        return tensorboard_available()
    if value not in (True, False):
        raise ValueError(f"tensorboard must be True, False or None (auto); got {value!r}")
    if value and not tensorboard_available():
        raise ValueError("tensorboard=True needs the 'tensorboard' package (pip install "
                         "tensorboard); allowed without it: tensorboard=False or None (auto)")
    return value


class TensorBoardWriter:
    """A callback writing the tags of the module docstring to event files in ``log_dir``."""

    def __init__(self, log_dir: str | Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(log_dir))

    def on_step(self, event: StepEvent) -> None:
        add = self.writer.add_scalar
        add(f"train_loss/candidate_{event.candidate}", event.loss, event.step)
        add(f"lr/candidate_{event.candidate}", event.lr, event.step)

    def on_epoch(self, event: EpochEvent) -> None:
        add, e = self.writer.add_scalar, event.epoch
        for i, (params, reward) in enumerate(zip(event.params, event.rewards)):
            add(f"reward/candidate_{i}", reward, e)
            for name, value in params.items():
                add(f"params/{name}/candidate_{i}", value, e)
        for key, value in event.controller.items():
            if key != "epoch" and isinstance(value, (int, float)) and math.isfinite(value):
                add(f"controller/{key}", value, e)
        if event.chosen is not None:
            add("chosen/candidate", event.chosen, e)
            add("chosen/reward", event.rewards[event.chosen], e)
            for name, value in event.params[event.chosen].items():
                add(f"chosen/{name}", value, e)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class Trackers:
    """Fans each event out to every callback. An exception in a callback stops the run (marked
    interrupted, resumable with --resume); one in close() is logged."""

    def __init__(self, callbacks: list[Any]):
        self.callbacks = callbacks

    def _call(self, method: str, event: Any) -> None:
        for cb in self.callbacks:
            fn = getattr(cb, method, None)
            if callable(fn):
                fn(event)

    def step(self, event: StepEvent) -> None:
        self._call("on_step", event)

    def epoch(self, event: EpochEvent) -> None:
        self._call("on_epoch", event)

    def close(self) -> None:
        for cb in self.callbacks:
            fn = getattr(cb, "close", None)
            if callable(fn):
                try:
                    fn()
                except Exception as exc:  # the run's results stand
                    log.warning("callback %s failed to close: %s", type(cb).__name__, exc)
