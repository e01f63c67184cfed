"""IJB-B / IJB-C 1:1 template verification (insightface's protocol, recognition/_evaluation_/
ijb; docs/face_recognition.md "IJB-B / IJB-C").

For image i with embedding e_i (with `flip`, e_i = f(x_i) + f(flip(x_i))), detector score d_i,
template T(i) and media M(i):

    v_i   = d_i·e_i                 (norm_score: e_i kept as it is, its norm weighting it;
                                     without norm_score e_i is L2-normalised first;
                                     without detector_score d_i = 1)
    u_tm  = mean_{i: T(i)=t, M(i)=m} v_i          one feature per media of a template
    g_t   = Σ_m u_tm / ‖Σ_m u_tm‖                 the template feature
    score(t1, t2) = <g_t1, g_t2>                  cosine of a template pair

TAR at FAR f: the highest true-accept rate over thresholds whose false-accept rate is ≤ f
(`metrics.verification_metrics`' rule; insightface's table takes the ROC point whose FAR is
nearest to f, which can lie above f), NaN with fewer than 1/f negative pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import auc, roc_curve
from torch import Tensor, nn

from lfsearch.evaluation import metrics as metrics_mod

IJB_FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
MAIN_METRIC = "tar@far=1e-4"
CHUNK = 4096  # images decoded and embedded at once (IJB-C at 112x112 RGB: 154 MB a chunk)


def _image_rows(features: Tensor, scores: Tensor | None, norm_score: bool) -> Tensor:
    """v_i of the module docstring, float64 on the host."""
    v = features.detach().double().cpu()
    if not norm_score:
        v = F.normalize(v, dim=1)
    if scores is not None:
        v = v * scores.double().cpu()[:, None]
    return v


class TemplateAccumulator:
    """The sums of v_i over each (template, media) group, added a chunk of images at a time:
    memory is the groups' sums, never all images or all their features. Rows are added in
    image order, so any chunking gives the same float64 sums as one pass."""

    def __init__(self, templates: Tensor, media: Tensor, *, norm_score: bool = True):
        keys = torch.stack([templates.cpu().long(), media.cpu().long()], 1)
        self.groups, self.inverse = torch.unique(keys, dim=0, return_inverse=True)
        self.norm_score = norm_score
        self.sums: Tensor | None = None
        self.added = 0

    def add(self, features: Tensor, scores: Tensor | None = None) -> None:
        """Image features (n, D) of the next n images (and their detector scores)."""
        v = _image_rows(features, scores, self.norm_score)
        if self.sums is None:
            self.sums = torch.zeros(len(self.groups), v.shape[1], dtype=v.dtype)
        stop = self.added + v.shape[0]
        if stop > len(self.inverse):
            raise ValueError(f"template features: {stop} image features for "
                             f"{len(self.inverse)} images")
        self.sums.index_add_(0, self.inverse[self.added:stop], v)
        self.added = stop

    def finish(self) -> tuple[Tensor, Tensor]:
        """(template ids (T,) sorted, L2-normalised template features (T, D))."""
        if self.sums is None or self.added != len(self.inverse):
            raise ValueError(f"template features: {self.added} of {len(self.inverse)} images "
                             "were added")
        counts = torch.bincount(self.inverse, minlength=len(self.groups)).to(self.sums.dtype)
        media_mean = self.sums / counts[:, None]
        ids, t_index = torch.unique(self.groups[:, 0], return_inverse=True)
        template_sum = torch.zeros(len(ids), self.sums.shape[1],
                                   dtype=self.sums.dtype).index_add_(0, t_index, media_mean)
        return ids, F.normalize(template_sum, dim=1)


def template_features(features: Tensor, templates: Tensor, media: Tensor,
                      scores: Tensor | None = None, *, norm_score: bool = True
                      ) -> tuple[Tensor, Tensor]:
    """(template ids (T,) sorted, L2-normalised template features (T, D)) from image features
    (N, D) by the module docstring's v_i, u_tm, g_t (float64)."""
    acc = TemplateAccumulator(templates, media, norm_score=norm_score)
    acc.add(features, scores)
    return acc.finish()


def pair_scores(ids: Tensor, feats: Tensor, pairs: Tensor) -> np.ndarray:
    """Cosine of each template pair (P, 2) of template ids."""
    pos = torch.searchsorted(ids, pairs.cpu().long())
    if bool((pos >= len(ids)).any()) or not bool((ids[pos.clamp(max=len(ids) - 1)] ==
                                                   pairs.cpu()).all()):
        raise ValueError("template pairs name a template id with no image")
    return (feats[pos[:, 0]] * feats[pos[:, 1]]).sum(1).numpy()


def tar_at_far(scores: Any, same: Any, far_targets: Iterable[float] = IJB_FARS
               ) -> tuple[dict[str, float], dict[str, list[float]]]:
    """({tar@far=f, threshold@far=f, roc_auc, pairs, negative_pairs}, the ROC {fpr, tpr,
    thresholds}) of pair scores with is-same labels."""
    s = np.asarray(scores, np.float64).reshape(-1)
    y = np.asarray(same).astype(bool).reshape(-1)
    n_neg, n_pos = int((~y).sum()), int(y.sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"template verification needs same and different pairs; got {n_pos} "
                         f"same and {n_neg} different")
    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=False)
    out: dict[str, float] = {"roc_auc": float(auc(fpr, tpr))}
    for far in far_targets:
        key = metrics_mod._far_key(far)
        if n_neg * far < 1.0:
            out[key] = out[key.replace("tar@", "threshold@")] = float("nan")
            continue
        ok = np.flatnonzero(fpr <= far + 1e-12)
        best = ok[np.argmax(tpr[ok])]
        out[key] = float(tpr[best])
        out[key.replace("tar@", "threshold@")] = float(thr[best])
    out["pairs"], out["negative_pairs"] = float(s.size), float(n_neg)
    return out, {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "thresholds": thr.tolist()}


def evaluate_templates(model: nn.Module, split: Any, *, flip: bool = True,
                       norm_score: bool = True, detector_score: bool = True,
                       far_targets: Iterable[float] = IJB_FARS, batch_size: int = 256,
                       roc: bool = False, chunk: int | None = CHUNK,
                       screen: Callable[[Tensor], None] | None = None):
    """Template verification metrics of `model` on a TemplateSplit (module docstring); with
    roc=True returns (metrics, ROC dict).

    The images (a tensor or LazyImages) are read `chunk` at a time (rounded down to whole
    batches; None: all at once), embedded and added to the template sums, so memory is one
    chunk of images plus the (template, media) sums; every chunking gives the same metrics.
    `screen(images)`, when given, sees each chunk first (heldout's overlap check raises)."""
    norm = getattr(split, "normalise", None)
    n = int(split.images.shape[0])
    step = metrics_mod.chunk_rows(chunk, batch_size, n)
    acc = TemplateAccumulator(split.templates, split.media, norm_score=norm_score)
    for start in range(0, n, step):
        stop = min(n, start + step)
        images = split.images[start:stop]
        if screen is not None:
            screen(images)
        e = metrics_mod.embed(model, images, batch_size, flip, norm)
        acc.add(e, split.scores[start:stop] if detector_score else None)
        del images, e
    ids, feats = acc.finish()
    out, curve = tar_at_far(pair_scores(ids, feats, split.pairs), split.same.cpu().numpy(),
                            far_targets)
    out["templates"] = float(len(ids))
    return (out, curve) if roc else out
