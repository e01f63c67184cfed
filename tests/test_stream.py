"""Streamed training splits (DataLoader workers decode batch by batch) against the in-memory
path, on the real face images of tests/data/orl_small (8 ORL people x 10 JPEGs, 46x56)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lfsearch import data

ORL_SMALL = Path(__file__).resolve().parent / "data" / "orl_small"


def spec(kind="folder", root=ORL_SMALL, **options) -> str:
    base = {"val": 0.25, "test": 0.25, **({} if kind.endswith("-closed") else {"pairs": 100})}
    query = "&".join(f"{k}={v}" for k, v in {**base, **options}.items())
    return f"{kind}:{root}?{query}"


def epoch(train, seed, augment="crop=2,flip", batch_size=8):
    gen = torch.Generator().manual_seed(seed)
    return list(data.batches(train, batch_size, generator=gen, augment=augment, drop_last=True))


def test_stream_option_picks_the_path_and_keeps_every_other_split_in_memory():
    memory = data.load(spec(stream="no"), seed=0)
    streamed = data.load(spec(stream="yes", workers=0), seed=0)
    auto = data.load(spec(), seed=0)  # 32 images of 46x56x1: far below 1 GiB
    assert isinstance(memory.train, data.LabelledImages) and memory.train.images.dtype == torch.uint8
    assert isinstance(auto.train, data.LabelledImages)
    assert isinstance(streamed.train, data.StreamedImages) and not hasattr(streamed.train, "images")
    assert len(streamed.train) == len(memory.train) == 40  # 4 of 8 people train, 10 images each
    assert torch.equal(streamed.train.labels, memory.train.labels)
    assert streamed.class_names == memory.class_names
    assert torch.equal(streamed.test.images, memory.test.images)
    assert torch.equal(streamed.val.pairs, memory.val.pairs)
    with pytest.raises(ValueError, match="stream='maybe'.*auto.*yes, no"):
        data.load(spec(stream="maybe"))
    with pytest.raises(ValueError, match="option 'stream' is not known for benchmark 'mnist'"):
        data.load("mnist:/x?stream=yes")


def test_stream_auto_streams_above_the_decoded_size_threshold(monkeypatch):
    """auto streams when N·C·H·W uint8 bytes exceed STREAM_ABOVE_BYTES (1 GiB)."""
    from lfsearch.data import stream

    assert stream.STREAM_ABOVE_BYTES == 2 ** 30
    casia = 494_414 * 3 * 112 * 112  # CASIA-WebFace at 112x112 RGB: 18.6e9 bytes
    assert stream.decoded_bytes(494_414, (112, 112), 3) == casia
    assert stream.resolve_stream("auto", 494_414, (112, 112), 3)
    assert not stream.resolve_stream("auto", 20_000, (112, 112), 3)  # 0.75 GB
    assert not stream.resolve_stream("no", 494_414, (112, 112), 3)
    train_bytes = 40 * 1 * 28 * 23  # 4 people x 10 images, resized to 28x23 grey
    monkeypatch.setattr(stream, "STREAM_ABOVE_BYTES", train_bytes - 1)
    assert isinstance(data.load(spec(size="28x23", workers=0), seed=0).train, data.StreamedImages)
    monkeypatch.setattr(stream, "STREAM_ABOVE_BYTES", train_bytes)
    assert isinstance(data.load(spec(size="28x23", workers=0), seed=0).train, data.LabelledImages)


def test_a_streamed_split_decodes_the_files_pixels():
    streamed = data.load(spec(stream="yes", workers=0), seed=0)
    train = streamed.train
    x = train.decoder()[torch.arange(len(train))]
    assert x.dtype == torch.uint8 and x.shape == (40, 1, 56, 46)
    first = train.source.path(int(train.members[0]))
    assert torch.equal(x[0, 0], torch.from_numpy(np.array(Image.open(first))))


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_streamed_batches_equal_the_in_memory_batches_for_any_number_of_workers(workers):
    memory = data.load(spec(stream="no"), seed=0).train
    streamed = data.load(spec(stream="yes", workers=workers, prefetch=1), seed=0).train
    for seed in (3, 4):  # two epochs: each order comes from its generator alone
        want, got = epoch(memory, seed), epoch(streamed, seed)
        assert len(got) == len(want) == 5
        for (x, y), (wx, wy) in zip(got, want):
            assert x.dtype == torch.float32 and torch.equal(x, wx) and torch.equal(y, wy)
    assert not torch.equal(epoch(streamed, 3)[0][1], epoch(streamed, 4)[0][1])


def test_folder_closed_streams_too():
    memory = data.load(spec("folder-closed", stream="no"), seed=1)
    streamed = data.load(spec("folder-closed", stream="yes", workers=1), seed=1)
    assert isinstance(streamed.train, data.StreamedImages) and streamed.num_classes == 8
    for (x, y), (wx, wy) in zip(epoch(streamed.train, 0), epoch(memory.train, 0)):
        assert torch.equal(x, wx) and torch.equal(y, wy)
    assert torch.equal(streamed.test.images, memory.test.images)


# --- searches: streamed folder and .rec against the in-memory path ----------------------------


def run_search(benchmark: str, out: Path) -> tuple[str, dict]:
    from lfsearch.search import search

    threads = torch.get_num_threads()
    try:
        results = search("search_softmax", benchmark=benchmark, epochs=2, candidates=2, seed=3,
                         device="cpu", threads=1, out=out)
    finally:
        torch.set_num_threads(threads)
    return (out / "epochs.csv").read_text(), results


def test_a_search_streams_a_folder_and_its_rec_with_the_in_memory_results(tmp_path):
    """The issue's done-when: the same images in memory, streamed from the folder by 2
    workers, and streamed from a .rec packed from it, give the same search, bit for bit."""
    data.pack.pack_folder(ORL_SMALL, tmp_path / "faces")
    opts = "val=0.25&test=0.25&pairs=200&size=28x23"
    runs = {
        "memory": f"folder:{ORL_SMALL}?{opts}&stream=no",
        "folder": f"folder:{ORL_SMALL}?{opts}&stream=yes&workers=2",
        "rec": f"rec:{tmp_path / 'faces.rec'}?{opts}&stream=yes&workers=1",
    }
    got = {name: run_search(spec_, tmp_path / name) for name, spec_ in runs.items()}
    epochs, results = got["memory"]
    assert len(epochs.splitlines()) == 1 + 2 * 2  # header + 2 epochs x 2 candidates
    for name in ("folder", "rec"):
        assert got[name][0] == epochs, name
        assert got[name][1]["test"] == results["test"], name
    assert 0.0 < results["test"]["verification_accuracy"] <= 1.0


@pytest.mark.slow
def test_a_streamed_run_killed_mid_epoch_resumes_to_the_same_results(tmp_path):
    """kill -9 during an epoch, then --resume: the streamed order depends only on (seed,
    epoch), so the resumed run repeats the whole run's epochs exactly."""
    import os
    import signal
    import subprocess
    import sys
    import time

    bench = f"folder:{ORL_SMALL}?val=0.25&test=0.25&pairs=200&size=28x23&stream=yes&workers=1"
    args = ["search_softmax", "--benchmark", bench, "--epochs", "4", "--candidates", "2",
            "--seed", "1", "--device", "cpu", "--threads", "1", "--quiet"]
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")

    def cli(extra):
        return subprocess.Popen([sys.executable, "-m", "lfsearch", "search", *args, *extra],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    whole = cli(["--out", str(tmp_path / "whole")])
    assert whole.wait(timeout=600) == 0, whole.stderr.read().decode()
    killed = cli(["--out", str(tmp_path / "killed")])
    checkpoint = tmp_path / "killed" / "checkpoint.pt"
    deadline = time.time() + 600
    while not checkpoint.exists() and time.time() < deadline and killed.poll() is None:
        time.sleep(0.02)
    assert killed.poll() is None, "the run ended before it could be killed"
    time.sleep(0.5)  # into the second epoch, workers streaming
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert not (tmp_path / "killed" / "results.json").exists()
    resumed = subprocess.Popen([sys.executable, "-m", "lfsearch", "search", "search_softmax",
                                "--out", str(tmp_path / "killed"), "--resume", "--quiet"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read().decode()
    for name in ("epochs.csv", "results.json"):
        assert (tmp_path / "killed" / name).read_text() == (tmp_path / "whole" / name).read_text()
