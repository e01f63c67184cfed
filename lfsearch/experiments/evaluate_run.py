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

from lfsearch import losses, models
from lfsearch.evaluation.heldout import evaluate_benchmarks
from lfsearch.search import config as config_mod


@dataclass
class RunModel:
    """A run folder's final model: its configuration, backbone and loss (with the class head),
    the images it takes (C, H, W) and the number of epochs it completed."""

    config: dict[str, Any]
    model: torch.nn.Module
    loss: torch.nn.Module
    image_shape: tuple[int, int, int]
    epochs_done: int


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """torch.load with weights_only=True (tensors and plain containers only, no code), and
    weights_only=False only for a checkpoint that holds other objects (older runs)."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception:  # an object the safe unpickler refuses
        return torch.load(path, map_location=device, weights_only=False)


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
    ckpt = load_checkpoint(run / "checkpoint.pt", device)
    model = models.build(backbone["name"], embedding_size=backbone["embedding_size"],
                         in_channels=backbone["in_channels"],
                         image_size=tuple(backbone["image_size"])).to(device)
    loss = losses.build(config["loss"]["name"], embedding_size=backbone["embedding_size"],
                        num_classes=backbone["num_classes"],
                        **config_mod.loss_arguments(config)).to(device)
    model.load_state_dict(ckpt["state"]["model"])
    loss.load_state_dict(ckpt["state"]["loss"])
    shape = (int(backbone["in_channels"]), *map(int, backbone["image_size"]))
    return RunModel(config, model, loss, shape, int(ckpt["epoch"]) + 1)


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
                                  image_shape=run.image_shape)
    return {"run_dir": str(run_dir), "method": run.config["method"]["name"],
            "training_benchmark": run.config["training"]["benchmark"], "seed": seed,
            "epochs_done": run.epochs_done, "benchmarks": results}
