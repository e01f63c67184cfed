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
bin:FILE           insightface verification .bin (pickle of encoded images and is-same flags;
                   LFW, CFP-FP, AgeDB-30, CALFW, CPLFW); evaluation only, as lfw.
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

Images are float32 (N, C, H, W) in [-1, 1] (8-bit x -> x/127.5 - 1; digits x/8 - 1), kept as
tensors on the device. Training labels index the training classes 0..num_classes-1.
`batches` shuffles with a torch.Generator and augments on the device; `Benchmark.augment` is
the benchmark's usual augmentation to pass to it: "none" for digits and MNIST, "crop=4,flip"
for CIFAR, "crop=P,flip" with P = min(H, W) // 16 for folder. Pickles (CIFAR, .bin) are read
by an unpickler that admits only containers, bytes and numpy arrays: a data file runs no code.
"""

from __future__ import annotations

import gzip
import io
import logging
import pickle
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

log = logging.getLogger(__name__)

N_FOLDS = 10
DEFAULT_PAIRS = 6000
MAX_DEFAULT_SIDE = 112
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".pgm", ".ppm", ".pbm", ".bmp", ".tif", ".tiff",
                    ".gif", ".webp")


# ---------------------------------------------------------------------------------------------
# Containers


def _check_images(images: Tensor, field_name: str) -> None:
    if not isinstance(images, Tensor) or images.dim() != 4 or not images.is_floating_point():
        raise ValueError(f"{field_name} must be a float tensor (N, C, H, W); got "
                         f"{getattr(images, 'shape', type(images))}")


@dataclass
class LabelledImages:
    """Images (N, C, H, W) float with class labels (N,) long."""

    images: Tensor
    labels: Tensor

    def __post_init__(self) -> None:
        _check_images(self.images, "images")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"labels must have shape ({self.images.shape[0]},); "
                             f"got {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def to(self, device: str | torch.device) -> "LabelledImages":
        return LabelledImages(self.images.to(device), self.labels.to(device))


@dataclass
class ClassificationSplit(LabelledImages):
    """Closed-set split: labels index the training classes; scored by top-1 accuracy."""

    protocol: ClassVar[str] = "classification"

    def to(self, device: str | torch.device) -> "ClassificationSplit":
        return ClassificationSplit(self.images.to(device), self.labels.to(device))


@dataclass
class VerificationSplit:
    """Open-set split: image pairs (P, 2) indexing `images`, is-same flags (P,), folds (P,).

    `labels` (N,) are identity ids of the images when known (used for rank-1 identification),
    else None. Identities here never occur in the benchmark's training split.
    """

    images: Tensor
    pairs: Tensor
    same: Tensor
    folds: Tensor
    labels: Tensor | None = None

    protocol: ClassVar[str] = "verification"

    def __post_init__(self) -> None:
        _check_images(self.images, "images")
        p = self.pairs.shape[0]
        if self.pairs.dim() != 2 or self.pairs.shape[1] != 2:
            raise ValueError(f"pairs must have shape (P, 2); got {tuple(self.pairs.shape)}")
        if self.same.shape != (p,) or self.folds.shape != (p,):
            raise ValueError(f"same and folds must have shape ({p},); got "
                             f"{tuple(self.same.shape)} and {tuple(self.folds.shape)}")
        if p and (int(self.pairs.min()) < 0 or int(self.pairs.max()) >= self.images.shape[0]):
            raise ValueError("pairs must index images 0..N-1")
        if self.labels is not None and self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"labels must have shape ({self.images.shape[0]},)")

    @property
    def num_pairs(self) -> int:
        return int(self.pairs.shape[0])

    def to(self, device: str | torch.device) -> "VerificationSplit":
        return VerificationSplit(self.images.to(device), self.pairs.to(device),
                                 self.same.to(device), self.folds.to(device),
                                 None if self.labels is None else self.labels.to(device))


Split = Union[ClassificationSplit, VerificationSplit]


@dataclass
class Benchmark:
    """A training split and validation/test splits with their protocols.

    `train` is None for evaluation-only benchmarks (lfw, bin). `val` may be None (e.g. val=0).
    `augment` is the train-time augmentation to pass to `batches` ("none", "flip",
    "crop=P", "crop=P,flip"). `class_names` name the training classes.
    """

    name: str
    train: LabelledImages | None
    val: Split | None
    test: Split | None
    num_classes: int
    in_channels: int
    image_size: tuple[int, int]
    default_model: str
    augment: str = "none"
    class_names: list[str] = field(default_factory=list)

    @property
    def evaluation_only(self) -> bool:
        return self.train is None

    def to(self, device: str | torch.device) -> "Benchmark":
        """The same benchmark with every tensor on `device` (val and test stay one object
        when they were one)."""
        moved: dict[int, Any] = {}

        def mv(x):
            if x is None:
                return None
            if id(x) not in moved:
                moved[id(x)] = x.to(device)
            return moved[id(x)]

        return Benchmark(self.name, mv(self.train), mv(self.val), mv(self.test), self.num_classes,
                         self.in_channels, self.image_size, self.default_model, self.augment,
                         list(self.class_names))


# ---------------------------------------------------------------------------------------------
# Batching and augmentation on the device


def parse_augment(augment: str | None) -> tuple[int, bool]:
    """'none' | 'flip' | 'crop=P' | 'crop=P,flip' -> (padding P, flip)."""
    if augment is None:
        return 0, False
    text = augment.strip().lower()
    if text in ("", "none"):
        return 0, False
    pad, flip = 0, False
    for token in text.replace("+", ",").split(","):
        token = token.strip()
        if token == "flip":
            flip = True
        elif token.startswith("crop="):
            try:
                pad = int(token[5:])
            except ValueError:
                pad = -1
            if pad < 0:
                raise ValueError(f"augment {augment!r}: crop=P needs a padding P >= 0")
        else:
            raise ValueError(f"augment {augment!r} is not known; allowed: 'none', 'flip', "
                             "'crop=P', 'crop=P,flip' (P = padding in pixels)")
    return pad, flip


def _draw(generator: torch.Generator, fn: Callable[..., Tensor], *args, device,
          **kwargs) -> Tensor:
    """Draw on the generator's device (so any generator works), then move to the data."""
    return fn(*args, generator=generator, device=generator.device, **kwargs).to(device)


def augment_batch(images: Tensor, *, generator: torch.Generator, augment: str | None) -> Tensor:
    """Random crop of the zero-padded image (padding P, same size out) and horizontal flip
    with probability 1/2, per image, on the images' device."""
    pad, flip = parse_augment(augment)
    n, _, h, w = images.shape
    out = images
    if pad > 0:
        padded = F.pad(images, (pad, pad, pad, pad))
        dy = _draw(generator, torch.randint, 0, 2 * pad + 1, (n,), device=images.device)
        dx = _draw(generator, torch.randint, 0, 2 * pad + 1, (n,), device=images.device)
        rows = (dy[:, None] + torch.arange(h, device=images.device))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=images.device))[:, None, None, :]
        batch = torch.arange(n, device=images.device)[:, None, None, None]
        chans = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
        out = padded[batch, chans, rows, cols]
    if flip:
        mask = _draw(generator, torch.rand, (n,), device=images.device) < 0.5
        out = torch.where(mask[:, None, None, None], out.flip(-1), out)
    return out


def batches(train: LabelledImages, batch_size: int, *, generator: torch.Generator,
            augment: str | None = "none",
            drop_last: bool = False) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield (images, labels) batches on the data's device: a permutation drawn from
    `generator`, then `augment_batch` (see `parse_augment`; pass `Benchmark.augment`)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    parse_augment(augment)
    n = len(train)
    device = train.images.device
    order = _draw(generator, torch.randperm, n, device=device)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        images = train.images[idx]
        if augment not in (None, "none", ""):
            images = augment_batch(images, generator=generator, augment=augment)
        yield images, train.labels[idx]


# ---------------------------------------------------------------------------------------------
# Pairs


def make_pairs(labels: np.ndarray, n_pairs: int, rng: np.random.Generator,
               n_folds: int = N_FOLDS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Balanced verification pairs: n_pairs/2 distinct same-identity and as many
    different-identity pairs (fewer when the labels allow fewer), drawn uniformly from all
    possible pairs by `rng`. Each of the n_folds folds gets an equal share of both kinds,
    ordered as LFW: fold by fold, same pairs first. Returns (pairs (P,2), same (P,), folds (P,))."""
    labels = np.asarray(labels)
    n = labels.shape[0]
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    total_same = int((counts * (counts - 1) // 2).sum())
    total_diff = n * (n - 1) // 2 - total_same
    half = min(int(n_pairs) // 2, total_same, total_diff)
    if half < 1:
        raise ValueError(f"cannot make verification pairs from {n} images of {len(counts)} "
                         "identities: need an identity with 2 or more images and 2 identities")
    same_pairs = _sample_pairs(inverse, counts, half, total_same, rng, same=True)
    diff_pairs = _sample_pairs(inverse, counts, half, total_diff, rng, same=False)
    k = max(1, min(n_folds, half))
    fold_of = np.arange(half) * k // half
    pairs = np.concatenate([same_pairs, diff_pairs])
    same = np.concatenate([np.ones(half, bool), np.zeros(half, bool)])
    folds = np.concatenate([fold_of, fold_of])
    order = np.lexsort((~same, folds))  # by fold, same pairs first
    return pairs[order], same[order], folds[order]


def _sample_pairs(inverse: np.ndarray, counts: np.ndarray, want: int, total: int,
                  rng: np.random.Generator, *, same: bool) -> np.ndarray:
    n = inverse.shape[0]
    candidates = total if same else n * (n - 1) // 2
    if candidates <= 4_000_000:  # enumerate every pair, then choose
        if same:
            members = [np.flatnonzero(inverse == c) for c in range(len(counts))]
            parts = []
            for m in members:
                if len(m) > 1:
                    a, b = np.triu_indices(len(m), 1)
                    parts.append(np.stack([m[a], m[b]], 1))
            every = np.concatenate(parts)
        else:
            a, b = np.triu_indices(n, 1)
            keep = inverse[a] != inverse[b]
            every = np.stack([a[keep], b[keep]], 1)
        chosen = rng.choice(every.shape[0], size=want, replace=False)
        return every[chosen]
    # rejection sampling without repeats (total is large, so repeats are rare)
    order = np.argsort(inverse, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    weights = counts * (counts - 1) / 2.0
    weights = weights / weights.sum()
    keys: list[np.ndarray] = []
    seen: set[int] = set()
    got = 0
    while got < want:
        m = 2 * (want - got) + 16
        if same:
            c = rng.choice(len(counts), size=m, p=weights)
            i = rng.integers(0, counts[c])
            j = rng.integers(0, counts[c] - 1)
            j = j + (j >= i)
            a, b = order[starts[c] + i], order[starts[c] + j]
        else:
            a, b = rng.integers(0, n, m), rng.integers(0, n, m)
            ok = inverse[a] != inverse[b]
            a, b = a[ok], b[ok]
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        for key in (lo.astype(np.int64) * n + hi).tolist():
            if key not in seen and got < want:
                seen.add(key)
                keys.append(key)
                got += 1
    flat = np.asarray(keys, dtype=np.int64)
    return np.stack([flat // n, flat % n], 1)


def _verification_split(images: np.ndarray | Tensor, labels: np.ndarray, n_pairs: int,
                        rng: np.random.Generator, what: str) -> VerificationSplit:
    try:
        pairs, same, folds = make_pairs(labels, n_pairs, rng)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from None
    return VerificationSplit(_as_tensor_images(images), torch.from_numpy(pairs).long(),
                             torch.from_numpy(same), torch.from_numpy(folds).long(),
                             torch.from_numpy(np.asarray(labels)).long())


# ---------------------------------------------------------------------------------------------
# Spec parsing and options

_LAYOUTS = {
    "mnist": ("mnist:DIR expects the four MNIST IDX files, gzipped or not, in DIR:\n"
              "  DIR/train-images-idx3-ubyte[.gz]\n  DIR/train-labels-idx1-ubyte[.gz]\n"
              "  DIR/t10k-images-idx3-ubyte[.gz]\n  DIR/t10k-labels-idx1-ubyte[.gz]"),
    "cifar10": ("cifar10:DIR expects the CIFAR-10 'python version' pickles in DIR or "
                "DIR/cifar-10-batches-py:\n  data_batch_1 .. data_batch_5, test_batch\n"
                "  (each a pickled dict with b'data' uint8 (N, 3072) and b'labels')"),
    "cifar100": ("cifar100:DIR expects the CIFAR-100 'python version' pickles in DIR or "
                 "DIR/cifar-100-python:\n  train, test\n"
                 "  (each a pickled dict with b'data' uint8 (N, 3072) and b'fine_labels')"),
    "folder": ("folder:DIR expects one sub-folder per identity holding its images:\n"
               "  DIR/<identity>/<image>.jpg|.png|.pgm|...  (2 or more identities)"),
    "lfw": ("lfw:DIR expects the LFW layout:\n  DIR/pairs.txt  (optional first line 'FOLDS N' or "
            "'N'; then lines 'name<TAB>n1<TAB>n2' (same) or 'name1<TAB>n1<TAB>name2<TAB>n2' "
            "(different))\n  DIR/<name>/<name>_0001.jpg ... (also accepted under DIR/lfw/)"),
    "bin": ("bin:FILE expects an insightface verification file: a pickle of (images, issame) "
            "where images is a list of 2P encoded images (JPEG/PNG bytes) and issame a list "
            "of P booleans; pair i is images 2i and 2i+1"),
}


def _parse_size(value: Any, name: str) -> tuple[int, int]:
    if isinstance(value, (tuple, list)) and len(value) == 2:
        h, w = value
    elif isinstance(value, int):
        h = w = value
    else:
        text = str(value).lower().strip()
        parts = text.split("x")
        try:
            h, w = (int(parts[0]), int(parts[0])) if len(parts) == 1 else (int(parts[0]),
                                                                             int(parts[1]))
        except ValueError:
            h = w = -1
        if len(parts) > 2:
            h = -1
    if not (isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0):
        raise ValueError(f"option {name}={value!r}: expected H or HxW with positive integers, "
                         "e.g. 112x96")
    return int(h), int(w)


def _parse_channels(value: Any, name: str) -> int:
    try:
        c = int(value)
    except (TypeError, ValueError):
        c = 0
    if c not in (1, 3):
        raise ValueError(f"option {name}={value!r}: allowed values 1 (grey) or 3 (RGB)")
    return c


def _parse_fraction(value: Any, name: str) -> float:
    try:
        f = float(value)
    except (TypeError, ValueError):
        f = -1.0
    if not 0.0 <= f < 1.0:
        raise ValueError(f"option {name}={value!r}: expected a fraction in [0, 1)")
    return f


def _parse_count(minimum: int) -> Callable[[Any, str], int]:
    def parse(value: Any, name: str) -> int:
        try:
            v = int(value)
            ok = v >= minimum and float(value) == v
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"option {name}={value!r}: expected an integer >= {minimum}")
        return v
    return parse


def _parse_text(value: Any, name: str) -> str:
    return str(value)


_PARSERS: dict[str, Callable[[Any, str], Any]] = {
    "size": _parse_size, "crop": _parse_size, "channels": _parse_channels,
    "val": _parse_fraction, "test": _parse_fraction, "pairs": _parse_count(2),
    "train_classes": _parse_count(1), "pairs_file": _parse_text,
}


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
        raise ValueError(f"benchmark {kind!r} needs a path: write {kind}:DIR"
                         + ("" if kind != "bin" else " (bin:FILE)"))
    if not needs_path and path:
        raise ValueError(f"benchmark {kind!r} takes no path; got {spec!r}")
    merged = {**spec_options, **options}
    parsed: dict[str, Any] = {}
    for key, value in merged.items():
        if key not in allowed:
            raise ValueError(f"option {key!r} is not known for benchmark {kind!r}; allowed: "
                             f"{', '.join(sorted(allowed)) or 'none'}")
        parsed[key] = _PARSERS[key](value, key)
    rng = np.random.default_rng(int(seed))
    args = (Path(path).expanduser(),) if needs_path else ()
    bench = loader(*args, rng=rng, **parsed)
    bench.name = spec.strip()
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


# ---------------------------------------------------------------------------------------------
# Helpers


def _as_tensor_images(images: np.ndarray | Tensor) -> Tensor:
    if isinstance(images, Tensor):
        return images
    return torch.from_numpy(np.ascontiguousarray(images))


def _uint8_to_float(images: np.ndarray) -> Tensor:
    """uint8 (N, C, H, W) -> float32 in [-1, 1]: x / 127.5 - 1."""
    return torch.from_numpy(np.ascontiguousarray(images)).float().div_(127.5).sub_(1.0)


def _stratified_split(labels: np.ndarray, fractions: list[float], rng: np.random.Generator
                      ) -> list[np.ndarray]:
    """Split indices per class into len(fractions)+1 parts: the given fractions, then the rest
    (first). Returns [rest, part_1, ...], each sorted."""
    parts: list[list[np.ndarray]] = [[] for _ in range(len(fractions) + 1)]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        start = 0
        for k, f in enumerate(fractions):
            take = int(round(f * len(idx)))
            parts[k + 1].append(idx[start:start + take])
            start += take
        parts[0].append(idx[start:])
    return [np.sort(np.concatenate(p)) if p else np.zeros(0, np.int64) for p in parts]


def _closed_set(name: str, train_x: Tensor, train_y: np.ndarray, test_x: Tensor,
                test_y: np.ndarray, *, val: float, rng: np.random.Generator, num_classes: int,
                model: str, augment: str, class_names: list[str]) -> Benchmark:
    train_idx, val_idx = _stratified_split(train_y, [val], rng)
    t_idx, v_idx = torch.from_numpy(train_idx), torch.from_numpy(val_idx)
    labels = torch.from_numpy(train_y).long()
    val_split = (ClassificationSplit(train_x[v_idx], labels[v_idx]) if len(val_idx) else None)
    return Benchmark(
        name, LabelledImages(train_x[t_idx], labels[t_idx]), val_split,
        ClassificationSplit(test_x, torch.from_numpy(test_y).long()), num_classes,
        int(train_x.shape[1]), (int(train_x.shape[2]), int(train_x.shape[3])), model, augment,
        class_names)


def _open_set(name: str, train_x: Tensor, train_y: np.ndarray, test_x: Tensor, test_y: np.ndarray,
              *, train_classes: int, num_classes: int, pairs: int, rng: np.random.Generator,
              model: str, augment: str, class_names: list[str]) -> Benchmark:
    """Train on classes < train_classes of the train file; val pairs among the train file's
    other classes, test pairs among the test file's other classes."""
    if not 2 <= train_classes <= num_classes - 2:
        raise ValueError(f"option train_classes={train_classes}: must be in 2..{num_classes - 2} "
                         f"so that 2 or more classes remain for verification")
    tr = np.flatnonzero(train_y < train_classes)
    va = np.flatnonzero(train_y >= train_classes)
    te = np.flatnonzero(test_y >= train_classes)
    val_split = _verification_split(train_x[torch.from_numpy(va)], train_y[va], pairs, rng,
                                    f"{name} validation pairs (train file, classes >= "
                                    f"{train_classes})")
    test_split = _verification_split(test_x[torch.from_numpy(te)], test_y[te], pairs, rng,
                                     f"{name} test pairs (test file, classes >= "
                                     f"{train_classes})")
    return Benchmark(
        name, LabelledImages(train_x[torch.from_numpy(tr)], torch.from_numpy(train_y[tr]).long()),
        val_split, test_split, train_classes, int(train_x.shape[1]),
        (int(train_x.shape[2]), int(train_x.shape[3])), model, augment,
        class_names[:train_classes])


# ---------------------------------------------------------------------------------------------
# digits (scikit-learn, bundled)


def _digits_arrays() -> tuple[Tensor, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = torch.from_numpy(d.images.astype(np.float32)).div_(8.0).sub_(1.0)[:, None]
    return images, d.target.astype(np.int64)


def _load_digits(*, rng: np.random.Generator, pairs: int = DEFAULT_PAIRS,
                 train_classes: int = 6) -> Benchmark:
    images, labels = _digits_arrays()
    if not 2 <= train_classes <= 8:
        raise ValueError(f"option train_classes={train_classes}: must be in 2..8")
    tr = np.flatnonzero(labels < train_classes)
    rest = np.flatnonzero(labels >= train_classes)
    test_local, val_local = _stratified_split(labels[rest], [0.5], rng)
    va, te = rest[val_local], rest[test_local]
    val_split = _verification_split(images[torch.from_numpy(va)], labels[va], pairs, rng,
                                    "digits validation pairs")
    test_split = _verification_split(images[torch.from_numpy(te)], labels[te], pairs, rng,
                                     "digits test pairs")
    return Benchmark("digits", LabelledImages(images[torch.from_numpy(tr)],
                                              torch.from_numpy(labels[tr])),
                     val_split, test_split, train_classes, 1, (8, 8), "digits_net", "none",
                     [str(c) for c in range(train_classes)])


def _load_digits_closed(*, rng: np.random.Generator, val: float = 0.2,
                        test: float = 0.2) -> Benchmark:
    images, labels = _digits_arrays()
    if val + test >= 1.0:
        raise ValueError(f"options val={val} and test={test} must sum to less than 1")
    tr, va, te = _stratified_split(labels, [val, test], rng)
    t = torch.from_numpy
    lab = t(labels)
    return Benchmark("digits-closed", LabelledImages(images[t(tr)], lab[t(tr)]),
                     ClassificationSplit(images[t(va)], lab[t(va)]) if len(va) else None,
                     ClassificationSplit(images[t(te)], lab[t(te)]), 10, 1, (8, 8),
                     "digits_net", "none", [str(c) for c in range(10)])


# ---------------------------------------------------------------------------------------------
# MNIST (IDX)

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
        raise ValueError(f"cannot read IDX file {path}: {exc}\n{_LAYOUTS['mnist']}") from exc
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES or raw[3] == 0:
        raise ValueError(f"{path} is not an IDX file (bad magic number {raw[:4].hex()})\n"
                         f"{_LAYOUTS['mnist']}")
    dtype, ndim = _IDX_TYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: IDX header is truncated\n{_LAYOUTS['mnist']}")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(f"{path}: IDX dimensions {dims} need {expected} bytes of data; the file "
                         f"holds {len(raw) - header}\n{_LAYOUTS['mnist']}")
    return np.frombuffer(raw, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _find_idx(root: Path, split: str, kind: str) -> Path:
    stem = {"images": "images-idx3-ubyte", "labels": "labels-idx1-ubyte"}[kind]
    names = [f"{split}-{stem}", f"{split}-{stem.replace('-idx', '.idx')}"]
    for name in names:
        for candidate in (root / name, root / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(f"{root}: no {split} {kind} file ({names[0]}[.gz])\n"
                            f"{_LAYOUTS['mnist']}")


def _check_dir(root: Path, kind: str) -> None:
    if not root.is_dir():
        raise FileNotFoundError(f"{kind}: directory {root} does not exist\n{_LAYOUTS[kind]}")


def _mnist_arrays(root: Path) -> tuple[Tensor, np.ndarray, Tensor, np.ndarray]:
    _check_dir(root, "mnist")
    out = []
    for split in ("train", "t10k"):
        ipath, lpath = _find_idx(root, split, "images"), _find_idx(root, split, "labels")
        images, labels = read_idx(ipath), read_idx(lpath)
        if images.ndim != 3 or images.dtype != np.uint8:
            raise ValueError(f"{ipath}: expected uint8 images (N, H, W); got {images.dtype} "
                             f"{images.shape}\n{_LAYOUTS['mnist']}")
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(f"{lpath}: expected {images.shape[0]} labels (one per image of "
                             f"{ipath.name}); got shape {labels.shape}\n{_LAYOUTS['mnist']}")
        if labels.size and (labels.min() < 0 or labels.max() > 9):
            raise ValueError(f"{lpath}: labels must be digits 0..9")
        out += [_uint8_to_float(images[:, None]), labels.astype(np.int64)]
    return out[0], out[1], out[2], out[3]


def _load_mnist(root: Path, *, rng: np.random.Generator, val: float = 0.1) -> Benchmark:
    tx, ty, sx, sy = _mnist_arrays(root)
    return _closed_set("mnist", tx, ty, sx, sy, val=val, rng=rng, num_classes=10,
                       model="lsoftmax_mnist", augment="none",
                       class_names=[str(c) for c in range(10)])


def _load_mnist_open(root: Path, *, rng: np.random.Generator, pairs: int = DEFAULT_PAIRS,
                     train_classes: int = 6) -> Benchmark:
    tx, ty, sx, sy = _mnist_arrays(root)
    return _open_set("mnist-open", tx, ty, sx, sy, train_classes=train_classes, num_classes=10,
                     pairs=pairs, rng=rng, model="lsoftmax_mnist", augment="none",
                     class_names=[str(c) for c in range(10)])


# ---------------------------------------------------------------------------------------------
# CIFAR (python-version pickles)


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles only plain containers and numpy arrays: a data file cannot run code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
        ("builtins", "bytearray"), ("__builtin__", "bytearray"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only lists, dicts, "
                                     "bytes and numpy arrays are allowed)")


def _load_pickle(path: Path, layout: str) -> Any:
    try:
        with open(path, "rb") as f:
            return _RestrictedUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a malformed file
        raise ValueError(f"cannot read pickle {path}: {exc}\n{layout}") from exc


def _get(d: Any, key: str, path: Path, layout: str) -> Any:
    if isinstance(d, dict):
        for k in (key, key.encode()):
            if k in d:
                return d[k]
    raise ValueError(f"{path}: expected a dict with key {key!r}\n{layout}")


def _cifar_file(path: Path, label_key: str, layout: str, num_classes: int
                ) -> tuple[np.ndarray, np.ndarray]:
    d = _load_pickle(path, layout)
    data = np.asarray(_get(d, "data", path, layout))
    labels = np.asarray(_get(d, label_key, path, layout)).astype(np.int64)
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
    layout = _LAYOUTS[which]
    _check_dir(root, which)
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
            meta = _get(_load_pickle(root / meta_name, layout), meta_key, root / meta_name, layout)
            if len(meta) == n:
                names = [m.decode() if isinstance(m, bytes) else str(m) for m in meta]
        except ValueError:
            log.warning("ignoring unreadable %s", root / meta_name)
    return _uint8_to_float(train_x), train_y, _uint8_to_float(test_x), test_y, names


def _cifar_loader(which: str, open_set: bool) -> Callable[..., Benchmark]:
    n = 10 if which == "cifar10" else 100
    model = f"lsoftmax_{which}"

    def closed(root: Path, *, rng: np.random.Generator, val: float = 0.1) -> Benchmark:
        tx, ty, sx, sy, names = _cifar_arrays(root, which)
        return _closed_set(which, tx, ty, sx, sy, val=val, rng=rng, num_classes=n, model=model,
                           augment="crop=4,flip", class_names=names)

    def opened(root: Path, *, rng: np.random.Generator, pairs: int = DEFAULT_PAIRS,
               train_classes: int = 6 if n == 10 else 80) -> Benchmark:
        tx, ty, sx, sy, names = _cifar_arrays(root, which)
        return _open_set(f"{which}-open", tx, ty, sx, sy, train_classes=train_classes,
                         num_classes=n, pairs=pairs, rng=rng, model=model, augment="crop=4,flip",
                         class_names=names)

    return opened if open_set else closed


# ---------------------------------------------------------------------------------------------
# Image files (folder, lfw, bin)

_GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F", "P"}


def _open_image(source: Path | bytes, label: str):
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source)
        return img
    except FileNotFoundError:
        raise FileNotFoundError(f"image {label} does not exist") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ValueError(f"cannot read image {label}: {exc}") from exc


def _is_grey(img) -> bool:
    if img.mode == "P":
        palette = img.getpalette() or []
        rgb = np.asarray(palette[: 3 * 256]).reshape(-1, 3)
        return bool((rgb == rgb[:, :1]).all())
    return img.mode in _GREY_MODES


def _decode_images(sources: list[Path | bytes], labels: list[str], *,
                   size: tuple[int, int] | None,
                   crop: tuple[int, int] | None, channels: int | None,
                   default_channels: int | None = None) -> tuple[Tensor, int, tuple[int, int]]:
    """Decode, centre-crop, convert and resize every image into float32 (N, C, H, W) in [-1, 1].

    Default size: the common size when all images share one no larger than 112x112, else
    112x112. Default channels: 1 when every image is grey, else 3 (or `default_channels`)."""
    from PIL import Image

    headers = []
    for src, label in zip(sources, labels):
        img = _open_image(src, label)
        headers.append((img.size, _is_grey(img)))
        img.close()
    if channels is None:
        channels = default_channels or (1 if all(g for _, g in headers) else 3)
    if size is None:
        sizes = {crop[::-1] if crop else s for s, _ in headers}
        if len(sizes) == 1:
            w, h = next(iter(sizes))
            size = (h, w) if max(h, w) <= MAX_DEFAULT_SIDE else (MAX_DEFAULT_SIDE, MAX_DEFAULT_SIDE)
        else:
            size = (MAX_DEFAULT_SIDE, MAX_DEFAULT_SIDE)
    h, w = size
    out = np.empty((len(sources), h, w, channels), np.uint8)
    for i, (src, label) in enumerate(zip(sources, labels)):
        img = _open_image(src, label)
        try:
            img.load()
            if crop is not None:
                ch, cw = crop
                left, top = (img.width - cw) // 2, (img.height - ch) // 2
                img = img.crop((left, top, left + cw, top + ch))
            img = img.convert("L" if channels == 1 else "RGB")
            if img.size != (w, h):
                img = img.resize((w, h), Image.BILINEAR)
            arr = np.asarray(img, dtype=np.uint8)
        except (OSError, ValueError, SyntaxError) as exc:
            raise ValueError(f"cannot read image {label}: {exc}") from exc
        out[i] = arr.reshape(h, w, channels)
    return _uint8_to_float(out.transpose(0, 3, 1, 2)), channels, (h, w)


def _folder_items(root: Path) -> tuple[list[str], list[list[Path]]]:
    _check_dir(root, "folder")
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
                                f"{root}\n{_LAYOUTS['folder']}")
    return names, files


def _face_augment(size: tuple[int, int]) -> str:
    return f"crop={max(1, min(size) // 16)},flip"


def _load_folder(root: Path, *, rng: np.random.Generator, size=None, crop=None, channels=None,
                 val: float = 0.2, test: float = 0.2, pairs: int = DEFAULT_PAIRS) -> Benchmark:
    names, files = _folder_items(root)
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
    images, c, hw = _decode_images(sources, [str(s) for s in sources], size=size, crop=crop,
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
        val_split = _verification_split(vx, vy, pairs, rng, "folder validation identities")
    sx, sy = subset(groups["test"])
    test_split = _verification_split(sx, sy, pairs, rng, "folder test identities")
    return Benchmark("folder", LabelledImages(tx, torch.from_numpy(remap[ty]).long()), val_split,
                     test_split, len(groups["train"]), c, hw, "face_cnn", _face_augment(hw),
                     [names[i] for i in groups["train"]])


def _load_folder_closed(root: Path, *, rng: np.random.Generator, size=None, crop=None,
                        channels=None, val: float = 0.2, test: float = 0.2) -> Benchmark:
    names, files = _folder_items(root)
    if val + test >= 1.0:
        raise ValueError(f"options val={val} and test={test} must sum to less than 1")
    sources = [f for ids in files for f in ids]
    identity = np.concatenate([np.full(len(f), i) for i, f in enumerate(files)])
    images, c, hw = _decode_images(sources, [str(s) for s in sources], size=size, crop=crop,
                                   channels=channels)
    tr, va, te = _stratified_split(identity, [val, test], rng)
    t = torch.from_numpy
    lab = t(identity).long()
    return Benchmark("folder-closed", LabelledImages(images[t(tr)], lab[t(tr)]),
                     ClassificationSplit(images[t(va)], lab[t(va)]) if len(va) else None,
                     ClassificationSplit(images[t(te)], lab[t(te)]), len(names), c, hw,
                     "face_cnn", _face_augment(hw), names)


def read_pairs_file(path: Path) -> tuple[list[tuple[str, int, str, int]], np.ndarray]:
    """Parse an LFW pairs file: optional header 'FOLDS N' (FOLDS sets of N same then N different
    pairs) or 'N'; lines 'name n1 n2' (same) or 'name1 n1 name2 n2' (different).
    Returns the pairs and their folds: from the header's sets when it has FOLDS >= 2, else
    10 contiguous folds of each kind in file order."""
    layout = _LAYOUTS["lfw"]
    if not path.is_file():
        raise FileNotFoundError(f"lfw: pairs file {path} does not exist\n{layout}")
    lines = [(i + 1, ln.split()) for i, ln in enumerate(path.read_text().splitlines())
             if ln.strip()]
    if not lines:
        raise ValueError(f"{path} is empty\n{layout}")
    sets, per_set = 1, None
    if len(lines[0][1]) in (1, 2) and all(t.isdigit() for t in lines[0][1]):
        head = [int(t) for t in lines[0][1]]
        sets, per_set = (head[0], head[1]) if len(head) == 2 else (1, head[0])
        lines = lines[1:]
    pairs: list[tuple[str, int, str, int]] = []
    for lineno, f in lines:
        try:
            if len(f) == 3:
                pairs.append((f[0], int(f[1]), f[0], int(f[2])))
            elif len(f) == 4:
                pairs.append((f[0], int(f[1]), f[2], int(f[3])))
            else:
                raise ValueError
        except ValueError:
            raise ValueError(f"{path} line {lineno}: {' '.join(f)!r} is neither 'name n1 n2' nor "
                             f"'name1 n1 name2 n2'\n{layout}") from None
        if pairs[-1][1] < 1 or pairs[-1][3] < 1:
            raise ValueError(f"{path} line {lineno}: image numbers start at 1")
    same = np.array([a == c for a, _, c, _ in pairs], bool)
    if per_set is not None and len(pairs) != 2 * sets * per_set:
        raise ValueError(f"{path}: header says {sets} set(s) of {per_set} same + {per_set} "
                         f"different pairs = {2 * sets * per_set} lines; found {len(pairs)}\n"
                         f"{layout}")
    if per_set is not None and sets >= 2:
        folds = np.arange(len(pairs)) // (2 * per_set)
    else:
        folds = np.zeros(len(pairs), np.int64)
        for kind in (True, False):
            idx = np.flatnonzero(same == kind)
            k = max(1, min(N_FOLDS, len(idx)))
            folds[idx] = np.arange(len(idx)) * k // max(len(idx), 1)
    return pairs, folds.astype(np.int64)


def _load_lfw(root: Path, *, rng: np.random.Generator, size=None, crop=None, channels=None,
              pairs_file: str = "pairs.txt") -> Benchmark:
    _check_dir(root, "lfw")
    entries, folds = read_pairs_file(root / pairs_file)
    first = entries[0][0]
    image_root = next((r for r in (root, root / "lfw", root / "lfw-deepfunneled",
                                   root / "lfw_funneled", root / "lfw-funneled")
                       if (r / first).is_dir()), root)
    index: dict[tuple[str, int], int] = {}
    for a, na, b, nb in entries:
        for key in ((a, na), (b, nb)):
            index.setdefault(key, len(index))
    sources = []
    for name, num in index:
        path = image_root / name / f"{name}_{num:04d}.jpg"
        if not path.is_file():
            raise FileNotFoundError(f"lfw: image {path} (named in {root / pairs_file}) does not "
                                    f"exist\n{_LAYOUTS['lfw']}")
        sources.append(path)
    images, c, hw = _decode_images(sources, [str(s) for s in sources], size=size, crop=crop,
                                   channels=channels, default_channels=3)
    pairs = torch.tensor([[index[(a, na)], index[(b, nb)]] for a, na, b, nb in entries]).long()
    same = torch.tensor([a == b for a, _, b, _ in entries])
    split = VerificationSplit(images, pairs, same, torch.from_numpy(folds))
    return Benchmark("lfw", None, split, split, 0, c, hw, "face_cnn", "none")


def _load_bin(path: Path, *, rng: np.random.Generator, size=None, crop=None,
              channels=None) -> Benchmark:
    layout = _LAYOUTS["bin"]
    if not path.is_file():
        raise FileNotFoundError(f"bin: file {path} does not exist\n{layout}")
    obj = _load_pickle(path, layout)
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
    images, c, hw = _decode_images(sources, labels, size=size, crop=crop, channels=channels,
                                   default_channels=3)
    p = len(issame)
    pairs = torch.arange(2 * p).view(p, 2)
    k = min(N_FOLDS, p)
    folds = torch.arange(p) * k // p  # contiguous folds, as insightface's KFold(10, shuffle=False)
    split = VerificationSplit(images, pairs, torch.from_numpy(issame), folds)
    return Benchmark(f"bin:{path.name}", None, split, split, 0, c, hw, "face_cnn", "none")


# ---------------------------------------------------------------------------------------------
# Registry: kind -> (loader, needs a path, allowed options)

_IMAGE_OPTIONS = {"size", "crop", "channels"}
_KINDS: dict[str, tuple[Callable[..., Benchmark], bool, set[str]]] = {
    "digits": (_load_digits, False, {"pairs", "train_classes"}),
    "digits-closed": (_load_digits_closed, False, {"val", "test"}),
    "mnist": (_load_mnist, True, {"val"}),
    "mnist-open": (_load_mnist_open, True, {"pairs", "train_classes"}),
    "cifar10": (_cifar_loader("cifar10", False), True, {"val"}),
    "cifar10-open": (_cifar_loader("cifar10", True), True, {"pairs", "train_classes"}),
    "cifar100": (_cifar_loader("cifar100", False), True, {"val"}),
    "cifar100-open": (_cifar_loader("cifar100", True), True, {"pairs", "train_classes"}),
    "folder": (_load_folder, True, _IMAGE_OPTIONS | {"val", "test", "pairs"}),
    "folder-closed": (_load_folder_closed, True, _IMAGE_OPTIONS | {"val", "test"}),
    "lfw": (_load_lfw, True, _IMAGE_OPTIONS | {"pairs_file"}),
    "bin": (_load_bin, True, _IMAGE_OPTIONS),
}
