"""Identity-labelled image collections read one encoded image at a time: image files under a
folder, or records of an insightface .rec file. They hold names and offsets, never pixels, and
pickle small, so DataLoader workers can read from them (docs/data.md)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class ImageFiles:
    """Image files `root/paths[i]`. The relative paths live in one numpy bytes array (no
    per-file Python object, so forked workers share the pages instead of copying them)."""

    def __init__(self, root: Path, relative: list[str]):
        self.root = os.fsencode(Path(root))
        self.paths = np.array([os.fsencode(r) for r in relative], dtype=np.bytes_)

    def __len__(self) -> int:
        return int(self.paths.shape[0])

    def path(self, i: int) -> str:
        return os.fsdecode(os.path.join(self.root, self.paths[i]))

    def name(self, i: int) -> str:
        return self.path(i)

    def read(self, i: int) -> bytes:
        try:
            with open(self.path(i), "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise FileNotFoundError(f"image {self.path(i)} does not exist") from None


@dataclass
class IdentityImages:
    """Item i is the encoded image `source.read(i)` of identity `identity[i]`, an index into
    `names` (identities in sorted order, every one with an image)."""

    source: object  # ImageFiles or recordio.RecordFile: len(), read(i) -> bytes, name(i) -> str
    identity: np.ndarray
    names: list[str]

    def __len__(self) -> int:
        return int(self.identity.shape[0])
