"""A streamed training split under the population paths: packed training decodes each batch
once for all M candidates (sequential decodes it M times), with the in-memory results; under
torchrun each rank decodes only the batches of its own candidates. Real faces of
tests/data/orl_small (8 ORL people x 10 JPEGs, resized to 28x23)."""

from __future__ import annotations

import collections
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lfsearch import data, losses, models
from lfsearch.data import stream
from lfsearch.search import candidate as candidate_mod
from lfsearch.search import packed as packed_mod
from lfsearch.search import sequential as sequential_mod

TESTS = Path(__file__).resolve().parent
ORL_SMALL = TESTS / "data" / "orl_small"
OPTS = "val=0.25&test=0.25&pairs=200&size=28x23"
PARAMS = [{"m": 0.05}, {"m": 0.15}, {"m": 0.25}, {"m": 0.35}]  # M = 4 cosface candidates


@pytest.fixture
def decodes(monkeypatch):
    """Counts the images decoded by streamed splits (workers=0: in this process), by file."""
    seen: collections.Counter = collections.Counter()
    real = stream.decode_one

    def counting(blob, name, **kw):
        seen[name] += 1
        return real(blob, name, **kw)

    monkeypatch.setattr(stream, "decode_one", counting)
    return seen


def trainee(num_classes: int) -> candidate_mod.Trainee:
    torch.manual_seed(0)
    model = models.build("digits_net", embedding_size=16, in_channels=1, image_size=(28, 23))
    loss = losses.build("cosface", embedding_size=16, num_classes=num_classes, s=16.0)
    opt = candidate_mod.make_optimizer("sgd", list(model.parameters()) + list(loss.parameters()),
                                    lr=0.05, momentum=0.9, weight_decay=5e-4)
    return candidate_mod.Trainee(model, loss, opt)


def epoch_of(run, bench, train):
    t = trainee(bench.num_classes)
    validations = [candidate_mod.Validation("val", bench.val, "verification_accuracy")]
    return run(t, t.state(), PARAMS, train=train, validations=validations, batch_size=8,
               lr=0.05, data_seed=3, candidate_seeds=[1, 2, 3, 4], augment="flip")


def test_packed_training_decodes_each_batch_once_for_all_candidates(decodes):
    memory = data.load(f"folder:{ORL_SMALL}?{OPTS}&stream=no", seed=0)
    streamed = data.load(f"folder:{ORL_SMALL}?{OPTS}&stream=yes&workers=0", seed=0)
    n = len(streamed.train)
    assert n == 40 and isinstance(streamed.train, data.StreamedImages)
    used = n - n % 8  # drop_last: the short batch is not drawn (40 = 5 x 8: none here)

    packed = epoch_of(packed_mod.run_epoch_packed, streamed, streamed.train)
    assert sum(decodes.values()) == used  # one decode per image per epoch, not M
    assert max(decodes.values()) == 1 and len(decodes) == used

    # sequential: the M candidates replay the epoch's decoded batches (issue 20, item 5)
    decodes.clear()
    fresh = data.load(f"folder:{ORL_SMALL}?{OPTS}&stream=yes&workers=0", seed=0)
    sequential = epoch_of(sequential_mod.run_epoch_sequential, fresh, fresh.train)
    assert sum(decodes.values()) == used and set(decodes.values()) == {1}
    assert fresh.train.decodes == used // 8  # batches decoded: one epoch's, not M

    # without room for the epoch's batches each candidate decodes its own epoch
    decodes.clear()
    uncached = data.load(f"folder:{ORL_SMALL}?{OPTS}&stream=yes&workers=0", seed=0)
    uncached.train.cache_bytes = 0
    again = epoch_of(sequential_mod.run_epoch_sequential, uncached, uncached.train)
    assert sum(decodes.values()) == len(PARAMS) * used
    assert [r.reward for r in again] == [r.reward for r in sequential]

    decodes.clear()
    in_memory = epoch_of(packed_mod.run_epoch_packed, memory, memory.train)
    assert sum(decodes.values()) == 0
    # the streamed batches are the in-memory ones, so the packed epochs agree exactly
    assert [r.train_loss for r in packed] == [r.train_loss for r in in_memory]
    assert [r.reward for r in packed] == [r.reward for r in in_memory]
    assert len({r.train_loss for r in packed}) == len(PARAMS)  # the candidates did differ
    # and packed agrees with one candidate after another (float sums in another order)
    assert [r.train_loss for r in packed] == pytest.approx([r.train_loss for r in sequential],
                                                           rel=1e-4)


# --- torchrun: each rank streams its own candidates' batches ---------------------------------

RANK_RUNNER = """
import atexit, collections, json, os, sys
from lfsearch.data import stream
seen = collections.Counter()
real = stream.decode_one
def counting(blob, name, **kw):
    seen[name] += 1
    return real(blob, name, **kw)
stream.decode_one = counting
atexit.register(lambda: open(os.path.join(sys.argv[1], "decodes.%s.json" % os.environ["RANK"]),
                             "w").write(json.dumps(seen)))
from lfsearch.cli import main
sys.exit(main(sys.argv[2:]))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_each_torchrun_rank_streams_the_batches_of_its_own_candidates(tmp_path):
    """2 gloo ranks, 3 candidates, 2 epochs on a streamed folder: rank 0 trains candidates 0
    and 2, rank 1 candidate 1 (distributed.assigned), so rank 0 decodes 2 x 2 x 40 training
    images and rank 1 2 x 1 x 40; the run equals one process training in memory."""
    from lfsearch.search import search

    args = ["search_softmax", "--epochs", "2", "--candidates", "3", "--seed", "5",
            "--device", "cpu"]
    runner = tmp_path / "rank_runner.py"
    runner.write_text(RANK_RUNNER)
    bench = f"folder:{ORL_SMALL}?{OPTS}&stream=yes&workers=0"
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(TESTS.parent))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2",
           "--master-addr=127.0.0.1", f"--master-port={free_port()}", str(runner),
           str(tmp_path), "search", *args, "--benchmark", bench, "--out",
           str(tmp_path / "run"), "--quiet", "--dist-timeout", "30"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    per_rank = [json.loads((tmp_path / f"decodes.{r}.json").read_text()) for r in (0, 1)]
    train = data.load(f"folder:{ORL_SMALL}?{OPTS}&stream=yes&workers=0", seed=5).train
    names = {train.source.name(int(i)) for i in train.members}
    assert len(names) == 40
    for rank, mine in ((0, 2), (1, 1)):
        assert set(per_rank[rank]) == names, rank  # training images only, every one
        assert set(per_rank[rank].values()) == {2 * mine}, rank  # 2 epochs x own candidates

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each torchrun rank
    try:
        search("search_softmax", benchmark=f"folder:{ORL_SMALL}?{OPTS}&stream=no", epochs=2,
               candidates=3, seed=5, device="cpu", out=tmp_path / "memory")
    finally:
        torch.set_num_threads(threads)
    assert ((tmp_path / "run" / "epochs.csv").read_text()
            == (tmp_path / "memory" / "epochs.csv").read_text())
    got, want = (json.loads((tmp_path / run / "results.json").read_text())
                 for run in ("run", "memory"))
    assert got["test"] == want["test"]
