"""Decoding image files and encoded bytes with Pillow: centre crop, grey or RGB, bilinear resize
(used by folder, lfw and bin). Pixels stay uint8 (splits.BYTE_PIXELS maps them to [-1, 1])."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from lfsearch.data import alignment

MAX_DEFAULT_SIDE = 112
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".pgm", ".ppm", ".pbm", ".bmp", ".tif", ".tiff",
                    ".gif", ".webp")

_GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F", "P"}


def open_image(source: Path | bytes, label: str):
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source)
        return img
    except FileNotFoundError:
        raise FileNotFoundError(f"image {label} does not exist") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError,
            Image.DecompressionBombError) as exc:
        raise ValueError(f"cannot read image {label}: {exc}") from exc


def verify(source: Path | bytes, label: str) -> tuple[tuple[int, int], bool]:
    """Decode the whole image (an empty, corrupt or truncated file is a one-line ValueError
    naming it); returns `probe`'s ((width, height), is grey)."""
    from PIL import Image

    img = open_image(source, label)
    try:
        img.load()
        return img.size, is_grey(img)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"cannot read image {label}: {exc}") from None
    finally:
        img.close()


def is_grey(img) -> bool:
    if img.mode == "P":
        palette = img.getpalette() or []
        rgb = np.asarray(palette[: 3 * 256]).reshape(-1, 3)
        return bool((rgb == rgb[:, :1]).all())
    return img.mode in _GREY_MODES


def probe(source: Path | bytes, label: str) -> tuple[tuple[int, int], bool]:
    """((width, height), is grey) from the image's header."""
    img = open_image(source, label)
    try:
        return img.size, is_grey(img)
    finally:
        img.close()


def choose_geometry(headers: list[tuple[tuple[int, int], bool]], *, size: tuple[int, int] | None,
                    crop: tuple[int, int] | None, channels: int | None,
                    default_channels: int | None = None) -> tuple[tuple[int, int], int]:
    """The (H, W) and channels images are decoded to, from their headers when not given.

    Default size: the common size when all images share one no larger than 112x112, else
    112x112. Default channels: 1 when every image is grey, else 3 (or `default_channels`)."""
    if crop is not None:
        small = [s for s, _ in headers if crop[0] > s[1] or crop[1] > s[0]]
        if small:
            raise ValueError(f"option crop={crop[0]}x{crop[1]} is larger than an image of "
                             f"{small[0][1]}x{small[0][0]} (HxW); allowed: a crop within every "
                             "image")
    if channels is None:
        channels = default_channels or (1 if all(g for _, g in headers) else 3)
    if size is None:
        sizes = {crop[::-1] if crop else s for s, _ in headers}
        if len(sizes) == 1:
            w, h = next(iter(sizes))
            size = (h, w) if max(h, w) <= MAX_DEFAULT_SIDE else (MAX_DEFAULT_SIDE, MAX_DEFAULT_SIDE)
        else:
            size = (MAX_DEFAULT_SIDE, MAX_DEFAULT_SIDE)
    return size, channels


class OptionError(ValueError):
    """A crop option larger than an image (refused: it would leave a sliver of pixels), or
    landmarks that give no alignment: an error about the options, passed on as it is."""


def to_8bit(img):
    """A 16-bit (or 32-bit integer) grey image scaled to 8 bits, v -> round(v / 257); Pillow's
    own convert("L") clips every value above 255 to white."""
    from PIL import Image

    if img.mode not in ("I", "I;16", "I;16B", "I;16L", "I;16N"):
        return img
    arr = np.asarray(img).astype(np.float64)
    return Image.fromarray(np.clip(np.rint(arr / 257.0), 0, 255).astype(np.uint8), "L")


def decode_one(source: Path | bytes, label: str, *, size: tuple[int, int],
               crop: tuple[int, int] | None, channels: int, landmarks=None) -> np.ndarray:
    """One image as uint8 (C, H, W): aligned to 112x112 by its 5 `landmarks` when given
    (alignment.align), centre crop (source pixels), grey ("L") or RGB, bilinear resize to
    `size`. The in-memory and the streamed paths both decode with this."""
    from PIL import Image

    h, w = size
    img = open_image(source, label)
    try:
        img.load()
        if landmarks is not None:
            img = to_8bit(img).convert("L" if channels == 1 else "RGB")
            try:
                img = alignment.align(img, landmarks)
            except (ValueError, np.linalg.LinAlgError) as exc:
                raise OptionError(f"cannot align image {label} by its 5 landmarks ({exc}); "
                                  "option align: allowed values yes, no (no: use the crops "
                                  "as they are)") from None
        if crop is not None:
            ch, cw = crop
            if ch > img.height or cw > img.width:
                raise OptionError(f"option crop={ch}x{cw} is larger than image {label} "
                                  f"({img.height}x{img.width}, HxW); allowed: a crop within "
                                  "every image")
            left, top = (img.width - cw) // 2, (img.height - ch) // 2
            img = img.crop((left, top, left + cw, top + ch))
        img = to_8bit(img)
        img = img.convert("L" if channels == 1 else "RGB")
        if img.size != (w, h):
            img = img.resize((w, h), Image.BILINEAR)
        arr = np.asarray(img, dtype=np.uint8)
    except OptionError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ValueError(f"cannot read image {label}: {exc}") from exc
    return arr.reshape(h, w, channels).transpose(2, 0, 1)


def decode_all(sources: list[Path | bytes], labels: list[str], *, size: tuple[int, int],
               crop: tuple[int, int] | None, channels: int) -> Tensor:
    """`decode_one` of every source, stacked into uint8 (N, C, H, W)."""
    h, w = size
    out = np.empty((len(sources), channels, h, w), np.uint8)
    for i, (src, label) in enumerate(zip(sources, labels)):
        out[i] = decode_one(src, label, size=size, crop=crop, channels=channels)
    return torch.from_numpy(out)


def decode_images(sources: list[Path | bytes], labels: list[str], *,
                  size: tuple[int, int] | None,
                  crop: tuple[int, int] | None, channels: int | None,
                  default_channels: int | None = None) -> tuple[Tensor, int, tuple[int, int]]:
    """Decode every image into uint8 (N, C, H, W) (`decode_one`), with the size and channels
    of `choose_geometry` over all their headers. Returns (images, channels, (H, W))."""
    headers = [probe(src, label) for src, label in zip(sources, labels)]
    hw, channels = choose_geometry(headers, size=size, crop=crop, channels=channels,
                                   default_channels=default_channels)
    images = decode_all(sources, labels, size=hw, crop=crop, channels=channels)
    return images, channels, hw
