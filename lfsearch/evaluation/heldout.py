"""Held-out test benchmarks: benchmarks a run is tested on at the end and never searched on
(docs/face_recognition.md).

A space file's ``[test] benchmarks = ["bin:data/lfw.bin", "bin:data/cfp_fp.bin", ...]`` names
them; the search trains and rewards on the training and validation benchmarks only, then
tests the final model on its own test split and on each of these (`evaluate_benchmarks`), and
`results.json` keeps every one's metrics under ``test_benchmarks``. `lfsearch evaluate RUN
--benchmark SPEC` tests a finished run on more of them later (`evaluate_run`).

"Never seen by the search" is checked twice. When the space file is read
(lfsearch.search.config.check_test_disjoint), a test benchmark may not be a validation benchmark or
the training benchmark, compared by their normalised spec (kind, absolute path, sorted
options) and by the data path alone (the same file or folder read with other options is the
same images). At the end of a search, a test benchmark whose images are byte for byte images
of the training or a validation split (lfsearch.evaluation.overlap: the same files under another path)
is not tested and gets an error entry instead; for `ijb:` images and `ident:` distractors,
which are decoded a chunk at a time, the check runs on each chunk as it is read.

Metrics are those of the main test split (lfsearch.evaluation.metrics.evaluate): on pairs, 10-fold
verification accuracy and its std, ROC AUC, EER, TAR@FAR, and where the split has identity
labels TAR@FAR over all pairs and rank-1; on closed-set splits, top-1 accuracy. Each
benchmark's flip test-time augmentation (`Benchmark.flip`: on for face kinds) is applied and
recorded as "flip" in its entry. `ijb:DIR` benchmarks give IJB template
TAR@FAR 1e-6..1e-1 (evaluation/ijb.py) and `ident:PATH` benchmarks rank-1 with distractors
(evaluation/identification.py).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from lfsearch.evaluation import identification, ijb, overlap
from lfsearch.evaluation import metrics as metrics_mod


def _finite(metrics: dict[str, float]) -> dict[str, float | None]:
    """NaN (a metric the split is too small for) as None, so the JSON stays valid."""
    return {k: (float(v) if math.isfinite(float(v)) else None) for k, v in metrics.items()}


def load_test_split(spec: str, *, seed: int, device: torch.device | str,
               image_shape: tuple[int, int, int]):
    """(test split, flip) of benchmark `spec`, the split checked against the model's
    (C, H, W); flip: the benchmark's test-time flip augmentation (`Benchmark.flip`)."""
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
    return split, bool(getattr(bench, "flip", False))


MAIN_METRICS = {"verification": "verification_accuracy", "classification": "accuracy",
                "templates": ijb.MAIN_METRIC, "identification": "rank1"}


def metric_of(split: Any) -> str:
    """The main metric of a split's protocol: verification_accuracy on pairs, accuracy on
    closed-set classification, TAR@FAR=1e-4 on IJB templates, rank1 on identification."""
    return MAIN_METRICS.get(getattr(split, "protocol", None), "accuracy")


def evaluate_split(model: torch.nn.Module, loss: torch.nn.Module | None, split: Any, *,
                   flip: bool = True, screen: Any = None) -> dict[str, float]:
    """The split's protocol: IJB templates (evaluation/ijb.py) and identification with
    distractors (evaluation/identification.py) with `flip` (on by default, as the field
    reports them); pairs and classification by metrics.evaluate. `screen(images)` (the
    overlap check) sees every image first: the whole split, or for the two chunked protocols
    each chunk as it is read."""
    protocol = getattr(split, "protocol", None)
    if protocol == "templates":
        return ijb.evaluate_templates(model, split, flip=flip, screen=screen)
    if protocol == "identification":
        return identification.evaluate_identification(model, split, flip=flip, screen=screen)
    if screen is not None:
        screen(split.images)
    return metrics_mod.evaluate(model, loss, split, flip=flip)


def overlap_screen(spec: str, seen: list[tuple[str, tuple, set[bytes]]]):
    """A function of images that raises ValueError (one line) when any of them is among the
    `seen` (name, image shape, hashes) splits; None when nothing was seen."""
    if not seen:
        return None

    def screen(images) -> None:
        hashes = overlap.image_hashes(images)
        for name, shape, known in seen:
            shared = len(hashes & known) if shape == tuple(images.shape[1:]) else 0
            if shared:
                raise ValueError(f"test benchmark {spec!r} shares {shared} of its images "
                                 f"with the {name} split the search used; it is not tested")
    return screen


def evaluate_benchmarks(model: torch.nn.Module, loss: torch.nn.Module, specs: list[str], *,
                        seed: int, device: torch.device | str,
                        image_shape: tuple[int, int, int], keep_going: bool = False,
                        seen: list[tuple[str, torch.Tensor]] = ()) -> dict[str, dict[str, Any]]:
    """{spec: {"metric": main metric name, "metrics": {...}}} for every benchmark in `specs`.

    keep_going (end of a search): a benchmark that fails to load or evaluate is recorded as
    {"error": "..."} and the others still run, so a long run keeps its results; otherwise the
    first failure raises. seen: (name, images) the search trained or was rewarded on; a
    benchmark sharing any image with them (an IJB image or an ident: probe, gallery image or
    distractor included, checked as each chunk is read) is refused (ValueError)."""
    out: dict[str, dict[str, Any]] = {}
    seen_hashes = [(name, tuple(images.shape[1:]), overlap.image_hashes(images))
                   for name, images in seen]  # hashed once for every benchmark
    for spec in specs:
        try:
            split, flip = load_test_split(spec, seed=seed, device=device,
                                          image_shape=image_shape)
            metrics = evaluate_split(model, loss, split, flip=flip,
                                     screen=overlap_screen(spec, seen_hashes))
            out[spec] = {"metric": metric_of(split), "flip": flip, "metrics": _finite(metrics)}
        except (ValueError, FileNotFoundError, NotADirectoryError, OSError) as exc:
            if not keep_going:
                raise
            out[spec] = {"error": " ".join(str(exc).split())}
        finally:
            split = None  # free the benchmark's images before the next one
    return out
