"""insightface / MXNet RecordIO (`train.rec` + `train.idx`), read and written with the standard
library and numpy (mxnet is unmaintained and does not install here). docs/data.md "RecordIO".

A record is::

    uint32 magic 0xced7230a (little-endian)
    uint32 length word: lower 29 bits the payload length, upper 3 bits cflag
    payload, then zero padding to a multiple of 4 bytes

cflag 0 is a whole record. A writer splits a payload at every 4-byte-aligned occurrence of the
magic: parts cflag 1 (first), 2 (middle), 3 (last), the magic itself dropped; a reader joins the
parts with the magic between them. An image payload starts with the IRHeader, struct 'IfQQ'
(uint32 flag, float32 label, uint64 id, uint64 id2); when flag > 0, flag float32 labels follow
(and the header's label field is 0); then the encoded image bytes.

insightface training sets: record 0's header has labels (a, b): images are records [1, a), and
records [a, b) are one per identity, each with labels (start, end), the range of its images.
`train.idx` has one line "index<TAB>offset" per record (without it, `scan_index` finds the
records by one pass over the .rec: key = the record's position, as MXNet's sequential reader
counts); `property` (beside them, optional) is "num_classes,height,width" on its first line
(insightface's rec2shufrec.py adds lines after it: the image count, "shuffled").
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
IR_FORMAT = "IfQQ"
IR_SIZE = struct.calcsize(IR_FORMAT)  # 24
LENGTH_BITS = 29

LAYOUT = ("rec:FILE expects an insightface RecordIO training set: FILE (e.g. train.rec), its index "
          "beside it (train.idx: lines 'index<TAB>offset'; when absent, built by scanning FILE "
          "once), and optionally 'property' ('num_classes,height,width' on its first line) in "
          "the same folder; record 0's header labels (a, b): images are records 1..a-1, "
          "identities records a..b-1")


@dataclass
class IRHeader:
    """flag (number of extra float labels), label (a float, or the `flag` labels), id, id2."""

    flag: int
    label: float | np.ndarray
    id: int
    id2: int


def pack(header: IRHeader, payload: bytes) -> bytes:
    """IRHeader + payload as insightface writes it: a label array becomes flag = its size."""
    label = header.label
    if np.ndim(label) == 0:
        return struct.pack(IR_FORMAT, 0, float(label), header.id, header.id2) + payload
    labels = np.asarray(label, dtype="<f4").reshape(-1)
    return (struct.pack(IR_FORMAT, labels.size, 0.0, header.id, header.id2) + labels.tobytes()
            + payload)


def unpack(record: bytes, where: str = "record") -> tuple[IRHeader, bytes]:
    """(IRHeader, the rest) of a record payload; flag > 0 reads that many float32 labels."""
    if len(record) < IR_SIZE:
        raise ValueError(f"{where}: {len(record)} bytes, shorter than the {IR_SIZE}-byte IRHeader")
    flag, label, rid, rid2 = struct.unpack(IR_FORMAT, record[:IR_SIZE])
    rest = record[IR_SIZE:]
    if flag > 0:
        if len(rest) < 4 * flag:
            raise ValueError(f"{where}: IRHeader flag {flag} needs {4 * flag} label bytes; "
                             f"{len(rest)} left")
        labels = np.frombuffer(rest, "<f4", flag).astype(np.float32)
        return IRHeader(flag, labels, rid, rid2), rest[4 * flag:]
    return IRHeader(flag, label, rid, rid2), rest


def encode_record(payload: bytes) -> bytes:
    """The bytes of one record (split at aligned magics, as dmlc-core's writer does)."""
    out = []
    n, start = len(payload), 0
    for i in range(0, n - n % 4, 4):
        if payload[i:i + 4] == _MAGIC_BYTES:
            cflag = 1 if start == 0 else 2
            out += [_MAGIC_BYTES, struct.pack("<I", (cflag << LENGTH_BITS) | (i - start)),
                    payload[start:i]]
            start = i + 4
    tail = n - start
    if tail >= 1 << LENGTH_BITS:
        raise ValueError(f"a record part of {tail} bytes exceeds the 29-bit length field")
    out += [_MAGIC_BYTES, struct.pack("<I", ((3 if start else 0) << LENGTH_BITS) | tail),
            payload[start:], b"\0" * (-tail % 4)]
    return b"".join(out)


def read_record_at(f, offset: int, where: str) -> bytes:
    """The payload of the record starting at `offset` of the open binary file `f`."""
    f.seek(offset)
    parts: list[bytes] = []
    while True:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{where}: file ends inside a record header at offset {f.tell()}")
        magic, word = struct.unpack("<II", head)
        if magic != MAGIC:
            raise ValueError(f"{where}: bad magic 0x{magic:08x} at offset {f.tell() - 8} "
                             f"(expected 0x{MAGIC:08x})")
        cflag, length = word >> LENGTH_BITS, word & ((1 << LENGTH_BITS) - 1)
        data = f.read(length)
        if len(data) < length:
            raise ValueError(f"{where}: record of {length} bytes is truncated")
        f.read(-length % 4)
        if cflag not in (0, 1, 2, 3) or (cflag in (2, 3)) != bool(parts):
            raise ValueError(f"{where}: unexpected continuation flag {cflag}")
        parts.append(data)
        if cflag in (0, 3):
            return _MAGIC_BYTES.join(parts)


def read_index(path: Path, rec_size: int | None = None) -> dict[int, int]:
    """train.idx: one 'index<TAB>offset' line per record -> {index: offset}.

    Records are written one after the other, so in index order the offsets must increase
    (a swapped or repeated offset would relabel or drop images) and lie inside the .rec
    (`rec_size` bytes); a repeated index is refused too."""
    if not path.is_file():
        raise FileNotFoundError(f"rec: index file {path} does not exist\n{LAYOUT}")
    out: dict[int, int] = {}
    lines: dict[int, int] = {}
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text file of 'index<TAB>offset' lines\n{LAYOUT}") \
            from None
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split()
        try:
            key, offset = int(fields[0]), int(fields[1])
            if len(fields) != 2 or offset < 0:
                raise ValueError
        except (ValueError, IndexError):
            raise ValueError(f"{path} line {lineno}: {line!r} is not 'index<TAB>offset'\n"
                             f"{LAYOUT}") from None
        if key in out:
            raise ValueError(f"{path} line {lineno}: record {key} is listed again (first on line "
                             f"{lines[key]}); each record has one line")
        if rec_size is not None and offset >= rec_size:
            raise ValueError(f"{path} line {lineno}: offset {offset} of record {key} is past the "
                             f"end of the .rec ({rec_size} bytes)")
        out[key], lines[key] = offset, lineno
    previous = None
    for key in sorted(out):
        if previous is not None and out[key] <= out[previous]:
            raise ValueError(f"{path} line {lines[key]}: record {key} at offset {out[key]} is not "
                             f"after record {previous} (offset {out[previous]}); records are "
                             "written in index order, so this index is swapped or duplicated")
        previous = key
    return out


def scan_index(path: Path) -> dict[int, int]:
    """{position: offset} of every record of a .rec, by one pass over its record headers
    (payloads skipped): what train.idx lists when the file was written in key order."""
    out: dict[int, int] = {}
    size = path.stat().st_size
    inside = False  # within a record split into parts (cflag 1, 2..., 3)
    with open(path, "rb") as f:
        pos = 0
        while pos < size:
            head = f.read(8)
            if len(head) < 8:
                raise ValueError(f"{path}: file ends inside a record header at offset {pos}")
            magic, word = struct.unpack("<II", head)
            if magic != MAGIC:
                raise ValueError(f"{path}: bad magic 0x{magic:08x} at offset {pos} (expected "
                                 f"0x{MAGIC:08x}); not a RecordIO file\n{LAYOUT}")
            cflag, length = word >> LENGTH_BITS, word & ((1 << LENGTH_BITS) - 1)
            if (cflag in (2, 3)) != inside:
                raise ValueError(f"{path}: unexpected continuation flag {cflag} at offset {pos}")
            if cflag in (0, 1):
                out[len(out)] = pos
            inside = cflag in (1, 2)
            pos += 8 + length + (-length % 4)
            f.seek(pos)
    if inside or pos != size:
        raise ValueError(f"{path}: the last record is truncated (file of {size} bytes)")
    return out


def read_property(path: Path) -> tuple[int, int, int] | None:
    """'num_classes,height,width' from the first line of an insightface `property` file
    (later lines, e.g. rec2shufrec.py's image count and 'shuffled', are ignored); None when
    absent."""
    if not path.is_file():
        return None
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    text = lines[0] if lines else ""
    try:
        n, h, w = (int(v) for v in text.split(","))
    except ValueError:
        raise ValueError(f"{path}: first line {text!r} is not 'num_classes,height,width'") \
            from None
    return n, h, w


def index_path(rec: Path) -> Path:
    return rec.with_suffix(".idx")


class RecordFile:
    """Random access to image records of a .rec by offset: item i is the image bytes of the
    record at offsets[i] (IRHeader and labels stripped). Opens the file once per process, so
    DataLoader workers each get their own handle."""

    def __init__(self, path: Path, keys: np.ndarray, offsets: np.ndarray):
        self.path = str(path)
        self.keys = np.asarray(keys, np.int64)
        self.offsets = np.asarray(offsets, np.int64)
        self._file = None
        self._pid = None

    def __getstate__(self) -> dict:
        return {"path": self.path, "keys": self.keys, "offsets": self.offsets}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], state["keys"], state["offsets"])

    def __len__(self) -> int:
        return int(self.offsets.shape[0])

    def name(self, i: int) -> str:
        return f"record {int(self.keys[i])} of {self.path}"

    def record(self, i: int) -> tuple[IRHeader, bytes]:
        if self._file is None or self._pid != os.getpid():
            self._file, self._pid = open(self.path, "rb"), os.getpid()
        where = self.name(i)
        return unpack(read_record_at(self._file, int(self.offsets[i]), where), where)

    def read(self, i: int) -> bytes:
        return self.record(i)[1]


class RecordWriter:
    """Writes records to `rec_path` and their 'index<TAB>offset' lines to `idx_path`, each into
    a temporary file first: `commit` renames both into place, `abort` removes them."""

    def __init__(self, rec_path: Path, idx_path: Path):
        self.rec_path, self.idx_path = Path(rec_path), Path(idx_path)
        self._rec_tmp = self.rec_path.with_name(self.rec_path.name + f".tmp{os.getpid()}")
        self._idx_tmp = self.idx_path.with_name(self.idx_path.name + f".tmp{os.getpid()}")
        self._rec = open(self._rec_tmp, "wb")
        self._idx = open(self._idx_tmp, "w")

    def write(self, key: int, header: IRHeader, payload: bytes) -> None:
        self._idx.write(f"{key}\t{self._rec.tell()}\n")
        self._rec.write(encode_record(pack(header, payload)))

    def commit(self) -> None:
        for f in (self._rec, self._idx):
            f.flush()
            os.fsync(f.fileno())
            f.close()
        os.replace(self._rec_tmp, self.rec_path)
        os.replace(self._idx_tmp, self.idx_path)

    def abort(self) -> None:
        for f, tmp in ((self._rec, self._rec_tmp), (self._idx, self._idx_tmp)):
            f.close()
            tmp.unlink(missing_ok=True)
