"""The reward's signal-to-noise ratio: does the spread of an epoch's candidate rewards exceed
the noise of one reward? (docs/search.md, "Reward signal-to-noise")

Per competing epoch with candidate rewards r_1..r_M (candidates that did not diverge):

    spread = std(r_1..r_M)                          (sample std, ddof 1; NaN when M < 2)
    noise  = std_b R(b)                             (ddof 1, over B bootstrap replicates)
    SNR    = spread / noise                         (0 when spread = 0; inf when noise = 0 < spread)

where R(b) is the chosen candidate's reward recomputed on the b-th bootstrap resample of what
it was measured on: the validation pairs (scores, is-same flags and folds kept together) for
pair metrics, the validation images for `accuracy`, the probes for `rank1` (each validation
split resampled on its own, the reward their weighted mean as in search/candidate.py). The
scores are the ones the reward was computed from (`metrics.evaluate(details=...)`): no network
runs again. Metrics over all pairs (`tar@far=..._all`) are not resampled: their noise is NaN.

A run's median SNR over its epochs below 1 means the candidates differ by less than one
reward's own noise: the controller is learning from noise, and a warning is logged.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Iterable, Sequence

import numpy as np

from lfsearch.evaluation import metrics as metrics_mod

log = logging.getLogger(__name__)

REPLICATES = 50
WARN_BELOW = 1.0


def _resampled_metric(details: dict[str, Any], metric: str, rng: np.random.Generator) -> float:
    """The metric on one bootstrap resample (with replacement) of the details' units."""
    if metric == "accuracy":
        x = details["correct"]
        return float(x[rng.integers(0, x.size, x.size)].mean())
    if metric == "rank1":
        x = details.get("rank1_correct")
        if x is None or x.size == 0:
            return math.nan
        return float(x[rng.integers(0, x.size, x.size)].mean())
    if metric.endswith("_all") or "scores" not in details:
        return math.nan
    s, y, f = details["scores"], details["same"], details["folds"]
    i = rng.integers(0, s.size, s.size)
    if metric == "cosine_gap":
        same = y[i]
        if same.all() or not same.any():
            return math.nan
        return float(s[i][same].mean() - s[i][~same].mean())
    s, y, f = s[i], y[i], f[i]
    if y.all() or not y.any() or len(np.unique(f)) < 2:
        return math.nan
    if metric == "verification_accuracy":
        return fold_accuracy(s, y, f)
    if metric == "roc_auc":
        return roc_auc(s, y)
    try:
        return float(metrics_mod.verification_metrics(s, y, f)[metric])
    except (ValueError, KeyError):  # a resample with one class or one fold
        return math.nan


def best_threshold(s: np.ndarray, y: np.ndarray, order: np.ndarray | None = None) -> float:
    """metrics.best_threshold without scikit-learn's per-call overhead (the same rule: the
    midpoint below the distinct score of best accuracy, the first on ties; ±inf at the ends).
    order: the indices of the pairs to use, in descending order of s (default: all of them)."""
    if order is None:
        order = np.argsort(-s, kind="stable")
    ss, yy = s[order], y[order]
    n = ss.size
    n_pos = int(yy.sum())
    n_neg = n - n_pos
    if n_pos == 0:
        return math.inf
    if n_neg == 0:
        return -math.inf
    last = np.r_[ss[1:] != ss[:-1], True]  # the last index of each distinct score
    tp, fp = np.cumsum(yy)[last], np.cumsum(~yy)[last]
    thr = np.r_[math.inf, ss[last]]
    accuracy = np.r_[n_neg, tp + n_neg - fp] / n
    k = int(np.argmax(accuracy))
    if k == 0:
        return math.inf
    if k == thr.size - 1:
        return -math.inf
    return float((thr[k] + thr[k + 1]) / 2.0)


def fold_accuracy(s: np.ndarray, y: np.ndarray, folds: np.ndarray) -> float:
    """10-fold verification accuracy as metrics.verification_metrics: the mean over folds k of
    the accuracy of 'same iff s >= t_k', t_k chosen on the other folds."""
    out = []
    order = np.argsort(-s, kind="stable")  # sorted once; each fold's training part keeps it
    for k in np.unique(folds):
        test = folds == k
        t = best_threshold(s, y, order[~test[order]])  # the other folds, still descending
        out.append(float(((s[test] >= t) == y[test]).mean()))
    return float(np.mean(out))


def roc_auc(s: np.ndarray, y: np.ndarray) -> float:
    """ROC AUC by the Mann-Whitney statistic (ties count one half, as the ROC's trapezoids):
    (Σ ranks of the positives − P(P + 1)/2) / (P·N)."""
    from scipy.stats import rankdata

    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def reward_noise(samples: Sequence[tuple[dict[str, Any], str, float]], *,
                 replicates: int = REPLICATES, seed: int = 0) -> float:
    """Bootstrap std of a reward Σ_k w_k·metric_k / Σ_k w_k; samples: (details, metric, weight)
    per validation split (details from `metrics.evaluate(details=...)`). NaN when no replicate
    can be computed or fewer than 2 replicates are finite."""
    if not samples or replicates < 2:
        return math.nan
    rng = np.random.default_rng(seed)
    total = sum(w for _, _, w in samples)
    values = []
    for _ in range(replicates):
        r = sum(w * _resampled_metric(d, m, rng) for d, m, w in samples) / total
        values.append(r)
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.std(ddof=1)) if v.size >= 2 else math.nan


def epoch_snr(rewards: Iterable[float], noise: float) -> dict[str, float]:
    """{"candidates", "reward_spread", "reward_noise", "snr"} of one epoch (module docstring)."""
    r = np.asarray([x for x in rewards if x is not None and math.isfinite(x)], dtype=np.float64)
    spread = float(r.std(ddof=1)) if r.size >= 2 else math.nan
    if not math.isfinite(spread) or not math.isfinite(noise):
        snr = math.nan
    elif spread == 0.0:
        snr = 0.0
    elif noise == 0.0:
        snr = math.inf
    else:
        snr = spread / noise
    return {"candidates": int(r.size), "reward_spread": spread, "reward_noise": float(noise),
            "snr": snr}


def summarise_snr(rows: Sequence[dict[str, Any]], *, warn: bool = True) -> dict[str, Any]:
    """{"median", "epochs", "flagged"} over the rows' finite SNRs; flagged (and a warning
    logged, with warn) when the median is below WARN_BELOW."""
    snrs = np.asarray([float(r["snr"]) for r in rows if r.get("snr") is not None
                       and not math.isnan(float(r["snr"]))], dtype=np.float64)
    median = float(np.median(snrs)) if snrs.size else math.nan
    flagged = bool(snrs.size) and median < WARN_BELOW
    if flagged and warn:
        log.warning("reward signal-to-noise: median SNR %.2f < %g over %d epochs (candidate "
                    "spread below the reward's own bootstrap noise): the controller is "
                    "learning from noise; consider more validation pairs ([reward] pairs) or "
                    "a smoother reward metric", median, WARN_BELOW, snrs.size)
    return {"median": median, "epochs": int(snrs.size), "flagged": flagged}
