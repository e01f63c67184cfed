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

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import auc, roc_curve
from torch import Tensor, nn

from lfsearch.evaluation import metrics as metrics_mod

IJB_FARS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
MAIN_METRIC = "tar@far=1e-4"


def template_features(features: Tensor, templates: Tensor, media: Tensor,
                      scores: Tensor | None = None, *, norm_score: bool = True
                      ) -> tuple[Tensor, Tensor]:
    """(template ids (T,) sorted, L2-normalised template features (T, D)) from image features
    (N, D) by the module docstring's v_i, u_tm, g_t (float64)."""
    v = features.detach().double().cpu()
    if not norm_score:
        v = F.normalize(v, dim=1)
    if scores is not None:
        v = v * scores.double().cpu()[:, None]
    t, m = templates.cpu().long(), media.cpu().long()
    keys = torch.stack([t, m], 1)
    uniq, inverse = torch.unique(keys, dim=0, return_inverse=True)  # (template, media) groups
    sums = torch.zeros(len(uniq), v.shape[1], dtype=v.dtype).index_add_(0, inverse, v)
    counts = torch.zeros(len(uniq), dtype=v.dtype).index_add_(0, inverse,
                                                              torch.ones_like(inverse, dtype=v.dtype))
    media_mean = sums / counts[:, None]
    ids, t_index = torch.unique(uniq[:, 0], return_inverse=True)
    template_sum = torch.zeros(len(ids), v.shape[1], dtype=v.dtype).index_add_(0, t_index,
                                                                               media_mean)
    return ids, F.normalize(template_sum, dim=1)


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
                       roc: bool = False):
    """Template verification metrics of `model` on a TemplateSplit (module docstring); with
    roc=True returns (metrics, ROC dict)."""
    e = metrics_mod.embed(model, split.images, batch_size, flip,
                          getattr(split, "normalise", None))
    ids, feats = template_features(e, split.templates, split.media,
                                   split.scores if detector_score else None,
                                   norm_score=norm_score)
    out, curve = tar_at_far(pair_scores(ids, feats, split.pairs), split.same.cpu().numpy(),
                            far_targets)
    out["templates"] = float(len(ids))
    return (out, curve) if roc else out
