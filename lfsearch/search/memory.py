"""The packed-memory guard: how many candidates fit on the device at once.

Packing M candidates keeps M candidates' activations alive in one forward/backward (packed
IResNet-50 at 112×112: about 75 MiB per image in bf16), so M = 4 at batch 128 wants about
38 GiB. Before the first epoch `plan_packing` estimates, per candidate,

    need(k) = k · (batch · a · SAFETY + state) + fixed

  a       activation bytes per image of one candidate, measured once on the device
          (`activation_bytes_per_image`: the bytes autograd saves for backward, counted with
          saved-tensor hooks on two probe batches; their difference cancels what does not
          grow with the batch, such as bf16 copies of the weights);
  state   the candidate's parameters, gradients and optimiser state (backbone and head);
  fixed   one N × C logit matrix and its two N × C buffers (float32), alive for one
          candidate at a time, and the batch itself;

and packs the largest k ≤ M with need(k) ≤ budget (free device memory × HEADROOM): chunks of
k candidates one after another; k < 2 trains sequentially. The plan goes to manifest.json.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

SAFETY = 1.5  # temporaries beyond the saved tensors (convolution workspaces, backward buffers)
HEADROOM = 0.85  # the share of free device memory a plan may use
_OPTIMIZER_SLOTS = {"SGD": 1, "Adam": 2, "AdamW": 2}  # state tensors per parameter


@dataclass(frozen=True)
class PackingPlan:
    """mode "packed" (`chunk` candidates at a time) or "sequential"; the figures behind it."""

    mode: str
    chunk: int | None
    candidates: int
    activation_bytes_per_image: int
    state_bytes_per_candidate: int
    fixed_bytes: int
    budget_bytes: int | None
    reason: str

    def describe(self) -> dict:
        """The plan as plain data for manifest.json."""
        return asdict(self)


def _storage_key(t: torch.Tensor) -> tuple[int, int]:
    storage = t.untyped_storage()
    return storage.data_ptr(), storage.nbytes()


def saved_bytes(model: nn.Module, images: torch.Tensor,
                autocast: torch.dtype | None = None) -> int:
    """Bytes autograd saves for backward in one training forward of `images` (each storage
    counted once; the model's parameters and buffers, which exist anyway, left out)."""
    own = {_storage_key(t) for t in list(model.parameters()) + list(model.buffers())}
    seen: dict[tuple[int, int], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = _storage_key(t)
        if key not in own:
            seen[key] = key[1]
        return t

    device = images.device
    ctx = (torch.autocast(device.type, dtype=autocast) if autocast is not None
           else torch.autocast(device.type, enabled=False))
    was = model.training
    model.train()
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), ctx:
            out = model(images)
        del out
    finally:
        model.train(was)
    return sum(seen.values())


def activation_bytes_per_image(model: nn.Module, image_shape: tuple[int, ...],
                               device: torch.device | str, *,
                               autocast: torch.dtype | None = None,
                               probes: tuple[int, int] = (2, 4)) -> int:
    """Saved-for-backward bytes per image of one candidate: (bytes(b2) − bytes(b1)) / (b2 − b1)
    on two probe batches of random images on `device`. BatchNorm's running statistics are
    restored afterwards, so the measurement leaves the model as it was."""
    b1, b2 = probes
    if not 1 < b1 < b2:
        raise ValueError(f"probes must be two batch sizes 1 < b1 < b2; got {probes}")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        gen = torch.Generator().manual_seed(0)
        x1 = torch.rand((b1, *image_shape), generator=gen).to(device)
        x2 = torch.rand((b2, *image_shape), generator=gen).to(device)
        delta = saved_bytes(model, x2, autocast) - saved_bytes(model, x1, autocast)
    finally:
        model.load_state_dict(state)
    return max(int(math.ceil(delta / (b2 - b1))), 0)


def state_bytes(modules: list[nn.Module], optimizer: torch.optim.Optimizer | str) -> int:
    """Parameters + gradients + optimiser state (+ buffers) of one candidate, in bytes."""
    name = optimizer if isinstance(optimizer, str) else type(optimizer).__name__
    slots = _OPTIMIZER_SLOTS.get(name, 2)
    total = 0
    for module in modules:
        for p in module.parameters():
            total += p.numel() * p.element_size() * (2 + slots)
        for b in module.buffers():
            total += b.numel() * b.element_size()
    return total


def fixed_bytes(batch_size: int, num_classes: int, image_shape: tuple[int, ...]) -> int:
    """One candidate's N × C logits with their two N × C float32 buffers, and the batch."""
    return 3 * 4 * batch_size * num_classes + 4 * batch_size * math.prod(image_shape)


def device_budget(device: torch.device | str) -> int | None:
    """Free CUDA memory × HEADROOM; None off CUDA (host memory is not guarded)."""
    device = torch.device(device)
    if device.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return int(free * HEADROOM)


def plan_packing(candidates: int, *, batch_size: int, activation_per_image: int,
                 state_per_candidate: int, fixed: int, budget: int | None) -> PackingPlan:
    """The largest chunk k ≤ candidates with need(k) ≤ budget (see the module docstring);
    k < 2 -> sequential. budget None: every candidate packed, unguarded."""
    if candidates < 1 or batch_size < 1:
        raise ValueError(f"candidates and batch_size must be >= 1; got {candidates}, "
                         f"{batch_size}")
    per = int(batch_size * activation_per_image * SAFETY) + state_per_candidate
    figures = dict(candidates=candidates, activation_bytes_per_image=activation_per_image,
                   state_bytes_per_candidate=state_per_candidate, fixed_bytes=fixed,
                   budget_bytes=budget)
    if budget is None:
        return PackingPlan("packed", candidates, reason="no device budget (not CUDA): "
                           "every candidate packed", **figures)
    fits = (budget - fixed) // per if budget > fixed else 0
    k = int(min(candidates, max(fits, 0)))
    need = lambda n: n * per + fixed  # noqa: E731
    if k >= candidates:
        reason = f"all {candidates} fit: need {need(candidates) / 2**30:.1f} GiB of " \
                 f"{budget / 2**30:.1f} GiB"
        return PackingPlan("packed", candidates, reason=reason, **figures)
    if k >= 2:
        reason = (f"{candidates} need {need(candidates) / 2**30:.1f} GiB of "
                  f"{budget / 2**30:.1f} GiB; packed {k} at a time")
        return PackingPlan("packed", k, reason=reason, **figures)
    reason = (f"2 packed need {need(2) / 2**30:.1f} GiB of {budget / 2**30:.1f} GiB; "
              "sequential")
    return PackingPlan("sequential", None, reason=reason, **figures)


def plan_for(model: nn.Module, loss: nn.Module, optimizer: torch.optim.Optimizer, *,
             candidates: int, batch_size: int, image_shape: tuple[int, ...],
             num_classes: int, device: torch.device | str,
             autocast: torch.dtype | None = None, budget: int | None = None) -> PackingPlan:
    """Measure a once on `device` and plan (budget: `device_budget` unless given)."""
    a = activation_bytes_per_image(model, image_shape, device, autocast=autocast)
    return plan_packing(candidates, batch_size=batch_size, activation_per_image=a,
                        state_per_candidate=state_bytes([model, loss], optimizer),
                        fixed=fixed_bytes(batch_size, num_classes, image_shape),
                        budget=device_budget(device) if budget is None else budget)
