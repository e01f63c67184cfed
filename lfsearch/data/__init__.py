"""Benchmarks: a training split plus validation and test splits, each with its protocol.

A split is either closed-set classification (`ClassificationSplit`: the test classes were seen
in training, scored by top-1 accuracy) or open-set verification (`VerificationSplit`: pairs of
images whose identities never appear in training, as in LFW, scored by 10-fold accuracy).

`load(spec)` builds a `Benchmark` by name. Spec syntax::

    KIND[:PATH][?OPTION=VALUE&OPTION=VALUE...]

e.g. ``digits``, ``mnist:/data/mnist``, ``cifar10-open:~/cifar?pairs=3000``,
``folder:faces/?size=64x64&channels=3``. Options may also be passed to `load` as keyword
arguments (they override the spec's). Kinds:

=================  =========================================================================
digits             scikit-learn's bundled 8x8 digits (real data, no download), open-set:
                   train on digits 0-5, verification pairs on 6-9; the images of 6-9 are
                   split (per digit, by seed) into disjoint validation and test halves.
digits-closed      the same digits, classification: stratified train/val/test split of all
                   10 classes (fractions `val`, `test`, default 0.2 each).
mnist:DIR          MNIST IDX files (gzipped or not) in DIR; train/test as published,
                   validation (`val`, default 0.1) carved from train, stratified, by seed.
cifar10:DIR        CIFAR-10 "python version" pickles (data_batch_1..5, test_batch) in DIR or
                   DIR/cifar-10-batches-py; split as for mnist.
cifar100:DIR       CIFAR-100 "python version" pickles (train, test; fine labels) in DIR or
                   DIR/cifar-100-python; split as for mnist.
mnist-open:DIR,    open-set variants by class: train on classes 0..K-1 (`train_classes`,
cifar10-open:DIR,  default 6, 6 and 80) of the train file; validation pairs among the train
cifar100-open:DIR  file's other classes, test pairs among the test file's other classes.
folder:DIR         one sub-folder per identity (CASIA-WebFace style), images read with Pillow;
                   identities split by seed into train/val/test (fractions `val`, `test`,
                   default 0.2 each); balanced same/different pairs on val and test.
folder-closed:DIR  the same layout, classification: each identity's images split into
                   train/val/test (closed-set identification).
lfw:DIR            LFW layout DIR/NAME/NAME_0001.jpg with DIR/pairs.txt (10 folds, both line
                   formats). Evaluation only: `train` is None and the single pair set is both
                   `val` and `test`, so it can be named as a validation benchmark of a search
                   or as a test benchmark (never both in one run: that would tune on the test).
rec:FILE           insightface RecordIO training set (FILE = train.rec, with train.idx -- or
                   indexed by one scan without it -- and optionally property beside it),
                   split by identity as folder.
bin:FILE           insightface verification .bin (pickle of encoded images and is-same flags;
                   LFW, CFP-FP, AgeDB-30, CALFW, CPLFW); evaluation only, as lfw.
ijb:DIR            IJB-B / IJB-C 1:1 template verification in insightface's layout (meta/ and
                   loose_crop/; data/ijb.py); evaluation only (`target=ijbb|ijbc`,
                   `align=yes|no`: 5-point alignment of the loose crops, default yes).
ident:PATH         1:N identification with distractors (an identity folder or .rec; options
                   `distractors=DIR|FILE.rec`, `distractor_counts=10,100,...`, `gallery=K`;
                   data/ident.py); evaluation only.
=================  =========================================================================

Options (allowed per kind; anything else is a ValueError naming the allowed ones):
  size=H[xW]      image size after resizing (folder, folder-closed, lfw, bin). Default: the
                  images' own size when they all share one no larger than 112x112, else 112x112.
  crop=H[xW]      centre crop in source pixels before resizing (folder*, lfw, bin).
  channels=1|3    grey or RGB (folder*, lfw, bin). Default: 1 if every image is grey
                  (folder*), else 3 (default 3 for lfw and bin).
  val=F, test=F   fractions in [0, 1) of images (closed-set) or identities (folder).
  pairs=N         pairs per verification split (default 6000 = 10 x 600 as in LFW), half
                  same and half different, fewer when the images allow fewer.
  train_classes=K classes 0..K-1 train an open-set variant (digits, *-open).
  pairs_file=NAME the pairs file of lfw (default pairs.txt).
  align=yes|no    ijb: warp each loose crop by its 5 landmarks onto ArcFace's 112x112
                  template (default yes), or use the crops as they are (data/alignment.py).
  stream=auto|yes|no  stream the training split through DataLoader workers (folder*, rec);
                  auto streams when it exceeds 1 GiB decoded (N x C x H x W bytes). Streamed
                  and in-memory splits give the same batches (docs/data.md).
  flip=yes|no     flip test-time augmentation (any kind): test embeddings are f(x) +
                  f(mirror(x)), then L2-normalised, as insightface's verification protocol.
                  Default yes for the face kinds (folder, folder-closed, rec, lfw, bin:
                  FLIP_KINDS; faces are left-right symmetric), no for digits, MNIST and CIFAR
                  (a mirrored digit is another glyph). Validation rewards are measured without
                  it (docs/face_recognition.md).
  workers=N       DataLoader worker processes of a streamed split (default: the usable CPUs; 0
                  decodes in the training process); prefetch=N batches ahead per worker (2).

Images are kept as uint8 (N, C, H, W) tensors on the device (4x less memory than float32)
with the split's `PixelScale` (ijb images and ident distractors: `LazyImages`, decoded a
chunk at a time while they are evaluated); each batch becomes float32 in [-1, 1] on the device (8-bit
x -> x/127.5 - 1; digits x/8 - 1; `split.normalise`). Training labels index the training
classes 0..num_classes-1. `batches` shuffles with a torch.Generator, normalises and augments
on the device; `Benchmark.augment` is the benchmark's usual augmentation to pass to it:
"none" for digits and MNIST, "crop=4,flip" for CIFAR, "crop=P,flip" with P = min(H, W) // 16
for folder and rec. Pickles (CIFAR, .bin) are read
by an unpickler that admits only containers, bytes and numpy arrays: a data file runs no code.

The package's modules follow the flow from a source to batches:

  sources    embedded (digits), idx (MNIST), cifar, folder (identity folders), lfw (pairs
             files), binset (insightface .bin); images (Pillow decoding), files (directory
             checks, restricted unpickling); ijb, ident (evaluation sets), alignment
             (5-point similarity warp), lazy (LazyImages: images decoded when read)
  splits     splits (the split and benchmark types), partition (stratified, closed/open set),
             pairs (verification pairs and folds)
  batches    batches (seeded permutation and on-device augmentation); stream (StreamedImages:
             DataLoader workers decode a training split batch by batch); identities (identity
             collections -> splits, in memory or streamed); collection (files, records)
  options    the spec options' parsers; this module: the kind registry and `load`
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from lfsearch.data import pack, recordio  # noqa: F401 - the data tools and the format
from lfsearch.data.batches import augment_batch, batches, parse_augment
from lfsearch.data.binset import load_bin
from lfsearch.data.cifar import cifar_loader
from lfsearch.data.embedded import load_digits, load_digits_closed
from lfsearch.data.folder import load_folder, load_folder_closed
from lfsearch.data.ident import load_ident
from lfsearch.data.idx import load_mnist, load_mnist_open, read_idx
from lfsearch.data.ijb import load_ijb
from lfsearch.data.images import IMAGE_EXTENSIONS, MAX_DEFAULT_SIDE
from lfsearch.data.lfw import load_lfw, read_pairs_file
from lfsearch.data.options import PARSERS
from lfsearch.data.pairs import DEFAULT_PAIRS, N_FOLDS, make_pairs
from lfsearch.data.rec import load_rec
from lfsearch.data.splits import (
    BYTE_PIXELS,
    Benchmark,
    ClassificationSplit,
    IdentificationSplit,
    LabelledImages,
    PixelScale,
    Split,
    TemplateSplit,
    VerificationSplit,
)
from lfsearch.data.stream import StreamedImages

__all__ = ["BYTE_PIXELS", "Benchmark", "ClassificationSplit", "DEFAULT_PAIRS", "FLIP_KINDS",
           "IMAGE_EXTENSIONS", "IdentificationSplit", "LabelledImages", "MAX_DEFAULT_SIDE",
           "N_FOLDS", "PixelScale", "Split", "StreamedImages", "TemplateSplit", "VerificationSplit",
           "augment_batch", "available", "batches", "load", "make_pairs",
           "parse_augment", "parse_spec", "read_idx", "read_pairs_file"]

log = logging.getLogger(__name__)

# kind -> (loader, needs a path, allowed options)
_IMAGE_OPTIONS = {"size", "crop", "channels"}
_STREAM_OPTIONS = {"stream", "workers", "prefetch"}
_KINDS: dict[str, tuple[Callable[..., Benchmark], bool, set[str]]] = {
    "digits": (load_digits, False, {"pairs", "train_classes"}),
    "digits-closed": (load_digits_closed, False, {"val", "test"}),
    "mnist": (load_mnist, True, {"val"}),
    "mnist-open": (load_mnist_open, True, {"pairs", "train_classes"}),
    "cifar10": (cifar_loader("cifar10", False), True, {"val"}),
    "cifar10-open": (cifar_loader("cifar10", True), True, {"pairs", "train_classes"}),
    "cifar100": (cifar_loader("cifar100", False), True, {"val"}),
    "cifar100-open": (cifar_loader("cifar100", True), True, {"pairs", "train_classes"}),
    "folder": (load_folder, True, _IMAGE_OPTIONS | _STREAM_OPTIONS | {"val", "test", "pairs"}),
    "folder-closed": (load_folder_closed, True, _IMAGE_OPTIONS | _STREAM_OPTIONS | {"val", "test"}),
    "rec": (load_rec, True, _IMAGE_OPTIONS | _STREAM_OPTIONS | {"val", "test", "pairs"}),
    "lfw": (load_lfw, True, _IMAGE_OPTIONS | {"pairs_file"}),
    "bin": (load_bin, True, _IMAGE_OPTIONS),
    "ijb": (load_ijb, True, _IMAGE_OPTIONS | {"target", "align"}),
    "ident": (load_ident, True, _IMAGE_OPTIONS | {"distractors", "distractor_counts", "gallery"}),
}
# kinds of face images: flip test-time augmentation on by default (option flip=yes|no)
FLIP_KINDS = ("folder", "folder-closed", "rec", "lfw", "bin", "ijb", "ident")

def parse_spec(spec: str) -> tuple[str, str | None, dict[str, str]]:
    """'KIND[:PATH][?k=v&k=v]' -> (kind, path or None, options as strings)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"benchmark spec must be a non-empty string; allowed kinds: "
                         f"{', '.join(available())}")
    text = spec.strip()
    options: dict[str, str] = {}
    if "?" in text:
        text, _, query = text.rpartition("?")
        for item in filter(None, query.split("&")):
            key, eq, value = item.partition("=")
            if key.strip() in options:
                raise ValueError(f"benchmark spec {spec!r}: option {key.strip()!r} is given twice; "
                                 "give each option once")
            options[key.strip()] = value.strip() if eq else "1"
    kind, colon, path = text.partition(":")
    return kind.strip().lower(), (path if colon else None), options




def available() -> list[str]:
    """The benchmark kinds `load` knows."""
    return sorted(_KINDS)


def load(spec: str, *, seed: int = 0, device: str | torch.device = "cpu",
         **options: Any) -> Benchmark:
    """Build the benchmark named by `spec` (see the module docstring for kinds and options);
    every split and pair is a deterministic function of (spec, options, seed)."""
    kind, path, spec_options = parse_spec(spec)
    if kind not in _KINDS:
        raise ValueError(f"benchmark kind {kind!r} (from spec {spec!r}) is not known; allowed: "
                         f"{', '.join(available())}")
    loader, needs_path, allowed = _KINDS[kind]
    if needs_path and not path:
        what = "FILE" if kind in ("bin", "rec") else "PATH" if kind == "ident" else "DIR"
        raise ValueError(f"benchmark {kind!r} needs a path: write {kind}:{what}")
    if not needs_path and path:
        raise ValueError(f"benchmark {kind!r} takes no path; got {spec!r}")
    merged = {**spec_options, **options}
    parsed: dict[str, Any] = {}
    allowed = allowed | {"flip"}  # every kind takes flip=yes|no
    for key, value in merged.items():
        if key not in allowed:
            raise ValueError(f"option {key!r} is not known for benchmark {kind!r}; allowed: "
                             f"{', '.join(sorted(allowed))}")
        parsed[key] = PARSERS[key](value, key)
    rng = np.random.default_rng(int(seed))
    args = (Path(path).expanduser(),) if needs_path else ()
    flip = parsed.pop("flip", kind in FLIP_KINDS)
    bench = loader(*args, rng=rng, **parsed)
    bench.name = spec.strip()
    bench.flip = bool(flip)
    log.info("benchmark %s: train %s, val %s, test %s, %d classes, %dx%dx%d", bench.name,
             len(bench.train) if bench.train is not None else "none", _describe(bench.val),
             _describe(bench.test), bench.num_classes, bench.in_channels, *bench.image_size)
    return bench.to(device)


def _describe(split: Split | None) -> str:
    if split is None:
        return "none"
    if isinstance(split, VerificationSplit):
        return f"{split.num_pairs} pairs of {split.images.shape[0]} images"
    return f"{len(split)} images"

