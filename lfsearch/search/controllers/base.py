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

import logging
import math
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

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
