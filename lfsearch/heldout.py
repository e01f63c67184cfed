"""Held-out test benchmarks: benchmarks a run is tested on at the end and never searched on
(docs/face_recognition.md).

A space file's ``[test] benchmarks = ["bin:data/lfw.bin", "bin:data/cfp_fp.bin", ...]`` names
them; the search trains and rewards on the training and validation benchmarks only, then
tests the final model on its own test split and on each of these (`evaluate_benchmarks`), and
`results.json` keeps every one's metrics under ``test_benchmarks``. `lfsearch evaluate RUN
--benchmark SPEC` tests a finished run on more of them later (`evaluate_run`).

"Never seen by the search" is checked twice. When the space file is read
(lfsearch.config.check_test_disjoint), a test benchmark may not be a validation benchmark or
the training benchmark, compared by their normalised spec (kind, absolute path, sorted
options) and by the data path alone (the same file or folder read with other options is the
same images). At the end of a search, a test benchmark whose images are byte for byte images
of the training or a validation split (lfsearch.overlap: the same files under another path)
is not tested and gets an error entry instead.

Metrics are those of the main test split (lfsearch.evaluate.evaluate): on pairs, 10-fold
verification accuracy and its std, ROC AUC, EER, TAR@FAR and rank-1 where the split has
identity labels; on closed-set splits, top-1 accuracy.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lfsearch import config as config_mod
from lfsearch import evaluate, overlap


def _finite(metrics: dict[str, float]) -> dict[str, float | None]:
    """NaN (a metric the split is too small for) as None, so the JSON stays valid."""
    return {k: (float(v) if math.isfinite(float(v)) else None) for k, v in metrics.items()}


def load_test_split(spec: str, *, seed: int, device: torch.device | str,
               image_shape: tuple[int, int, int]):
    """The test split of benchmark `spec`, checked against the model's (C, H, W)."""
    from lfsearch import data  # the data package (one loader per source)

    bench = data.load(spec, seed=seed, device=device)
    split = bench.test
    if split is None:
        raise ValueError(f"benchmark {spec!r} has no test split")
    shape = (bench.in_channels, *bench.image_size)
    if tuple(shape) != tuple(image_shape):
        c, h, w = image_shape
        raise ValueError(f"benchmark {spec!r} gives {shape[0]}x{shape[1]}x{shape[2]} images but "
                         f"the model takes {c}x{h}x{w}; add ?size={h}x{w}&channels={c} to the spec")
    return split


def metric_of(split: Any) -> str:
    """verification_accuracy on pairs, accuracy on closed-set classification."""
    return "verification_accuracy" if getattr(split, "protocol", None) == "verification" \
        else "accuracy"


def evaluate_benchmarks(model: torch.nn.Module, loss: torch.nn.Module, specs: list[str], *,
                        seed: int, device: torch.device | str,
                        image_shape: tuple[int, int, int], keep_going: bool = False,
                        seen: list[tuple[str, torch.Tensor]] = ()) -> dict[str, dict[str, Any]]:
    """{spec: {"metric": main metric name, "metrics": {...}}} for every benchmark in `specs`.

    keep_going (end of a search): a benchmark that fails to load or evaluate is recorded as
    {"error": "..."} and the others still run, so a long run keeps its results; otherwise the
    first failure raises. seen: (name, images) the search trained or was rewarded on; a
    benchmark sharing any image with them is refused (ValueError)."""
    out: dict[str, dict[str, Any]] = {}
    seen_hashes = [(name, tuple(images.shape[1:]), overlap.image_hashes(images))
                   for name, images in seen]  # hashed once for every benchmark
    for spec in specs:
        try:
            split = load_test_split(spec, seed=seed, device=device, image_shape=image_shape)
            hashes = overlap.image_hashes(split.images) if seen_hashes else set()
            for name, shape, known in seen_hashes:
                shared = len(hashes & known) if shape == tuple(split.images.shape[1:]) else 0
                if shared:
                    raise ValueError(f"test benchmark {spec!r} shares {shared} of its images "
                                     f"with the {name} split the search used; it is not tested")
            metrics = evaluate.evaluate(model, loss, split)
            out[spec] = {"metric": metric_of(split), "metrics": _finite(metrics)}
        except (ValueError, FileNotFoundError, NotADirectoryError, OSError) as exc:
            if not keep_going:
                raise
            out[spec] = {"error": " ".join(str(exc).split())}
        finally:
            split = None  # free the benchmark's images before the next one
    return out


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
    from lfsearch import losses, models

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
    ckpt = torch.load(run / "checkpoint.pt", map_location=device, weights_only=False)
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
