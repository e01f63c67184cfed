"""Time per epoch of a population trained one after another vs packed, and peak memory.

    python3 benchmarks/population.py [--device auto|cpu|cuda] [--models lsoftmax_mnist ...]
        [--batch-size 256] [--candidates 4 8] [--batches B] [--repeats R] [--compile]
        [--no-accel] [--no-large-head]

For each model (default: the L-Softmax paper's MNIST and CIFAR-10 CNNs) on synthetic tensors
of the datasets' shapes (MNIST 60 000 x 1x28x28, CIFAR 50 000 x 3x32x32; no dataset needed),
resident on the device, it measures with the library's own epoch functions
(`lfsearch.search.packed.run_epoch`, validation on 512 synthetic images included):

  single        one softmax model (one candidate, the sequential path)
  sequential M  M candidates (modulated losses, a = 1 .. 8) one after another
  packed M      the same M candidates packed (torch.func.vmap over stacked parameters)

each run after a one-batch warm-up epoch (not timed: oneDNN/cuDNN set-up, torch.compile),
and prints seconds per step, seconds per epoch, the ratios packed / sequential and
packed / single, and peak memory. Configurations are interleaved within each repeat and the
table shows the median over repeats. With --batches B smaller than an epoch (the CPU default,
so that it finishes in minutes) the epoch time is the time per step (B steps measured) times
the steps of a real epoch, marked "est.".

Peak memory (warm-up and timed epoch): on CUDA torch.cuda.max_memory_allocated (reset
after setup); on CPU every run is a fresh child process and the figure is the rise of its
peak resident set size (resource.getrusage ru_maxrss) over its peak after setup (tensors
plus allocator and oneDNN workspaces, not only live tensors).

The large-head check trains one step of M packed candidates with a 100 000-class x 512-d
cosface head and counts the N x C matrices alive at once (a TorchDispatchMode that tracks
tensors of N*C elements): the target is at most one per candidate.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import weakref

import torch

from lfsearch import data
from lfsearch import losses as losses_mod
from lfsearch import models as models_mod
from lfsearch.search import accel as accel_mod
from lfsearch.search import candidate as candidate_mod
from lfsearch.search import packed as packed_mod
from lfsearch.search import population as population_mod

# name -> (in_channels, image size, classes, training images of the real dataset)
MODELS = {
    "lsoftmax_mnist": (1, 28, 10, 60000),
    "lsoftmax_cifar10": (3, 32, 10, 50000),
    "lsoftmax_cifar100": (3, 32, 100, 50000),
    "digits_net": (1, 8, 10, 1079),
}
VAL_IMAGES = 512


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _setup(spec: dict):
    """Synthetic data, a trainee and the epoch's arguments for one configuration."""
    device = torch.device(spec["device"])
    c, size, classes, _ = MODELS[spec["model"]]
    n = spec["batches"] * spec["batch_size"]
    gen = torch.Generator().manual_seed(0)
    train = data.LabelledImages(torch.randn(n, c, size, size, generator=gen),
                                torch.randint(0, classes, (n,), generator=gen)).to(device)
    val = data.ClassificationSplit(torch.randn(VAL_IMAGES, c, size, size, generator=gen),
                                   torch.randint(0, classes, (VAL_IMAGES,), generator=gen)
                                   ).to(device)
    torch.manual_seed(0)
    model = models_mod.build(spec["model"]).to(device)
    m = spec["m"]
    if spec["mode"] == "single":
        loss = losses_mod.build("softmax", embedding_size=model.embedding_size, num_classes=classes)
        params = [{}]
    else:
        loss = losses_mod.build("modulated", embedding_size=model.embedding_size, num_classes=classes,
                                s=16.0)
        params = [{"a": 1.0 + 7.0 * i / max(m - 1, 1)} for i in range(m)]
    loss = loss.to(device)
    opt = candidate_mod.make_optimizer("sgd", list(model.parameters()) + list(loss.parameters()),
                                    lr=0.01, momentum=0.9, weight_decay=5e-4)
    trainee = candidate_mod.Trainee(model, loss, opt)
    accel = (accel_mod.Accel.for_device(device, compile=spec["compile"]) if spec["accel"]
             else accel_mod.Accel(compile=spec["compile"]))
    mode = "sequential" if spec["mode"] == "single" else spec["mode"]
    kwargs = dict(train=train, validations=[candidate_mod.Validation("val", val, "accuracy")],
                  batch_size=spec["batch_size"], lr=0.01, data_seed=1,
                  candidate_seeds=list(range(len(params))))
    population = population_mod.Population.choose(mode, device, accel)
    start = trainee.state()
    b = spec["batch_size"]
    first = train.subset(slice(0, b))

    def epoch(warmup: bool = False):
        args = dict(kwargs, train=first) if warmup else kwargs
        return population.run_epoch(trainee, start, params, **args)
    return device, epoch


def measure(spec: dict) -> dict:
    """One configuration: a one-batch warm-up epoch (kernel and oneDNN/cuDNN set-up, compile),
    then the timed epoch; seconds and peak memory (warm-up included)."""
    device, epoch = _setup(spec)
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    epoch(warmup=True)
    _sync(device)
    t0 = time.perf_counter()
    results = epoch()
    _sync(device)
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = (after - before) / 1024  # ru_maxrss is in KiB on Linux
    return {"seconds": seconds, "peak_mib": peak, "status": [r.status for r in results]}


def _child(spec: dict) -> dict:
    """measure() in a fresh process (CPU: its peak RSS belongs to this run alone)."""
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"child run {spec} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


class _CountNC(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts N x C tensors (distinct storages of exactly N*C elements) alive at once."""

    def __init__(self, numel: int) -> None:
        super().__init__()
        self.numel, self.live, self.peak = numel, {}, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.numel() == self.numel:
                storage = t.untyped_storage()
                key = storage.data_ptr()
                if key not in self.live:
                    self.live[key] = weakref.ref(storage, lambda _, k=key: self.live.pop(k, None))
                    self.peak = max(self.peak, len(self.live))
        return out


def large_head(device: torch.device, m: int, n: int, classes: int = 100_000,
               dim: int = 512) -> str:
    """One packed step of M cosface candidates with a classes x dim head."""
    torch.manual_seed(0)
    model = models_mod.build("digits_net", embedding_size=dim).to(device)
    loss = losses_mod.build("cosface", embedding_size=dim, num_classes=classes).to(device)
    opt = candidate_mod.make_optimizer("sgd", list(model.parameters()) + list(loss.parameters()),
                                    lr=0.01, momentum=0.9, weight_decay=5e-4)
    trainee = candidate_mod.Trainee(model, loss, opt)
    train = data.LabelledImages(torch.randn(2 * n, 1, 8, 8),
                                torch.randint(0, classes, (2 * n,))).to(device)
    params = [{"m": 0.1 * (i + 1)} for i in range(m)]
    pop = packed_mod.PackedPopulation(trainee, trainee.state(), params, lr=0.01,
                                   accel=accel_mod.Accel.for_device(device))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    t0 = time.perf_counter()
    with _CountNC(n * classes) as counter:
        result = pop.train_epoch(train, batch_size=n, generator=torch.Generator().manual_seed(0))
    _sync(device)
    seconds = (time.perf_counter() - t0) / 2
    mem = (f", peak memory {torch.cuda.max_memory_allocated(device) / 2**20:.0f} MiB"
           if device.type == "cuda" else "")
    verdict = "ok" if counter.peak <= m else "MISSED"
    return (f"large head: {classes} classes x {dim}-d cosface, N = {n}, M = {m} packed: "
            f"{counter.peak} N x C matrices alive at peak (target <= {m}, one per candidate): "
            f"{verdict}; {seconds:.2f} s/step{mem}; status {[s for _, s in result]}")


def _environment(device: torch.device, args) -> str:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or "cpu"
        try:
            with open("/proc/cpuinfo") as f:
                name = next(line.split(":", 1)[1].strip() for line in f
                            if line.startswith("model name"))
        except (OSError, StopIteration):
            pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    accel = (accel_mod.Accel.for_device(device, compile=args.compile) if not args.no_accel
             else accel_mod.Accel(compile=args.compile))
    return (f"{_dt.datetime.now().isoformat(timespec='seconds')}  device {device} ({name}), "
            f"torch {torch.__version__}, python {platform.python_version()}, "
            f"threads {torch.get_num_threads()}, load average {load:.1f}\n"
            f"accel: autocast={accel.autocast}, channels_last={accel.channels_last}, "
            f"compile={accel.compile}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--models", nargs="+", default=["lsoftmax_mnist", "lsoftmax_cifar10"],
                        choices=sorted(MODELS))
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--candidates", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--batches", type=int, default=None,
                        help="steps measured per epoch (default: a whole epoch on CUDA, 1 on CPU)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="interleaved repeats, median reported (default: 3 on CUDA, 1 on CPU)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the backbones")
    parser.add_argument("--no-accel", action="store_true",
                        help="no bf16 autocast / channels_last on CUDA")
    parser.add_argument("--no-large-head", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(measure(spec)))
        return 0
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                          else ("cpu" if args.device == "auto" else args.device))
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    repeats = args.repeats or (3 if cuda else 1)
    print(_environment(device, args))
    print(f"batch {args.batch_size}; {repeats} interleaved repeats, median; memory: "
          + ("torch.cuda.max_memory_allocated" if cuda
             else "rise of peak RSS (ru_maxrss) in a fresh process per run"))
    for name in args.models:
        steps = MODELS[name][3] // args.batch_size
        batches = args.batches or (steps if cuda else 1)
        configs = [("single", 1)] + [(mode, m) for m in args.candidates
                                     for mode in ("sequential", "packed")]
        times: dict[tuple, list[float]] = {c: [] for c in configs}
        peaks: dict[tuple, list[float]] = {c: [] for c in configs}
        for _ in range(repeats):
            for mode, m in configs:
                spec = dict(model=name, mode=mode, m=m, device=str(device),
                            batch_size=args.batch_size, batches=batches,
                            compile=args.compile, accel=not args.no_accel)
                out = measure(spec) if cuda else _child(spec)
                times[(mode, m)].append(out["seconds"] / batches)
                peaks[(mode, m)].append(out["peak_mib"])
                print(f"  [{name} {mode} M={m}: {out['seconds']:.2f} s, "
                      f"{out['peak_mib']:.0f} MiB]", file=sys.stderr, flush=True)
        est = "" if batches == steps else " est."
        print(f"\n{name}: {steps} steps per epoch, {batches} measured per run")
        header = (f"{'configuration':<16}{'s/step':>9}{'s/epoch' + est:>14}{'x single':>10}"
                  f"{'x sequential':>14}{'peak MiB':>10}")
        print(header)
        print("-" * len(header))
        med = {c: statistics.median(v) for c, v in times.items()}
        for mode, m in configs:
            t = med[(mode, m)]
            label = "single" if mode == "single" else f"{mode} M={m}"
            vs_seq = f"{t / med[('sequential', m)]:.2f}" if mode == "packed" else "-"
            print(f"{label:<16}{t:>9.3f}{t * steps:>14.1f}{t / med[('single', 1)]:>10.2f}"
                  f"{vs_seq:>14}{max(peaks[(mode, m)]):>10.0f}")
        for m in args.candidates:
            ratio = med[("packed", m)] / med[("sequential", m)]
            single = med[("packed", m)] / med[("single", 1)]
            target = ("packed <= 1.6 x single (M = 4)" if cuda and m == 4
                      else "packed <= sequential")
            ok = single <= 1.6 if cuda and m == 4 else ratio <= 1.0
            print(f"M={m}: packed/sequential {ratio:.2f}, packed/single {single:.2f}  "
                  f"[target {target}: {'met' if ok else 'NOT met'}]")
    print(f"\ntraining.packing = 'auto' trains {accel_mod.resolve_mode('auto', device)} on "
          f"{device.type}")
    if not args.no_large_head:
        print()
        print(large_head(device, m=4, n=args.batch_size if cuda else 64))
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
