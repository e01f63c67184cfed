"""The search engine: one search space followed epoch by epoch (docs/architecture.md).

    from lfsearch.search import search
    results = search("search_softmax", epochs=5)

Modules, bottom up: ``study_section`` and ``config`` (the search-space file), ``spaces`` (the
bundled files), ``controllers`` (fixed, random, REINFORCE, Optuna), ``candidate`` (one
candidate's epoch: the trainee, the learning rate, the reward), ``accel``, ``sequential`` and
``packed`` (the two ways to train an epoch's candidates), ``population`` (the strategy that
chooses between them), ``distributed`` (torchrun), ``checkpoint`` and ``run_folder`` (what a
run writes), ``loop`` (the epoch loop, ``Search`` and ``search``).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from lfsearch.search.loop import (
    Progress,
    Search,
    default_metric,
    default_run_name,
    derive_seed,
    resolve_device,
    search,
)

__all__ = ["Progress", "Search", "search", "default_metric", "default_run_name", "derive_seed",
           "resolve_device"]


class _CallableModule(type(os)):
    """Lets Python users write `lfsearch.search(...)` for `lfsearch.search.search(...)`."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return search(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
