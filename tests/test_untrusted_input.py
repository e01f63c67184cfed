"""Nothing lost, nothing executed (issue 21, items 1-7; docs/faults.md): run folders, .bin and
RecordIO files and image folders from someone else, two processes on one folder, outputs over
inputs. Each case is one line `lfsearch: error: ...` naming the file, field or record, exit
status 2, and nothing executed, lost or half-written.
"""

from __future__ import annotations

import builtins
import io
import os
import pickle
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_faults import cli_env, refused, snapshot, start
from test_recordio import hand_record, ir

from lfsearch import data, paths
from lfsearch.cli import main as cli_main
from lfsearch.data import binset
from lfsearch.data.images import decode_one
from lfsearch.search import checkpoint as checkpoint_mod

ORL_SMALL = Path(__file__).resolve().parent / "data" / "orl_small"
CPU = ["--device", "cpu"]


@pytest.fixture(scope="module")
def run1(tmp_path_factory) -> Path:
    """A complete 1-epoch cosface run on digits."""
    out = tmp_path_factory.mktemp("runs") / "run"
    assert cli_main(["search", "cosface", "--epochs", "1", *CPU, "--out", str(out),
                     "--quiet"]) == 0
    return out


@pytest.fixture
def run_copy(run1, tmp_path) -> Path:
    return Path(shutil.copytree(run1, tmp_path / "run"))


def png(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array, mode).save(buf, format="PNG")
    return buf.getvalue()


def write_bin(path: Path, blobs: list, issame: list) -> Path:
    with open(path, "wb") as f:
        pickle.dump((blobs, issame), f, protocol=2)
    return path


def grey_pairs(n: int) -> tuple[list[bytes], list[bool]]:
    """2n distinct 8x8 grey PNGs and alternating same/different flags."""
    return [png(np.full((8, 8), i, np.uint8)) for i in range(2 * n)], [i % 2 == 0
                                                                      for i in range(n)]


# ------------------------------------------------------------------ 1. nothing executed
class Payload:
    """Unpickling it creates the file `target` (what a hostile checkpoint.pt would do)."""

    def __init__(self, target: Path):
        self.target = str(target)

    def __reduce__(self):
        return (builtins.open, (self.target, "w"))


@pytest.mark.parametrize("command", ["evaluate", "report", "resume"])
def test_a_pickled_payload_in_checkpoint_is_refused_not_executed(run_copy, tmp_path, capsys,
                                                                 command):
    target = tmp_path / "pwned"
    torch.save({"epoch": 0, "state": Payload(target), "controller": {}, "rows": [],
                "controller_rows": []}, run_copy / "checkpoint.pt")
    argv = {"evaluate": ["evaluate", run_copy, "--benchmark", "digits", *CPU],
            "report": ["report", run_copy],
            "resume": ["search", "cosface", "--resume", "--out", run_copy, "--quiet"]}[command]
    refused(argv, capsys, f"{run_copy / 'checkpoint.pt'}", "refused, not loaded", "io.open")
    assert not target.exists()


def test_every_checkpoint_a_search_writes_loads_with_weights_only(tmp_path):
    # reinforce (numpy RNG state, lists) and optuna (trial history) controllers
    for space in ("search_softmax", "random_softmax"):
        out = tmp_path / space
        assert cli_main(["search", space, "--epochs", "1", "--candidates", "2", *CPU,
                         "--out", str(out), "--quiet"]) == 0
        ckpt = torch.load(out / "checkpoint.pt", weights_only=True)
        assert set(checkpoint_mod.KEYS) <= set(ckpt)


def test_plain_turns_numpy_values_into_numbers_and_lists_and_refuses_objects():
    out = checkpoint_mod.plain({"a": np.float64(1.5), "b": np.arange(3), "c": (np.int64(2),)})
    assert out == {"a": 1.5, "b": [0, 1, 2], "c": (2,)}
    assert type(out["a"]) is float and type(out["c"][0]) is int
    with pytest.raises(TypeError, match=r"checkpoint\['x'\] is a object"):
        checkpoint_mod.plain({"x": object()})


def test_a_checkpoint_written_before_with_numpy_numbers_still_loads(tmp_path):
    path = tmp_path / "old.pt"
    torch.save({"epoch": np.int64(1), "state": {"r": np.float64(0.5)}, "controller": {},
                "rows": [{"reward": np.float32(0.25)}], "controller_rows": []}, path)
    ckpt = checkpoint_mod.read(path)
    assert ckpt["epoch"] == 1 and ckpt["state"]["r"] == 0.5 and ckpt["rows"][0]["reward"] == 0.25


# ------------------------------------------------------------------ 2. a .bin's allocations
# LONG1 3000000000 is \x8a\x05\x00^\xd0\xb2\x00 (5 bytes, little-endian, signed)
BYTEARRAY_3E9 = b"\x80\x02c__builtin__\nbytearray\n\x8a\x05\x00^\xd0\xb2\x00\x85R]\x86."
ARRAY_3E9 = (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
             b"\x8a\x05\x00^\xd0\xb2\x00\x85C\x01b\x87R]\x86.")


@pytest.mark.parametrize("payload, words", [
    (BYTEARRAY_3E9, "bytearray built from a number"),
    (ARRAY_3E9, "an array of 3000000000 bytes is larger than the file"),
])
def test_a_few_bytes_of_bin_cannot_ask_for_gigabytes(run1, tmp_path, capsys, payload, words):
    path = tmp_path / "x.bin"
    path.write_bytes(payload)
    assert len(payload) < 80
    refused(["evaluate", run1, "--benchmark", f"bin:{path}", *CPU], capsys,
            f"cannot read pickle {path}", words)


def test_a_bin_of_references_to_one_image_is_refused_before_decoding(tmp_path):
    one = png(np.zeros((8, 8), np.uint8))
    path = write_bin(tmp_path / "refs.bin", [one] * 200_000, [True, False] * 50_000)
    assert path.stat().st_size < len(one) * 200_000 / 10  # the pickle stores the image once
    began = time.perf_counter()
    with pytest.raises(ValueError, match="stores each image's bytes once"):
        data.load(f"bin:{path}")
    assert time.perf_counter() - began < 10  # refused, not decoded 200k times


def test_the_number_of_pairs_is_bounded(tmp_path, monkeypatch):
    blobs, same = grey_pairs(12)
    path = write_bin(tmp_path / "many.bin", blobs, same)
    monkeypatch.setattr(binset, "MAX_PAIRS", 10)
    with pytest.raises(ValueError, match="12 pairs; a .bin may hold at most 10"):
        data.load(f"bin:{path}")


# ------------------------------------------------------------------ 3. one process per folder
HOLD = ("import sys, time\nfrom lfsearch import paths\n"
        "with paths.folder_lock(sys.argv[1], 'run folder'):\n"
        "    print('held', flush=True)\n    time.sleep(120)\n")


def _holder(folder: Path) -> subprocess.Popen:
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)], env=cli_env(),
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.mark.parametrize("command", ["search", "compare"])
def test_a_second_process_on_a_locked_folder_gets_one_line_naming_the_holder(tmp_path, command):
    out = tmp_path / "out"
    holder = _holder(out)
    try:
        argv = (["search", "cosface", "--epochs", "1", "--out", str(out)] if command == "search"
                else ["compare", "--spaces", "softmax", "--seeds", "1", "--epochs", "1",
                      "--out", str(out)])
        proc = start(*argv, *CPU, "--quiet")
        _, err = proc.communicate(timeout=120)
    finally:
        holder.kill()
        holder.wait()
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, err
    assert f"is in use by process {holder.pid}" in lines[0]
    assert [p.name for p in out.iterdir()] == [paths.LOCK_NAME]  # nothing written


def test_two_searches_started_at_once_on_one_out_leave_one_consistent_run(tmp_path):
    out = tmp_path / "race"
    procs = [start("search", "cosface", "--epochs", str(e), *CPU, "--out", str(out), "--quiet")
             for e in (1, 2)]
    results = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], results
    loser = next(err for p, (_, err) in zip(procs, results) if p.returncode == 2)
    assert "is in use by process" in loser or "already exists" in loser, loser
    winner = 1 + [p.returncode for p in procs].index(0)
    import json
    results_json = json.loads((out / "results.json").read_text())
    assert f"epochs = {winner}" in (out / "config.toml").read_text()
    assert len(results_json["chosen_params"]) == winner  # config and results of one run


def test_the_lock_is_reentrant_in_one_process_and_released_after(tmp_path):
    with paths.folder_lock(tmp_path, "run folder") as lock:
        with paths.folder_lock(tmp_path, "run folder"):
            pass
        assert lock.read_text().strip() == str(os.getpid())
    holder = _holder(tmp_path)  # another process can take it now
    holder.kill()
    holder.wait()


# ------------------------------------------------------------------ 4. outputs over inputs
@pytest.mark.parametrize("name", ["results.json", "checkpoint.pt", "config.toml"])
def test_evaluate_never_writes_over_the_runs_own_files(run_copy, capsys, name):
    before = snapshot(run_copy)
    refused(["evaluate", run_copy, "--benchmark", "digits", *CPU, "--out", run_copy / name],
            capsys, f"--out {run_copy / name} is a file of run folder")
    assert snapshot(run_copy) == before


def test_evaluate_replaces_an_existing_out_only_with_force(run1, tmp_path, capsys):
    out = tmp_path / "r.json"
    out.write_text("mine")
    refused(["evaluate", run1, "--benchmark", "digits", *CPU, "--out", out], capsys,
            "already exists; pass --force")
    assert out.read_text() == "mine"
    assert cli_main(["evaluate", str(run1), "--benchmark", "digits", *CPU, "--out", str(out),
                     "--force"]) == 0
    assert '"benchmarks"' in out.read_text()


def _lfw(tmp_path: Path) -> Path:
    lfw = tmp_path / "lfw"
    for person in ("s1", "s2", "s3"):
        (lfw / person).mkdir(parents=True)
        for k in (1, 2, 3):
            (lfw / person / f"{person}_{k:04d}.jpg").write_bytes(
                (ORL_SMALL / person / f"{k}.jpg").read_bytes())
    return lfw


PAIRS = "s1 1 2\ns1 1 s2 2\ns2 1 2\ns2 1 s1 2\ns1 1 3\ns2 3 s3 2\ns3 1 2\ns3 1 s1 3\n" \
        "s2 2 3\ns3 3 s2 1\n"


def test_data_tools_never_write_over_an_input(tmp_path, capsys):
    assert cli_main(["data", "pack", str(ORL_SMALL), "--out", str(tmp_path / "f")]) == 0
    rec = tmp_path / "f.rec"
    (tmp_path / "pairs.txt").write_text(PAIRS)
    lfw = _lfw(tmp_path)
    before = snapshot(tmp_path)
    for sheet in (rec, tmp_path / "f.idx", tmp_path / "property"):
        refused(["data", "show", rec, "--sheet", sheet, "--force"], capsys,
                f"--sheet {sheet} is ")
    refused(["data", "bin", tmp_path / "pairs.txt", "--root", lfw, "--out",
             tmp_path / "pairs.txt", "--force"], capsys, "is the pairs file")
    refused(["data", "bin", tmp_path / "pairs.txt", "--root", lfw, "--out",
             lfw / "s1" / "s1_0001.jpg", "--force"], capsys, "is an image the pairs file names")
    assert snapshot(tmp_path) == before


def test_data_tools_replace_an_existing_output_only_with_force(tmp_path, capsys):
    prefix = tmp_path / "f"
    assert cli_main(["data", "pack", str(ORL_SMALL), "--out", str(prefix)]) == 0
    before = snapshot(tmp_path)
    refused(["data", "pack", ORL_SMALL, "--out", prefix], capsys, f"{prefix}.rec already exists")
    # another prefix in the same folder would rewrite the shared property file
    refused(["data", "pack", ORL_SMALL, "--out", tmp_path / "g"], capsys,
            f"{tmp_path / 'property'} already exists; pass --force")
    (tmp_path / "pairs.txt").write_text(PAIRS)
    (tmp_path / "v.bin").write_bytes(b"old")
    (tmp_path / "s.png").write_bytes(b"old")
    before = snapshot(tmp_path)
    refused(["data", "bin", tmp_path / "pairs.txt", "--root", _lfw(tmp_path), "--out",
             tmp_path / "v.bin"], capsys, "v.bin already exists; pass --force")
    refused(["data", "show", f"{prefix}.rec", "--sheet", tmp_path / "s.png"], capsys,
            "s.png already exists")
    assert {k: v for k, v in snapshot(tmp_path).items() if not k.startswith("lfw")} == before
    assert cli_main(["data", "pack", str(ORL_SMALL), "--out", str(prefix), "--force"]) == 0
    assert cli_main(["data", "show", f"{prefix}.rec", "--sheet", str(tmp_path / "s.png"),
                     "--force"]) == 0
    assert Image.open(tmp_path / "s.png").format == "PNG"


# ------------------------------------------------------------------ 5. evaluate's overlap check
def test_evaluate_refuses_a_benchmark_holding_the_images_the_model_trained_on(run1, tmp_path,
                                                                             capsys):
    train = data.load("digits", seed=0).train.images[:20].numpy()  # the run's seed is 0
    blobs = [png(a[0]) for a in train]
    path = write_bin(tmp_path / "copy.bin", blobs, [i % 2 == 0 for i in range(10)])
    refused(["evaluate", run1, "--benchmark", f"bin:{path}?channels=1", *CPU], capsys,
            "shares 20 of its images with the training split")
    # the same benchmark drawn with another seed: its test split holds validation images
    refused(["evaluate", run1, "--benchmark", "digits", "--seed", "3", *CPU], capsys,
            "shares", "with the val split")
    assert cli_main(["evaluate", str(run1), "--benchmark", "digits", *CPU]) == 0


@pytest.mark.parametrize("stream, words", [
    ("no", "shares"), ("yes", "reads the run's streamed training data")])
def test_evaluate_refuses_the_training_folder_drawn_with_another_seed(tmp_path, capsys, stream,
                                                                       words):
    spec = f"folder:{_faces(tmp_path / 'faces', {})}?stream={stream}&workers=0"
    out = tmp_path / "run"
    assert cli_main(["search", "cosface", "--benchmark", spec, "--epochs", "1", *CPU, "--out",
                     str(out), "--quiet"]) == 0
    refused(["evaluate", out, "--benchmark", spec, "--seed", "4", *CPU], capsys, words)
    assert cli_main(["evaluate", str(out), "--benchmark", spec, *CPU]) == 0  # the run's seed


# ------------------------------------------------------------------ 6. images
def test_a_16_bit_png_is_scaled_to_8_bits():
    ramp = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).astype(np.uint16)
    blob = png(ramp)  # uint16: Pillow writes a 16-bit grey PNG
    assert Image.open(io.BytesIO(blob)).mode.startswith("I")
    got = decode_one(blob, "ramp", size=(8, 8), crop=None, channels=1)[0]
    assert np.array_equal(got, np.rint(ramp / 257).astype(np.uint8))
    assert got.max() == 245 and (got == 255).mean() == 0  # not white


def _faces(root: Path, sizes: dict[tuple[int, int], int]) -> Path:
    """6 identities of 3 grey images; `sizes` {(h, w): how many}, the rest 16x16."""
    wanted = [s for s, n in sizes.items() for _ in range(n)]
    k = 0
    for person in range(6):
        (root / f"p{person}").mkdir(parents=True)
        for j in range(3):
            h, w = wanted[k] if k < len(wanted) else (16, 16)
            k += 1
            Image.fromarray(np.full((h, w), 10 * person + j, np.uint8)).save(
                root / f"p{person}" / f"{j}.png")
    return root


def test_streamed_and_in_memory_splits_take_one_size(tmp_path):
    root = _faces(tmp_path / "faces", {(12, 12): 1})
    sizes = {s: data.load(f"folder:{root}?stream={s}&workers=0").image_size
             for s in ("yes", "no")}
    assert sizes["yes"] == sizes["no"] == (112, 112)  # mixed sizes: the documented default
    even = _faces(tmp_path / "even", {})
    assert {data.load(f"folder:{even}?stream={s}&workers=0").image_size
            for s in ("yes", "no")} == {(16, 16)}


def test_a_crop_larger_than_the_images_is_refused(tmp_path, capsys):
    root = _faces(tmp_path / "faces", {})
    with pytest.raises(ValueError, match=r"option crop=100x100 is larger than an image of 16x16"):
        data.load(f"folder:{root}?crop=100x100")
    with pytest.raises(ValueError, match=r"crop=20x8 is larger than image ramp \(8x8"):
        decode_one(png(np.zeros((8, 8), np.uint8)), "ramp", size=(8, 8), crop=(20, 8),
                   channels=1)


def test_a_repeated_spec_option_is_refused(tmp_path, capsys):
    root = _faces(tmp_path / "faces", {})
    refused(["search", "cosface", "--benchmark", f"folder:{root}?size=8&size=16", *CPU,
             "--out", tmp_path / "r"], capsys, "option 'size' is given twice")
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------ 7. RecordIO and .bin content
def write_records(folder: Path, payloads: list[bytes], keys=None, offsets=None) -> Path:
    """train.rec of `payloads` and train.idx (keys 0.., their offsets unless given)."""
    rec, starts = b"", []
    for payload in payloads:
        starts.append(len(rec))
        rec += hand_record(payload)
    keys = list(range(len(payloads))) if keys is None else keys
    offsets = starts if offsets is None else offsets
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.rec").write_bytes(rec)
    (folder / "train.idx").write_text("".join(f"{k}\t{o}\n" for k, o in zip(keys, offsets)))
    return folder / "train.rec"


def _image(value: int) -> bytes:
    return png(np.full((6, 5), value, np.uint8))


def _plain_rec(folder: Path, labels: list[float]) -> Path:
    """A plain .rec: every record an image whose identity is its header label."""
    return write_records(folder, [ir(0, lab, k) + _image(10 * k) for k, lab in enumerate(labels)])


@pytest.mark.parametrize("labels, words", [
    ([0, 1, float("nan"), 1], "record 2's identity label is nan"),
    ([0, 1, 1.5, 1], "record 2's identity label is 1.5"),
    ([0, 1, float("inf"), 1], "record 2's identity label is inf"),
    ([0, 1, 3e9, 1], "record 2's identity label is 3000000000.0"),
    ([0, -1, 1, 1], "record 1's identity label is -1.0"),
])
def test_bad_image_labels_are_refused_naming_the_record(tmp_path, capsys, labels, words):
    rec = _plain_rec(tmp_path, labels)
    refused(["data", "show", rec], capsys, words, "allowed: a whole number in")


@pytest.mark.parametrize("head, words", [
    ((float("inf"), 6.0), "record 0's first label"),
    ((3e9, 3e9 + 2), "record 0's first label (first identity record) is 3000000000.0"),
    ((2.5, 4.0), "record 0's first label"),
    ((3.0, float("nan")), "record 0's second label"),
])
def test_bad_range_labels_of_record_0_are_refused(tmp_path, capsys, head, words):
    payloads = [ir(2, 0.0, 0, head), ir(0, 0.0, 1) + _image(1), ir(0, 1.0, 2) + _image(2),
                ir(2, 0.0, 3, (1.0, 2.0)), ir(2, 0.0, 4, (2.0, 3.0))]
    rec = write_records(tmp_path, payloads)
    began = time.perf_counter()
    refused(["data", "show", rec], capsys, words)
    assert time.perf_counter() - began < 10  # no 22 GiB range is allocated first


def test_a_fractional_identity_range_is_refused(tmp_path, capsys):
    payloads = [ir(2, 0.0, 0, (3.0, 5.0)), ir(0, 0.0, 1) + _image(1), ir(0, 1.0, 2) + _image(2),
                ir(2, 0.0, 3, (1.0, 2.5)), ir(2, 0.0, 4, (2.5, 3.0))]
    refused(["data", "show", write_records(tmp_path, payloads)], capsys,
            "record 3's end label is 2.5")


@pytest.mark.parametrize("how, words", [
    ("swapped", "train.idx line 3: record 2 at offset"),
    ("duplicated", "train.idx line 3: record 2 at offset"),
    ("repeated key", "train.idx line 3: record 1 is listed again (first on line 2)"),
    ("past the end", "train.idx line 4: offset 99999 of record 3 is past the end"),
])
def test_an_index_with_swapped_or_duplicated_offsets_is_refused(tmp_path, capsys, how, words):
    rec = _plain_rec(tmp_path, [0, 1, 0, 1])
    lines = (tmp_path / "train.idx").read_text().splitlines()
    offsets = [int(line.split()[1]) for line in lines]
    keys = [0, 1, 2, 3]
    if how == "swapped":
        offsets[1], offsets[2] = offsets[2], offsets[1]
    elif how == "duplicated":
        offsets[2] = offsets[1]
    elif how == "repeated key":
        keys[2] = 1
    else:
        offsets[3] = 99999
    (tmp_path / "train.idx").write_text("".join(f"{k}\t{o}\n" for k, o in zip(keys, offsets)))
    refused(["data", "show", rec], capsys, words)


@pytest.mark.parametrize("flag, words", [
    (2, "issame[3] is 2"), (-1, "issame[3] is -1"), ("False", "issame[3] is 'False'"),
    (0.5, "issame[3] is 0.5"),
])
def test_bin_issame_values_other_than_true_false_are_refused(tmp_path, flag, words):
    blobs, same = grey_pairs(10)
    same[3] = flag
    path = write_bin(tmp_path / "s.bin", blobs, same)
    with pytest.raises(ValueError, match=re_escape(words) + ".*allowed values: True, False"):
        data.load(f"bin:{path}")
    same[3] = 1  # 0/1 integers are read as bools
    assert data.load(f"bin:{write_bin(path, blobs, same)}").test.same[3].item() is True


@pytest.mark.parametrize("pairs, same, words", [
    (2, [True, False], "2 pairs (1 same); 10-fold verification needs at least 10"),
    (10, [True] * 10, "10 pairs (10 same)"),
])
def test_a_degenerate_bin_is_refused_not_reported(tmp_path, pairs, same, words):
    blobs, _ = grey_pairs(pairs)
    with pytest.raises(ValueError, match=re_escape(words)):
        data.load(f"bin:{write_bin(tmp_path / 'd.bin', blobs, same)}")


def re_escape(text: str) -> str:
    import re

    return re.escape(text)


def _copy_orl(tmp_path: Path) -> Path:
    return Path(shutil.copytree(ORL_SMALL, tmp_path / "faces"))


@pytest.mark.parametrize("damage", ["empty", "corrupt", "truncated"])
def test_data_pack_refuses_a_bad_image_and_writes_nothing(tmp_path, capsys, damage):
    faces = _copy_orl(tmp_path)
    bad = faces / "s3" / "4.jpg"
    raw = bad.read_bytes()
    bad.write_bytes({"empty": b"", "corrupt": b"\xff\xd8\xff" + b"\x00" * 200,
                     "truncated": raw[: len(raw) // 2]}[damage])
    (tmp_path / "out").mkdir()
    refused(["data", "pack", faces, "--out", tmp_path / "out" / "f"], capsys,
            f"cannot read image {bad}")
    assert list((tmp_path / "out").iterdir()) == []


def test_data_bin_refuses_a_bad_image_and_a_self_pair(tmp_path, capsys):
    lfw = _lfw(tmp_path)
    (tmp_path / "pairs.txt").write_text(PAIRS)
    bad = lfw / "s2" / "s2_0003.jpg"
    bad.write_bytes(bad.read_bytes()[:300])
    refused(["data", "bin", tmp_path / "pairs.txt", "--root", lfw, "--out", tmp_path / "v.bin"],
            capsys, f"cannot read image {bad}")
    (tmp_path / "pairs.txt").write_text("s1 1 2\ns1 2 2\n")
    refused(["data", "bin", tmp_path / "pairs.txt", "--root", lfw, "--out", tmp_path / "v.bin"],
            capsys, "pairs.txt line 2: 's1 2 2' pairs image 2 of s1 with itself")
    assert not (tmp_path / "v.bin").exists() and not list(tmp_path.glob("*.tmp*"))


def test_a_symlinked_identity_folder_is_refused(tmp_path, capsys):
    faces = _copy_orl(tmp_path)
    os.symlink(faces / "s1", faces / "s9")
    (tmp_path / "out").mkdir()
    refused(["data", "pack", faces, "--out", tmp_path / "out" / "f"], capsys,
            f"{faces / 's9'} and {faces / 's1'} are the same folder")
    assert list((tmp_path / "out").iterdir()) == []
    (faces / "s9").unlink()  # a link to a folder of its own is fine
    os.symlink(ORL_SMALL / "s1", faces / "s9")
    assert cli_main(["data", "pack", str(faces), "--out", str(tmp_path / "out" / "f")]) == 0
