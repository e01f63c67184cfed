"""An Optuna sampler (TPE, CMA-ES, random, QMC) as a controller: each candidate is a trial of
an in-memory study, told its reward at the end of the epoch; the told history is kept so that
a resumed run rebuilds the same study.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from typing import Any

import numpy as np

from lfsearch.search.controllers.base import (
    OPTUNA_SAMPLERS,
    REWARD_NORMALISATIONS,
    ParamSpec,
    _Base,
    _check_choice,
    _check_int,
    _check_params,
    _clean_rewards,
    normalise_rewards,
)


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
