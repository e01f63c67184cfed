"""Decoding image files and encoded bytes with Pillow: centre crop, grey or RGB, bilinear resize
(used by folder, lfw and bin). Pixels stay uint8 (splits.BYTE_PIXELS maps them to [-1, 1])."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from torch import Tensor

import torch

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
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ValueError(f"cannot read image {label}: {exc}") from exc


def is_grey(img) -> bool:
    if img.mode == "P":
        palette = img.getpalette() or []
        rgb = np.asarray(palette[: 3 * 256]).reshape(-1, 3)
        return bool((rgb == rgb[:, :1]).all())
    return img.mode in _GREY_MODES


def decode_images(sources: list[Path | bytes], labels: list[str], *,
                  size: tuple[int, int] | None,
                  crop: tuple[int, int] | None, channels: int | None,
                  default_channels: int | None = None) -> tuple[Tensor, int, tuple[int, int]]:
    """Decode, centre-crop, convert and resize every image into uint8 (N, C, H, W).

    Default size: the common size when all images share one no larger than 112x112, else
    112x112. Default channels: 1 when every image is grey, else 3 (or `default_channels`)."""
    from PIL import Image

    headers = []
    for src, label in zip(sources, labels):
        img = open_image(src, label)
        headers.append((img.size, is_grey(img)))
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
        img = open_image(src, label)
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
    return torch.from_numpy(np.ascontiguousarray(out.transpose(0, 3, 1, 2))), channels, (h, w)


