"""Decode throughput of a streamed training split: images/s against the number of DataLoader
workers, and Pillow against simplejpeg on the same JPEG bytes.

    python3 benchmarks/decode_speed.py [--images 2000] [--side 112] [--workers 0 1 2 4]
        [--batch-size 128] [--repeats 3]

It writes --images synthetic 112x112 RGB JPEGs (quality 90, 100 per identity folder; the face
recognition input size) into a temporary folder, then:

  decoder   one process decoding every image's bytes (already read into memory) to uint8
            RGB: Pillow (what lfsearch uses, `lfsearch.data.images.decode_one`) and, when it is
            installed, simplejpeg.decode_jpeg;
  workers   one epoch of `lfsearch.data.batches` over `folder:DIR?stream=yes&workers=W`
            (read + decode in W processes, W = 0: in the training process; flip on the host),
            each the median of --repeats epochs, the worker counts interleaved within a
            repeat; ratio to the first count (W = 0 by default).

simplejpeg is not a dependency of lfsearch: Pillow is (its JPEG decoder is libjpeg-turbo too).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def write_jpegs(root: Path, n: int, side: int) -> list[Path]:
    from PIL import Image

    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        folder = root / f"id{i // 100:04d}"
        folder.mkdir(exist_ok=True)
        # smooth random images (a low-resolution noise upsampled): JPEG sizes like faces'
        small = rng.integers(0, 256, (side // 8, side // 8, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((side, side), Image.BILINEAR)
        paths.append(folder / f"{i % 100:03d}.jpg")
        img.save(paths[-1], quality=90)
    return paths


def decoder_rates(blobs: list[bytes], side: int) -> dict[str, float]:
    from lfsearch.data.images import decode_one

    out = {}
    t = time.perf_counter()
    for b in blobs:
        decode_one(b, "bench", size=(side, side), crop=None, channels=3)
    out["Pillow (decode_one)"] = len(blobs) / (time.perf_counter() - t)
    try:
        import simplejpeg
    except ImportError:
        return out
    t = time.perf_counter()
    for b in blobs:
        simplejpeg.decode_jpeg(b, colorspace="RGB")
    out["simplejpeg.decode_jpeg"] = len(blobs) / (time.perf_counter() - t)
    return out


def worker_rates(root: Path, args: argparse.Namespace) -> dict[int, float]:
    """images/s of one streamed epoch per worker count: the median of --repeats epochs, the
    worker counts interleaved within each repeat (so a change in the machine's load falls on
    every count alike). An epoch includes starting its workers, as in training."""
    import torch

    from lfsearch import data

    benches = {w: data.load(f"folder:{root}?stream=yes&val=0&test=0&pairs=100&workers={w}",
                            seed=0) for w in args.workers}
    times: dict[int, list[float]] = {w: [] for w in args.workers}
    n = 0
    for r in range(args.repeats):
        for w, bench in benches.items():
            gen = torch.Generator().manual_seed(r)
            t = time.perf_counter()
            n = sum(len(y) for _, y in data.batches(bench.train, args.batch_size, generator=gen,
                                                     augment="flip"))
            times[w].append(time.perf_counter() - t)
    return {w: n / statistics.median(ts) for w, ts in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--side", type=int, default=112)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2, 4])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_jpegs(Path(tmp), args.images, args.side)
        blobs = [q.read_bytes() for q in paths]
        print(f"{args.images} JPEGs {args.side}x{args.side} RGB, mean "
              f"{np.mean([len(b) for b in blobs]) / 1024:.1f} KiB; {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.1f}")
        rates = decoder_rates(blobs, args.side)
        first = next(iter(rates.values()))
        print("\n| decoder (one process, bytes in memory) | images/s | × Pillow |\n|---|---|---|")
        for name, rate in rates.items():
            print(f"| {name} | {rate:.0f} | {rate / first:.2f} |")
        print("\n| workers | images/s | × first |\n|---|---|---|")
        rates = worker_rates(Path(tmp), args)
        base = rates[args.workers[0]]
        for w, rate in rates.items():
            print(f"| {w} | {rate:.0f} | {rate / base:.2f} |")
        print(f"load average at the end {os.getloadavg()[0]:.1f}")

if __name__ == "__main__":
    main()
