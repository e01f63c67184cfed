"""Partial FC sharded over torch.distributed ranks (model-parallel class head, as insightface's
arcface_torch; docs/face_recognition.md "Partial FC"). Rank r of K holds the class centres
[r·C/K, (r+1)·C/K) and samples among them (its positives plus a share r of its negatives).

One step, each rank with its own batch (x_r, y_r):

    x, y      = all_gather(x_r), all_gather(y_r)           (the global batch, N rows)
    z_r       = the member's scores of x on rank r's sampled centres   (N × |S_r|)
    cos θ_y   = all_reduce_sum(cos θ_y where rank r holds y)           (every rank: all N)
    new_y     = the member's target s·f(θ_y) (+ its hard negatives on z_r), from the global
                cos θ_y, x and the member's statistics — the same on every rank
    lse_r     = logsumexp_j z'_r,j  (the target entry on its owner rank only)
    L         = mean_i [ logsumexp_r lse_r,i − new_y,i ] (+ MagFace's g term)

Every rank computes the same L; the collectives are the differentiable ones of
torch.distributed.nn, and each rank back-propagates L/K, so the K backward passes add up to
the exact gradient. The statistics are exact: CurricularFace's t (mean global cos θ_y),
AdaFace's and MagFace's norm statistics and ElasticFace's draws (all from the gathered x).
Supported members: the normalised heads whose target is a function of cos θ_y (normface,
cosface, arcface, combined_margin, modulated without bins) and the replaced-target members
(adaface, magface, elasticface_*, curricularface, mv_softmax, subcenter_arcface). Others (the
un-normalised heads, modulated with bins and am_lfs, which need p over all classes, adacos)
are refused.

Checkpoints: `gathered_state_dict()` (every rank calls it) gives the full head in
PartialFC's layout (``inner.weight`` (C, D)), so a run resumes on any number of ranks
(`load_gathered_state_dict`) or in one process (PartialFC.load_state_dict).
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dnn
from torch import Tensor, nn
from torch.func import functional_call

from lfsearch.losses.base import Loss, _NormalizedHead
from lfsearch.losses.partial_fc import PartialFC, check_sample_rate, sample_classes
from lfsearch.losses.target_logit import _ReplacedTargetHead

REFUSED = ("softmax", "weighted_softmax", "lsoftmax", "sphereface", "l2_softmax", "am_lfs",
           "adacos")


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
    normalised head whose target needs cos θ_y only, with reduction 'mean'. No process group
    is needed (a configuration is checked with it before any rank starts)."""
    name = getattr(inner, "name", type(inner).__name__)
    if not isinstance(inner, _NormalizedHead) or name in REFUSED or (
            name == "modulated" and inner.bins is not None):
        raise ValueError(f"sharded partial_fc supports normface, cosface, arcface, "
                         f"combined_margin, modulated (no bins), adaface, magface, "
                         f"elasticface_*, curricularface, mv_softmax, subcenter_arcface; "
                         f"got {name!r}" + (" with bins" if name == "modulated" else ""))
    if inner.reduction != "mean":
        raise ValueError(f"sharded partial_fc averages over the global batch: reduction "
                         f"must be 'mean' (allowed: mean); got {inner.reduction!r}")


class ShardedPartialFC(Loss):
    """A head member sharded by class over the ranks of `group` (module docstring). Built
    from the full member (same initial weights on every rank, e.g. the same seed); keeps
    this rank's rows."""

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
        inner.num_classes = self.hi - self.lo
        self.inner = inner
        self.seed, self.step = int(seed), 0
        self.last_sample: Tensor | None = None

    def param_names(self) -> list[str]:
        return self.inner.param_names()

    def get_params(self) -> dict[str, float]:
        return self.inner.get_params()

    def set_params(self, **values) -> None:
        self.inner.set_params(**values)

    def broadcast_params(self, src: int = 0) -> None:
        """Every rank takes rank `src`'s loss parameters (per-epoch values alike everywhere)."""
        box = [self.inner.get_params()]
        dist.broadcast_object_list(box, src=src, group=self.group)
        self.inner.set_params(**box[0])

    def _rows(self, classes: Tensor) -> Tensor:
        k = self.rows_per_class
        return classes if k == 1 else (classes[:, None] * k
                                       + torch.arange(k, device=classes.device)).reshape(-1)

    def forward(self, x_local: Tensor, labels_local: Tensor) -> Tensor:
        inner, update = self.inner, self.training and torch.is_grad_enabled()
        x = torch.cat(dnn.all_gather(x_local, group=self.group))
        gathered = [torch.empty_like(labels_local) for _ in range(self.world)]
        dist.all_gather(gathered, labels_local, group=self.group)
        labels = torch.cat(gathered)
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
        inner.num_classes = int(classes.numel())
        try:
            z = functional_call(_Scores(inner), {"inner.weight": inner.weight[self._rows(classes)]},
                                (x,))
        finally:
            inner.num_classes = self.hi - self.lo
        rows = torch.nonzero(own).reshape(-1)
        cols = torch.searchsorted(classes, local_labels)
        s = inner.s
        cos_part = torch.zeros(n, dtype=z.dtype, device=z.device).index_put((rows,), z[rows, cols] / s)
        cos_y = dnn.all_reduce(cos_part, group=self.group)
        c = cos_y.detach().clamp(-1.0, 1.0)
        negatives, extra = None, None
        if isinstance(inner, _ReplacedTargetHead):
            f, slope = inner._target_and_slope(c, x, update)
            new_y = s * (f + slope * (cos_y - cos_y.detach()))
            negatives = inner._negatives(c, update)
            extra = inner._extra_loss(x)
        else:
            spec = inner._target(x, labels, z)
            if spec is None:
                new_y = s * cos_y
            else:
                fn, shift, scale = spec
                if fn is None:
                    new_y = s * cos_y + shift
                else:
                    f, slope = fn(c)
                    new_y = scale * (f + slope * (cos_y - cos_y.detach()))
        if negatives is not None:
            threshold, transform = negatives
            hard = z.detach() > threshold.to(z.dtype)[:, None]
            hard[rows, cols] = False
            z = torch.where(hard, transform(z)[0], z)
        z = z.index_put((rows, cols), new_y[rows].to(z.dtype))
        lse = torch.logsumexp(torch.stack(dnn.all_gather(torch.logsumexp(z, 1),
                                                         group=self.group)), 0)
        per_sample = lse - new_y
        if extra is not None:
            per_sample = per_sample + extra.to(per_sample.dtype)
        loss = per_sample.mean()
        scaled = loss / self.world  # K ranks back-propagate: their sum is the gradient of L
        return scaled + (loss - scaled).detach()

    # ------------------------------------------------------------------ checkpoints
    def gather_rows(self, local: Tensor) -> Tensor:
        """The full (C·rows, ...) tensor from every rank's rows of a head-shaped tensor (the
        weight, or an optimiser's momentum of it); a collective: every rank calls it."""
        k, local = self.rows_per_class, local.detach()
        size = (math.ceil(self.num_classes / self.world) + 1) * k
        padded = local.new_zeros((size, *local.shape[1:]))
        padded[:local.shape[0]] = local
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        dist.all_gather(parts, padded, group=self.group)
        sizes = [(hi - lo) * k for lo, hi in (shard_range(self.num_classes, r, self.world)
                                              for r in range(self.world))]
        return torch.cat([p[:n] for p, n in zip(parts, sizes)])

    def local_rows(self, full: Tensor) -> Tensor:
        """This rank's rows [lo·rows, hi·rows) of a full head-shaped tensor."""
        k = self.rows_per_class
        return full[self.lo * k:self.hi * k]

    def gathered_state_dict(self) -> dict:
        """PartialFC's state with the full head (C·rows, D) gathered from every rank (a
        collective: every rank calls it)."""
        full = self.gather_rows(self.inner.weight)
        state = {f"inner.{key}": v for key, v in self.inner.state_dict().items()}
        state["inner.weight"] = full
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
        if isinstance(inner.get("_extra_state"), dict) and "num_classes" in inner["_extra_state"]:
            inner["_extra_state"] = {**inner["_extra_state"], "num_classes": self.hi - self.lo}
        self.inner.load_state_dict(inner)
        extra = state.get("_extra_state", {})
        self.seed, self.step = int(extra.get("seed", self.seed)), int(extra.get("step", 0))


__all__ = ["PartialFC", "ShardedPartialFC", "check_member", "shard_range"]
