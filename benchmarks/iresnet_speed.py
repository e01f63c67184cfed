"""Training throughput of the face backbones at 112x112: images per second of forward +
backward (backbone and an ArcFace head), on CPU and, when there is one, on a CUDA GPU.

    python3 benchmarks/iresnet_speed.py [--models iresnet50 ...] [--device auto|cpu|cuda]
        [--batch-size N] [--iters K] [--repeats R] [--classes C] [--threads T] [--json FILE]

For each model and precision it builds the backbone (lfsearch.models) and an ArcFace head
(lfsearch.losses, s = 64, m = 0.5, C classes), then on random 3x112x112 images in [-1, 1]
(resident on the device) times K steps of forward, loss, backward (gradients zeroed each
step, no optimiser step) after one warm-up step that is not timed. Each of R repeats
interleaves the configurations; the table gives the median images/s over repeats, and the
ratio to the first configuration of the first model (by default IResNet-50 in float32).

Precisions: fp32 everywhere; on CUDA also bf16 and fp16 autocast (what [training] amp
selects) with channels_last images and weights, as lfsearch trains on a GPU. On CUDA every
step ends with torch.cuda.synchronize before the clock is read.
Defaults: CPU batch 8, 3 steps, 3 repeats; CUDA batch 128, 20 steps, 3 repeats.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from lfsearch import losses
from lfsearch import models as models_mod

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def build(name: str, classes: int, device: torch.device, channels_last: bool):
    torch.manual_seed(0)
    model = models_mod.build(name, image_size=112).to(device)
    head = losses.build("arcface", embedding_size=model.embedding_size, num_classes=classes,
                        s=64.0, m=0.5).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, head


def time_steps(model, head, images, labels, *, dtype, iters: int) -> float:
    """Seconds for `iters` forward + loss + backward steps (after one untimed warm-up)."""
    device = images.device
    params = list(model.parameters()) + list(head.parameters())

    def step():
        for p in params:
            p.grad = None
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            value = head(model(images), labels)
        value.backward()

    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["iresnet50"],
                        help="backbones (default iresnet50; e.g. iresnet18 iresnet100 "
                        "mobilefacenet)")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--batch-size", type=int, help="default 8 on CPU, 128 on CUDA")
    parser.add_argument("--iters", type=int, help="timed steps (default 3 on CPU, 20 on CUDA)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--classes", type=int, default=10000, help="ArcFace head classes")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: PyTorch's)")
    parser.add_argument("--precisions", nargs="+", choices=sorted(PRECISIONS),
                        help="default fp32 on CPU; fp32 bf16 fp16 on CUDA")
    parser.add_argument("--json", help="also write the measurements here")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    if cuda and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA GPU here")
    device = torch.device("cuda" if cuda else "cpu")
    batch = args.batch_size or (128 if cuda else 8)
    iters = args.iters or (20 if cuda else 3)
    precisions = args.precisions or (["fp32", "bf16", "fp16"] if cuda else ["fp32"])
    if cuda:
        torch.backends.cudnn.benchmark = True
        name = torch.cuda.get_device_name(device)
    else:
        name = platform.processor() or platform.machine()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# {_dt.date.today()}: {device} ({name}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads, load average {load:.1f}; batch {batch}, "
          f"{iters} steps x {args.repeats} repeats, ArcFace head of {args.classes} classes")

    configs = [(m, p) for m in args.models for p in precisions]
    built = {m: build(m, args.classes, device, channels_last=cuda) for m in args.models}
    g = torch.Generator(device="cpu").manual_seed(0)
    images = (torch.rand(batch, 3, 112, 112, generator=g) * 2 - 1).to(device)
    if cuda:
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, args.classes, (batch,), generator=g).to(device)
    seconds: dict[tuple[str, str], list[float]] = {c: [] for c in configs}
    for _ in range(args.repeats):
        for m, p in configs:
            model, head = built[m]
            seconds[(m, p)].append(time_steps(model, head, images, labels,
                                              dtype=PRECISIONS[p], iters=iters))
    rows = []
    base = None
    for m, p in configs:
        per_step = statistics.median(seconds[(m, p)]) / iters
        ips = batch / per_step
        base = base or ips
        params = sum(t.numel() for t in built[m][0].parameters()) / 1e6
        rows.append({"model": m, "params_M": round(params, 1), "precision": p,
                     "s_per_step": per_step, "images_per_s": ips, "ratio": ips / base})
    print("| model | params | precision | s/step | images/s | × first |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['params_M']}M | {r['precision']} | {r['s_per_step']:.3f} | "
              f"{r['images_per_s']:.1f} | {r['ratio']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": str(device), "name": name,
                                               "batch": batch, "iters": iters, "rows": rows},
                                              indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
