"""The search spread over ranks with torch.distributed (gloo on CPU): the same results as one
process, the state broadcast as one flat buffer, and a dead or silent rank ending the run with a
clear error (not a hang) that --resume then continues.

Exactness: every candidate's batches and seeds come from (seed, epoch, candidate index) and
its start state arrives bit for bit, so a rank computes exactly what one process computes --
given the same intra-op thread count (torchrun runs each rank with OMP_NUM_THREADS=1, so the
reference run here uses one thread too: CPU reductions split over threads round differently).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lfsearch.search import distributed as distributed_mod
from lfsearch.search import search

ARGS = ["search_softmax", "--epochs", "2", "--candidates", "3", "--seed", "5", "--device", "cpu"]
TIMEOUT = 10  # --dist-timeout for the subprocess runs, seconds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env(**extra: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items()
            if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    return {**keep, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **extra}


def torchrun(out: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2",
           "--master-addr=127.0.0.1", f"--master-port={free_port()}", "-m", "lfsearch", "search",
           *extra, "--out", str(out), "--quiet", "--dist-timeout", str(TIMEOUT)]
    return subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[int, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out + err


def same_state(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same_state(x, y) for x, y in zip(a, b))
    return a == b


def assert_same_run(run: Path, reference: Path) -> None:
    for name in ("epochs.csv", "controller.csv", "results.json", "discovered.toml"):
        assert (run / name).read_text() == (reference / name).read_text(), name
    mine = torch.load(run / "checkpoint.pt", weights_only=False)
    ref = torch.load(reference / "checkpoint.pt", weights_only=False)
    assert mine["epoch"] == ref["epoch"] == 1
    assert same_state(mine["state"], ref["state"])  # model, loss head and optimiser, bit for bit
    assert same_state(mine["controller"], ref["controller"])


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The same search in this one process, on one intra-op thread like every torchrun rank."""
    out = tmp_path_factory.mktemp("single") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        search("search_softmax", epochs=2, candidates=3, seed=5, device="cpu", out=out)
    finally:
        torch.set_num_threads(threads)
    return out


def test_candidates_are_dealt_round_robin():
    assert [distributed_mod.assigned(3, r, 2) for r in range(2)] == [[0, 2], [1]]
    assert [distributed_mod.assigned(2, r, 4) for r in range(4)] == [[0], [1], [], []]


def test_a_state_travels_as_one_buffer_with_exact_dtypes_and_shapes():
    state = {
        "model": collections.OrderedDict(w=torch.randn(3, 4), bn=torch.tensor(7),
                                         mask=torch.tensor([True, False]),
                                         half=torch.randn(5, dtype=torch.bfloat16),
                                         empty=torch.zeros(0, 2), t=torch.randn(4, 3).t()),
        "loss": {"_extra_state": {"values": {"a": 2.5}, "step": 3}},
        "optimizer": {"state": {0: {"step": torch.tensor(4.0),
                                    "exp_avg": torch.randn(2, 2, dtype=torch.float64)}},
                      "param_groups": [{"lr": 0.1, "params": [0]}]},
        "tuple": (torch.arange(3), "x"),
    }
    skeleton, tensors = distributed_mod.flatten_state(state)
    buffer = distributed_mod.pack(tensors, skeleton[0], torch.device("cpu"))
    assert buffer.dtype == torch.uint8 and buffer.dim() == 1 and buffer.numel() == skeleton[0]
    assert skeleton[0] == sum(t.numel() * t.element_size() for t in
                              [state["model"][k] for k in state["model"]]
                              + [state["optimizer"]["state"][0]["step"],
                                 state["optimizer"]["state"][0]["exp_avg"],
                                 state["tuple"][0]])
    back = distributed_mod.unflatten_state(skeleton, buffer.clone(), torch.device("cpu"))
    assert same_state(back, state)
    assert isinstance(back["model"], collections.OrderedDict) and isinstance(back["tuple"], tuple)
    assert back["model"]["w"].data_ptr() != state["model"]["w"].data_ptr()


def test_a_group_of_one_in_process_runs_the_distributed_path(tmp_path, monkeypatch, reference):
    """RANK/WORLD_SIZE set -> the process group, broadcasts and gathers run (trivially)."""
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        search("search_softmax", epochs=2, candidates=3, seed=5, device="cpu",
               out=tmp_path / "run", dist_timeout=TIMEOUT)
    finally:
        torch.set_num_threads(threads)
    assert not torch.distributed.is_initialized()  # destroyed after the run
    assert_same_run(tmp_path / "run", reference)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["distributed"]["world_size"] == 1


def test_two_gloo_ranks_give_the_one_process_results(tmp_path, reference):
    """torchrun, 2 CPU ranks, 3 candidates (rank 0 trains 0 and 2, rank 1 trains 1)."""
    rc, output = finish(torchrun(tmp_path / "run", *ARGS))
    assert rc == 0, output
    assert output.count("run folder:") == 1  # rank 0 alone reports
    assert_same_run(tmp_path / "run", reference)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["distributed"] == {"world_size": 2, "rank": 0, "backend": "gloo",
                                       "timeout_s": float(TIMEOUT)}
    assert manifest["status"] == "complete"
    def names(folder):  # a TensorBoard events file is named after its time, host and pid
        return sorted("events" if p.name.startswith("events.out.tfevents.") else p.name
                      for p in folder.iterdir())

    assert names(tmp_path / "run") == names(reference)  # nothing written by rank 1
    if any(p.name.startswith("events.out.tfevents.") for p in reference.iterdir()):
        # rank 1's candidate's step losses reach rank 0's events: the same as one process's
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        runs = [EventAccumulator(str(folder)) for folder in (tmp_path / "run", reference)]
        for acc in runs:
            acc.Reload()
        tags = runs[1].Tags()["scalars"]
        assert "train_loss/candidate_1" in tags and set(runs[0].Tags()["scalars"]) == set(tags)
        for tag in tags:
            got, want = ([(e.step, e.value) for e in acc.Scalars(tag)] for acc in runs)
            assert got == pytest.approx(want, rel=1e-6), tag


def _rank_pid(launcher: subprocess.Popen, rank: int) -> int:
    """The pid of the worker of `rank` among the torchrun agent's children."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == launcher.pid:  # the parent pid
                children.append(stat.parent)
        except (OSError, IndexError, ValueError):
            continue
    for proc in children:
        with contextlib.suppress(OSError):
            if f"RANK={rank}".encode() in (proc / "environ").read_bytes().split(b"\0"):
                return int(proc.name)
    raise AssertionError(f"no rank {rank} among the children {[c.name for c in children]}")


def _wait_for(path: Path, proc: subprocess.Popen, seconds: float = 240) -> None:
    deadline = time.time() + seconds
    while not path.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be disturbed"
    assert path.exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find rank 1")
def test_a_killed_rank_ends_the_run_with_a_clear_error_and_the_run_resumes(tmp_path, reference):
    run = tmp_path / "run"
    launcher = torchrun(run, *ARGS)
    _wait_for(run / "checkpoint.pt", launcher)  # epoch 0 is done; epoch 1 is training
    os.kill(_rank_pid(launcher, 1), signal.SIGKILL)
    killed = time.monotonic()
    rc, output = finish(launcher, timeout=60)
    elapsed = time.monotonic() - killed
    # Rank 0 stops with lfsearch's one-line error: either torchrun saw rank 1 die and sent it
    # SIGTERM, or rank 0 was in a collective with rank 1 and gloo reported the closed
    # connection first. The wall time is that plus the interpreters' teardown: seconds, no hang.
    assert rc != 0
    assert elapsed < TIMEOUT + 15, elapsed
    errors = [line for line in output.splitlines() if line.startswith("lfsearch: error: rank 0")]
    assert len(errors) == 1, output
    assert ("stopped by SIGTERM" in errors[0] or "another rank died" in errors[0]) \
        and "--resume" in errors[0], errors[0]
    assert "rank      : 1" in output and "SIGKILL" in output  # torchrun's root cause: rank 1
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    assert not (run / "results.json").exists()
    assert torch.load(run / "checkpoint.pt", weights_only=False)["epoch"] == 0

    # resume in one process (the checkpoint is the same either way) -> the uninterrupted results
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        search(None, out=run, resume=True)
    finally:
        torch.set_num_threads(threads)
    assert_same_run(run, reference)


@pytest.mark.slow
def test_a_silent_rank_is_declared_lost_within_the_timeout_and_torchrun_resumes(tmp_path,
                                                                                 reference):
    """Without torchrun watching (two processes given RANK/WORLD_SIZE by hand), a rank that
    stops answering (SIGSTOP) is caught by its missing heartbeat, not waited for forever."""
    run = tmp_path / "run"
    port = str(free_port())
    procs = [subprocess.Popen(
        [sys.executable, "-m", "lfsearch", "search", *ARGS, "--out", str(run), "--quiet",
         "--dist-timeout", "5"],
        env=env(RANK=str(r), WORLD_SIZE="2", LOCAL_RANK=str(r), MASTER_ADDR="127.0.0.1",
                MASTER_PORT=port),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(2)]
    try:
        _wait_for(run / "checkpoint.pt", procs[0])
        time.sleep(0.3)  # usually into epoch 1's training, outside any collective
        procs[1].send_signal(signal.SIGSTOP)
        stopped = time.monotonic()
        rc, output = finish(procs[0], timeout=60)
        elapsed = time.monotonic() - stopped
    finally:
        procs[1].kill()
        procs[1].communicate()
    assert rc == 1, output
    # rank 1 stopped while training: its heartbeat stops; stopped inside a collective: gloo's
    # own timeout (the same 5 s) fires. Either way a one-line error naming what happened.
    assert ("lfsearch: error: rank 1 gave no sign of life for 5 s" in output
            or "lfsearch: error: rank 0: " in output and "Timed out" in output), output
    assert elapsed < 5 + 15, elapsed
    assert json.loads((run / "manifest.json").read_text())["status"] == "interrupted"

    rc, output = finish(torchrun(run, "search_softmax", "--resume"))
    assert rc == 0, output
    assert_same_run(run, reference)
    assert len(json.loads((run / "manifest.json").read_text())["resumed"]) == 1
