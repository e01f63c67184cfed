"""Streamed training splits: DataLoader workers read and decode a batch at a time, so host
memory is bounded by the prefetch depth (workers x prefetch batches), whatever the dataset size
(docs/data.md "Streaming").

The batch order is the in-memory path's: `batches` draws one permutation from the epoch's
generator in the main process and hands the workers fixed index chunks; workers draw nothing.
Pixels stay uint8 until the device, where they are normalised and augmented with the same
generator draws as in memory. So a streamed epoch gives exactly the in-memory batches, for any
number of workers, and depends only on the generator's seed (seed, epoch)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from torch import Tensor

from lfsearch.data.images import decode_one
from lfsearch.data.splits import PixelScale, normalise

STREAM_ABOVE_BYTES = 1 << 30  # stream=auto streams a training split above 1 GiB decoded


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


class DecodeBatches(torch.utils.data.Dataset):
    """dataset[chunk] -> uint8 (len(chunk), C, H, W): the images `members[chunk]` of `source`
    decoded by `images.decode_one` (what the in-memory path decodes)."""

    def __init__(self, source, members: np.ndarray, *, size: tuple[int, int],
                 crop: tuple[int, int] | None, channels: int):
        self.source, self.members = source, members
        self.size, self.crop, self.channels = size, crop, channels

    def __len__(self) -> int:
        return int(self.members.shape[0])

    def __getitem__(self, chunk: Tensor) -> Tensor:
        h, w = self.size
        index = chunk.tolist() if isinstance(chunk, Tensor) else list(chunk)
        out = np.empty((len(index), self.channels, h, w), np.uint8)
        for k, j in enumerate(index):
            i = int(self.members[j])
            out[k] = decode_one(self.source.read(i), self.source.name(i), size=self.size,
                                crop=self.crop, channels=self.channels)
        return torch.from_numpy(out)


@dataclass
class StreamedImages:
    """A training split decoded batch by batch: item j is image `members[j]` of `source` with
    class label `labels[j]`. Labels live on the training device; pixels never stay in memory.

    `workers` DataLoader processes (0: decode in this process), each `prefetch` batches ahead.
    """

    source: object
    members: np.ndarray
    labels: Tensor
    size: tuple[int, int]
    crop: tuple[int, int] | None
    channels: int
    pixels: PixelScale
    workers: int = 0
    prefetch: int = 2

    def __post_init__(self) -> None:
        if self.labels.shape != (self.members.shape[0],):
            raise ValueError(f"labels must have shape ({self.members.shape[0]},); "
                             f"got {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return int(self.members.shape[0])

    @property
    def device(self) -> torch.device:
        return self.labels.device

    def normalise(self, images: Tensor) -> Tensor:
        return normalise(images, self.pixels)

    def subset(self, index) -> "StreamedImages":
        idx = np.asarray(index.cpu() if isinstance(index, Tensor) else np.arange(len(self))[index])
        return dataclasses.replace(self, members=self.members[idx],
                                   labels=self.labels[torch.as_tensor(idx)])

    def to(self, device: str | torch.device) -> "StreamedImages":
        return dataclasses.replace(self, labels=self.labels.to(device))

    def decoder(self) -> DecodeBatches:
        return DecodeBatches(self.source, self.members, size=self.size, crop=self.crop,
                             channels=self.channels)

    def stream(self, chunks: list[Tensor]) -> Iterator[Tensor]:
        """uint8 batches (images of each index chunk, in chunk order) on the split's device."""
        dataset = self.decoder()
        cuda = self.device.type == "cuda"
        if self.workers == 0:
            for chunk in chunks:
                yield dataset[chunk].to(self.device)
            return
        loader = torch.utils.data.DataLoader(
            dataset, sampler=chunks, batch_size=None, num_workers=self.workers,
            prefetch_factor=self.prefetch, pin_memory=cuda, persistent_workers=False)
        for batch in loader:
            yield batch.to(self.device, non_blocking=cuda)


def decoded_bytes(n: int, size: tuple[int, int], channels: int) -> int:
    """uint8 bytes of n decoded images: n·C·H·W."""
    return int(n) * int(channels) * int(size[0]) * int(size[1])


def resolve_stream(stream: str, n: int, size: tuple[int, int], channels: int) -> bool:
    """stream=yes|no as said; auto streams when the decoded split exceeds STREAM_ABOVE_BYTES."""
    if stream == "yes":
        return True
    if stream == "no":
        return False
    return decoded_bytes(n, size, channels) > STREAM_ABOVE_BYTES
