"""How ``[training] packing`` becomes a path, and the speed trial behind ``packing = "auto"``.

`decide` runs once per run, before the first epoch (search/loop.py), and its `PackingChoice`
goes to manifest.json as ``packing``: the mode, the chunk, the reason and its detail, the
memory guard's plan (search/memory.py) and the trial's figures. The rule:

  "sequential"  sequential                                           reason "forced by config"
  "packed"      packed, `chunk` at a time as the memory guard allows ("forced by config"),
                sequential when two do not fit                      ("memory guard")
  "auto"        sequential with early rejection on                  ("early rejection")
                sequential under fp16 (one GradScaler per candidate) ("fp16")
                sequential off CUDA, no trial (measured before: packing does not pay on a
                2-core CPU, benchmarks/README.md)                   ("cpu default")
                sequential when the memory guard fits fewer than 2  ("memory guard")
                packed as the guard plans under torchrun, no trial (the ranks would have to
                agree on one answer)                                ("torchrun")
                otherwise whatever the speed trial measures         ("measured")

The speed trial (`measure`): WARMUP = 2 warm-up and STEPS = 3 timed training steps of
  (a) k packed candidates (k = the memory guard's chunk ≤ M):  p seconds per step;
  (b) one candidate on the sequential path:                    s seconds per step;
on real batches of the run's training split (its own subset and generator), with the run's
Accel (autocast, channels_last, compile) and augmentation, the device synchronised around each
timing. One epoch step of the M candidates costs P = ⌈M/k⌉·p packed and S = M·s sequential;
`rule`: packed when P < (1 − MARGIN)·S, MARGIN = 0.05 (packed must be at least 5% faster; a
tie trains sequentially). A packed trial that runs out of memory chooses sequential. The
trial times training on batches held in memory: a streamed split's decoding is not timed
(the sequential path decodes an epoch once per candidate when the epoch cache cannot hold
it, the packed path once per chunk), so where decoding limits the speed the trial
understates what packing saves.

Nothing the trial does reaches the run: it trains deep copies of the trainee from a copy of
its start state, on a subset it decodes itself (a streamed split's loader, cache and counters
untouched), and restores the global RNG states (torch CPU and CUDA, Python's random, NumPy)
afterwards. The one thing left behind on CUDA is cuDNN's autotuning cache (cudnn.benchmark),
which never made CUDA runs bit-identical anyway (README "Several GPUs"). A resumed run keeps
the decision its manifest recorded (`previous`), so that its epochs train as the first ones did.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import gc
import math
import random
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np
import torch

from lfsearch import data
from lfsearch.search.accel import Accel, _images
from lfsearch.search.candidate import Trainee, epoch_steps
from lfsearch.search.memory import PackingPlan
from lfsearch.search.packed import PackedPopulation

WARMUP = 2  # untimed steps first (cudnn.benchmark autotuning, the allocator, torch.compile)
STEPS = 3  # timed steps
MARGIN = 0.05  # packed must be at least this much faster than sequential


@dataclass(frozen=True)
class Trial:
    """The trial's figures: seconds per epoch step of all M candidates, each path."""

    candidates: int
    chunk: int
    packed_s_per_step: float | None  # ⌈M/k⌉ · (one packed step of k); None: out of memory
    sequential_s_per_step: float  # M · (one step of one candidate)
    warmup: int = WARMUP
    steps: int = STEPS
    margin: float = MARGIN

    @property
    def ratio(self) -> float | None:
        """packed / sequential time (below 1 − margin: packed)."""
        if self.packed_s_per_step is None or self.sequential_s_per_step <= 0:
            return None
        return self.packed_s_per_step / self.sequential_s_per_step

    def describe(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


@dataclass(frozen=True)
class PackingChoice:
    """The path a run trains on: mode "packed" (`chunk` at a time; None: all M) or
    "sequential", the config's `setting`, why (`reason`, one of the rule's keywords, and a
    sentence), the memory guard's plan and the trial, where they were made."""

    mode: str
    chunk: int | None
    setting: str
    reason: str
    detail: str
    memory: PackingPlan | None = None
    trial: Trial | None = None

    def describe(self) -> dict[str, Any]:
        """As plain data for manifest.json."""
        return {"mode": self.mode, "chunk": self.chunk, "setting": self.setting,
                "reason": self.reason, "detail": self.detail,
                "memory": self.memory.describe() if self.memory is not None else None,
                "trial": self.trial.describe() if self.trial is not None else None}


def rule(packed_s: float | None, sequential_s: float, margin: float = MARGIN) -> str:
    """"packed" when packed_s < (1 − margin)·sequential_s, else "sequential" (ties, no
    measurement, or a packed trial out of memory included)."""
    if packed_s is None or not math.isfinite(packed_s) or not math.isfinite(sequential_s):
        return "sequential"
    return "packed" if packed_s < (1.0 - margin) * sequential_s else "sequential"


def decide(setting: str, device: torch.device | str, accel: Accel, *,
           plan: Callable[[], PackingPlan], trial: Callable[[int], Trial] | None = None,
           reject: bool = False, torchrun: bool = False, force_trial: bool = False,
           previous: dict[str, Any] | None = None) -> PackingChoice:
    """The rule of the module docstring. `plan()` makes the memory guard's plan (called only
    where packing is possible); `trial(chunk)` measures (called only for "auto" on CUDA, or
    anywhere with force_trial, for tests); `previous`: the manifest's ``packing`` of the run
    being resumed (a measured decision is kept)."""
    if setting not in ("auto", "sequential", "packed"):
        raise ValueError(f"training.packing {setting!r} is not known; allowed: auto, "
                         "sequential, packed")
    choice = functools.partial(PackingChoice, setting=setting)
    if setting == "sequential":
        return choice("sequential", None, reason="forced by config",
                      detail="training.packing = 'sequential'")
    if setting == "auto":
        if reject:
            return choice("sequential", None, reason="early rejection",
                          detail="controller.reject_after saves compute on the sequential "
                                 "path only")
        if accel.autocast == torch.float16:
            return choice("sequential", None, reason="fp16",
                          detail="fp16's GradScaler is per candidate")
        if torch.device(device).type != "cuda" and not force_trial:
            return choice("sequential", None, reason="cpu default",
                          detail="off CUDA auto trains sequentially (packing does not pay on "
                                 "a CPU: benchmarks/README.md)")
    memory = plan()
    if memory.mode != "packed":
        return choice("sequential", None, reason="memory guard", detail=memory.reason,
                      memory=memory)
    chunk = memory.chunk if memory.chunk is not None else memory.candidates
    if setting == "packed":
        return choice("packed", chunk, reason="forced by config",
                      detail=f"training.packing = 'packed'; {memory.reason}", memory=memory)
    if torchrun:
        return choice("packed", chunk, reason="torchrun",
                      detail=f"no speed trial under torchrun; {memory.reason}", memory=memory)
    if previous and previous.get("reason") == "measured" and previous.get("mode") in (
            "packed", "sequential"):
        kept = previous["mode"]
        return choice(kept, chunk if kept == "packed" else None, reason="measured",
                      detail=f"kept from the run's first start ({previous.get('detail', '')})",
                      memory=memory)
    if trial is None:
        raise ValueError("packing = 'auto' needs a speed trial here")
    measured = trial(chunk)
    mode = rule(measured.packed_s_per_step, measured.sequential_s_per_step, measured.margin)
    if measured.packed_s_per_step is None:
        detail = f"the packed trial of {chunk} ran out of memory"
    else:
        detail = (f"packed {measured.packed_s_per_step:.4g} s vs sequential "
                  f"{measured.sequential_s_per_step:.4g} s per step of {measured.candidates} "
                  f"candidates (ratio {measured.ratio:.3f}; packed needs < "
                  f"{1 - measured.margin:.2f})")
    return choice(mode, chunk if mode == "packed" else None, reason="measured", detail=detail,
                  memory=memory, trial=measured)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rng_state(device: torch.device) -> tuple:
    cuda = (torch.cuda.get_rng_state_all()
            if device.type == "cuda" and torch.cuda.is_initialized() else None)
    return torch.get_rng_state(), cuda, random.getstate(), np.random.get_state()


def _restore_rng(state: tuple) -> None:
    cpu, cuda, py, npy = state
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)
    random.setstate(py)
    np.random.set_state(npy)


def trial_batches(train: data.LabelledImages | Any, batch_size: int, *, warmup: int = WARMUP,
                  steps: int = STEPS, seed: int = 0,
                  ) -> tuple[data.LabelledImages, data.LabelledImages, int]:
    """(warm-up split, timed split, batch): (warmup + steps) batches of `train`'s images,
    normalised floats in memory, drawn with a generator of `seed` (repeated when the split
    is short; batch = min(batch_size, len(train)), as an epoch of a small split)."""
    n = len(train)
    batch = min(batch_size, n)
    need = (warmup + steps) * batch
    gen = torch.Generator().manual_seed(seed)
    order = torch.cat([torch.randperm(n, generator=gen) for _ in range(-(-need // n))])[:need]
    if isinstance(train, data.LabelledImages):
        sub = train.subset(order.to(train.device))
    else:  # a streamed split: its own copy, decoded here (no workers, no shared cache)
        sub = dataclasses.replace(train.subset(order), workers=0)
    pieces = list(data.batches(sub, batch, generator=gen, drop_last=False))
    images = torch.cat([p[0] for p in pieces])
    labels = torch.cat([p[1] for p in pieces])
    cut = warmup * batch
    return (data.LabelledImages(images[:cut], labels[:cut]),
            data.LabelledImages(images[cut:], labels[cut:]), batch)


def _time_packed(trainee: Trainee, start: dict[str, Any], params: dict[str, float], chunk: int,
                 warm: data.LabelledImages, timed: data.LabelledImages, batch: int, *,
                 lr: float, accel: Accel, augment: str, seed: int,
                 timer: Callable[[], float]) -> float | None:
    """Seconds per step of `chunk` packed candidates (None: out of memory)."""
    device = timed.device
    own = copy.deepcopy(trainee)
    try:
        pop = PackedPopulation(own, start, [dict(params)] * chunk, lr=lr, accel=accel)
        gen = torch.Generator().manual_seed(seed)
        pop.train_epoch(warm, batch_size=batch, generator=gen, augment=augment)
        _sync(device)
        t0 = timer()
        pop.train_epoch(timed, batch_size=batch, generator=gen, augment=augment)
        _sync(device)
        return (timer() - t0) / max(len(timed) // batch, 1)
    except torch.OutOfMemoryError:
        return None
    finally:
        pop = own = None
        _release(device)


def _time_sequential(trainee: Trainee, start: dict[str, Any], params: dict[str, float],
                     warm: data.LabelledImages, timed: data.LabelledImages, batch: int, *,
                     lr: float, accel: Accel, augment: str, seed: int,
                     timer: Callable[[], float]) -> float:
    """Seconds per step of one candidate on the sequential path."""
    device = timed.device
    own = copy.deepcopy(trainee)
    try:
        own.load(start)
        own.loss.set_params(**params)
        if accel.channels_last:
            own.model.to(memory_format=torch.channels_last)
        if accel.compile:
            own.model.compile()
        gen = torch.Generator().manual_seed(seed)
        kw = dict(batch_size=batch, generator=gen, lr=lr, augment=augment,
                  autocast_dtype=accel.autocast)
        for _ in epoch_steps(own, warm, **kw):
            pass
        _sync(device)
        t0, taken = timer(), 0
        for step in epoch_steps(own, timed, **kw):
            if step is None:  # diverged: time the steps taken
                break
            taken += 1
        _sync(device)
        return (timer() - t0) / max(taken, 1)
    finally:
        own = None
        _release(device)


def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def measure(trainee: Trainee, train: data.LabelledImages | Any, params: dict[str, float], *,
            candidates: int, chunk: int, batch_size: int, lr: float, accel: Accel,
            augment: str = "none", seed: int = 0, warmup: int = WARMUP, steps: int = STEPS,
            margin: float = MARGIN, timer: Callable[[], float] = time.perf_counter) -> Trial:
    """The speed trial of the module docstring: `trainee` (left as it is) trained from its
    current state with loss parameters `params`, `chunk` packed and one sequential, on
    (warmup + steps) batches of `train`; `timer` is read around the timed steps only."""
    if candidates < 1 or not 1 <= chunk <= candidates:
        raise ValueError(f"need 1 <= chunk <= candidates; got chunk {chunk}, candidates "
                         f"{candidates}")
    rng = _rng_state(train.device)
    try:
        warm, timed, batch = trial_batches(train, batch_size, warmup=warmup, steps=steps,
                                           seed=seed)
        if accel.channels_last:
            warm = data.LabelledImages(_images(warm.images, accel), warm.labels)
            timed = data.LabelledImages(_images(timed.images, accel), timed.labels)
        start = trainee.state()
        kw = dict(lr=lr, accel=accel, augment=augment, seed=seed, timer=timer)
        packed = _time_packed(trainee, start, params, chunk, warm, timed, batch, **kw)
        single = _time_sequential(trainee, start, params, warm, timed, batch, **kw)
    finally:
        _restore_rng(rng)
    return Trial(candidates, chunk,
                 None if packed is None else -(-candidates // chunk) * packed,
                 candidates * single, warmup=warmup, steps=steps, margin=margin)
