"""From arrays to a benchmark's splits: stratified per-class splits, and the closed-set and
open-set (by class) benchmarks built from a train file and a test file."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from lfsearch.data.pairs import verification_split
from lfsearch.data.splits import Benchmark, ClassificationSplit, LabelledImages, PixelScale


def stratified_split(labels: np.ndarray, fractions: list[float], rng: np.random.Generator
                      ) -> list[np.ndarray]:
    """Split indices per class into len(fractions)+1 parts: the given fractions, then the rest
    (first). Returns [rest, part_1, ...], each sorted."""
    parts: list[list[np.ndarray]] = [[] for _ in range(len(fractions) + 1)]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        start = 0
        for k, f in enumerate(fractions):
            take = int(round(f * len(idx)))
            parts[k + 1].append(idx[start:start + take])
            start += take
        parts[0].append(idx[start:])
    return [np.sort(np.concatenate(p)) if p else np.zeros(0, np.int64) for p in parts]


def closed_set(name: str, train_x: Tensor, train_y: np.ndarray, test_x: Tensor,
               test_y: np.ndarray, *, val: float, rng: np.random.Generator, num_classes: int,
               model: str, augment: str, class_names: list[str],
               pixels: PixelScale | None) -> Benchmark:
    train_idx, val_idx = stratified_split(train_y, [val], rng)
    t_idx, v_idx = torch.from_numpy(train_idx), torch.from_numpy(val_idx)
    labels = torch.from_numpy(train_y).long()
    val_split = (ClassificationSplit(train_x[v_idx], labels[v_idx], pixels) if len(val_idx)
                 else None)
    return Benchmark(
        name, LabelledImages(train_x[t_idx], labels[t_idx], pixels), val_split,
        ClassificationSplit(test_x, torch.from_numpy(test_y).long(), pixels), num_classes,
        int(train_x.shape[1]), (int(train_x.shape[2]), int(train_x.shape[3])), model, augment,
        class_names)


def open_set(name: str, train_x: Tensor, train_y: np.ndarray, test_x: Tensor, test_y: np.ndarray,
             *, train_classes: int, num_classes: int, pairs: int, rng: np.random.Generator,
             model: str, augment: str, class_names: list[str],
             pixels: PixelScale | None) -> Benchmark:
    """Train on classes < train_classes of the train file; val pairs among the train file's
    other classes, test pairs among the test file's other classes."""
    if not 2 <= train_classes <= num_classes - 2:
        raise ValueError(f"option train_classes={train_classes}: must be in 2..{num_classes - 2} "
                         f"so that 2 or more classes remain for verification")
    tr = np.flatnonzero(train_y < train_classes)
    va = np.flatnonzero(train_y >= train_classes)
    te = np.flatnonzero(test_y >= train_classes)
    val_split = verification_split(train_x[torch.from_numpy(va)], train_y[va], pairs, rng,
                                   f"{name} validation pairs (train file, classes >= "
                                   f"{train_classes})", pixels)
    test_split = verification_split(test_x[torch.from_numpy(te)], test_y[te], pairs, rng,
                                    f"{name} test pairs (test file, classes >= "
                                    f"{train_classes})", pixels)
    return Benchmark(
        name, LabelledImages(train_x[torch.from_numpy(tr)], torch.from_numpy(train_y[tr]).long(),
                             pixels),
        val_split, test_split, train_classes, int(train_x.shape[1]),
        (int(train_x.shape[2]), int(train_x.shape[3])), model, augment,
        class_names[:train_classes])

