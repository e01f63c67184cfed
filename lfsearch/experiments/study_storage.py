"""Where a study lives and who works on it: SQLite, RDB or journal storage, worker identities
and heartbeats, stale trials requeued, and the study folder's owner check.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import os
import re
import socket
import time
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from lfsearch import paths
from lfsearch.search import config as config_mod
from lfsearch.search import derive_seed
from lfsearch.search.controllers.optuna_sampler import _quiet_optuna  # noqa: F401  (study, study_export)

log = logging.getLogger(__name__)

STALE_WITHOUT_WORKER_S = 60.0   # a RUNNING trial that never named its worker (died at once)
HEARTBEAT_INTERVAL_S = 30       # RDB servers (PostgreSQL, MySQL): a worker's heartbeat ...
HEARTBEAT_GRACE_S = 120         # ... and how long it may be silent before its trial fails
FINISHED = ("COMPLETE", "PRUNED")

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


def _pruner(settings: dict[str, Any], epochs: int | None = None):
    """The study's pruner. Each trial reports its reward at steps 0 .. E−1 (its epochs):
    successive_halving and hyperband take min_resource = max(1, pruner_warmup_epochs),
    reduction factor 3; hyperband's max_resource is E (epochs), or Optuna's "auto"."""
    import optuna

    if settings["pruner"] == "none":
        return optuna.pruners.NopPruner()
    min_resource = max(1, settings["pruner_warmup_epochs"])
    if settings["pruner"] == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=min_resource,
                                                      reduction_factor=3)
    if settings["pruner"] == "hyperband":
        return optuna.pruners.HyperbandPruner(
            min_resource=min_resource, max_resource=epochs if epochs else "auto",
            reduction_factor=3)
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
