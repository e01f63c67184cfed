"""A search's result as a loss for one's own training loop: ``from_discovered`` reads a run's
discovered.toml (or any search-space file: config.toml, best.toml) and returns the loss with
its per-epoch schedule; ``loss.set_epoch(e)`` applies epoch e's parameters (docs/library.md).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from lfsearch.losses.base import Loss
from lfsearch.losses.registry import build

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    import tomli as tomllib  # type: ignore[no-redef]


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"from_discovered: {path} does not exist (expected a run's "
                                "discovered.toml, e.g. runs/NAME/discovered.toml)")
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"from_discovered: {path} is not valid TOML: {exc}") from None


def from_discovered(path: str | os.PathLike, *, num_classes: int, embedding_size: int,
                    generator: torch.Generator | None = None) -> Loss:
    """The loss a search found, ready for one's own loop.

    Built from the file's ``[loss]`` (name and fixed arguments) at the ``init`` values of
    ``[loss.params.*]``; ``[controller] schedule`` (one dict per epoch, the chosen
    candidate's parameters) becomes ``loss.schedule``, applied by ``loss.set_epoch(e)``
    (past its end, the last entry). Without a schedule, ``set_epoch`` keeps the init values.
    """
    path = Path(path)
    config = _read(path)
    section = config.get("loss")
    if not isinstance(section, dict) or not isinstance(section.get("name"), str):
        raise ValueError(f"from_discovered: {path} has no [loss] name; allowed: a run's "
                         "discovered.toml or config.toml, or a search-space file")
    arguments = {k: v for k, v in section.items() if k not in ("name", "params")}
    loss = build(section["name"], num_classes=num_classes, embedding_size=embedding_size,
                 generator=generator, **arguments)
    specs = section.get("params", {})
    initial = {name: spec["init"] for name, spec in specs.items()
               if isinstance(spec, dict) and "init" in spec}
    if initial:
        loss.set_params(**initial)
    schedule = config.get("controller", {}).get("schedule")
    if schedule is not None:
        if not isinstance(schedule, list) or not schedule:
            raise ValueError(f"from_discovered: {path}: controller.schedule must be a list of "
                             "per-epoch tables {parameter = value}")
        loss.set_schedule(schedule)
        loss.set_epoch(0)
    return loss
