"""Forward + backward time of every loss member against plain cross entropy and against
pytorch-metric-learning's counterpart, on the same embeddings and class weights.

    python3 benchmarks/loss_speed.py [--device cpu|cuda] [--classes 10 10000] [--repeats R]
                                     [--threads T] [--only LABEL ...]

"plain CE" is F.cross_entropy on the same normalised-head logits:
    F.cross_entropy(s * F.linear(F.normalize(x), F.normalize(W)), y)
(head matmul included, as in every member). All callables of one class count are timed
round-robin in one run (each repeat runs every callable once, in turn); the table shows
the median over repeats and the ratios to plain CE and to the pml counterpart.
Targets: every softmax-family member <= 1.5x plain CE and <= 1x its pml counterpart.
Sub-center ArcFace's head has K = 3 sub-centres per class, 3C rows: its matmul alone costs
~3x plain CE's; the line under the table gives its ratio to plain CE on a 3C-row head.
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

try:
    import pytorch_metric_learning.losses as pml
except ImportError:  # pragma: no cover
    pml = None
from lfsearch import losses as losses_mod

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
    # the members published after ArcFace (lfsearch/losses/ (adaptive_margins.py, negative_reweighting.py, subcenters.py))
    ("adaface", "adaface", {}, None),
    ("magface", "magface", {}, None),
    ("elasticface_arc", "elasticface_arc", {}, None),
    ("elasticface_cos", "elasticface_cos", {}, None),
    ("elasticface_arc_plus", "elasticface_arc_plus", {}, None),
    ("curricularface", "curricularface", {}, None),
    ("mv_softmax", "mv_softmax", {}, None),
    ("mv_softmax arc", "mv_softmax", {"margin_type": "arc", "m": 0.5}, None),
    ("subcenter_arcface", "subcenter_arcface", {},
     lambda C: pml.SubCenterArcFaceLoss(num_classes=C, embedding_size=D,
                                        margin=math.degrees(0.5), scale=64, sub_centers=3)),
    ("adacos", "adacos", {}, None),
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


def run(classes: list[int], repeats: int | None, device: torch.device, out=sys.stdout,
        only: list[str] | None = None) -> None:
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

        W3 = torch.nn.Parameter(torch.randn(3 * C, D, generator=gen).to(device) / math.sqrt(D))

        def plain_ce_3c():  # the head of sub-center ArcFace (K = 3): 3C rows
            x.grad = None
            W3.grad = None
            logits = 64.0 * F.linear(F.normalize(x), F.normalize(W3))
            F.cross_entropy(logits, y).backward()

        fns = {"plain CE": plain_ce, "plain CE 3C": plain_ce_3c}
        rows = []
        for label, name, params, pml_ctor in MEMBERS:
            if only and label not in only:
                continue
            mod = losses_mod.build(name, embedding_size=D, num_classes=C, **params).to(device)
            w0 = weight0 if mod.weight.shape == weight0.shape else mod.weight.detach().cpu()
            with torch.no_grad():
                mod.weight.copy_(w0)
            fns[label] = _step_fn(mod, x, y)
            pml_label = None
            if pml_ctor is not None and pml is not None:
                ref = pml_ctor(C).to(device)
                with torch.no_grad():
                    ref.W.copy_(w0.t())
                pml_label = "pml " + label
                fns[pml_label] = _step_fn(ref, x, y)
            rows.append((label, pml_label, True))
        for label, name, params in (JOINT if not only else []):
            mod = losses_mod.build(name, embedding_size=D, num_classes=C, **params).to(device)
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
        if "subcenter_arcface" in med:
            print(f"subcenter_arcface / plain CE on a 3C-row head (the same matmul): "
                  f"{med['subcenter_arcface'] / med['plain CE 3C']:.2f}; plain CE 3C / plain CE: "
                  f"{med['plain CE 3C'] / base:.2f}", file=out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--classes", type=int, nargs="+", default=[10, 10000])
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch intra-op threads on CPU (default 1; 0 keeps torch's)")
    parser.add_argument("--only", nargs="+", default=None, metavar="LABEL",
                        help="time only these members (labels of the table), besides plain CE")
    args = parser.parse_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    run(args.classes, args.repeats, torch.device(args.device), only=args.only)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
