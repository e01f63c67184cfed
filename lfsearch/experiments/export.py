"""`lfsearch export RUN --onnx FILE`: a run's trained backbone as an ONNX model, checked with
onnxruntime (when installed) against the PyTorch embeddings. docs/face_recognition.md "Export".

The ONNX model takes float32 images (N, C, H, W) with pixels mapped to [-1, 1] (x / 127.5 − 1,
as the benchmarks feed the backbone), N free, and returns the (N, D) embeddings. It is written
to a temporary file, checked, then renamed into place: a model that disagrees with PyTorch is
never left at FILE.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from lfsearch import paths
from lfsearch.experiments.evaluate_run import load_run_model

log = logging.getLogger(__name__)

#: embeddings must agree to this: max |onnx − torch| ≤ TOLERANCE · max(1, max |torch|), and
#: the L2-normalised embeddings (what face verification compares) to TOLERANCE
TOLERANCE = 1e-4
CHECK_BATCH = 5  # another batch size than the one traced: the batch axis is free


def _onnx_export(model: torch.nn.Module, example: torch.Tensor, path: Path,
                 opset: int | None) -> str:
    """torch.onnx.export (the torch.export-based exporter; the TorchScript one if that
    fails); returns which exporter wrote the file. Exporter chatter is kept out of stdout."""
    kwargs: dict[str, Any] = dict(input_names=["images"], output_names=["embeddings"],
                                  dynamic_axes={"images": {0: "batch"},
                                                "embeddings": {0: "batch"}},
                                  verbose=False)
    if opset is not None:
        kwargs["opset_version"] = opset
    noisy = logging.getLogger("torch.onnx")
    level = noisy.level
    noisy.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                # weights inside the file (< 2 GB): no side file named after the temp file
                torch.onnx.export(model, (example,), str(path), dynamo=True,
                                  external_data=False, **kwargs)
                return "dynamo"
            except ImportError:
                raise
            except Exception as exc:  # an op the new exporter cannot take: the older one
                log.warning("torch.export-based ONNX export failed (%s); using the "
                            "TorchScript exporter", str(exc).splitlines()[0] if str(exc) else exc)
                torch.onnx.export(model, (example,), str(path), dynamo=False, **kwargs)
                return "torchscript"
    finally:
        noisy.setLevel(level)


def _backbone_name(run_dir: str | os.PathLike, run: Any) -> str:
    try:
        manifest = json.loads((Path(run_dir) / "manifest.json").read_text())
        return str(manifest["backbone"]["name"])
    except (OSError, ValueError, KeyError, TypeError):
        return str(run.config["training"]["model"])


def _check(path: Path, model: torch.nn.Module, images: torch.Tensor) -> dict[str, Any]:
    """Run the file with onnxruntime on `images`; the differences from PyTorch."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    theirs = torch.from_numpy(session.run(None, {"images": images.numpy()})[0])
    with torch.no_grad():
        ours = model(images).float()
    if theirs.shape != ours.shape:
        raise ValueError(f"--onnx: onnxruntime's embeddings have shape {tuple(theirs.shape)}; "
                         f"PyTorch's {tuple(ours.shape)}")
    raw = float((theirs - ours).abs().max())
    scale = max(1.0, float(ours.abs().max()))
    unit = float((torch.nn.functional.normalize(theirs, dim=1)
                  - torch.nn.functional.normalize(ours, dim=1)).abs().max())
    return {"checked": True, "batch": int(images.shape[0]), "max_abs_diff": raw,
            "max_abs_embedding": float(ours.abs().max()), "max_abs_diff_normalised": unit,
            "tolerance": TOLERANCE,
            "match": bool(raw <= TOLERANCE * scale and unit <= TOLERANCE)}


def export_onnx(run_dir: str | os.PathLike, out: str | os.PathLike, *,
                opset: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Export run_dir's final backbone to `out` (ONNX) and check it with onnxruntime.

    Returns {"onnx", "model", "input_shape", "embedding_size", "exporter", "check": {...}}:
    check["checked"] False with a "reason" when onnxruntime is not installed; a model whose
    embeddings differ from PyTorch's beyond TOLERANCE raises ValueError (nothing written)."""
    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise ValueError(f"--onnx {out}: the file name must end in .onnx")
    if out.is_dir():
        raise ValueError(f"--onnx {out} is a folder; allowed: a file name ending in .onnx")
    paths.check_creatable(out.parent, "--onnx")
    try:
        import onnx  # noqa: F401  (torch.onnx.export writes through it)
    except ImportError:
        raise ValueError("--onnx needs the 'onnx' package: pip install 'lfsearch[onnx]' "
                         "(onnx, onnxscript, onnxruntime)") from None
    run = load_run_model(run_dir, "cpu")
    model = run.model.eval()
    g = torch.Generator().manual_seed(seed)
    example = torch.rand((2, *run.image_shape), generator=g) * 2 - 1
    images = torch.rand((CHECK_BATCH, *run.image_shape), generator=g) * 2 - 1
    paths.make_folder(out.parent, "--onnx")
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    try:
        exporter = _onnx_export(model, example, tmp, opset)
        try:
            check = _check(tmp, model, images)
        except ImportError:
            check = {"checked": False, "reason": "onnxruntime is not installed "
                     "(pip install onnxruntime); the embeddings were not compared"}
        if check["checked"] and not check["match"]:
            raise ValueError(
                f"--onnx: onnxruntime's embeddings differ from PyTorch's by "
                f"{check['max_abs_diff']:.3g} (normalised {check['max_abs_diff_normalised']:.3g}"
                f"); allowed: {TOLERANCE:g} (relative to the embeddings' scale); not written")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return {"onnx": str(out), "run_dir": str(run_dir), "model": _backbone_name(run_dir, run),
            "input_shape": ["N", *run.image_shape],
            "embedding_size": int(run.config["training"]["embedding_size"]),
            "exporter": exporter, "check": check}
