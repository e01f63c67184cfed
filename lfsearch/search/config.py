"""Search-space files: read, validate and resolve the TOML that describes one method.

A search-space file names a loss and the parameters a controller moves, the controller,
the reward and the training defaults::

    [method]      name, description
    [loss]        name = "<losses.available() member>", plus fixed arguments of that loss
    [loss.params.<p>]  init, low, high, log = false, count = 1   (count = K expands to p_0..p_{K-1})
    [controller]  kind = fixed|random|reinforce|optuna, candidates = M, interval = k (1),
                  broadcast = best|top_k_average|ema, broadcast_k (2), broadcast_decay (0.9),
                  reject_after = f (0: off), reject_margin = c (3.0) (SEARCH_OPTIONS),
                  plus the kind's settings (lfsearch.search.controllers)
    [reward]      metric = "auto" | one of REWARD_METRICS, pairs = N (0: the split's own),
                  validation = [{benchmark = "main", weight = 1.0}]
    [training]    benchmark, model, embedding_size, epochs, batch_size, optimizer, lr, ...
    [run]         seed, device
    [study]       optional: what `lfsearch study` varies ([study.params.<name>] low, high, ...)
    [test]        optional: benchmarks = [specs] tested at the end, never searched on
                  (lfsearch/evaluation/heldout.py)

`resolve` applies command-line overrides and returns a plain dict; `dump` writes that dict
as a TOML file that `load` reads back unchanged, so a run's config.toml re-runs as is.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

import tomli_w

from lfsearch import losses, models
from lfsearch.losses import sharded_fc
from lfsearch.search import controllers, study_section
from lfsearch.search.broadcast import BROADCASTS
from lfsearch.search.controllers import ParamSpec

log = logging.getLogger(__name__)


def _spaces_dir() -> Path:
    """The bundled search spaces: lfsearch/search_spaces (in a wheel, a folder of copies; in a
    git clone, a symlink to the top-level search_spaces/, the one source of truth), else the
    clone's search_spaces/ itself (a checkout without symlinks)."""
    package = Path(__file__).resolve().parent.parent
    for folder in (package / "search_spaces", package.parent / "search_spaces"):
        if folder.is_dir():
            return folder
    return package / "search_spaces"


SPACES_DIR = _spaces_dir()

SECTIONS = ("method", "loss", "controller", "reward", "training", "run", "study", "test")
TEST_KEYS = {"benchmarks"}
PARAM_KEYS = {"init", "low", "high", "log", "count"}
METHOD_KEYS = {"name", "description"}
REWARD_KEYS = {"metric", "validation", "pairs"}
#: What [reward] metric may name: higher is better for each (docs/search.md). cosine_gap and
#: roc_auc are smooth in the embeddings; verification_accuracy is thresholded.
REWARD_METRICS = ("auto", "verification_accuracy", "roc_auc", "cosine_gap", "rank1",
                  "tar@far=1e-2", "tar@far=1e-3", "tar@far=1e-4", "tar@far=1e-3_all",
                  "tar@far=1e-4_all", "accuracy")
VALIDATION_KEYS = {"benchmark", "weight"}
RUN_KEYS = {"seed", "device", "threads"}
OPTIMIZERS = ("sgd", "adam", "adamw")
LR_SCHEDULES = ("constant", "cosine", "poly", "step")
AMP_MODES = ("auto", "off", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
TRAINING_DEFAULTS: dict[str, Any] = {
    "benchmark": "digits",
    "model": "auto",
    "embedding_size": 64,
    "epochs": 10,
    "batch_size": 128,
    "optimizer": "sgd",
    "lr": 0.1,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "lr_schedule": "cosine",
    "lr_steps": [],
    "lr_gamma": 0.1,
    "lr_power": 1.0,     # poly: lr·(1 − e/T)^power
    "warmup_epochs": 0,  # linear warm-up epochs before any schedule
    "augment": "auto",   # auto (the benchmark's) | none | flip | crop=P | crop=P,flip
    "amp": "auto",       # auto (bf16 on CUDA) | off | bf16 | fp16 (GradScaler); CPU: always off
    "packing": "auto",   # auto | sequential | packed (auto: measured on CUDA, sequential on CPU)
    "compile": False,    # torch.compile the backbone (worth it on a GPU for long runs)
    # under torchrun: "candidates" (rank r trains candidates i ≡ r mod K) or "data" (every
    # rank trains every candidate on its slice of each batch; search/data_parallel.py)
    "parallel": "candidates",
}
PARALLEL_MODES = ("candidates", "data")
RUN_DEFAULTS: dict[str, Any] = {"seed": 0, "device": "auto", "threads": 0}  # 0: PyTorch's default
MAX_SEED = 2**32 - 1  # numpy's and many generators' limit


def find_space(name_or_path: str | os.PathLike) -> Path:
    """A path to a search-space file, or a bare name of a bundled space (SPACES_DIR)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    if path.suffix == "" and (SPACES_DIR / f"{path.name}.toml").is_file():
        return SPACES_DIR / f"{path.name}.toml"
    known = bundled_spaces()
    raise FileNotFoundError(
        f"search space {str(name_or_path)!r} not found: give a TOML file's path or one of "
        f"{', '.join(known) or f'(no bundled spaces found in {SPACES_DIR})'}"
    )


def bundled_spaces() -> list[str]:
    """Names of the bundled search spaces (every *.toml in SPACES_DIR), sorted."""
    return sorted(p.stem for p in SPACES_DIR.glob("*.toml")) if SPACES_DIR.is_dir() else []


def load(name_or_path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a search-space file; returns the resolved configuration dict."""
    path = find_space(name_or_path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not a TOML text file (byte {exc.object[exc.start]:#04x} at "
                         f"offset {exc.start} is not UTF-8)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: is a folder, not a TOML file") from None
    return validate(raw, source=str(path))


#: the section of each override `resolve` accepts (test_benchmarks: [test] benchmarks)
OVERRIDE_SECTIONS = {"benchmark": "training", "model": "training", "epochs": "training",
                     "batch_size": "training", "embedding_size": "training", "lr": "training",
                     "candidates": "controller", "seed": "run", "device": "run",
                     "threads": "run", "test_benchmarks": "test"}


def resolve(config: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """Apply command-line overrides (None means 'not given') and validate the result.

    Keys: benchmark, model, epochs, batch_size (training); candidates (controller);
    seed, device (run).
    """
    config = copy.deepcopy(config)
    source = config.get("_source", "<overrides>")
    sections = OVERRIDE_SECTIONS
    file_epochs = config.get("training", {}).get("epochs")
    for key, value in overrides.items():
        if value is None:
            continue
        if key not in sections:
            raise ValueError(f"unknown override {key!r}; allowed: {', '.join(sections)}")
        if key == "test_benchmarks":  # --test-benchmark: [test] benchmarks
            config.setdefault("test", {})["benchmarks"] = list(value)
            continue
        config[sections[key]][key] = value
    _fit_warmup(config, overrides.get("epochs"), file_epochs)
    return validate(config, source=source)


def _fit_warmup(config: dict[str, Any], epochs: int | None, file_epochs: Any) -> None:
    """--epochs E' shorter than the file's warm-up W (set for E epochs): W' = min(⌊W·E'/E⌋,
    E' − 1), the warm-up scaled to the run's length (face_recipe --epochs 1 trains without)."""
    training = config.get("training", {})
    w = training.get("warmup_epochs", 0)
    if (epochs is None or not isinstance(w, int) or isinstance(epochs, bool)
            or not isinstance(epochs, int) or epochs < 1 or w < epochs):
        return
    total = file_epochs if isinstance(file_epochs, int) and file_epochs > 0 else w + 1
    scaled = min(w * epochs // total, epochs - 1)
    log.warning("training.warmup_epochs %d does not fit --epochs %d; scaled to %d "
                "(warm-up W·E'/E, below E')", w, epochs, scaled)
    training["warmup_epochs"] = scaled


def dump(config: dict[str, Any], path: str | os.PathLike) -> None:
    """Write `config` as TOML atomically (temp file + rename)."""
    clean = {k: v for k, v in config.items() if not k.startswith("_")}
    atomic_write_text(path, tomli_w.dumps(clean))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write text to `path` through a temporary file and a rename, so no half file is left.

    An OSError names `path` (the file asked for), not the temporary file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:  # e.g. a parent that is a file: no temporary file was made
            pass
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def param_specs(config: dict[str, Any]) -> list[ParamSpec]:
    """The controller's parameters: [loss.params] with count = K expanded to name_0..name_{K-1}."""
    specs = []
    for name, spec in config["loss"].get("params", {}).items():
        count = int(spec.get("count", 1))
        names = [name] if count == 1 and "count" not in spec else [f"{name}_{i}" for i in range(count)]
        for n in names:
            specs.append(ParamSpec(n, float(spec["low"]), float(spec["high"]), float(spec["init"]),
                                   log=bool(spec.get("log", False))))
    return specs


def loss_arguments(config: dict[str, Any]) -> dict[str, Any]:
    """The loss's fixed arguments: [loss] without its name and params tables."""
    return {k: v for k, v in config["loss"].items() if k not in ("name", "params")}


#: [controller] keys read by the search loop, not the controller (docs/search.md), and their
#: defaults (a key left out of the file stays out of config.toml)
SEARCH_OPTIONS: dict[str, Any] = {"broadcast": "best", "broadcast_k": 2, "broadcast_decay": 0.9,
                                  "reject_after": 0.0, "reject_margin": 3.0}


def search_option(config: dict[str, Any], key: str) -> Any:
    """A [controller] search option (SEARCH_OPTIONS), or its default."""
    return config["controller"].get(key, SEARCH_OPTIONS[key])


def controller_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The controller's own settings: [controller] without kind, candidates, interval and the
    search options (SEARCH_OPTIONS)."""
    return {k: v for k, v in config["controller"].items()
            if k not in ("kind", "candidates", "interval") and k not in SEARCH_OPTIONS}


def _check_search_options(config: dict[str, Any], source: str) -> None:
    """broadcast, broadcast_k, broadcast_decay, reject_after, reject_margin of [controller]."""
    c = config["controller"]
    broadcast = c.get("broadcast", "best")
    _require(broadcast in BROADCASTS, source, "controller.broadcast",
             f"one of {', '.join(BROADCASTS)} (got {broadcast!r})")
    k = c.get("broadcast_k", 2)
    _require(isinstance(k, int) and not isinstance(k, bool) and 2 <= k <= max(c["candidates"], 2),
             source, "controller.broadcast_k",
             f"an integer in [2, candidates] = [2, {c['candidates']}] (got {k!r})")
    _require(broadcast != "top_k_average" or c["candidates"] >= 2, source,
             "controller.candidates", "an integer >= 2 with broadcast = \"top_k_average\" "
             f"(got {c['candidates']})")
    d = c.get("broadcast_decay", 0.9)
    _require(_is_number(d) and 0 <= d < 1, source, "controller.broadcast_decay",
             f"a number in [0, 1) (got {d!r})")
    f = c.get("reject_after", 0.0)
    _require(_is_number(f) and 0 <= f < 1, source, "controller.reject_after",
             f"a fraction of an epoch in [0, 1), 0 for no early rejection (got {f!r})")
    margin = c.get("reject_margin", 3.0)
    _require(_is_number(margin) and margin >= 0, source, "controller.reject_margin",
             f"a number >= 0, MADs above the median training loss (got {margin!r})")
    if f > 0:
        _require(c["candidates"] >= 3, source, "controller.candidates",
                 "an integer >= 3 with reject_after > 0 (a median and MAD of two losses never "
                 f"single one out; got {c['candidates']})")
        _require(config["training"]["packing"] != "packed", source, "training.packing",
                 "auto or sequential with controller.reject_after > 0 (the packed pass computes "
                 "every candidate's backbone, so a rejected one would save nothing)")


def controller_updates(config: dict[str, Any]) -> int:
    """How many times the controller learns in a run: once per interval, ceil(epochs / k)."""
    return -(-config["training"]["epochs"] // config["controller"].get("interval", 1))


def _is_number(value: Any) -> bool:
    """A finite int or float (not a bool, not a string)."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _require(cond: bool, source: str, key: str, allowed: str) -> None:
    if not cond:
        raise ValueError(f"{source}: {key} must be {allowed}")


def _check_keys(table: dict, allowed: set, source: str, where: str) -> None:
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise ValueError(f"{source}: unknown key {where}.{unknown[0]}; allowed keys in [{where}]: "
                         f"{', '.join(sorted(allowed))}")


def normalise_spec(spec: str) -> tuple[str, str | None, tuple[tuple[str, str], ...]]:
    """KIND[:PATH][?K=V&...] -> (kind in lower case, absolute path or None, sorted options)."""
    text = spec.strip()
    head, _, query = text.partition("?")
    kind, sep, path = head.partition(":")
    options = tuple(sorted(tuple(part.split("=", 1)) if "=" in part else (part, "")
                           for part in query.split("&") if part))
    absolute = os.path.realpath(os.path.expanduser(path)) if sep and path else None
    return kind.strip().lower(), absolute, options


def _distractors_path(key: tuple[str, str | None, tuple[tuple[str, str], ...]]) -> str | None:
    """The absolute path of an ident benchmark's distractors option (they join its gallery,
    so they may not be training or validation data either)."""
    value = dict(key[2]).get("distractors")
    return os.path.realpath(os.path.expanduser(value)) if value else None


def check_test_disjoint(tests: list[str], training: str, validations: list[str],
                   source: str = "<config>") -> None:
    """ValueError naming the first test benchmark that repeats another one, a validation
    benchmark or the training benchmark (same normalised spec or same data path)."""
    seen: dict[tuple, str] = {}
    for i, spec in enumerate(tests):
        key = normalise_spec(spec)
        if key in seen:
            raise ValueError(f"{source}: test.benchmarks[{i}] {spec!r} repeats {seen[key]!r}")
        seen[key] = spec
        others = [("training.benchmark", training)] + [
            ("reward.validation benchmark", v) for v in validations]
        for where, other in others:
            o = normalise_spec(other)
            if o == key or (key[1] is not None and o[1] == key[1]) or (
                    o[1] is not None and o[1] == _distractors_path(key)):
                raise ValueError(
                    f"{source}: test.benchmarks[{i}] {spec!r} reads the same data as "
                    f"{where} {other!r}; a test benchmark must never be seen by the search "
                    "(the training benchmark's own test split is always reported)")


def _check_test(raw: Any, config: dict[str, Any], source: str) -> dict[str, Any]:
    """[test] benchmarks: benchmark specs tested at the end, disjoint from what is searched."""
    _require(isinstance(raw, dict), source, "[test]", "a table with benchmarks = [...]")
    _check_keys(raw, TEST_KEYS, source, "test")
    specs = raw.get("benchmarks", [])
    _require(isinstance(specs, list) and all(isinstance(s, str) and s.strip() and s != "main"
                                             for s in specs), source, "test.benchmarks",
             "a list of benchmark specs such as \"bin:data/lfw.bin\" or \"lfw:DIR\" "
             "(the training benchmark's own test split is always reported)")
    training = config["training"]["benchmark"]
    validations = [training if v["benchmark"] == "main" else v["benchmark"]
                   for v in config["reward"]["validation"]]
    check_test_disjoint(specs, training, validations, source)
    return {"benchmarks": list(specs)}


def validate(raw: dict[str, Any], source: str = "<config>") -> dict[str, Any]:
    """Check every section, fill defaults and return a new resolved configuration."""

    unknown = sorted(k for k in raw if k not in SECTIONS and not k.startswith("_"))
    if unknown:
        raise ValueError(f"{source}: unknown section [{unknown[0]}]; allowed: {', '.join(SECTIONS)}")
    for section in ("loss", "controller"):
        if not isinstance(raw.get(section), dict):
            raise ValueError(f"{source}: missing section [{section}]")
    config: dict[str, Any] = {"_source": source}

    method = dict(raw.get("method", {}))
    _check_keys(method, METHOD_KEYS, source, "method")
    method.setdefault("name", Path(source).stem)
    method.setdefault("description", "")
    config["method"] = method

    loss = copy.deepcopy(raw["loss"])
    name = loss.get("name")
    if name not in losses.available():
        raise ValueError(f"{source}: loss.name {name!r} is not a loss; allowed: "
                         f"{', '.join(losses.available())}")
    params = loss.get("params", {})
    _require(isinstance(params, dict), source, "loss.params", "a table of parameter tables")
    for pname, spec in params.items():
        where = f"loss.params.{pname}"
        _require(isinstance(spec, dict), source, where, "a table with init, low, high")
        _check_keys(spec, PARAM_KEYS, source, where)
        for key in ("init", "low", "high"):
            _require(_is_number(spec.get(key)), source, f"{where}.{key}",
                     f"a finite number (got {spec.get(key)!r})")
        _require(spec["low"] <= spec["init"] <= spec["high"], source, f"{where}.init",
                 f"within [low, high] = [{spec['low']}, {spec['high']}] (got {spec['init']})")
        count = spec.get("count", 1)
        _require(isinstance(count, int) and not isinstance(count, bool) and count >= 1, source,
                 f"{where}.count", "an integer >= 1")
        _require(isinstance(spec.get("log", False), bool), source, f"{where}.log",
                 f"true or false (got {spec.get('log')!r})")
        if spec.get("log", False):
            _require(spec["low"] > 0, source, f"{where}.low",
                     f"> 0 with log = true (got {spec['low']!r})")
    config["loss"] = loss

    controller = dict(raw["controller"])
    kind = controller.get("kind")
    candidates = controller.setdefault("candidates", 1)
    _require(isinstance(candidates, int) and not isinstance(candidates, bool) and candidates >= 1,
             source, "controller.candidates", f"an integer >= 1 (got {candidates!r})")
    # REINFORCE's advantages are rewards minus their mean over the M candidates: all 0 at M = 1
    _require(kind != "reinforce" or candidates >= 2, source, "controller.candidates",
             f"an integer >= 2 for kind = \"reinforce\" (with 1 candidate every advantage is 0 "
             f"and the policy never moves; got {candidates})")
    interval = controller.get("interval", 1)
    _require(isinstance(interval, int) and not isinstance(interval, bool) and interval >= 1,
             source, "controller.interval",
             f"an integer >= 1, the epochs between competitions (got {interval!r})")
    config["controller"] = controller

    reward = dict(raw.get("reward", {}))
    _check_keys(reward, REWARD_KEYS, source, "reward")
    reward.setdefault("metric", "auto")
    _require(reward["metric"] in REWARD_METRICS, source, "reward.metric",
             f"one of {', '.join(REWARD_METRICS)} (got {reward['metric']!r})")
    pairs = reward.get("pairs", 0)
    _require(isinstance(pairs, int) and not isinstance(pairs, bool) and (pairs == 0 or pairs >= 2),
             source, "reward.pairs", "an integer >= 2 validation pairs, or 0 for the validation "
             f"split's own pairs (got {pairs!r})")
    validation = reward.setdefault("validation", [{"benchmark": "main", "weight": 1.0}])
    _require(isinstance(validation, list) and len(validation) >= 1, source, "reward.validation",
             "a non-empty list of {benchmark = ..., weight = ...}")
    for i, entry in enumerate(validation):
        _require(isinstance(entry, dict), source, f"reward.validation[{i}]",
                 "a table {benchmark = ..., weight = ...}")
        _check_keys(entry, VALIDATION_KEYS, source, f"reward.validation[{i}]")
        entry.setdefault("benchmark", "main")
        entry.setdefault("weight", 1.0)
        _require(_is_number(entry["weight"]) and entry["weight"] > 0, source,
                 f"reward.validation[{i}].weight", f"a finite number > 0 (got {entry['weight']!r})")
        _require(isinstance(entry["benchmark"], str) and entry["benchmark"], source,
                 f"reward.validation[{i}].benchmark", "\"main\" or a benchmark spec")
    config["reward"] = reward

    training = {**TRAINING_DEFAULTS, **raw.get("training", {})}
    _check_keys(training, set(TRAINING_DEFAULTS), source, "training")
    for key in ("epochs", "batch_size", "embedding_size"):
        v = training[key]
        _require(isinstance(v, int) and not isinstance(v, bool) and v >= 1, source,
                 f"training.{key}", f"an integer >= 1 (got {v!r})")
    for key in ("lr", "lr_gamma"):
        _require(_is_number(training[key]) and training[key] > 0, source,
                 f"training.{key}", f"a finite number > 0 (got {training[key]!r})")
    _require(_is_number(training["weight_decay"]) and training["weight_decay"] >= 0, source,
             "training.weight_decay", f"a finite number >= 0 (got {training['weight_decay']!r})")
    _require(_is_number(training["momentum"]) and 0 <= training["momentum"] < 1, source,
             "training.momentum", f"a number in [0, 1) (got {training['momentum']!r})")
    steps = training["lr_steps"]
    _require(isinstance(steps, list) and all(isinstance(e, int) and not isinstance(e, bool)
                                             and e >= 1 for e in steps)
             and all(a < b for a, b in zip(steps, steps[1:])), source, "training.lr_steps",
             f"a list of increasing epoch numbers >= 1, e.g. [30, 60] (got {steps!r})")
    _require(_is_number(training["lr_power"]) and training["lr_power"] >= 0, source,
             "training.lr_power", f"a finite number >= 0 (got {training['lr_power']!r})")
    _require(training["optimizer"] in OPTIMIZERS, source, "training.optimizer",
             f"one of {', '.join(OPTIMIZERS)} (got {training['optimizer']!r})")
    _require(training["lr_schedule"] in LR_SCHEDULES, source, "training.lr_schedule",
             f"one of {', '.join(LR_SCHEDULES)} (got {training['lr_schedule']!r})")
    w = training["warmup_epochs"]
    _require(isinstance(w, int) and not isinstance(w, bool) and 0 <= w < training["epochs"],
             source, "training.warmup_epochs",
             f"an integer in [0, epochs) = [0, {training['epochs']}) (got {w!r})")
    _require(training["amp"] in AMP_MODES, source, "training.amp",
             f"one of {', '.join(AMP_MODES)} (got {training['amp']!r})")
    _require(isinstance(training["augment"], str), source, "training.augment",
             "auto, none, flip, crop=P or crop=P,flip")
    if training["augment"] != "auto":
        from lfsearch import data

        try:
            data.parse_augment(training["augment"])
        except ValueError:
            _require(False, source, "training.augment", "auto (the benchmark's own), none, "
                     f"flip, crop=P or crop=P,flip (got {training['augment']!r})")
    _require(training["packing"] in ("auto", "sequential", "packed"), source, "training.packing",
             f"one of auto, sequential, packed (got {training['packing']!r})")
    _require(isinstance(training["compile"], bool), source, "training.compile",
             f"true or false (got {training['compile']!r})")
    _require(training["parallel"] in PARALLEL_MODES, source, "training.parallel",
             f"one of {', '.join(PARALLEL_MODES)} (got {training['parallel']!r})")
    if training["parallel"] == "data":
        _require(training["packing"] != "packed", source, "training.packing",
                 "auto or sequential with training.parallel = \"data\" (the ranks train one "
                 "candidate at a time together)")
        _require(training["amp"] != "fp16", source, "training.amp",
                 "auto, off or bf16 with training.parallel = \"data\" (fp16's loss scaling "
                 "skips steps per rank)")
    _require(isinstance(training["benchmark"], str) and training["benchmark"], source,
             "training.benchmark", "a benchmark spec such as digits or mnist:DIR")
    _require(training["model"] == "auto" or training["model"] in models.available(), source,
             "training.model", f"auto or one of {', '.join(models.available())} "
             f"(got {training['model']!r})")
    config["training"] = training

    run = {**RUN_DEFAULTS, **raw.get("run", {})}
    _check_keys(run, RUN_KEYS, source, "run")
    _require(isinstance(run["seed"], int) and not isinstance(run["seed"], bool)
             and 0 <= run["seed"] <= MAX_SEED,
             source, "run.seed", f"an integer in [0, {MAX_SEED}] (got {run['seed']!r})")
    _require(isinstance(run["threads"], int) and not isinstance(run["threads"], bool)
             and run["threads"] >= 0, source, "run.threads",
             f"an integer >= 0, 0 for PyTorch's default (got {run['threads']!r})")
    _require(run["device"] in DEVICES, source, "run.device",
             f"one of {', '.join(DEVICES)} (got {run['device']!r})")
    config["run"] = run
    _check_search_options(config, source)

    if "test" in raw:
        config["test"] = _check_test(raw["test"], config, source)

    # Build the controller and the loss once, so unknown settings or out-of-range values
    # are reported now, naming the file, rather than mid-run.
    specs = param_specs(config)
    try:
        controllers.build(kind, specs, seed=0, horizon=controller_updates(config),
                          **controller_settings(config))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{source}: [controller]: {exc}") from None
    try:
        head = losses.build(name, embedding_size=8, num_classes=4, **loss_arguments(config))
        if config["training"]["parallel"] == "data" and loss.get("partial_fc") is not None:
            try:  # under torchrun the head is sharded over the ranks
                sharded_fc.check_member(head.inner)
            except ValueError as exc:
                raise ValueError(f"with training.parallel = \"data\": {exc}") from None
        if hasattr(head, "check_ranges") and specs:  # a loss that needs a safe search box
            head.check_ranges({s.name: (s.low, s.high) for s in specs})
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{source}: [loss]: {exc}") from None
    initial = {s.name: s.init for s in specs}
    for spec in specs:  # init, and each bound with the others at init, must be accepted
        base = spec.name if spec.name in params else spec.name.rsplit("_", 1)[0]
        for key in ("init", "low", "high"):
            try:
                head.set_params(**{**initial, spec.name: getattr(spec, key)})
            except (ValueError, TypeError) as exc:
                raise ValueError(f"{source}: loss.params.{base}.{key}: {exc}") from None
    if "study" in raw:  # what `lfsearch study` varies (study_space.py); ignored by a search
        config["study"] = study_section.check_section(raw["study"], config, source, validate)
    return config
