"""Differentiable collectives for the sharded head (losses/sharded_fc.py), on torch.distributed.

Every rank computes the same loss L from gathered or summed tensors and back-propagates its
share L/K (sharded_fc.py); the backward passes below add the ranks' gradients, so the K
shares make up the exact gradient:

    all_gather:  y = (x_0, …, x_{K−1})       ∂/∂x_r = Σ_k (∂L_k/∂y)_r   (summed over ranks, own slot)
    all_reduce:  y = Σ_r x_r                 ∂/∂x_r = Σ_k ∂L_k/∂y

(torch.distributed.nn.functional has these too, deprecated since torch 2.10.)
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


class _AllGather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, group, x: Tensor) -> tuple[Tensor, ...]:
        ctx.group, ctx.rank = group, dist.get_rank(group)
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, x.contiguous(), group=group)
        return tuple(parts)

    @staticmethod
    def backward(ctx, *grads: Tensor):
        total = torch.stack([g.contiguous() for g in grads])
        dist.all_reduce(total, op=dist.ReduceOp.SUM, group=ctx.group)
        return None, total[ctx.rank]


class _AllReduce(torch.autograd.Function):
    @staticmethod
    def forward(ctx, group, x: Tensor) -> Tensor:
        ctx.group = group
        out = x.clone().contiguous()
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        total = grad.clone().contiguous()
        dist.all_reduce(total, op=dist.ReduceOp.SUM, group=ctx.group)
        return None, total


def all_gather(x: Tensor, group=None) -> tuple[Tensor, ...]:
    """Every rank's `x` (equal shapes), in rank order; differentiable (module docstring)."""
    return _AllGather.apply(group, x)


def all_reduce(x: Tensor, group=None) -> Tensor:
    """Σ over ranks of `x`; differentiable (module docstring)."""
    return _AllReduce.apply(group, x)
