"""folder and folder-closed: one sub-folder per identity (the CASIA-WebFace layout), images read
with Pillow. Only the file names are listed up front (os.scandir, no image opened); the split
logic and the stream option are `identities.py`'s.

folder splits the identities by seed into train/val/test (fractions `val`, `test`) with balanced
same/different pairs on val and test; folder-closed splits each identity's images into
train/val/test (closed-set identification).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from lfsearch.data import identities
from lfsearch.data.collection import IdentityImages, ImageFiles
from lfsearch.data.files import check_dir
from lfsearch.data.images import IMAGE_EXTENSIONS
from lfsearch.data.pairs import DEFAULT_PAIRS
from lfsearch.data.splits import Benchmark

log = logging.getLogger(__name__)

LAYOUT = ("folder:DIR expects one sub-folder per identity holding its images:\n"
          "  DIR/<identity>/<image>.jpg|.png|.pgm|...  (2 or more identities)")


def list_identities(root: Path, kind: str = "folder") -> IdentityImages:
    """Every image file of DIR/<identity>/, identities and files in sorted name order."""
    check_dir(root, kind, LAYOUT)
    names: list[str] = []
    relative: list[str] = []
    identity: list[np.ndarray] = []
    subs = sorted(e.name for e in os.scandir(root) if e.is_dir())
    real: dict[str, str] = {}
    for sub in subs:  # a symlink to another identity's folder would make a second identity
        target = os.path.realpath(root / sub)
        if target in real:
            raise ValueError(f"{kind}: {root / sub} and {root / real[target]} are the same folder "
                             f"({target}); each identity needs its own folder, not a link to "
                             "another")
        real[target] = sub
    for sub in subs:
        files = sorted(e.name for e in os.scandir(root / sub)
                       if e.is_file() and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS)
        if not files:
            log.warning("folder %s holds no images; skipped", root / sub)
            continue
        identity.append(np.full(len(files), len(names), np.int64))
        names.append(sub)
        relative += [os.path.join(sub, f) for f in files]
    if len(names) < 2:
        raise FileNotFoundError(f"{kind}: found {len(names)} identity sub-folders with images in "
                                f"{root}\n{LAYOUT}")
    return IdentityImages(ImageFiles(root, relative), np.concatenate(identity), names)


def load_folder(root: Path, *, rng: np.random.Generator, size=None, crop=None, channels=None,
                val: float = 0.2, test: float = 0.2, pairs: int = DEFAULT_PAIRS,
                stream: str = "auto", workers: int | None = None, prefetch: int = 2
                ) -> Benchmark:
    return identities.by_identity("folder", list_identities(root), rng=rng, size=size,
                                  crop=crop, channels=channels, val=val, test=test, pairs=pairs,
                                  stream=stream, workers=workers, prefetch=prefetch)


def load_folder_closed(root: Path, *, rng: np.random.Generator, size=None, crop=None,
                       channels=None, val: float = 0.2, test: float = 0.2, stream: str = "auto",
                       workers: int | None = None, prefetch: int = 2) -> Benchmark:
    return identities.within_identity("folder-closed", list_identities(root, "folder-closed"),
                                      rng=rng, size=size, crop=crop, channels=channels, val=val,
                                      test=test, stream=stream, workers=workers,
                                      prefetch=prefetch)
