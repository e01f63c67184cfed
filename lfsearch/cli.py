"""The `lfsearch` command line: one sub-command per job.

Bad input (ValueError, FileNotFoundError, KeyError from configuration, an argument argparse
refuses, a path that cannot be created) is printed on one line as `lfsearch: error: ...` and
the process exits with status 2. Ctrl-C and SIGTERM print `lfsearch: interrupted` and exit
with status 130; a run folder is then marked interrupted (docs/faults.md).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C: run folders are marked interrupted, a study's trial is
    FAIL and queued again."""


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line (not the whole usage) and exits 2."""

    def error(self, message: str):
        text = " ".join(message.split())
        hint = f" (see {self.prog} --help)" if "required" in text or "invalid choice" in text \
            else ""
        self.exit(2, f"lfsearch: error: {text}{hint}\n")


def _cmd_losses(args: argparse.Namespace) -> int:
    from lfsearch import losses

    print(losses.describe_table())
    return 0


def _format_params(params: dict[str, float], limit: int = 4) -> str:
    items = [f"{k}={v:.3g}" for k, v in list(params.items())[:limit]]
    return ",".join(items) + (",..." if len(params) > limit else "")


def _cmd_search(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from lfsearch.distributed import RankFailure
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
                         model=args.model, threads=args.threads, out=args.out,
                         resume=args.resume, force=args.force, progress=progress,
                         dist_timeout=args.dist_timeout)
    except RankFailure as exc:  # under torchrun: a rank died, hung or was stopped
        print(f"lfsearch: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    finally:
        if bar is not None:
            bar.close()
    if "test_metric" not in results:  # a rank other than 0 under torchrun: rank 0 reports
        return 0
    metric = results["test_metric"]
    print(f"{results['method']} on {results['benchmark']}: test {metric} = "
          f"{results['test'][metric]:.4f} ({results['candidate_epochs']} candidate-epochs)")
    print(f"run folder: {results['run_dir']}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from lfsearch.compare import compare, parse_spaces, parse_seeds

    bar = None

    def progress(event) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=event.total, unit="run", dynamic_ncols=True, disable=args.quiet,
                       desc="compare")
        run = event.run
        label = f"{run.benchmark} {run.method} seed {run.seed}"
        if event.kind == "start":
            bar.set_postfix_str(label)
        elif event.kind == "search" and event.search.kind == "candidate":
            s = event.search
            bar.set_postfix_str(f"{label}: epoch {s.epoch + 1}/{s.epochs} "
                                f"cand {s.candidate + 1}/{s.candidates}")
        elif event.kind in ("done", "skip"):
            bar.update(1)

    benchmarks = args.benchmark or ["digits"]
    spaces = parse_spaces(args.spaces)
    seeds = parse_seeds(args.seeds)
    try:
        result = compare(benchmarks, spaces, seeds, out=args.out, epochs=args.epochs,
                         candidates=args.candidates, model=args.model, device=args.device,
                         metric=args.metric, force=args.force, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    done = list(result["done"].values())
    print(f"{len(done)} runs: {done.count('ran')} ran, {done.count('resumed')} resumed, "
          f"{done.count('skipped')} already complete")
    print(result["files"]["markdown"].read_text(), end="")
    print(f"compare folder: {result['out']} (table.csv, table.md, runs.csv); "
          f"figures and report: lfsearch report {result['out']}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from lfsearch.report import report

    written = report(args.dir, roc=not args.no_roc)
    print(f"report: {written['markdown']} and {written['html']} "
          f"({len(written['figures'])} figures in {written['markdown'].parent / 'figures'})")
    return 0


def _cmd_study(args: argparse.Namespace) -> int:
    from lfsearch.study import run_study

    def progress(event) -> None:
        if args.quiet:
            return
        params = _format_params(event.params)
        if event.kind == "trial_start":
            print(f"trial {event.trial} started: {params}", flush=True)
        elif event.kind == "trial_end":
            value = "" if event.value is None else f" reward {event.value:.4f}"
            took = "" if event.seconds is None else f" in {event.seconds:.1f} s"
            print(f"trial {event.trial} {event.state}{value}{took} ({params}); "
                  f"{event.finished}/{event.target} finished", flush=True)

    # SIGTERM ends the trial like Ctrl-C: FAIL and queued again (main() installs it)
    summary = run_study(args.space, trials=args.trials, benchmark=args.benchmark,
                        epochs=args.epochs, model=args.model, seed=args.seed,
                        device=args.device, storage=args.storage,
                        study_name=args.study_name, out=args.out, pruner=args.pruner,
                        progress=progress)
    states = ", ".join(f"{n} {s.lower()}" for s, n in summary["states"].items())
    print(f"study {summary['study_name']}: {summary['finished_trials']}/"
          f"{summary['target_trials']} finished ({states})")
    best = summary["best"]
    if best is not None:
        print(f"best trial {best['number']}: validation reward {best['value']:.4f} with "
              f"{_format_params(best['params'], limit=8)} (re-run: lfsearch search "
              f"{summary['folder']}/best.toml)")
    print(f"study folder: {summary['folder']} (trials.csv, study.json, figures/, trials/); "
          f"storage: {summary['storage']}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
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
    p.add_argument("--threads", type=int, help="CPU threads for PyTorch (default 0: PyTorch's "
                   "own choice). 1 is fastest for the small models when other processes share "
                   "the cores; a run repeats exactly on CPU only with the same thread count")
    p.add_argument("--resume", action="store_true", help="continue the run in --out after its "
                   "last completed epoch")
    p.add_argument("--force", action="store_true", help="replace an existing run folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--dist-timeout", type=float, metavar="SECONDS",
                   help="under torchrun: how long a collective, the rendezvous or a silent rank "
                   "may take before the run stops with an error (default 300)")
    p.set_defaults(func=_cmd_search)
    p = sub.add_parser(
        "compare", help="run every method x seed x benchmark and compare their test metrics",
        description="Run each search space (a method) with each seed on each benchmark, in "
        "OUT/<benchmark>/<method>/seed<k>; complete runs are skipped and interrupted ones "
        "resumed, so running the same command again continues an interrupted compare. Then "
        "write table.csv and table.md: mean +- std, 95% CI, paired tests against softmax and "
        "the best hand-crafted margin, and the compute in candidate-epochs.")
    p.add_argument("--benchmark", action="append", help="benchmark spec, repeatable "
                   "(default digits): digits, digits-closed, mnist:DIR, cifar10:DIR, folder:DIR, ...")
    p.add_argument("--spaces", default="softmax,cosface,arcface,random_softmax,search_softmax",
                   help="comma-separated search spaces (names in search_spaces/ or TOML paths; "
                   "default: %(default)s)")
    p.add_argument("--seeds", default="5", help="number of seeds (5 -> 0..4) or a list "
                   "(0,3,7 or 2-4); default %(default)s")
    p.add_argument("--out", help="compare folder (default runs/compare-<benchmarks>)")
    p.add_argument("--epochs", type=int, help="epochs E for every run (default: each file's)")
    p.add_argument("--candidates", type=int, help="candidates M for every run, fixed losses "
                   "included (default: each file's own)")
    p.add_argument("--model", help="backbone for every run (default: the benchmark's)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default auto")
    p.add_argument("--metric", help="test metric to compare (default: the benchmark's, "
                   "verification_accuracy or accuracy)")
    p.add_argument("--force", action="store_true", help="redo every run from scratch")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser(
        "report", help="write report.md and report.html (tables and figures) for a run or "
        "compare folder",
        description="Draw the figures (rewards per epoch, controller trajectory, h(A, p) and "
        "tau(p) curves, test ROC, comparison bars) into DIR/figures and write a self-contained "
        "DIR/report.md and DIR/report.html (images embedded).")
    p.add_argument("dir", help="a run folder (from lfsearch search) or a compare folder")
    p.add_argument("--no-roc", action="store_true", help="skip the test ROC (it re-embeds the "
                   "test split with each run's checkpoint)")
    p.set_defaults(func=_cmd_report)
    p = sub.add_parser(
        "study", help="an Optuna study over a method's hyperparameters (each trial a full run)",
        description="Tune what a search-space file leaves fixed (CosFace s and m, ArcFace m, "
        "...) or a search's own settings (candidates, sigma, lr) with Optuna (TPE, seeded): "
        "each trial is a full training run in OUT/trials/<number> that reports its validation "
        "reward every epoch, so the pruner stops poor trials. The study maximises the final "
        "validation reward. Running the same command again continues it; several workers may "
        "run it against one storage. What is studied: the file's [study.params.<name>] tables, "
        "or by default [loss.params] and s (fixed losses) or candidates, sigma and lr "
        "(searches).")
    p.add_argument("space", help="a search-space TOML file or a name from search_spaces/")
    p.add_argument("--trials", type=int, required=True, help="finished (complete + pruned) "
                   "trials the study needs, counted over every worker")
    p.add_argument("--benchmark", help="benchmark spec (default: the file's)")
    p.add_argument("--epochs", type=int, help="epochs E of every trial")
    p.add_argument("--model", help="backbone name (default: the benchmark's)")
    p.add_argument("--seed", type=int, help="run seed of every trial and the sampler's seed "
                   "(default: the file's, 0)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default auto")
    p.add_argument("--storage", help="Optuna storage: sqlite:///FILE (default "
                   "OUT/study.db), journal:PATH (several processes on one machine), "
                   "postgresql://USER[:PASSWORD]@HOST[:PORT]/DB (several machines)")
    p.add_argument("--study-name", help="default <method>-<benchmark>")
    p.add_argument("--out", help="study folder (default runs/<study-name>)")
    p.add_argument("--pruner", choices=["median", "none"], help="default: the file's [study] "
                   "pruner, median")
    p.add_argument("--quiet", action="store_true", help="no line per trial")
    p.set_defaults(func=_cmd_study)
    return parser


def _terminate(signum, frame):
    raise Terminated


def _os_error(exc: OSError) -> str:
    """An OSError in words, with the file it is about."""
    from lfsearch.paths import describe_os_error

    name = exc.filename
    if name is None:
        return " ".join(str(exc).split())
    return f"{name}: {describe_os_error(exc, name)}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # e.g. `lfsearch losses | head`
        sys.stderr.close()
        return 0
    except (ValueError, OSError) as exc:
        # our own messages (errno None), or the OS's about a file, in words
        message = _os_error(exc) if isinstance(exc, OSError) and exc.errno is not None \
            else " ".join(str(exc).split())
        print(f"lfsearch: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lfsearch: interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    raise SystemExit(main())
