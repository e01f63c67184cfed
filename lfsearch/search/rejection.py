"""Early rejection: [controller] reject_after = f, reject_margin = c (docs/search.md).

One epoch of S optimiser steps, M candidates trained one after another on the same batches:

    phase 1  every candidate trains its first n = min(S, max(1, ⌈f·S⌉)) steps and pauses
             (its state, its batch iterator and its RNG state are kept);
    decide   L_i = candidate i's mean training loss over those n steps; over the candidates
             that did not diverge, med = median(L), MAD = median(|L − med|);
             candidate i is *rejected* when  L_i > med + c·MAD;
    phase 2  the others continue from where they paused and finish the epoch.

A rejected candidate stops: status "rejected", reward = the worst (candidate.WORST_REWARD),
its state is never kept, and its S − n remaining steps are saved (inside a competition
interval, its later epochs too). Pausing and continuing is exact (the state is copied and
loaded back, the batch iterator and the RNG continue), so when nobody is rejected every
candidate's results are bit for bit those of `sequential.run_epoch_sequential`.

Only the sequential path: the packed path computes every candidate's backbone in one pass,
so stopping a candidate there would save nothing (config.py refuses the combination).
"""

from __future__ import annotations

import itertools
import math
import statistics
from typing import Any, Callable

import torch

from lfsearch import data
from lfsearch.search.candidate import (
    CandidateResult,
    Trainee,
    Validation,
    epoch_steps,
    record_candidate,
    skipped,
    starts_of,
    steps_per_epoch,
)


def reject_step(fraction: float, steps: int) -> int:
    """The step after which candidates are judged: min(S, max(1, ⌈f·S⌉))."""
    return min(steps, max(1, math.ceil(fraction * steps)))


def rejected(losses: list[float | None], margin: float) -> set[int]:
    """Indices i with L_i > median + margin·MAD over the finite losses (None: not judged)."""
    judged = {i: v for i, v in enumerate(losses) if v is not None and math.isfinite(v)}
    if len(judged) < 3:  # a median and MAD of two values never single one out
        return set()
    med = statistics.median(judged.values())
    mad = statistics.median(abs(v - med) for v in judged.values())
    return {i for i, v in judged.items() if v > med + margin * mad}


def _rng_state(device: torch.device) -> tuple[Any, Any]:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple[Any, Any], device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def run_epoch_rejecting(trainee: Trainee, start: dict[str, Any] | list[dict[str, Any] | None],
                        params: list[dict[str, float]], *, reject_after: float,
                        reject_margin: float, train: data.LabelledImages,
                        validations: list[Validation], batch_size: int, lr: float,
                        data_seed: int, candidate_seeds: list[int], augment: str = "none",
                        on_candidate: Callable[[int, CandidateResult], None] | None = None,
                        autocast_dtype: torch.dtype | None = None,
                        keep_all: bool = False) -> list[CandidateResult]:
    """`sequential.run_epoch_sequential` with early rejection (the module docstring); every
    result carries `steps`, the optimiser steps it took."""
    n = reject_step(reject_after, steps_per_epoch(len(train), batch_size))
    device = train.device
    paused: list[dict[str, Any] | None] = []
    for i, (values, own_start) in enumerate(zip(params, starts_of(start, len(params)))):
        if own_start is None:
            paused.append(None)
            continue
        trainee.load(own_start)
        trainee.loss.set_params(**values)
        torch.manual_seed(candidate_seeds[i])
        generator = torch.Generator().manual_seed(data_seed)  # as the sequential path
        steps = _host_losses(epoch_steps(trainee, train, batch_size=batch_size,
                                         generator=generator, lr=lr, augment=augment,
                                         autocast_dtype=autocast_dtype))
        run = {"steps": steps, "total": 0.0, "count": 0, "taken": 0, "status": "ok"}
        for step in itertools.islice(steps, n):
            if step is None:
                run["status"] = "diverged"
                break
            run["total"] += step[0] * step[1]
            run["count"] += step[1]
            run["taken"] += 1
        if run["status"] == "ok":
            run["state"], run["rng"] = trainee.state(), _rng_state(device)
        paused.append(run)
    losses = [r["total"] / max(r["count"], 1) if r is not None and r["status"] == "ok" else None
              for r in paused]
    out = rejected(losses, reject_margin)
    results: list[CandidateResult] = []
    for i, (values, run) in enumerate(zip(params, paused)):
        if run is None:
            results.append(skipped(values))
            if on_candidate is not None:
                on_candidate(i, results[-1])
            continue
        status = "rejected" if i in out else run["status"]
        if status == "ok":
            trainee.loss.set_params(**values)  # as the sequential path; the state wins
            trainee.load(run.pop("state"))
            _set_rng_state(run["rng"], device)
            for step in run["steps"]:
                if step is None:
                    status = "diverged"
                    break
                run["total"] += step[0] * step[1]
                run["count"] += step[1]
                run["taken"] += 1
        run["steps"].close()
        train_loss = (run["total"] / max(run["count"], 1) if status != "diverged"
                      else float("nan"))
        record_candidate(results, values, train_loss, status, trainee, validations,
                         on_candidate, keep_all=keep_all)
        results[-1].steps = run["taken"]
    return results


def _host_losses(steps):
    """`epoch_steps` with each loss read on the host (the rejection rule needs the running
    mean); a non-finite loss yields None and ends the candidate's epoch, as a divergence."""
    try:
        for step in steps:
            if step is None or not math.isfinite(float(step[0])):
                yield None
                return
            yield float(step[0]), step[1]
    finally:
        steps.close()
