"""folder and folder-closed: one sub-folder per identity (the CASIA-WebFace layout), images read
with Pillow.

folder splits the identities by seed into train/val/test (fractions `val`, `test`) with balanced
same/different pairs on val and test; folder-closed splits each identity's images into
train/val/test (closed-set identification).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from lfsearch.data.files import check_dir
from lfsearch.data.images import IMAGE_EXTENSIONS, decode_images
from lfsearch.data.pairs import DEFAULT_PAIRS, verification_split
from lfsearch.data.partition import stratified_split
from lfsearch.data.splits import BYTE_PIXELS, Benchmark, ClassificationSplit, LabelledImages

log = logging.getLogger(__name__)

LAYOUT = ("folder:DIR expects one sub-folder per identity holding its images:\n"
          "  DIR/<identity>/<image>.jpg|.png|.pgm|...  (2 or more identities)")


def folder_items(root: Path) -> tuple[list[str], list[list[Path]]]:
    check_dir(root, "folder", LAYOUT)
    names, files = [], []
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        images = sorted(p for p in sub.iterdir()
                        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if images:
            names.append(sub.name)
            files.append(images)
        else:
            log.warning("folder %s holds no images; skipped", sub)
    if len(names) < 2:
        raise FileNotFoundError(f"folder: found {len(names)} identity sub-folders with images in "
                                f"{root}\n{LAYOUT}")
    return names, files


def face_augment(size: tuple[int, int]) -> str:
    return f"crop={max(1, min(size) // 16)},flip"


def load_folder(root: Path, *, rng: np.random.Generator, size=None, crop=None, channels=None,
                val: float = 0.2, test: float = 0.2, pairs: int = DEFAULT_PAIRS) -> Benchmark:
    names, files = folder_items(root)
    n_id = len(names)
    n_val, n_test = int(round(val * n_id)), int(round(test * n_id))
    n_val, n_test = max(n_val, 2 if val > 0 else 0), max(n_test, 2)
    if n_id - n_val - n_test < 2:
        raise ValueError(f"folder: {n_id} identities cannot be split into train (2 or more), "
                         f"val ({n_val}) and test ({n_test}) identities; lower val/test or add "
                         "identities")
    order = rng.permutation(n_id)
    groups = {"test": np.sort(order[:n_test]), "val": np.sort(order[n_test:n_test + n_val]),
              "train": np.sort(order[n_test + n_val:])}
    sources = [f for ids in files for f in ids]
    identity = np.concatenate([np.full(len(f), i) for i, f in enumerate(files)])
    images, c, hw = decode_images(sources, [str(s) for s in sources], size=size, crop=crop,
                                  channels=channels)

    def subset(ids: np.ndarray) -> tuple[Tensor, np.ndarray]:
        idx = np.flatnonzero(np.isin(identity, ids))
        return images[torch.from_numpy(idx)], identity[idx]

    tx, ty = subset(groups["train"])
    remap = np.full(n_id, -1)
    remap[groups["train"]] = np.arange(len(groups["train"]))
    val_split = None
    if n_val:
        vx, vy = subset(groups["val"])
        val_split = verification_split(vx, vy, pairs, rng, "folder validation identities",
                                       BYTE_PIXELS)
    sx, sy = subset(groups["test"])
    test_split = verification_split(sx, sy, pairs, rng, "folder test identities", BYTE_PIXELS)
    return Benchmark("folder", LabelledImages(tx, torch.from_numpy(remap[ty]).long(),
                                              BYTE_PIXELS), val_split,
                     test_split, len(groups["train"]), c, hw, "face_cnn", face_augment(hw),
                     [names[i] for i in groups["train"]])


def load_folder_closed(root: Path, *, rng: np.random.Generator, size=None, crop=None,
                       channels=None, val: float = 0.2, test: float = 0.2) -> Benchmark:
    names, files = folder_items(root)
    if val + test >= 1.0:
        raise ValueError(f"options val={val} and test={test} must sum to less than 1")
    sources = [f for ids in files for f in ids]
    identity = np.concatenate([np.full(len(f), i) for i, f in enumerate(files)])
    images, c, hw = decode_images(sources, [str(s) for s in sources], size=size, crop=crop,
                                  channels=channels)
    tr, va, te = stratified_split(identity, [val, test], rng)
    t = torch.from_numpy
    lab = t(identity).long()
    every = ClassificationSplit(images, lab, BYTE_PIXELS)
    return Benchmark("folder-closed", LabelledImages(images[t(tr)], lab[t(tr)], BYTE_PIXELS),
                     every.subset(t(va)) if len(va) else None, every.subset(t(te)), len(names),
                     c, hw, "face_cnn", face_augment(hw), names)

