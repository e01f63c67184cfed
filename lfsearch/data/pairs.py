"""Verification pairs: balanced same/different pairs drawn from identity labels, in folds
ordered as LFW (fold by fold, same pairs first)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from lfsearch.data.splits import PixelScale, VerificationSplit, as_tensor_images

N_FOLDS = 10
DEFAULT_PAIRS = 6000


def make_pairs(labels: np.ndarray, n_pairs: int, rng: np.random.Generator,
               n_folds: int = N_FOLDS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Balanced verification pairs: n_pairs/2 distinct same-identity and as many
    different-identity pairs (fewer when the labels allow fewer), drawn uniformly from all
    possible pairs by `rng`. Each of the n_folds folds gets an equal share of both kinds,
    ordered as LFW: fold by fold, same pairs first. Returns (pairs (P,2), same (P,), folds (P,))."""
    labels = np.asarray(labels)
    n = labels.shape[0]
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    total_same = int((counts * (counts - 1) // 2).sum())
    total_diff = n * (n - 1) // 2 - total_same
    half = min(int(n_pairs) // 2, total_same, total_diff)
    if half < 1:
        raise ValueError(f"cannot make verification pairs from {n} images of {len(counts)} "
                         "identities: need an identity with 2 or more images and 2 identities")
    same_pairs = _sample_pairs(inverse, counts, half, total_same, rng, same=True)
    diff_pairs = _sample_pairs(inverse, counts, half, total_diff, rng, same=False)
    k = max(1, min(n_folds, half))
    fold_of = np.arange(half) * k // half
    pairs = np.concatenate([same_pairs, diff_pairs])
    same = np.concatenate([np.ones(half, bool), np.zeros(half, bool)])
    folds = np.concatenate([fold_of, fold_of])
    order = np.lexsort((~same, folds))  # by fold, same pairs first
    return pairs[order], same[order], folds[order]


def _sample_pairs(inverse: np.ndarray, counts: np.ndarray, want: int, total: int,
                  rng: np.random.Generator, *, same: bool) -> np.ndarray:
    n = inverse.shape[0]
    candidates = total if same else n * (n - 1) // 2
    if candidates <= 4_000_000:  # enumerate every pair, then choose
        if same:
            members = [np.flatnonzero(inverse == c) for c in range(len(counts))]
            parts = []
            for m in members:
                if len(m) > 1:
                    a, b = np.triu_indices(len(m), 1)
                    parts.append(np.stack([m[a], m[b]], 1))
            every = np.concatenate(parts)
        else:
            a, b = np.triu_indices(n, 1)
            keep = inverse[a] != inverse[b]
            every = np.stack([a[keep], b[keep]], 1)
        chosen = rng.choice(every.shape[0], size=want, replace=False)
        return every[chosen]
    # rejection sampling without repeats (total is large, so repeats are rare)
    order = np.argsort(inverse, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    weights = counts * (counts - 1) / 2.0
    weights = weights / weights.sum()
    keys: list[np.ndarray] = []
    seen: set[int] = set()
    got = 0
    while got < want:
        m = 2 * (want - got) + 16
        if same:
            c = rng.choice(len(counts), size=m, p=weights)
            i = rng.integers(0, counts[c])
            j = rng.integers(0, counts[c] - 1)
            j = j + (j >= i)
            a, b = order[starts[c] + i], order[starts[c] + j]
        else:
            a, b = rng.integers(0, n, m), rng.integers(0, n, m)
            ok = inverse[a] != inverse[b]
            a, b = a[ok], b[ok]
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        for key in (lo.astype(np.int64) * n + hi).tolist():
            if key not in seen and got < want:
                seen.add(key)
                keys.append(key)
                got += 1
    flat = np.asarray(keys, dtype=np.int64)
    return np.stack([flat // n, flat % n], 1)


def verification_split(images: np.ndarray | Tensor, labels: np.ndarray, n_pairs: int,
                       rng: np.random.Generator, what: str,
                       pixels: PixelScale | None) -> VerificationSplit:
    try:
        pairs, same, folds = make_pairs(labels, n_pairs, rng)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None
    return VerificationSplit(as_tensor_images(images), torch.from_numpy(pairs).long(),
                             torch.from_numpy(same), torch.from_numpy(folds).long(),
                             torch.from_numpy(np.asarray(labels)).long(), pixels)

