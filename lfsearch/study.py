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

The [study] table also takes ``pruner`` = "median" | "none" [median], ``pruner_startup_trials``
[3] (trials finished before any is pruned), ``pruner_warmup_epochs`` [0] (epochs of a trial
never pruned) and ``sampler_startup_trials`` [5] (random trials before TPE models the rest).

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
import datetime as _dt
import json
import logging
import math
import os
import re
import shutil
import signal
import socket
import threading
import time
import warnings
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Callable

import lfsearch
from lfsearch import config as config_mod
from lfsearch import paths
from lfsearch.search import Search, default_run_name, derive_seed
from lfsearch.study_space import (PRUNERS, StudyParam, check_section, current_values,
                                  default_params, set_values, study_params, study_settings)

log = logging.getLogger(__name__)

MIN_TRIALS_FOR_IMPORTANCE = 5
STALE_WITHOUT_WORKER_S = 60.0   # a RUNNING trial that never named its worker (died at once)
HEARTBEAT_INTERVAL_S = 30       # RDB servers (PostgreSQL, MySQL): a worker's heartbeat ...
HEARTBEAT_GRACE_S = 120         # ... and how long it may be silent before its trial fails
FINISHED = ("COMPLETE", "PRUNED")


def apply_values(config: dict[str, Any], params: list[StudyParam],
                 values: dict[str, Any]) -> dict[str, Any]:
    """The trial's configuration: `config` (without [study]) with every target set; validated."""
    return config_mod.validate(set_values(config, params, values),
                               source=config.get("_source", "<study>"))


def default_study_name(config: dict[str, Any]) -> str:
    """<method>-<benchmark>, e.g. cosface-digits."""
    return default_run_name(config).rsplit("-seed", 1)[0]


# --------------------------------------------------------------------------------------------
# storage, sampler, pruner
# --------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _quiet_optuna():
    """Optuna's per-trial INFO lines and experimental warnings off while we call it."""
    import optuna

    old = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield optuna
    finally:
        optuna.logging.set_verbosity(old)


class _DropInterruptedTrialLog(logging.Filter):
    """Drops Optuna's "Trial N failed ... KeyboardInterrupt" warning (with its traceback) and
    the "Trial N failed with value None" line after it: Ctrl-C or SIGTERM is not a bug, and
    the command line reports it in one line (the trial is FAIL and queued again)."""

    def __init__(self) -> None:
        super().__init__()
        self.dropped = False

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, KeyboardInterrupt):
            self.dropped = True
            return False
        if self.dropped and "failed with value" in record.getMessage():
            self.dropped = False
            return False
        return True


@contextlib.contextmanager
def _no_interrupt_traceback():
    logger = logging.getLogger("optuna.study._optimize")
    drop = _DropInterruptedTrialLog()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def mask_url(url: str) -> str:
    """The storage URL with its password replaced by ***."""
    return re.sub(r"(://[^:/@]*:)[^@/]*@", r"\1***@", url)


def default_storage(folder: Path) -> str:
    return f"sqlite:///{(folder / 'study.db').resolve()}"


def open_storage(url: str):
    """An Optuna storage for a URL: journal:PATH, sqlite:///FILE or any RDB URL."""
    import sqlalchemy.exc

    with _quiet_optuna() as optuna:
        if url.startswith("journal:"):
            path = url[len("journal:"):]
            if not path:
                raise ValueError("--storage journal:PATH needs a file path, e.g. "
                                 "journal:runs/study.log")
            paths.make_folder(Path(path).parent, "the journal's folder")
            from optuna.storages.journal import JournalFileBackend, JournalStorage

            try:
                return JournalStorage(JournalFileBackend(path))
            except OSError as exc:
                raise ValueError(f"--storage {url}: cannot open the journal file: "
                                 f"{paths.describe_os_error(exc, path)}") from None
        if "://" not in url:
            raise ValueError(f"--storage {mask_url(url)!r} is not a storage; allowed: "
                             "journal:PATH, sqlite:///FILE, postgresql://USER[:PASSWORD]@HOST"
                             "[:PORT]/DB, mysql://... (any SQLAlchemy URL Optuna accepts)")
        scheme = url.split("://", 1)[0]
        dialect, _, driver = scheme.partition("+")
        if dialect == "postgres":
            raise ValueError(f"--storage {mask_url(url)!r}: write postgresql://..., "
                             "SQLAlchemy does not know the postgres:// scheme")
        if dialect == "postgresql":
            url = _postgres_driver(url, driver)
        kwargs: dict[str, Any]
        if dialect == "sqlite":
            db = url.split(":///", 1)[1] if ":///" in url else ""
            if db and db != ":memory:":
                paths.make_folder(Path(db).parent, "the SQLite file's folder")
            kwargs = {"engine_kwargs": {"connect_args": {"timeout": 60}}}
        else:
            kwargs = {"heartbeat_interval": HEARTBEAT_INTERVAL_S, "grace_period": HEARTBEAT_GRACE_S,
                      "heartbeat_stale_trial_callback": requeue_trial,
                      "engine_kwargs": {"pool_pre_ping": True}}
        for attempt in range(6):
            try:
                with _creation_lock(url if dialect == "sqlite" else None):
                    return optuna.storages.RDBStorage(url, **kwargs)
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError,
                    sqlalchemy.exc.OperationalError) as exc:
                # workers starting together on an empty database race to create its tables
                # ("table studies already exists", a duplicate version row, a locked file)
                racing = not isinstance(exc, sqlalchemy.exc.OperationalError) or \
                    any(w in str(exc) for w in ("already exists", "database is locked"))
                if attempt == 5 or not racing:
                    text = str(exc).strip()
                    first = text.splitlines()[0] if text else type(exc).__name__
                    raise ValueError(f"--storage {mask_url(url)}: cannot open it: "
                                     f"{first}") from None
                time.sleep(0.2 * (attempt + 1) + 0.1 * (os.getpid() % 7))
            except (sqlalchemy.exc.SQLAlchemyError, ImportError) as exc:
                text = str(exc).strip()
                first = text.splitlines()[0] if text else type(exc).__name__
                raise ValueError(f"--storage {mask_url(url)}: cannot open it: {first}") from None
        raise AssertionError("unreachable")


@contextlib.contextmanager
def _creation_lock(url: str | None):
    """For a SQLite file: an exclusive flock on its folder while Optuna creates (or checks) its
    tables, so that workers started together do not race; a no-op elsewhere."""
    folder = None
    if url is not None and ":///" in url:
        db = url.split(":///", 1)[1]
        if db and db != ":memory:":
            folder = Path(db).parent
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: the retries above still apply
        fcntl = None
    if folder is None or fcntl is None:
        yield
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _postgres_driver(url: str, driver: str) -> str:
    """postgresql:// with an installed driver: SQLAlchemy's default (psycopg2 before 2.1,
    psycopg 3 since), else whichever of psycopg2 / psycopg is installed."""
    if driver:
        if driver in ("psycopg2", "psycopg") and find_spec(driver) is None:
            raise ValueError(f"--storage {mask_url(url)}: the PostgreSQL driver {driver!r} is "
                             "not installed; pip install 'lfsearch[postgres]' (psycopg2-binary) "
                             "or psycopg[binary]")
        return url
    from sqlalchemy.engine import make_url

    default = make_url(url).get_dialect().driver
    for module in (default, "psycopg2", "psycopg"):
        if module in ("psycopg2", "psycopg") and find_spec(module) is not None:
            return url if module == default else f"postgresql+{module}://" + url.split("://", 1)[1]
    raise ValueError(f"--storage {mask_url(url)}: no PostgreSQL driver is installed; "
                     "pip install 'lfsearch[postgres]' (psycopg2-binary) or psycopg[binary]")


def _per_trial_tpe(seed: int, n_startup_trials: int):
    """TPE whose random stream for trial n is seeded from (seed, n).

    Samples depend only on the seed, the trial number and the study's history, so one worker
    reproduces a study exactly, and workers sharing a storage (each with its own trial
    numbers) never draw the same random points.
    """
    import optuna

    class PerTrialSeededTPE(optuna.samplers.BaseSampler):
        def __init__(self) -> None:
            self._samplers: dict[int, Any] = {}

        def _for(self, number: int):
            if number not in self._samplers:
                if len(self._samplers) > 8:
                    self._samplers.pop(next(iter(self._samplers)))
                with _quiet_optuna():
                    self._samplers[number] = optuna.samplers.TPESampler(
                        seed=derive_seed(seed, "study-sampler", number),
                        n_startup_trials=n_startup_trials, constant_liar=True)
            return self._samplers[number]

        def infer_relative_search_space(self, study, trial):
            return self._for(trial.number).infer_relative_search_space(study, trial)

        def sample_relative(self, study, trial, search_space):
            return self._for(trial.number).sample_relative(study, trial, search_space)

        def sample_independent(self, study, trial, param_name, param_distribution):
            with _quiet_optuna():
                return self._for(trial.number).sample_independent(study, trial, param_name,
                                                                  param_distribution)

        def before_trial(self, study, trial):
            self._for(trial.number).before_trial(study, trial)

        def after_trial(self, study, trial, state, values):
            self._for(trial.number).after_trial(study, trial, state, values)

    return PerTrialSeededTPE()


def _pruner(settings: dict[str, Any]):
    import optuna

    if settings["pruner"] == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=settings["pruner_startup_trials"],
                                       n_warmup_steps=settings["pruner_warmup_epochs"])


# --------------------------------------------------------------------------------------------
# workers and stale trials
# --------------------------------------------------------------------------------------------

def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def worker_id() -> str:
    """host:pid of this process, recorded on every trial it runs."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    if os.name != "posix":
        return True  # no safe probe: leave such trials to the user (or to heartbeats)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie has exited: it only waits to be reaped
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _is_stale(trial: Any, now: _dt.datetime) -> bool:
    """A RUNNING trial whose worker ran on this machine and is gone (or never registered)."""
    worker = trial.user_attrs.get("worker")
    if worker is None:
        start = trial.datetime_start or now
        return (now - start).total_seconds() > STALE_WITHOUT_WORKER_S
    host, _, pid = str(worker).rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another machine's worker: heartbeats (RDB storages) decide
    if trial.user_attrs.get("worker_boot", "") != _boot_id():
        return True  # this machine rebooted since
    return not _pid_alive(int(pid))


def requeue_trial(study: Any, trial: Any) -> None:
    """Queue a failed trial's values again (a heartbeat's stale-trial callback too)."""
    if trial.params:
        with _quiet_optuna():
            study.enqueue_trial(dict(trial.params), user_attrs={"retry_of": trial.number})


def recover_stale_trials(study: Any, target: int | None = None) -> list[int]:
    """Mark stale RUNNING trials FAIL and queue their values again; returns their numbers.

    A trial is stale when the worker that runs it was a process of this machine that no
    longer exists. RDB storages with heartbeats also fail other machines' silent workers.
    Values are queued again only while the study still needs trials (target).
    """
    import optuna
    from optuna.trial import TrialState

    with _quiet_optuna():
        optuna.storages.fail_stale_trials(study)  # heartbeats (a no-op without them)
    now = _dt.datetime.now()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not _is_stale(trial, now):
            continue
        with _quiet_optuna():
            frozen = study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        if frozen.state != TrialState.FAIL:
            continue
        failed.append(trial.number)
        log.warning("trial %d was left running by %s, which is gone: marked FAIL",
                    trial.number, trial.user_attrs.get("worker", "an unknown worker"))
        if target is None or _count(study, ("COMPLETE", "PRUNED", "RUNNING", "WAITING")) < target:
            requeue_trial(study, trial)
    return failed


def _count(study: Any, states: tuple[str, ...]) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=tuple(TrialState[s] for s in states)))


# --------------------------------------------------------------------------------------------
# the study
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
              ) -> dict[str, Any]:
    """Run (or continue) an Optuna study over a search space until `trials` trials are finished.

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
            pruner=_pruner(settings))
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

        def on_progress(event: Any) -> None:
            if event.kind != "epoch":
                return
            last = event.epoch == event.epochs - 1
            if math.isfinite(event.reward):
                with shield.writing():
                    trial.report(float(event.reward), event.epoch)
            emit(StudyEvent("epoch", trial.number, dict(values), epoch=event.epoch,
                            epochs=event.epochs, value=float(event.reward), target=trials))
            with shield.writing():
                prune = not last and trial.should_prune()
            if prune:
                raise optuna.TrialPruned(f"epoch {event.epoch + 1}/{event.epochs}: validation "
                                         f"reward {event.reward:.4f} below the median of the "
                                         "earlier trials at that epoch")

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

    remaining = trials - _count(study, ("COMPLETE", "PRUNED", "RUNNING"))
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
    summary["seconds_this_worker"] = round(time.perf_counter() - t0, 3)
    return summary


OWNER_FILE = "study_name.txt"


def _folder_owner(folder: Path) -> str | None:
    """The study a folder belongs to: its study_name.txt, else its study.json's study_name."""
    try:
        return (folder / OWNER_FILE).read_text().strip() or None
    except OSError:
        pass
    try:
        return json.loads((folder / "study.json").read_text()).get("study_name")
    except (OSError, ValueError, AttributeError):
        return None


def check_folder_owner(folder: Path, name: str) -> None:
    """Refuse a study folder that holds another study: their trials/<number> folders and
    trials.csv would overwrite each other (docs/faults.md)."""
    owner = _folder_owner(folder)
    if owner is not None and owner != name:
        raise ValueError(f"--out {folder} holds study {owner!r}; give study {name!r} its own "
                         f"--out (or --study-name {owner} to continue that one)")


def claim_folder(folder: Path, name: str) -> None:
    """Record which study a folder belongs to (written once, atomically)."""
    if _folder_owner(folder) is None:
        config_mod.atomic_write_text(folder / OWNER_FILE, name + "\n")


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip("_") or "study"


# --------------------------------------------------------------------------------------------
# outputs: trials.csv, figures, study.json, best.toml
# --------------------------------------------------------------------------------------------

def trials_table(study: Any):
    """One row per trial: number, state, value, start/end, duration_s, params_*, user_attrs_*,
    epochs_reported (how many epochs reported a reward: fewer than E for a pruned trial)."""
    import pandas as pd

    frame = study.trials_dataframe(attrs=("number", "state", "value", "datetime_start",
                                          "datetime_complete", "duration", "params",
                                          "user_attrs"))
    if frame.empty:
        return pd.DataFrame(columns=["number", "state", "value", "duration_s"])
    if "duration" in frame:
        frame.insert(frame.columns.get_loc("duration"), "duration_s",
                     frame["duration"].dt.total_seconds())
        frame = frame.drop(columns=["duration"])
    reported = {t.number: len(t.intermediate_values) for t in study.get_trials(deepcopy=False)}
    frame["epochs_reported"] = frame["number"].map(reported)
    return frame


def write_csv(study: Any, folder: Path) -> Path:
    path = folder / "trials.csv"
    config_mod.atomic_write_text(path, trials_table(study).to_csv(index=False))
    return path


def _title(ax: Any, text: str) -> None:
    """Replace Optuna's own title (it uses the left slot for some plots) by ours."""
    for loc in ("left", "right"):
        ax.set_title("", loc=loc)
    ax.set_title(text)


def _save(ax: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig = ax.figure
    fig.set_size_inches(8, 5)
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def write_figures(study: Any, folder: Path, params: list[StudyParam], seed: int) -> list[Path]:
    """Optuna's matplotlib plots as PNG: optimisation history, intermediate values (the
    per-epoch rewards the pruner judged; when trials ran >= 2 epochs) and, with >= 2
    parameters and MIN_TRIALS_FOR_IMPORTANCE complete trials, the fANOVA importances."""
    from matplotlib.ticker import MaxNLocator
    from optuna.importance import FanovaImportanceEvaluator
    from optuna.trial import TrialState
    from optuna.visualization import matplotlib as ovm

    figures = folder / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    written = []
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    with _quiet_optuna():
        if complete:
            ax = ovm.plot_optimization_history(study, target_name="validation reward")
            _title(ax, f"{study.study_name}: optimisation history")
            ax.set_xlabel("trial")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            _save(ax, figures / "optimization_history.png")
            written.append(figures / "optimization_history.png")
        if any(len(t.intermediate_values) >= 2 for t in study.get_trials(deepcopy=False)):
            ax = ovm.plot_intermediate_values(study)
            _title(ax, f"{study.study_name}: validation reward per epoch (pruned trials stop)")
            ax.set_xlabel("epoch (0 = first, as in epochs.csv)")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel("validation reward")
            if ax.get_legend() is not None and len(study.trials) > 12:
                ax.get_legend().remove()
            _save(ax, figures / "intermediate_values.png")
            written.append(figures / "intermediate_values.png")
        if len(params) >= 2 and len(complete) >= MIN_TRIALS_FOR_IMPORTANCE:
            try:
                ax = ovm.plot_param_importances(
                    study, evaluator=FanovaImportanceEvaluator(seed=seed),
                    target_name="validation reward")
            except (ValueError, RuntimeError) as exc:
                log.warning("parameter importances not plotted: %s", exc)
            else:
                _title(ax, f"{study.study_name}: parameter importances (fANOVA)")
                _save(ax, figures / "param_importances.png")
                written.append(figures / "param_importances.png")
    return written


def export(study: Any, folder: Path, config: dict[str, Any], params: list[StudyParam],
           settings: dict[str, Any], storage_label: str, target: int) -> dict[str, Any]:
    """trials.csv, figures/*.png, study.json and best.toml (the best values applied to the
    space, re-runnable with `lfsearch search`); returns the study.json summary."""
    from optuna.trial import TrialState

    write_csv(study, folder)
    figures = write_figures(study, folder, params, config["run"]["seed"])
    all_trials = study.get_trials(deepcopy=False)
    counts = {s.name: sum(t.state == s for t in all_trials) for s in TrialState}
    summary: dict[str, Any] = {
        "study_name": study.study_name, "storage": storage_label, "folder": str(folder),
        "direction": "maximize",
        "objective": "final validation reward (reward of the chosen candidate, last epoch)",
        "method": config["method"]["name"], "benchmark": config["training"]["benchmark"],
        "epochs": config["training"]["epochs"], "seed": config["run"]["seed"],
        "target_trials": target, "finished_trials": counts["COMPLETE"] + counts["PRUNED"],
        "states": {k: v for k, v in counts.items() if v},
        "params": {p.name: p.as_table() for p in params}, "settings": settings,
        "figures": [str(p.relative_to(folder)) for p in figures], "best": None,
        "lfsearch": lfsearch.__version__,
    }
    complete = [t for t in all_trials if t.state == TrialState.COMPLETE]
    if complete:
        best = study.best_trial
        summary["best"] = {"number": best.number, "value": best.value, "params": best.params,
                           "run_dir": best.user_attrs.get("run_dir"),
                           **{k: v for k, v in best.user_attrs.items() if k.startswith("test_")}}
        if set(best.params) == {p.name for p in params}:
            best_config = apply_values(config, params, best.params)
            best_config["method"] = {
                "name": f"{config['method']['name']}-study-best",
                "description": f"Best trial {best.number} of study {study.study_name!r} "
                               f"(validation reward {best.value:.4f}): "
                               + ", ".join(f"{k} = {v:.6g}" for k, v in best.params.items()),
            }
            config_mod.dump(best_config, folder / "best.toml")
    config_mod.atomic_write_text(folder / "study.json",
                                 json.dumps(summary, indent=2, default=str) + "\n")
    return summary


__all__ = ["StudyParam", "StudyEvent", "run_study", "study_params", "default_params",
           "current_values",
           "check_section", "apply_values", "open_storage", "recover_stale_trials",
           "requeue_trial", "trials_table", "write_figures", "export", "mask_url", "worker_id"]
