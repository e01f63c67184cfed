"""A search spread over processes and machines with torch.distributed (launched by torchrun).

    torchrun --nproc-per-node=K -m lfsearch search SPACE.toml ...

Every rank runs the same epoch loop; the work of one epoch is split and its results shared:

    rank 0:   params = controller.sample(M)             broadcast to every rank
    rank r:   trains candidates i with i mod K = r, all from the same start state
    all:      (reward, train loss, status, metrics) of every candidate, all-gathered
    owner:    the best candidate's state (model + loss + optimiser) -> every rank, as ONE buffer
    rank 0:   controller.update, epochs.csv, controller.csv, checkpoint.pt, results.json

A candidate's batches and seeds come from (seed, epoch, candidate index) only, so which rank
trains it changes nothing: with the same seed, device and thread count the run is the same
as in one process, bit for bit.

State transfer: a state (nested dicts/lists of tensors and plain values) is split into a
*skeleton* -- the same structure with every tensor replaced by a `_Slot(offset, nbytes, dtype,
shape, device)` -- and one contiguous uint8 buffer holding every tensor's bytes. The
skeleton is small and travels with the gathered results; the buffer is broadcast once, on the
training device (NCCL on CUDA, gloo on CPU), and cut back into tensors of the exact dtypes.

Failure handling: every collective runs under the process-group timeout (--dist-timeout).
Waiting for slower ranks (their candidates, rank 0 writing a checkpoint) is not bounded by it
-- an epoch may take hours -- but watched: each rank bumps a heartbeat counter in the
rendezvous store every timeout/5 s (at most 5 s), and a rank whose counter stays still for the
timeout is declared lost, so a dead, stopped or unreachable rank ends the run with a
`RankFailure` naming it instead of a hang. torchrun itself stops every rank (SIGTERM) as soon as
one of its processes dies; lfsearch turns that SIGTERM into the same error, so rank 0 marks the
run folder 'interrupted' and `--resume` continues after the last completed epoch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import itertools
import logging
import os
import re
import signal
import threading
import time
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist

from lfsearch.search import candidate as candidate_mod

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 300.0
_SEARCHES = itertools.count()
RESUME_HINT = "the run folder keeps its last completed epoch: continue it with --resume"
_FORWARDED_ERRORS = {"ValueError": ValueError, "FileNotFoundError": FileNotFoundError,
                     "NotADirectoryError": NotADirectoryError}


class RankFailure(RuntimeError):
    """A rank died, stopped answering or was stopped: the distributed search cannot go on."""


def _first_line(exc: BaseException) -> str:
    """The first line of an error, without the C++ source location gloo/c10d put in front."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return re.sub(r"^\[[^\]]*\.(?:cpp|cc|h|hpp):\d+\]\s*", "", first)


def launched() -> bool:
    """True in a process started by torchrun (or any launcher that sets RANK and WORLD_SIZE)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def assigned(count: int, rank: int, world_size: int) -> list[int]:
    """The candidates rank trains: i = rank, rank + K, rank + 2K, ... (i mod K = rank)."""
    return list(range(rank, count, world_size))


# ------------------------------------------------------------------------------ state buffers
@dataclasses.dataclass(frozen=True)
class _Slot:
    """Where one tensor of a state lies in the flat buffer."""

    offset: int
    nbytes: int
    dtype: torch.dtype
    shape: tuple[int, ...]
    device_type: str  # "cpu" or the training device's type


def flatten_state(state: Any) -> tuple[tuple[int, Any], list[torch.Tensor]]:
    """Split a state into a skeleton (total bytes, structure with `_Slot`s) and its tensors."""
    tensors: list[torch.Tensor] = []
    offset = 0

    def walk(obj: Any) -> Any:
        nonlocal offset
        if isinstance(obj, torch.Tensor):
            if obj.layout != torch.strided or obj.is_quantized:
                raise ValueError(f"cannot broadcast a {obj.layout} tensor in a training state; "
                                 "allowed: dense (strided) tensors")
            flat = obj.detach().reshape(-1).view(torch.uint8)
            slot = _Slot(offset, flat.numel(), obj.dtype, tuple(obj.shape), obj.device.type)
            tensors.append(flat)
            offset += flat.numel()
            return slot
        if isinstance(obj, dict):
            return type(obj)((k, walk(v)) for k, v in obj.items())
        if isinstance(obj, (list, tuple)) and not hasattr(obj, "_fields"):
            return type(obj)(walk(v) for v in obj)
        return obj

    tree = walk(state)
    return (offset, tree), tensors


def pack(tensors: list[torch.Tensor], nbytes: int, device: torch.device) -> torch.Tensor:
    """The tensors' bytes, one after another, in one contiguous uint8 tensor on device."""
    if not tensors:
        return torch.empty(nbytes, dtype=torch.uint8, device=device)
    return torch.cat([t.to(device) for t in tensors])


def unflatten_state(skeleton: tuple[int, Any], buffer: torch.Tensor,
                    device: torch.device) -> Any:
    """Rebuild the state: every `_Slot` becomes a tensor of its dtype and shape, holding its
    bytes of buffer, on `device` (tensors that were on the CPU stay on the CPU)."""
    _, tree = skeleton

    def walk(obj: Any) -> Any:
        if isinstance(obj, _Slot):
            raw = buffer[obj.offset:obj.offset + obj.nbytes].clone()  # own, aligned storage
            tensor = raw.view(obj.dtype).reshape(obj.shape)
            return tensor.to(device if obj.device_type != "cpu" else "cpu")
        if isinstance(obj, dict):
            return type(obj)((k, walk(v)) for k, v in obj.items())
        if isinstance(obj, (list, tuple)) and not hasattr(obj, "_fields"):
            return type(obj)(walk(v) for v in obj)
        return obj

    return walk(tree)


# ------------------------------------------------------------------------------ the group
class Group:
    """This process's place in a running torch.distributed job, with failure detection."""

    def __init__(self, *, rank: int, world_size: int, local_rank: int, backend: str,
                 timeout: float, store: Any, owns_process_group: bool):
        self.rank = rank
        self.world_size = world_size
        self.local_rank = local_rank
        self.backend = backend
        self.timeout = timeout
        self.store = store
        self.owns_process_group = owns_process_group
        self._beat_every = max(0.05, min(5.0, timeout / 5.0))
        self._stop = threading.Event()
        self._barriers = 0
        self._heartbeat = threading.Thread(target=self._beat, name="lfsearch-heartbeat",
                                           daemon=True)
        self._heartbeat.start()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe(self) -> dict[str, Any]:
        """For manifest.json."""
        return {"world_size": self.world_size, "rank": self.rank, "backend": self.backend,
                "timeout_s": self.timeout}

    def local_device(self, device: torch.device) -> torch.device:
        """cuda -> cuda:LOCAL_RANK (and make it current); cpu stays cpu."""
        if device.type != "cuda":
            return device
        count = torch.cuda.device_count()
        if self.local_rank >= count:
            raise ValueError(f"LOCAL_RANK {self.local_rank} has no GPU: this machine has {count}; "
                             f"start at most {count} processes per node (--nproc-per-node) "
                             "or pass --device cpu")
        torch.cuda.set_device(self.local_rank)
        return torch.device("cuda", self.local_rank)

    # -------------------------------------------------------------- liveness
    def _beat(self) -> None:
        key = f"alive/{self.rank}"
        while not self._stop.is_set():
            try:
                self.store.add(key, 1)
            except Exception:  # the store is gone: the waiters will say so
                return
            self._stop.wait(self._beat_every)

    def wait_for_all(self, what: str) -> None:
        """Block until every rank has reached this point; fail if one stops beating.

        Not bounded by the timeout (the others may be training), only by their heartbeats:
        a rank that has not arrived and whose heartbeat counter stood still for the timeout
        is declared lost. One store read per poll; the per-rank look happens once a beat.
        """
        self._barriers += 1
        tag = f"arrived/{self._barriers}"
        try:
            self.store.set(f"{tag}/{self.rank}", "1")
            self.store.add(f"{tag}/count", 1)
            seen: dict[int, tuple[int, float]] = {}
            pause, next_look = 0.002, time.monotonic() + self._beat_every
            while self.store.add(f"{tag}/count", 0) < self.world_size:
                now = time.monotonic()
                if now >= next_look:
                    next_look = now + self._beat_every
                    for r in range(self.world_size):
                        if r == self.rank or self.store.check([f"{tag}/{r}"]):
                            continue
                        count = self.store.add(f"alive/{r}", 0)
                        if r not in seen or count != seen[r][0]:
                            seen[r] = (count, now)
                        elif now - seen[r][1] > self.timeout:
                            raise RankFailure(
                                f"rank {r} gave no sign of life for {self.timeout:g} s while "
                                f"rank {self.rank} waited for it ({what}): it died, hangs or "
                                f"lost its network; {RESUME_HINT}")
                time.sleep(pause)
                pause = min(pause * 2, 0.1)
        except RankFailure:
            raise
        except Exception as exc:
            raise self._failure(what, exc) from exc

    def _failure(self, what: str, exc: BaseException) -> RankFailure:
        first = _first_line(exc)
        return RankFailure(f"rank {self.rank}: {what} failed: another rank died or stopped "
                           f"answering ({first}); {RESUME_HINT}")

    @contextlib.contextmanager
    def _collective(self, what: str) -> Iterator[None]:
        try:
            yield
        except RankFailure:
            raise
        except Exception as exc:
            raise self._failure(what, exc) from exc

    # -------------------------------------------------------------- collectives
    def broadcast_object(self, obj: Any, what: str, src: int = 0) -> Any:
        """src's obj on every rank (after waiting for every rank to be ready)."""
        self.wait_for_all(what)
        box = [obj if self.rank == src else None]
        with self._collective(what):
            dist.broadcast_object_list(box, src=src)
        return box[0]

    def all_gather_object(self, obj: Any, what: str) -> list[Any]:
        """Every rank's obj, in rank order."""
        self.wait_for_all(what)
        out: list[Any] = [None] * self.world_size
        with self._collective(what):
            dist.all_gather_object(out, obj)
        return out

    def broadcast_state(self, state: Any, skeleton: tuple[int, Any], src: int,
                        device: torch.device, what: str) -> Any:
        """src's state on every rank, sent as one flat buffer; src keeps its own object."""
        nbytes = skeleton[0]
        with self._collective(what):
            if self.rank == src:
                _, tensors = flatten_state(state)
                buffer = pack(tensors, nbytes, device)
            else:
                buffer = torch.empty(nbytes, dtype=torch.uint8, device=device)
            if nbytes:
                dist.broadcast(buffer, src=src)
        return state if self.rank == src else unflatten_state(skeleton, buffer, device)

    def share_start(self, first_epoch: int, state: Any, device: torch.device) -> tuple[int, Any]:
        """Rank 0's first epoch and start state (fresh or resumed) on every rank."""
        skeleton = flatten_state(state)[0] if self.is_main else None
        first_epoch, skeleton = self.broadcast_object((first_epoch, skeleton),
                                                      "sharing the start state")
        return first_epoch, self.broadcast_state(state, skeleton, 0, device,
                                                 "broadcasting the start state")

    def close(self) -> None:
        self._stop.set()
        self._heartbeat.join(timeout=self._beat_every + 1.0)


def from_environment(timeout: float | None = None) -> Group | None:
    """Join the job torchrun started (None outside one): backend gloo for CPU tensors and, with a
    GPU, NCCL for CUDA tensors; every collective and the rendezvous time out after `timeout` s."""
    if not launched():
        return None
    timeout = DEFAULT_TIMEOUT if timeout is None else float(timeout)
    if not timeout > 0:
        raise ValueError(f"--dist-timeout must be a positive number of seconds (got {timeout})")
    delta = _dt.timedelta(seconds=timeout)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    owns = not dist.is_initialized()
    where = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
    try:
        if owns:
            store, rank, world_size = next(dist.rendezvous("env://", timeout=delta))
            backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
            dist.init_process_group(backend, store=store, rank=rank, world_size=world_size,
                                    timeout=delta)
        else:  # a caller's own job: use its default group
            store = dist.distributed_c10d._get_default_store()
            rank, world_size = dist.get_rank(), dist.get_world_size()
            backend = str(dist.get_backend())
    except ValueError:
        raise
    except Exception as exc:
        raise RankFailure(f"could not join the other ranks at {where} within {timeout:g} s "
                          f"({_first_line(exc)}); "
                          "check that every process was started with the same MASTER_ADDR, "
                          "MASTER_PORT and WORLD_SIZE") from exc
    # Fresh keys per torchrun attempt and per search in this job (every rank counts its
    # searches alike): the agent's store outlives both.
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    prefixed = dist.PrefixStore(f"lfsearch/attempt{attempt}/search{next(_SEARCHES)}/", store)
    return Group(rank=rank, world_size=world_size, local_rank=local_rank, backend=backend,
                 timeout=timeout, store=prefixed, owns_process_group=owns)


@contextlib.contextmanager
def session(timeout: float | None = None) -> Iterator[Group | None]:
    """The Group of this torchrun job for the duration of a search (None outside one).

    SIGTERM -- what torchrun sends every rank when one of them fails -- becomes a RankFailure,
    so that rank 0 can mark its run folder 'interrupted'. The process group is destroyed on
    success; after a failure it is left to the process's exit (a dead peer can block it).
    """
    group = from_environment(timeout)
    if group is None:
        yield None
        return

    def stopped(signum, frame):
        raise RankFailure(f"rank {group.rank} was stopped by SIGTERM (torchrun stops every rank "
                          "when one of them fails: its report names the first); " + RESUME_HINT)

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, stopped)
    try:
        yield group
    except BaseException:
        group.close()
        raise
    else:
        group.close()
        if group.owns_process_group and dist.is_initialized():
            dist.destroy_process_group()
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def on_main(group: Group | None, fn: Callable[[], Any], what: str) -> Any:
    """fn() on rank 0, its result on every rank. An error on rank 0 is raised on every rank
    (bad input as the same ValueError/FileNotFoundError, anything else as a RankFailure)."""
    if group is None:
        return fn()
    if group.is_main:
        try:
            result = fn()
        except BaseException as exc:
            name = type(exc).__name__
            group.broadcast_object(("error", name if name in _FORWARDED_ERRORS else None,
                                    str(exc)), what)
            raise
        group.broadcast_object(("ok", result), what)
        return result
    reply = group.broadcast_object(None, what)
    if reply[0] == "ok":
        return reply[1]
    _, name, message = reply
    if name is not None:
        raise _FORWARDED_ERRORS[name](message)
    raise RankFailure(f"rank 0 could not prepare the run: {message}")


# ------------------------------------------------------------------------------ one epoch
def run_epoch(group: Group, train: Callable[[list[int], Callable], list[Any]], count: int,
              device: torch.device, on_candidate: Callable[[int, Any], None] | None = None,
              *, epoch: int = 0, keep_all: bool = False) -> list[Any]:
    """One epoch of `count` candidates spread over the ranks; every rank gets every result.

    train(indices, on_candidate) trains the candidates `indices` (global indices) from the
    epoch's start state and returns their CandidateResults in that order, the best keeping its
    state (sequential.run_epoch_sequential). Returns all `count` results in index order; the
    chosen one (candidate_mod.choose_best) carries its state on every rank. With keep_all (an
    epoch inside a competition interval) no state travels: each rank's own candidates keep
    their states (train keeps every one), for that rank's next epoch.
    """

    mine = assigned(count, group.rank, group.world_size)

    def local_done(j: int, result: Any) -> None:
        if on_candidate is not None:
            on_candidate(mine[j], result)

    local = train(mine, local_done)
    best = None if keep_all else next((r for r in local if r.state is not None), None)
    shared = [(i, dataclasses.replace(r, state=None)) for i, r in zip(mine, local)]
    skeleton = flatten_state(best.state)[0] if best is not None else None
    gathered = group.all_gather_object((shared, skeleton), f"gathering epoch {epoch}'s results")
    results: list[Any] = [None] * count
    for pairs, _ in gathered:
        for i, r in pairs:
            results[i] = r
    missing = [i for i, r in enumerate(results) if r is None]
    if missing:
        raise RankFailure(f"epoch {epoch}: no result for candidates {missing}")
    if on_candidate is not None:
        for i in range(count):
            if i not in mine:
                on_candidate(i, results[i])
    if keep_all:
        for j, i in enumerate(mine):
            results[i].state = local[j].state
        return results
    chosen = candidate_mod.choose_best(results)
    if chosen is None:
        return results
    owner = chosen % group.world_size
    own_state = None
    if owner == group.rank:
        own_state = local[mine.index(chosen)].state
        if own_state is None:
            raise RuntimeError(f"epoch {epoch}: candidate {chosen} won but its trainer kept no "
                               "state; train(...) must keep the state of its best candidate")
    results[chosen].state = group.broadcast_state(
        own_state, gathered[owner][1], owner, device,
        f"broadcasting epoch {epoch}'s best state from rank {owner}")
    return results
