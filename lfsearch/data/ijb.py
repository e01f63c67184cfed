"""ijb: IJB-B / IJB-C 1:1 template verification from a local copy in insightface's layout
(its recognition/_evaluation_/ijb scripts; docs/face_recognition.md "IJB-B / IJB-C"):

    DIR/meta/<t>_face_tid_mid.txt        image name, template id, media id (one image a line)
    DIR/meta/<t>_template_pair_label.txt template id 1, template id 2, label (1 same, 0 not)
    DIR/meta/<t>_name_5pts_score.txt     image name, 10 landmark coordinates, detector score
    DIR/loose_crop/<image name>          the face crops

<t> is ijbb or ijbc (found from the file names; `target=ijbb|ijbc` picks one when both are
there). `align=yes` (the default, as insightface's evaluation does) warps each loose crop by
its 5 landmarks onto ArcFace's 112x112 template (data/alignment.py), then resizes it to `size`;
`align=no` reads the crops as they are (already aligned crops). Evaluation only: the one pair
set is both `val` and `test`. The images are not held in memory: the split keeps LazyImages,
decoded `chunk` images at a time while they are embedded (evaluation/ijb.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from lfsearch.data.alignment import ALIGNED_SIZE
from lfsearch.data.collection import ImageFiles
from lfsearch.data.files import check_dir
from lfsearch.data.images import choose_geometry, probe
from lfsearch.data.lazy import LazyImages
from lfsearch.data.splits import BYTE_PIXELS, Benchmark, TemplateSplit

TARGETS = ("ijbb", "ijbc")
LAYOUT = ("ijb:DIR expects insightface's IJB layout:\n  DIR/meta/<t>_face_tid_mid.txt "
          "(name tid mid)\n  DIR/meta/<t>_template_pair_label.txt (tid1 tid2 label)\n"
          "  DIR/meta/<t>_name_5pts_score.txt (name x1 y1 ... x5 y5 score)\n"
          "  DIR/loose_crop/<name>   with <t> = ijbb or ijbc")


def _rows(path: Path, columns: int | None, what: str) -> list[list[str]]:
    if not path.is_file():
        raise FileNotFoundError(f"ijb: {what} file {path} does not exist\n{LAYOUT}")
    rows = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if columns is not None and len(fields) != columns:
            raise ValueError(f"{path} line {lineno}: expected {columns} fields ({what}); got "
                             f"{len(fields)}\n{LAYOUT}")
        rows.append(fields)
    if not rows:
        raise ValueError(f"{path} is empty\n{LAYOUT}")
    return rows


def _ints(rows: list[list[str]], col: int, path: Path) -> np.ndarray:
    try:
        return np.array([int(r[col]) for r in rows], np.int64)
    except ValueError:
        raise ValueError(f"{path}: column {col + 1} must hold integers\n{LAYOUT}") from None


def find_target(meta: Path, target: str | None) -> str:
    """The file prefix: `target` if given, else the one <t>_face_tid_mid.txt in meta/."""
    if target is not None:
        t = target.lower()
        if t not in TARGETS:
            raise ValueError(f"option target={target!r}: allowed values ijbb, ijbc")
        return t
    found = [t for t in TARGETS if (meta / f"{t}_face_tid_mid.txt").is_file()]
    if len(found) != 1:
        raise FileNotFoundError(f"ijb: {meta} holds {len(found)} of ijbb_face_tid_mid.txt, "
                                f"ijbc_face_tid_mid.txt; "
                                + ("add ?target=ijbb or ?target=ijbc" if found else "need one")
                                + f"\n{LAYOUT}")
    return found[0]


def _landmarks(rows: dict[str, list[str]], names: list[str], path: Path) -> np.ndarray:
    """(N, 5, 2) landmarks of `names` from the 5-point file's rows (name x1 y1 ... x5 y5 s)."""
    try:
        return np.array([[float(v) for v in rows[n][1:11]] for n in names],
                        np.float64).reshape(-1, 5, 2)
    except ValueError:
        raise ValueError(f"{path}: columns 2-11 (the 5 landmarks x1 y1 ... x5 y5) must be "
                         f"numbers\n{LAYOUT}") from None


def load_ijb(root: Path, *, rng: np.random.Generator, size=None, crop=None, channels=None,
             target: str | None = None, align: bool = True) -> Benchmark:
    check_dir(root, "ijb", LAYOUT)
    meta = root / "meta"
    t = find_target(meta, target)
    tid_path = meta / f"{t}_face_tid_mid.txt"
    pair_path = meta / f"{t}_template_pair_label.txt"
    score_path = meta / f"{t}_name_5pts_score.txt"
    faces = _rows(tid_path, 3, "name tid mid")
    pair_rows = _rows(pair_path, 3, "tid1 tid2 label")
    scored = {r[0]: r for r in _rows(score_path, 12, "name, 10 landmark coordinates, score")}
    names = [r[0] for r in faces]
    missing = [n for n in names if n not in scored]
    if missing:
        raise ValueError(f"{score_path}: no detector score for image {missing[0]!r} (of "
                         f"{len(missing)}) named in {tid_path.name}\n{LAYOUT}")
    try:
        scores = np.array([float(scored[n][-1]) for n in names], np.float64)
    except ValueError:
        raise ValueError(f"{score_path}: the last column (detector score) must be a number"
                         f"\n{LAYOUT}") from None
    templates, media = _ints(faces, 1, tid_path), _ints(faces, 2, tid_path)
    pairs = np.stack([_ints(pair_rows, 0, pair_path), _ints(pair_rows, 1, pair_path)], 1)
    labels = _ints(pair_rows, 2, pair_path)
    if not np.isin(labels, (0, 1)).all():
        raise ValueError(f"{pair_path}: labels must be 0 or 1\n{LAYOUT}")
    unknown = np.setdiff1d(pairs.reshape(-1), templates)
    if unknown.size:
        raise ValueError(f"{pair_path}: template {int(unknown[0])} has no image in "
                         f"{tid_path.name}\n{LAYOUT}")
    landmarks = _landmarks(scored, names, score_path) if align else None
    if landmarks is not None:
        spread = ((landmarks - landmarks.mean(1, keepdims=True)) ** 2).sum((1, 2))
        flat = np.flatnonzero(~(spread > 1e-6))
        if flat.size:
            raise ValueError(f"{score_path}: the 5 landmarks of {flat.size} image(s) coincide "
                             f"(e.g. {names[flat[0]]!r}), so they cannot align them; option "
                             "align: allowed values yes, no (no: use the crops as they are)")
    crops = root / "loose_crop"
    files = ImageFiles(crops, names)
    for i in range(len(files)):
        if not Path(files.path(i)).is_file():
            raise FileNotFoundError(f"ijb: image {files.path(i)} (named in {tid_path.name}) "
                                    f"does not exist\n{LAYOUT}")
    # aligned crops are all 112x112; unaligned ones are sized from their headers
    headers = ([((ALIGNED_SIZE, ALIGNED_SIZE), False)] if align
               else [probe(files.path(i), files.name(i)) for i in range(len(files))])
    hw, c = choose_geometry(headers, size=size, crop=crop, channels=channels, default_channels=3)
    images = LazyImages(files, np.arange(len(files)), hw, c, crop, landmarks)
    t_ = torch.from_numpy
    split = TemplateSplit(images, t_(templates), t_(media), t_(scores), t_(pairs),
                          t_(labels.astype(bool)), pixels=BYTE_PIXELS)
    return Benchmark(f"ijb:{root.name}", None, split, split, 0, c, hw, "face_cnn", "none")
