"""The population strategy: how one epoch's M candidates are trained.

`Population.choose(mode, device, accel)` resolves ``[training] packing`` ("auto" | "sequential"
| "packed") without measuring (a run decides "auto" on CUDA by a speed trial instead:
search/packing_trial.py, whose choice builds the Population directly): packed (search/packed.py: the M candidates as one vmapped model, one
forward/backward per batch) or sequential (search/sequential.py: one candidate after another).
The memory guard (search/memory.py) may pack `chunk` candidates at a time, or choose
sequential, when M do not fit on the device. Both paths take the same arguments, give the same results up to float rounding, and apply the
same `Accel` (autocast, channels_last, compile), so that their timings compare like with like.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import torch

from lfsearch import data
from lfsearch.search.accel import Accel, _images, resolve_mode
from lfsearch.search.candidate import CandidateResult, Trainee, Validation
from lfsearch.search.memory import PackingPlan
from lfsearch.search.packed import run_epoch_packed, run_in_chunks
from lfsearch.search.rejection import run_epoch_rejecting
from lfsearch.search.sequential import run_epoch_sequential


@dataclass(frozen=True)
class Population:
    """A resolved training path: `mode` is "packed" or "sequential"; `accel` applies to both."""

    mode: str
    accel: Accel
    chunk: int | None = None  # packed: at most this many candidates at a time (memory.py)

    @classmethod
    def choose(cls, mode: str, device: torch.device | str, accel: Accel | None = None,
               plan: PackingPlan | None = None) -> Population:
        """The path for `mode` on `device` (see accel.resolve_mode: auto = packed on CUDA). With
        fp16 autocast "auto" trains sequentially: fp16's GradScaler is per candidate (see
        PackedPopulation). `accel` defaults to `Accel.for_device` (bf16 autocast and
        channels_last on CUDA, nothing on CPU)."""
        device = torch.device(device)
        accel = Accel.for_device(device) if accel is None else accel
        if mode == "auto" and accel.autocast == torch.float16:
            mode = "sequential"
        resolved = resolve_mode(mode, device)
        if resolved == "packed" and plan is not None:  # the memory guard's choice
            return cls(plan.mode, accel, plan.chunk)
        return cls(resolved, accel)

    def prepare(self, trainee: Trainee, train: data.LabelledImages) -> data.LabelledImages:
        """The sequential path's `accel` applied: channels_last backbone and images, and the
        backbone compiled in place (its state_dict keys stay as they are); returns `train`."""
        accel = self.accel
        if accel.channels_last:
            trainee.model.to(memory_format=torch.channels_last)
        if accel.channels_last and isinstance(train, data.LabelledImages):
            train = dataclasses.replace(train, images=_images(train.images, accel))
        if accel.compile and getattr(trainee.model, "_compiled_call_impl", None) is None:
            trainee.model.compile()
        return train

    def run_epoch(self, trainee: Trainee, start: dict[str, Any] | list[dict[str, Any] | None],
                  params: list[dict[str, float]],
                  *, train: data.LabelledImages, validations: list[Validation], batch_size: int,
                  lr: float, data_seed: int, candidate_seeds: list[int], augment: str = "none",
                  on_candidate: Callable[[int, CandidateResult], None] | None = None,
                  keep_all: bool = False,
                  reject: tuple[float, float] | None = None) -> list[CandidateResult]:
        """Train every candidate i of `params` for one epoch from `start` (one state, or one per
        candidate; None skips it) and reward it on `validations`; the keyword arguments are
        those of `run_epoch_sequential`. reject = (reject_after, reject_margin): early
        rejection (search/rejection.py), sequential path only."""
        kwargs = dict(train=train, validations=validations, batch_size=batch_size, lr=lr,
                      data_seed=data_seed, candidate_seeds=candidate_seeds, augment=augment,
                      on_candidate=on_candidate, keep_all=keep_all)
        accel = self.accel
        if reject is not None and self.mode == "packed":
            raise ValueError("controller.reject_after needs training.packing = 'sequential' "
                             "(the packed pass computes every candidate's backbone anyway)")
        if self.mode == "packed":
            if self.chunk is not None and self.chunk < len(params):
                return run_in_chunks(trainee, start, params, self.chunk, accel=accel, **kwargs)
            return run_epoch_packed(trainee, start, params, accel=accel, **kwargs)
        kwargs["train"] = self.prepare(trainee, train)
        if reject is not None:
            return run_epoch_rejecting(trainee, start, params, reject_after=reject[0],
                                       reject_margin=reject[1], autocast_dtype=accel.autocast,
                                       **kwargs)
        return run_epoch_sequential(trainee, start, params, autocast_dtype=accel.autocast, **kwargs)
