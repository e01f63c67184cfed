"""The split types a source produces: training images, closed-set and open-set splits, and the
benchmark that groups them (docs: README.md "Benchmarks").

A split is either closed-set classification (`ClassificationSplit`: the test classes were seen
in training, scored by top-1 accuracy) or open-set verification (`VerificationSplit`: pairs of
images whose identities never appear in training, as in LFW, scored by 10-fold accuracy).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Union

import numpy as np
import torch
from torch import Tensor

from lfsearch.data.lazy import LazyImages


@dataclass(frozen=True)
class PixelScale:
    """How stored uint8 pixels become network inputs: x -> x / divisor - shift, in float32.

    8-bit images use x / 127.5 - 1 (in [-1, 1]); scikit-learn's digits (0..16) x / 8 - 1.
    Splits keep uint8 pixels (4x less memory than float32) and normalise batch by batch on
    the device."""

    divisor: float = 127.5
    shift: float = 1.0

    def __call__(self, images: Tensor) -> Tensor:
        return images.float().div_(self.divisor).sub_(self.shift)


BYTE_PIXELS = PixelScale(127.5, 1.0)


def check_images(images: Tensor, pixels: PixelScale | None, field_name: str) -> None:
    """uint8 images are stored pixels and need `pixels`; float images are already normalised
    and take none. LazyImages (decoded when read, uint8) count as stored pixels."""
    if isinstance(images, LazyImages):
        if not isinstance(pixels, PixelScale):
            raise ValueError(f"{field_name}: LazyImages are uint8 and need pixels=PixelScale")
        return
    if not isinstance(images, Tensor) or images.dim() != 4:
        raise ValueError(f"{field_name} must be a tensor (N, C, H, W); got "
                         f"{getattr(images, 'shape', type(images))}")
    if images.dtype == torch.uint8:
        if not isinstance(pixels, PixelScale):
            raise ValueError(f"{field_name}: uint8 images need pixels=PixelScale(divisor, shift) "
                             "(x -> x / divisor - shift; 8-bit images: data.BYTE_PIXELS)")
    elif images.is_floating_point():
        if pixels is not None:
            raise ValueError(f"{field_name}: float images are already normalised; pixels must "
                             "be None")
    else:
        raise ValueError(f"{field_name} must be uint8 (stored pixels) or float (normalised); "
                         f"got {images.dtype}")


def normalise(images: Tensor, pixels: PixelScale | None) -> Tensor:
    """Network inputs from a slice of a split's images: `pixels(images)` for stored uint8
    pixels, the images themselves when they are float."""
    return images if pixels is None else pixels(images)


def as_tensor_images(images: np.ndarray | Tensor) -> Tensor:
    if isinstance(images, Tensor):
        return images
    return torch.from_numpy(np.ascontiguousarray(images))


@dataclass
class LabelledImages:
    """Images (N, C, H, W) with class labels (N,) long: uint8 pixels with their `pixels`
    scale (the in-memory default), or float images already normalised (pixels None)."""

    images: Tensor
    labels: Tensor
    pixels: PixelScale | None = None

    def __post_init__(self) -> None:
        check_images(self.images, self.pixels, "images")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"labels must have shape ({self.images.shape[0]},); "
                             f"got {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def device(self) -> torch.device:
        return self.images.device

    def normalise(self, images: Tensor) -> Tensor:
        """Float network inputs from `images`, a slice of self.images (see PixelScale)."""
        return normalise(images, self.pixels)

    def subset(self, index: Tensor | slice) -> "LabelledImages":
        """The same kind of split holding images[index] and labels[index]."""
        return type(self)(self.images[index], self.labels[index], self.pixels)

    def to(self, device: str | torch.device) -> "LabelledImages":
        return type(self)(self.images.to(device), self.labels.to(device), self.pixels)


@dataclass
class ClassificationSplit(LabelledImages):
    """Closed-set split: labels index the training classes; scored by top-1 accuracy."""

    protocol: ClassVar[str] = "classification"


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
    pixels: PixelScale | None = None

    protocol: ClassVar[str] = "verification"

    def __post_init__(self) -> None:
        check_images(self.images, self.pixels, "images")
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

    def normalise(self, images: Tensor) -> Tensor:
        """Float network inputs from `images`, a slice of self.images (see PixelScale)."""
        return normalise(images, self.pixels)

    def to(self, device: str | torch.device) -> "VerificationSplit":
        return VerificationSplit(self.images.to(device), self.pairs.to(device),
                                 self.same.to(device), self.folds.to(device),
                                 None if self.labels is None else self.labels.to(device),
                                 self.pixels)


Split = Union[ClassificationSplit, VerificationSplit]


@dataclass
class Benchmark:
    """A training split and validation/test splits with their protocols.

    `train` is None for evaluation-only benchmarks (lfw, bin). `val` may be None (e.g. val=0).
    `augment` is the train-time augmentation to pass to `batches` ("none", "flip",
    "crop=P", "crop=P,flip"). `class_names` name the training classes. `flip`: test-time
    flip augmentation, embeddings f(x) + f(mirror(x)) on the test splits (on by default for
    the face kinds, `data.FLIP_KINDS`; the spec option flip=yes|no sets it).
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
    flip: bool = False

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
                         list(self.class_names), self.flip)



@dataclass
class TemplateSplit:
    """IJB-style template verification (lfsearch.data.ijb, lfsearch.evaluation.ijb): images
    (N, C, H, W), each in template `templates[i]` and media `media[i]` with detector score
    `scores[i]`; `pairs` (P, 2) are template ids, `same` (P,) their is-same labels. `images`
    is a tensor or LazyImages (decoded slice by slice: what ijb:DIR gives)."""

    images: Tensor | LazyImages
    templates: Tensor
    media: Tensor
    scores: Tensor
    pairs: Tensor
    same: Tensor
    pixels: PixelScale | None = None

    protocol: ClassVar[str] = "templates"

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __post_init__(self) -> None:
        check_images(self.images, self.pixels, "images")
        n = self.images.shape[0]
        for name in ("templates", "media", "scores"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"{name} must have shape ({n},); got "
                                 f"{tuple(getattr(self, name).shape)}")
        if self.pairs.dim() != 2 or self.pairs.shape[1] != 2 \
                or self.same.shape != (self.pairs.shape[0],):
            raise ValueError(f"pairs must be (P, 2) and same (P,); got {tuple(self.pairs.shape)} "
                             f"and {tuple(self.same.shape)}")

    def normalise(self, images: Tensor) -> Tensor:
        return normalise(images, self.pixels)

    def to(self, device: str | torch.device) -> "TemplateSplit":
        return TemplateSplit(self.images.to(device), self.templates, self.media, self.scores,
                             self.pairs, self.same, self.pixels)


@dataclass
class IdentificationSplit:
    """1:N identification with distractors (lfsearch.data.ident,
    lfsearch.evaluation.identification): identity-labelled `images` (N, C, H, W) of which
    `gallery` (N,) bool marks the gallery, the rest being probes; `distractors` (M, C, H, W)
    images of other people, added to the gallery (the first `counts[k]` of them for
    rank1@d=counts[k]; they are in a seeded random order), a tensor or LazyImages (decoded
    slice by slice: what ident:PATH gives)."""

    images: Tensor
    labels: Tensor
    gallery: Tensor
    distractors: Tensor | LazyImages
    counts: tuple[int, ...] = ()
    pixels: PixelScale | None = None

    protocol: ClassVar[str] = "identification"

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __post_init__(self) -> None:
        check_images(self.images, self.pixels, "images")
        check_images(self.distractors, self.pixels, "distractors")
        n = self.images.shape[0]
        if self.labels.shape != (n,) or self.gallery.shape != (n,):
            raise ValueError(f"labels and gallery must have shape ({n},)")
        if self.distractors.shape[1:] != self.images.shape[1:]:
            raise ValueError(f"distractors must be images of shape {tuple(self.images.shape[1:])}"
                             f"; got {tuple(self.distractors.shape[1:])}")
        m = int(self.distractors.shape[0])
        if any(not 0 <= int(c) <= m for c in self.counts):
            raise ValueError(f"counts must lie in [0, {m}] (the distractors); got {self.counts}")

    def normalise(self, images: Tensor) -> Tensor:
        return normalise(images, self.pixels)

    def to(self, device: str | torch.device) -> "IdentificationSplit":
        return IdentificationSplit(self.images.to(device), self.labels.to(device),
                                   self.gallery.to(device), self.distractors.to(device),
                                   self.counts, self.pixels)
