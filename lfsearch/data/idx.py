"""mnist and mnist-open: the four MNIST IDX files (gzipped or not).

IDX format: magic 0x00 0x00, a type byte, the number of dimensions; then that many big-endian
uint32 sizes; then the data. Pixels map to [-1, 1] as x / 127.5 - 1.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from lfsearch.data.files import check_dir
from lfsearch.data.pairs import DEFAULT_PAIRS
from lfsearch.data.partition import closed_set, open_set
from lfsearch.data.splits import BYTE_PIXELS, Benchmark

LAYOUT = ("mnist:DIR expects the four MNIST IDX files, gzipped or not, in DIR:\n"
          "  DIR/train-images-idx3-ubyte[.gz]\n  DIR/train-labels-idx1-ubyte[.gz]\n"
          "  DIR/t10k-images-idx3-ubyte[.gz]\n  DIR/t10k-labels-idx1-ubyte[.gz]")

_IDX_TYPES = {0x08: np.dtype(np.uint8), 0x09: np.dtype(np.int8), 0x0B: np.dtype(">i2"),
              0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzipped when its name ends in .gz): magic 0x0000 TT DD, DD big-endian
    uint32 dimensions, then the data."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                raw = f.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError) as exc:
        raise ValueError(f"cannot read IDX file {path}: {exc}\n{LAYOUT}") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES or raw[3] == 0:
        raise ValueError(f"{path} is not an IDX file (bad magic number {raw[:4].hex()})\n"
                         f"{LAYOUT}")
    dtype, ndim = _IDX_TYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: IDX header is truncated\n{LAYOUT}")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(f"{path}: IDX dimensions {dims} need {expected} bytes of data; the file "
                         f"holds {len(raw) - header}\n{LAYOUT}")
    return np.frombuffer(raw, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _find_idx(root: Path, split: str, kind: str) -> Path:
    stem = {"images": "images-idx3-ubyte", "labels": "labels-idx1-ubyte"}[kind]
    names = [f"{split}-{stem}", f"{split}-{stem.replace('-idx', '.idx')}"]
    for name in names:
        for candidate in (root / name, root / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(f"{root}: no {split} {kind} file ({names[0]}[.gz])\n"
                            f"{LAYOUT}")


def _mnist_arrays(root: Path) -> tuple[Tensor, np.ndarray, Tensor, np.ndarray]:
    check_dir(root, "mnist", LAYOUT)
    out = []
    for split in ("train", "t10k"):
        ipath, lpath = _find_idx(root, split, "images"), _find_idx(root, split, "labels")
        images, labels = read_idx(ipath), read_idx(lpath)
        if images.ndim != 3 or images.dtype != np.uint8:
            raise ValueError(f"{ipath}: expected uint8 images (N, H, W); got {images.dtype} "
                             f"{images.shape}\n{LAYOUT}")
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(f"{lpath}: expected {images.shape[0]} labels (one per image of "
                             f"{ipath.name}); got shape {labels.shape}\n{LAYOUT}")
        if labels.size and (labels.min() < 0 or labels.max() > 9):
            raise ValueError(f"{lpath}: labels must be digits 0..9")
        out += [torch.from_numpy(np.ascontiguousarray(images[:, None])), labels.astype(np.int64)]
    return out[0], out[1], out[2], out[3]


def load_mnist(root: Path, *, rng: np.random.Generator, val: float = 0.1) -> Benchmark:
    tx, ty, sx, sy = _mnist_arrays(root)
    return closed_set("mnist", tx, ty, sx, sy, val=val, rng=rng, num_classes=10,
                      model="lsoftmax_mnist", augment="none", pixels=BYTE_PIXELS,
                      class_names=[str(c) for c in range(10)])


def load_mnist_open(root: Path, *, rng: np.random.Generator, pairs: int = DEFAULT_PAIRS,
                    train_classes: int = 6) -> Benchmark:
    tx, ty, sx, sy = _mnist_arrays(root)
    return open_set("mnist-open", tx, ty, sx, sy, train_classes=train_classes, num_classes=10,
                    pairs=pairs, rng=rng, model="lsoftmax_mnist", augment="none",
                    pixels=BYTE_PIXELS, class_names=[str(c) for c in range(10)])

