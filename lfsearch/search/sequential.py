"""The reference path of a population epoch: the M candidates trained one after another on
the same batches, each from the start state with its own loss parameters (search/candidate.py
defines the state, the reward and divergence; search/packed.py is the vmapped equivalent).
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from lfsearch import data
from lfsearch.search.candidate import (
    CandidateResult,
    Trainee,
    Validation,
    record_candidate,
    skipped,
    starts_of,
    train_one_epoch,
)


def run_epoch_sequential(trainee: Trainee, start: dict[str, Any] | list[dict[str, Any] | None],
                         params: list[dict[str, float]], *,
                         train: data.LabelledImages, validations: list[Validation], batch_size: int,
                         lr: float, data_seed: int, candidate_seeds: list[int], augment: str = "none",
                         on_candidate: Callable[[int, CandidateResult], None] | None = None,
                         autocast_dtype: torch.dtype | None = None,
                         keep_all: bool = False) -> list[CandidateResult]:
    """Train the candidates one after another from `start` (one state, or one per candidate:
    see the module docstring); keeps only the best one's state, or every one's (keep_all).

    Every candidate sees the same batches in the same order (a generator seeded by data_seed),
    and its own global RNG seed (dropout and the like) from candidate_seeds.
    """
    results: list[CandidateResult] = []
    for i, (values, own_start) in enumerate(zip(params, starts_of(start, len(params)))):
        if own_start is None:
            results.append(skipped(values))
            if on_candidate is not None:
                on_candidate(i, results[-1])
            continue
        trainee.load(own_start)
        trainee.loss.set_params(**values)
        torch.manual_seed(candidate_seeds[i])
        generator = torch.Generator().manual_seed(data_seed)  # CPU: the same draws on any device
        steps: list[float] = []
        train_loss, status = train_one_epoch(trainee, train, batch_size=batch_size,
                                             generator=generator, lr=lr, augment=augment,
                                             autocast_dtype=autocast_dtype, step_losses=steps)
        record_candidate(results, values, train_loss, status, trainee, validations, on_candidate,
                         keep_all=keep_all, step_losses=steps)
    return results
