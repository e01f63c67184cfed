"""The `lfsearch` command line: one sub-command per job.

Bad input (ValueError, FileNotFoundError, KeyError from configuration) is printed on one
line as `lfsearch: error: ...` and the process exits with status 2.
"""

from __future__ import annotations

import argparse
import sys


def _cmd_losses(args: argparse.Namespace) -> int:
    from lfsearch import losses

    print(losses.describe_table())
    return 0


def _format_params(params: dict[str, float], limit: int = 4) -> str:
    items = [f"{k}={v:.3g}" for k, v in list(params.items())[:limit]]
    return ",".join(items) + (",..." if len(params) > limit else "")


def _cmd_search(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from lfsearch.search import search

    bar = None

    def progress(event) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=event.epochs * event.candidates, unit="cand", dynamic_ncols=True,
                       disable=args.quiet, desc="search")
            bar.update(event.epoch * event.candidates)
        if event.kind == "candidate":
            bar.update(1)
            bar.set_postfix_str(f"epoch {event.epoch + 1}/{event.epochs} "
                                f"best {event.best_reward:.4f} {_format_params(event.best_params)}")

    try:
        results = search(args.space, benchmark=args.benchmark, epochs=args.epochs,
                         candidates=args.candidates, seed=args.seed, device=args.device,
                         model=args.model, out=args.out, resume=args.resume, force=args.force,
                         progress=progress)
    finally:
        if bar is not None:
            bar.close()
    metric = results["test_metric"]
    print(f"{results['method']} on {results['benchmark']}: test {metric} = "
          f"{results['test'][metric]:.4f} ({results['candidate_epochs']} candidate-epochs)")
    print(f"run folder: {results['run_dir']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lfsearch",
        description="Search margin-based softmax losses while a network trains "
        "(Random-Softmax, Search-Softmax, AM-LFS) and compare them with hand-crafted margins.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("losses", help="list every loss of the unified family with its formula, "
                       "parameters and defaults")
    p.set_defaults(func=_cmd_losses)

    p = sub.add_parser(
        "search", help="train a network while searching its loss (or with a fixed loss)",
        description="Run the epoch-wise loss search described by a search-space file: every epoch "
        "the controller proposes M loss settings, each trains one epoch from the same weights, "
        "the best on validation is kept. The test split is used once, at the end.")
    p.add_argument("space", help="a search-space TOML file, or a name from search_spaces/ "
                   "(softmax, cosface, arcface, random_softmax, search_softmax, am_lfs, ...)")
    p.add_argument("--benchmark", help="benchmark spec (default: the file's, usually digits): "
                   "digits, digits-closed, mnist:DIR, cifar10:DIR, cifar100:DIR, folder:DIR")
    p.add_argument("--epochs", type=int, help="number of epochs E")
    p.add_argument("--candidates", type=int, help="candidates M trained per epoch")
    p.add_argument("--seed", type=int, help="run seed (default 0)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default auto: cuda if present")
    p.add_argument("--model", help="backbone name (default: the benchmark's)")
    p.add_argument("--out", help="run folder (default runs/<method>-<benchmark>-seed<seed>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out after its "
                   "last completed epoch")
    p.add_argument("--force", action="store_true", help="replace an existing run folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_search)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, NotADirectoryError) as exc:
        message = " ".join(str(exc).split())
        print(f"lfsearch: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lfsearch: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
