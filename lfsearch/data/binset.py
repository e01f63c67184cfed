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


def load_bin(path: Path, *, rng: np.random.Generator, size=None, crop=None,
             channels=None) -> Benchmark:
    layout = LAYOUT
    if not path.is_file():
        raise FileNotFoundError(f"bin: file {path} does not exist\n{layout}")
    obj = load_pickle(path, layout)
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2):
        raise ValueError(f"{path}: expected a pickled pair (images, issame)\n{layout}")
    blobs, issame = list(obj[0]), np.asarray(obj[1]).astype(bool).reshape(-1)
    if len(blobs) != 2 * len(issame) or not len(issame):
        raise ValueError(f"{path}: {len(blobs)} images for {len(issame)} is-same flags; expected "
                         f"2 images per flag\n{layout}")
    sources = []
    for b in blobs:
        if isinstance(b, np.ndarray):
            b = b.tobytes()
        if not isinstance(b, (bytes, bytearray)):
            raise ValueError(f"{path}: images must be encoded bytes; got {type(b).__name__}\n"
                             f"{layout}")
        sources.append(bytes(b))
    labels = [f"{i} of {path}" for i in range(len(sources))]
    images, c, hw = decode_images(sources, labels, size=size, crop=crop, channels=channels,
                                  default_channels=3)
    p = len(issame)
    pairs = torch.arange(2 * p).view(p, 2)
    k = min(N_FOLDS, p)
    folds = torch.arange(p) * k // p  # contiguous folds, as insightface's KFold(10, shuffle=False)
    split = VerificationSplit(images, pairs, torch.from_numpy(issame), folds,
                              pixels=BYTE_PIXELS)
    return Benchmark(f"bin:{path.name}", None, split, split, 0, c, hw, "face_cnn", "none")

