"""Reading local data files safely: directory checks with the expected layout in the message,
and an unpickler that admits only containers, bytes and numpy arrays (a data file runs no
code)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any


def check_dir(root: Path, kind: str, layout: str) -> None:
    if not root.is_dir():
        raise FileNotFoundError(f"{kind}: directory {root} does not exist\n{layout}")


def _too_big(nbytes: int, budget: int, what: str) -> None:
    if nbytes > budget:
        raise pickle.UnpicklingError(f"{what} of {nbytes} bytes is larger than the file "
                                     f"({budget} bytes); a data file stores its bytes")


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles only plain containers and numpy arrays: a data file cannot run code. With a
    `budget` (the file's size), no bytearray, array or scalar it builds may be larger: a few
    bytes of pickle cannot ask for gigabytes."""

    def __init__(self, file, *, budget: int | None = None, **kwargs):
        super().__init__(file, **kwargs)
        self.budget = budget

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
        ("builtins", "bytearray"), ("__builtin__", "bytearray"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            found = super().find_class(module, name)
            return found if self.budget is None else self._bounded(name, found)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only lists, dicts, "
                                     "bytes and numpy arrays are allowed)")


    def _bounded(self, name: str, found: Any) -> Any:
        """`found` wrapped so that what it allocates is checked against the budget first."""
        import math

        import numpy as np

        budget = self.budget
        if name == "bytearray":
            def make_bytearray(*args):
                if args and not isinstance(args[0], (bytes, bytearray, str)):
                    raise pickle.UnpicklingError("a bytearray built from a number, not from "
                                                 "bytes stored in the file, is refused")
                out = found(*args)
                _too_big(len(out), budget, "a bytearray")
                return out
            return make_bytearray
        if name == "_reconstruct":
            def reconstruct(subtype, shape, dtype):
                dims = shape if isinstance(shape, tuple) else (shape,)
                if not all(isinstance(d, int) and d >= 0 for d in dims):
                    raise pickle.UnpicklingError(f"an array shape {shape!r} is not a tuple of "
                                                 "sizes >= 0")
                _too_big(math.prod(dims) * np.dtype(dtype).itemsize, budget, "an array")
                return found(subtype, shape, dtype)
            return reconstruct
        if name == "scalar":
            def scalar(dtype, *args):
                _too_big(np.dtype(dtype).itemsize, budget, "a scalar")
                return found(dtype, *args)
            return scalar
        return found


def load_pickle(path: Path, layout: str) -> Any:
    """The restricted unpickling of `path`, bounded by its size; ValueError in one line."""
    try:
        with open(path, "rb") as f:
            budget = os.fstat(f.fileno()).st_size
            return RestrictedUnpickler(f, encoding="bytes", budget=budget).load()
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


