"""One epoch of a population: M candidates start from the same state, each trains one epoch
with its own loss parameters and is rewarded on the validation benchmark(s).

A *state* is the dict {"model", "loss", "optimizer"} of state_dicts: the backbone, the loss
(its class head and any running buffers) and the optimiser. The best candidate's state is
what the search broadcasts to the next epoch.

Reward of a candidate = Σ_k w_k · metric_k / Σ_k w_k over the validation splits. A candidate
*diverges* when its training loss turns NaN or infinite, when its embeddings do (the loss's
input check refuses them), or when its weights are not all finite after the epoch: it stops
at once, gets the worst reward, 0, and its state is never kept, so the search never starts
the next epoch from it. A diverged candidate never ends the run (docs/faults.md).

Within a competition interval ([controller] interval = k > 1, docs/search.md) the candidates
do not start from one state: `start` is then a list, one state per candidate (None for a
candidate that diverged earlier in the interval: it is not trained again and stays
"diverged"), and keep_all=True keeps every candidate's state for its next epoch.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from lfsearch import data
from lfsearch.evaluation import metrics as metrics_mod
from lfsearch.search import step_stats

WORST_REWARD = 0.0


@dataclass
class Validation:
    """A validation split, the metric read from it and its weight in the reward."""

    name: str
    split: Any
    metric: str
    weight: float = 1.0


@dataclass
class CandidateResult:
    """What one candidate's epoch produced."""

    params: dict[str, float]
    reward: float
    train_loss: float
    status: str  # "ok", "diverged" or "rejected" (search/rejection.py)
    metrics: dict[str, float] = field(default_factory=dict)
    state: dict[str, Any] | None = None
    steps: int | None = None  # optimiser steps taken (recorded with early rejection)
    step_losses: list[float] = field(default_factory=list)  # each step's loss (tracking.py)
    # what the reward was computed from, per validation split: (details, metric, weight),
    # for the reward's bootstrap noise (evaluation/reward_noise.py); dropped after the epoch
    samples: list[tuple[dict[str, Any], str, float]] = field(default_factory=list)


@dataclass
class Trainee:
    """The modules a candidate trains: a backbone, a loss with its head, an optimiser over both,
    and with fp16 mixed precision the GradScaler, whose loss scale is part of the state (so
    every candidate starts from the chosen one's scale, and resume continues it)."""

    model: torch.nn.Module
    loss: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None = None

    def state(self) -> dict[str, Any]:
        """A deep copy of the current state, safe to keep while training goes on."""
        state = {"model": self.model.state_dict(), "loss": self.loss.state_dict(),
                 "optimizer": self.optimizer.state_dict()}
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        return copy.deepcopy(state)

    def load(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.loss.load_state_dict(state["loss"])
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])

    def local_batch(self, images: torch.Tensor, labels: torch.Tensor,
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The rows of a batch this process trains on: all of them (data-parallel training
        takes its rank's slice: search/data_parallel.py)."""
        return images, labels

    def sync_gradients(self) -> None:
        """Between backward and the optimiser step: nothing in one process (data-parallel
        training sums the ranks' gradients here)."""


def make_optimizer(name: str, parameters, *, lr: float, momentum: float,
                   weight_decay: float) -> torch.optim.Optimizer:
    """SGD with (Nesterov-free) momentum, Adam or AdamW over the backbone and the head together."""
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer {name!r} is not known; allowed: sgd, adam, adamw")


def learning_rate(epoch: int, *, base: float, epochs: int, schedule: str,
                  steps: list[int] | tuple[int, ...] = (), gamma: float = 0.1,
                  power: float = 1.0, warmup_epochs: int = 0) -> float:
    """The learning rate of a 0-based epoch.

    Warm-up (W = warmup_epochs): base·(epoch + 1)/(W + 1) for epoch < W. After it, with
    e = epoch − W and T = epochs − W: constant: base; cosine: base·(1 + cos(π·e/T))/2;
    poly: base·(1 − e/T)^power (insightface's PolynomialLRWarmup, taken per epoch;
    power 1 is its default, linear decay); step: base·γ^(#steps ≤ epoch) (absolute epochs).
    """
    if epoch < warmup_epochs:
        return base * (epoch + 1) / (warmup_epochs + 1)
    e, t = epoch - warmup_epochs, max(epochs - warmup_epochs, 1)
    if schedule == "constant":
        return base
    if schedule == "cosine":
        return base * 0.5 * (1.0 + math.cos(math.pi * e / t))
    if schedule == "poly":
        return base * max(1.0 - e / t, 0.0) ** power
    if schedule == "step":
        return base * gamma ** sum(1 for s in steps if epoch >= s)
    raise ValueError(f"lr_schedule {schedule!r} is not known; allowed: constant, cosine, poly, "
                     "step")


def make_grad_scaler(device: torch.device | str) -> torch.amp.GradScaler:
    """fp16 loss scaling: initial scale 2^16, halved on overflow, doubled after 100 good steps."""
    return torch.amp.GradScaler(torch.device(device).type, growth_interval=100)


def train_one_epoch(trainee: Trainee, train: data.LabelledImages, *, batch_size: int,
                    generator: torch.Generator, lr: float, augment: str = "none",
                    autocast_dtype: torch.dtype | None = None,
                    step_losses: list[float] | None = None) -> tuple[float, str]:
    """Train one epoch; returns (mean training loss, status); stops at a non-finite loss.
    step_losses, when given, gets each step's loss appended (read from the device once, at
    the end of the epoch).

    autocast_dtype (e.g. torch.bfloat16 on a GPU): forward and loss under torch.autocast.
    torch.float16 adds loss scaling with the trainee's GradScaler (one is made when it has
    none; growth every 100 steps as insightface): the loss is scaled before backward, and a
    step whose gradients overflow is skipped while the scale halves. The loss statistics
    stay on the device and are read every step_stats.READ_EVERY steps (search/step_stats.py):
    a non-finite loss is found at the next read, not at once."""
    stats = step_stats.StepStats(1, train.device)  # loss statistics on the device
    kept: list[torch.Tensor] = []
    try:
        for step in epoch_steps(trainee, train, batch_size=batch_size, generator=generator,
                                lr=lr, augment=augment, autocast_dtype=autocast_dtype):
            if step is None:
                return float("nan"), "diverged"
            stats.add(step[0].reshape(1), step[1])
            if step_losses is not None:
                kept.append(step[0])
            if stats.due() and not stats.read()[0]:
                return float("nan"), "diverged"  # found late: the state is never kept
        return stats.result()[0]
    finally:
        if step_losses is not None and kept:
            step_losses.extend(torch.stack(kept).float().tolist())


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Optimiser steps of one epoch: ⌊n / batch_size⌋ (the last short batch is dropped), or 1
    when the whole split is smaller than one batch."""
    return n // batch_size if n > batch_size else 1


def epoch_steps(trainee: Trainee, train: data.LabelledImages, *, batch_size: int,
                generator: torch.Generator, lr: float, augment: str = "none",
                autocast_dtype: torch.dtype | None = None):
    """The steps of `train_one_epoch`, one per next(): each yields (batch loss as a 0-d device
    tensor, batch size) after its optimiser step, or None when the embeddings turned
    non-finite (then it stops). No host read per step: the caller checks the loss. A paused
    iterator continues where it stopped once the trainee holds its state again
    (search/rejection.py)."""
    for group in trainee.optimizer.param_groups:
        group["lr"] = lr
    trainee.model.train()
    trainee.loss.train()
    # Drop the last short batch (a batch of one breaks train-mode BatchNorm) unless the
    # whole split is smaller than one batch.
    drop_last = len(train) > batch_size
    if autocast_dtype == torch.float16 and trainee.scaler is None:
        trainee.scaler = make_grad_scaler(train.device)
    scaler = trainee.scaler if autocast_dtype == torch.float16 else None
    checked = None  # the loss checks its inputs on the first batch only (a host sync)
    try:
        for images, labels in data.batches(train, batch_size, generator=generator,
                                           augment=augment, drop_last=drop_last):
            n = len(labels)
            images, labels = trainee.local_batch(images, labels)
            with torch.autocast(images.device.type, dtype=autocast_dtype,
                                enabled=autocast_dtype is not None):
                embeddings = trainee.model(images)
                try:
                    value = trainee.loss(embeddings, labels)
                except ValueError:
                    if not bool(torch.isfinite(embeddings).all()):  # weights blew up
                        yield None
                        return
                    raise
            if checked is None:
                checked = step_stats.set_validate([trainee.loss], False)
            trainee.optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(value).backward()
                trainee.sync_gradients()
                scaler.step(trainee.optimizer)
                scaler.update()
            else:
                value.backward()
                trainee.sync_gradients()
                trainee.optimizer.step()
            yield value.detach(), n
    finally:
        step_stats.restore_validate(checked or [])


def finite_state(trainee: Trainee) -> bool:
    """True when every floating-point parameter and buffer of the backbone and loss is finite."""
    checks = [torch.isfinite(t).all() for module in (trainee.model, trainee.loss)
              for t in list(module.parameters()) + list(module.buffers()) if t.is_floating_point()]
    return not checks or bool(torch.stack(checks).all())  # one host sync


def _outputs_finite(trainee: Trainee, validations: list[Validation]) -> bool:
    """True when the backbone's embeddings of every validation split are finite."""
    for v in validations:
        images = getattr(v.split, "images", None)
        if images is not None and not bool(torch.isfinite(metrics_mod.embed(trainee.model,
                                                                          images)).all()):
            return False
    return True


def reward_of(trainee: Trainee, validations: list[Validation],
              samples: list | None = None) -> tuple[float, dict[str, float]]:
    """Weighted mean of each validation split's metric; also returns every metric measured.
    Validation is measured without flip augmentation; the all-pairs metrics only when the
    reward is one of them (their O(N²) cost). samples, when a list, receives (details, metric,
    weight) per split (`metrics.evaluate(details=...)`) for the reward's bootstrap noise."""
    weighted, weights, metrics = 0.0, 0.0, {}
    for v in validations:
        details: dict[str, Any] = {}
        measured = metrics_mod.evaluate(trainee.model, trainee.loss, v.split,
                                        all_pairs=v.metric.endswith("_all"), details=details)
        if samples is not None:
            samples.append((details, v.metric, float(v.weight)))
        if v.metric not in measured:
            raise ValueError(f"reward.metric {v.metric!r} is not measured on {v.name}; "
                             f"available: {', '.join(sorted(measured))}")
        for key, value in measured.items():
            metrics[f"{v.name}/{key}"] = float(value)
        weighted += v.weight * float(measured[v.metric])
        weights += v.weight
    reward = weighted / weights
    return (reward if math.isfinite(reward) else WORST_REWARD), metrics


def starts_of(start: dict[str, Any] | list[dict[str, Any] | None], m: int,
              ) -> list[dict[str, Any] | None]:
    """The start state of each of m candidates: one shared state, or a list of m states."""
    if isinstance(start, dict):
        return [start] * m
    if len(start) != m:
        raise ValueError(f"start: got {len(start)} states for {m} candidates; need one each")
    return list(start)


def skipped(values: dict[str, float]) -> CandidateResult:
    """The result of a candidate that diverged earlier in its interval (not trained again)."""
    return CandidateResult(dict(values), WORST_REWARD, float("nan"), "diverged", steps=0)

def rate(trainee: Trainee, values: dict[str, float], train_loss: float, status: str,
         validations: list[Validation], step_losses: list[float] | None = None,
         ) -> CandidateResult:
    """The result of the candidate `trainee` now holds, without its state: its reward on
    `validations`, or WORST_REWARD when it diverged. A candidate whose training went through
    but whose weights, or validation embeddings, are not finite is marked diverged here."""
    if status == "ok" and not finite_state(trainee):
        status = "diverged"
    samples: list = []
    if status == "ok":
        try:
            reward, metrics = reward_of(trainee, validations, samples)
        except ValueError:
            if _outputs_finite(trainee, validations):
                raise  # a real error (e.g. a metric the split does not measure)
            status = "diverged"
    if status != "ok":
        reward, metrics = WORST_REWARD, {}
    return CandidateResult(dict(values), reward, train_loss, status, metrics,
                           samples=samples if status == "ok" else [],
                           step_losses=list(step_losses or []))


def keep(results: list[CandidateResult], result: CandidateResult,
         state: Callable[[], dict[str, Any]], keep_all: bool = False) -> None:
    """Append `result`, giving it state() when it is the best so far (the first on ties; the
    previous best drops its state), or, with keep_all, whenever it did not diverge."""
    best = next((r for r in results if r.state is not None), None)
    if keep_all:
        if result.status == "ok":
            result.state = state()
    elif result.status == "ok" and (best is None or result.reward > best.reward):
        if best is not None:
            best.state = None
        result.state = state()
    results.append(result)


def record_candidate(results: list[CandidateResult], values: dict[str, float], train_loss: float,
                     status: str, trainee: Trainee, validations: list[Validation],
                     on_candidate: Callable[[int, CandidateResult], None] | None,
                     keep_all: bool = False, step_losses: list[float] | None = None) -> None:
    """Reward the candidate `trainee` now holds (`rate`), append its result, and keep the
    state of the best candidate so far only, or of every candidate that did not diverge
    (keep_all: `keep`)."""
    result = rate(trainee, values, train_loss, status, validations, step_losses)
    keep(results, result, trainee.state, keep_all)
    if on_candidate is not None:
        on_candidate(len(results) - 1, result)


def choose_best(results: list[CandidateResult]) -> int | None:
    """Index of the highest reward among candidates that did not diverge (first on ties)."""
    ok = [i for i, r in enumerate(results) if r.status == "ok"]
    if not ok:
        return None
    return max(ok, key=lambda i: (results[i].reward, -i))
