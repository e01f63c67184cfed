"""digits and digits-closed: scikit-learn's bundled 8x8 digits (real data, no download).

digits is open-set: train on digits 0..K-1 (K = `train_classes`, default 6), verification pairs
on the others, whose images are split per digit (by seed) into disjoint validation and test
halves. digits-closed is a stratified train/val/test split of all 10 classes.
Pixels 0..16 are kept as uint8 and map to [-1, 1] as x / 8 - 1 (`DIGIT_PIXELS`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from lfsearch.data.pairs import DEFAULT_PAIRS, verification_split
from lfsearch.data.partition import stratified_split
from lfsearch.data.splits import Benchmark, ClassificationSplit, LabelledImages, PixelScale

DIGIT_PIXELS = PixelScale(8.0, 1.0)

def _digits_arrays() -> tuple[Tensor, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = torch.from_numpy(d.images.astype(np.uint8)[:, None])  # integers 0..16
    return images, d.target.astype(np.int64)


def load_digits(*, rng: np.random.Generator, pairs: int = DEFAULT_PAIRS,
                train_classes: int = 6) -> Benchmark:
    images, labels = _digits_arrays()
    if not 2 <= train_classes <= 8:
        raise ValueError(f"option train_classes={train_classes}: must be in 2..8")
    tr = np.flatnonzero(labels < train_classes)
    rest = np.flatnonzero(labels >= train_classes)
    test_local, val_local = stratified_split(labels[rest], [0.5], rng)
    va, te = rest[val_local], rest[test_local]
    val_split = verification_split(images[torch.from_numpy(va)], labels[va], pairs, rng,
                                   "digits validation pairs", DIGIT_PIXELS)
    test_split = verification_split(images[torch.from_numpy(te)], labels[te], pairs, rng,
                                    "digits test pairs", DIGIT_PIXELS)
    return Benchmark("digits", LabelledImages(images[torch.from_numpy(tr)],
                                              torch.from_numpy(labels[tr]), DIGIT_PIXELS),
                     val_split, test_split, train_classes, 1, (8, 8), "digits_net", "none",
                     [str(c) for c in range(train_classes)])


def load_digits_closed(*, rng: np.random.Generator, val: float = 0.2,
                       test: float = 0.2) -> Benchmark:
    images, labels = _digits_arrays()
    if val + test >= 1.0:
        raise ValueError(f"options val={val} and test={test} must sum to less than 1")
    tr, va, te = stratified_split(labels, [val, test], rng)
    t = torch.from_numpy
    lab = t(labels)
    every = ClassificationSplit(images, lab, DIGIT_PIXELS)
    return Benchmark("digits-closed", LabelledImages(images[t(tr)], lab[t(tr)], DIGIT_PIXELS),
                     every.subset(t(va)) if len(va) else None, every.subset(t(te)), 10, 1, (8, 8),
                     "digits_net", "none", [str(c) for c in range(10)])

