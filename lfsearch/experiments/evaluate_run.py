"""`lfsearch evaluate RUN`: a finished run's backbone rebuilt from its checkpoint and tested on
more benchmarks (evaluation/heldout.py).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lfsearch import losses, models, paths
from lfsearch.evaluation.heldout import evaluate_benchmarks
from lfsearch.search import checkpoint as checkpoint_mod
from lfsearch.search import config as config_mod
from lfsearch.search import run_folder


@dataclass
class RunModel:
    """A run folder's final model: its configuration, backbone and loss (with the class head),
    the images it takes (C, H, W) and the number of epochs it completed."""

    config: dict[str, Any]
    model: torch.nn.Module
    loss: torch.nn.Module
    image_shape: tuple[int, int, int]
    epochs_done: int


def load_run_model(run_dir: str | os.PathLike, device: torch.device | str = "cpu") -> RunModel:
    """The state a run's checkpoint.pt holds: the best candidate of its last completed epoch.

    The backbone's shape comes from manifest.json's "backbone" entry; runs written before it
    existed load their training benchmark once to find it."""

    run = Path(run_dir)
    if not run.is_dir():
        raise NotADirectoryError(f"run folder {run} does not exist or is not a folder")
    for name in ("config.toml", "manifest.json", "checkpoint.pt"):
        if not (run / name).is_file():
            raise FileNotFoundError(f"{run} is not a run folder with a trained model: {name} is "
                                    "missing (a run writes config.toml and manifest.json at "
                                    "start, checkpoint.pt after its first epoch)")
    config = config_mod.load(run / "config.toml")
    training = config["training"]
    backbone = json.loads((run / "manifest.json").read_text()).get("backbone")
    if backbone is None:
        from lfsearch import data

        bench = data.load(training["benchmark"], seed=config["run"]["seed"])
        backbone = {"name": (bench.default_model if training["model"] == "auto"
                             else training["model"]),
                    "embedding_size": training["embedding_size"],
                    "in_channels": bench.in_channels, "image_size": list(bench.image_size),
                    "num_classes": bench.num_classes}
        del bench
    # weights_only: a checkpoint that would run code is refused (search/checkpoint.py); a
    # damaged one falls back to checkpoint.prev.pt as --resume does
    ckpt, source = checkpoint_mod.load(run, map_location=device)
    model = models.build(backbone["name"], embedding_size=backbone["embedding_size"],
                         in_channels=backbone["in_channels"],
                         image_size=tuple(backbone["image_size"])).to(device)
    loss = losses.build(config["loss"]["name"], embedding_size=backbone["embedding_size"],
                        num_classes=backbone["num_classes"],
                        **config_mod.loss_arguments(config)).to(device)
    try:
        model.load_state_dict(ckpt["state"]["model"])
        loss.load_state_dict(ckpt["state"]["loss"])
    except (KeyError, TypeError, RuntimeError) as exc:
        reason = " ".join(str(exc).split())[:200]
        raise ValueError(f"{source} does not hold this run's {backbone['name']} model and "
                         f"{config['loss']['name']} loss ({reason}); evaluate the run folder "
                         "that wrote it") from None
    shape = (int(backbone["in_channels"]), *map(int, backbone["image_size"]))
    return RunModel(config, model, loss, shape, int(ckpt["epoch"]) + 1)


OWN_FILES = ("checkpoint.prev.pt", "roc.csv", "report.md", "report.html")


def check_out(out: str | os.PathLike, run_dir: str | os.PathLike, specs: list[str], *,
              force: bool = False) -> Path:
    """Refuse an --out that is one of the run's own files or a benchmark's data file, or that
    exists (without `force`); one line, before anything is evaluated."""
    from lfsearch import data

    run, out = Path(run_dir), Path(out)
    inputs = [(f"a file of run folder {run}", p) for p in run.iterdir()] if run.is_dir() else []
    if out.name in run_folder.RUN_FILES + OWN_FILES and paths.same_file(out.parent, run):
        inputs.append((f"a file of run folder {run}", out))
    for spec in specs:
        try:
            path = data.parse_spec(spec)[1]
        except ValueError:
            continue  # the benchmark itself reports it
        if path:
            inputs.append((f"the data of --benchmark {spec}", path))
    return paths.check_output(out, "--out", inputs=inputs, force=force)


def seen_by_run(run: RunModel, device: torch.device | str, specs: list[str],
                seed: int) -> list[tuple[str, torch.Tensor]]:
    """(name, images) of the splits the run trained and was rewarded on, drawn with its seed:
    what `search --test-benchmark` checks a test benchmark against (evaluation/heldout.py).

    A streamed training split is not held in memory to compare; then a spec that reads the
    training data other than the run's own benchmark and seed is refused by its path."""
    from lfsearch import data

    run_seed, training = run.config["run"]["seed"], run.config["training"]["benchmark"]
    bench = data.load(training, seed=run_seed, device=device)
    seen = []
    if getattr(bench.train, "images", None) is not None:
        seen.append(("training", bench.train.images))
    else:
        own = config_mod.normalise_spec(training)
        for spec in specs:
            key = config_mod.normalise_spec(spec)
            if key[1] is not None and key[1] == own[1] and (key != own or seed != run_seed):
                raise ValueError(f"--benchmark {spec!r} reads the run's streamed training data "
                                 f"{training!r} with other options or another seed, so its "
                                 "test split may hold training images; evaluate on other data "
                                 f"(or on {training!r} with the run's seed {run_seed})")
    for entry in run.config["reward"]["validation"]:
        spec = entry["benchmark"]
        other = bench if spec == "main" else data.load(spec, seed=seed, device=device)
        if other.val is not None:
            seen.append(("val" if spec == "main" else f"val:{spec}", other.val.images))
    return seen


def evaluate_run(run_dir: str | os.PathLike, specs: list[str], *,
                 device: torch.device | str = "cpu", seed: int | None = None) -> dict[str, Any]:
    """Test a run's final model on benchmarks `specs` (`lfsearch evaluate`).

    Returns {"run_dir", "method", "training_benchmark", "seed", "epochs_done", "benchmarks":
    {spec: {"metric", "metrics"}}}. Splits are drawn with the run's seed unless `seed` is
    given (it matters for folder-style benchmarks, not for lfw and bin)."""
    if not specs:
        raise ValueError("--benchmark: give at least one benchmark spec to evaluate on")
    run = load_run_model(run_dir, device)
    seed = run.config["run"]["seed"] if seed is None else seed
    results = evaluate_benchmarks(run.model, run.loss, specs, seed=seed, device=device,
                                  image_shape=run.image_shape,
                                  seen=seen_by_run(run, device, specs, seed))
    return {"run_dir": str(run_dir), "method": run.config["method"]["name"],
            "training_benchmark": run.config["training"]["benchmark"], "seed": seed,
            "epochs_done": run.epochs_done, "benchmarks": results}
