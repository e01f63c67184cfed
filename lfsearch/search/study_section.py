"""The [study] table of a search-space file: what `lfsearch study` varies, checked.

Each ``[study.params.<name>]`` table becomes a StudyParam: a dotted ``target`` path into the
configuration (loss.params.<p>[.init|.low|.high], loss.<argument>, controller.<setting>,
controller.curve.<p>.<start|end|shape|at>, training.<key>), its bounds [low, high], ``log``,
``type`` and ``step``; or ``type = "categorical"`` with ``choices`` (a curve's shape). The running of a
study (Optuna, storage, workers) is lfsearch/experiments/study.py; this module only reads the table.

Dependencies run one way: config.py calls `check_section` while it validates a file and
passes its own `validate` in, so this module imports neither config.py nor study.py.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Callable

STUDY_KEYS = ("params", "pruner", "pruner_startup_trials", "pruner_warmup_epochs",
              "sampler_startup_trials")
PARAM_KEYS = ("target", "low", "high", "log", "type", "step", "choices")
#: median: Optuna's MedianPruner; successive_halving and hyperband: its multi-fidelity pruners
#: over the epochs (the resource), reduction factor 3, min_resource = max(1, warm-up epochs)
PRUNERS = ("median", "successive_halving", "hyperband", "none")
TYPES = ("float", "int", "categorical")
STUDY_DEFAULTS: dict[str, Any] = {"pruner": "median", "pruner_startup_trials": 3,
                                  "pruner_warmup_epochs": 0, "sampler_startup_trials": 5}
SEARCHING_DEFAULT_CANDIDATES = (2, 8)


@dataclass(frozen=True)
class StudyParam:
    """One studied value: name (the Optuna parameter), target (a dotted config path), bounds."""

    name: str
    target: str
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    type: str = "float"
    step: float | None = None
    choices: tuple | None = None  # type "categorical" only

    def suggest(self, trial: Any) -> Any:
        """trial.suggest_int / suggest_float over [low, high] (log or stepped), or
        suggest_categorical over the choices."""
        if self.type == "categorical":
            return trial.suggest_categorical(self.name, list(self.choices))
        if self.type == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high),
                                     step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, float(self.low), float(self.high),
                                   step=self.step, log=self.log)

    def as_table(self) -> dict[str, Any]:
        """The [study.params.<name>] table that defines this parameter."""
        if self.type == "categorical":
            return {"target": self.target, "type": self.type, "choices": list(self.choices)}
        table = {"target": self.target, "low": self.low, "high": self.high, "log": self.log,
                 "type": self.type}
        if self.step is not None:
            table["step"] = self.step
        return table


def _target_slot(config: dict[str, Any], target: str) -> tuple[dict[str, Any], str]:
    """The dict and key a target path names; ValueError for paths a study may not set."""
    parts = target.split(".")
    allowed = ("loss.params.<p>[.init|.low|.high], loss.<argument>, controller.<setting>, "
               "controller.curve.<p>.<start|end|shape|at>, training.<key>")
    if len(parts) >= 3 and parts[:2] == ["loss", "params"]:
        params = config["loss"].get("params", {})
        if parts[2] not in params or len(parts) > 4 or (len(parts) == 4 and
                                                       parts[3] not in ("init", "low", "high")):
            raise ValueError(f"target {target!r}: [loss.params] has "
                             f"{', '.join(params) or 'no parameters'}; allowed forms: {allowed}")
        return params[parts[2]], parts[3] if len(parts) == 4 else "init"
    if len(parts) == 2 and parts[0] == "loss" and parts[1] not in ("name", "params"):
        return config["loss"], parts[1]
    if len(parts) == 4 and parts[:2] == ["controller", "curve"]:
        curve = config["controller"].get("curve")
        if not isinstance(curve, dict) or not isinstance(curve.get(parts[2]), dict) or \
                parts[3] not in ("start", "end", "shape", "at"):
            raise ValueError(f"target {target!r}: [controller.curve] has "
                             f"{', '.join(curve) if isinstance(curve, dict) else 'no curves'}; "
                             f"allowed forms: {allowed}")
        return curve[parts[2]], parts[3]
    if len(parts) == 2 and parts[0] == "controller" and parts[1] != "kind":
        return config["controller"], parts[1]
    if len(parts) == 2 and parts[0] == "training" and parts[1] in config["training"] \
            and parts[1] not in ("benchmark", "model", "optimizer", "lr_schedule", "lr_steps"):
        return config["training"], parts[1]
    raise ValueError(f"target {target!r} cannot be studied; allowed forms: {allowed}")


def default_target(config: dict[str, Any], name: str) -> str:
    """A [loss.params] entry, else a [loss] argument, else a [controller] setting of that name."""
    if name in config["loss"].get("params", {}):
        return f"loss.params.{name}"
    if name in config["loss"] and name not in ("name", "params"):
        return f"loss.{name}"
    if name in config["controller"] and name != "kind":
        return f"controller.{name}"
    raise ValueError(f"{name!r} is not a [loss.params] entry, [loss] argument or [controller] "
                     "setting of this file; give target = \"loss.<argument>\", "
                     "\"loss.params.<p>\", \"controller.<setting>\" or \"training.<key>\"")


def set_values(config: dict[str, Any], params: list[StudyParam],
               values: dict[str, Any]) -> dict[str, Any]:
    """The trial's raw configuration: a copy of `config` without [study], every target set.

    Not validated here: the caller passes the result to config.validate.
    """
    trial = {k: copy.deepcopy(v) for k, v in config.items() if k != "study"}
    for p in params:
        slot, key = _target_slot(trial, p.target)
        value = values[p.name]
        slot[key] = (value if p.type == "categorical"
                     else int(value) if p.type == "int" else float(value))
    return trial


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_param(name: str, table: Any, config: dict[str, Any]) -> StudyParam:
    if not isinstance(table, dict):
        raise ValueError("must be a table with low, high (and optional target, log, type, step)")
    unknown = sorted(set(table) - set(PARAM_KEYS))
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r}; allowed keys: {', '.join(PARAM_KEYS)}")
    target = table.get("target", None)
    if target is None:
        target = default_target(config, name)
    if not isinstance(target, str):
        raise ValueError(f"target must be a dotted path such as \"loss.s\", got {target!r}")
    slot, key = _target_slot(config, target)
    current = slot.get(key)
    kind = table.get("type", "int" if isinstance(current, int) and not isinstance(current, bool)
                     else "float")
    if kind not in TYPES:
        raise ValueError(f"type must be one of {', '.join(TYPES)}, got {kind!r}")
    if kind == "categorical":
        choices = table.get("choices")
        extra = sorted(set(table) & {"low", "high", "log", "step"})
        if extra:
            raise ValueError(f"type \"categorical\" takes choices, not {extra[0]}")
        if not isinstance(choices, list) or not choices or not all(
                isinstance(c, (str, int, float)) and not isinstance(c, bool) for c in choices):
            raise ValueError(f"choices must be a non-empty list of strings or numbers, "
                             f"got {choices!r}")
        return StudyParam(name, target, type=kind, choices=tuple(choices))
    if "choices" in table:
        raise ValueError(f"choices needs type = \"categorical\", got type {kind!r}")
    low, high = table.get("low"), table.get("high")
    for k, v in (("low", low), ("high", high)):
        if not _number(v) or (kind == "int" and float(v) != int(v)):
            raise ValueError(f"{k} must be {'an integer' if kind == 'int' else 'a number'}, "
                             f"got {v!r}")
    if not low < high:
        raise ValueError(f"low must be < high, got low={low}, high={high}")
    use_log = table.get("log", False)
    if not isinstance(use_log, bool):
        raise ValueError(f"log must be true or false, got {use_log!r}")
    if use_log and low <= 0:
        raise ValueError(f"log = true needs low > 0, got low={low}")
    step = table.get("step", None)
    if step is not None:
        if not _number(step) or step <= 0 or (kind == "int" and float(step) != int(step)):
            raise ValueError(f"step must be a number > 0 (an integer for type int), got {step!r}")
        if use_log:
            raise ValueError("step and log = true exclude each other (Optuna samples either "
                             "on a grid or on a log scale)")
    if kind == "int":
        low, high = int(low), int(high)
        step = None if step is None else int(step)
    else:
        low, high = float(low), float(high)
        step = None if step is None else float(step)
    return StudyParam(name, target, low, high, use_log, kind, step)


def check_section(raw: Any, config: dict[str, Any], source: str,
                  validate: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    """Validate a [study] table against a resolved configuration; returns it with defaults filled.

    Each parameter's low and high are set in the configuration and checked with `validate`
    (config.validate), so a range the loss or controller rejects is reported now, naming the
    file and the parameter.
    """
    if not isinstance(raw, dict):
        raise ValueError(f"{source}: [study] must be a table")
    unknown = sorted(set(raw) - set(STUDY_KEYS))
    if unknown:
        raise ValueError(f"{source}: unknown key study.{unknown[0]}; allowed keys in [study]: "
                         f"{', '.join(STUDY_KEYS)}")
    out: dict[str, Any] = {**STUDY_DEFAULTS, **{k: v for k, v in raw.items() if k != "params"}}
    if out["pruner"] not in PRUNERS:
        raise ValueError(f"{source}: study.pruner must be one of {', '.join(PRUNERS)}, "
                         f"got {out['pruner']!r}")
    for key in ("pruner_startup_trials", "pruner_warmup_epochs", "sampler_startup_trials"):
        v = out[key]
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ValueError(f"{source}: study.{key} must be an integer >= 0, got {v!r}")
    tables = raw.get("params", {})
    if not isinstance(tables, dict):
        raise ValueError(f"{source}: study.params must be a table of parameter tables")
    base = {k: v for k, v in config.items() if k != "study"}
    params = []
    for name, table in tables.items():
        try:
            p = _check_param(name, table, base)
            for edge in (p.choices if p.type == "categorical" else (p.low, p.high)):
                validate(set_values(base, [p], {p.name: edge}), source=source)
        except ValueError as exc:
            raise ValueError(f"{source}: study.params.{name}: {exc}") from None
        params.append(p)
    if params:
        out["params"] = {p.name: p.as_table() for p in params}
    return out


def default_params(config: dict[str, Any]) -> list[StudyParam]:
    """What a study varies without [study.params]: see the module docstring."""
    controller = config["controller"]
    params: list[StudyParam] = []
    if controller["kind"] == "fixed":
        if controller.get("schedule") is None:  # a replayed schedule overrides the init values
            for name, spec in config["loss"].get("params", {}).items():
                if name in (controller.get("curve") or {}):  # so does a curve
                    continue
                params.append(StudyParam(name, f"loss.params.{name}", float(spec["low"]),
                                         float(spec["high"]), bool(spec.get("log", False))))
        s = config["loss"].get("s")
        if _number(s) and s > 0:
            params.append(StudyParam("s", "loss.s", s / 2.0, s * 2.0, log=True))
        return params
    params.append(StudyParam("candidates", "controller.candidates",
                             *SEARCHING_DEFAULT_CANDIDATES, type="int"))
    for name, upper in (("sigma", 1.0), ("lr", math.inf)):
        v = controller.get(name)
        if _number(v) and v > 0:
            params.append(StudyParam(name, f"controller.{name}", v / 3.0, min(3.0 * v, upper),
                                     log=True))
    return params


def study_params(config: dict[str, Any]) -> list[StudyParam]:
    """The [study.params] of a resolved configuration, or the defaults; ValueError if none."""
    tables = config.get("study", {}).get("params")
    if tables:
        params = [StudyParam(name, **{**t, **({"choices": tuple(t["choices"])}
                                              if "choices" in t else {})})
                  for name, t in tables.items()]
    else:
        params = default_params(config)
    if not params:
        raise ValueError(f"{config.get('_source', 'the search space')}: nothing to study (no "
                         "[loss.params], no s, fixed controller); add [study.params.<name>] "
                         "tables with low and high")
    return params


def current_values(config: dict[str, Any], params: list[StudyParam]) -> dict[str, Any]:
    """The values the configuration itself holds at each parameter's target (the file's own
    point), when every one is a number inside the parameter's [low, high]; else {}."""
    values = {}
    for p in params:
        slot, key = _target_slot(config, p.target)
        v = slot.get(key)
        if p.type == "categorical":
            if v not in p.choices:
                return {}
            values[p.name] = v
            continue
        if not _number(v) or not p.low <= v <= p.high:
            return {}
        values[p.name] = int(v) if p.type == "int" else float(v)
    return values


def study_settings(config: dict[str, Any]) -> dict[str, Any]:
    """Pruner and sampler settings: the [study] table's, or the defaults."""
    return {**STUDY_DEFAULTS, **{k: v for k, v in config.get("study", {}).items()
                                 if k != "params"}}
