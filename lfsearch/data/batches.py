"""Batches for training on the device: a seeded permutation, then augmentation (random crop of
the zero-padded image, horizontal flip) drawn from the same generator (docs: README.md
"Benchmarks")."""

from __future__ import annotations

from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from lfsearch.data.splits import LabelledImages
from lfsearch.data.stream import StreamedImages


def parse_augment(augment: str | None) -> tuple[int, bool]:
    """'none' | 'flip' | 'crop=P' | 'crop=P,flip' -> (padding P, flip)."""
    if augment is None:
        return 0, False
    text = augment.strip().lower()
    if text in ("", "none"):
        return 0, False
    pad, flip = 0, False
    for token in text.replace("+", ",").split(","):
        token = token.strip()
        if token == "flip":
            flip = True
        elif token.startswith("crop="):
            try:
                pad = int(token[5:])
            except ValueError:
                pad = -1
            if pad < 0:
                raise ValueError(f"augment {augment!r}: crop=P needs a padding P >= 0")
        else:
            raise ValueError(f"augment {augment!r} is not known; allowed: 'none', 'flip', "
                             "'crop=P', 'crop=P,flip' (P = padding in pixels)")
    return pad, flip


def _draw(generator: torch.Generator, fn: Callable[..., Tensor], *args, device,
          **kwargs) -> Tensor:
    """Draw on the generator's device (so any generator works), then move to the data: from
    a CPU generator to CUDA through pinned memory, without blocking the host."""
    return _to(fn(*args, generator=generator, device=generator.device, **kwargs), device)


def _to(t: Tensor, device) -> Tensor:
    """t on `device`; host to CUDA through pinned memory, without blocking the host."""
    if torch.device(device).type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def augment_batch(images: Tensor, *, generator: torch.Generator, augment: str | None) -> Tensor:
    """Random crop of the zero-padded image (padding P, same size out) and horizontal flip
    with probability 1/2, per image, on the images' device."""
    pad, flip = parse_augment(augment)
    n, _, h, w = images.shape
    out = images
    if pad > 0:
        padded = F.pad(images, (pad, pad, pad, pad))
        dy = _draw(generator, torch.randint, 0, 2 * pad + 1, (n,), device=images.device)
        dx = _draw(generator, torch.randint, 0, 2 * pad + 1, (n,), device=images.device)
        rows = (dy[:, None] + torch.arange(h, device=images.device))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=images.device))[:, None, None, :]
        batch = torch.arange(n, device=images.device)[:, None, None, None]
        chans = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
        out = padded[batch, chans, rows, cols]
    if flip:
        mask = _draw(generator, torch.rand, (n,), device=images.device) < 0.5
        out = torch.where(mask[:, None, None, None], out.flip(-1), out)
    return out


def batches(train: LabelledImages | StreamedImages, batch_size: int, *,
            generator: torch.Generator, augment: str | None = "none",
            drop_last: bool = False) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield (images, labels) batches on the data's device: a permutation drawn from
    `generator`; each batch's stored pixels (indexed in memory, or decoded by the workers of a
    `StreamedImages`) normalised to float (`train.normalise`), then `augment_batch` (see
    `parse_augment`; pass `Benchmark.augment`). Both kinds of split give the same batches."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    parse_augment(augment)
    n = len(train)
    device = train.device
    stop = n - n % batch_size if drop_last else n
    if isinstance(train, StreamedImages):  # the order drawn on the host, sent once per epoch
        host = _draw(generator, torch.randperm, n, device="cpu")
        order = _to(host, device)
        pixels = train.stream([host[start:start + batch_size]
                               for start in range(0, stop, batch_size)])
    else:
        order = _draw(generator, torch.randperm, n, device=device)
    chunks = [order[start:start + batch_size] for start in range(0, stop, batch_size)]
    if not isinstance(train, StreamedImages):
        pixels = (train.images[idx] for idx in chunks)
    for idx, raw in zip(chunks, pixels):
        images = train.normalise(raw)
        if augment not in (None, "none", ""):
            images = augment_batch(images, generator=generator, augment=augment)
        yield images, train.labels[idx]
