"""Evaluation protocols: closed-set top-1 accuracy, open-set verification, identification.

Verification (the LFW protocol, with cosine scores):
  - embeddings e are L2-normalised; with flip test-time augmentation (`flip`, the default of
    face benchmarks: `Benchmark.flip`, docs/face_recognition.md) e = f(x) + f(mirror(x)) is
    summed first and then normalised, as insightface's verification protocol; a pair's score
    is the cosine similarity <e_a, e_b>/(|e_a||e_b|);
  - 10-fold accuracy: for each fold k the threshold t_k that maximises accuracy on the other
    nine folds (a pair is called "same" when score >= t_k) is applied to fold k; the result is
    the mean over folds (and its standard deviation, `verification_accuracy_std`);
  - ROC AUC, EER (where FAR = FRR on the ROC, linearly interpolated) and TAR at FAR 1e-2 /
    1e-3 / 1e-4 (the highest true-accept rate whose false-accept rate is <= the target) on the
    split's sampled pairs. A FAR of f can only be measured with at least 1/f negative pairs:
    below that the TAR is NaN (logged; `negative_pairs` in the result says how many there were).
All pairs (splits with identity labels; `all_pairs_tar`): every unordered pair {i, j}, i < j, of
the split's N images, genuine when the labels agree (G of them), impostor otherwise
(I = N(N−1)/2 − G). With k = floor(f·I) and s_(1) >= s_(2) >= ... the impostor scores sorted,
    tar@far=f_all = #{genuine scores > s_(k+1)} / G
the largest TAR of "same iff score >= t" over thresholds t with #{impostors >= t} <= k (the
same value as the ROC rule above, on all pairs). NaN when I·f < 1 (FAR f not measurable) or
G = 0. Keys `tar@far=1e-3_all`, `tar@far=1e-4_all`, `genuine_pairs_all`, `impostor_pairs_all`.
Identification (`identification_rank1`, key `rank1`): the gallery holds one image per
identity, the one with the lowest index in the split (a fixed rule; the split's order is a
function of the seed), plus optional distractor embeddings (identities no probe has); every
other image of an identity is a probe. A probe is correct when its most cosine-similar
gallery entry (the lowest gallery index on ties) has its identity:
    rank1 = #{correct probes} / #{probes}
NaN when there are no probes (every identity has one image).

scikit-learn provides the ROC (`roc_curve`) and the folds (`PredefinedSplit`, `KFold`).
"""

from __future__ import annotations

import contextlib
import logging
import math
from typing import Any, Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import auc, roc_curve
from sklearn.model_selection import KFold, PredefinedSplit
from torch import Tensor, nn

log = logging.getLogger(__name__)

FAR_TARGETS = (1e-2, 1e-3, 1e-4)
ALL_PAIRS_FAR_TARGETS = (1e-3, 1e-4)


def _far_key(far: float) -> str:
    return f"tar@far={far:.0e}".replace("e-0", "e-")


def all_pairs_key(far: float) -> str:
    """tar@far=1e-3_all: TAR at FAR f over every pair of a split's images."""
    return _far_key(far) + "_all"


def _device_of(module: nn.Module, fallback: torch.device) -> torch.device:
    for p in module.parameters():
        return p.device
    for b in module.buffers():
        return b.device
    return fallback


class _EvalMode:
    """Puts modules in eval mode under torch.no_grad; restores each module's mode after."""

    def __init__(self, *modules: nn.Module | None) -> None:
        self.modules = [m for m in modules if isinstance(m, nn.Module)]

    def __enter__(self) -> None:
        self.modes = [m.training for m in self.modules]
        self.grad = torch.no_grad()
        self.grad.__enter__()
        for m in self.modules:
            m.eval()

    def __exit__(self, *exc: Any) -> None:
        for m, mode in zip(self.modules, self.modes):
            m.train(mode)
        self.grad.__exit__(*exc)


def _autocast_of(autocast: Any, device: torch.device):
    """autocast "auto" -> bf16 on CUDA, none elsewhere; None -> none; a dtype as given."""
    if autocast == "auto":
        autocast = torch.bfloat16 if device.type == "cuda" else None
    if autocast is None:
        return contextlib.nullcontext()
    if not isinstance(autocast, torch.dtype):
        raise ValueError(f"autocast {autocast!r} is not known; allowed: 'auto', None, a dtype")
    return torch.autocast(device.type, dtype=autocast)


def embed(model: nn.Module, images: Tensor, batch_size: int = 256, flip: bool = False,
          normalise: Callable[[Tensor], Tensor] | None = None,
          autocast: Any = "auto") -> Tensor:
    """Embeddings (N, D) of images (N, C, H, W), in eval mode without gradients, batch by
    batch on the model's device; with flip, f(x) + f(x flipped left-right). Returned on the
    images' device, in float32. `normalise` (a split's `.normalise`) turns each batch of
    stored uint8 pixels into float inputs on the model's device. `autocast`: "auto" (bf16 on
    CUDA, none on CPU), None or a dtype."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    device = _device_of(model, images.device)
    out = []
    with _EvalMode(model), _autocast_of(autocast, device):
        for start in range(0, images.shape[0], batch_size):
            x = images[start:start + batch_size].to(device)
            if normalise is not None:
                x = normalise(x)
            e = model(x)
            if flip:
                e = e + model(x.flip(-1))
            out.append(e.float().to(images.device))
    if not out:
        raise ValueError("embed: no images")
    return torch.cat(out)


def chunk_rows(chunk: int | None, batch_size: int, n: int) -> int:
    """Images decoded at once: `chunk` rounded down to a multiple of `batch_size` (at least
    one batch), so the batches the model sees are those of one pass over all n; None: all."""
    if chunk is None:
        return max(n, 1)
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1 images (or None: all at once); got {chunk}")
    return max(batch_size, chunk - chunk % batch_size)


def classification_accuracy(logits: Tensor, labels: Tensor) -> float:
    """Top-1 accuracy: mean(argmax_j logits[i, j] == labels[i])."""
    if logits.dim() != 2 or labels.shape != (logits.shape[0],):
        raise ValueError(f"logits must be (N, C) and labels (N,); got {tuple(logits.shape)} and "
                         f"{tuple(labels.shape)}")
    if logits.shape[0] == 0:
        raise ValueError("classification_accuracy: no samples")
    return float((logits.argmax(1) == labels.to(logits.device)).float().mean())


def chunked_accuracy(logits_fn: Callable[[Tensor], Tensor], embeddings: Tensor,
                     labels: Tensor, chunk: int = 4096) -> float:
    """Top-1 accuracy scored `chunk` rows at a time: at most chunk × C logits alive (20k
    images × 100k classes would be 8 GB at once); one host read at the end."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1; got {chunk}")
    n = embeddings.shape[0]
    if n == 0 or labels.shape != (n,):
        raise ValueError(f"embeddings must be (N, D) with N >= 1 and labels (N,); got "
                         f"{tuple(embeddings.shape)} and {tuple(labels.shape)}")
    correct = None
    for start in range(0, n, chunk):
        z = logits_fn(embeddings[start:start + chunk])
        hit = (z.argmax(1) == labels[start:start + chunk].to(z.device)).sum()
        correct = hit if correct is None else correct + hit
    return float(correct) / n


def _to_numpy(x: Any, dtype=None) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def best_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """The threshold t maximising accuracy of 'same iff score >= t' on these pairs: the
    midpoint between the ROC threshold of best accuracy and the next lower score (+inf when
    calling every pair different is best; -inf when calling every pair same is)."""
    n_pos = int(same.sum())
    n_neg = int(same.size - n_pos)
    if n_pos == 0:
        return math.inf
    if n_neg == 0:
        return -math.inf
    fpr, tpr, thr = roc_curve(same, scores, drop_intermediate=False)
    accuracy = (tpr * n_pos + (1.0 - fpr) * n_neg) / (n_pos + n_neg)
    i = int(np.argmax(accuracy))
    if i == 0:
        return math.inf
    if i == len(thr) - 1:
        return -math.inf
    return float((thr[i] + thr[i + 1]) / 2.0)


def equal_error_rate(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """EER: the rate where FAR (fpr) equals FRR (1 - tpr), linearly interpolated between the
    two ROC points around the crossing."""
    d = (1.0 - tpr) - fpr  # decreasing along the ROC
    j = int(np.argmax(d <= 0))
    if d[j] > 0:  # no crossing (cannot happen on a full ROC ending at (1, 1))
        return float("nan")
    if j == 0 or d[j] == 0:
        return float(fpr[j])
    t = d[j - 1] / (d[j - 1] - d[j])
    return float(fpr[j - 1] + t * (fpr[j] - fpr[j - 1]))


def cosine_gap(scores: Any, same: Any) -> float:
    """Mean score of the same pairs minus mean score of the different pairs:
    gap = mean_{same} s_ij − mean_{different} s_ij, in [−2, 2] for cosine scores. A smooth
    reward: it moves with every pair's cosine, where accuracy moves only when a pair crosses
    the threshold."""
    s = _to_numpy(scores, np.float64).reshape(-1)
    y = _to_numpy(same).astype(bool).reshape(-1)
    if s.shape != y.shape or not y.any() or y.all():
        raise ValueError("cosine_gap needs scores and is-same flags of one length, with same "
                         "and different pairs")
    return float(s[y].mean() - s[~y].mean())


def verification_metrics(scores: Any, same: Any, folds: Any = None, *,
                         far_targets: Iterable[float] = FAR_TARGETS,
                         n_folds: int = 10) -> dict[str, float]:
    """Verification metrics of pair scores (higher = more alike) with is-same flags.

    folds (P,) assigns pairs to folds (LFW's 10 sets); None splits them into `n_folds`
    contiguous folds (sklearn KFold, no shuffle). Keys: verification_accuracy (mean over folds
    of the accuracy at the threshold chosen on the other folds), verification_accuracy_std,
    threshold (mean chosen threshold), roc_auc, cosine_gap (:func:`cosine_gap`), eer,
    tar@far=1e-2/1e-3/1e-4 (NaN where there are fewer than 1/FAR negative pairs), pairs,
    negative_pairs."""
    s = _to_numpy(scores, np.float64).reshape(-1)
    y = _to_numpy(same).astype(bool).reshape(-1)
    if s.shape != y.shape:
        raise ValueError(f"scores and same must have the same length; got {s.size} and {y.size}")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"verification needs same and different pairs; got {n_pos} same and "
                         f"{n_neg} different")
    if folds is None:
        k = min(n_folds, s.size)
        if k < 2:
            raise ValueError("verification needs 2 or more pairs for 2 folds")
        splits = list(KFold(n_splits=k, shuffle=False).split(s))
    else:
        f = _to_numpy(folds, np.int64).reshape(-1)
        if f.shape != s.shape:
            raise ValueError(f"folds must have one entry per pair ({s.size}); got {f.size}")
        if len(np.unique(f)) < 2:
            raise ValueError("folds must name 2 or more folds")
        splits = list(PredefinedSplit(f).split())
    accuracies, thresholds = [], []
    for train_idx, test_idx in splits:
        t = best_threshold(s[train_idx], y[train_idx])
        accuracies.append(float(((s[test_idx] >= t) == y[test_idx]).mean()))
        thresholds.append(t)
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    out = {
        "verification_accuracy": float(np.mean(accuracies)),
        "verification_accuracy_std": float(np.std(accuracies)),
        "threshold": float(np.mean(thresholds)),
        "roc_auc": float(auc(fpr, tpr)),
        "cosine_gap": cosine_gap(s, y),
        "eer": equal_error_rate(fpr, tpr),
    }
    for far in far_targets:
        if n_neg * far < 1.0:
            log.info("%s: %d negative pairs cannot measure FAR %g (needs %d); reported as NaN",
                     _far_key(far), n_neg, far, math.ceil(1.0 / far))
            out[_far_key(far)] = float("nan")
        else:
            out[_far_key(far)] = float(tpr[fpr <= far + 1e-12].max())
    out["pairs"] = float(s.size)
    out["negative_pairs"] = float(n_neg)
    return out


def identification_rank1(embeddings: Tensor, labels: Tensor, gallery: Tensor | None = None,
                         distractors: Tensor | None = None,
                         correct_out: list | None = None) -> float:
    """Rank-1 identification (module docstring): each probe takes the label of its most
    cosine-similar gallery entry. gallery (N,) bool marks the gallery (default: the
    lowest-index image of each label); probes are the other images whose label is in the
    gallery. distractors (K, D): extra gallery embeddings of identities no probe has. NaN when
    there are no probes. correct_out, when given, receives the per-probe 0/1 outcomes."""
    e = F.normalize(embeddings.float(), dim=1)
    labels = labels.to(e.device)
    if gallery is None:
        gallery = torch.zeros(labels.shape[0], dtype=torch.bool, device=e.device)
        first = {}
        for i, lab in enumerate(labels.tolist()):
            first.setdefault(lab, i)
        gallery[list(first.values())] = True
    gallery = gallery.to(e.device).bool()
    g_labels = labels[gallery]
    probes = ~gallery & torch.isin(labels, g_labels)
    if not bool(probes.any()):
        return float("nan")
    g = e[gallery]
    if distractors is not None:
        d = F.normalize(distractors.float().to(e.device), dim=1)
        if d.dim() != 2 or d.shape[1] != e.shape[1]:
            raise ValueError(f"distractors must be (K, {e.shape[1]}) embeddings; got "
                             f"{tuple(distractors.shape)}")
        g = torch.cat([g, d])
        # a label no probe has: one below every real label
        g_labels = torch.cat([g_labels, torch.full((d.shape[0],), int(labels.min()) - 1,
                                                   dtype=g_labels.dtype, device=e.device)])
    nearest = (e[probes] @ g.T).argmax(1)  # argmax returns the first maximum on ties
    correct = (g_labels[nearest] == labels[probes]).float()
    if correct_out is not None:
        correct_out.extend(correct.cpu().tolist())
    return float(correct.mean())


def all_pairs_tar(embeddings: Tensor, labels: Tensor,
                  far_targets: Iterable[float] = ALL_PAIRS_FAR_TARGETS,
                  block: int = 1024) -> dict[str, float]:
    """TAR@FAR over every pair {i < j} of the images (module docstring): tar@far=f_all =
    #{genuine > s_(k+1)} / G with k = floor(f·I), s the impostor scores in descending order.
    Computed block by block (O(N²) time, memory O(G + k)); NaN where I·f < 1 or G = 0."""
    e = F.normalize(embeddings.float(), dim=1)
    labels = labels.to(e.device)
    n = int(e.shape[0])
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},); got {tuple(labels.shape)}")
    counts = torch.unique(labels, return_counts=True)[1].double()
    genuine_n = int((counts * (counts - 1) / 2).sum())
    impostor_n = n * (n - 1) // 2 - genuine_n
    fars = list(far_targets)
    ks = {f: math.floor(f * impostor_n + 1e-9) for f in fars}
    keep = max([k + 1 for f, k in ks.items() if k >= 1] or [0])
    genuine, top = [], e.new_empty(0)
    for start in range(0, n, block):
        s = e[start:start + block] @ e.T
        rows = torch.arange(start, min(start + block, n), device=e.device)
        upper = rows[:, None] < torch.arange(n, device=e.device)[None, :]
        same = labels[rows][:, None] == labels[None, :]
        genuine.append(s[upper & same])
        if keep:
            top = torch.cat([top, s[upper & ~same]])
            top = torch.topk(top, min(keep, top.numel())).values
    genuine_scores = torch.cat(genuine) if genuine else e.new_empty(0)
    out: dict[str, float] = {}
    for f in fars:
        k = ks[f]
        if k < 1 or genuine_n == 0:
            if k < 1:
                log.info("%s: %d impostor pairs cannot measure FAR %g; reported as NaN",
                         all_pairs_key(f), impostor_n, f)
            out[all_pairs_key(f)] = float("nan")
            continue
        threshold = top[k] if k < top.numel() else -math.inf  # s_(k+1), 0-based index k
        out[all_pairs_key(f)] = float((genuine_scores > threshold).double().mean())
    out["genuine_pairs_all"] = float(genuine_n)
    out["impostor_pairs_all"] = float(impostor_n)
    return out


def pair_scores(embeddings: Tensor, pairs: Tensor) -> Tensor:
    """Cosine similarity of each pair (P, 2) of rows of embeddings."""
    e = F.normalize(embeddings.float(), dim=1)
    pairs = pairs.to(e.device)
    return (e[pairs[:, 0]] * e[pairs[:, 1]]).sum(1)


def metric_names(split: Any, far_targets: Iterable[float] = FAR_TARGETS, *,
                 all_pairs: bool = True) -> list[str]:
    """The keys `evaluate` returns for a split, known before any model is trained (so that a
    [reward] metric is checked before a run starts)."""
    protocol = getattr(split, "protocol", None)
    if protocol == "classification":
        return ["accuracy"]
    if protocol == "verification":
        names = ["verification_accuracy", "verification_accuracy_std", "threshold", "roc_auc",
                 "cosine_gap", "eer", *(_far_key(f) for f in far_targets), "pairs",
                 "negative_pairs"]
        if getattr(split, "labels", None) is None:
            return names
        extra = ([all_pairs_key(f) for f in ALL_PAIRS_FAR_TARGETS]
                 + ["genuine_pairs_all", "impostor_pairs_all"]) if all_pairs else []
        return names + extra + ["rank1"]
    raise ValueError(f"split must be a ClassificationSplit or VerificationSplit; got "
                     f"{type(split).__name__}")


def evaluate(model: nn.Module, loss: nn.Module | None, split: Any, *, batch_size: int = 256,
             flip: bool = False, far_targets: Iterable[float] = FAR_TARGETS,
             all_pairs: bool = True, distractors: Any = None,
             details: dict | None = None) -> dict[str, float]:
    """Evaluate `model` on a split, in eval mode under no_grad (each module's mode restored).

    ClassificationSplit -> {"accuracy"} from `loss.logits(embeddings)`, the head's plain class
    scores. VerificationSplit -> `verification_metrics` keys on cosine pair scores, plus, when
    the split has identity labels, "rank1" (`identification_rank1`; `distractors`: images
    (N, C, H, W) or an object with .images and .normalise, embedded the same way and added
    to the gallery) and with all_pairs the all-pairs TAR@FAR keys (`all_pairs_tar`).
    flip: embeddings f(x) + f(mirror(x)) (module docstring). details, when a dict, receives
    what the metrics were computed from, for a bootstrap (evaluation/reward_noise.py):
    {"correct"} per image (classification), or {"scores", "same", "folds"} per pair and
    {"rank1_correct"} per probe (verification)."""
    protocol = getattr(split, "protocol", None)
    if protocol == "classification":
        logits_fn = getattr(loss, "logits", None)
        if logits_fn is None:
            raise ValueError("classification evaluation needs a loss with a class head "
                             "(.logits(embeddings)); got "
                             f"{type(loss).__name__ if loss is not None else None}")
        e = embed(model, split.images, batch_size, flip, getattr(split, "normalise", None))
        with _EvalMode(loss):
            head_device = _device_of(loss, e.device)
            chunk = max(batch_size, 1) * 16
            if details is None:
                accuracy = chunked_accuracy(lambda x: logits_fn(x.to(head_device)), e,
                                            split.labels, chunk=chunk)
            else:  # per-image correctness, for the reward's bootstrap
                labels = split.labels.to(head_device)
                correct = torch.cat([
                    (logits_fn(e[i:i + chunk].to(head_device)).argmax(1)
                     == labels[i:i + chunk]).float() for i in range(0, e.shape[0], chunk)])
                details["correct"] = _to_numpy(correct, np.float64)
                accuracy = float(correct.mean())
        return {"accuracy": accuracy}
    if protocol == "verification":
        e = embed(model, split.images, batch_size, flip, getattr(split, "normalise", None))
        scores = pair_scores(e, split.pairs)
        out = verification_metrics(scores, split.same, split.folds, far_targets=far_targets)
        if details is not None:
            details.update(scores=_to_numpy(scores, np.float64),
                           same=_to_numpy(split.same).astype(bool),
                           folds=_to_numpy(split.folds, np.int64))
        if getattr(split, "labels", None) is not None:
            if all_pairs:
                out.update(all_pairs_tar(e, split.labels))
            d = None
            if distractors is not None:
                images = getattr(distractors, "images", distractors)
                d = embed(model, images, batch_size, flip, getattr(distractors, "normalise", None))
            correct: list = []
            out["rank1"] = identification_rank1(e, split.labels, distractors=d,
                                                correct_out=correct)
            if details is not None:
                details["rank1_correct"] = np.asarray(correct, dtype=np.float64)
        return out
    raise ValueError(f"split must be a ClassificationSplit or VerificationSplit; got "
                     f"{type(split).__name__}")
