"""Controllers: an ask/tell interface that proposes each epoch's loss parameters.

``sample(M)`` proposes M settings, ``update(params, rewards)`` learns from the epoch's rewards,
``state_dict()`` resumes it. Kinds: ``fixed`` (a hand-crafted loss, a replayed schedule or a
whole-run curve per parameter, controllers/schedules.py),
``random`` (Random-Softmax), ``reinforce`` (Search-Softmax, AM-LFS) and ``optuna`` (any Optuna
sampler). The math is in docs/math.md; ``build`` below is the registry.
"""

from __future__ import annotations

from typing import Any

from lfsearch.search.controllers.base import (
    BASELINES,
    KINDS,
    OPTIMIZERS,
    OPTUNA_SAMPLERS,
    REWARD_NORMALISATIONS,
    SIGMA_SCHEDULES,
    Controller,
    ParamSpec,
    _check_seed,
    _check_space,
    advantages,
    normalise_rewards,
    sigma_schedule,
)
from lfsearch.search.controllers.fixed import FixedController
from lfsearch.search.controllers.optuna_sampler import OptunaController
from lfsearch.search.controllers.random_sampling import RandomController
from lfsearch.search.controllers.reinforce import ReinforceController

__all__ = ["ParamSpec", "Controller", "FixedController", "RandomController",
           "ReinforceController", "OptunaController", "KINDS", "available", "build",
           "normalise_rewards", "advantages", "sigma_schedule", "BASELINES", "OPTIMIZERS",
           "OPTUNA_SAMPLERS", "REWARD_NORMALISATIONS", "SIGMA_SCHEDULES"]

_CLASSES = {"fixed": FixedController, "random": RandomController,
            "reinforce": ReinforceController, "optuna": OptunaController}
_SETTINGS = {
    "fixed": ("schedule", "curve"),
    "random": ("warmup_epochs",),
    "reinforce": ("sigma", "sigma_decay", "sigma_min", "sigma_final", "sigma_schedule", "lr",
                  "optimizer", "reward_normalisation", "baseline", "ema_decay", "warmup_epochs"),
    "optuna": ("sampler", "n_startup_trials", "reward_normalisation", "include_init",
               "warmup_epochs"),
}


def available() -> dict[str, tuple[str, ...]]:
    """Controller kinds and the settings each accepts."""
    return dict(_SETTINGS)


def build(kind: str, space: list[ParamSpec], *, seed: int, horizon: int | None = None,
          **settings: Any) -> Controller:
    """A controller of ``kind`` (fixed, random, reinforce, optuna) over ``space``.

    ``horizon``: the number of ``update`` calls the run will make (what reinforce's
    ``sigma_final`` anneals over); the other kinds do not use it.
    Unknown kinds and settings raise ValueError listing the allowed ones.
    """
    if kind not in _CLASSES:
        raise ValueError(f"controller kind must be one of {list(KINDS)}, got {kind!r}")
    allowed = _SETTINGS[kind]
    unknown = sorted(set(settings) - set(allowed))
    if unknown:
        raise ValueError(f"controller {kind!r}: unknown setting(s) {unknown}; "
                         f"allowed: {list(allowed)}")
    space = _check_space(space, kind)
    seed = _check_seed(seed)
    if kind in ("reinforce", "fixed"):
        settings["horizon"] = horizon
    return _CLASSES[kind](space, seed, **settings)
