"""A run folder's files: config.toml, manifest.json, epochs.csv, controller.csv, results.json,
discovered.toml and checkpoint.pt, each written atomically (a temp file, then a rename), and
the checks that a folder may be written or resumed (docs/faults.md).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from lfsearch import paths
from lfsearch.search import checkpoint as checkpoint_mod
from lfsearch.search import config as config_mod

log = logging.getLogger(__name__)

RUN_FILES = ("config.toml", "manifest.json", "epochs.csv", "controller.csv", "checkpoint.pt",
             "results.json", "discovered.toml")  # and checkpoint.prev.pt from epoch 2 on

def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def _write_json(path: Path, obj: Any) -> None:
    config_mod.atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    config_mod.atomic_write_text(path, pd.DataFrame(rows).to_csv(index=False))


def _save_checkpoint(path: Path, checkpoint: dict[str, Any], keep_previous: bool = True) -> None:
    checkpoint_mod.save(path, checkpoint, keep_previous=keep_previous)


def check_run_dir(out: Path, *, resume: bool, force: bool) -> None:
    """Refuse a run folder that cannot be used, without changing anything on disk."""
    if resume and force:
        raise ValueError("--resume and --force exclude each other: resume continues a run, "
                         "force starts it again from scratch")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} exists and is not a folder")
    existing = out.is_dir() and any(p.name != paths.LOCK_NAME for p in out.iterdir())
    if resume:
        if not (out / "checkpoint.pt").is_file() and not (out / "config.toml").is_file():
            raise FileNotFoundError(f"--resume: {out} holds no run to resume "
                                    "(expected config.toml and checkpoint.pt)")
        return
    if existing and not force:
        raise ValueError(f"run folder {out} already exists; pass --resume to continue it or "
                         "--force to replace it")
    paths.check_creatable(out)


def make_run_dir(out: Path, *, resume: bool, force: bool) -> None:
    """Create the run folder (emptied first with force); on resume, remove stale temp files."""
    if resume:
        paths.remove_stale_temp_files(out)
        return
    if force and out.is_dir():  # emptied, but its lock file stays (another process may wait on it)
        for entry in out.iterdir():
            if entry.name == paths.LOCK_NAME:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    paths.make_folder(out)


@contextlib.contextmanager
def held(out: Path, *, resume: bool, force: bool) -> Iterator[None]:
    """The run folder created (if new), locked for the block (paths.folder_lock: a second
    process gets one line naming our PID), checked again under the lock (another process may
    have written it since the first check) and prepared (make_run_dir)."""
    if not resume:
        paths.make_folder(out)
    with paths.folder_lock(out, "run folder"):
        check_run_dir(out, resume=resume, force=force)
        make_run_dir(out, resume=resume, force=force)
        yield


def prepare_run_dir(out: Path, *, resume: bool, force: bool) -> None:
    """check_run_dir, then make_run_dir."""
    check_run_dir(out, resume=resume, force=force)
    make_run_dir(out, resume=resume, force=force)

def _read_manifest(path: Path) -> dict[str, Any]:
    """The manifest of a run being resumed; {} (with a warning) when it is missing or damaged."""
    try:
        old = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("%s could not be read (%s); a new one is written", path, exc)
        return {}
    return old if isinstance(old, dict) else {}


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
