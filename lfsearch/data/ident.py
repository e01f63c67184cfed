"""ident: 1:N identification with distractors (MegaFace-style rank-1; docs/face_recognition.md
"1:N identification"). Spec ``ident:PATH?distractors=DPATH&distractor_counts=10,100,1000``:

- PATH: the probe identities, an identity folder (DIR/<identity>/<image>) or an insightface
  .rec. The first `gallery` images (default 1) of each identity, in sorted order, form the
  gallery; every other image is a probe.
- distractors: images of people not among them, a folder (every image file below it) or a
  .rec (every image record); they are put in a seeded random order and the first n join the
  gallery for rank1@d=n, for each n of `distractor_counts` (default 10, 100, ... below the
  number available, and all of them). Only the first max(counts) are decoded, held as uint8.

Evaluation only: the one split is both `val` and `test`."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from lfsearch.data.collection import ImageFiles
from lfsearch.data.folder import list_identities
from lfsearch.data.images import IMAGE_EXTENSIONS, choose_geometry, decode_one, probe
from lfsearch.data.rec import open_record_set
from lfsearch.data.recordio import RecordFile, index_path, read_index, read_record_at, unpack
from lfsearch.data.splits import BYTE_PIXELS, Benchmark, IdentificationSplit

LAYOUT = ("ident:PATH?distractors=DPATH expects PATH = an identity folder (PATH/<identity>/"
          "<image>) or a .rec, and DPATH = a folder of distractor images (searched below it) "
          "or a .rec of them")


def distractor_source(path: Path):
    """Every image under a folder (sorted relative paths) or every image record of a .rec."""
    if path.is_dir():
        rel = sorted(os.path.relpath(os.path.join(d, f), path)
                     for d, _, files in os.walk(path) for f in files
                     if os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS)
        if not rel:
            raise FileNotFoundError(f"ident: distractors folder {path} holds no images\n{LAYOUT}")
        return ImageFiles(path, rel)
    if not path.is_file():
        raise FileNotFoundError(f"ident: distractors {path} does not exist\n{LAYOUT}")
    index = read_index(index_path(path))
    keys = sorted(index)
    if 0 in index:
        with open(path, "rb") as f:
            head = unpack(read_record_at(f, index[0], f"record 0 of {path}"))[0]
        if head.flag >= 1:  # insightface's header record: images are records 1..label[0]-1
            keys = [k for k in keys if 1 <= k < int(np.asarray(head.label).reshape(-1)[0])]
    if not keys:
        raise ValueError(f"ident: {path} holds no image records\n{LAYOUT}")
    return RecordFile(path, np.array(keys), np.array([index[k] for k in keys]))


def default_counts(m: int) -> tuple[int, ...]:
    """10, 100, ... below m, then m."""
    out, n = [], 10
    while n < m:
        out.append(n)
        n *= 10
    return (*out, m)


def _decode(source, items, size, crop, channels) -> torch.Tensor:
    h, w = size
    out = np.empty((len(items), channels, h, w), np.uint8)
    for k, i in enumerate(items):
        out[k] = decode_one(source.read(int(i)), source.name(int(i)), size=size, crop=crop,
                            channels=channels)
    return torch.from_numpy(out)


def load_ident(path: Path, *, rng: np.random.Generator, size=None, crop=None, channels=None,
               distractors: str | None = None, distractor_counts: tuple[int, ...] | None = None,
               gallery: int = 1) -> Benchmark:
    coll = (open_record_set(path) if path.suffix.lower() == ".rec"
            else list_identities(path, "ident"))
    gallery_mask = np.zeros(len(coll), bool)
    for ident in range(len(coll.names)):
        gallery_mask[np.flatnonzero(coll.identity == ident)[:gallery]] = True
    if gallery_mask.all():
        raise ValueError(f"ident: {path} has no probe (every identity has <= gallery={gallery} "
                         f"images)\n{LAYOUT}")
    src = coll.source
    headers = [probe(src.read(i), src.name(i)) for i in range(len(src))]
    hw, c = choose_geometry(headers, size=size, crop=crop, channels=channels)
    images = _decode(src, range(len(src)), hw, crop, c)
    if distractors is None:
        dist, counts = images.new_empty((0, c, *hw)), ()
    else:
        dsrc = distractor_source(Path(distractors).expanduser())
        m = len(dsrc)
        counts = tuple(sorted(set(distractor_counts))) if distractor_counts else default_counts(m)
        if counts[-1] > m:
            raise ValueError(f"option distractor_counts: {counts[-1]} is more than the {m} "
                             f"distractors in {distractors}")
        order = rng.permutation(m)[:counts[-1]]
        dist = _decode(dsrc, order, hw, crop, c)
    split = IdentificationSplit(images, torch.from_numpy(coll.identity).long(),
                                torch.from_numpy(gallery_mask), dist, counts, BYTE_PIXELS)
    return Benchmark(f"ident:{path.name}", None, split, split, 0, c, hw, "face_cnn", "none")
