"""`lfsearch export RUN --onnx FILE` (lfsearch/experiments/export.py): the trained backbone as
ONNX, run by onnxruntime on real images and compared with the PyTorch embeddings."""

from __future__ import annotations

import shutil
import sys

import pytest
import torch

from lfsearch import data
from lfsearch.cli import main as cli_main
from lfsearch.experiments import export as export_mod
from lfsearch.experiments.evaluate_run import load_run_model

onnx = pytest.importorskip("onnx", reason="the [onnx] extra is not installed: "
                                          "pip install 'lfsearch[onnx]'")
ort = pytest.importorskip("onnxruntime", reason="the [onnx] extra is not installed: "
                                                "pip install 'lfsearch[onnx]'")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from lfsearch.search import search

    out = tmp_path_factory.mktemp("export") / "run"
    search("cosface", epochs=1, threads=1, out=out, tensorboard=False)
    return out


def test_exported_backbone_gives_pytorchs_embeddings_in_onnxruntime(run_dir, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    assert cli_main(["export", str(run_dir), "--onnx", str(out)]) == 0
    said = capsys.readouterr().out
    assert "checked with onnxruntime" in said and "embeddings match PyTorch" in said
    onnx.checker.check_model(onnx.load(str(out)))
    # real images of the run's benchmark, a batch size never traced
    images = data.load("digits", seed=0).test.images[:17]
    x = images.float() / 127.5 - 1.0
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    theirs = torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
    model = load_run_model(run_dir).model.eval()
    with torch.no_grad():
        ours = model(x)
    assert theirs.shape == ours.shape == (17, 64)
    assert (theirs - ours).abs().max() <= 1e-4 * max(1.0, float(ours.abs().max()))
    cos = torch.nn.functional.cosine_similarity(theirs, ours)
    assert (1 - cos).abs().max() < 1e-6
    assert not list(tmp_path.glob("*.tmp*"))


def test_without_onnxruntime_it_exports_and_says_it_could_not_check(run_dir, tmp_path,
                                                                    monkeypatch, capsys):
    first = tmp_path / "first.onnx"
    info = export_mod.export_onnx(run_dir, first)
    assert info["check"]["checked"] and info["check"]["match"]
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime fails
    # the export itself is the one above (tested there); only the check differs here
    monkeypatch.setattr(export_mod, "_onnx_export",
                        lambda model, example, path, opset: shutil.copy(first, path) and "dynamo")
    out = tmp_path / "unchecked.onnx"
    assert cli_main(["export", str(run_dir), "--onnx", str(out)]) == 0
    assert "could not check: onnxruntime is not installed" in capsys.readouterr().out
    assert out.read_bytes() == first.read_bytes()


def test_a_model_that_disagrees_or_bad_input_writes_nothing(run_dir, tmp_path, monkeypatch,
                                                           capsys):
    first = tmp_path / "first.onnx"
    export_mod.export_onnx(run_dir, first)
    monkeypatch.setattr(export_mod, "_onnx_export",
                        lambda model, example, path, opset: shutil.copy(first, path) and "dynamo")
    monkeypatch.setattr(export_mod, "TOLERANCE", -1.0)  # nothing can match
    cases = [
        (["export", str(run_dir), "--onnx", str(tmp_path / "bad.onnx")],
         "embeddings differ from PyTorch's"),
        (["export", str(run_dir), "--onnx", str(tmp_path / "model.txt")], "must end in .onnx"),
        (["export", str(tmp_path / "none"), "--onnx", str(tmp_path / "m.onnx")],
         "does not exist"),
    ]
    for argv, words in cases:
        assert cli_main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("lfsearch: error:") and "\n" not in err and words in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first.onnx"]
