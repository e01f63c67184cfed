"""Search controllers: who proposes each epoch's M loss settings and learns from their rewards.

One small ask/tell interface (docs/architecture.md section 4, docs/math.md section 6) shared
by four kinds::

    controller = build(kind, space, seed=0, **settings)
    params = controller.sample(M)           # M dicts {parameter name: value}
    controller.update(params, rewards)      # one call per epoch (per interval), higher is better
    controller.state_dict() / load_state_dict(state)   # resume
    controller.describe()                   # a flat row of controller.csv

Kinds and their settings (defaults in brackets):

- ``fixed`` -- a hand-crafted loss: every candidate gets the ``init`` values.
  ``schedule`` [None]: a list of per-epoch dicts {name: value} replayed in order (entry e at
  epoch e, the last entry repeated; names left out take their ``init``), e.g. the schedule a
  finished search exported.
- ``random`` -- Random-Softmax: every candidate, every epoch, each parameter uniform inside its
  bounds (uniform in log space for ``log=True`` parameters). ``warmup_epochs`` [0].
- ``reinforce`` -- Search-Softmax / AM-LFS: a Gaussian policy N(mu, sigma^2) per parameter,
  draws clipped to the bounds, and REINFORCE on normalised rewards r~::

      grad_mu = mean_i( r~_i * (a_i - mu) / sigma^2 ),     mu <- clip(mu + step(grad_mu))

  ``sigma`` [0.1], ``sigma_decay`` [1.0, multiplicative per update], ``sigma_min`` [0.01],
  ``sigma_final`` [None: no schedule], ``sigma_schedule`` ['log_linear' | 'cosine'],
  ``lr`` [0.05 for adam, 0.005 for sgd], ``optimizer`` ['adam' | 'sgd'],
  ``baseline`` ['batch_mean' | 'ema' | 'none'], ``ema_decay`` [0.9],
  ``reward_normalisation`` ['zscore' | 'mean' | 'rank' | 'none'], ``warmup_epochs`` [0].
  The advantage of candidate i (see :func:`advantages`) is

      r~_i = (r_i - b) / std(r)   zscore          r~_i = r_i - b   mean, none
      r~_i = centred rank of r_i  rank (mean 0: the baseline changes nothing)

  with b = mean(r) (batch_mean), b = 0 (none), or the moving average of past batch means
  (ema): b_1 = mean(r_1), then b_t used at update t and b_{t+1} = d·b_t + (1 - d)·mean(r_t)
  with d = ``ema_decay``. Annealing: with ``sigma_final`` the policy std of the t-th learning
  update (t = 0..T-1 after warm-up, T = ``horizon`` - ``warmup_epochs``, ``horizon`` = the
  number of updates of the run, which the search passes) is

      log_linear: sigma_t = sigma · (sigma_final / sigma)^(t / (T - 1))
      cosine:     sigma_t = sigma_final + (sigma - sigma_final) · (1 + cos(pi t / (T - 1))) / 2

  so the first batch is drawn with ``sigma`` and the last with ``sigma_final`` (it replaces
  sigma_decay/sigma_min, which cannot be combined with it).
- ``optuna`` -- any Optuna sampler proposing the candidates through ``study.ask()`` with a
  ``FloatDistribution(low, high, log=log)`` per parameter; ``update`` tells the rewards
  (direction: maximise). ``sampler`` ['tpe' | 'cmaes' | 'gp' | 'random'],
  ``n_startup_trials`` [the sampler's own default], ``reward_normalisation`` ['none', or
  'zscore' | 'mean' | 'rank' to make rewards of different epochs comparable],
  ``include_init`` [True: the first searched candidate is the ``init`` point],
  ``warmup_epochs`` [0].

Units (reinforce): the policy lives in the *unit space* of each parameter,
``u = (z - z_low) / (z_high - z_low)`` with ``z = value`` or ``z = log(value)`` when
``log=True``. So ``sigma``, ``sigma_min`` and ``lr`` are fractions of the parameter's
(log-)range and one default fits every parameter: sigma = 0.1 on A in [1, 1e4] (log=True)
is a factor 10^0.4 ~ 2.5 either way. With Adam the step is about ``lr`` per update; with SGD
the step is ``lr * grad_mu`` and grad_mu grows like 1/sigma, hence the smaller default.

Warm-up (random, reinforce, optuna): during the first ``warmup_epochs`` updates every
candidate gets the ``init`` values and ``update`` learns nothing (it only counts the epoch).
Non-finite rewards (a diverged candidate) count as the worst finite reward of their batch.

Randomness comes only from ``seed`` (a numpy Generator; Optuna samplers are re-seeded from
(seed, number of trials so far) on every ``sample`` call), so the same seed gives the same
candidates and a controller restored from ``state_dict()`` continues exactly as an
uninterrupted one. ``state_dict()`` holds only plain Python values (torch.save-able).
"""

from __future__ import annotations

import contextlib
import logging
import math
import warnings
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "ParamSpec",
    "Controller",
    "FixedController",
    "RandomController",
    "ReinforceController",
    "OptunaController",
    "KINDS",
    "available",
    "build",
]

logger = logging.getLogger(__name__)

KINDS = ("fixed", "random", "reinforce", "optuna")
REWARD_NORMALISATIONS = ("zscore", "mean", "rank", "none")
BASELINES = ("batch_mean", "ema", "none")
SIGMA_SCHEDULES = ("log_linear", "cosine")
OPTIMIZERS = ("adam", "sgd")
OPTUNA_SAMPLERS = ("tpe", "cmaes", "gp", "random")
_STATE_VERSION = 1


# --------------------------------------------------------------------------------------------
# the search space
# --------------------------------------------------------------------------------------------


def _as_float(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{what} must be a real number, got {value!r}")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"{what} must be finite, got {value!r}")
    return out


@dataclass(frozen=True)
class ParamSpec:
    """One searched loss parameter: bounds [low, high], initial value, optional log scale.

    With ``log=True`` the controllers work on log(value) (e.g. the modulating factor A in
    [1, 1e4]); this requires low > 0.
    """

    name: str
    low: float
    high: float
    init: float
    log: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"ParamSpec name must be a non-empty string, got {self.name!r}")
        label = f"ParamSpec {self.name!r}"
        low = _as_float(self.low, f"{label}: low")
        high = _as_float(self.high, f"{label}: high")
        init = _as_float(self.init, f"{label}: init")
        if not isinstance(self.log, (bool, np.bool_)):
            raise ValueError(f"{label}: log must be true or false, got {self.log!r}")
        if not low < high:
            raise ValueError(f"{label}: low must be < high, got low={low:g}, high={high:g}")
        if not low <= init <= high:
            raise ValueError(
                f"{label}: init must lie within [low, high] = [{low:g}, {high:g}], got {init:g}"
            )
        if self.log and low <= 0:
            raise ValueError(f"{label}: log=true needs low > 0, got low={low:g}")
        object.__setattr__(self, "low", low)
        object.__setattr__(self, "high", high)
        object.__setattr__(self, "init", init)
        object.__setattr__(self, "log", bool(self.log))

    # working space z = value or log(value); unit space u = (z - z_low) / (z_high - z_low)
    def _z(self, value: float) -> float:
        return math.log(value) if self.log else value

    def to_unit(self, value: float) -> float:
        """u = (z(value) - z(low)) / (z(high) - z(low)), z = log when ``log`` (in [0, 1])."""
        zl, zh = self._z(self.low), self._z(self.high)
        return (self._z(value) - zl) / (zh - zl)

    def from_unit(self, u: float) -> float:
        """Inverse of :meth:`to_unit` after clipping u to [0, 1]; the result is within bounds."""
        u = min(max(float(u), 0.0), 1.0)
        zl, zh = self._z(self.low), self._z(self.high)
        z = zl + u * (zh - zl)
        value = math.exp(z) if self.log else z
        return min(max(value, self.low), self.high)

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "low": self.low, "high": self.high, "init": self.init,
                "log": self.log}


def _check_space(space: Any, kind: str) -> list[ParamSpec]:
    if isinstance(space, (str, bytes, dict)) or not hasattr(space, "__iter__"):
        raise ValueError(f"space must be a list of ParamSpec, got {type(space).__name__}")
    out: list[ParamSpec] = []
    for item in space:
        if isinstance(item, dict):
            allowed = ("name", "low", "high", "init", "log")
            unknown = sorted(set(item) - set(allowed))
            if unknown:
                raise ValueError(f"space entry: unknown key(s) {unknown}; allowed: {list(allowed)}")
            missing = [k for k in allowed[:4] if k not in item]
            if missing:
                raise ValueError(f"space entry {item.get('name', '?')!r}: missing {missing}")
            item = ParamSpec(**item)
        if not isinstance(item, ParamSpec):
            raise ValueError(f"space entries must be ParamSpec, got {type(item).__name__}")
        out.append(item)
    names = [p.name for p in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"space: duplicate parameter name(s) {dup}")
    if not out and kind != "fixed":
        raise ValueError(f"space: controller {kind!r} needs at least one parameter "
                         "(an empty space is allowed only for 'fixed')")
    return out


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer, got {seed!r}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return int(seed)


def _check_choice(field: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{field} must be one of {list(allowed)}, got {value!r}")
    return str(value)


def _check_int(field: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{field} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_positive(field: str, value: Any, *, upper: float | None = None,
                    allow_zero: bool = False) -> float:
    v = _as_float(value, field)
    ok = v >= 0 if allow_zero else v > 0
    if upper is not None:
        ok = ok and v <= upper
    if not ok:
        lo = ">= 0" if allow_zero else "> 0"
        hi = f" and <= {upper:g}" if upper is not None else ""
        raise ValueError(f"{field} must be {lo}{hi}, got {value!r}")
    return v


# --------------------------------------------------------------------------------------------
# rewards
# --------------------------------------------------------------------------------------------


def _clean_rewards(rewards: Any, n: int) -> np.ndarray:
    """Rewards as floats; non-finite ones (diverged candidates) become the worst finite one."""
    try:
        r = np.array([float(x) for x in rewards], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"rewards must be a list of numbers, got {rewards!r}") from exc
    if r.shape[0] != n:
        raise ValueError(f"rewards: got {r.shape[0]} rewards for {n} params; need one per candidate")
    finite = np.isfinite(r)
    if not finite.all():
        r[~finite] = r[finite].min() if finite.any() else 0.0
    return r


def normalise_rewards(rewards: np.ndarray, how: str) -> np.ndarray:
    """zscore: (r - mean)/std (0 when std = 0); mean: r - mean; rank: centred ranks in
    [-0.5, 0.5] (ties share their mean rank); none: r unchanged."""
    r = np.asarray(rewards, dtype=np.float64)
    if how == "none":
        return r.copy()
    if how == "mean":
        return r - r.mean()
    if how == "zscore":
        std = r.std()
        return (r - r.mean()) / std if std > 1e-12 * max(1.0, abs(r.mean())) else np.zeros_like(r)
    if how == "rank":
        if r.size < 2:
            return np.zeros_like(r)
        order = np.argsort(r, kind="stable")
        ranks = np.empty_like(r)
        ranks[order] = np.arange(r.size, dtype=np.float64)
        for value in np.unique(r):  # ties share the mean rank
            tie = r == value
            ranks[tie] = ranks[tie].mean()
        return ranks / (r.size - 1) - 0.5
    raise ValueError(f"reward_normalisation must be one of {list(REWARD_NORMALISATIONS)}, "
                     f"got {how!r}")


def advantages(rewards: np.ndarray, how: str, baseline: float) -> np.ndarray:
    """REINFORCE advantages: zscore (r - b)/std(r) (0 when std = 0); mean and none r - b;
    rank: centred ranks in [-0.5, 0.5] (``normalise_rewards``; the baseline b is not used,
    the ranks have mean 0 already)."""
    r = np.asarray(rewards, dtype=np.float64)
    if how == "rank":
        return normalise_rewards(r, "rank")
    if how == "zscore":
        std = r.std()
        scale = max(1.0, abs(r.mean()))
        return (r - baseline) / std if std > 1e-12 * scale else np.zeros_like(r)
    if how in ("mean", "none"):
        return r - baseline
    raise ValueError(f"reward_normalisation must be one of {list(REWARD_NORMALISATIONS)}, "
                     f"got {how!r}")


def sigma_schedule(sigma0: np.ndarray, sigma_final: float, t: int, updates: int,
                   how: str = "log_linear") -> np.ndarray:
    """The policy std of learning update t of ``updates`` (t = 0 .. updates-1): sigma0 at
    t = 0, sigma_final at t = updates-1, log-linear or cosine in between (constant past
    the end; sigma0 when updates <= 1)."""
    sigma0 = np.asarray(sigma0, dtype=np.float64)
    if updates <= 1:
        return sigma0.copy()
    x = min(max(t, 0), updates - 1) / (updates - 1)
    if how == "log_linear":
        return sigma0 * (sigma_final / sigma0) ** x
    if how == "cosine":
        return sigma_final + (sigma0 - sigma_final) * 0.5 * (1.0 + math.cos(math.pi * x))
    raise ValueError(f"sigma_schedule must be one of {list(SIGMA_SCHEDULES)}, got {how!r}")


def _check_params(params: Any, space: list[ParamSpec]) -> list[dict[str, float]]:
    if isinstance(params, dict) or not hasattr(params, "__iter__"):
        raise ValueError("params must be a list of dicts {parameter name: value}")
    names = [p.name for p in space]
    out = []
    for i, p in enumerate(params):
        if not isinstance(p, dict) or sorted(p) != sorted(names):
            raise ValueError(f"params[{i}] must be a dict with exactly the keys {names}, got {p!r}")
        out.append({name: _as_float(p[name], f"params[{i}][{name!r}]") for name in names})
    return out


# --------------------------------------------------------------------------------------------
# controllers
# --------------------------------------------------------------------------------------------


@runtime_checkable
class Controller(Protocol):
    """The ask/tell interface every controller offers."""

    space: list[ParamSpec]

    def sample(self, n: int) -> list[dict[str, float]]: ...
    def update(self, params: list[dict[str, float]], rewards: list[float]) -> None: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...
    def describe(self) -> dict[str, float]: ...


class _Base:
    kind = ""

    def __init__(self, space: list[ParamSpec], seed: int) -> None:
        self.space = space
        self.seed = seed
        self.epoch = 0  # number of update() calls so far

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.space]

    def _init_params(self) -> dict[str, float]:
        return {p.name: p.init for p in self.space}

    @staticmethod
    def _check_n(n: Any) -> int:
        return _check_int("n (candidates)", n, 1)

    def _header(self) -> dict[str, Any]:
        return {"kind": self.kind, "version": _STATE_VERSION, "seed": self.seed,
                "space": [p.as_dict() for p in self.space], "epoch": self.epoch}

    def _check_header(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise ValueError(f"controller state must be a dict, got {type(state).__name__}")
        if state.get("kind") != self.kind:
            raise ValueError(f"controller state is for kind {state.get('kind')!r}, "
                             f"this controller is {self.kind!r}")
        if state.get("version") != _STATE_VERSION:
            raise ValueError(f"controller state version {state.get('version')!r} is not "
                             f"supported; allowed: [{_STATE_VERSION}]")
        if state.get("space") != [p.as_dict() for p in self.space]:
            raise ValueError("controller state: its search space differs from this controller's "
                             f"(state: {state.get('space')!r})")
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])


class FixedController(_Base):
    """The init values (hand-crafted baselines), or a per-epoch schedule replayed in order."""

    kind = "fixed"

    def __init__(self, space: list[ParamSpec], seed: int, schedule: Any = None) -> None:
        super().__init__(space, seed)
        self.schedule = self._check_schedule(schedule)

    def _check_schedule(self, schedule: Any) -> list[dict[str, float]] | None:
        if schedule is None:
            return None
        if isinstance(schedule, (dict, str)) or not hasattr(schedule, "__iter__"):
            raise ValueError("schedule must be a list of per-epoch dicts {parameter name: value}")
        entries = list(schedule)
        if not entries:
            raise ValueError("schedule must hold at least one epoch's dict")
        by_name = {p.name: p for p in self.space}
        out = []
        for e, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise ValueError(f"schedule[{e}] must be a dict {{parameter name: value}}, "
                                 f"got {entry!r}")
            unknown = sorted(set(entry) - set(by_name))
            if unknown:
                raise ValueError(f"schedule[{e}]: unknown parameter(s) {unknown}; "
                                 f"allowed: {list(by_name)}")
            row = self._init_params()
            for name, value in entry.items():
                v = _as_float(value, f"schedule[{e}][{name!r}]")
                spec = by_name[name]
                if not spec.contains(v):
                    raise ValueError(f"schedule[{e}][{name!r}] = {v:g} is outside "
                                     f"[low, high] = [{spec.low:g}, {spec.high:g}]")
                row[name] = v
            out.append(row)
        return out

    def current(self) -> dict[str, float]:
        """The parameter values of the current epoch."""
        if self.schedule is None:
            return self._init_params()
        return dict(self.schedule[min(self.epoch, len(self.schedule) - 1)])

    def sample(self, n: int) -> list[dict[str, float]]:
        n = self._check_n(n)
        return [self.current() for _ in range(n)]

    def update(self, params: list[dict[str, float]], rewards: list[float]) -> None:
        params = _check_params(params, self.space)
        _clean_rewards(rewards, len(params))
        self.epoch += 1

    def state_dict(self) -> dict:
        state = self._header()
        state["schedule"] = None if self.schedule is None else [dict(r) for r in self.schedule]
        return state

    def load_state_dict(self, state: dict) -> None:
        self._check_header(state)
        self.schedule = self._check_schedule(state.get("schedule"))

    def describe(self) -> dict[str, float]:
        row = {"epoch": float(self.epoch)}
        row.update({f"value_{k}": v for k, v in self.current().items()})
        return row


class _SeededBase(_Base):
    """Shared by random and reinforce: a numpy Generator, warm-up, best-so-far bookkeeping."""

    def __init__(self, space: list[ParamSpec], seed: int, warmup_epochs: Any = 0) -> None:
        super().__init__(space, seed)
        self.warmup_epochs = _check_int("warmup_epochs", warmup_epochs, 0)
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.best_reward = -math.inf
        self.best_params: dict[str, float] | None = None

    @property
    def warming_up(self) -> bool:
        return self.epoch < self.warmup_epochs

    def _note_best(self, params: list[dict[str, float]], rewards: np.ndarray) -> None:
        if len(rewards) and float(rewards.max()) > self.best_reward:
            i = int(np.argmax(rewards))
            self.best_reward = float(rewards[i])
            self.best_params = dict(params[i])

    def _seeded_state(self) -> dict[str, Any]:
        state = self._header()
        state["rng"] = self.rng.bit_generator.state
        state["warmup_epochs"] = self.warmup_epochs
        state["best_reward"] = self.best_reward
        state["best_params"] = None if self.best_params is None else dict(self.best_params)
        return state

    def _load_seeded(self, state: dict) -> None:
        self._check_header(state)
        self.rng = np.random.Generator(np.random.PCG64())
        self.rng.bit_generator.state = state["rng"]
        self.warmup_epochs = int(state["warmup_epochs"])
        self.best_reward = float(state["best_reward"])
        self.best_params = None if state["best_params"] is None else dict(state["best_params"])

    def _describe_best(self) -> dict[str, float]:
        row = {"best_reward": self.best_reward if self.best_params is not None else math.nan}
        for p in self.space:
            row[f"best_{p.name}"] = (self.best_params[p.name] if self.best_params is not None
                                     else math.nan)
        return row


class RandomController(_SeededBase):
    """Random-Softmax: each parameter of each candidate uniform in [low, high] (log-uniform
    when ``log``), independently, every epoch; learns nothing."""

    kind = "random"

    def sample(self, n: int) -> list[dict[str, float]]:
        n = self._check_n(n)
        if self.warming_up:
            return [self._init_params() for _ in range(n)]
        u = self.rng.random((n, len(self.space)))
        return [{p.name: p.from_unit(u[i, j]) for j, p in enumerate(self.space)}
                for i in range(n)]

    def update(self, params: list[dict[str, float]], rewards: list[float]) -> None:
        params = _check_params(params, self.space)
        r = _clean_rewards(rewards, len(params))
        if not self.warming_up:
            self._note_best(params, r)
        self.epoch += 1

    def state_dict(self) -> dict:
        return self._seeded_state()

    def load_state_dict(self, state: dict) -> None:
        self._load_seeded(state)

    def describe(self) -> dict[str, float]:
        row = {"epoch": float(self.epoch)}
        row.update(self._describe_best())
        return row


class ReinforceController(_SeededBase):
    """Search-Softmax / AM-LFS: Gaussian policy N(mu, sigma^2) in unit space, clipped draws,
    REINFORCE on normalised rewards: grad_mu = mean_i(r~_i (a_i - mu) / sigma^2), ascended by
    Adam or SGD; mu clipped to [0, 1] (the bounds) after each update; sigma annealed
    sigma <- max(sigma * sigma_decay, sigma_min) per update, or by the schedule of
    ``sigma_final`` (module docstring). Advantages: :func:`advantages` with the baseline b of
    ``baseline``.

    The gradient uses each candidate's unclipped draw a_i (the Gaussian's own sample, so the
    estimate is unbiased for the clipped action's reward) when ``params`` are the ones the
    last ``sample`` call returned; other params enter with their own (in-bounds) values.
    """

    kind = "reinforce"

    def __init__(self, space: list[ParamSpec], seed: int, *, sigma: Any = 0.1,
                 sigma_decay: Any = 1.0, sigma_min: Any = 0.01, sigma_final: Any = None,
                 sigma_schedule: Any = "log_linear", lr: Any = None,
                 optimizer: Any = "adam", reward_normalisation: Any = "zscore",
                 baseline: Any = "batch_mean", ema_decay: Any = 0.9,
                 warmup_epochs: Any = 0, horizon: Any = None) -> None:
        super().__init__(space, seed, warmup_epochs)
        self.optimizer = _check_choice("optimizer", optimizer, OPTIMIZERS)
        self.reward_normalisation = _check_choice("reward_normalisation", reward_normalisation,
                                                  REWARD_NORMALISATIONS)
        self.baseline = _check_choice("baseline", baseline, BASELINES)
        self.ema_decay = _as_float(ema_decay, "ema_decay")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be >= 0 and < 1, got {ema_decay!r}")
        self.ema: float | None = None  # the moving-average baseline (baseline = 'ema')
        self.sigma_schedule = _check_choice("sigma_schedule", sigma_schedule, SIGMA_SCHEDULES)
        if sigma_final is not None:
            sigma_final = _check_positive("sigma_final", sigma_final, upper=1.0)
            if sigma_decay != 1.0:
                raise ValueError("sigma_final and sigma_decay exclude each other (allowed: "
                                 "sigma_final with sigma_decay = 1, or sigma_decay alone)")
            if horizon is None:
                raise ValueError("sigma_final needs horizon, the number of controller updates "
                                 "of the run (the search passes it)")
        self.sigma_final = sigma_final
        self.horizon = None if horizon is None else _check_int("horizon", horizon, 1)
        if lr is None:
            lr = 0.05 if self.optimizer == "adam" else 0.005
        self.lr = _check_positive("lr", lr)
        self.sigma_decay = _check_positive("sigma_decay", sigma_decay, upper=1.0)
        self.sigma_min = _check_positive("sigma_min", sigma_min, allow_zero=True)
        d = len(space)
        if isinstance(sigma, dict):
            unknown = sorted(set(sigma) - set(self.names))
            if unknown:
                raise ValueError(f"sigma: unknown parameter(s) {unknown}; allowed: {self.names}")
            sig = [sigma.get(n, 0.1) for n in self.names]
        else:
            sig = [sigma] * d
        self.sigma = np.array([_check_positive(f"sigma ({n})", s, upper=1.0)
                               for n, s in zip(self.names, sig)], dtype=np.float64)
        self.sigma0 = self.sigma.copy()
        self.mu = np.array([p.to_unit(p.init) for p in space], dtype=np.float64)
        # Adam moments (unused by sgd)
        self.adam_m = np.zeros(d)
        self.adam_v = np.zeros(d)
        self.adam_t = 0
        self.last_grad = np.zeros(d)
        self._pending: list[tuple[dict[str, float], np.ndarray]] = []  # (params, raw draw)

    _BETA1, _BETA2, _EPS = 0.9, 0.999, 1e-8

    def mean(self) -> dict[str, float]:
        """The policy mean in parameter units (exp'd back for log parameters)."""
        return {p.name: p.from_unit(self.mu[j]) for j, p in enumerate(self.space)}

    def sample(self, n: int) -> list[dict[str, float]]:
        n = self._check_n(n)
        if self.warming_up:
            self._pending = []
            return [self._init_params() for _ in range(n)]
        raw = self.mu + self.sigma * self.rng.standard_normal((n, len(self.space)))
        out = []
        self._pending = []
        for i in range(n):
            params = {p.name: p.from_unit(raw[i, j]) for j, p in enumerate(self.space)}
            out.append(params)
            self._pending.append((dict(params), raw[i].copy()))
        return out

    def _actions(self, params: list[dict[str, float]]) -> np.ndarray:
        pending = list(self._pending)
        acts = np.empty((len(params), len(self.space)))
        for i, p in enumerate(params):
            for k, (q, raw) in enumerate(pending):
                if q == p:
                    acts[i] = raw
                    del pending[k]
                    break
            else:
                acts[i] = [spec.to_unit(p[spec.name]) for spec in self.space]
        return acts

    def update(self, params: list[dict[str, float]], rewards: list[float]) -> None:
        params = _check_params(params, self.space)
        r = _clean_rewards(rewards, len(params))
        if self.warming_up or not params:
            self._pending = []
            self.epoch += 1
            return
        self._note_best(params, r)
        adv = advantages(r, self.reward_normalisation, self._baseline(r))
        acts = self._actions(params)
        grad = (adv[:, None] * (acts - self.mu[None, :])).mean(axis=0) / self.sigma**2
        self.last_grad = grad
        if self.optimizer == "adam":
            self.adam_t += 1
            self.adam_m = self._BETA1 * self.adam_m + (1 - self._BETA1) * grad
            self.adam_v = self._BETA2 * self.adam_v + (1 - self._BETA2) * grad**2
            m_hat = self.adam_m / (1 - self._BETA1**self.adam_t)
            v_hat = self.adam_v / (1 - self._BETA2**self.adam_t)
            step = self.lr * m_hat / (np.sqrt(v_hat) + self._EPS)
        else:
            step = self.lr * grad
        self.mu = np.clip(self.mu + step, 0.0, 1.0)
        self._pending = []
        self.epoch += 1
        if self.sigma_final is not None:  # the std of the next learning update
            self.sigma = sigma_schedule(self.sigma0, self.sigma_final,
                                        self.epoch - self.warmup_epochs,
                                        self.horizon - self.warmup_epochs, self.sigma_schedule)
        else:
            self.sigma = np.maximum(self.sigma * self.sigma_decay,
                                    np.minimum(self.sigma_min, self.sigma))

    def _baseline(self, r: np.ndarray) -> float:
        """b for this update (batch_mean, ema or none); moves the ema on to the next one."""
        if self.baseline == "none":
            return 0.0
        if self.baseline == "batch_mean":
            return float(r.mean())
        b = float(r.mean()) if self.ema is None else self.ema
        self.ema = self.ema_decay * b + (1.0 - self.ema_decay) * float(r.mean())
        return b

    def state_dict(self) -> dict:
        state = self._seeded_state()
        state.update({
            "settings": {"sigma_decay": self.sigma_decay, "sigma_min": self.sigma_min,
                         "lr": self.lr, "optimizer": self.optimizer,
                         "reward_normalisation": self.reward_normalisation,
                         "sigma_final": self.sigma_final, "sigma_schedule": self.sigma_schedule,
                         "horizon": self.horizon, "baseline": self.baseline,
                         "ema_decay": self.ema_decay},
            "sigma0": self.sigma0.tolist(), "ema": self.ema,
            "mu": self.mu.tolist(), "sigma": self.sigma.tolist(),
            "adam_m": self.adam_m.tolist(), "adam_v": self.adam_v.tolist(),
            "adam_t": self.adam_t, "last_grad": self.last_grad.tolist(),
            "pending": [(dict(p), raw.tolist()) for p, raw in self._pending],
        })
        return state

    def load_state_dict(self, state: dict) -> None:
        self._load_seeded(state)
        s = state["settings"]
        self.sigma_decay, self.sigma_min, self.lr = s["sigma_decay"], s["sigma_min"], s["lr"]
        self.optimizer, self.reward_normalisation = s["optimizer"], s["reward_normalisation"]
        # absent from states written before these settings existed: their defaults
        self.sigma_final, self.horizon = s.get("sigma_final"), s.get("horizon")
        self.sigma_schedule = s.get("sigma_schedule", "log_linear")
        self.baseline, self.ema_decay = s.get("baseline", "batch_mean"), s.get("ema_decay", 0.9)
        self.ema = state.get("ema")
        self.mu = np.array(state["mu"], dtype=np.float64)
        self.sigma = np.array(state["sigma"], dtype=np.float64)
        self.sigma0 = np.array(state.get("sigma0", state["sigma"]), dtype=np.float64)
        self.adam_m = np.array(state["adam_m"], dtype=np.float64)
        self.adam_v = np.array(state["adam_v"], dtype=np.float64)
        self.adam_t = int(state["adam_t"])
        self.last_grad = np.array(state["last_grad"], dtype=np.float64)
        self._pending = [(dict(p), np.array(raw, dtype=np.float64)) for p, raw in state["pending"]]

    def describe(self) -> dict[str, float]:
        """epoch; mu_<p> (parameter units); sigma_<p> and grad_<p> (unit space: fractions of
        the (log-)range); best_reward, best_<p>."""
        row = {"epoch": float(self.epoch)}
        mean = self.mean()
        for j, p in enumerate(self.space):
            row[f"mu_{p.name}"] = mean[p.name]
            row[f"sigma_{p.name}"] = float(self.sigma[j])
            row[f"grad_{p.name}"] = float(self.last_grad[j])
        row.update(self._describe_best())
        return row


@contextlib.contextmanager
def _quiet_optuna():
    """Optuna's INFO lines (one per trial) and experimental warnings off while we call it."""
    import optuna

    old = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield optuna
    finally:
        optuna.logging.set_verbosity(old)


class OptunaController(_Base):
    """An Optuna sampler (TPE, CMA-ES, GP, random) asked for each epoch's candidates and told
    their rewards (maximised). The study is rebuilt from the told (params, reward) history on
    resume; the sampler is re-seeded from (seed, number of trials) on every ``sample`` call,
    so a resumed controller proposes exactly what an uninterrupted one would."""

    kind = "optuna"

    def __init__(self, space: list[ParamSpec], seed: int, *, sampler: Any = "tpe",
                 n_startup_trials: Any = None, reward_normalisation: Any = "none",
                 include_init: Any = True, warmup_epochs: Any = 0) -> None:
        super().__init__(space, seed)
        self.sampler_name = _check_choice("sampler", sampler, OPTUNA_SAMPLERS)
        if n_startup_trials is not None:
            n_startup_trials = _check_int("n_startup_trials", n_startup_trials, 0)
        self.n_startup_trials = n_startup_trials
        self.reward_normalisation = _check_choice("reward_normalisation", reward_normalisation,
                                                  REWARD_NORMALISATIONS)
        if not isinstance(include_init, (bool, np.bool_)):
            raise ValueError(f"include_init must be true or false, got {include_init!r}")
        self.include_init = bool(include_init)
        self.warmup_epochs = _check_int("warmup_epochs", warmup_epochs, 0)
        if self.sampler_name == "cmaes":
            try:
                import cmaes  # noqa: F401
            except ImportError as exc:
                raise ValueError("sampler='cmaes' needs the 'cmaes' package (pip install cmaes); "
                                 f"allowed without it: {[s for s in OPTUNA_SAMPLERS if s != 'cmaes']}"
                                 ) from exc
        # told history, in trial-number order (the order a rebuilt study must reproduce):
        # {"params": {...}, "value": float | None, "state": "COMPLETE" | "FAIL", "system_attrs"}
        self.history: list[dict[str, Any]] = []
        self._pending: list[tuple[dict[str, float], Any]] = []  # (params, optuna Trial | None)
        self._init_done = False
        self.study = self._new_study()

    @property
    def warming_up(self) -> bool:
        return self.epoch < self.warmup_epochs

    def _distributions(self) -> dict[str, Any]:
        import optuna

        return {p.name: optuna.distributions.FloatDistribution(p.low, p.high, log=p.log)
                for p in self.space}

    def _sampler(self, salt: int):
        import optuna

        seed = int(np.random.SeedSequence([self.seed, salt]).generate_state(1)[0])
        kw = {} if self.n_startup_trials is None else {"n_startup_trials": self.n_startup_trials}
        if self.sampler_name == "tpe":
            return optuna.samplers.TPESampler(seed=seed, **kw)
        if self.sampler_name == "gp":
            return optuna.samplers.GPSampler(seed=seed, **kw)
        if self.sampler_name == "cmaes":  # starts at the centre of the space (x0 is deprecated)
            return optuna.samplers.CmaEsSampler(seed=seed, **kw)
        return optuna.samplers.RandomSampler(seed=seed)

    def _new_study(self):
        with _quiet_optuna() as optuna:
            study = optuna.create_study(direction="maximize", sampler=self._sampler(0))
            dists = self._distributions()
            frozen = []
            for h in self.history:
                complete = h["state"] == "COMPLETE"
                frozen.append(optuna.trial.create_trial(
                    state=optuna.trial.TrialState.COMPLETE if complete
                    else optuna.trial.TrialState.FAIL,
                    value=h["value"] if complete else None,
                    params=dict(h["params"]), distributions=dists,
                    system_attrs=dict(h.get("system_attrs") or {})))
            if frozen:
                study.add_trials(frozen)
        return study

    def _fail_pending(self) -> None:
        with _quiet_optuna() as optuna:
            for _, trial in self._pending:
                if trial is not None:
                    self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        self._pending = []

    def _sync_history(self) -> None:
        """history <- the study's finished trials, in trial-number order."""
        import optuna

        done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL)
        self.history = [
            {"params": {n: float(t.params[n]) for n in self.names},
             "value": float(t.value) if t.state == optuna.trial.TrialState.COMPLETE else None,
             "state": t.state.name, "system_attrs": dict(t.system_attrs)}
            for t in sorted(self.study.get_trials(deepcopy=False), key=lambda t: t.number)
            if t.state in done]

    def sample(self, n: int) -> list[dict[str, float]]:
        n = self._check_n(n)
        if self.warming_up:
            return [self._init_params() for _ in range(n)]
        out = []
        with _quiet_optuna():
            self.study.sampler = self._sampler(len(self.study.trials) + 1)
            dists = self._distributions()
            for _ in range(n):
                if self.include_init and not self._init_done and not self._pending:
                    params, trial = self._init_params(), None  # told later through add_trial
                else:
                    trial = self.study.ask(dists)
                    params = {name: float(trial.params[name]) for name in self.names}
                self._pending.append((dict(params), trial))
                out.append(params)
        return out

    def update(self, params: list[dict[str, float]], rewards: list[float]) -> None:
        params = _check_params(params, self.space)
        r = _clean_rewards(rewards, len(params))
        if self.warming_up:
            self.epoch += 1
            return
        told = normalise_rewards(r, self.reward_normalisation)
        pending = list(self._pending)
        self._pending = []
        with _quiet_optuna() as optuna:
            dists = self._distributions()
            for p, value in zip(params, told):
                trial = None
                for k, (q, t) in enumerate(pending):
                    if q == p:
                        trial = t
                        del pending[k]
                        break
                if trial is not None:
                    self.study.tell(trial, float(value))
                else:  # the init point, or params this controller did not propose
                    self.study.add_trial(optuna.trial.create_trial(
                        params=dict(p), distributions=dists, value=float(value)))
            self._pending = pending
        self._fail_pending()  # asked but never rewarded
        self._sync_history()
        if params:
            self._init_done = True
        self.epoch += 1

    def best(self) -> tuple[dict[str, float] | None, float]:
        """(params, told value) of the best complete trial so far, (None, nan) if none."""
        done = [h for h in self.history if h["state"] == "COMPLETE"]
        if not done:
            return None, math.nan
        h = max(done, key=lambda h: h["value"])
        return dict(h["params"]), float(h["value"])

    def state_dict(self) -> dict:
        state = self._header()
        state.update({
            "settings": {"sampler": self.sampler_name, "n_startup_trials": self.n_startup_trials,
                         "reward_normalisation": self.reward_normalisation,
                         "include_init": self.include_init, "warmup_epochs": self.warmup_epochs},
            "history": [{"params": dict(h["params"]), "value": h["value"], "state": h["state"],
                         "system_attrs": dict(h["system_attrs"])} for h in self.history],
            "init_done": self._init_done,
        })
        return state

    def load_state_dict(self, state: dict) -> None:
        self._check_header(state)
        s = state["settings"]
        self.sampler_name = s["sampler"]
        self.n_startup_trials = s["n_startup_trials"]
        self.reward_normalisation = s["reward_normalisation"]
        self.include_init = s["include_init"]
        self.warmup_epochs = s["warmup_epochs"]
        self.history = [dict(h) for h in state["history"]]
        self._init_done = bool(state["init_done"])
        self._pending = []
        self.study = self._new_study()

    def describe(self) -> dict[str, float]:
        params, value = self.best()
        row = {"epoch": float(self.epoch),
               "trials": float(sum(h["state"] == "COMPLETE" for h in self.history)),
               "best_reward": value}
        for p in self.space:
            row[f"best_{p.name}"] = params[p.name] if params is not None else math.nan
        return row


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------

_CLASSES = {"fixed": FixedController, "random": RandomController,
            "reinforce": ReinforceController, "optuna": OptunaController}
_SETTINGS = {
    "fixed": ("schedule",),
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
    if kind == "reinforce":
        settings["horizon"] = horizon
    return _CLASSES[kind](space, seed, **settings)
