"""Evaluation benchmarks built from scikit-learn's digits 6-9 (never trained on by the digits
benchmark, which trains on 0-5): an insightface .bin, an LFW folder with pairs.txt and an
identity folder, all of 8x8 grey images."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits


def digit_images() -> tuple[np.ndarray, np.ndarray]:
    """Digits 6-9 as uint8 8x8 grey images (0..16 scaled to 0..255) and their labels."""
    d = load_digits()
    keep = d.target >= 6
    images = np.clip(d.images[keep] * 16, 0, 255).astype(np.uint8)
    return images, d.target[keep]


def png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def write_bin(path: Path, n_pairs: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """An insightface .bin of n_pairs digit pairs (half same); returns (images (2P, 8, 8), same)."""
    images, labels = digit_images()
    rng = np.random.default_rng(seed)
    chosen, same = [], []
    for i in range(n_pairs):
        a = int(rng.integers(len(labels)))
        pool = np.flatnonzero((labels == labels[a]) if i % 2 == 0 else (labels != labels[a]))
        b = int(rng.choice(pool[pool != a]))
        chosen += [a, b]
        same.append(i % 2 == 0)
    with open(path, "wb") as f:
        pickle.dump(([png(images[k]) for k in chosen], same), f)
    return images[chosen], np.array(same)


def write_lfw(root: Path) -> None:
    """LFW layout under root/lfw (pairs.txt in root): 4 'people' (one per digit 6-9), 5 images
    each, 2 folds of 4 same and 4 different pairs."""
    images, labels = digit_images()
    names = {6: "Six_S", 7: "Sev_S", 8: "Eig_E", 9: "Nin_N"}
    for digit, name in names.items():
        (root / "lfw" / name).mkdir(parents=True)
        for n, k in enumerate(np.flatnonzero(labels == digit)[:5], start=1):
            Image.fromarray(images[k]).save(root / "lfw" / name / f"{name}_{n:04d}.jpg", quality=95)
    lines = ["2\t4"]
    for fold in range(2):
        people = list(names.values())
        for name in people:
            lines.append(f"{name}\t{1 + fold}\t{3 + fold}")
        for a, b in zip(people, people[1:] + people[:1]):
            lines.append(f"{a}\t{1 + fold}\t{b}\t{2 + fold}")
    (root / "pairs.txt").write_text("\n".join(lines) + "\n")


def write_folder(root: Path) -> None:
    """Identity folders: 10 identities (digit 6-9 images, 12 each) of 8x8 grey PNGs."""
    images, labels = digit_images()
    for ident in range(10):
        digit = 6 + ident % 4
        idx = np.flatnonzero(labels == digit)[(ident // 4) * 12:(ident // 4) * 12 + 12]
        (root / f"id{ident:02d}").mkdir(parents=True)
        for n, k in enumerate(idx):
            Image.fromarray(images[k]).save(root / f"id{ident:02d}" / f"{n}.png")
