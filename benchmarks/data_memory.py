"""Host peak RSS while streaming a training split of 3k, 12k and 200k images: it must not grow
with the dataset (the issue's "memory bounded by the prefetch depth").

    python3 benchmarks/data_memory.py [--sizes 3000 12000 200000] [--side 32] [--workers 2]
        [--prefetch 2] [--batch-size 256] [--memory-up-to 12000] [--keep DIR]

It writes synthetic JPEGs (random-texture RGB, SIDE x SIDE, quality 90, 100 per identity
folder) into a temporary folder, then measures each size in a fresh child process that loads
`folder:DIR?stream=yes&...` and draws one epoch of batches with `lfsearch.data.batches`
(decode in `workers` DataLoader processes, normalise + flip on the host CPU "device").
Validation is off and the test split is its minimum, 2 identities (200 images, in memory), so
the figure is the training stream's. For contrast, sizes up to --memory-up-to are also
measured with stream=no (every training image decoded into one uint8 tensor).

Peak RSS: the child's own ru_maxrss (main process) and RUSAGE_CHILDREN's ru_maxrss (the largest
worker); "total" = main + workers x largest worker, an upper bound of the host memory at once.
The table prints MiB and the ratio to the smallest size.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PER_IDENTITY = 100


def write_jpegs(root: Path, n: int, side: int, seed: int = 0) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (16, side, side, 3), dtype=np.uint8)  # 16 textures, re-tinted
    encoded = []
    for k in range(64):
        img = (base[k % 16].astype(np.int16) + rng.integers(-40, 40, 3)).clip(0, 255)
        buf = Image.fromarray(img.astype(np.uint8))
        path = root / "_tmp.jpg"
        buf.save(path, quality=90)
        encoded.append(path.read_bytes())
    (root / "_tmp.jpg").unlink()
    for i in range(n):
        folder = root / f"id{i // PER_IDENTITY:05d}"
        if i % PER_IDENTITY == 0:
            folder.mkdir(exist_ok=True)
        (folder / f"{i % PER_IDENTITY:03d}.jpg").write_bytes(encoded[i % len(encoded)])


def measure(root: str, stream: str, args: argparse.Namespace) -> dict:
    import torch

    from lfsearch import data

    torch.set_num_threads(1)
    start = time.perf_counter()
    bench = data.load(f"folder:{root}?stream={stream}&size={args.side}&channels=3&val=0&test=0"
                      f"&pairs=100&workers={args.workers}&prefetch={args.prefetch}", seed=0)
    loaded = time.perf_counter() - start
    gen = torch.Generator().manual_seed(0)
    seen, start = 0, time.perf_counter()
    for x, y in data.batches(bench.train, args.batch_size, generator=gen, augment="flip"):
        seen += len(y)
    epoch = time.perf_counter() - start
    main = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    worker = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    workers = args.workers if stream == "yes" else 0
    return {"train": seen, "load_s": loaded, "epoch_s": epoch, "main_mib": main,
            "worker_mib": worker if workers else 0.0,
            "total_mib": main + workers * (worker if workers else 0.0)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[3000, 12000, 200000])
    p.add_argument("--side", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--prefetch", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--memory-up-to", type=int, default=12000)
    p.add_argument("--keep", help="write the images here (kept) instead of a temporary folder")
    p.add_argument("--measure", nargs=2, metavar=("DIR", "STREAM"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure[0], args.measure[1], args)))
        return
    rows = []
    with tempfile.TemporaryDirectory(dir=args.keep) as tmp:
        for n in args.sizes:
            root = Path(tmp) / f"n{n}"
            root.mkdir()
            t = time.perf_counter()
            write_jpegs(root, n, args.side)
            print(f"wrote {n} JPEGs of {args.side}x{args.side} in {time.perf_counter() - t:.0f} s",
                  file=sys.stderr)
            for stream in ("yes", "no"):
                if stream == "no" and n > args.memory_up_to:
                    continue
                cmd = [sys.executable, __file__, "--measure", str(root), stream,
                       "--side", str(args.side), "--workers", str(args.workers),
                       "--prefetch", str(args.prefetch), "--batch-size", str(args.batch_size)]
                out = subprocess.run(cmd, check=True, capture_output=True, text=True,
                                     env=dict(os.environ, OMP_NUM_THREADS="1"))
                rows.append({"images": n, "stream": stream, **json.loads(out.stdout)})
                print(rows[-1], file=sys.stderr)
            for child in root.iterdir():  # free the disk before the next size
                for f in child.iterdir():
                    f.unlink()
                child.rmdir()
    base = {s: next(r for r in rows if r["stream"] == s) for s in ("yes", "no")
            if any(r["stream"] == s for r in rows)}
    print(f"side {args.side}, workers {args.workers}, prefetch {args.prefetch}, batch "
          f"{args.batch_size}; load average {os.getloadavg()[0]:.1f}")
    print("| images | path | training images | main MiB | worker MiB | total MiB | "
          "× smallest | epoch s | images/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = r["total_mib"] / base[r["stream"]]["total_mib"]
        print(f"| {r['images']} | {'streamed' if r['stream'] == 'yes' else 'in memory'} | "
              f"{r['train']} | {r['main_mib']:.0f} | {r['worker_mib']:.0f} | "
              f"{r['total_mib']:.0f} | {ratio:.2f} | {r['epoch_s']:.1f} | "
              f"{r['train'] / r['epoch_s']:.0f} |")


if __name__ == "__main__":
    main()
