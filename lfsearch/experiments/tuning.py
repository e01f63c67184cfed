"""Compute-matched baselines for `lfsearch compare --tuned`: a fixed method tuned by an Optuna
study (lfsearch.experiments.study) within the candidate-epoch budget a search gets.

    budget B   = the searches' cost E × M candidate-epochs (the largest among the compared
                 searched methods), or --tune-budget
    trials n   = floor(B / (E × M_fixed))          one trial = one full run of the fixed method
    bounds     = every studied value's [low, high] widened to contain the searches' space:
                 for each value the fixed method studies (s and its [loss.params], e.g. m)
                 that a compared search also moves, [min(own low, searched low),
                 max(own high, searched high)]; a search's fixed [loss] s counts as [s, s].
                 The searches are the compared searched methods, or when none is compared the
                 bundled (s, m) searches FALLBACK_SEARCHES (log A = s·m as CosFace's). So
                 CosFace's s goes down to 2 and up to 64 (search_softmax's [2, 64]), not
                 [s/2, 2s]; m covers [0, 0.6] and its own [0, 0.8].
    per seed k:  study of n trials, every trial at run seed k (its sampler seeded by k too),
                 first trial at the file's own values, no pruner (each trial costs E × M);
                 the best trial by FINAL VALIDATION REWARD is the method's run for seed k.
    --tune-pruner P (median, successive_halving, hyperband): trials are pruned on their
                 validation curve, so more of them fit: the study runs trials until they have
                 spent B candidate-epochs (pruned trials count the epochs they ran, the last
                 one stops at B), and the best COMPLETE trial is the run. This is how a
                 whole-run schedule space (schedule_cosface) is searched at a search's budget.

The test split never steers anything: the study maximises the validation reward; the test
metric of the chosen trial is what every trial's run measured at its end anyway. The chosen
run's candidate-epochs are those of all n trials (the tuning counts). Layout::

    <out>/<benchmark>/<method>-tuned/seed<k>/      the chosen trial's run folder (a copy),
        config.toml (method "<method> (tuned, B cand-epochs)"), results.json, manifest.json,
        epochs.csv, ..., tuning.json (every trial: values, validation reward, candidate-epochs)
        tuning/                                    the study folder (study.db, trials/<n>/...)

Run folders inside a study folder are not runs of the compare (`is_trial_run`).
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from lfsearch.experiments import run_plan
from lfsearch.experiments import study as study_mod
from lfsearch.experiments.run_plan import is_trial_run  # noqa: F401  (callers read it here too)
from lfsearch.search import config as config_mod

TUNING_DIR = "tuning"
SPACE_FILE = "space.toml"  # the tuned file with its [study.params] bounds, in the seed folder
FALLBACK_SEARCHES = ("search_softmax", "random_softmax", "search_softmax_local")
COPIED_FILES = ("epochs.csv", "controller.csv", "checkpoint.pt", "discovered.toml")


@dataclass(frozen=True)
class TunedSpec:
    """A fixed method tuned for one seed on one benchmark, with n trials in its folder."""

    space: str
    method: str      # the file's own method name (cosface)
    label: str       # the table's name: "cosface (tuned, 48 cand-epochs)"
    benchmark: str
    seed: int
    trials: int
    budget: int      # candidate-epochs of all trials: trials x epochs x candidates
    out: Path
    # the study's [study.params]: (name, target, low, high, log, type, choices), widened to
    # the searches' ranges (choices: a categorical parameter's values, else None)
    bounds: tuple[tuple[str, str, float, float, bool, str, tuple | None], ...] = ()
    pruner: str = "none"  # with a pruner, `trials` is a cap and `budget` ends the study

    def study_tables(self) -> dict[str, dict[str, Any]]:
        """The [study.params] tables of the tuned space file."""
        return {n: ({"target": tg, "type": ty, "choices": list(ch)} if ty == "categorical" else
                    {"target": tg, "low": lo, "high": hi, "log": lg, "type": ty})
                for n, tg, lo, hi, lg, ty, ch in self.bounds}


def search_budget(configs: list[dict[str, Any]]) -> int | None:
    """The largest E × M among the searched (non-fixed-controller) configurations; None if none."""
    costs = [c["training"]["epochs"] * c["controller"]["candidates"] for c in configs
             if c["controller"]["kind"] != "fixed"]
    return max(costs) if costs else None


def searched_ranges(configs: list[dict[str, Any]]) -> dict[str, tuple[float, float]]:
    """{value name: (low, high)} over the searched (non-fixed) configurations: each
    [loss.params.<p>]'s [low, high], and a fixed [loss] s as [s, s]; unions across files."""
    out: dict[str, tuple[float, float]] = {}

    def add(name: str, low: float, high: float) -> None:
        lo, hi = out.get(name, (low, high))
        out[name] = (min(lo, low), max(hi, high))

    for c in configs:
        if c["controller"]["kind"] == "fixed":
            continue
        for name, spec in c["loss"].get("params", {}).items():
            add(name, float(spec["low"]), float(spec["high"]))
        s = c["loss"].get("s")
        if isinstance(s, (int, float)) and not isinstance(s, bool) and "s" not in c["loss"].get(
                "params", {}):
            add("s", float(s), float(s))
    return out


def tuned_bounds(cfg: dict[str, Any], ranges: dict[str, tuple[float, float]],
                 ) -> tuple[tuple[str, str, float, float, bool, str, tuple | None], ...]:
    """The fixed method's studied values (study_section.study_params), each widened to contain
    the searched range of the same name: [min(low, searched low), max(high, searched high)]
    (a log-scaled value keeps its own low where the searched one is <= 0)."""
    out = []
    for p in study_mod.study_params(cfg):
        low, high = p.low, p.high
        if p.name in ranges and p.type == "float":
            s_low, s_high = ranges[p.name]
            low = min(low, s_low) if (s_low > 0 or not p.log) else low
            high = max(high, s_high)
        out.append((p.name, p.target, float(low), float(high), bool(p.log), p.type,
                    None if p.choices is None else tuple(p.choices)))
    return tuple(out)


def label(method: str, budget: int, pruner: str = "none") -> str:
    how = "" if pruner == "none" else f"{pruner}, "
    return f"{method} (tuned, {how}{budget} cand-epochs)"


def plan_tuned(benchmarks: list[str], spaces: list[str], seeds: list[int], out: Path,
               overrides: dict[str, Any], budget: int,
               searched: list[dict[str, Any]] | None = None,
               pruner: str = "none") -> list[TunedSpec]:
    """Every (benchmark, tuned method, seed), validated before anything is trained.
    searched: the compared configurations whose searched ranges the study bounds contain
    (None or none searched: the bundled FALLBACK_SEARCHES)."""
    searched = [c for c in (searched or []) if c["controller"]["kind"] != "fixed"]
    if not searched:
        searched = [config_mod.load(s) for s in FALLBACK_SEARCHES]
    ranges = searched_ranges(searched)

    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"--tune-budget must be an integer >= 1 (candidate-epochs); got {budget!r}")
    if pruner not in study_mod.PRUNERS:
        raise ValueError(f"--tune-pruner must be one of {', '.join(study_mod.PRUNERS)} "
                         f"(got {pruner!r})")
    specs, seen = [], set()
    for space in spaces:
        cfg = config_mod.resolve(config_mod.load(space), **overrides)
        method = cfg["method"]["name"]
        if cfg["controller"]["kind"] != "fixed":
            raise ValueError(f"--tuned {space}: {method!r} is a search (controller kind "
                             f"{cfg['controller']['kind']!r}); allowed: fixed-controller methods "
                             "such as cosface, arcface")
        if method in seen:
            raise ValueError(f"--tuned: method {method!r} appears twice")
        seen.add(method)
        bounds = tuned_bounds(cfg, ranges)  # ValueError when nothing to tune (e.g. softmax)
        per_trial = cfg["training"]["epochs"] * cfg["controller"]["candidates"]
        trials = budget // per_trial
        if trials < 1:
            raise ValueError(f"--tuned {method}: a budget of {budget} candidate-epochs holds no "
                             f"trial of {per_trial} candidate-epochs (epochs x candidates); "
                             "allowed: a budget >= one trial")
        used = trials * per_trial
        if pruner != "none":  # trials end early: as many as the budget holds, one epoch each
            trials, used = budget // cfg["controller"]["candidates"], budget
        for bench in benchmarks:
            for seed in seeds:
                specs.append(TunedSpec(space, method, label(method, used, pruner), bench, seed,
                                       trials, used, out / run_plan.safe_name(bench)
                                       / f"{method}-tuned" / f"seed{seed}", bounds, pruner))
    return specs


def _complete(folder: Path) -> bool:
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return manifest.get("status") == "complete" and (folder / "results.json").is_file() \
        and (folder / "tuning.json").is_file()


def _base_config(spec: TunedSpec, overrides: dict[str, Any]) -> dict[str, Any]:
    cfg = config_mod.resolve(config_mod.load(spec.space), benchmark=spec.benchmark,
                             seed=spec.seed, **overrides)
    if spec.bounds:
        cfg["study"] = {**cfg.get("study", {}), "params": spec.study_tables()}
    return json.loads(json.dumps({k: v for k, v in cfg.items() if not k.startswith("_")}))


def write_space(spec: TunedSpec) -> Path:
    """The tuned method's file with the study bounds as [study.params], in the seed folder
    (read back through config.load, so every bound is checked against the loss)."""
    cfg = config_mod.load(spec.space)
    if spec.bounds:
        cfg["study"] = {**cfg.get("study", {}), "params": spec.study_tables()}
    path = spec.out / SPACE_FILE
    config_mod.dump(cfg, path)
    config_mod.load(path)
    return path


def run_tuned(spec: TunedSpec, overrides: dict[str, Any], *, force: bool = False,
              progress: Callable[[Any], None] | None = None) -> str:
    """Tune, continue or skip one seed's study; returns ran, resumed or skipped."""

    want = _base_config(spec, overrides)
    if force and spec.out.exists():
        shutil.rmtree(spec.out)
    if _complete(spec.out):
        have = json.loads((spec.out / "tuning.json").read_text())
        diffs = [d for d in run_plan._config_differences(want, have["config"]) if d != "run.device"]
        if have.get("trials") != spec.trials:
            diffs.append("trials")
        if have.get("pruner", "none") != spec.pruner:
            diffs.append("pruner")
        if diffs:
            raise ValueError(f"{spec.out} holds a tuned run with a different configuration "
                             f"({', '.join(diffs[:5])}); use another --out, or --force to redo it")
        return "skipped"
    resumed = (spec.out / TUNING_DIR).is_dir()
    spec.out.mkdir(parents=True, exist_ok=True)
    space = write_space(spec)
    summary = study_mod.run_study(
        space, trials=spec.trials, benchmark=spec.benchmark, seed=spec.seed,
        out=spec.out / TUNING_DIR, pruner=spec.pruner, progress=progress,
        budget=None if spec.pruner == "none" else spec.budget,
        first_trial_at_file_values=True, study_name=f"{spec.method}-tuned-seed{spec.seed}",
        **{k: v for k, v in overrides.items()
           if k in ("epochs", "model", "device", "threads", "candidates")})
    _write_chosen_run(spec, want, summary)
    return "resumed" if resumed else "ran"


def _finite(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _trials(folder: Path) -> list[dict[str, Any]]:
    """Every trial of the study folder: number, state, values, validation reward, cost."""
    import pandas as pd

    frame = pd.read_csv(folder / "trials.csv")
    rows = []
    for r in frame.to_dict("records"):
        value = r.get("value")
        cost = r.get("user_attrs_candidate_epochs")
        rows.append({
            "number": int(r["number"]), "state": r["state"],
            "validation_reward": _finite(value),
            "candidate_epochs": None if _finite(cost) is None else int(cost),
            "seconds": _finite(r.get("duration_s")),
            "params": {k[len("params_"):]: v for k, v in r.items() if k.startswith("params_")},
        })
    return rows


def _write_chosen_run(spec: TunedSpec, base: dict[str, Any], summary: dict[str, Any]) -> None:
    """Copy the best trial's run into the seed folder as this method's run (manifest last)."""
    best = summary.get("best")
    if not best or not best.get("run_dir"):
        raise ValueError(f"tuning {spec.method} seed {spec.seed} on {spec.benchmark}: no trial "
                         f"completed (see {spec.out / TUNING_DIR / 'trials.csv'})")
    src, dst = Path(best["run_dir"]), spec.out
    trials = _trials(spec.out / TUNING_DIR)
    spent = sum(t["candidate_epochs"] or 0 for t in trials)
    seconds = sum(t["seconds"] for t in trials if t["seconds"] is not None)
    for name in COPIED_FILES:
        if (src / name).is_file():
            tmp = dst / f".{name}.tmp"
            shutil.copy2(src / name, tmp)
            tmp.replace(dst / name)
    config = config_mod.load(src / "config.toml")
    config["method"] = {"name": spec.label, "description": (
        f"{spec.method} tuned by an Optuna study of {len(trials)} trials ({spent} "
        f"candidate-epochs{'' if spec.pruner == 'none' else ', ' + spec.pruner + ' pruner'}) "
        f"on the validation reward; best trial {best['number']}: "
        + ", ".join(f"{k} = {v}" if isinstance(v, str) else f"{k} = {v:.6g}"
                    for k, v in best["params"].items()))}
    config_mod.dump(config, dst / "config.toml")
    record = {"method": spec.method, "label": spec.label, "benchmark": spec.benchmark,
              "seed": spec.seed, "trials": spec.trials, "budget": spec.budget,
              "pruner": spec.pruner, "trials_run": len(trials),
              "candidate_epochs": spent, "best_trial": best["number"],
              "best_validation_reward": best["value"], "best_params": best["params"],
              "objective": "final validation reward (the test split never steers the study)",
              "trial_runs": trials, "config": base}
    config_mod.atomic_write_text(dst / "tuning.json", json.dumps(record, indent=2) + "\n")
    results = json.loads((src / "results.json").read_text())
    results.update(method=spec.label, candidate_epochs=spent,
                   tuning={"trials": spec.trials, "best_trial": best["number"],
                           "best_params": best["params"]})
    config_mod.atomic_write_text(dst / "results.json", json.dumps(results, indent=2) + "\n")
    manifest = json.loads((src / "manifest.json").read_text())
    manifest.update(method=spec.label, search_seconds_this_session=round(seconds, 3),
                    tuned_from=str(src))
    config_mod.atomic_write_text(dst / "manifest.json", json.dumps(manifest, indent=2) + "\n")
