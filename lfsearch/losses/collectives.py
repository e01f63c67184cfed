"""Differentiable collectives for the sharded head (losses/sharded_fc.py), on torch.distributed.

Every rank computes the same loss L from gathered or summed tensors and back-propagates its
share L/K (sharded_fc.py); the backward passes add the ranks' gradients, so the K shares make
up the exact gradient:

    all_gather:  y = (x_0, …, x_{K−1})       ∂/∂x_r = Σ_k (∂L_k/∂y)_r   (summed over ranks, own slot)
    all_reduce:  y = Σ_r x_r                 ∂/∂x_r = Σ_k ∂L_k/∂y

Both are torch.distributed.nn.functional's (deprecated since torch 2.10, its warning silenced
here; an own autograd.Function doing the same aborted now and then in gloo's teardown at
process exit). all_gather takes a first dimension that differs by rank (a batch of n rows over
K ranks): every x_r is padded to the longest with zero rows, which get no gradient.
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dnn
from torch import Tensor


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*deprecated.*")
        return fn(*args, **kwargs)


def all_gather(x: Tensor, group=None) -> tuple[Tensor, ...]:
    """Every rank's `x` in rank order (the first dimension may differ by rank); differentiable
    (module docstring)."""
    world = dist.get_world_size(group)
    sizes = [torch.zeros(1, dtype=torch.long, device=x.device) for _ in range(world)]
    dist.all_gather(sizes, torch.tensor([x.shape[0]], device=x.device), group=group)
    sizes = [int(v) for v in sizes]
    longest = max(sizes)
    if longest > x.shape[0]:
        x = torch.cat([x, x.new_zeros((longest - x.shape[0], *x.shape[1:]))])
    parts = _quiet(dnn.all_gather, x.contiguous(), group=group)
    return tuple(p[:k] for p, k in zip(parts, sizes))


def all_reduce(x: Tensor, group=None) -> Tensor:
    """Σ over ranks of `x`; differentiable (module docstring)."""
    return _quiet(dnn.all_reduce, x.contiguous(), group=group)
