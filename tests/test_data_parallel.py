"""[training] parallel = "data" (lfsearch/search/data_parallel.py): under torchrun every rank
trains every candidate on its slice of each batch, with the Partial FC head sharded over the
ranks. On 2 gloo ranks a training epoch's losses and its gathered full state equal one process
with the full head at sample rate 1; `lfsearch search` runs for several margin members and
leaves a checkpoint with the whole head, which one process resumes; every member the sampled
head takes is taken in data mode (the sharded head supports every head member)."""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from test_distributed import env, free_port  # the torchrun tests' launcher helpers
from torch import nn

from lfsearch import data, losses
from lfsearch.search import config as config_mod
from lfsearch.search import search
from lfsearch.search.candidate import Trainee, make_optimizer, train_one_epoch
from lfsearch.search.data_parallel import DataParallelTrainee

C, D = 10, 8  # classes: shards of 5 and 5
REPO = Path(__file__).resolve().parents[1]


# --- one epoch on 2 ranks = one process with the full head --------------------------------
def _trainee(name: str, partial_fc: float | None, **params) -> Trainee:
    """A backbone without BatchNorm (its statistics are per slice) and a head, seeded."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, D))
    loss = losses.build(name, embedding_size=D, num_classes=C, **(params or {"s": 16.0}),
                        **({"partial_fc": partial_fc} if partial_fc is not None else {}))
    optimizer = make_optimizer("sgd", list(model.parameters()) + list(loss.parameters()),
                               lr=0.1, momentum=0.9, weight_decay=5e-4)
    return Trainee(model, loss, optimizer)


def _close(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return a.shape == b.shape and torch.allclose(a.float(), b.float(), rtol=1e-5, atol=1e-5)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    return a == b


def equal_worker(rank: int, world: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        g = torch.Generator().manual_seed(7)
        train = data.LabelledImages(torch.randn(48, 1, 8, 8, generator=g),
                                    torch.randint(0, C, (48,), generator=g))
        # sharded at rate 1 (a plain target; a batch statistic; a sharded bias and its
        # momentum; a learned α every rank holds whole), and a replicated head
        for name, partial_fc, params in [
                ("arcface", 1.0, {}), ("curricularface", 1.0, {}), ("softmax", 1.0, {"bias": True}),
                ("l2_softmax", 1.0, {"learn_alpha": True}), ("cosface", None, {})]:
            full = _trainee(name, partial_fc, **params)
            reference = copy.deepcopy(full)
            start = full.state()
            dp = DataParallelTrainee(full, lambda p: make_optimizer(
                "sgd", p, lr=0.1, momentum=0.9, weight_decay=5e-4))
            dp.load(start)
            want_steps, got_steps = [], []
            for epoch in range(2):  # the second starts with momentum in the optimiser
                want = train_one_epoch(reference, train, batch_size=16, lr=0.1,
                                       generator=torch.Generator().manual_seed(epoch),
                                       step_losses=want_steps)
                got = train_one_epoch(dp, train, batch_size=16, lr=0.1,
                                      generator=torch.Generator().manual_seed(epoch),
                                      step_losses=got_steps)
                assert got[1] == want[1] == "ok" and math.isclose(got[0], want[0], rel_tol=1e-5)
            assert torch.allclose(torch.tensor(got_steps), torch.tensor(want_steps),
                                  rtol=1e-5, atol=1e-6), (name, got_steps, want_steps)
            state = dp.state()  # gathered: the full head and its momentum, on every rank
            assert _close(state, reference.state()), name
            if partial_fc is not None:
                assert state["loss"]["inner.weight"].shape == (C, D)
                assert dp.loss.inner.weight.shape == (C // world, D)  # this rank's shard
            # and back: a full state loads as this rank's shard, a step later still equal
            dp.load(state)
            assert _close(dp.state(), state), name
    finally:
        dist.destroy_process_group()


def test_two_ranks_train_an_epoch_as_one_process_with_the_full_head():
    mp.spawn(equal_worker, args=(2, free_port()), nprocs=2, join=True)


# --- config --------------------------------------------------------------------------------
def _config(**training) -> dict:
    return {"loss": {"name": "arcface", "partial_fc": 0.5},
            "controller": {"kind": "fixed", "candidates": 1},
            "training": {"parallel": "data", **training}}


@pytest.mark.parametrize("name, options", [("softmax", {}), ("am_lfs", {}), ("adacos", {}),
                                           ("sphereface", {}), ("modulated", {"bins": 2})])
def test_every_member_of_the_sampled_head_shards_in_data_mode(name, options):
    raw = _config()
    raw["loss"].update(name=name, **options)
    config_mod.validate(raw, "space.toml")  # the sharded head takes every head member
    raw["loss"] = {"name": "center", "partial_fc": 0.5}  # not a class head: refused
    with pytest.raises(ValueError, match="class-head member") as info:
        config_mod.validate(raw, "space.toml")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("training, field", [
    ({"parallel": "model"}, "training.parallel must be one of candidates, data"),
    ({"packing": "packed"}, "training.packing must be auto or sequential"),
    ({"amp": "fp16"}, "training.amp must be auto, off or bf16")])
def test_parallel_options_are_checked(training, field):
    with pytest.raises(ValueError, match=field):
        config_mod.validate(_config(**training), "space.toml")
    assert config_mod.validate({"loss": {"name": "arcface"}, "controller": {
        "kind": "fixed", "candidates": 1}})["training"]["parallel"] == "candidates"


# --- lfsearch search on 2 gloo ranks ---------------------------------------------------------
MEMBERS = {"normface": ("s", 8.0, 16.0, 12.0), "cosface": ("m", 0.1, 0.4, 0.3),
           "arcface": ("m", 0.1, 0.5, 0.3), "modulated": ("a", 1.0, 3.0, 1.5),
           "curricularface": ("m", 0.1, 0.5, 0.3),
           "modulated_bins": ("a_0", 1.0, 3.0, 1.5)}  # p over both ranks' classes
LOSS = {"modulated_bins": ("modulated", "bins = 2")}  # run name: (loss, more [loss] lines)
SPACE = """[loss]
name = "{name}"
partial_fc = 0.5
{scale}
{more}
[loss.params.{param}]
init = {init}
low = {low}
high = {high}

[controller]
kind = "random"
candidates = 2

[training]
benchmark = "digits-closed"
embedding_size = 16
epochs = {epochs}
batch_size = 64
lr = 0.05
parallel = "data"
"""
EPOCHS = {"arcface": 2}  # its epoch-0 checkpoint is resumed in one process below
# every other head member, at its defaults with a fixed controller
FIXED_MEMBERS = ("softmax", "weighted_softmax", "lsoftmax", "sphereface", "l2_softmax", "combined_margin", "am_lfs",
                 "adaface", "magface", "elasticface_arc", "elasticface_cos",
                 "elasticface_arc_plus", "elasticface_cos_plus", "mv_softmax",
                 "subcenter_arcface", "adacos")
FIXED_SPACE = """[loss]
name = "{name}"
partial_fc = 0.5

[controller]
kind = "fixed"
candidates = 1

[training]
benchmark = "digits-closed"
embedding_size = 16
epochs = 1
batch_size = 64
lr = 0.05
parallel = "data"
"""


@pytest.fixture(scope="module")
def member_runs(tmp_path_factory) -> dict[str, Path]:
    """One torchrun job of 2 CPU ranks running `lfsearch search` once per member (the CLI's
    main, in one process group: a search joins the caller's group when there is one)."""
    root = tmp_path_factory.mktemp("dp")
    calls = []
    for name, (param, low, high, init) in MEMBERS.items():
        space = root / f"{name}.toml"
        loss, more = LOSS.get(name, (name, ""))
        space.write_text(SPACE.format(name=loss, more=more, param=param, low=low, high=high,
                                      init=init,
                                      epochs=EPOCHS.get(name, 1),
                                      scale="" if param == "s" else "s = 16.0"))
        calls.append(["search", str(space), "--device", "cpu", "--out", str(root / name),
                      "--quiet", "--dist-timeout", "20"])
    for name in FIXED_MEMBERS:
        space = root / f"{name}.toml"
        space.write_text(FIXED_SPACE.format(name=name))
        calls.append(["search", str(space), "--device", "cpu", "--out", str(root / name),
                      "--quiet", "--dist-timeout", "20"])
    script = root / "job.py"
    script.write_text(  # one process group for the job, which every search then uses
        "import torch.distributed as dist\nfrom lfsearch.cli import main\n"
        "dist.init_process_group('gloo')\n"
        f"codes = [main(argv) for argv in {calls!r}]\n"
        "dist.destroy_process_group()\nraise SystemExit(max(codes))\n")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2",
           "--master-addr=127.0.0.1", f"--master-port={free_port()}", str(script)]
    proc = subprocess.run(cmd, check=False, env=env(PYTHONPATH=str(REPO)),
                          capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {name: root / name for name in (*MEMBERS, *FIXED_MEMBERS)}


@pytest.mark.parametrize("name", [*MEMBERS, *FIXED_MEMBERS])
def test_a_two_rank_data_parallel_search_keeps_the_whole_head(member_runs, name):
    run = member_runs[name]
    results = json.loads((run / "results.json").read_text())
    assert math.isfinite(results["test"][results["test_metric"]])
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["distributed"]["world_size"] == 2 and manifest["parallel"] == "data"
    state = torch.load(run / "checkpoint.pt", weights_only=True)["state"]
    rows = C * (3 if name == "subcenter_arcface" else 1)  # 3 sub-centres per class
    assert state["loss"]["inner.weight"].shape == (rows, 16)  # gathered from both ranks
    assert state["loss"]["_extra_state"]["step"] > 0
    momentum = state["optimizer"]["state"]
    assert any(v["momentum_buffer"].shape == (rows, 16) for v in momentum.values())


def test_one_process_resumes_the_two_rank_checkpoint(member_runs, tmp_path):
    run = tmp_path / "arcface"
    shutil.copytree(member_runs["arcface"], run)
    # as if the 2-rank run had been stopped in its last epoch: its epoch-0 checkpoint
    os.replace(run / "checkpoint.prev.pt", run / "checkpoint.pt")
    (run / "results.json").unlink()
    out = search(run / "config.toml", out=run, resume=True, device="cpu")
    assert math.isfinite(out["test"][out["test_metric"]])
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["state"]["loss"]["inner.weight"].shape == (C, 16)
