"""Held-out test benchmarks: [test] benchmarks in a space file, `lfsearch evaluate`, and the
test-benchmark tables of compare and report. Benchmarks are built here from scikit-learn's
digits 6-9 (never trained on by the digits benchmark): an insightface .bin, an LFW folder
with pairs.txt and an identity folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from heldout_data import write_bin, write_folder, write_lfw
from sklearn.metrics import roc_auc_score

from lfsearch import models
from lfsearch.cli import main as cli_main
from lfsearch.evaluation import metrics as metrics_mod
from lfsearch.experiments import evaluate_run
from lfsearch.search import config as config_mod
from lfsearch.search import search


@pytest.fixture(scope="module")
def benches(tmp_path_factory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("benches")
    images, same = write_bin(root / "digits.bin")
    write_lfw(root)
    write_folder(root / "faces")
    return {"root": root, "bin_images": images, "bin_same": same}


def lfw_spec(root: Path) -> str:
    return f"lfw:{root}?channels=1&size=8x8"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, benches) -> Path:
    """A 2-epoch softmax run on digits tested at the end on a .bin and an identity folder."""
    out = tmp_path_factory.mktemp("run") / "softmax"
    root = benches["root"]
    tests = [f"bin:{root / 'digits.bin'}?channels=1", f"folder:{root / 'faces'}?channels=1"]
    search("softmax", epochs=2, seed=3, device="cpu", out=out, test_benchmarks=tests)
    return out


def test_a_search_tests_its_test_benchmarks_at_the_end(run_dir, benches):
    results = json.loads((run_dir / "results.json").read_text())
    manifest = json.loads((run_dir / "manifest.json").read_text())
    specs = list(results["test_benchmarks"])
    assert specs == manifest["test_benchmarks"] and len(specs) == 2
    bin_entry = results["test_benchmarks"][specs[0]]
    assert bin_entry["metric"] == "verification_accuracy"
    assert bin_entry["metrics"]["pairs"] == 200
    assert "rank1" not in bin_entry["metrics"]  # a .bin has pairs only, no identities
    folder_entry = results["test_benchmarks"][specs[1]]
    assert "rank1" in folder_entry["metrics"]  # identity folders: rank-1 applies
    # the test benchmarks are not in the search's records: nothing was rewarded on them
    epochs = (run_dir / "epochs.csv").read_text().splitlines()[0]
    assert "digits.bin" not in epochs and "faces" not in epochs
    # and the config a resume would use keeps them
    assert config_mod.load(run_dir / "config.toml")["test"]["benchmarks"] == specs


def test_evaluate_matches_an_independent_computation(run_dir, benches):
    spec = f"bin:{benches['root'] / 'digits.bin'}?channels=1"
    out = evaluate_run.evaluate_run(run_dir, [spec])
    metrics = out["benchmarks"][spec]["metrics"]
    assert out["epochs_done"] == 2 and out["method"] == "softmax"
    # rebuild the backbone by hand from the checkpoint and score the pairs with numpy
    cfg = config_mod.load(run_dir / "config.toml")
    model = models.build("digits_net", embedding_size=cfg["training"]["embedding_size"],
                         in_channels=1, image_size=(8, 8))
    model.load_state_dict(torch.load(run_dir / "checkpoint.pt", weights_only=False)
                          ["state"]["model"])
    model.eval()
    x = torch.from_numpy(benches["bin_images"]).float()[:, None] / 127.5 - 1
    # bin: is a face kind, tested with flip test-time augmentation: f(x) + f(mirror(x))
    assert out["benchmarks"][spec]["flip"] is True
    with torch.no_grad():
        e = (model(x) + model(x.flip(-1))).numpy().astype(np.float64)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    scores = (e[0::2] * e[1::2]).sum(1)
    same = benches["bin_same"]
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(same, scores), abs=1e-6)
    folds = np.arange(len(same)) * 10 // len(same)  # the .bin's contiguous 10 folds
    want = metrics_mod.verification_metrics(scores, same, folds)
    for key in ("verification_accuracy", "verification_accuracy_std", "eer", "tar@far=1e-2"):
        assert metrics[key] == pytest.approx(want[key], abs=1e-6), key
    # the same final model that the end of the search tested
    results = json.loads((run_dir / "results.json").read_text())
    assert results["test_benchmarks"][spec]["metrics"] == pytest.approx(metrics)


def test_evaluate_cli_writes_json_and_refuses_bad_input(run_dir, benches, tmp_path, capsys):
    lfw = lfw_spec(benches["root"])
    binary = f"bin:{benches['root'] / 'digits.bin'}?channels=1"
    target = tmp_path / "eval.json"
    assert cli_main(["evaluate", str(run_dir), "--benchmark", lfw, "--benchmark", binary,
                     "--device", "cpu", "--out", str(target)]) == 0
    printed = capsys.readouterr().out
    assert "verification_accuracy = " in printed and " ± " in printed
    written = json.loads(target.read_text())
    assert list(written["benchmarks"]) == [lfw, binary]
    lfw_metrics = written["benchmarks"][lfw]["metrics"]
    assert lfw_metrics["pairs"] == 16 and 0.0 <= lfw_metrics["roc_auc"] <= 1.0
    assert not list(tmp_path.glob(".*tmp*"))  # written through a temporary file and a rename

    for argv, words in [
        (["evaluate", str(tmp_path / "nothing"), "--benchmark", binary], "does not exist"),
        (["evaluate", str(tmp_path), "--benchmark", binary], "config.toml is missing"),
        (["evaluate", str(run_dir), "--benchmark", "imagenet:/x"], "imagenet"),
        # the model takes 1x8x8 images: a 3-channel .bin is refused with the option to add
        (["evaluate", str(run_dir), "--benchmark", binary.replace("?channels=1", "")],
         "?size=8x8&channels=1"),
    ]:
        assert cli_main(argv + ["--out", str(tmp_path / "bad.json")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("lfsearch: error:") and "\n" not in err and words in err, err
        assert not (tmp_path / "bad.json").exists()


SPACE = """
[loss]
name = "softmax"
[controller]
kind = "fixed"
[reward]
validation = [{{ benchmark = "main" }}, {{ benchmark = "{val}" }}]
[test]
benchmarks = {tests}
"""


@pytest.mark.parametrize("tests, words", [
    ('["bin:{root}/v.bin"]', "same data as reward.validation benchmark"),
    ('["bin:{root}/./v.bin?size=8x8"]', "same data as reward.validation"),  # same file
    ('["digits"]', "same data as training.benchmark"),
    ('["bin:{root}/a.bin", "bin:{root}/a.bin"]', "repeats"),
    ('["main"]', "test.benchmarks must be"),
    ('"bin:{root}/a.bin"', "test.benchmarks must be"),
])
def test_test_benchmarks_must_be_disjoint_from_what_is_searched(tmp_path, tests, words):
    path = tmp_path / "space.toml"
    path.write_text(SPACE.format(val=f"bin:{tmp_path}/v.bin",
                                 tests=tests.format(root=tmp_path)))
    with pytest.raises(ValueError) as info:
        config_mod.load(path)
    msg = str(info.value)
    assert "space.toml" in msg and words in msg and "\n" not in msg


def test_test_benchmarks_also_checked_against_an_overridden_training_benchmark(tmp_path):
    path = tmp_path / "space.toml"
    path.write_text(SPACE.format(val=f"bin:{tmp_path}/v.bin",
                                 tests=f'["folder:{tmp_path}/faces?channels=1"]'))
    config = config_mod.load(path)  # disjoint from digits and v.bin
    with pytest.raises(ValueError, match="same data as training.benchmark"):
        config_mod.resolve(config, benchmark=f"folder:{tmp_path}/faces")


def test_a_missing_test_benchmark_fails_before_training(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(FileNotFoundError, match="missing.bin"):
        search("softmax", epochs=1, device="cpu", out=out,
               test_benchmarks=[f"bin:{tmp_path}/missing.bin"])
    assert not out.exists()  # nothing half-written


@pytest.fixture(scope="module")
def compare_dir(tmp_path_factory, benches):
    from lfsearch.experiments.compare import compare

    root = benches["root"]
    tests = [f"bin:{root / 'digits.bin'}?channels=1", lfw_spec(root)]
    out = tmp_path_factory.mktemp("cmp") / "cmp"
    result = compare(["digits"], "softmax,cosface", 2, out=out, epochs=1, device="cpu",
                     test_benchmarks=tests)
    return out, tests, result


def test_compare_tables_every_test_benchmark(compare_dir):
    out, tests, result = compare_dir
    table = result["table_tests"]
    assert list(dict.fromkeys(table["test_benchmark"])) == tests
    # the two fixed methods and the one chosen per seed by validation reward
    assert set(table["method"]) == {"softmax", "cosface", "validation-selected best fixed"}
    assert (table["n"] == 2).all()
    runs = result["runs"]
    for spec in tests:  # the table's means and stds are the runs' own values
        for method in ("softmax", "cosface"):
            row = table[(table["test_benchmark"] == spec) & (table["method"] == method)].iloc[0]
            values = runs[runs["method"] == method][f"test[{spec}]/verification_accuracy"]
            assert row["mean"] == pytest.approx(values.mean())
            assert row["std"] == pytest.approx(values.std(ddof=1), nan_ok=True)
    md = (out / "table.md").read_text()
    assert all(f"## Test benchmark {spec}" in md for spec in tests)
    assert (out / "table_tests.csv").is_file()


def test_run_report_shows_its_test_benchmarks(run_dir):
    from lfsearch.report import report

    text = report(run_dir, roc=False)["markdown"].read_text()
    assert "## Test benchmarks" in text and "digits.bin" in text and "faces" in text


@pytest.mark.slow
def test_compare_report_shows_every_test_benchmark(compare_dir):
    from lfsearch.report import report

    out, tests, _ = compare_dir
    text = report(out, roc=False)["markdown"].read_text()
    assert all(f"## Test benchmark {spec}" in text for spec in tests)
    assert text.count("digits.bin") >= 2  # its table, and its column in the runs table


def test_a_test_benchmark_holding_validation_images_is_not_tested(tmp_path):
    # a .bin of the digits benchmark's own validation images (exact pixels, lossless PNG):
    # its spec and path differ from everything the search uses, its content does not
    import pickle

    from heldout_data import png

    from lfsearch import data

    val = data.load("digits", seed=5).val
    blobs = [png(img[0].numpy()) for img in val.images[:40]]
    with open(tmp_path / "copy.bin", "wb") as f:
        pickle.dump((blobs, [i % 2 == 0 for i in range(20)]), f)
    clean = tmp_path / "clean.bin"
    write_bin(clean, n_pairs=20)  # digits rescaled to 0..255: other bytes
    copy_spec, clean_spec = (f"bin:{tmp_path / 'copy.bin'}?channels=1",
                             f"bin:{clean}?channels=1")
    results = search("softmax", epochs=1, seed=5, device="cpu", out=tmp_path / "run",
                     test_benchmarks=[copy_spec, clean_spec])
    entry = results["test_benchmarks"][copy_spec]
    assert "metrics" not in entry
    assert "shares 40 of its images with the val split" in entry["error"]
    assert results["test_benchmarks"][clean_spec]["metrics"]["pairs"] == 20
