"""One part of the GPU check (benchmarks/gpu_check.sh runs each under its own timeout).

    python3 benchmarks/gpu_check.py PART --json FILE [--dry]

Parts (each prints one line per figure, `[part] name: value`, and writes its figures as JSON):
  population  one epoch of one model, M = 4 sequential and M = 4 packed (the memory guard's
              plan printed too): face_cnn and iresnet50 at 112x112, batch 128, bf16 on CUDA;
              time ratios and peak memory (CUDA: max_memory_allocated); and what packing =
              "auto" chooses (search/packing_trial.py: its speed trial, packed/sequential
              time ratio per step of M = 4; --dry forces the trial on CPU)
  heads       IResNet-50 forward + backward images/s at 112x112 (bf16), ArcFace head of 100k
              classes vs a Linear head with plain cross entropy; ratio
  syncs       host reads per training step (Tensor.item/tolist/bool/float/int/cpu/numpy
              counted), sequential and packed, over 2 and 6 steps
  stream      streamed images/s of one epoch against the number of DataLoader workers
--dry: CPU, every size shrunk (proves the plumbing; its figures mean nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lfsearch import data, losses, models
from lfsearch.search import accel as accel_mod
from lfsearch.search import candidate as candidate_mod
from lfsearch.search import memory, packed, packing_trial, sequential


def device_and_sizes(dry: bool) -> tuple[torch.device, dict]:
    if dry:
        return torch.device("cpu"), dict(size=(32, 32), batch=8, steps=3, classes=50,
                                         big_classes=1000, r50="iresnet18", n_stream=64)
    if not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device (run with DRY=1 on CPU)")
    return torch.device("cuda"), dict(size=(112, 112), batch=128, steps=40, classes=1000,
                                      big_classes=100_000, r50="iresnet50", n_stream=4096)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")


def trainee(name: str, size, classes: int, device, loss="cosface") -> candidate_mod.Trainee:
    torch.manual_seed(0)
    model = models.build(name, embedding_size=128, in_channels=3, image_size=size).to(device)
    head = losses.build(loss, embedding_size=128, num_classes=classes, s=32.0).to(device)
    opt = candidate_mod.make_optimizer("sgd", list(model.parameters()) + list(head.parameters()),
                                       lr=0.05, momentum=0.9, weight_decay=5e-4)
    return candidate_mod.Trainee(model, head, opt)


def synthetic(n: int, size, classes: int, device) -> data.LabelledImages:
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, *size), generator=gen, dtype=torch.uint8)
    labels = torch.randint(0, classes, (n,), generator=gen)
    return data.LabelledImages(images.to(device), labels.to(device), data.PixelScale())


def part_population(dry: bool, out: dict) -> None:
    device, z = device_and_sizes(dry)
    acc = accel_mod.Accel.for_device(device)
    accel_mod.apply_backends(device)
    params = [{"m": m} for m in (0.1, 0.2, 0.3, 0.4)]
    for name in ("face_cnn", z["r50"]):
        train = synthetic(z["batch"] * z["steps"], z["size"], z["classes"], device)
        t = trainee(name, z["size"], z["classes"], device)
        plan = memory.plan_for(t.model, t.loss, t.optimizer, candidates=4,
                               batch_size=z["batch"], image_shape=(3, *z["size"]),
                               num_classes=z["classes"], device=device, autocast=acc.autocast)
        val = synthetic(256, z["size"], z["classes"], device)
        validations = [candidate_mod.Validation("val", data.ClassificationSplit(
            val.images, val.labels, val.pixels), "accuracy")]
        kw = dict(train=train, validations=validations, batch_size=z["batch"], lr=0.05,
                  data_seed=0)
        runs = {
            "single": lambda: sequential.run_epoch_sequential(
                t, t.state(), params[:1], candidate_seeds=[0], autocast_dtype=acc.autocast, **kw),
            "sequential4": lambda: sequential.run_epoch_sequential(
                t, t.state(), params, candidate_seeds=[0, 1, 2, 3], autocast_dtype=acc.autocast,
                **kw),
            "packed4": lambda: packed.run_epoch_packed(t, t.state(), params,
                                                       candidate_seeds=[0, 1, 2, 3], accel=acc,
                                                       **kw),
        }
        figures = {"plan": plan.describe()}
        auto = packing_trial.decide(  # what a run's packing = "auto" would choose here
            "auto", device, acc, plan=lambda: plan, force_trial=dry,
            trial=lambda chunk: packing_trial.measure(
                t, train, {}, candidates=4, chunk=chunk, batch_size=z["batch"], lr=0.05,
                accel=acc))
        figures["auto"] = auto.describe()
        ratio = auto.trial.ratio if auto.trial is not None else None
        print(f"[population] {name}: auto chose {auto.mode} chunk {auto.chunk} ({auto.reason}"
              + (f": packed {auto.trial.packed_s_per_step:.4f} s vs sequential "
                 f"{auto.trial.sequential_s_per_step:.4f} s per step of 4, ratio {ratio:.3f}"
                 if ratio is not None else f": {auto.detail}") + ")", flush=True)
        peak_reset(device)
        for key, run in runs.items():
            try:
                run()  # warm-up (cudnn.benchmark, allocator)
                sync(device)
                peak_reset(device)
                t0 = time.perf_counter()
                run()
                sync(device)
                figures[key] = {"seconds": time.perf_counter() - t0, "peak_gib": peak_gib(device)}
            except torch.OutOfMemoryError as exc:  # the figure is that it does not fit
                figures[key] = {"error": f"out of memory: {str(exc)[:120]}"}
                peak_reset(device)
        s = {k: v.get("seconds") for k, v in figures.items() if isinstance(v, dict)}
        if s.get("packed4") and s.get("single"):
            figures["packed4_over_single"] = s["packed4"] / s["single"]
        if s.get("packed4") and s.get("sequential4"):
            figures["packed4_over_sequential4"] = s["packed4"] / s["sequential4"]
        if device.type == "cuda" and "peak_gib" in figures.get("packed4", {}):
            est = (plan.fixed_bytes + 4 * (z["batch"] * plan.activation_bytes_per_image
                                           * memory.SAFETY + plan.state_bytes_per_candidate))
            figures["packed4_peak_over_estimate"] = figures["packed4"]["peak_gib"] * 2**30 / est
        out[name] = figures
        print(f"[population] {name}: plan {plan.mode} chunk {plan.chunk} "
              f"({plan.activation_bytes_per_image / 2**20:.1f} MiB/image); "
              + "; ".join(f"{k} {v['seconds']:.2f}s peak {v['peak_gib']:.2f} GiB"
                          if "seconds" in v else f"{k} {v['error']}"
                          for k, v in figures.items() if k in runs)
              + f"; packed4/single {figures.get('packed4_over_single', float('nan')):.2f}"
              + f"; packed4/sequential4 {figures.get('packed4_over_sequential4', float('nan')):.2f}",
              flush=True)


def part_heads(dry: bool, out: dict) -> None:
    device, z = device_and_sizes(dry)
    accel_mod.apply_backends(device)
    dtype = torch.bfloat16 if device.type == "cuda" else None
    size, n = z["size"], z["batch"]
    torch.manual_seed(0)
    model = models.build(z["r50"], embedding_size=512, in_channels=3, image_size=size).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    x = torch.randn(n, 3, *size, device=device)
    y = torch.randint(0, z["big_classes"], (n,), device=device)
    heads = {"arcface": losses.build("arcface", embedding_size=512,
                                     num_classes=z["big_classes"], s=64.0).to(device),
             "linear_ce": torch.nn.Linear(512, z["big_classes"], bias=False).to(device)}
    for key, head in heads.items():
        params = list(model.parameters()) + list(head.parameters())

        def step():
            with torch.autocast(device.type, dtype=dtype or torch.float32,
                                enabled=dtype is not None):
                e = model(x)
                value = (head(e, y) if key == "arcface"
                         else torch.nn.functional.cross_entropy(head(e), y))
            value.backward()
            for p in params:
                p.grad = None

        for _ in range(3):
            step()
        sync(device)
        reps = 3 if dry else 20
        t0 = time.perf_counter()
        for _ in range(reps):
            step()
        sync(device)
        out[key] = {"images_per_s": reps * n / (time.perf_counter() - t0)}
    out["arcface_time_over_linear_ce"] = (out["linear_ce"]["images_per_s"]
                                          / out["arcface"]["images_per_s"])
    print(f"[heads] {z['r50']} {size[0]}x{size[1]} {z['big_classes']} classes: arcface "
          f"{out['arcface']['images_per_s']:.0f} img/s, linear+CE "
          f"{out['linear_ce']['images_per_s']:.0f} img/s, time ratio "
          f"{out['arcface_time_over_linear_ce']:.2f}", flush=True)


def part_syncs(dry: bool, out: dict) -> None:
    device, z = device_and_sizes(dry)
    counted = ("item", "tolist", "__bool__", "__float__", "__int__", "cpu", "numpy")
    reals = {k: getattr(torch.Tensor, k) for k in counted}
    count = [0]

    def wrap(real):
        def counting(t, *a, **k):
            count[0] += 1
            return real(t, *a, **k)
        return counting

    size, batch = (32, 32), 16
    for path in ("sequential", "packed"):
        reads = []
        for steps in (2, 6):
            train = synthetic(batch * steps, size, 20, device)
            t = trainee("face_cnn", size, 20, device)
            gen = torch.Generator().manual_seed(0)
            for k in counted:
                setattr(torch.Tensor, k, wrap(reals[k]))
            count[0] = 0
            try:
                if path == "sequential":
                    candidate_mod.train_one_epoch(t, train, batch_size=batch, generator=gen,
                                                  lr=0.05)
                else:
                    pop = packed.PackedPopulation(t, t.state(), [{"m": 0.1}, {"m": 0.3}],
                                                  lr=0.05)
                    pop.train_epoch(train, batch_size=batch, generator=gen)
            finally:
                for k in counted:
                    setattr(torch.Tensor, k, reals[k])
            reads.append(count[0])
        per_step = (reads[1] - reads[0]) / 4
        out[path] = {"reads_2_steps": reads[0], "reads_6_steps": reads[1],
                     "reads_per_step": per_step}
        print(f"[syncs] {path}: host reads per step {per_step:.2f} "
              f"(2 steps {reads[0]}, 6 steps {reads[1]})", flush=True)


def part_stream(dry: bool, out: dict) -> None:
    device, z = device_and_sizes(dry)
    from PIL import Image

    root = Path(tempfile.mkdtemp(prefix="gpu_check_stream_"))
    rng = np.random.default_rng(0)
    n = z["n_stream"]
    for i in range(n):
        folder = root / f"id{i % 64:03d}"
        folder.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)).save(
            folder / f"{i}.jpg", quality=90)
    usable = len(os.sched_getaffinity(0))
    for workers in sorted({0, 2, min(4, usable), usable}):
        bench = data.load(f"folder-closed:{root}?size=112x112&channels=3&stream=yes&"
                          f"workers={workers}&val=0.1&test=0.1", seed=0, device=device)
        gen = torch.Generator().manual_seed(0)
        t0, seen = time.perf_counter(), 0
        for images, labels in data.batches(bench.train, 64, generator=gen, drop_last=True):
            seen += len(labels)
        sync(device)
        rate = seen / (time.perf_counter() - t0)
        out[f"workers_{workers}"] = {"images_per_s": rate}
        print(f"[stream] workers {workers}: {rate:.0f} images/s (one epoch, first: workers "
              "start)", flush=True)


PARTS = {"population": part_population, "heads": part_heads, "syncs": part_syncs,
         "stream": part_stream}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("part", choices=sorted(PARTS))
    ap.add_argument("--json", required=True, help="where this part's figures go")
    ap.add_argument("--dry", action="store_true", help="CPU, tiny sizes")
    args = ap.parse_args(argv)
    out: dict = {}
    try:
        PARTS[args.part](args.dry, out)
    finally:
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
