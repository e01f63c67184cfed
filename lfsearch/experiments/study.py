"""Optuna studies over a method's hyperparameters: every trial is one full training run.

A study tunes what a search-space file leaves fixed (CosFace's s and m, ArcFace's m, ...) or a
search's own settings (candidates M, the policy's sigma, the controller's learning rate).
It maximises the validation reward of the run's final model (``final_validation_reward`` of
results.json: the chosen candidate's reward in the last epoch); test metrics are recorded for
information only and never steer the study.

    for trial in study (TPE, seeded; until N trials are finished):
        values = trial.suggest(...)                        # one value per study parameter
        run    = Search(config with values, DIR/trials/<number>)
        every epoch: trial.report(chosen reward, epoch)    # a pruner (median) stops poor trials
        value  = run's final validation reward

What a study varies: ``[study.params.<name>]`` tables of the space file (``low``, ``high``,
optional ``log``, ``type`` = "float" | "int", ``step``, ``target``). ``target`` is a dotted path
into the configuration:

    loss.params.<p>        the value a fixed controller holds (its ``init``; a search starts there)
    loss.params.<p>.low / .high / .init     a bound of a searched parameter
    loss.<arg>             a fixed loss argument such as s
    controller.<setting>   candidates, sigma, lr, ... of the controller
    training.<key>         lr, weight_decay, batch_size, epochs, ...

Without ``target`` the name is looked up in that order: a [loss.params] entry, a [loss]
argument, a [controller] setting. Without ``type`` a parameter is an integer when the value it
replaces is one (candidates, batch_size). Without any [study.params] table the defaults are:
a fixed controller studies every [loss.params] entry inside its own [low, high] plus the scale
s in [s/2, 2s] (log); a searching controller (random, reinforce, optuna) studies candidates in
[2, 8] plus sigma and lr in [v/3, 3v] (log) where the file sets them. Every trial of a study
uses the same run seed (common random numbers: trials differ only by their values).

The [study] table also takes ``pruner`` = "median" | "successive_halving" | "hyperband" |
"none" [median], ``pruner_startup_trials`` [3] (median: trials finished before any is
pruned), ``pruner_warmup_epochs`` [0] (median: epochs of a trial never pruned; successive
halving and Hyperband: their min_resource, at least 1; Hyperband's max_resource is the run's
epochs) and ``sampler_startup_trials`` [5] (random trials before TPE models the rest). Every
trial records ``candidate_epochs`` (a pruned one: those it spent), and study.json sums them,
so studies and searches compare at equal compute.

Storage: a SQLite file DIR/study.db by default (``optuna-dashboard sqlite:///DIR/study.db``),
any Optuna RDB URL (``postgresql://user@host/db`` for several machines; heartbeats fail the
trials of a worker that died elsewhere), or ``journal:PATH`` (Optuna's JournalFileBackend, for
several processes on one machine). Several workers run the same command against the same
storage and study name; ``--trials N`` is the study's total of finished (complete + pruned)
trials, shared by all workers, not a per-worker count.

Resume: re-running the command continues the study. Trials left RUNNING by a worker of this
machine whose process is gone are marked FAIL and their values queued again (also after
Ctrl-C or SIGTERM), so the study still ends with N finished trials.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import lfsearch
from lfsearch import paths
from lfsearch.experiments.study_export import apply_values, export, write_csv
from lfsearch.experiments.study_storage import (
    FINISHED,
    _boot_id,
    _count,
    _no_interrupt_traceback,
    _per_trial_tpe,
    _pruner,
    _quiet_optuna,
    _safe,
    check_folder_owner,
    claim_folder,
    default_storage,
    mask_url,
    open_storage,
    recover_stale_trials,
    requeue_trial,
    worker_id,
)
from lfsearch.search import Search, default_run_name
from lfsearch.search import config as config_mod
from lfsearch.search.study_section import PRUNERS, StudyParam, current_values, study_params, study_settings

log = logging.getLogger(__name__)



def default_study_name(config: dict[str, Any]) -> str:
    """<method>-<benchmark>, e.g. cosface-digits."""
    return default_run_name(config).rsplit("-seed", 1)[0]


# --------------------------------------------------------------------------------------------
# storage, sampler, pruner
# --------------------------------------------------------------------------------------------

@dataclass
class StudyEvent:
    """Progress of a study: a trial started ('trial_start'), an epoch of it ended ('epoch'), or
    it finished ('trial_end', with its state COMPLETE | PRUNED | FAIL)."""

    kind: str
    trial: int
    params: dict[str, Any] = field(default_factory=dict)
    epoch: int | None = None
    epochs: int | None = None
    value: float | None = None
    state: str | None = None
    seconds: float | None = None
    finished: int = 0
    target: int = 0


def _fingerprint(config: dict[str, Any], params: list[StudyParam]) -> str:
    """What defines a study's problem: the configuration (without device and threads, which
    workers may choose each for its machine) and parameters."""
    clean = {k: v for k, v in config.items() if not k.startswith("_") and k != "study"}
    clean = json.loads(json.dumps(clean))
    clean["run"].pop("device", None)
    clean["run"].pop("threads", None)
    clean["study_params"] = {p.name: p.as_table() for p in params}
    return json.dumps(clean, sort_keys=True)


def _check_identity(study: Any, fingerprint: str, storage_label: str) -> None:
    stored = study.user_attrs.get("lfsearch_config")
    if stored is None:
        study.set_user_attr("lfsearch_config", fingerprint)
        study.set_user_attr("lfsearch_version", lfsearch.__version__)
        return
    if stored != fingerprint:
        old, new = _flatten(json.loads(stored)), _flatten(json.loads(fingerprint))
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        raise ValueError(f"study {study.study_name!r} in {storage_label} was created with another "
                         f"configuration (differs in {', '.join(changed) or 'its settings'}); run "
                         "the same command to continue it, or give another --study-name")


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


class InterruptShield:
    """Ctrl-C and SIGTERM during a study: raised at once while a trial trains, held while the
    study writes to its storage and raised when the write is done. A KeyboardInterrupt in the
    middle of a SQLite commit leaves the connection's transaction open, and Optuna's own FAIL
    write then ends in "database is locked" (docs/faults.md)."""

    def __init__(self) -> None:
        self.held = True
        self.pending = False
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.held:
            self.pending = True
        else:
            raise KeyboardInterrupt

    def __enter__(self) -> "InterruptShield":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def raise_pending(self) -> None:
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def training(self):
        """Signals raise at once inside (the trial's own training loop)."""
        self.raise_pending()
        self.held = False
        try:
            yield
        finally:
            self.held = True

    @contextlib.contextmanager
    def writing(self):
        """Signals wait until the storage write inside is done."""
        before, self.held = self.held, True
        try:
            yield
        finally:
            self.held = before
        if not before:
            self.raise_pending()


def run_study(space: str | os.PathLike, *, trials: int, benchmark: str | None = None,
              epochs: int | None = None, model: str | None = None, seed: int | None = None,
              device: str | None = None, threads: int | None = None, storage: str | None = None,
              study_name: str | None = None, out: str | os.PathLike | None = None,
              pruner: str | None = None, runs_dir: str | os.PathLike = "runs",
              progress: Callable[[StudyEvent], None] | None = None,
              candidates: int | None = None, first_trial_at_file_values: bool = False,
              budget: int | None = None) -> dict[str, Any]:
    """Run (or continue) an Optuna study over a search space until `trials` trials are finished.

    budget = B candidate-epochs: besides the trial count, the study stops once its trials have
    spent B (pruned ones count the epochs they ran); a trial that would pass B is stopped at it
    (state PRUNED, "budget"), so the study never spends more than B:
        spent = Σ_trials candidate_epochs ≤ B.

    Returns the summary written to <out>/study.json. Several processes may call this at once
    with the same storage and study name; each takes trials until the study has `trials`
    finished (complete + pruned) ones. `first_trial_at_file_values`: a new study's first
    trial runs the file's own values (`current_values`), so the best trial is never worse on
    validation than the untuned method.
    """
    import optuna
    from optuna.trial import TrialState

    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        raise ValueError(f"--trials must be an integer >= 1 (got {trials!r})")
    if pruner is not None and pruner not in PRUNERS:
        raise ValueError(f"--pruner must be one of {', '.join(PRUNERS)} (got {pruner!r})")
    if budget is not None and (not isinstance(budget, int) or isinstance(budget, bool)
                               or budget < 1):
        raise ValueError(f"--budget must be an integer >= 1 (candidate-epochs; got {budget!r})")
    config = config_mod.resolve(config_mod.load(space), benchmark=benchmark, epochs=epochs,
                                model=model, seed=seed, device=device, threads=threads,
                                candidates=candidates)
    params = study_params(config)
    settings = study_settings(config)
    if pruner is not None:
        settings["pruner"] = pruner
    name = study_name if study_name is not None else default_study_name(config)
    if not isinstance(name, str) or not name.strip():
        raise ValueError("--study-name must be a non-empty name")
    folder = Path(out) if out is not None else Path(runs_dir) / _safe(name)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"--out {folder} exists and is not a folder")
    check_folder_owner(folder, name)
    created = not folder.exists()
    paths.make_folder(folder)
    url = storage if storage is not None else default_storage(folder)
    try:
        storage_obj = open_storage(url)
    except BaseException:
        if created and not any(folder.iterdir()):
            folder.rmdir()  # bad input leaves no empty folder behind
        raise
    label = mask_url(url)
    run_seed = config["run"]["seed"]

    with _quiet_optuna():
        study = optuna.create_study(
            storage=storage_obj, study_name=name, direction="maximize", load_if_exists=True,
            sampler=_per_trial_tpe(run_seed, settings["sampler_startup_trials"]),
            pruner=_pruner(settings, config["training"]["epochs"]))
    if study.direction != optuna.study.StudyDirection.MAXIMIZE:
        raise ValueError(f"study {name!r} in {label} minimises; lfsearch studies maximise the "
                         "validation reward: give another --study-name")
    _check_identity(study, _fingerprint(config, params), label)
    claim_folder(folder, name)
    recovered = recover_stale_trials(study, target=trials)
    first = current_values(config, params) if first_trial_at_file_values else {}
    if first and not study.get_trials(deepcopy=False):
        study.enqueue_trial(first)

    current: dict[str, Any] = {}

    def spent() -> int:
        """Candidate-epochs of the study's finished trials (every worker's)."""
        return sum(int(t.user_attrs.get("candidate_epochs", 0))
                   for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,
                                                                     TrialState.PRUNED)))

    def emit(event: StudyEvent) -> None:
        if progress is not None:
            progress(event)

    def objective(trial: Any) -> float:
        trial.set_user_attr("worker", worker_id())
        trial.set_user_attr("worker_boot", _boot_id())
        current["number"] = trial.number
        values = {p.name: p.suggest(trial) for p in params}
        trial_config = apply_values(config, params, values)
        run_dir = folder / "trials" / str(trial.number)
        if run_dir.exists():
            log.warning("trial folder %s exists (an older study in the same folder?): replaced",
                        run_dir)
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        trial.set_user_attr("run_dir", str(run_dir.resolve()))
        emit(StudyEvent("trial_start", trial.number, dict(values),
                        finished=_count(study, FINISHED), target=trials))
        left = None if budget is None else budget - spent()  # candidate-epochs this trial may use

        def on_progress(event: Any) -> None:
            if event.kind != "epoch":
                return
            last = event.epoch == event.epochs - 1
            if math.isfinite(event.reward):
                with shield.writing():
                    trial.report(float(event.reward), event.epoch)
            emit(StudyEvent("epoch", trial.number, dict(values), epoch=event.epoch,
                            epochs=event.epochs, value=float(event.reward), target=trials))
            used = (event.epoch + 1) * trial_config["controller"]["candidates"]
            over = left is not None and not last and \
                used + trial_config["controller"]["candidates"] > left
            with shield.writing():
                prune = not last and (over or trial.should_prune())
            if prune:  # the candidate-epochs it spent, to compare studies at equal compute
                with shield.writing():
                    trial.set_user_attr("candidate_epochs", used)
                why = (f"the study's budget of {budget} candidate-epochs is spent" if over else
                       f"pruned by the {settings['pruner']} pruner")
                raise optuna.TrialPruned(f"epoch {event.epoch + 1}/{event.epochs}: validation "
                                         f"reward {event.reward:.4f} {why}")

        with shield.training():
            results = Search(trial_config, run_dir, on_progress).run()
        metric = results.get("test_metric")
        if metric is not None and metric in results.get("test", {}):
            trial.set_user_attr(f"test_{metric}", float(results["test"][metric]))
        if "candidate_epochs" in results:
            trial.set_user_attr("candidate_epochs", int(results["candidate_epochs"]))
        value = results.get("final_validation_reward")
        return float("nan") if value is None else float(value)

    def after_trial(study: Any, frozen: Any) -> None:
        finished = _count(study, FINISHED)
        emit(StudyEvent("trial_end", frozen.number, dict(frozen.params), value=frozen.value,
                        state=frozen.state.name, finished=finished, target=trials,
                        seconds=frozen.duration.total_seconds() if frozen.duration else None))
        try:
            write_csv(study, folder)
        except OSError as exc:  # a busy file system must not end the study
            log.warning("could not write %s: %s", folder / "trials.csv", exc)
        # the global cap: stop once finished + running trials (of every worker) reach it
        if _count(study, ("COMPLETE", "PRUNED", "RUNNING")) >= trials:
            study.stop()
        if budget is not None and spent() >= budget:
            study.stop()

    remaining = trials - _count(study, ("COMPLETE", "PRUNED", "RUNNING"))
    if budget is not None and spent() >= budget:
        remaining = 0
    t0 = time.perf_counter()
    shield = InterruptShield()
    try:
        if remaining > 0:
            with shield, _quiet_optuna(), _no_interrupt_traceback():
                study.optimize(objective, n_trials=remaining, callbacks=[after_trial],
                               catch=())
                shield.raise_pending()  # a signal held during the last trial's writes
    except BaseException as exc:  # the trial is FAIL (Optuna); an interrupted one runs again
        number = current.get("number")
        if isinstance(exc, KeyboardInterrupt) and number is not None:
            frozen = study.get_trials(deepcopy=False)
            frozen = next((t for t in frozen if t.number == number), None)
            if frozen is not None and frozen.state == TrialState.FAIL and \
                    _count(study, ("COMPLETE", "PRUNED", "RUNNING", "WAITING")) < trials:
                requeue_trial(study, frozen)
        with contextlib.suppress(Exception):
            export(study, folder, config, params, settings, label, trials)
        raise
    summary = export(study, folder, config, params, settings, label, trials)
    summary["recovered_trials"] = recovered
    summary["budget"] = budget
    summary["seconds_this_worker"] = round(time.perf_counter() - t0, 3)
    return summary
