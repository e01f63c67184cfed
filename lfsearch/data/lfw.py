"""lfw: the LFW layout DIR/NAME/NAME_0001.jpg with DIR/pairs.txt (10 folds, both line formats).
Evaluation only: the single pair set is both `val` and `test`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from lfsearch.data.files import check_dir
from lfsearch.data.images import decode_images
from lfsearch.data.pairs import N_FOLDS
from lfsearch.data.splits import BYTE_PIXELS, Benchmark, VerificationSplit

LAYOUT = ("lfw:DIR expects the LFW layout:\n  DIR/pairs.txt  (optional first line 'FOLDS N' or "
          "'N'; then lines 'name<TAB>n1<TAB>n2' (same) or 'name1<TAB>n1<TAB>name2<TAB>n2' "
          "(different))\n  DIR/<name>/<name>_0001.jpg ... (also accepted under DIR/lfw/)")


def read_pairs_file(path: Path) -> tuple[list[tuple[str, int, str, int]], np.ndarray]:
    """Parse an LFW pairs file: optional header 'FOLDS N' (FOLDS sets of N same then N different
    pairs) or 'N'; lines 'name n1 n2' (same) or 'name1 n1 name2 n2' (different).
    Returns the pairs and their folds: from the header's sets when it has FOLDS >= 2, else
    10 contiguous folds of each kind in file order."""
    layout = LAYOUT
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
        if pairs[-1][:2] == pairs[-1][2:]:
            raise ValueError(f"{path} line {lineno}: {' '.join(f)!r} pairs image "
                             f"{pairs[-1][1]} of {pairs[-1][0]} with itself; a pair compares two "
                             "different images")
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


def load_lfw(root: Path, *, rng: np.random.Generator, size=None, crop=None, channels=None,
             pairs_file: str = "pairs.txt") -> Benchmark:
    check_dir(root, "lfw", LAYOUT)
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
                                    f"exist\n{LAYOUT}")
        sources.append(path)
    images, c, hw = decode_images(sources, [str(s) for s in sources], size=size, crop=crop,
                                  channels=channels, default_channels=3)
    pairs = torch.tensor([[index[(a, na)], index[(b, nb)]] for a, na, b, nb in entries]).long()
    same = torch.tensor([a == b for a, _, b, _ in entries])
    split = VerificationSplit(images, pairs, same, torch.from_numpy(folds), pixels=BYTE_PIXELS)
    return Benchmark("lfw", None, split, split, 0, c, hw, "face_cnn", "none")

