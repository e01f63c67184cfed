"""cifar10, cifar100 and their open-set variants: the CIFAR "python version" pickles, read by
the restricted unpickler (files.py). Pixels map to [-1, 1] as x / 127.5 - 1."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from lfsearch.data.files import check_dir, get_key, load_pickle
from lfsearch.data.pairs import DEFAULT_PAIRS
from lfsearch.data.partition import closed_set, open_set
from lfsearch.data.splits import BYTE_PIXELS, Benchmark

log = logging.getLogger(__name__)

LAYOUTS = {
    "cifar10": ("cifar10:DIR expects the CIFAR-10 'python version' pickles in DIR or "
                "DIR/cifar-10-batches-py:\n  data_batch_1 .. data_batch_5, test_batch\n"
                "  (each a pickled dict with b'data' uint8 (N, 3072) and b'labels')"),
    "cifar100": ("cifar100:DIR expects the CIFAR-100 'python version' pickles in DIR or "
                 "DIR/cifar-100-python:\n  train, test\n"
                 "  (each a pickled dict with b'data' uint8 (N, 3072) and b'fine_labels')"),
}

def _cifar_file(path: Path, label_key: str, layout: str, num_classes: int
                ) -> tuple[np.ndarray, np.ndarray]:
    d = load_pickle(path, layout)
    data = np.asarray(get_key(d, "data", path, layout))
    labels = np.asarray(get_key(d, label_key, path, layout)).astype(np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(f"{path}: 'data' must be uint8 (N, 3072); got {data.dtype} "
                         f"{data.shape}\n{layout}")
    if labels.shape != (data.shape[0],):
        raise ValueError(f"{path}: {label_key!r} must hold {data.shape[0]} labels; got "
                         f"{labels.shape}\n{layout}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{path}: {label_key!r} must lie in 0..{num_classes - 1}")
    return data.reshape(-1, 3, 32, 32), labels


def _cifar_arrays(root: Path, which: str) -> tuple[Tensor, np.ndarray, Tensor, np.ndarray,
                                                   list[str]]:
    layout = LAYOUTS[which]
    check_dir(root, which, layout)
    if which == "cifar10":
        sub, train_names, test_name, key, n = ("cifar-10-batches-py",
                                               [f"data_batch_{i}" for i in range(1, 6)],
                                               "test_batch", "labels", 10)
        meta_name, meta_key = "batches.meta", "label_names"
    else:
        sub, train_names, test_name, key, n = ("cifar-100-python", ["train"], "test",
                                               "fine_labels", 100)
        meta_name, meta_key = "meta", "fine_label_names"
    if not (root / test_name).is_file() and (root / sub / test_name).is_file():
        root = root / sub
    missing = [name for name in train_names + [test_name] if not (root / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{which}: missing {', '.join(missing)} in {root}\n{layout}")
    parts = [_cifar_file(root / name, key, layout, n) for name in train_names]
    train_x = np.concatenate([p[0] for p in parts])
    train_y = np.concatenate([p[1] for p in parts])
    test_x, test_y = _cifar_file(root / test_name, key, layout, n)
    names = [str(c) for c in range(n)]
    if (root / meta_name).is_file():
        try:
            meta = get_key(load_pickle(root / meta_name, layout), meta_key, root / meta_name,
                           layout)
            if len(meta) == n:
                names = [m.decode() if isinstance(m, bytes) else str(m) for m in meta]
        except ValueError:
            log.warning("ignoring unreadable %s", root / meta_name)
    t = torch.from_numpy
    return t(np.ascontiguousarray(train_x)), train_y, t(np.ascontiguousarray(test_x)), test_y, names


def cifar_loader(which: str, open_classes: bool) -> Callable[..., Benchmark]:
    n = 10 if which == "cifar10" else 100
    model = f"lsoftmax_{which}"

    def closed(root: Path, *, rng: np.random.Generator, val: float = 0.1) -> Benchmark:
        tx, ty, sx, sy, names = _cifar_arrays(root, which)
        return closed_set(which, tx, ty, sx, sy, val=val, rng=rng, num_classes=n, model=model,
                          augment="crop=4,flip", pixels=BYTE_PIXELS, class_names=names)

    def opened(root: Path, *, rng: np.random.Generator, pairs: int = DEFAULT_PAIRS,
               train_classes: int = 6 if n == 10 else 80) -> Benchmark:
        tx, ty, sx, sy, names = _cifar_arrays(root, which)
        return open_set(f"{which}-open", tx, ty, sx, sy, train_classes=train_classes,
                        num_classes=n, pairs=pairs, rng=rng, model=model, augment="crop=4,flip",
                        pixels=BYTE_PIXELS, class_names=names)

    return opened if open_classes else closed

