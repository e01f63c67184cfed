"""Joint-supervision terms and their combination with a head loss: center loss, range loss,
contrastive and triplet loss (on the batch), and `Joint`: L = L_main + aux_weight · L_aux.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from lfsearch.losses import margins
from lfsearch.losses.base import _NORM_EPS, Loss, _check_embeddings, _check_labels, _check_size, _check_values


# ---------------------------------------------------------------- auxiliary (joint) terms
def _pairwise_sq_distances(x: Tensor, normalized: bool) -> Tensor:
    gram = x @ x.t()
    if normalized:
        return (2.0 - 2.0 * gram).clamp_min(0.0)
    sq = (x * x).sum(dim=1)
    return (sq[:, None] + sq[None, :] - 2.0 * gram).clamp_min(0.0)


def _sqrt_safe(d2: Tensor) -> Tensor:
    return d2.clamp_min(_NORM_EPS).sqrt()


class _Aux(Loss):
    family = "aux"

    def __init__(self, embedding_size=None, num_classes=None, *, normalize: bool) -> None:
        super().__init__()
        self.embedding_size = (None if embedding_size is None
                               else _check_size("embedding_size", embedding_size))
        self.num_classes = (None if num_classes is None
                            else _check_size("num_classes", num_classes))
        self.normalize = bool(normalize)

    def _validate(self, name, value):
        return margins.check_nonnegative(name, value)

    def _prepare(self, x: Tensor, labels: Tensor) -> Tensor:
        if self.validate:
            _check_embeddings(x, self.embedding_size)
            _check_labels(labels, x.shape[0])
            _check_values(x, labels, self.num_classes)
        return F.normalize(x, dim=1, eps=_NORM_EPS) if self.normalize else x


class CenterLoss(_Aux):
    """Center loss (Wen et al. 2016): ½·mean_i ‖x_i − c_{y_i}‖².

    The centres are not trained by the optimiser: after each training batch they move at
    their own rate α (the paper's update, α = 0.5 by default),
    c_j ← c_j − α·Δc_j,  Δc_j = Σ_{i: y_i = j} (c_j − x_i) / (1 + n_j),
    n_j the batch's samples of class j. They are a buffer, so they live in state_dict."""

    name = "center"
    formula = "1/2 mean_i ||x_i - c_(y_i)||^2; c_j -= alpha sum_(y_i=j)(c_j - x_i)/(1 + n_j)"

    def __init__(self, embedding_size=None, num_classes=None, *, normalize: bool = False,
                 alpha: float = 0.5, generator: torch.Generator | None = None) -> None:
        super().__init__(_check_size("embedding_size", embedding_size),
                         _check_size("num_classes", num_classes), normalize=normalize)
        self.alpha = margins._number("alpha", alpha, "(0, 1]")
        if not 0.0 < self.alpha <= 1.0:
            raise ValueError(f"alpha (the centres' rate) must be in (0, 1]; got {self.alpha:g}")
        self.register_buffer("centers", torch.empty(self.num_classes, self.embedding_size))
        with torch.no_grad():
            self.centers.normal_(0.0, 0.01, generator=generator)

    def forward(self, embeddings, labels):
        x = self._prepare(embeddings, labels)
        diff = x - self.centers.index_select(0, labels).to(x.dtype)
        loss = 0.5 * (diff * diff).sum(dim=1).mean()
        if self.training and torch.is_grad_enabled():
            self.update_centers(x.detach(), labels)
        return loss

    @torch.no_grad()
    def update_centers(self, x: Tensor, labels: Tensor) -> None:
        """c_j ← c_j − α·Σ_{i: y_i = j}(c_j − x_i)/(1 + n_j) for the classes of the batch."""
        c = self.centers
        gap = c.index_select(0, labels) - x.to(c.dtype)
        sums = torch.zeros_like(c).index_add_(0, labels, gap)
        counts = torch.zeros(c.shape[0], dtype=c.dtype, device=c.device)
        counts.index_add_(0, labels, torch.ones_like(labels, dtype=c.dtype))
        c.sub_(self.alpha * sums / (1.0 + counts)[:, None])


class RangeLoss(_Aux):
    """Range loss (Zhang et al. 2017): alpha·L_intra + beta·L_inter.

    L_intra: per class of the batch, the harmonic mean of its k largest intra-class
    distances, averaged over the classes with ≥ 2 samples (the paper sums; multiply by
    the class count to match); L_inter = max(margin − D_center, 0), D_center the
    shortest Euclidean distance between two class means of the batch.
    """

    name = "range"
    formula = "alpha mean_c k/sum_(k largest) 1/d + beta max(margin - min center dist, 0)"

    def __init__(self, embedding_size=None, num_classes=None, *, k: int = 2,
                 margin: float = 1.0, alpha: float = 1.0, beta: float = 1.0,
                 normalize: bool = False) -> None:
        super().__init__(embedding_size, num_classes, normalize=normalize)
        self.k = margins.check_integer("k", k, 1)
        for key, value in (("margin", margin), ("alpha", alpha), ("beta", beta)):
            self._values[key] = margins.check_nonnegative(key, value)

    def forward(self, embeddings, labels):
        x = self._prepare(embeddings, labels)
        v = self._values
        d = _sqrt_safe(_pairwise_sq_distances(x, self.normalize))
        same = labels[:, None] == labels[None, :]
        pi, pj = torch.nonzero(torch.triu(same, diagonal=1), as_tuple=True)
        intra = x.new_zeros(())
        if pi.numel():
            dist, cls = d[pi, pj], labels[pi]
            order = torch.argsort(dist.detach(), descending=True)
            order = order[torch.argsort(cls[order], stable=True)]
            cls, dist = cls[order], dist[order]
            _, counts = torch.unique_consecutive(cls, return_counts=True)
            starts = torch.cumsum(counts, 0) - counts
            group = torch.repeat_interleave(torch.arange(counts.numel(), device=x.device),
                                            counts)
            rank = torch.arange(cls.numel(), device=x.device) - starts[group]
            keep = rank < self.k
            inv_sum = x.new_zeros(counts.numel()).index_add(0, group[keep], 1.0 / dist[keep])
            intra = (counts.clamp(max=self.k).to(x.dtype) / inv_sum).mean()
        classes, inverse = torch.unique(labels, return_inverse=True)
        inter = x.new_zeros(())
        if classes.numel() >= 2:
            n = x.new_zeros(classes.numel()).index_add(0, inverse, x.new_ones(x.shape[0]))
            centers = x.new_zeros(classes.numel(), x.shape[1]).index_add(0, inverse, x)
            centers = centers / n[:, None]
            dc = _sqrt_safe(_pairwise_sq_distances(centers, False))
            dc = dc + torch.diag(torch.full_like(n, float("inf")))
            inter = torch.relu(v["margin"] - dc.min())
        return v["alpha"] * intra + v["beta"] * inter


class ContrastiveLoss(_Aux):
    """Contrastive loss (Hadsell et al. 2006; DeepID2) over every pair of the batch:
    ½·[mean_pos d² + mean_neg max(margin − d, 0)²], d the Euclidean distance
    (between L2-normalised embeddings by default)."""

    name = "contrastive"
    formula = "1/2 [mean_pos d^2 + mean_neg max(margin - d, 0)^2]"

    def __init__(self, embedding_size=None, num_classes=None, *, margin: float = 1.0,
                 normalize: bool = True) -> None:
        super().__init__(embedding_size, num_classes, normalize=normalize)
        self._values["margin"] = margins.check_nonnegative("margin", margin)

    def forward(self, embeddings, labels):
        x = self._prepare(embeddings, labels)
        d2 = _pairwise_sq_distances(x, self.normalize)
        upper = torch.ones_like(d2, dtype=torch.bool).triu_(1)
        same = labels[:, None] == labels[None, :]
        pos, neg = (same & upper).to(x.dtype), (~same & upper).to(x.dtype)
        hinge = torch.relu(self._values["margin"] - _sqrt_safe(d2))
        pos_term = (d2 * pos).sum() / pos.sum().clamp_min(1.0)
        neg_term = (hinge * hinge * neg).sum() / neg.sum().clamp_min(1.0)
        return 0.5 * (pos_term + neg_term)


class TripletLoss(_Aux):
    """Batch-hard triplet loss (Hermans et al. 2017): for each anchor with a positive and
    a negative in the batch, max(d(a, hardest positive) − d(a, hardest negative) +
    margin, 0), averaged over those anchors (L2-normalised embeddings by default)."""

    name = "triplet"
    formula = "mean_a max(max_p d(a,p) - min_n d(a,n) + margin, 0)  (batch-hard)"

    def __init__(self, embedding_size=None, num_classes=None, *, margin: float = 0.2,
                 normalize: bool = True) -> None:
        super().__init__(embedding_size, num_classes, normalize=normalize)
        self._values["margin"] = margins.check_nonnegative("margin", margin)

    def forward(self, embeddings, labels):
        x = self._prepare(embeddings, labels)
        d = _sqrt_safe(_pairwise_sq_distances(x, self.normalize))
        same = labels[:, None] == labels[None, :]
        eye = torch.eye(x.shape[0], dtype=torch.bool, device=x.device)
        pos, neg = same & ~eye, ~same
        hardest_pos = d.masked_fill(~pos, float("-inf")).amax(dim=1)
        hardest_neg = d.masked_fill(~neg, float("inf")).amin(dim=1)
        valid = pos.any(dim=1) & neg.any(dim=1)
        gap = torch.relu(hardest_pos - hardest_neg + self._values["margin"])
        gap = torch.where(valid, gap, torch.zeros_like(gap))
        return gap.sum() / valid.sum().clamp_min(1).to(x.dtype)


# ------------------------------------------------------------------------------- joint
class Joint(Loss):
    """L = main(x, y) + aux_weight·aux(x, y); ``.weight`` and ``.logits`` are the main
    head's. Searchable: the main loss's params, ``aux_weight``, and the aux term's
    params prefixed with its name (e.g. ``triplet_margin``)."""

    def __init__(self, main: Loss, aux: Loss, aux_weight: float) -> None:
        super().__init__()
        self.main = main
        self.aux = aux
        aux.validate = False  # the main loss checks the same inputs
        self.name = f"{main.name}+{aux.name}"
        self.formula = f"{main.formula} + aux_weight * [{aux.formula}]"
        self._values["aux_weight"] = margins.check_nonnegative("aux_weight", aux_weight)

    @property
    def weight(self) -> Tensor:
        return self.main.weight

    def logits(self, embeddings: Tensor) -> Tensor:
        return self.main.logits(embeddings)

    def margin_logits(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        return self.main.margin_logits(embeddings, labels)

    def plan_training(self, total_steps: int) -> None:
        self.main.plan_training(total_steps)
        self.aux.plan_training(total_steps)

    def param_names(self) -> list[str]:
        return (self.main.param_names() + ["aux_weight"]
                + [f"{self.aux.name}_{n}" for n in self.aux.param_names()])

    def get_params(self) -> dict[str, float]:
        out = self.main.get_params()
        out["aux_weight"] = self._values["aux_weight"]
        out.update({f"{self.aux.name}_{k}": v for k, v in self.aux.get_params().items()})
        return out

    def set_params(self, **values) -> None:
        allowed = self.param_names()
        for key in values:
            if key not in allowed:
                raise ValueError(f"unknown parameter {key!r} for loss {self.name!r}; "
                                 f"allowed: {', '.join(allowed)}")
        prefix = f"{self.aux.name}_"
        main_names = set(self.main.param_names())
        main = {k: v for k, v in values.items() if k in main_names}
        aux = {k[len(prefix):]: v for k, v in values.items()
               if k not in main_names and k != "aux_weight"}
        weight = values.get("aux_weight")
        if weight is not None:
            weight = margins.check_nonnegative("aux_weight", weight)
        self.main.set_params(**main)
        self.aux.set_params(**aux)
        if weight is not None:
            self._values["aux_weight"] = weight

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        loss = self.main(embeddings, labels)
        w = self._values["aux_weight"]
        if w == 0.0:
            return loss
        return loss + w * self.aux(embeddings, labels)
