"""Search-Softmax / AM-LFS's controller: a Gaussian policy N(μ, σ²) per parameter, updated by
REINFORCE on normalised rewards, grad_μ = mean_i(r̃_i (a_i − μ) / σ²) (controllers/base.py has
the advantages, the baselines and the σ schedules).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from lfsearch.search.controllers.base import (
    BASELINES,
    OPTIMIZERS,
    REWARD_NORMALISATIONS,
    SIGMA_SCHEDULES,
    ParamSpec,
    _as_float,
    _check_choice,
    _check_int,
    _check_params,
    _check_positive,
    _clean_rewards,
    advantages,
    sigma_schedule,
)
from lfsearch.search.controllers.random_sampling import _SeededBase


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
