"""ident: 1:N identification with distractors (MegaFace-style rank-1; docs/face_recognition.md
"1:N identification"). Spec ``ident:PATH?distractors=DPATH&distractor_counts=10,100,1000``:

- PATH: the probe identities, an identity folder (DIR/<identity>/<image>) or an insightface
  .rec. The first `gallery` images (default 1) of each identity, in sorted order, form the
  gallery; every other image is a probe.
- distractors: images of people not among them, a folder (every image file below it) or a
  .rec (every image record); they are put in a seeded random order and the first n join the
  gallery for rank1@d=n, for each n of `distractor_counts` (default 10, 100, ... below the
  number available, and all of them). A distractor whose encoded bytes are those of a probe
  or gallery image (SHA-1) is dropped with a warning, as MegaFace's cleaning drops them; the
  next ones in the order take its place. The split keeps LazyImages: the distractors are
  decoded a chunk at a time while they are embedded (evaluation/identification.py).

Evaluation only: the one split is both `val` and `test`."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import torch

from lfsearch.data.collection import ImageFiles
from lfsearch.data.folder import list_identities
from lfsearch.data.images import IMAGE_EXTENSIONS, choose_geometry, decode_one, probe
from lfsearch.data.lazy import LazyImages
from lfsearch.data.rec import open_record_set
from lfsearch.data.recordio import RecordFile, index_path, read_index, read_record_at, unpack
from lfsearch.data.splits import BYTE_PIXELS, Benchmark, IdentificationSplit

log = logging.getLogger(__name__)

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


def digest(encoded: bytes) -> bytes:
    """SHA-1 of an image's encoded bytes (a file's content, a record's image)."""
    return hashlib.sha1(encoded).digest()


def clean_distractors(dsrc, order: np.ndarray, known: set[bytes], want: int | None
                      ) -> tuple[np.ndarray, list[int]]:
    """(the first `want` (None: all) distractors of `order` whose encoded bytes are not in
    `known`, the ones dropped on the way): a distractor byte-identical to a probe or gallery
    image would be a probe's own image among the distractors."""
    keep, dropped = [], []
    for i in order:
        if want is not None and len(keep) == want:
            break
        (dropped if digest(dsrc.read(int(i))) in known else keep).append(int(i))
    return np.array(keep, np.int64), dropped


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
    headers, known = [], set()
    for i in range(len(src)):
        encoded = src.read(i)
        headers.append(probe(encoded, src.name(i)))
        known.add(digest(encoded))
    hw, c = choose_geometry(headers, size=size, crop=crop, channels=channels)
    images = _decode(src, range(len(src)), hw, crop, c)
    if distractors is None:
        dist, counts = images.new_empty((0, c, *hw)), ()
    else:
        dsrc = distractor_source(Path(distractors).expanduser())
        m = len(dsrc)
        counts = tuple(sorted(set(distractor_counts))) if distractor_counts else None
        if counts and counts[-1] > m:
            raise ValueError(f"option distractor_counts: {counts[-1]} is more than the {m} "
                             f"distractors in {distractors}")
        order = rng.permutation(m)
        keep, dropped = clean_distractors(dsrc, order, known, counts[-1] if counts else None)
        if dropped:
            log.warning("ident: dropped %d distractor(s) byte-identical to a probe or gallery "
                        "image of %s (e.g. %s)", len(dropped), path, dsrc.name(dropped[0]))
        if counts and len(keep) < counts[-1]:
            raise ValueError(f"option distractor_counts: {counts[-1]} is more than the "
                             f"{len(keep)} distractors in {distractors} left after dropping "
                             f"{len(dropped)} byte-identical to probe or gallery images")
        if dropped and not keep.size:
            raise ValueError(f"ident: every distractor in {distractors} is a probe or gallery "
                             f"image of {path}\n{LAYOUT}")
        counts = counts or default_counts(len(keep))
        dist = LazyImages(dsrc, keep, hw, c, crop)
    split = IdentificationSplit(images, torch.from_numpy(coll.identity).long(),
                                torch.from_numpy(gallery_mask), dist, counts, BYTE_PIXELS)
    return Benchmark(f"ident:{path.name}", None, split, split, 0, c, hw, "face_cnn", "none")
