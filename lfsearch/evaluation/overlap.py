"""Refuse validation data that shares images with the test split.

A search picks losses by their validation reward; if a validation benchmark holds images of
the main benchmark's test split, the test metric is no longer unseen. Images are compared by
content: a SHA-1 of each image's bytes (float32, C-contiguous), so two benchmarks built from
the same files match whatever their order or split.
"""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor


def image_hashes(images, chunk: int = 4096) -> set[bytes]:
    """SHA-1 digests of each image of (N, ...) images (a tensor, or LazyImages read `chunk` at
    a time), on the host as float32 bytes."""
    out: set[bytes] = set()
    n = int(images.shape[0])
    for start in range(0, n, chunk):
        part = images[start:start + chunk]
        rows = part.detach().to("cpu", torch.float32).contiguous().reshape(part.shape[0], -1)
        out.update(hashlib.sha1(row.tobytes()).digest() for row in rows.numpy())
    return out


def shared_images(a: Tensor, b: Tensor) -> int:
    """How many distinct images of `a` also appear in `b` (by content)."""
    if a.shape[1:] != b.shape[1:]:
        return 0
    return len(image_hashes(a) & image_hashes(b))


def refuse_overlap(validation_spec: str, validation_images: Tensor, test_images: Tensor) -> None:
    """ValueError (one line) if the validation images share any image with the test split."""
    shared = shared_images(validation_images, test_images)
    if shared:
        raise ValueError(
            f"reward.validation benchmark {validation_spec!r} shares {shared} of its images with "
            f"the main benchmark's test split ({test_images.shape[0]} images); validate on "
            f"data disjoint from the test split (allowed: 'main' or a benchmark with no test "
            f"images)")
