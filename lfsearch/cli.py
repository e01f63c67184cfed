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

from lfsearch import losses as losses_mod
from lfsearch.search import config as config_mod
from lfsearch.search import spaces as spaces_mod
from lfsearch.search import study_section


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

    print(losses_mod.describe_table())
    print()
    print(losses_mod.modulation_table())
    return 0


def _cmd_spaces(args: argparse.Namespace) -> int:

    if args.action == "copy":
        target = spaces_mod.copy_space(args.name, args.dest, force=args.force)
        print(f"wrote {target} (edit it, then: lfsearch search {target})")
    elif args.action == "show":
        print(spaces_mod.space_path(args.name).read_text(), end="")
    else:
        print(spaces_mod.listing())
    return 0


def _format_params(params: dict[str, float | str], limit: int = 4) -> str:
    items = [f"{k}={v}" if isinstance(v, str) else f"{k}={v:.3g}"
             for k, v in list(params.items())[:limit]]
    return ",".join(items) + (",..." if len(params) > limit else "")


def _cmd_search(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from lfsearch.search import search
    from lfsearch.search.distributed import RankFailure

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
                         dist_timeout=args.dist_timeout, test_benchmarks=args.test_benchmark,
                         tensorboard=args.tensorboard)
    except RankFailure as exc:  # under torchrun: a rank died, hung or was stopped
        print(f"lfsearch: error: {one_line(str(exc))}", file=sys.stderr)
        return 1
    finally:
        if bar is not None:
            bar.close()
    if "test_metric" not in results:  # a rank other than 0 under torchrun: rank 0 reports
        return 0
    metric = results["test_metric"]
    print(f"{results['method']} on {results['benchmark']}: test {metric} = "
          f"{results['test'][metric]:.4f} ({results['candidate_epochs']} candidate-epochs)")
    for spec, entry in (results.get("test_benchmarks") or {}).items():
        print(f"  test benchmark {spec}: " + _describe_test(entry))
    print(f"run folder: {results['run_dir']}")
    return 0


def _describe_test(entry: dict) -> str:
    """'verification_accuracy = 0.9817 ± 0.0061, roc_auc = ...' or the benchmark's error."""
    if "error" in entry:
        return f"error: {entry['error']}"
    m = entry["metrics"]

    def fmt(key: str) -> str:
        v = m.get(key)
        return "n/a" if v is None else f"{v:.4f}"

    text = f"{entry['metric']} = {fmt(entry['metric'])}"
    if entry["metric"] == "verification_accuracy":
        text += f" ± {fmt('verification_accuracy_std')}"
    extra = [k for k in m if k.startswith("rank1@d=")] if entry["metric"] == "rank1" else \
        ["roc_auc", "tar@far=1e-5", "tar@far=1e-3", "tar@far=1e-1"] \
        if entry["metric"] == "tar@far=1e-4" else ["roc_auc", "tar@far=1e-3", "rank1"]
    for key in extra:
        if key in m and key != entry["metric"]:
            text += f", {key} = {fmt(key)}"
    return text


def _cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from lfsearch.experiments.evaluate_run import check_out, evaluate_run
    from lfsearch.search import resolve_device

    if args.out:  # before any work: never a run's own file or an input
        check_out(args.out, args.run_dir, args.benchmark or [], force=args.force)
    result = evaluate_run(args.run_dir, args.benchmark or [],
                          device=resolve_device(args.device), seed=args.seed)
    print(f"{result['method']} ({result['run_dir']}, trained on {result['training_benchmark']}, "
          f"{result['epochs_done']} epochs):")
    for spec, entry in result["benchmarks"].items():
        print(f"  {spec}: {_describe_test(entry)}")
    if args.out:
        config_mod.atomic_write_text(args.out, json.dumps(result, indent=2)
                                     + "\n")
        print(f"written: {args.out}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from lfsearch.experiments.compare import compare
    from lfsearch.experiments.run_plan import parse_seeds, parse_spaces

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
        elif event.kind == "search" and getattr(event.search, "kind", "") == "trial_start":
            bar.set_postfix_str(f"{label}: tuning trial {event.search.trial + 1}/"
                                f"{event.search.target}")
        elif event.kind in ("done", "skip"):
            bar.update(1)

    benchmarks = args.benchmark or ["digits"]
    spaces = parse_spaces(args.spaces)
    seeds = parse_seeds(args.seeds)
    try:
        result = compare(benchmarks, spaces, seeds, out=args.out, epochs=args.epochs,
                         candidates=args.candidates, model=args.model, device=args.device,
                         threads=args.threads, metric=args.metric, force=args.force,
                         progress=progress, test_benchmarks=args.test_benchmark,
                         tuned=args.tuned or (), tune_budget=args.tune_budget,
                         tune_pruner=args.tune_pruner)
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
    from lfsearch.experiments.study import run_study

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
                        device=args.device, threads=args.threads, storage=args.storage,
                        study_name=args.study_name, out=args.out, pruner=args.pruner,
                        progress=progress, budget=args.budget)
    states = ", ".join(f"{n} {s.lower()}" for s, n in summary["states"].items())
    spent = f"; {summary['candidate_epochs']}" + (
        f"/{summary['budget']}" if summary.get("budget") else "") + " candidate-epochs"
    print(f"study {summary['study_name']}: {summary['finished_trials']}/"
          f"{summary['target_trials']} finished ({states}{spent})")
    best = summary["best"]
    if best is not None:
        print(f"best trial {best['number']}: validation reward {best['value']:.4f} with "
              f"{_format_params(best['params'], limit=8)} (re-run: lfsearch search "
              f"{summary['folder']}/best.toml)")
    print(f"study folder: {summary['folder']} (trials.csv, study.json, figures/, trials/); "
          f"storage: {summary['storage']}")
    return 0


def _add_threads(p: argparse.ArgumentParser, scope: str = "the run") -> None:
    p.add_argument("--threads", type=int, help=f"CPU threads for PyTorch in {scope} (default 0: "
                   "PyTorch's own choice). 1 is fastest for the small models when other "
                   "processes share the cores; a run repeats exactly on CPU only with the same "
                   "thread count")


def _cmd_export(args: argparse.Namespace) -> int:
    from lfsearch.experiments.export import export_onnx

    info = export_onnx(args.run_dir, args.onnx, opset=args.opset)
    shape = "x".join(str(v) for v in info["input_shape"])
    print(f"{info['onnx']}: {info['model']} backbone of {info['run_dir']}, images {shape} in "
          f"[-1, 1] -> {info['embedding_size']}-d embeddings ({info['exporter']} exporter)")
    check = info["check"]
    if check["checked"]:
        print(f"checked with onnxruntime on {check['batch']} images: embeddings match PyTorch "
              f"(max |diff| {check['max_abs_diff']:.2g} for values up to "
              f"{check['max_abs_embedding']:.3g}; normalised {check['max_abs_diff_normalised']:.2g}"
              f" <= {check['tolerance']:g})")
    else:
        print(f"could not check: {check['reason']}")
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from lfsearch.data import pack

    if args.data_command == "pack":
        info = pack.pack_folder(Path(args.dir), Path(args.out), force=args.force)
        print(f"{info['rec']}: {info['identities']} identities, {info['images']} images")
    elif args.data_command == "show":
        print(json.dumps(pack.summarise(Path(args.file), args.sheet and Path(args.sheet),
                                        force=args.force), indent=2))
    else:
        info = pack.write_bin(Path(args.pairs), Path(args.root), Path(args.out), size=args.size,
                              force=args.force)
        print(f"{info['bin']}: {info['pairs']} pairs ({info['same']} same), images "
              f"{info['size'][0]}x{info['size'][1]} ({info['resized']} resized)")
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

    p = sub.add_parser("spaces", help="list the bundled search spaces; show or copy one",
                       description="Without an action: each bundled search space (a name for "
                       "lfsearch search/compare/study) with its description. 'show NAME' "
                       "prints its file; 'copy NAME DEST' writes an editable copy.")
    p.set_defaults(func=_cmd_spaces, action=None)
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    a = actions.add_parser("show", help="print a bundled space's TOML file")
    a.add_argument("name", help="a bundled space name (see lfsearch spaces)")
    a = actions.add_parser("copy", help="copy a bundled space's file, to edit it")
    a.add_argument("name", help="a bundled space name (see lfsearch spaces)")
    a.add_argument("dest", help="a file path ending in .toml, or a folder (NAME.toml inside)")
    a.add_argument("--force", action="store_true", help="replace DEST if it exists")

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
    _add_threads(p)
    p.add_argument("--resume", action="store_true", help="continue the run in --out after its "
                   "last completed epoch")
    p.add_argument("--force", action="store_true", help="replace an existing run folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--dist-timeout", type=float, metavar="SECONDS",
                   help="under torchrun: how long a collective, the rendezvous or a silent rank "
                   "may take before the run stops with an error (default 300)")
    p.add_argument("--test-benchmark", action="append", metavar="SPEC",
                   help="a benchmark to test the final model on, never searched on; repeatable; "
                   "replaces the file's [test] benchmarks (e.g. bin:data/lfw.bin)")
    p.add_argument("--no-tensorboard", dest="tensorboard", action="store_false", default=None,
                   help="write no TensorBoard events (default: written to the run folder when "
                   "the tensorboard package is installed; tensorboard --logdir runs)")
    p.set_defaults(func=_cmd_search)

    p = sub.add_parser(
        "evaluate", help="test a run's final model on more benchmarks",
        description="Load a run folder's checkpoint (the best candidate of its last completed "
        "epoch) and test it on each --benchmark's test split, with the protocol of the main test "
        "split: 10-fold verification accuracy +- std, ROC AUC, EER, TAR@FAR and rank-1 on pairs; "
        "top-1 accuracy on closed-set benchmarks.")
    p.add_argument("run_dir", help="a run folder written by lfsearch search")
    p.add_argument("--benchmark", action="append", required=True, metavar="SPEC",
                   help="benchmark spec, repeatable: lfw:DIR, bin:FILE (insightface .bin), "
                   "folder:DIR, ...; images must match the model's size (add ?size=HxW)")
    p.add_argument("--out", help="also write the results as JSON to this file (never one of "
                   "the run's own files)")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="default auto: cuda if present")
    p.add_argument("--seed", type=int, help="seed of the benchmarks' splits (default: the "
                   "run's; lfw and bin have one fixed pair set)")
    p.set_defaults(func=_cmd_evaluate)
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
    _add_threads(p, "every run")
    p.add_argument("--metric", help="test metric to compare (default: the benchmark's, "
                   "verification_accuracy or accuracy)")
    p.add_argument("--tuned", metavar="SPACES", help="compute-matched baselines: these fixed "
                   "methods (e.g. cosface,arcface) each tuned per seed by an Optuna study on the "
                   "validation reward within the searches' candidate-epochs (README)")
    p.add_argument("--tune-budget", type=int, metavar="N", help="candidate-epochs per seed for "
                   "--tuned (default: the largest epochs x candidates of the compared searches)")
    p.add_argument("--tune-pruner", default="none",
                   choices=list(study_section.PRUNERS), help="prune --tuned trials on "
                   "their validation curve and run trials until they spent the budget "
                   "(default none: floor(budget / (E x M)) full trials)")
    p.add_argument("--force", action="store_true", help="redo every run from scratch")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--test-benchmark", action="append", metavar="SPEC",
                   help="a benchmark every run is tested on at the end, never searched on; "
                   "repeatable; replaces the spaces' [test] benchmarks")
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
    p.add_argument("--budget", type=int, metavar="N", help="also stop once the trials have "
                   "spent N candidate-epochs (pruned trials count the epochs they ran; the "
                   "trial that reaches N is stopped there): to compare with a search of "
                   "E x M = N at equal compute")
    p.add_argument("--benchmark", help="benchmark spec (default: the file's)")
    p.add_argument("--epochs", type=int, help="epochs E of every trial")
    p.add_argument("--model", help="backbone name (default: the benchmark's)")
    p.add_argument("--seed", type=int, help="run seed of every trial and the sampler's seed "
                   "(default: the file's, 0)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default auto")
    _add_threads(p, "every trial")
    p.add_argument("--storage", help="Optuna storage: sqlite:///FILE (default "
                   "OUT/study.db), journal:PATH (several processes on one machine), "
                   "postgresql://USER[:PASSWORD]@HOST[:PORT]/DB (several machines)")
    p.add_argument("--study-name", help="default <method>-<benchmark>")
    p.add_argument("--out", help="study folder (default runs/<study-name>)")
    p.add_argument("--pruner", choices=list(study_section.PRUNERS), help="default: the file's "
                   "[study] pruner, median (successive_halving, hyperband: multi-fidelity over "
                   "the epochs)")
    p.add_argument("--quiet", action="store_true", help="no line per trial")
    p.set_defaults(func=_cmd_study)

    p = sub.add_parser("export", help="export a run's trained backbone to ONNX",
                       description="Export a run folder's final backbone (its checkpoint's best "
                       "candidate) to ONNX: float32 images (N, C, H, W) with pixels in [-1, 1] "
                       "(x / 127.5 - 1), N free, to (N, D) embeddings. With onnxruntime "
                       "installed the file is run on random images and its embeddings must "
                       "match PyTorch's to 1e-4 (relative to their scale; normalised ones "
                       "absolutely) or nothing is written; without it the file is written and "
                       "the check is reported as not done. Needs pip install 'lfsearch[onnx]'. "
                       "Example: lfsearch export runs/casia-r50 --onnx r50.onnx")
    p.add_argument("run_dir", help="a run folder written by lfsearch search")
    p.add_argument("--onnx", required=True, metavar="FILE", help="the .onnx file to write")
    p.add_argument("--opset", type=int, help="ONNX opset version (default: the exporter's)")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("data", help="data tools: pack an identity folder into insightface "
                       "RecordIO, show a .rec, build a verification .bin",
                       description="Data tools for face-recognition training sets "
                       "(docs/data.md \"Data tools\"). Every output is written to a temporary "
                       "file and renamed into place when complete.")
    data_sub = p.add_subparsers(dest="data_command", metavar="TOOL", required=True)
    q = data_sub.add_parser("pack", help="identity folder DIR -> PREFIX.rec + PREFIX.idx "
                            "(+ property), the original image bytes kept",
                            description="Pack an identity folder (DIR/<identity>/<image>, the "
                            "CASIA-WebFace layout) into insightface RecordIO: PREFIX.rec, "
                            "PREFIX.idx and 'property' (num_classes,height,width) beside them. "
                            "Record 0 holds the image range, then one record per image (its "
                            "file's bytes unchanged, label = identity index in sorted folder "
                            "order) and one per identity (its image range). Train on it with "
                            "--benchmark rec:PREFIX.rec. Example: lfsearch data pack "
                            "casia/ --out data/casia")
    q.add_argument("dir", help="one sub-folder per identity")
    q.add_argument("--out", required=True, metavar="PREFIX",
                   help="output prefix, e.g. data/train writes data/train.rec and "
                   "data/train.idx (the folder must exist)")
    q.add_argument("--force", action="store_true", help="replace an existing output file")
    q = data_sub.add_parser("show", help="identity and image counts of a .rec (JSON), "
                            "optionally a contact sheet PNG",
                            description="Read a .rec's index and identity records and print "
                            "its identity and image counts (min/median/max images per "
                            "identity) as JSON; --sheet also writes a contact sheet PNG (a row "
                            "per identity, for a look at the faces). Example: lfsearch data "
                            "show data/casia.rec --sheet casia.png")
    q.add_argument("file", help="a .rec file (its .idx beside it)")
    q.add_argument("--sheet", metavar="PNG", help="write a contact sheet: a row per identity")
    q.add_argument("--force", action="store_true", help="replace an existing output file")
    q = data_sub.add_parser("bin", help="LFW-style pairs file -> insightface verification .bin",
                            description="Build an insightface verification .bin (a pickle of "
                            "the pairs' encoded image bytes and their same/different flags) "
                            "from an LFW-style pairs file: lines 'name n1 n2' (same person) or "
                            "'name1 n1 name2 n2' (different), images ROOT/NAME/NAME_NNNN.jpg. "
                            "Every image is stored HxW (--size, 112x112) so that insightface's "
                            "load_bin reads the file too. "
                            "Test on it with --benchmark bin:FILE. Example: lfsearch data bin "
                            "lfw/pairs.txt --root lfw --out data/lfw.bin")
    q.add_argument("pairs", help="pairs file ('name n1 n2' / 'name1 n1 name2 n2' lines)")
    q.add_argument("--root", required=True, help="images as ROOT/NAME/NAME_NNNN.jpg")
    q.add_argument("--out", required=True, help="the .bin to write")
    q.add_argument("--force", action="store_true", help="replace an existing output file")
    q.add_argument("--size", default="112x112", metavar="HxW",
                   help="every image stored at this size (default 112x112, what insightface's "
                   "load_bin reads): one already that size is kept byte for byte, the others "
                   "resized (bilinear, the aspect ratio not kept) and stored as JPEG")
    p.set_defaults(func=_cmd_data)
    return parser


def _terminate(signum, frame):
    raise Terminated


def one_line(text: str) -> str:
    """A message on one line: its lines joined by '; ' (or a space after a line ending in ':'
    or ','), runs of blanks made one."""
    parts = [" ".join(line.split()) for line in str(text).splitlines()]
    out = ""
    for part in filter(None, parts):
        out = part if not out else out + (" " if out.endswith((":", ",", ";")) else "; ") + part
    return out


def _os_error(exc: OSError) -> str:
    """An OSError in words, with the file it is about."""
    from lfsearch.paths import describe_os_error

    name = exc.filename
    if name is None:
        return one_line(str(exc))
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
            else one_line(str(exc))
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
