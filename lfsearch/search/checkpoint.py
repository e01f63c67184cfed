"""A run's checkpoint.pt, written so that a kill or a damaged file costs at most one epoch.

    save:  torch.save -> .checkpoint.pt.tmpPID            (the new epoch, not yet visible)
           hard link checkpoint.pt -> checkpoint.prev.pt  (the last good one, kept beside)
           os.replace(.checkpoint.pt.tmpPID, checkpoint.pt)
    load:  checkpoint.pt; if it is missing, empty, truncated or not a checkpoint, then
           checkpoint.prev.pt (one epoch older), with a warning; if neither loads, a one-line
           ValueError that names the file and says what to do.

At every moment checkpoint.pt is a complete file (old or new), and checkpoint.prev.pt holds
the epoch before it once two epochs have been saved (docs/faults.md).

Run folders are shared, so a checkpoint is read with torch.load(weights_only=True): it may hold
only tensors, numbers, strings, None and plain containers (`plain` converts numpy values when
saving). A file holding anything else is refused (UnsafeCheckpoint), never unpickled.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

NAME = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"
KEYS = ("epoch", "state", "controller", "rows", "controller_rows")


class UnsafeCheckpoint(ValueError):
    """A checkpoint holding objects other than tensors, numbers, strings and plain containers:
    unpickling it could run code, so it is refused (and never used as a fallback)."""


_PLAIN = (type(None), bool, int, float, str, bytes, torch.Tensor, torch.Size, torch.dtype,
          torch.device)


def plain(obj: Any, where: str = "checkpoint") -> Any:
    """`obj` with numpy scalars and arrays as Python numbers and lists, checked to hold only
    what torch.load(weights_only=True) reads back; TypeError names the first other value."""
    import numpy as np

    if isinstance(obj, np.generic):  # before _PLAIN: np.float64 is a float subclass
        return obj.item()
    if isinstance(obj, _PLAIN):
        return obj
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, dict):  # OrderedDict stays an OrderedDict (state_dicts)
        out = type(obj)() if type(obj) in (dict, OrderedDict) else {}
        for k, v in obj.items():
            out[plain(k, where)] = plain(v, f"{where}[{k!r}]")
        return out
    if isinstance(obj, (list, tuple)):
        items = [plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return items if isinstance(obj, list) else tuple(items)
    raise TypeError(f"{where} is a {type(obj).__name__}; a checkpoint holds only tensors, "
                    "numbers, strings and plain containers")


def save(path: str | os.PathLike, checkpoint: dict[str, Any], keep_previous: bool = True) -> None:
    """Write `checkpoint` to `path` atomically, keeping the file it replaces as PREVIOUS
    (keep_previous=False: a damaged file is replaced and PREVIOUS stays as it is)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(plain(checkpoint), tmp)
        if keep_previous and path.is_file():
            previous = path.with_name(PREVIOUS)
            link = path.with_name(f".{PREVIOUS}.tmp{os.getpid()}")
            link.unlink(missing_ok=True)
            try:
                os.link(path, link)  # free: the old file gets a second name
            except OSError:  # a file system without hard links: copy instead
                import shutil

                shutil.copyfile(path, link)
            os.replace(link, previous)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


class DamagedCheckpoint(ValueError):
    """A checkpoint file that cannot be read back (empty, truncated, or not a checkpoint)."""


def _numpy_number_globals() -> list:
    """numpy's number scalars (float64, int64, ...; never object dtype): data only, and found in
    checkpoints written before `plain` turned them into Python numbers."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    kinds = ("float64", "float32", "float16", "int64", "int32", "int16", "int8", "uint8",
             "bool")
    return [core.multiarray.scalar, np.dtype, *(type(np.dtype(k)) for k in kinds)]


def _first(exc: Exception) -> str:
    return " ".join(str(exc).split()).split(". ")[0][:160] or type(exc).__name__


def read(path: str | os.PathLike, map_location: Any = None) -> dict[str, Any]:
    """torch.load(weights_only=True) a checkpoint and check its keys; DamagedCheckpoint when it
    cannot be used, UnsafeCheckpoint when it holds objects that could run code."""
    path = Path(path)
    if path.stat().st_size == 0:
        raise DamagedCheckpoint(f"{path} is empty")
    try:
        with torch.serialization.safe_globals(_numpy_number_globals()):
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        if re.search(r"Unsupported (global|class)", str(exc)):
            found = re.search(r"GLOBAL ([\w.]+)", str(exc))
            what = f" ({found.group(1)})" if found else ""
            raise UnsafeCheckpoint(
                f"{path} holds an object other than tensors, numbers, strings and plain "
                f"containers{what}; it is refused, not loaded (unpickling it could run code); "
                "use a checkpoint written by lfsearch") from None
        raise DamagedCheckpoint(f"{path} is damaged or truncated ({_first(exc)})") from None
    except Exception as exc:  # zip / pickle / EOF errors of a truncated or foreign file
        # the library's first sentence ("PytorchStreamReader failed reading zip archive:
        # failed finding central directory"), not its advice to file a bug
        raise DamagedCheckpoint(f"{path} is damaged or truncated ({_first(exc)})") from None
    missing = [k for k in KEYS if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise DamagedCheckpoint(f"{path} is not an lfsearch checkpoint (no {', '.join(missing)})")
    return ckpt


def load(folder: str | os.PathLike,
         map_location: Any = None) -> tuple[dict[str, Any] | None, Path | None]:
    """The newest readable checkpoint of a run folder and its file ((None, None): none at all).

    Falls back to PREVIOUS when NAME is missing or damaged; raises a one-line ValueError
    naming the file and what to do when no checkpoint can be read."""
    folder = Path(folder)
    current, previous = folder / NAME, folder / PREVIOUS
    if not current.is_file() and not previous.is_file():
        return None, None
    problem = None
    if current.is_file():
        try:
            return read(current, map_location), current
        except DamagedCheckpoint as exc:
            problem = str(exc)
    else:
        problem = f"{current} is missing"
    if previous.is_file():
        try:
            ckpt = read(previous, map_location)
        except DamagedCheckpoint:
            pass
        else:
            log.warning("%s; resuming from %s (epoch %d) instead", problem, previous,
                        ckpt["epoch"] + 1)
            return ckpt, previous
    raise ValueError(f"cannot resume: {problem} and no readable {PREVIOUS} is beside it; "
                     "start the run again with --force")
