"""The runs of a compare folder: which method × seed × benchmark runs go where
(<out>/<benchmark>/<method>/seed<k>), whether each is done, running or to start, how one is run,
and how the finished ones are read back.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import pandas as pd

from lfsearch.search import config as config_mod

DEFAULT_SPACES = ("softmax", "cosface", "arcface", "random_softmax", "search_softmax")
MAX_SEEDS = 1000  # a count beyond this is a typo, not a compare


def is_trial_run(folder: Path, root: Path) -> bool:
    """True for a run folder inside a study folder (study.db or study.json) below root."""
    folder, root = Path(folder).resolve(), Path(root).resolve()
    for parent in folder.parents:
        if parent == root or root not in parent.parents:
            return False
        if (parent / "study.db").exists() or (parent / "study.json").exists():
            return True
    return False



# ------------------------------------------------------------------------------------- runs
@dataclass(frozen=True)
class RunSpec:
    """One run of a compare: a search space on a benchmark with a seed, in its folder."""

    space: str
    method: str
    benchmark: str
    seed: int
    out: Path


@dataclass
class CompareProgress:
    """A progress event: a run starts ('start'), was skipped as complete ('skip'), ended
    ('done'), or a candidate of the current run finished ('search', with `search` the event
    of lfsearch.search)."""

    kind: str
    index: int
    total: int
    run: RunSpec
    search: Any = None


def safe_name(text: str) -> str:
    """A benchmark spec made safe as a folder name (mnist:/data/x -> mnist__data_x)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text).strip("_") or "benchmark"


def parse_seeds(seeds: int | str | Iterable[int]) -> list[int]:
    """5 -> [0..4]; '0,3,7' -> [0, 3, 7]; '2-4' -> [2, 3, 4]; a list as is."""
    if isinstance(seeds, bool):
        raise ValueError("--seeds must be a count (5) or a list (0,3,7 or 2-4)")
    if isinstance(seeds, int):
        if not 1 <= seeds <= MAX_SEEDS:
            raise ValueError(f"--seeds must be a count in [1, {MAX_SEEDS}] or a list "
                             f"(0,3,7 or 2-4); got {seeds}")
        return list(range(seeds))
    if isinstance(seeds, str):
        text = seeds.strip()
        if text.isdigit():
            return parse_seeds(int(text))
        out: list[int] = []
        for part in filter(None, (p.strip() for p in text.split(","))):
            lo, dash, hi = part.partition("-")
            if not (lo.strip().isdigit() and (not dash or hi.strip().isdigit())):
                raise ValueError(f"--seeds must be a count (5) or a list (0,3,7 or 2-4); "
                                 f"got {seeds!r}")
            if dash and int(hi) - int(lo) >= MAX_SEEDS:
                raise ValueError(f"--seeds {part}: more than {MAX_SEEDS} seeds")
            out.extend(range(int(lo), int(hi) + 1) if dash else [int(part)])
            if len(out) > MAX_SEEDS:
                raise ValueError(f"--seeds: more than {MAX_SEEDS} seeds")
        seeds = out
    values = [int(s) for s in seeds]
    if not values or any(s < 0 for s in values) or len(set(values)) != len(values):
        raise ValueError(f"--seeds must list distinct integers >= 0; got {values}")
    if len(values) > MAX_SEEDS or max(values) > config_mod.MAX_SEED:
        raise ValueError(f"--seeds must list at most {MAX_SEEDS} seeds, each in "
                         f"[0, {config_mod.MAX_SEED}]")
    return values


def parse_spaces(spaces: str | Sequence[str]) -> list[str]:
    """'softmax,cosface' or a list -> a list of search-space names or paths."""
    items = spaces.split(",") if isinstance(spaces, str) else list(spaces)
    items = [s.strip() for s in items if s and s.strip()]
    if not items:
        raise ValueError("--spaces must name at least one search space, e.g. "
                         + ",".join(DEFAULT_SPACES))
    return items


def plan(benchmarks: Sequence[str], spaces: Sequence[str], seeds: Sequence[int], out: Path,
         overrides: dict[str, Any]) -> list[RunSpec]:
    """Every (benchmark, method, seed) run, validated before anything is trained."""
    from lfsearch import data

    if not benchmarks:
        raise ValueError("--benchmark must be given at least once, e.g. --benchmark digits")
    if len(set(benchmarks)) != len(benchmarks):
        raise ValueError(f"--benchmark repeats a benchmark: {', '.join(benchmarks)}")
    for b in benchmarks:
        kind, _, _ = data.parse_spec(b)
        if kind not in data.available():
            raise ValueError(f"--benchmark {b!r}: kind {kind!r} is not known; allowed: "
                             f"{', '.join(data.available())}")
    methods: dict[str, str] = {}
    for space in spaces:
        for b in benchmarks:  # also checks [test] benchmarks against every training benchmark
            cfg = config_mod.resolve(config_mod.load(space), benchmark=b, **overrides)
        name = cfg["method"]["name"]
        if name in methods:
            raise ValueError(f"--spaces: method {name!r} appears twice ({methods[name]} and "
                             f"{space}); each method needs its own name ([method] name)")
        methods[name] = space
    folders = {safe_name(b) for b in benchmarks}
    if len(folders) != len(benchmarks):
        raise ValueError("--benchmark: two benchmarks map to the same folder name; "
                         f"got {', '.join(benchmarks)}")
    return [RunSpec(space, method, bench, seed, out / safe_name(bench) / method / f"seed{seed}")
            for bench in benchmarks for method, space in methods.items() for seed in seeds]


def run_state(folder: Path) -> str:
    """'complete', 'resumable' (a checkpoint to continue from), 'stale' (a folder with no
    completed epoch) or 'missing'."""
    if not folder.exists():
        return "missing"
    manifest = folder / "manifest.json"
    if manifest.is_file() and (folder / "results.json").is_file():
        try:
            if json.loads(manifest.read_text()).get("status") == "complete":
                return "complete"
        except (OSError, json.JSONDecodeError):
            pass
    if (folder / "checkpoint.pt").is_file() and (folder / "config.toml").is_file():
        return "resumable"
    return "stale"


def _config_differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    keys = sorted((set(a) | set(b)) - {"_source"})
    diffs = []
    for k in keys:
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            diffs += _config_differences(va, vb, f"{prefix}{k}.")
        elif va != vb:
            diffs.append(f"{prefix}{k}")
    return diffs


def _check_existing(spec: RunSpec, overrides: dict[str, Any]) -> None:
    """A run found in the folder must be the run this compare asks for."""
    want = config_mod.resolve(config_mod.load(spec.space), benchmark=spec.benchmark,
                              seed=spec.seed, **overrides)
    have = config_mod.load(spec.out / "config.toml")
    # the device and thread count do not change what a run is (a CPU run may be finished on
    # a GPU, or skipped by a compare given another --threads)
    diffs = [d for d in _config_differences(want, have) if d not in ("run.device", "run.threads")]
    if diffs:
        raise ValueError(f"{spec.out} holds a run with a different configuration "
                         f"({', '.join(diffs[:5])}); use another --out, or --force to redo it")


def run_one(spec: RunSpec, overrides: dict[str, Any], *, force: bool = False,
            progress: Callable[[Any], None] | None = None) -> str:
    """Run, resume or skip one run; returns what was done: skipped, resumed, ran."""
    from lfsearch.search import search

    state = "missing" if force else run_state(spec.out)
    if state in ("complete", "resumable"):
        _check_existing(spec, overrides)
    if state == "complete":
        return "skipped"
    kwargs = dict(benchmark=spec.benchmark, seed=spec.seed, out=spec.out, progress=progress,
                  **overrides)
    if state == "resumable":
        search(spec.space, resume=True, **kwargs)
        return "resumed"
    search(spec.space, force=force or state == "stale", **kwargs)
    return "ran"


def _read_run(folder: Path) -> dict[str, Any] | None:
    """One row of runs.csv from a run folder (None when it holds no run)."""
    config_path = folder / "config.toml"
    if not config_path.is_file():
        return None
    cfg = config_mod.load(config_path)
    state = run_state(folder)
    row: dict[str, Any] = {
        "benchmark": cfg["training"]["benchmark"], "method": cfg["method"]["name"],
        "seed": int(cfg["run"]["seed"]), "controller": cfg["controller"]["kind"],
        "loss": cfg["loss"]["name"], "status": state, "epochs": int(cfg["training"]["epochs"]),
        "candidates": int(cfg["controller"]["candidates"]), "run_dir": str(folder),
    }
    if state == "complete":
        results = json.loads((folder / "results.json").read_text())
        manifest = json.loads((folder / "manifest.json").read_text())
        row.update(candidate_epochs=results["candidate_epochs"],
                   test_metric=results["test_metric"],
                   final_validation_reward=results.get("final_validation_reward"),
                   seconds=manifest.get("search_seconds_this_session", math.nan)
                   if not manifest.get("resumed") else math.nan)
        for k, v in results["test"].items():
            row[f"test/{k}"] = math.nan if v is None else float(v)
        for spec, entry in (results.get("test_benchmarks") or {}).items():
            if "metrics" in entry:
                row[f"test[{spec}]:metric"] = entry["metric"]
                for k, v in entry["metrics"].items():
                    row[f"test[{spec}]/{k}"] = math.nan if v is None else float(v)
        chosen = results.get("chosen_params") or []
        for k, v in (chosen[-1] if chosen else {}).items():
            row[f"final/{k}"] = v
    return row


def find_run_dirs(root: Path) -> list[Path]:
    """Every run folder (one holding config.toml and manifest.json) under root, sorted."""
    root = Path(root)
    found = {p.parent for p in root.rglob("manifest.json") if (p.parent / "config.toml").is_file()
             and not is_trial_run(p.parent, root)}  # a tuning study's trials are not runs
    return sorted(found, key=lambda p: [(int(s[4:]) if s.startswith("seed") and s[4:].isdigit()
                                         else -1, s) for s in p.relative_to(root).parts])


def collect_runs(folders: Iterable[Path]) -> pd.DataFrame:
    """One row per run folder: benchmark, method, seed, controller, status, compute and every
    test metric (columns test/<metric>) and final chosen parameter (final/<p>)."""
    rows = [r for r in (_read_run(Path(f)) for f in folders) if r is not None]
    if not rows:
        raise FileNotFoundError("no run folders found (expected config.toml and manifest.json)")
    frame = pd.DataFrame(rows)
    if "candidate_epochs" not in frame:
        frame["candidate_epochs"] = math.nan
    return frame
