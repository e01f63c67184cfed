"""Partial FC against the full class head on CPU: head memory and step time at 100k and 1M
classes (lfsearch/losses/partial_fc.py).

    python3 benchmarks/partial_fc.py [--classes 100000 1000000] [--dim 128] [--batch 64]
        [--rate 0.1] [--loss arcface] [--steps 3] [--threads 1]

Each (classes, head) runs in a fresh child process: build the loss (`losses.build(LOSS,
partial_fc=RATE)` or the full member), one warm-up step, then `--steps` timed forward +
backward steps on random embeddings with labels drawn from all classes. Printed per
configuration: the median step time; the bytes autograd saves for backward in one step
(saved_tensors_hooks, each storage counted once: the N×C logits and the normalised head);
the rise of the child's peak RSS (ru_maxrss) over the process before the head was built
(weight, its gradient and every temporary); and the ratios Partial FC / full. The head's
weight and gradient (C×D each) are the same for both in one process; sharded over K ranks
(lfsearch/losses/sharded_fc.py) each rank holds C/K rows of both.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def child(classes: int, rate: float | None, args: argparse.Namespace) -> dict:
    import torch

    from lfsearch import losses

    torch.set_num_threads(args.threads)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    extra = {} if rate is None else {"partial_fc": rate}
    loss = losses.build(args.loss, embedding_size=args.dim, num_classes=classes, **extra)
    g = torch.Generator().manual_seed(0)
    saved: dict[int, int] = {}

    def pack(t):
        try:
            key = t.untyped_storage().data_ptr()
            saved[key] = max(saved.get(key, 0), t.untyped_storage().nbytes())
        except RuntimeError:
            pass
        return t

    times = []
    for step in range(args.steps + 1):
        x = torch.randn(args.batch, args.dim, generator=g, requires_grad=True)
        y = torch.randint(0, classes, (args.batch,), generator=g)
        saved.clear()
        start = time.perf_counter()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            value = loss(x, y)
        value.backward()
        loss.zero_grad(set_to_none=False)
        if step:
            times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"step_s": statistics.median(times), "saved_mib": sum(saved.values()) / 2**20,
            "rss_mib": (peak - base) / 1024}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--classes", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--rate", type=float, default=0.1)
    p.add_argument("--loss", default="arcface")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        rate = None if args.child[1] == "full" else float(args.child[1])
        print(json.dumps(child(int(args.child[0]), rate, args)))
        return
    print(f"{args.loss}, D = {args.dim}, N = {args.batch}, rate = {args.rate}, "
          f"{args.threads} thread(s), median of {args.steps} steps")
    print(f"{'classes':>9} {'head':>12} {'step ms':>9} {'saved MiB':>10} {'RSS rise MiB':>13}")
    for c in args.classes:
        rows = {}
        for head in ("full", str(args.rate)):
            cmd = [sys.executable, __file__, "--child", str(c), head, "--dim", str(args.dim),
                   "--batch", str(args.batch), "--loss", args.loss, "--steps",
                   str(args.steps), "--threads", str(args.threads)]
            rows[head] = r = json.loads(subprocess.run(cmd, capture_output=True, text=True,
                                                       check=True).stdout.splitlines()[-1])
            label = "full" if head == "full" else f"partial {head}"
            print(f"{c:>9} {label:>12} {1000 * r['step_s']:>9.1f} {r['saved_mib']:>10.1f} "
                  f"{r['rss_mib']:>13.1f}")
        f, s = rows["full"], rows[str(args.rate)]
        print(f"{c:>9} {'ratio':>12} {s['step_s'] / f['step_s']:>9.2f} "
              f"{s['saved_mib'] / f['saved_mib']:>10.2f} {s['rss_mib'] / f['rss_mib']:>13.2f}")


if __name__ == "__main__":
    main()
