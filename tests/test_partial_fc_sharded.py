"""Partial FC sharded over 2 gloo ranks (lfsearch/losses/sharded_fc.py), launched with
torch.multiprocessing.spawn on CPU: each rank holds half the class centres and its own half
of the batch, and the loss and every gradient equal one process with the full head on the
whole batch, for every head member of the family (the un-normalised heads, p over every
class, AdaCos's scale included); sampling keeps every positive; the gathered checkpoint
loads in one process and back on the ranks."""

from __future__ import annotations

import copy
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lfsearch import losses
from lfsearch.losses.partial_fc import PartialFC
from lfsearch.losses.sharded_fc import ShardedPartialFC, shard_range

LAMBDA = {"lambda_base": 2.0, "lambda_gamma": 1.0, "lambda_min": 0.0}  # λ moves each step
MEMBERS = [("cosface", {}), ("arcface", {}), ("combined_margin", {}),
           ("modulated", {"a": 3.0}), ("adaface", {}), ("magface", {}),
           ("elasticface_arc", {"seed": 3}), ("curricularface", {}), ("mv_softmax", {}),
           ("subcenter_arcface", {}),
           # the un-normalised heads (a sharded bias; a learned α every rank holds whole)
           ("softmax", {}), ("weighted_softmax", {}), ("l2_softmax", {"learn_alpha": True,
                                                                      "bias": True}),
           ("lsoftmax", LAMBDA), ("sphereface", LAMBDA),
           # p over every class; AdaCos's B_avg and median θ_y over every class and row
           ("modulated", {"s": 4.0, "bins": 3, "a": [1.5, 2.0, 3.0]}),
           ("am_lfs", {"s": 4.0, "bins": 3, "tau_slopes": [0.8, 1.2, 1.0],
                       "tau_intercepts": [0.05, 0.1, 0.0], "t_slopes": [1.1, 0.9, 1.0],
                       "t_intercepts": [0.0, -0.1, 0.05]}),
           ("adacos", {})]
C, D, N = 11, 8, 12  # 11 classes: shards of 5 and 6


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def global_batch(step: int):
    """N rows, then N − 1: the ranks' slices differ in size at the second step (5 and 6)."""
    n = N - step
    g = torch.Generator().manual_seed(100 + step)
    return torch.randn(n, D, generator=g, dtype=torch.float64) * 3, torch.randint(0, C, (n,),
                                                                                   generator=g)


def worker(rank: int, world: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        lo, hi = shard_range(C, rank, world)
        for name, params in MEMBERS:
            torch.manual_seed(0)
            full = losses.build(name, embedding_size=D, num_classes=C, **params).double()
            sharded = ShardedPartialFC(copy.deepcopy(full), 1.0, seed=0).double()
            k = full.weight.shape[0] // C
            for step in range(2):  # statistics (t, norm means, draws) move alike
                x, y = global_batch(step)
                half = slice(rank * len(y) // world, (rank + 1) * len(y) // world)
                xa = x.clone().requires_grad_()
                want = full(xa, y)
                want.backward()
                xr = x[half].clone().requires_grad_()
                got = sharded(xr, y[half])
                got.backward()
                assert torch.allclose(got, want, rtol=1e-10, atol=1e-10), (name, step, got, want)
                assert torch.allclose(xr.grad, xa.grad[half], rtol=1e-8, atol=1e-10), name
                mine = dict(sharded.inner.named_parameters())
                for pn, p in full.named_parameters():
                    if pn in ("weight", "bias"):  # this rank's rows
                        want_grad = p.grad[lo * k:hi * k] if pn == "weight" else p.grad[lo:hi]
                        got_grad = mine[pn].grad
                    else:  # held whole on every rank: the ranks' parts add up
                        want_grad, got_grad = p.grad, mine[pn].grad.clone()
                        dist.all_reduce(got_grad)
                    assert torch.allclose(got_grad, want_grad, rtol=1e-8, atol=1e-10), (name, pn)
                    mine[pn].grad = None
                    p.grad = None
            for (bn, b), c in zip(full.named_buffers(), sharded.inner.buffers()):
                assert torch.allclose(b, c, rtol=1e-10, atol=1e-12), (name, bn)
            if full.bias is not None:  # the gathered bias is the whole one, and loads back
                state = sharded.gathered_state_dict()
                assert torch.equal(state["inner.bias"], full.bias.detach()), name
                sharded.load_gathered_state_dict(state)
                assert torch.equal(sharded.inner.bias, full.bias.detach()[lo:hi]), name
        # at a sample rate < 1 the members that sum over the classes still train
        for name, params in MEMBERS[-8:]:
            torch.manual_seed(0)
            member = losses.build(name, embedding_size=D, num_classes=C, **params)
            sharded = ShardedPartialFC(member, 0.5, seed=2)
            x, y = global_batch(0)
            value = sharded(x[half].float(), y[half])
            value.backward()
            assert torch.isfinite(value) and torch.isfinite(member.weight.grad).all(), name
        # sampling keeps every positive of this rank's shard, and ⌈r·C_r⌉ classes
        torch.manual_seed(0)
        member = losses.build("arcface", embedding_size=D, num_classes=C)
        sharded = ShardedPartialFC(copy.deepcopy(member), 0.5, seed=1)
        x, y = global_batch(0)
        sharded(x[half].float(), y[half]).backward()
        mine = y[(y >= lo) & (y < hi)].unique()
        assert torch.isin(mine, sharded.last_sample).all()
        assert sharded.last_sample.numel() == max(-(-(hi - lo) // 2), mine.numel())
        # the gathered checkpoint is the full head; one process loads it; ranks load it back
        state = sharded.gathered_state_dict()
        assert torch.equal(state["inner.weight"], member.weight.detach())
        one = PartialFC(copy.deepcopy(member), 0.5)
        one.load_state_dict(state)
        assert one.step == 1 and torch.equal(one.weight, member.weight)
        again = ShardedPartialFC(losses.build("arcface", embedding_size=D, num_classes=C), 0.5)
        again.load_gathered_state_dict(one.state_dict())
        assert torch.equal(again.inner.weight, member.weight.detach()[lo:hi])
        # per-epoch parameters: rank 0's everywhere
        sharded.set_params(m=0.3 + 0.1 * rank)
        sharded.broadcast_params()
        assert sharded.get_params()["m"] == pytest.approx(0.3)
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_equal_one_process_with_the_full_head():
    mp.spawn(worker, args=(2, free_port()), nprocs=2, join=True)


def test_sharding_refuses_what_is_not_a_class_head():
    # refused before any process group is needed
    for name, params in [("center", {}), ("triplet", {})]:
        with pytest.raises(ValueError, match="sharded partial_fc supports"):
            ShardedPartialFC(losses.build(name, embedding_size=4, num_classes=10, **params))
    with pytest.raises(ValueError, match="reduction must be 'mean'"):
        ShardedPartialFC(losses.build("arcface", embedding_size=4, num_classes=10,
                                      reduction="sum"))
