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
    """The CPUs this process may use (os.sched_getaffinity; os.cpu_count where unknown)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def epoch_cache_limit() -> int:
    """Default bytes of one epoch's decoded batches kept for the next candidates: a quarter
    of the host's physical memory (0 where unknown)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4
    except (AttributeError, ValueError, OSError):
        return 0


class _Chunks(torch.utils.data.Sampler):
    """The index chunks of the current epoch; set before each pass of a persistent loader."""

    def __init__(self) -> None:
        self.chunks: list[Tensor] = []

    def __iter__(self):
        return iter(self.chunks)

    def __len__(self) -> int:
        return len(self.chunks)


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
    cache_bytes: int | None = None  # epoch cache bound; None: epoch_cache_limit()
    _loader: object = dataclasses.field(default=None, repr=False, compare=False)
    _cache: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)
    decodes: int = dataclasses.field(default=0, repr=False, compare=False)

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
                                   labels=self.labels[torch.as_tensor(idx)], _loader=None,
                                   _cache={}, decodes=0)

    def to(self, device: str | torch.device) -> "StreamedImages":
        return dataclasses.replace(self, labels=self.labels.to(device), _loader=None,
                                   _cache={}, decodes=0)

    def decoder(self) -> DecodeBatches:
        return DecodeBatches(self.source, self.members, size=self.size, crop=self.crop,
                             channels=self.channels)

    def stream(self, chunks: list[Tensor]) -> Iterator[Tensor]:
        """uint8 batches (images of each index chunk, in chunk order) on the split's device.

        Decoded once per epoch: the M sequential candidates of an epoch ask for the same
        chunks, so the decoded batches are kept (host memory, uint8) while the epoch fits
        `cache_bytes` and replayed for the next candidate; a new epoch's chunks replace them.
        Workers persist across epochs (one DataLoader per split); with workers = 0 on CUDA
        the batch is pinned and copied without blocking."""
        key = hash(torch.cat(chunks).numpy().tobytes()) if chunks else 0
        if self._cache.get("key") != key:
            self._cache.clear()
            self._cache["key"] = key
        limit = epoch_cache_limit() if self.cache_bytes is None else self.cache_bytes
        per = decoded_bytes(1, self.size, self.channels)
        keep = per * sum(len(c) for c in chunks) <= limit
        batches = self._cache.setdefault("batches", {})
        missing = [k for k in range(len(chunks)) if k not in batches]
        decoded = self._decode([chunks[k] for k in missing])
        cuda = self.device.type == "cuda"
        for k in range(len(chunks)):
            if k in batches:
                batch = batches[k]
            else:
                batch = next(decoded)
                self.decodes += 1
                if keep:
                    batches[k] = batch
            if cuda:
                batch = batch.pin_memory() if not batch.is_pinned() else batch
            yield batch.to(self.device, non_blocking=cuda)

    def _decode(self, chunks: list[Tensor]) -> Iterator[Tensor]:
        """The chunks decoded on the host (in this process, or by persistent workers)."""
        if not chunks:
            return iter(())
        dataset = self.decoder()
        if self.workers == 0:
            return (dataset[chunk] for chunk in chunks)
        if self._loader is None:
            sampler = _Chunks()
            self._loader = torch.utils.data.DataLoader(
                dataset, sampler=sampler, batch_size=None, num_workers=self.workers,
                prefetch_factor=self.prefetch, pin_memory=self.device.type == "cuda",
                persistent_workers=True)
        self._loader.sampler.chunks = list(chunks)
        return iter(self._loader)


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
