"""rec: an insightface RecordIO training set (train.rec [+ train.idx, else one scan]
[+ property]) split by identity like folder (identities.py), its training split in memory or
streamed. The format is recordio.py's; only the record index and the identity ranges are read
up front."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from lfsearch.data import identities
from lfsearch.data.collection import IdentityImages
from lfsearch.data.pairs import DEFAULT_PAIRS
from lfsearch.data.recordio import (
    LAYOUT,
    RecordFile,
    index_path,
    read_index,
    read_property,
    read_record_at,
    scan_index,
    unpack,
)
from lfsearch.data.splits import Benchmark

log = logging.getLogger(__name__)


MAX_LABEL = 2 ** 24  # float32 holds every whole number below it exactly


def _first_label(label) -> float:
    return float(label) if np.ndim(label) == 0 else float(np.asarray(label).reshape(-1)[0])


def _whole(value: float, path: Path, key: int, what: str, low: int, high: int) -> int:
    """A header label that must be a whole number in [low, high]; ValueError naming the record."""
    v = float(value)
    if not (np.isfinite(v) and v.is_integer() and low <= v <= high):
        raise ValueError(f"{path}: record {key}'s {what} is {v!r}; allowed: a whole number in "
                         f"[{low}, {high}]")
    return int(v)


def open_record_set(path: Path) -> IdentityImages:
    """The images of a .rec with their identities. Record 0 with flag >= 2 (insightface
    training sets): images [1, label[0]), identities from the records [label[0], label[1]);
    flag 1: images [1, label[0]); flag 0 (a plain .rec, record 0 an image): every record.
    Without identity records, an image's identity is its header's (first) label."""
    if not path.is_file():
        raise FileNotFoundError(f"rec: file {path} does not exist\n{LAYOUT}")
    if index_path(path).exists():
        index = read_index(index_path(path), path.stat().st_size)
    else:
        t0 = time.perf_counter()
        index = scan_index(path)
        log.warning("%s: no %s beside it; built the index by scanning the file once "
                    "(%d records, %.1f s)", path, index_path(path).name, len(index),
                    time.perf_counter() - t0)
    if not index:
        raise ValueError(f"{index_path(path)} lists no records\n{LAYOUT}")
    last = max(index)  # a range may not reach past the records the index lists

    def header(f, key):
        if key not in index:
            raise ValueError(f"{path}: record {key} is not in {index_path(path).name}\n{LAYOUT}")
        where = f"record {key} of {path}"
        return unpack(read_record_at(f, index[key], where), where)[0]

    with open(path, "rb") as f:
        head = header(f, 0) if 0 in index else None
        if head is not None and head.flag >= 2:
            first_id = _whole(head.label[0], path, 0, "first label (first identity record)",
                              1, last + 1)
            end_id = _whole(head.label[1], path, 0, "second label (end of the identity "
                            "records)", first_id, last + 1)
            keys = np.arange(1, first_id, dtype=np.int64)
            identity = np.full(len(keys), -1, np.int64)
            names: list[str] = []
            for j, key in enumerate(range(first_id, end_id)):
                h = header(f, key)
                if h.flag < 2:
                    raise ValueError(f"{path}: identity record {key} has no (start, end) labels"
                                     f"\n{LAYOUT}")
                start = _whole(h.label[0], path, key, "start label", 0, MAX_LABEL)
                end = _whole(h.label[1], path, key, "end label", 0, MAX_LABEL)
                if not 1 <= start <= end <= first_id or (identity[start - 1:end - 1] != -1).any():
                    raise ValueError(f"{path}: identity record {key} range [{start}, {end}) "
                                     f"overlaps another or leaves images 1..{first_id - 1}")
                if end > start:
                    identity[start - 1:end - 1] = len(names)
                    names.append(str(j))
            if (identity < 0).any():
                missing = int(keys[identity < 0][0])
                raise ValueError(f"{path}: image record {missing} belongs to no identity record"
                                 f"\n{LAYOUT}")
        else:  # identity = each image header's (first) label
            if head is not None and head.flag == 1:  # record 0 gives the image range only
                keys = np.arange(1, _whole(head.label[0], path, 0, "label (end of the image "
                                           "records)", 1, last + 1), dtype=np.int64)
            else:  # a plain .rec (record 0 is an image too): every record is an image
                keys = np.array(sorted(index), np.int64)
            labels = np.array([_whole(_first_label(header(f, int(k)).label), path, int(k),
                                      "identity label", 0, MAX_LABEL - 1) for k in keys])
            values, identity = np.unique(labels, return_inverse=True)
            names = [str(int(v)) if float(v).is_integer() else str(v) for v in values]
    missing = [int(k) for k in keys if int(k) not in index]
    if missing:
        raise ValueError(f"{path}: image record {missing[0]} is not in "
                         f"{index_path(path).name}\n{LAYOUT}")
    prop = read_property(path.parent / "property")
    if prop is not None and prop[0] != len(names):
        log.warning("%s says %d identities; %s holds %d", path.parent / "property", prop[0],
                    path.name, len(names))
    offsets = np.array([index[int(k)] for k in keys], np.int64)
    if len(names) < 2:
        raise ValueError(f"rec: {path} holds {len(names)} identities; 2 or more needed\n{LAYOUT}")
    return IdentityImages(RecordFile(path, keys, offsets), identity.astype(np.int64), names)


def load_rec(path: Path, *, rng: np.random.Generator, size=None, crop=None, channels=None,
             val: float = 0.2, test: float = 0.2, pairs: int = DEFAULT_PAIRS,
             stream: str = "auto", workers: int | None = None, prefetch: int = 2) -> Benchmark:
    return identities.by_identity("rec", open_record_set(path), rng=rng, size=size, crop=crop,
                                  channels=channels, val=val, test=test, pairs=pairs,
                                  stream=stream, workers=workers, prefetch=prefetch)
