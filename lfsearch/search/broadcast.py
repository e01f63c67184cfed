"""What starts the next epoch: [controller] broadcast (docs/search.md).

    best           the state of the best candidate (the default)
    top_k_average  the uniform average of the k best candidates' states (k = broadcast_k,
                   ranked by reward, diverged and rejected ones left out; they share the
                   interval's start):  w = (1/k) Σ_{j ≤ k} w_j
    ema            the best candidate's state starts the next epoch, as with `best`; a shadow
                   copy  ema_1 = best_1,  ema_t = d·ema_{t−1} + (1 − d)·best_t  (d =
                   broadcast_decay) is kept across epochs (in checkpoint.pt) and is the model
                   that is validated and tested at the end (like model EMA)

What is averaged: every floating-point tensor of the backbone's state (parameters and
BatchNorm running statistics) and the loss's parameters (the class head). Integer buffers
(BatchNorm's num_batches_tracked), the loss's buffers (the searched values, step counters)
and the optimiser state (momentum, Adam moments and steps) are the best candidate's.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

BROADCASTS = ("best", "top_k_average", "ema")


def _mix(tensors: list[torch.Tensor], weights: list[float]) -> torch.Tensor:
    """Σ_j weights_j · tensors_j, summed in the order given (deterministic)."""
    out = tensors[0] * weights[0]
    for t, w in zip(tensors[1:], weights[1:]):
        out = out + t * w
    return out


def combine(states: list[dict[str, Any]], weights: list[float],
            loss_parameters: set[str] | frozenset[str]) -> dict[str, Any]:
    """The weighted combination of states (states[0] is the best: it gives every entry that
    is not averaged, see the module docstring). Only "model" and "loss" are combined; the
    other entries (optimizer, scaler) are deep copies of states[0]'s."""
    best = states[0]
    out = {k: copy.deepcopy(v) for k, v in best.items() if k not in ("model", "loss")}
    for part, averaged in (("model", None), ("loss", loss_parameters)):
        out[part] = {name: (_mix([s[part][name] for s in states], weights)
                            if _floating(value) and (averaged is None or name in averaged)
                            else copy.deepcopy(value))
                     for name, value in best[part].items()}
    return out


def _floating(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.is_floating_point()


def average(states: list[dict[str, Any]], loss_parameters: set[str] | frozenset[str],
            ) -> dict[str, Any]:
    """The uniform average of `states`, best first: w = (1/k) Σ_j w_j."""
    k = len(states)
    return combine(states, [1.0 / k] * k, loss_parameters)


def ema_update(ema: dict[str, Any] | None, best: dict[str, Any], decay: float,
               loss_parameters: set[str] | frozenset[str]) -> dict[str, Any]:
    """ema_t = d·ema_{t−1} + (1 − d)·best_t over the averaged entries; the first call
    (ema None) gives a copy of best's model and loss. Returns {"model", "loss"} only."""
    best = {"model": best["model"], "loss": best["loss"]}
    if ema is None:
        return copy.deepcopy(best)
    # best first: the entries that are not averaged come from the newest best state
    return combine([best, ema], [1.0 - decay, decay], loss_parameters)


def top_k(results: list[Any], k: int) -> list[int]:
    """Indices of the k highest rewards among the candidates with status "ok", best first
    (the first index on ties, as candidate.choose_best)."""
    ok = [i for i, r in enumerate(results) if r.status == "ok" and r.state is not None]
    return sorted(ok, key=lambda i: (-results[i].reward, i))[:k]


class Broadcast:
    """The run's broadcast rule and, with "ema", the shadow state (saved in checkpoint.pt)."""

    def __init__(self, mode: str, k: int = 2, decay: float = 0.9,
                 loss_parameters: set[str] | frozenset[str] = frozenset()) -> None:
        if mode not in BROADCASTS:
            raise ValueError(f"controller.broadcast must be one of {', '.join(BROADCASTS)} "
                             f"(got {mode!r})")
        self.mode, self.k, self.decay = mode, k, decay
        self.loss_parameters = frozenset(loss_parameters)
        self.ema: dict[str, Any] | None = None
        self.averaged: list[int] = []  # the candidates of the last average, best first

    @property
    def keeps_all(self) -> bool:
        """Whether the interval's last epoch must keep every candidate's state."""
        return self.mode == "top_k_average"

    def next_start(self, results: list[Any], chosen: int) -> dict[str, Any]:
        """The state that starts the next interval; with "ema" the shadow is updated too."""
        if self.mode == "top_k_average":
            self.averaged = top_k(results, self.k)
            return average([results[i].state for i in self.averaged], self.loss_parameters)
        state = results[chosen].state
        if self.mode == "ema":
            self.ema = ema_update(self.ema, state, self.decay, self.loss_parameters)
        return state

    def final(self, start: dict[str, Any]) -> dict[str, Any]:
        """The model that is validated and tested: the EMA's weights with "ema", else start."""
        if self.mode != "ema" or self.ema is None:
            return start
        return {**start, "model": self.ema["model"], "loss": self.ema["loss"]}
