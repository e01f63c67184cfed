"""Benchmarks from an identity-labelled collection (an identity folder or a .rec file), split
by identity (open set: folder, rec) or within each identity (closed set: folder-closed), with
the training split held in memory as uint8 or streamed by DataLoader workers (`stream`).

Validation and test images are decoded into memory in both cases (uint8); only the training
split streams. Both paths decode with `images.decode_one`, so they hold the same pixels.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from lfsearch.data.collection import IdentityImages
from lfsearch.data.images import choose_geometry, decode_one, probe
from lfsearch.data.pairs import verification_split
from lfsearch.data.partition import stratified_split
from lfsearch.data.splits import BYTE_PIXELS, Benchmark, ClassificationSplit, LabelledImages
from lfsearch.data.stream import StreamedImages, default_workers, resolve_stream

log = logging.getLogger(__name__)

PROBE_SAMPLE = 64  # headers read to choose the default size/channels of every split


def face_augment(size: tuple[int, int]) -> str:
    return f"crop={max(1, min(size) // 16)},flip"


class Reader:
    """Decodes items of a collection with one geometry, chosen once for every split."""

    def __init__(self, coll: IdentityImages, train_items: np.ndarray, *, size, crop, channels,
                 stream: str, workers: int | None, prefetch: int):
        self.coll, self.crop = coll, crop
        self.workers = default_workers() if workers is None else workers
        self.prefetch = prefetch
        src = coll.source
        # one rule for both paths (docs/data.md): the size and channels not given come from
        # the headers of an evenly spaced sample of at most PROBE_SAMPLE images, so streamed
        # and in-memory splits (and stream=auto on either side of 1 GiB) decode alike
        step = max(1, -(-len(src) // PROBE_SAMPLE))
        sample = [probe(src.read(i), src.name(i)) for i in range(0, len(src), step)]
        self.size, self.channels = choose_geometry(sample, size=size, crop=crop,
                                                   channels=channels)
        self.streaming = resolve_stream(stream, len(train_items), self.size, self.channels)
        log.info("%d training images %s at %dx%dx%d", len(train_items),
                 f"streamed by {self.workers} workers" if self.streaming else "in memory",
                 self.channels, *self.size)

    def decode(self, items: np.ndarray) -> torch.Tensor:
        """uint8 (len(items), C, H, W), one file read at a time."""
        h, w = self.size
        out = np.empty((len(items), self.channels, h, w), np.uint8)
        src = self.coll.source
        for k, i in enumerate(items.tolist()):
            out[k] = decode_one(src.read(i), src.name(i), size=self.size, crop=self.crop,
                                channels=self.channels)
        return torch.from_numpy(out)

    def train_split(self, items: np.ndarray, labels: torch.Tensor
                    ) -> LabelledImages | StreamedImages:
        if self.streaming:
            return StreamedImages(self.coll.source, items.astype(np.int64), labels, self.size,
                                  self.crop, self.channels, BYTE_PIXELS, self.workers,
                                  self.prefetch)
        return LabelledImages(self.decode(items), labels, BYTE_PIXELS)


def by_identity(kind: str, coll: IdentityImages, *, rng: np.random.Generator, size, crop,
                channels, val: float, test: float, pairs: int, stream: str = "auto",
                workers: int | None = None, prefetch: int = 2) -> Benchmark:
    """Open set: identities split by seed into train/val/test (fractions `val`, `test` of the
    identities, at least 2 each); balanced same/different pairs on val and test."""
    names, identity = coll.names, coll.identity
    n_id = len(names)
    n_val, n_test = int(round(val * n_id)), int(round(test * n_id))
    n_val, n_test = max(n_val, 2 if val > 0 else 0), max(n_test, 2)
    if n_id - n_val - n_test < 2:
        raise ValueError(f"{kind}: {n_id} identities cannot be split into train (2 or more), "
                         f"val ({n_val}) and test ({n_test}) identities; lower val/test or add "
                         "identities")
    order = rng.permutation(n_id)
    groups = {"test": np.sort(order[:n_test]), "val": np.sort(order[n_test:n_test + n_val]),
              "train": np.sort(order[n_test + n_val:])}
    items = {k: np.flatnonzero(np.isin(identity, ids)) for k, ids in groups.items()}
    reader = Reader(coll, items["train"], size=size, crop=crop, channels=channels,
                    stream=stream, workers=workers, prefetch=prefetch)
    remap = np.full(n_id, -1)
    remap[groups["train"]] = np.arange(len(groups["train"]))
    train = reader.train_split(items["train"],
                               torch.from_numpy(remap[identity[items["train"]]]).long())
    val_split = None
    if n_val:
        val_split = verification_split(reader.decode(items["val"]), identity[items["val"]],
                                       pairs, rng, f"{kind} validation identities", BYTE_PIXELS)
    test_split = verification_split(reader.decode(items["test"]), identity[items["test"]],
                                    pairs, rng, f"{kind} test identities", BYTE_PIXELS)
    hw = reader.size
    return Benchmark(kind, train, val_split, test_split, len(groups["train"]), reader.channels,
                     hw, "face_cnn", face_augment(hw), [names[i] for i in groups["train"]])


def within_identity(kind: str, coll: IdentityImages, *, rng: np.random.Generator, size, crop,
                    channels, val: float, test: float, stream: str = "auto",
                    workers: int | None = None, prefetch: int = 2) -> Benchmark:
    """Closed set: each identity's images split into train/val/test (fractions of its images)."""
    if val + test >= 1.0:
        raise ValueError(f"options val={val} and test={test} must sum to less than 1")
    tr, va, te = stratified_split(coll.identity, [val, test], rng)
    reader = Reader(coll, tr, size=size, crop=crop, channels=channels, stream=stream,
                    workers=workers, prefetch=prefetch)
    lab = torch.from_numpy(coll.identity).long()
    t = torch.from_numpy

    def closed(items: np.ndarray) -> ClassificationSplit:
        return ClassificationSplit(reader.decode(items), lab[t(items)], BYTE_PIXELS)

    hw = reader.size
    return Benchmark(kind, reader.train_split(tr, lab[t(tr)]), closed(va) if len(va) else None,
                     closed(te), len(coll.names), reader.channels, hw, "face_cnn",
                     face_augment(hw), list(coll.names))
