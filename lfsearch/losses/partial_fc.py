"""Partial FC (An et al., "Partial FC: Training 10 Million Identities on a Single Machine",
ICCVW 2021; "Killing Two Birds with One Stone", CVPR 2022): a sampled class head for 100k-2M
identities (docs/face_recognition.md "Partial FC").

Each training step keeps every class centre that is positive in the batch and a random share
of the others, |S| = max(⌈r·C⌉, #positives) (r = ``sample_rate``, 0.1 by default), and
computes the member's loss on S only, labels renumbered into S:

    L = member(x, y | W_S)       with W_S the rows of the class head W (C, D) in S (sorted)

The N×C logits become N×|S|, the logits' memory and the head's matmul shrink by r; W and its
gradient stay C×D (rows outside S get a zero gradient, as insightface's PartialFC v2).
Every head member of the family works on it: the member itself runs on W_S (its target-logit
change, hard negatives, scale), its running statistics and parameters are its own, and
evaluation (eval mode or no autograd) and ``.logits`` use the full head. With r = 1, S is every
class and the loss and gradients equal the member's own.

Exact under sampling: every statistic that depends on the batch only (CurricularFace's t,
from the target cosines; AdaFace's norm mean and std; MagFace; ElasticFace's draws).
Approximate, because it sums over the sampled classes only: the softmax probability p
(Modulated with bins, AM-LFS: p over S is larger than over all classes) and AdaCos's dynamic
scale (B_avg over the sampled negatives). weighted_softmax: its C class weights (and the
balanced counts, from the batch's labels) stay whole, and the sampled call reads w_S:
L = Σ_i w_{y_i}·CE_S,i / Σ_i w_{y_i}. Not supported: joint terms (aux=...).

The sample of step t comes from a generator seeded by (seed, t); the seed and t are saved in
``state_dict()``, so a resumed run draws the samples an uninterrupted one draws.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.func import functional_call

from lfsearch.losses import margins
from lfsearch.losses.base import Loss, _Head
from lfsearch.losses.fixed_margins import WeightedSoftmax


def check_sample_rate(value) -> float:
    v = margins._number("partial_fc", value, "(0, 1]")
    if not 0.0 < v <= 1.0:
        raise ValueError(f"partial_fc (the sample rate of negative class centres) must lie in "
                         f"(0, 1]; got {v:g}")
    return v


def sample_classes(labels: Tensor, num_classes: int, sample_rate: float,
                   generator: torch.Generator | None = None) -> Tensor:
    """Sorted class indices S: every label of the batch plus random others, |S| =
    max(⌈rate·C⌉, #positives)."""
    positives = torch.unique(labels)
    k = min(num_classes, math.ceil(sample_rate * num_classes))
    if k <= positives.numel():
        return positives
    r = torch.rand(num_classes, generator=generator).to(labels.device)
    r[positives] = 2.0  # every positive ranks above every random draw in [0, 1)
    return torch.topk(r, k, sorted=False).indices.sort().values


class WrapsMember(Loss):
    """A head that wraps a member (``.inner``): its loss parameters and training plan are the
    member's (PartialFC, and sharded_fc.ShardedPartialFC)."""

    def param_names(self) -> list[str]:
        return self.inner.param_names()

    def get_params(self) -> dict[str, float]:
        return self.inner.get_params()

    def set_params(self, **values) -> None:
        self.inner.set_params(**values)

    def plan_training(self, total_steps: int) -> None:
        self.inner.plan_training(total_steps)


class PartialFC(WrapsMember):
    """A head member trained on a sampled subset of its classes (module docstring). Built by
    ``losses.build(NAME, ..., partial_fc=0.1)``; ``.inner`` is the member, ``.weight`` its
    full head (C, D)."""

    name = "partial_fc"
    formula = "member(x, y | W_S), S = batch classes + random negatives, |S| = max(ceil(rC), #pos)"

    def __init__(self, inner: Loss, sample_rate: float = 0.1, *, seed: int | None = None,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        if not isinstance(inner, _Head):
            raise ValueError(f"partial_fc needs a class-head member of the softmax family; "
                             f"got {getattr(inner, 'name', type(inner).__name__)!r} (not "
                             "allowed: center, range, contrastive, triplet, joint aux terms)")
        self.inner = inner
        self.sample_rate = check_sample_rate(sample_rate)
        self.embedding_size, self.num_classes = inner.embedding_size, inner.num_classes
        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        self.seed = margins.check_integer("seed", seed, 0)
        self.step = 0
        #: the classes of the last sampled step (for inspection and tests)
        self.last_sample: Tensor | None = None

    # the member's interface, passed through
    @property
    def weight(self) -> Tensor:
        return self.inner.weight

    def logits(self, embeddings: Tensor) -> Tensor:
        return self.inner.logits(embeddings)

    def margin_logits(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        return self.inner.margin_logits(embeddings, labels)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name in ("s", "target", "target_and_slope", "modulating_factors", "K"):
                return getattr(self.inner, name)
            raise

    def get_extra_state(self) -> dict:
        return {"values": {}, "seed": self.seed, "step": self.step,
                "sample_rate": self.sample_rate}

    def set_extra_state(self, state: dict) -> None:
        self.seed = int(state.get("seed", self.seed))
        self.step = int(state.get("step", 0))

    def extra_repr(self) -> str:
        return f"sample_rate={self.sample_rate:g}"

    def _generator(self) -> torch.Generator:
        return torch.Generator().manual_seed((self.seed * 1_000_003 + self.step) % (2**63))

    def sampled_call(self, x: Tensor, labels: Tensor, classes: Tensor) -> Tensor:
        """The member's loss with its head cut to `classes` (sorted) and labels renumbered:
        weight rows (K rows per class for sub-centres) and bias are indexed, so their
        gradients flow back into the full head."""
        inner = self.inner
        rows_per_class = inner.weight.shape[0] // inner.num_classes
        rows = classes if rows_per_class == 1 else (
            classes[:, None] * rows_per_class
            + torch.arange(rows_per_class, device=classes.device)).reshape(-1)
        subs = {"weight": inner.weight[rows]}
        if getattr(inner, "bias", None) is not None:
            subs["bias"] = inner.bias[classes]
        balanced = getattr(inner, "balanced", None)
        if isinstance(inner, WeightedSoftmax):  # w over all C (counts of the global labels),
            subs["class_weight"] = inner._class_weight(labels)[classes]  # then cut to S
            inner.balanced = False  # the call below reads the cut weights as they are
        local = torch.searchsorted(classes, labels)
        full = inner.num_classes
        inner.num_classes = int(classes.numel())
        try:
            return functional_call(inner, subs, (x, local), strict=False)
        finally:
            inner.num_classes = full
            if balanced is not None:
                inner.balanced = balanced

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        if not (self.training and torch.is_grad_enabled()):
            return self.inner(embeddings, labels)
        if self.validate:
            self.inner._check(embeddings, labels)
        classes = sample_classes(labels, self.num_classes, self.sample_rate, self._generator())
        self.step += 1
        self.last_sample = classes
        return self.sampled_call(embeddings, labels, classes)
