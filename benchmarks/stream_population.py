"""Packed M candidates against sequential on the same streamed training split: packing decodes
each batch once for all M, one candidate after another decodes the epoch M times.

    python3 benchmarks/stream_population.py [--images 1200] [--side 32] [--candidates 4]
        [--workers 0 2] [--batch-size 64] [--repeats 2]

It writes --images synthetic RGB JPEGs (SIDE x SIDE, quality 90, 100 per identity folder) and
trains one epoch of M cosface candidates (m = 0.1 .. 0.4) with `digits_net` (3 x SIDE x SIDE,
64-d) through `lfsearch.search.packed.run_epoch` ("sequential" and "packed", validation on the
in-memory validation split), for the split in memory (`stream=no`) and streamed with each
--workers count. Configurations are interleaved within each repeat; the table shows the median
epoch time, packed / sequential, and the images decoded per epoch (counted).
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from lfsearch import losses, models
from lfsearch.search import candidate as candidate_mod
from lfsearch.search import population as population_mod

sys.path.insert(0, str(Path(__file__).resolve().parent))
from data_memory import write_jpegs  # noqa: E402  (the same synthetic identity folder)

from lfsearch import data
from lfsearch.data import stream  # noqa: E402

DECODED: collections.Counter = collections.Counter()


def _counting_decode(real):
    def decode(blob, name, **kw):
        DECODED["images"] += 1
        return real(blob, name, **kw)
    return decode


def epoch_seconds(bench, mode: str, m: int, batch_size: int) -> float:
    """One epoch of m cosface candidates by `mode`, from the same start state."""
    torch.manual_seed(0)
    c, (h, w) = bench.in_channels, bench.image_size
    model = models.build("digits_net", embedding_size=64, in_channels=c, image_size=(h, w))
    loss = losses.build("cosface", embedding_size=64, num_classes=bench.num_classes, s=16.0)
    opt = candidate_mod.make_optimizer("sgd", list(model.parameters()) + list(loss.parameters()),
                                    lr=0.05, momentum=0.9, weight_decay=5e-4)
    trainee = candidate_mod.Trainee(model, loss, opt)
    params = [{"m": 0.1 * (i + 1)} for i in range(m)]
    validations = [candidate_mod.Validation("val", bench.val, "verification_accuracy")]
    t = time.perf_counter()
    population = population_mod.Population.choose(mode, "cpu")
    population.run_epoch(trainee, trainee.state(), params, train=bench.train,
                         validations=validations, batch_size=batch_size, lr=0.05, data_seed=1,
                         candidate_seeds=list(range(m)), augment="flip")
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=1200)
    p.add_argument("--side", type=int, default=32)
    p.add_argument("--candidates", type=int, default=4)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(1)
    stream.decode_one = _counting_decode(stream.decode_one)  # workers=0: counted here
    with tempfile.TemporaryDirectory() as tmp:
        write_jpegs(Path(tmp), args.images, args.side)
        opts = f"size={args.side}&channels=3&val=0.1&test=0&pairs=100"
        paths = {"in memory": f"folder:{tmp}?{opts}&stream=no"}
        paths.update({f"streamed, {w} workers": f"folder:{tmp}?{opts}&stream=yes&workers={w}"
                      for w in args.workers})
        benches = {name: data.load(spec, seed=0) for name, spec in paths.items()}
        n = len(next(iter(benches.values())).train)
        print(f"{n} training images {args.side}x{args.side} RGB, M = {args.candidates}, batch "
              f"{args.batch_size}, digits_net 64-d, cosface; {os.cpu_count()} CPUs, 1 thread, "
              f"load average {os.getloadavg()[0]:.1f}")
        configs = [(name, mode) for name in benches for mode in ("sequential", "packed")]
        times: dict[tuple, list[float]] = {c: [] for c in configs}
        decoded: dict[tuple, int] = {}
        for _ in range(args.repeats):
            for name, mode in configs:
                DECODED.clear()
                times[(name, mode)].append(epoch_seconds(benches[name], mode, args.candidates,
                                                         args.batch_size))
                decoded[(name, mode)] = DECODED["images"]
        print("\n| training split | path | s/epoch | packed / sequential | images decoded "
              "in this process |\n|---|---|---|---|---|")
        for name, mode in configs:
            t = statistics.median(times[(name, mode)])
            ratio = (f"{t / statistics.median(times[(name, 'sequential')]):.2f}"
                     if mode == "packed" else "–")
            count = decoded[(name, mode)] if "0 workers" in name or name == "in memory" \
                else "(in workers)"
            print(f"| {name} | {mode} M={args.candidates} | {t:.1f} | {ratio} | {count} |")
        print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
