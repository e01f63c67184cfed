"""Reading local data files safely: directory checks with the expected layout in the message,
and an unpickler that admits only containers, bytes and numpy arrays (a data file runs no
code)."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any


def check_dir(root: Path, kind: str, layout: str) -> None:
    if not root.is_dir():
        raise FileNotFoundError(f"{kind}: directory {root} does not exist\n{layout}")


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles only plain containers and numpy arrays: a data file cannot run code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
        ("builtins", "bytearray"), ("__builtin__", "bytearray"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only lists, dicts, "
                                     "bytes and numpy arrays are allowed)")


def load_pickle(path: Path, layout: str) -> Any:
    try:
        with open(path, "rb") as f:
            return RestrictedUnpickler(f, encoding="bytes").load()
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a malformed file
        raise ValueError(f"cannot read pickle {path}: {exc}\n{layout}") from exc


def get_key(d: Any, key: str, path: Path, layout: str) -> Any:
    if isinstance(d, dict):
        for k in (key, key.encode()):
            if k in d:
                return d[k]
    raise ValueError(f"{path}: expected a dict with key {key!r}\n{layout}")


