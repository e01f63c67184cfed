"""Partial FC sharded over torch.distributed ranks (model-parallel class head, as insightface's
arcface_torch; docs/face_recognition.md "Partial FC"). Rank r of K holds the class centres
[r·C/K, (r+1)·C/K) (and their bias entries) and samples among them (its positives plus a
share r of its negatives).

One step, each rank with its own batch (x_r, y_r):

    x, y      = all_gather(x_r), all_gather(y_r)           (the global batch, N rows)
    z_r       = the member's plain scores of x on rank r's sampled rows   (N × |S_r|)
    z_y       = all_reduce_sum(z_r[i, y_i] where rank r holds y_i)     (every rank: all N)
    new_y     = the member's target from z_y (cos θ_y = z_y / scale), x and its statistics —
                the same on every rank (+ its hard negatives on z_r)
    lse_r     = logsumexp_j z'_r,j  (the target entry on its owner rank only)
    L         = mean_i [ logsumexp_r lse_r,i − new_y,i ] (+ MagFace's g term)

Every rank computes the same L; the collectives are the differentiable ones of
lfsearch/losses/collectives.py, and each rank back-propagates L/K, so the K backward passes add up to
the exact gradient of the rows it holds and of x. A parameter every rank holds whole
(l2_softmax's learned α) gets this rank's part of its gradient: the sum over the ranks is
the exact one (data_parallel sums it, as the backbone's).

Every class-head member of the family is supported; at sample rate 1 the loss, gradients and
statistics are one process's with the full head:

* the normalised heads whose target is a function of cos θ_y, and the replaced-target
  members (CurricularFace's t from the global cos θ_y; AdaFace's and MagFace's norm statistics
  and ElasticFace's draws from the gathered x);
* the un-normalised heads: softmax, l2_softmax (scores W_j·x (+ b_j), row-local; the bias
  is sharded with the rows), lsoftmax and sphereface (target scale ‖W_y‖‖x‖ or ‖x‖,
  computed on the owner rank and all-reduced, as z_y), weighted_softmax (its C class
  weights and counts are kept whole on every rank, which all see the global labels);
* the softmax probability p = exp(z_y − logsumexp over every class) of modulated with bins
  (the bin of the plain p: the ranks' plain log-sum-exps are gathered and combined) and of
  am_lfs (−log τ(p) of the per-sample cross entropy, which is already global);
* AdaCos's dynamic scale: B_avg is the log-sum-exp of the ranks' off-target sums, θ_med the
  median over the global batch's θ_y.

At a sample rate < 1, p and B_avg sum over the classes sampled on all ranks (approximate,
as the one-process sampled head, whose p is over its S). Refused: terms that are not a
class head (joint aux terms) and a reduction other than 'mean'.

Checkpoints: `gathered_state_dict()` (every rank calls it) gives the full head in
PartialFC's layout (``inner.weight`` (C, D), ``inner.bias`` (C,)), so a run resumes on any
number of ranks (`load_gathered_state_dict`) or in one process (PartialFC.load_state_dict).
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.func import functional_call

from lfsearch.losses import collectives
from lfsearch.losses import margins
from lfsearch.losses.adaptive_margins import AdaCos
from lfsearch.losses.am_lfs import AMLFS
from lfsearch.losses.base import Loss, _Head, _MarginHead, _NormalizedHead
from lfsearch.losses.fixed_margins import WeightedSoftmax, _Annealed
from lfsearch.losses.modulated import Modulated
from lfsearch.losses.partial_fc import (PartialFC, WrapsMember, check_sample_rate,
                                         sample_classes)
from lfsearch.losses.target_logit import _ReplacedTargetHead

#: Nothing of the softmax family's heads is refused; what is not a class head is.
REFUSED: tuple[str, ...] = ()


class _Scores(nn.Module):
    def __init__(self, inner: Loss):
        super().__init__()
        self.inner = inner

    def forward(self, x: Tensor) -> Tensor:
        return self.inner._scores(x)


def shard_range(num_classes: int, rank: int, world: int) -> tuple[int, int]:
    """Classes [lo, hi) of rank `rank`: lo = ⌊rank·C/K⌋."""
    return rank * num_classes // world, (rank + 1) * num_classes // world


def check_member(inner: Loss) -> None:
    """Raise a one-line ValueError unless `inner` can be sharded (module docstring): a
    class-head member of the softmax family with reduction 'mean'. No process group is
    needed (a configuration is checked with it before any rank starts)."""
    name = getattr(inner, "name", type(inner).__name__)
    if not isinstance(inner, _Head) or name in REFUSED:
        raise ValueError(f"sharded partial_fc supports the class-head members of the softmax "
                         f"family (not joint aux terms or other losses); got {name!r}")
    if inner.reduction != "mean":
        raise ValueError(f"sharded partial_fc averages over the global batch: reduction "
                         f"must be 'mean' (allowed: mean); got {inner.reduction!r}")


class ShardedPartialFC(WrapsMember):
    """A head member sharded by class over the ranks of `group` (module docstring). Built
    from the full member (same initial weights on every rank, e.g. the same seed); keeps
    this rank's rows (and bias entries)."""

    name = "sharded_partial_fc"

    def __init__(self, inner: Loss, sample_rate: float = 0.1, *, group=None,
                 seed: int = 0) -> None:
        super().__init__()
        check_member(inner)
        self.group = group
        self.world = dist.get_world_size(group)
        self.rank = dist.get_rank(group)
        self.sample_rate = check_sample_rate(sample_rate)
        self.num_classes, self.embedding_size = inner.num_classes, inner.embedding_size
        self.lo, self.hi = shard_range(self.num_classes, self.rank, self.world)
        self.rows_per_class = inner.weight.shape[0] // inner.num_classes
        k = self.rows_per_class
        inner.weight = nn.Parameter(inner.weight.detach()[self.lo * k:self.hi * k].clone())
        if getattr(inner, "bias", None) is not None:
            inner.bias = nn.Parameter(inner.bias.detach()[self.lo:self.hi].clone())
        inner.num_classes = self.hi - self.lo
        self.inner = inner
        self.seed, self.step = int(seed), 0
        self.last_sample: Tensor | None = None

    def broadcast_params(self, src: int = 0) -> None:
        """Every rank takes rank `src`'s loss parameters (per-epoch values alike everywhere)."""
        box = [self.inner.get_params()]
        dist.broadcast_object_list(box, src=src, group=self.group)
        self.inner.set_params(**box[0])

    def sharded_parameters(self) -> list[tuple[nn.Parameter, int]]:
        """This rank's parameters that hold a shard of the classes, each with its rows per
        class: the weight (K sub-centres: K) and the bias (1), if any."""
        out = [(self.inner.weight, self.rows_per_class)]
        if getattr(self.inner, "bias", None) is not None:
            out.append((self.inner.bias, 1))
        return out

    def _rows(self, classes: Tensor) -> Tensor:
        k = self.rows_per_class
        return classes if k == 1 else (classes[:, None] * k
                                       + torch.arange(k, device=classes.device)).reshape(-1)

    def _lse_over_ranks(self, local: Tensor) -> Tensor:
        """logsumexp over the ranks of each rank's (detached) log-sum-exp `local`."""
        parts = [torch.empty_like(local) for _ in range(self.world)]
        dist.all_gather(parts, local.detach().contiguous(), group=self.group)
        return torch.logsumexp(torch.stack(parts), 0)

    def forward(self, x_local: Tensor, labels_local: Tensor) -> Tensor:
        inner, update = self.inner, self.training and torch.is_grad_enabled()
        x = torch.cat(collectives.all_gather(x_local, group=self.group))
        labels = torch.cat(collectives.all_gather(labels_local, group=self.group))
        n = labels.shape[0]
        own = (labels >= self.lo) & (labels < self.hi)
        g = torch.Generator().manual_seed(
            (self.seed * 1_000_003 + self.step * 1009 + self.rank) % (2**63))
        local_labels = labels[own] - self.lo
        if update:
            classes = sample_classes(local_labels, self.hi - self.lo, self.sample_rate, g)
            self.step += 1
        else:
            classes = torch.arange(self.hi - self.lo, device=labels.device)
        self.last_sample = classes + self.lo
        subs = {"inner.weight": inner.weight[self._rows(classes)]}
        if getattr(inner, "bias", None) is not None:
            subs["inner.bias"] = inner.bias[classes]
        inner.num_classes = int(classes.numel())
        try:
            z = functional_call(_Scores(inner), subs, (x,))
        finally:
            inner.num_classes = self.hi - self.lo
        rows = torch.nonzero(own).reshape(-1)
        cols = torch.searchsorted(classes, local_labels)
        z_y = collectives.all_reduce(z.new_zeros(n).index_put((rows,), z[rows, cols]), group=self.group)
        if isinstance(inner, AdaCos) and inner.dynamic and update:
            ratio = self._adacos_ratio(z, z_y, rows, cols)
            z, z_y = z * ratio, z_y * ratio
        new_y, negatives, extra = self._new_target(x, labels, z, z_y, rows, local_labels, update)
        if negatives is not None:
            threshold, transform = negatives
            hard = z.detach() > threshold.to(z.dtype)[:, None]
            hard[rows, cols] = False
            z = torch.where(hard, transform(z)[0], z)
        z = z.index_put((rows, cols), new_y[rows].to(z.dtype))
        lse = torch.logsumexp(torch.stack(collectives.all_gather(torch.logsumexp(z, 1),
                                                         group=self.group)), 0)
        per_sample = lse - new_y
        if extra is not None:
            per_sample = per_sample + extra.to(per_sample.dtype)
        if isinstance(inner, AMLFS):  # −log τ(p), log p = −(the cross entropy)
            coef = inner.tau_coef.to(per_sample.dtype)
            per_sample = -margins.log_tau(-per_sample, coef[0], coef[1])
        weight = self._class_weight(labels)
        if weight is None:
            loss = per_sample.mean()
        else:
            w_y = weight.to(per_sample)[labels]
            loss = (per_sample * w_y).sum() / w_y.sum()
        if update and isinstance(inner, _Annealed):
            inner.step += 1  # λ's step, as the member's own forward counts it
        scaled = loss / self.world  # K ranks back-propagate: their sum is the gradient of L
        return scaled + (loss - scaled).detach()

    def _new_target(self, x, labels, z, z_y, rows, local_labels, update):
        """(new_y (N,), hard negatives or None, extra per-sample term or None) from the
        global plain target logit z_y, as the member's own cross entropy makes them."""
        inner = self.inner
        if isinstance(inner, _ReplacedTargetHead):
            cos_y = z_y / inner.s
            c = cos_y.detach().clamp(-1.0, 1.0)
            f, slope = inner._target_and_slope(c, x, update)
            return (inner.s * (f + slope * (cos_y - cos_y.detach())),
                    inner._negatives(c, update), inner._extra_loss(x))
        if isinstance(inner, Modulated) and inner.bins is not None:
            plain = self._lse_over_ranks(torch.logsumexp(z.detach(), 1))
            spec = None, inner.bin_shift(z_y, plain), None
        elif isinstance(inner, _MarginHead) and not isinstance(inner, _NormalizedHead):
            # L-Softmax's ‖W_y‖·‖x‖, SphereFace's ‖x‖: on the owner rank, all-reduced
            part = inner._target_scale(x[rows], local_labels).to(z_y.dtype)
            scale = collectives.all_reduce(z_y.new_zeros(z_y.shape[0]).index_put((rows,), part),
                                   group=self.group)
            spec = inner.target_and_slope, None, scale
        else:  # these targets read neither the labels nor the logits' values (only dtype)
            spec = inner._target(x, labels, z)
        if spec is None:
            return z_y, None, None
        fn, shift, scale = spec
        if fn is None:
            return z_y + shift, None, None
        cos_y = z_y / scale
        c = cos_y.detach().clamp(-1.0, 1.0)
        f, slope = fn(c)
        return scale * (f + slope * (cos_y - cos_y.detach())), None, None

    def _adacos_ratio(self, z: Tensor, z_y: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
        """AdaCos's dynamic scale over every class (B_avg: the ranks' off-target
        log-sum-exps combined; θ_med over the global batch); sets it, returns new / old."""
        inner = self.inner
        with torch.no_grad():
            zf = z.detach().double()
            masked = zf.index_put((rows, cols), torch.tensor(float("-inf"), dtype=zf.dtype,
                                                             device=zf.device))
            log_b = self._lse_over_ranks(torch.logsumexp(masked.flatten(), 0)) - math.log(
                z_y.shape[0])
            cos_y = (z_y.detach().double() / inner.scale).clamp(-1.0, 1.0)
            new = inner.scale_from(log_b, cos_y)
            ratio = (new / inner.scale).to(z.dtype)
        # a new buffer: the old one is still in z's graph (as the member's clone keeps it)
        inner.scale = new.to(dtype=inner.scale.dtype).clone()
        return ratio

    def _class_weight(self, labels: Tensor) -> Tensor | None:
        """weighted_softmax's C class weights (whole on every rank; its balanced counts move
        with the global labels), or None."""
        inner = self.inner
        if not isinstance(inner, WeightedSoftmax):
            return None
        inner.num_classes = self.num_classes
        try:
            return inner._class_weight(labels)
        finally:
            inner.num_classes = self.hi - self.lo

    # ------------------------------------------------------------------ checkpoints
    def gather_rows(self, local: Tensor, per_class: int | None = None) -> Tensor:
        """The full (C·rows, ...) tensor from every rank's rows of a head-shaped tensor (the
        weight, the bias with per_class = 1, or an optimiser's moment of them); a collective:
        every rank calls it."""
        k, local = self.rows_per_class if per_class is None else per_class, local.detach()
        size = (math.ceil(self.num_classes / self.world) + 1) * k
        padded = local.new_zeros((size, *local.shape[1:]))
        padded[:local.shape[0]] = local
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        dist.all_gather(parts, padded, group=self.group)
        sizes = [(hi - lo) * k for lo, hi in (shard_range(self.num_classes, r, self.world)
                                              for r in range(self.world))]
        return torch.cat([p[:n] for p, n in zip(parts, sizes)])

    def local_rows(self, full: Tensor, per_class: int | None = None) -> Tensor:
        """This rank's rows [lo·rows, hi·rows) of a full head-shaped tensor."""
        k = self.rows_per_class if per_class is None else per_class
        return full[self.lo * k:self.hi * k]

    def gathered_state_dict(self) -> dict:
        """PartialFC's state with the full head (C·rows, D) and bias (C,) gathered from every rank (a
        collective: every rank calls it)."""
        full = self.gather_rows(self.inner.weight)
        state = {f"inner.{key}": v for key, v in self.inner.state_dict().items()}
        state["inner.weight"] = full
        if getattr(self.inner, "bias", None) is not None:
            state["inner.bias"] = self.gather_rows(self.inner.bias, 1)
        if "_extra_state" in self.inner.state_dict() and isinstance(
                state["inner._extra_state"], dict) and "num_classes" in state["inner._extra_state"]:
            state["inner._extra_state"] = {**state["inner._extra_state"],
                                           "num_classes": self.num_classes}
        state["_extra_state"] = {"values": {}, "seed": self.seed, "step": self.step,
                                 "sample_rate": self.sample_rate, "loss": PartialFC.name}
        return state

    def load_gathered_state_dict(self, state: dict) -> None:
        """Load a gathered (or a one-process PartialFC) state: this rank's rows of the head."""
        inner = {key[len("inner."):]: v for key, v in state.items() if key.startswith("inner.")}
        inner["weight"] = self.local_rows(inner["weight"])
        if inner.get("bias") is not None:
            inner["bias"] = self.local_rows(inner["bias"], 1)
        if isinstance(inner.get("_extra_state"), dict) and "num_classes" in inner["_extra_state"]:
            inner["_extra_state"] = {**inner["_extra_state"], "num_classes": self.hi - self.lo}
        self.inner.load_state_dict(inner)
        extra = state.get("_extra_state", {})
        self.seed, self.step = int(extra.get("seed", self.seed)), int(extra.get("step", 0))


__all__ = ["PartialFC", "ShardedPartialFC", "check_member", "shard_range"]
