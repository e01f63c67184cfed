"""Images decoded when read: an evaluation set too large to hold decoded (IJB-C's 227,630
crops are 8.6 GB at 112x112 RGB, 10^6 MegaFace distractors 37.6 GB) keeps only where each
image is and decodes a slice at a time. Slicing `images[a:b]` gives the uint8 (b - a, C, H, W)
tensor the in-memory path would hold at those rows, so `metrics.embed` and the evaluations take
either (evaluation/ijb.py and identification.py read `chunk` images at a time)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch import Tensor

from lfsearch.data.images import decode_one

_THREADED_FROM = 64  # decode a slice of this many images or more on threads (Pillow frees
# the GIL while it decodes, warps and resizes)


class LazyImages:
    """uint8 images (N, C, H, W): row k is `decode_one(source.read(items[k]))` at size (H, W),
    `crop` and `channels`, aligned by `landmarks[k]` (5 points) when landmarks are given.
    `source`: an ImageFiles or a RecordFile (len, read(i) -> bytes, name(i) -> str)."""

    dtype = torch.uint8

    def __init__(self, source, items, size: tuple[int, int], channels: int,
                 crop: tuple[int, int] | None = None, landmarks: np.ndarray | None = None,
                 device: str | torch.device = "cpu"):
        self.source = source
        self.items = np.asarray(items, np.int64).reshape(-1)
        self.size, self.channels, self.crop = tuple(size), int(channels), crop
        if landmarks is not None:
            landmarks = np.asarray(landmarks, np.float64).reshape(-1, 5, 2)
            if landmarks.shape[0] != self.items.shape[0]:
                raise ValueError(f"landmarks: one set of 5 points per image; got "
                                 f"{landmarks.shape[0]} for {self.items.shape[0]} images")
        self.landmarks = landmarks
        self.device = torch.device(device)

    def __len__(self) -> int:
        return int(self.items.shape[0])

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self), self.channels, *self.size))

    def dim(self) -> int:
        return 4

    def name(self, k: int) -> str:
        return self.source.name(int(self.items[k]))

    def _decode(self, k: int, encoded: bytes) -> np.ndarray:
        return decode_one(encoded, self.name(k), size=self.size, crop=self.crop,
                          channels=self.channels,
                          landmarks=None if self.landmarks is None else self.landmarks[k])

    def __getitem__(self, index) -> Tensor:
        """Rows `index` (a slice, or one int for one (C, H, W) image) decoded, on the device.
        The encoded bytes are read here one after the other (a .rec handle is not shared
        between threads); a slice of 64 or more is then decoded on threads."""
        if isinstance(index, (int, np.integer)):
            k = range(len(self))[int(index)]
            image = self._decode(k, self.source.read(int(self.items[k])))
            return torch.from_numpy(np.array(image)).to(self.device)  # a writable copy
        if not isinstance(index, slice):
            raise TypeError(f"LazyImages takes a slice or an int index; got {type(index).__name__}")
        rows = range(len(self))[index]
        encoded = [self.source.read(int(self.items[k])) for k in rows]
        out = np.empty((len(rows), self.channels, *self.size), np.uint8)
        threads = min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                      else os.cpu_count() or 1)
        if len(rows) >= _THREADED_FROM and threads > 1:
            with ThreadPoolExecutor(threads) as pool:
                for j, img in enumerate(pool.map(self._decode, rows, encoded)):
                    out[j] = img
        else:
            for j, k in enumerate(rows):
                out[j] = self._decode(k, encoded[j])
        return torch.from_numpy(out).to(self.device)

    def to(self, device: str | torch.device) -> LazyImages:
        """The same images, decoded onto `device`."""
        return LazyImages(self.source, self.items, self.size, self.channels, self.crop,
                          self.landmarks, device)
