"""bin: an insightface verification .bin (LFW, CFP-FP, AgeDB-30, CALFW, CPLFW): a pickle of
(images, issame) where images are 2P encoded images and pair i is images 2i and 2i+1.
Read by the restricted unpickler (files.py). Evaluation only, as lfw."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from lfsearch.data.files import load_pickle
from lfsearch.data.images import decode_images
from lfsearch.data.pairs import N_FOLDS
from lfsearch.data.splits import BYTE_PIXELS, Benchmark, VerificationSplit

LAYOUT = ("bin:FILE expects an insightface verification file: a pickle of (images, issame) "
          "where images is a list of 2P encoded images (JPEG/PNG bytes) and issame a list "
          "of P booleans; pair i is images 2i and 2i+1")


MAX_PAIRS = 1_000_000


def is_same_flags(raw, path: Path) -> np.ndarray:
    """The is-same list as bools; only True/False (or 0/1 integers) are allowed."""
    if isinstance(raw, np.ndarray):
        values = raw.reshape(-1).tolist() if raw.dtype.kind in "biu" else list(raw.reshape(-1))
    elif isinstance(raw, (list, tuple)):
        values = list(raw)
    else:
        raise ValueError(f"{path}: issame is a {type(raw).__name__}; expected a list of "  # noqa: TRY004
                         f"True/False\n{LAYOUT}")
    for i, v in enumerate(values):
        ok = isinstance(v, (bool, np.bool_)) or (
            isinstance(v, (int, np.integer)) and int(v) in (0, 1))
        if not ok:
            raise ValueError(f"{path}: issame[{i}] is {v!r}; allowed values: True, False "
                             "(or 1, 0)")
    return np.array([bool(v) for v in values], dtype=bool)


def load_bin(path: Path, *, rng: np.random.Generator, size=None, crop=None,
             channels=None) -> Benchmark:
    layout = LAYOUT
    if not path.is_file():
        raise FileNotFoundError(f"bin: file {path} does not exist\n{layout}")
    obj = load_pickle(path, layout)
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2):
        raise ValueError(f"{path}: expected a pickled pair (images, issame)\n{layout}")
    blobs, issame = list(obj[0]), is_same_flags(obj[1], path)
    if len(blobs) != 2 * len(issame) or not len(issame):
        raise ValueError(f"{path}: {len(blobs)} images for {len(issame)} is-same flags; expected "
                         f"2 images per flag\n{layout}")
    if len(issame) > MAX_PAIRS:
        raise ValueError(f"{path}: {len(issame)} pairs; a .bin may hold at most {MAX_PAIRS} "
                         "(split it into several benchmarks)")
    sources, stored = [], path.stat().st_size
    for i, b in enumerate(blobs):
        if isinstance(b, np.ndarray):
            b = b.tobytes()
        if not isinstance(b, (bytes, bytearray)):
            raise ValueError(f"{path}: images must be encoded bytes; image {i} is a "
                             f"{type(b).__name__}\n{layout}")
        stored -= len(b)
        if stored < 0:  # the pickle refers to one image many times: refused before decoding
            raise ValueError(f"{path}: images 0..{i} take more bytes than the file holds; a .bin "
                             "stores each image's bytes once (no repeated references)")
        sources.append(bytes(b))
    labels = [f"{i} of {path}" for i in range(len(sources))]
    images, c, hw = decode_images(sources, labels, size=size, crop=crop, channels=channels,
                                  default_channels=3)
    p = len(issame)
    if p < N_FOLDS or issame.all() or not issame.any():
        raise ValueError(f"{path}: {p} pairs ({int(issame.sum())} same); 10-fold verification "
                         f"needs at least {N_FOLDS} pairs, both same and different ones")
    pairs = torch.arange(2 * p).view(p, 2)
    k = min(N_FOLDS, p)
    folds = torch.arange(p) * k // p  # contiguous folds, as insightface's KFold(10, shuffle=False)
    split = VerificationSplit(images, pairs, torch.from_numpy(issame), folds,
                              pixels=BYTE_PIXELS)
    return Benchmark(f"bin:{path.name}", None, split, split, 0, c, hw, "face_cnn", "none")

