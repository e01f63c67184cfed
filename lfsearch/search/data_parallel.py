"""`[training] parallel = "data"`: under torchrun every rank trains every candidate of an
epoch, one after another, each on its slice of every batch (docs/face_recognition.md
"Partial FC"). The default, "candidates", deals the candidates out instead
(search/distributed.py).

One optimiser step of K ranks on a global batch B of n rows (the configured batch_size; every
rank draws the same B from the epoch's data seed):

    B_r   = rows [⌊r·n/K⌋, ⌊(r+1)·n/K⌋) of B                    rank r's slice, n_r rows
    head  = ShardedPartialFC ([loss] partial_fc = r: rank r holds the class centres
            [⌊r·C/K⌋, ⌊(r+1)·C/K⌋) and their bias, and samples among them;
            losses/sharded_fc.py), or, without partial_fc, the whole head on every rank
    g_r   = ∇ of rank r's share of L = (1/n) Σ_{i ∈ B} ℓ_i:
              sharded:    its back-propagation of L/K through the collectives gives its rows'
                          exact ∂L/∂x_i, so g_r = Σ_{i ∈ B_r} ∂L/∂x_i · ∂x_i/∂θ
              replicated: the share (n_r/n)·L_r, L_r the mean loss of B_r
    g     = Σ_r g_r  (one all_reduce SUM of the backbone's gradients, of a replicated
            head's and of what a sharded head holds whole on every rank, l2_softmax's learned
            α: the sum of the shares' gradients is ∇L; DDP's average of K·share)
    step  = the optimiser's step with g on every rank; a head shard (weight, bias) steps
            with its own rows' gradient, which the sharded loss already made exact

So with the sharded head the loss and every gradient are those of one process on the whole
batch (the member's batch statistics too: CurricularFace's t, AdaFace's norms); with
partial_fc = 1 the step is the full head's. Approximate: BatchNorm normalises each rank's
slice with the slice's statistics (as DDP without SyncBatchNorm; the running statistics
kept are rank 0's), and a replicated head's batch statistics are its slice's.

After a candidate's epoch every rank gathers its *full* state (the one-process layout: the
head (C, D) and its optimiser moments whole) and rank 0 rewards it with the one-process
trainee; the result is broadcast, and every rank keeps the same full states (the best one,
or every one inside an interval). So checkpoints, resume on any number of ranks or in one
process, the controller and the final test are those of a one-process run.
"""

from __future__ import annotations

import copy
from typing import Any, Callable

import torch
import torch.distributed as dist

from lfsearch import data
from lfsearch.losses.base import Loss
from lfsearch.losses.partial_fc import PartialFC, WrapsMember
from lfsearch.losses.sharded_fc import ShardedPartialFC
from lfsearch.search import candidate as candidate_mod
from lfsearch.search.candidate import CandidateResult, Trainee, Validation


class ReplicatedHead(WrapsMember):
    """The whole loss (``.inner``) on every rank, returning this rank's share of the
    global-batch mean: its value is L = Σ_r (n_r/n)·L_r (all-reduced), its gradient that of
    (n_r/n)·L_r."""

    name = "replicated"

    def __init__(self, head: Loss) -> None:
        super().__init__()
        self.inner = head

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        local = self.inner(x, labels)
        n_r = torch.tensor(float(labels.shape[0]), dtype=local.dtype, device=local.device)
        sums = torch.stack([local.detach() * n_r, n_r])
        dist.all_reduce(sums)
        share = local * (n_r / sums[1])
        return share + (sums[0] / sums[1] - share).detach()


class DataParallelTrainee(Trainee):
    """This rank's trainee: the backbone (shared with the one-process trainee `full`), the
    sharded or replicated head and an optimiser over both. `load` takes a full state and keeps
    this rank's rows; `state` gathers the full state (a collective: every rank calls it)."""

    def __init__(self, full: Trainee, optimizer: Callable[[list], torch.optim.Optimizer]):
        self.world, self.rank = dist.get_world_size(), dist.get_rank()
        if isinstance(full.loss, PartialFC):
            loss: Loss = ShardedPartialFC(copy.deepcopy(full.loss.inner), full.loss.sample_rate,
                                          seed=full.loss.seed)
        else:
            loss = ReplicatedHead(copy.deepcopy(full.loss))
        model = full.model
        super().__init__(model, loss, optimizer(list(model.parameters()) +
                                                list(loss.parameters())))
        # the head's class shards (weight, bias) with their rows per class
        sharded = loss.sharded_parameters() if isinstance(loss, ShardedPartialFC) else []
        params = self.optimizer.param_groups[0]["params"]
        self.summed = [p for p in params if all(p is not q for q, _ in sharded)]
        # each shard's index in the optimiser's state_dict (params numbered in order)
        self.head_index = {i: k for i, p in enumerate(params) for q, k in sharded if p is q}

    # ------------------------------------------------------------------ one step
    def local_batch(self, images: torch.Tensor, labels: torch.Tensor,
                    ) -> tuple[torch.Tensor, torch.Tensor]:
        n = labels.shape[0]
        lo, hi = self.rank * n // self.world, (self.rank + 1) * n // self.world
        return images[lo:hi], labels[lo:hi]

    def sync_gradients(self) -> None:
        """g = Σ_r g_r for every parameter but the head shard, as one flat all_reduce."""
        grads = [p.grad for p in self.summed if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    # ------------------------------------------------------------------ full state <-> shard
    def load(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        optimizer = copy.deepcopy(state["optimizer"])
        if isinstance(self.loss, ShardedPartialFC):
            self.loss.load_gathered_state_dict(state["loss"])
            for index, per_class in self.head_index.items():
                moments = optimizer["state"].get(index, {})
                for key, value in moments.items():  # momentum, exp_avg, ...: this rank's rows
                    if isinstance(value, torch.Tensor) and value.dim() >= 1:
                        moments[key] = self.loss.local_rows(value, per_class).clone()
        else:
            self.loss.inner.load_state_dict(state["loss"])
        self.optimizer.load_state_dict(optimizer)

    def state(self) -> dict[str, Any]:
        """The full state, the same on every rank: rank 0's buffers (BatchNorm's running
        statistics, a replicated head's), the gathered head and its optimiser moments."""
        for module in (self.model, self.loss):
            for buffer in module.buffers():
                dist.broadcast(buffer, 0)
        optimizer = copy.deepcopy(self.optimizer.state_dict())
        if isinstance(self.loss, ShardedPartialFC):
            loss = self.loss.gathered_state_dict()
            for index, per_class in sorted(self.head_index.items()):  # same order everywhere
                moments = optimizer["state"].get(index, {})
                for key, value in sorted(moments.items()):
                    if isinstance(value, torch.Tensor) and value.dim() >= 1:
                        moments[key] = self.loss.gather_rows(value, per_class)
        else:
            loss = self.loss.inner.state_dict()
        return copy.deepcopy({"model": self.model.state_dict(), "loss": loss,
                              "optimizer": optimizer})


def run_epoch(group: Any, trainee: DataParallelTrainee, full: Trainee,
              start: dict[str, Any] | list[dict[str, Any] | None], params: list[dict[str, float]],
              *, train: data.LabelledImages, validations: list[Validation], batch_size: int,
              lr: float, data_seed: int, candidate_seeds: list[int], augment: str = "none",
              on_candidate: Callable[[int, CandidateResult], None] | None = None,
              autocast_dtype: torch.dtype | None = None,
              keep_all: bool = False) -> list[CandidateResult]:
    """run_epoch_sequential's epoch on every rank together (module docstring): each candidate
    trains on the ranks' slices of the same batches, rank 0 rewards its gathered full state
    with `full` (the one-process trainee) and every rank gets the same result and state."""
    results: list[CandidateResult] = []
    for i, (values, own_start) in enumerate(zip(params, candidate_mod.starts_of(start,
                                                                                len(params)))):
        if own_start is None:
            results.append(candidate_mod.skipped(values))
        else:
            trainee.load(own_start)
            trainee.loss.set_params(**values)
            torch.manual_seed(candidate_seeds[i])
            generator = torch.Generator().manual_seed(data_seed)  # the same batches everywhere
            steps: list[float] = []
            train_loss, status = candidate_mod.train_one_epoch(
                trainee, train, batch_size=batch_size, generator=generator, lr=lr,
                augment=augment, autocast_dtype=autocast_dtype, step_losses=steps)
            # the loss is the global batch's on every rank, so the status is the same too
            state = trainee.state() if status == "ok" else None
            result = None
            if group.is_main:
                if state is not None:  # the backbone is shared; the whole head, for .logits
                    full.model.load_state_dict(state["model"])
                    full.loss.load_state_dict(state["loss"])
                result = candidate_mod.rate(full, values, train_loss, status, validations, steps)
            result = group.broadcast_object(result, f"candidate {i}'s reward")
            candidate_mod.keep(results, result, lambda state=state: state, keep_all)
        if on_candidate is not None:
            on_candidate(i, results[-1])
    return results
