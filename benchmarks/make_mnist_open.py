"""Split MNIST's 10,000 t10k digits into the project's own MNIST-open files.

    python3 benchmarks/make_mnist_open.py ../shared/data/mnist-idx OUT_DIR

Downsamples each digit to 14x14 (mean of 2x2 blocks, rounded to uint8: a quarter of the
pixels, so that the benchmark fits the CPU budget of RESULTS.md) and writes a seeded split
(seed 0) of 5,000 "train" and 5,000 "t10k" digits as gzipped IDX files. With
`mnist-open:OUT_DIR` the run trains on digits 0-5 of the train file, validates on pairs of
digits 6-9 of the train file and tests on pairs of digits 6-9 of the t10k file: validation
and test share no image.
"""

from __future__ import annotations

import gzip
import os
import struct
import sys
import tempfile
from pathlib import Path

import numpy as np

from lfsearch.data import read_idx


def write_idx(path: Path, array: np.ndarray) -> None:
    """IDX: magic 0x0000 08 DD (uint8, DD dimensions), big-endian uint32 sizes, the bytes."""
    header = bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
        f.write(header + array.astype(np.uint8).tobytes())
    os.replace(tmp, path)


def main(src: Path, out: Path) -> None:
    images = read_idx(src / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(src / "t10k-labels-idx1-ubyte.gz")
    small = images.reshape(-1, 14, 2, 14, 2).astype(np.float32).mean((2, 4)).round()
    order = np.random.default_rng(0).permutation(len(labels))
    out.mkdir(parents=True, exist_ok=True)
    for name, idx in (("train", order[:5000]), ("t10k", order[5000:])):
        write_idx(out / f"{name}-images-idx3-ubyte.gz", small[idx])
        write_idx(out / f"{name}-labels-idx1-ubyte.gz", labels[idx])
    print(f"wrote {out}: 5000 train + 5000 t10k digits at 14x14")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python3 benchmarks/make_mnist_open.py MNIST_IDX_DIR OUT_DIR")
    main(Path(sys.argv[1]), Path(sys.argv[2]))
