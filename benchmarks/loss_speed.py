"""Forward + backward time of every loss member against plain cross entropy and against
pytorch-metric-learning's counterpart, on the same embeddings and class weights.

    python3 benchmarks/loss_speed.py [--device cpu|cuda] [--classes 10 10000] [--repeats R]
                                     [--threads T]

"plain CE" is F.cross_entropy on the same normalised-head logits:
    F.cross_entropy(s * F.linear(F.normalize(x), F.normalize(W)), y)
(head matmul included, as in every member). All callables of one class count are timed
round-robin in one run (each repeat runs every callable once, in turn); the table shows
the median over repeats and the ratios to plain CE and to the pml counterpart.
Targets: every softmax-family member <= 1.5x plain CE and <= 1x its pml counterpart.
CPU runs use one intra-op thread by default (--threads): on a shared machine, multi-thread
timings mostly measure waiting at thread barriers, not the losses.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from lfsearch import losses

try:
    import pytorch_metric_learning.losses as pml
except ImportError:  # pragma: no cover
    pml = None

N, D = 512, 512

# (label, build name, build params, pml constructor or None)
MEMBERS = [
    ("softmax", "softmax", {}, None),
    ("weighted_softmax", "weighted_softmax", {"class_weights": "balanced"}, None),
    ("lsoftmax", "lsoftmax", {"m": 4},
     lambda C: pml.LargeMarginSoftmaxLoss(C, D, margin=4, scale=1)),
    ("sphereface", "sphereface", {"m": 4},
     lambda C: pml.SphereFaceLoss(C, D, margin=4, scale=1)),
    ("l2_softmax", "l2_softmax", {}, None),
    ("normface", "normface", {"s": 16.0},
     lambda C: pml.NormalizedSoftmaxLoss(C, D, temperature=1 / 16.0)),
    ("cosface", "cosface", {"s": 64.0, "m": 0.35},
     lambda C: pml.CosFaceLoss(C, D, margin=0.35, scale=64)),
    ("arcface", "arcface", {"s": 64.0, "m": 0.5},
     lambda C: pml.ArcFaceLoss(C, D, margin=math.degrees(0.5), scale=64)),
    ("combined_margin", "combined_margin", {}, None),
    ("modulated", "modulated", {"a": 3.0}, None),
    ("modulated bins=8", "modulated", {"bins": 8, "a": [1.5] * 8}, None),
    ("am_lfs", "am_lfs", {}, None),
]
JOINT = [
    ("cosface+center", "cosface", {"aux": "center"}),
    ("cosface+range", "cosface", {"aux": "range"}),
    ("cosface+contrastive", "cosface", {"aux": "contrastive"}),
    ("cosface+triplet", "cosface", {"aux": "triplet"}),
]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _step_fn(module, x, y):
    params = [p for p in module.parameters() if p.requires_grad]

    def step():
        x.grad = None
        for p in params:
            p.grad = None
        module(x, y).backward()
    return step


def run(classes: list[int], repeats: int | None, device: torch.device, out=sys.stdout) -> None:
    gen = torch.Generator().manual_seed(0)
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, "
          f"N={N}, D={D}; forward+backward, median of repeats (ms)", file=out)
    for C in classes:
        reps = repeats or (30 if C <= 1000 else 7)
        inner = 5 if C <= 1000 else 1
        x = torch.randn(N, D, generator=gen).to(device).requires_grad_()
        y = torch.randint(0, C, (N,), generator=gen).to(device)
        weight0 = torch.randn(C, D, generator=gen) / math.sqrt(D)

        W = torch.nn.Parameter(weight0.clone().to(device))

        def plain_ce():
            x.grad = None
            W.grad = None
            logits = 64.0 * F.linear(F.normalize(x), F.normalize(W))
            F.cross_entropy(logits, y).backward()

        fns = {"plain CE": plain_ce}
        rows = []
        for label, name, params, pml_ctor in MEMBERS:
            mod = losses.build(name, D, C, **params).to(device)
            with torch.no_grad():
                mod.weight.copy_(weight0)
            fns[label] = _step_fn(mod, x, y)
            pml_label = None
            if pml_ctor is not None and pml is not None:
                ref = pml_ctor(C).to(device)
                with torch.no_grad():
                    ref.W.copy_(weight0.t())
                pml_label = "pml " + label
                fns[pml_label] = _step_fn(ref, x, y)
            rows.append((label, pml_label, True))
        for label, name, params in JOINT:
            mod = losses.build(name, D, C, **params).to(device)
            fns[label] = _step_fn(mod, x, y)
            rows.append((label, None, False))

        for fn in fns.values():  # warm up
            fn()
        times: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(reps):
            for key, fn in fns.items():
                _sync(device)
                t0 = time.perf_counter()
                for _ in range(inner):
                    fn()
                _sync(device)
                times[key].append((time.perf_counter() - t0) / inner * 1e3)
        med = {k: statistics.median(v) for k, v in times.items()}
        base = med["plain CE"]
        print(f"\nC = {C}  (plain CE {base:.3f} ms; {reps} repeats x {inner})", file=out)
        header = f"{'loss':<22}{'ms':>9}{'x CE':>7}{'pml ms':>9}{'x pml':>7}  target"
        print(header, file=out)
        print("-" * len(header), file=out)
        for label, pml_label, family in rows:
            t = med[label]
            r_ce = t / base
            cells = f"{label:<22}{t:>9.3f}{r_ce:>7.2f}"
            ok = r_ce <= 1.5
            if pml_label:
                r_pml = t / med[pml_label]
                cells += f"{med[pml_label]:>9.3f}{r_pml:>7.2f}"
                ok = ok and r_pml <= 1.0
            else:
                cells += f"{'-':>9}{'-':>7}"
            verdict = ("ok" if ok else "MISSED") if family else "(joint, no target)"
            print(f"{cells}  {verdict}", file=out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--classes", type=int, nargs="+", default=[10, 10000])
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads on CPU (default 1; 0 keeps torch's)")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    run(args.classes, args.repeats, torch.device(args.device))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
