"""More validation pairs for the reward ([reward] pairs = N, docs/search.md).

A verification validation split comes with the pairs its benchmark drew (`?pairs=` of the
benchmark spec, 6000 by default), and that count also sets the test split's. `redraw` gives
the reward its own count: N balanced pairs (N/2 same-identity, N/2 different-identity,
10 folds; fewer when the identities allow fewer) drawn uniformly by `data.make_pairs` among
the validation split's own images and identity labels. The test split is not touched.

The standard error of a mean over N pairs falls like 1/sqrt(N), so more pairs give a less
noisy reward at the price of embedding the same images (the cost of a reward is the
embedding pass over the split's images, not the pair count).
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import torch

from lfsearch import data

log = logging.getLogger(__name__)


def redraw(split: data.VerificationSplit, n_pairs: int, seed: int,
           name: str = "val") -> data.VerificationSplit:
    """`split` with n_pairs new balanced pairs among its images (seeded by `seed`)."""
    if getattr(split, "protocol", None) != "verification":
        raise ValueError(f"reward.pairs needs verification validation splits; {name} is a "
                         f"{getattr(split, 'protocol', type(split).__name__)} split "
                         "(allowed there: reward.pairs = 0)")
    if split.labels is None:
        raise ValueError(f"reward.pairs: {name} has no identity labels to draw pairs from "
                         "(a fixed pairs file); allowed there: reward.pairs = 0")
    labels = split.labels.cpu().numpy()
    pairs, same, folds = data.make_pairs(labels, n_pairs, np.random.default_rng(seed))
    if pairs.shape[0] < n_pairs:
        log.warning("reward.pairs = %d: %s allows only %d balanced pairs; using those",
                    n_pairs, name, pairs.shape[0])
    device = split.images.device
    # dataclasses.replace keeps every other field (images, labels, pixel scale) as it is
    return dataclasses.replace(split, pairs=torch.from_numpy(pairs).long().to(device),
                               same=torch.from_numpy(same).to(device),
                               folds=torch.from_numpy(folds).long().to(device))
