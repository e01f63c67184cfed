"""Training statistics kept on the device, read to the host every READ_EVERY steps.

Reading a loss value on the host (``float(value)``, ``bool(torch.isfinite(value))``) makes
the host wait for the GPU every step. Both training paths (sequential: one candidate;
packed: M) instead add each step's loss values into device tensors (sum of value·n, and
whether every value so far was finite) and read them once every READ_EVERY steps and once
at the end of the epoch: one host sync per read, the same in both paths. A candidate whose
loss turned non-finite is therefore found up to READ_EVERY − 1 steps late; it is marked
"diverged" and its state is never kept (search/candidate.py), as before.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

READ_EVERY = 50


class StepStats:
    """Loss sums and finiteness of k candidates on `device`; `read` syncs once."""

    def __init__(self, k: int, device: torch.device | str, every: int = READ_EVERY) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1; got {every}")
        self.total = torch.zeros(k, dtype=torch.float64
                                 if torch.device(device).type != "mps" else torch.float32,
                                 device=device)
        self.finite = torch.ones(k, dtype=torch.bool, device=device)
        self.count, self.steps, self.every = 0, 0, every
        self.alive = [True] * k  # as of the last read

    def add(self, values: Tensor, n: int) -> Tensor:
        """Add one step's (k,) loss values of a batch of n; returns the device mask of the
        candidates that are still finite (no host sync)."""
        ok = torch.isfinite(values)
        self.finite &= ok
        self.total += torch.where(ok, values.detach().to(self.total.dtype), 0.0) * n
        self.count += n
        self.steps += 1
        return self.finite

    def due(self) -> bool:
        """True every `every` steps: time for a `read`."""
        return self.steps % self.every == 0

    def read(self) -> list[bool]:
        """Which candidates are finite so far (one host sync)."""
        self.alive = self.finite.tolist()
        return self.alive

    def result(self) -> list[tuple[float, str]]:
        """(mean training loss, "ok") or (nan, "diverged") per candidate (one host sync)."""
        both = torch.cat([self.total, self.finite.to(self.total.dtype)]).tolist()
        k = len(self.alive)
        return [(both[i] / max(self.count, 1), "ok") if both[k + i] else
                (float("nan"), "diverged") for i in range(k)]


def set_validate(modules: list[nn.Module], on: bool) -> list[tuple[nn.Module, bool]]:
    """Turn the losses' per-call input checks (a host sync each) on or off; returns what to
    restore with `restore_validate`."""
    changed = []
    for module in modules:
        for mod in module.modules():
            if hasattr(mod, "validate"):
                changed.append((mod, mod.validate))
                mod.validate = on
    return changed


def restore_validate(changed: list[tuple[nn.Module, bool]]) -> None:
    for mod, was in changed:
        mod.validate = was
