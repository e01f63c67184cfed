"""Data tools behind `lfsearch data ...` (docs/data.md "Data tools"):

pack_folder  identity folder -> PREFIX.rec + PREFIX.idx (+ `property`), insightface layout,
             the original image bytes kept;
summarise    a .rec's identity and image counts, and a contact sheet PNG;
write_bin    an LFW-style pairs file + image folder -> an insightface verification .bin, every
             image H x W (112 x 112 by default) so that insightface's load_bin reads it.
Every output goes to a temporary file first and is renamed into place when complete.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np

from lfsearch import paths
from lfsearch.data.folder import list_identities
from lfsearch.data.images import decode_one, probe, verify
from lfsearch.data.lfw import LAYOUT as LFW_LAYOUT
from lfsearch.data.lfw import read_pairs_file
from lfsearch.data.options import _parse_size
from lfsearch.data.rec import open_record_set
from lfsearch.data.recordio import IRHeader, RecordWriter, index_path, read_property


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def pack_folder(root: Path, prefix: Path, force: bool = False) -> dict:
    """Write the identity folder `root` as PREFIX.rec/.idx: record 0's labels (N + 1, N + 1 + K),
    images 1..N (IRHeader label = identity index, the file's bytes unchanged), then one record
    per identity with labels (start, end); `property` ("K,H,W" of the first image) beside.

    Every image is decoded whole first (an empty, corrupt or truncated file is refused, naming
    it); an existing output is replaced only with `force`."""
    coll = list_identities(Path(root))
    src, n, k = coll.source, len(coll), len(coll.names)
    rec = Path(f"{prefix}.rec")
    outputs = (rec, index_path(rec), rec.parent / "property")
    if not rec.parent.is_dir():
        raise FileNotFoundError(f"--out {prefix}: folder {rec.parent} does not exist")
    for out in outputs:
        paths.check_output(out, f"--out {prefix}:", force=force)
    (w, h), _ = verify(src.read(0), src.name(0))
    writer = RecordWriter(rec, index_path(rec))
    try:
        writer.write(0, IRHeader(2, np.array([n + 1, n + 1 + k], np.float32), 0, 0), b"")
        for i in range(n):
            blob = src.read(i)
            verify(blob, src.name(i))  # a bad image aborts: the temporary files are removed
            writer.write(i + 1, IRHeader(0, float(coll.identity[i]), i + 1, 0), blob)
        starts = np.searchsorted(coll.identity, np.arange(k + 1))
        for j in range(k):
            writer.write(n + 1 + j, IRHeader(2, np.array([starts[j] + 1, starts[j + 1] + 1],
                                                         np.float32), n + 1 + j, 0), b"")
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    _atomic_write(rec.parent / "property", f"{k},{h},{w}\n".encode())
    return {"rec": str(rec), "idx": str(index_path(rec)), "identities": k, "images": n}


def summarise(path: Path, sheet: Path | None = None, *, per_identity: int = 8,
              identities: int = 8, side: int = 64, force: bool = False) -> dict:
    """Identity and image counts of a .rec; with `sheet`, a PNG contact sheet: one row per
    identity (the first `identities`), its first `per_identity` images at side x side (never
    over the .rec, its .idx or property; an existing sheet only with `force`)."""
    from PIL import Image

    if sheet is not None:
        rec = Path(path)
        paths.check_output(sheet, "--sheet", force=force, inputs=[
            ("the .rec being shown", rec), ("its index", index_path(rec)),
            ("its property file", rec.parent / "property")])
    coll = open_record_set(Path(path))
    counts = np.bincount(coll.identity, minlength=len(coll.names))
    out = {"file": str(path), "identities": len(coll.names), "images": len(coll),
           "images_per_identity": {"min": int(counts.min()), "median": float(np.median(counts)),
                                   "max": int(counts.max())},
           "property": read_property(Path(path).parent / "property")}
    if sheet is not None:
        rows = min(identities, len(coll.names))
        canvas = Image.new("RGB", (per_identity * side, rows * side), "white")
        for r in range(rows):
            members = np.flatnonzero(coll.identity == r)[:per_identity]
            for c, i in enumerate(members):
                tile = decode_one(coll.source.read(int(i)), coll.source.name(int(i)),
                                  size=(side, side), crop=None, channels=3)
                canvas.paste(Image.fromarray(tile.transpose(1, 2, 0)), (c * side, r * side))
        sheet = Path(sheet)
        tmp = sheet.with_name(sheet.name + f".tmp{os.getpid()}")
        try:
            canvas.save(tmp, format="PNG")
            os.replace(tmp, sheet)
        finally:
            tmp.unlink(missing_ok=True)
        out["sheet"] = str(sheet)
    return out


BIN_SIZE = (112, 112)
JPEG_QUALITY = 95


def _sized_image(path: Path, size: tuple[int, int]) -> tuple[bytes, bool]:
    """The image file's bytes when it is already H x W, else the image resized (bilinear, as
    bin:FILE?size= decodes) and stored as a JPEG (quality 95); (bytes, resized)."""
    raw = path.read_bytes()
    (w, h), grey = probe(raw, str(path))
    if (h, w) == tuple(size):
        return raw, False
    from PIL import Image

    pixels = decode_one(raw, str(path), size=size, crop=None, channels=1 if grey else 3)
    img = Image.fromarray(pixels[0] if grey else pixels.transpose(1, 2, 0))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue(), True


def write_bin(pairs_file: Path, root: Path, out: Path,
              size: tuple[int, int] | str = BIN_SIZE, force: bool = False) -> dict:
    """An insightface verification .bin: pickle of (list of 2P image bytes, list of P is-same
    bools), pair i = images 2i and 2i+1, from an LFW-style pairs file whose images are
    ROOT/NAME/NAME_NNNN.jpg. Images already `size` (H, W) are stored unchanged, the others
    resized to it: insightface's load_bin only reads square images of its image_size. Each
    image is decoded whole first; self-pairs are refused (read_pairs_file); `out` is never an
    input, and an existing one is replaced only with `force`."""
    paths.check_output(out, "--out", force=force,
                       inputs=[("the pairs file", pairs_file)])
    h, w = _parse_size(size, "size")
    entries, _ = read_pairs_file(Path(pairs_file))
    blobs, issame, resized = [], [], 0
    for a, na, b, nb in entries:
        for name, num in ((a, na), (b, nb)):
            p = Path(root) / name / f"{name}_{num:04d}.jpg"
            if not p.is_file():
                raise FileNotFoundError(f"bin: image {p} (named in {pairs_file}) does not exist"
                                        f"\n{LFW_LAYOUT}")
            if paths.same_file(p, out):
                raise ValueError(f"--out {out} is an image the pairs file names; write the "
                                 "output to another file")
            verify(p.read_bytes(), str(p))
            blob, changed = _sized_image(p, (h, w))
            blobs.append(blob)
            resized += changed
        issame.append(a == b)
    _atomic_write(Path(out), pickle.dumps((blobs, issame), protocol=pickle.HIGHEST_PROTOCOL))
    return {"bin": str(out), "pairs": len(issame), "same": int(sum(issame)),
            "size": [h, w], "resized": resized}
