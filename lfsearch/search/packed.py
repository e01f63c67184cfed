"""Training an epoch's M candidates together on one device ("packing").

The M candidates of an epoch start from the same state and see the same batches; they differ
only in their loss parameters. `run_epoch_packed` trains them in one pass per batch, with the
same signature and results as `sequential.run_epoch_sequential`:

  backbone   the M copies' parameters and buffers are stacked (leading dimension M) and the
             backbone runs once per batch under ``torch.func.vmap(functional_call(model, ...))``:
             each convolution becomes one grouped convolution (groups = M), BatchNorm keeps M
             sets of running statistics, linear layers become batched matmuls;
  loss       every candidate keeps its own loss module (its own a, m, s, ..., buffers and step
             counters) and its own class head, a separate tensor; the embeddings are detached at
             the backbone/loss boundary and each candidate's loss is computed and
             back-propagated on its own, so at most one N x C logit matrix is alive at a time
             (a 100 000-class head costs one N x C matrix, not M); the backbone then gets one
             backward with the M embedding gradients stacked;
  optimiser  one optimiser of the trainee's class and hyper-parameters over the stacked
             backbone tensors and the M heads. SGD, Adam and AdamW update element by element,
             so a stacked tensor's step is exactly M independent steps; the optimiser state
             (momentum, Adam moments) starts as the start state repeated M times.

The numbers match the one-after-another path up to float rounding: the grouped convolution
sums in another order than M separate ones (differences ~1e-7 relative per step); the
optimiser arithmetic is the same element by element. Differences from the reference path:
random operations inside the backbone (dropout) draw different masks per candidate
(``vmap(randomness="different")``), not the masks of candidate_seeds; the loss checks its
inputs (label range, finite embeddings) on the first batch only (a host sync per call), as
the reference path now does; the loss statistics stay on the device and are read every
step_stats.READ_EVERY steps, as in the reference; a candidate whose loss turns non-finite
gets zero gradients from then on (masked on the device) and is "diverged" (reward 0) while
the others go on.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from lfsearch import data
from lfsearch.search import candidate as candidate_mod
from lfsearch.search import step_stats
from lfsearch.search.accel import _STEP_KEYS, ELEMENTWISE_OPTIMIZERS, Accel, _autocast, _images
from lfsearch.search.candidate import CandidateResult, Trainee, Validation


def _stack(t: Tensor, m: int) -> Tensor:
    """t repeated m times along a new leading dimension (a fresh tensor)."""
    return t.detach().unsqueeze(0).expand(m, *t.shape).clone()


def _share_parameters_copy(module: nn.Module) -> nn.Module:
    """A deep copy of `module` whose parameters are the original Parameter objects (not
    copied: the packed path always passes its own tensors in their place)."""
    return copy.deepcopy(module, memo={id(p): p for p in module.parameters()})


def _one_backbone(model: nn.Module, params: dict, buffers: dict, images: Tensor) -> Tensor:
    return functional_call(model, (params, buffers), (images,))


#: The packed backbone: the model, its stacked parameters and buffers, one batch of images
#: (shared by every candidate) -> (M, N, D) embeddings.
_packed = vmap(_one_backbone, in_dims=(None, 0, 0, None), randomness="different")
_compiled: list[Callable] = []  # torch.compile(_packed), made on first use (guards per model)


def _packed_forward(compile: bool) -> Callable:
    if not compile:
        return _packed
    if not _compiled:
        _compiled.append(torch.compile(_packed))
    return _compiled[0]


class PackedPopulation:
    """M candidates' stacked backbone, their own loss modules and heads, one optimiser.

    Built from a trainee and a start state; `train_epoch` trains all of them on the same
    batches; `load_candidate(i)` puts candidate i's backbone, loss and optimiser state back
    into the trainee (for evaluation, or to save it).
    """

    def __init__(self, trainee: Trainee, start: dict[str, Any] | list[dict[str, Any]],
                 params: list[dict[str, float]], *, lr: float, accel: Accel = Accel()) -> None:
        if accel.autocast == torch.float16:
            raise ValueError("training.amp = 'fp16' needs training.packing = 'sequential' (its "
                             "GradScaler would skip every candidate's step when one overflows); "
                             "use amp = 'bf16' to pack")
        if not isinstance(trainee.optimizer, ELEMENTWISE_OPTIMIZERS):
            raise ValueError(f"packed training needs an element-wise optimiser; got "
                             f"{type(trainee.optimizer).__name__} (allowed: sgd, adam, adamw); "
                             "use training.packing = 'sequential'")
        self.trainee, self.accel, self.m = trainee, accel, len(params)
        m = self.m
        # one start state shared by every candidate, or one per candidate (inside an interval)
        starts = candidate_mod.starts_of(start, m)
        shared = all(st is starts[0] for st in starts)
        trainee.load(starts[0])
        for group in trainee.optimizer.param_groups:
            group["lr"] = lr
        self.groups = copy.deepcopy(trainee.optimizer.state_dict()["param_groups"])
        model, loss = trainee.model, trainee.loss
        model.train()
        if shared:
            self.params = {n: _stack(p, m).requires_grad_(p.requires_grad)
                           for n, p in model.named_parameters()}
            self.buffers = {n: _stack(b, m) for n, b in model.named_buffers()}
        else:
            own_sd = [st["model"] for st in starts]
            self.params = {n: _gather(own_sd, n, p).requires_grad_(p.requires_grad)
                           for n, p in model.named_parameters()}
            self.buffers = {n: _gather(own_sd, n, b) for n, b in model.named_buffers()}
        # every candidate: its own loss module (own searched values, buffers, counters) and
        # its own head tensors, passed to the module in place of its parameters
        self.losses: list[nn.Module] = []
        self.heads: list[dict[str, Tensor]] = []
        for i, values in enumerate(params):
            if not shared:
                loss.load_state_dict(starts[i]["loss"])
            own = _share_parameters_copy(loss)
            # set_params before the head is copied: a searched value kept in a parameter
            # (l2_softmax's learned alpha) is written into the shared parameter
            own.set_params(**values)
            own.train()
            self.losses.append(own)
            self.heads.append({n: p.detach().clone().requires_grad_(p.requires_grad)
                               for n, p in loss.named_parameters()})
        # where each optimiser parameter lives: ("model", name) or ("loss", name)
        where = {id(p): ("model", n) for n, p in model.named_parameters()}
        where.update({id(p): ("loss", n) for n, p in loss.named_parameters()})
        self.slots: list[tuple[str, str]] = []
        groups = []
        for group in trainee.optimizer.param_groups:
            tensors = []
            for p in group["params"]:
                if id(p) not in where:
                    raise ValueError("the optimiser holds a tensor that is neither a backbone "
                                     "nor a loss parameter; packed training cannot stack it")
                kind, name = where[id(p)]
                self.slots.append((kind, name))
                tensors += ([self.params[name]] if kind == "model"
                            else [h[name] for h in self.heads])
            groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": tensors})
        self.optimizer = type(trainee.optimizer)(groups)
        # the start optimiser state, repeated M times (or each candidate's own)
        originals = [p for g in trainee.optimizer.param_groups for p in g["params"]]
        for index, (p, (kind, name)) in enumerate(zip(originals, self.slots)):
            if shared:
                state = trainee.optimizer.state.get(p)
                own = [state] * m
            else:  # a state_dict's optimiser state is keyed by the parameter's position
                own = [st["optimizer"]["state"].get(index) for st in starts]
                state = own[0]
            if not state:
                continue
            if kind == "model":
                self.optimizer.state[self.params[name]] = {
                    k: ((_stack(v, m) if shared else torch.stack([o[k].detach() for o in own]))
                        if self._stacked(k, v, p) else _clone(v))
                    for k, v in state.items()}
            else:
                for h, o in zip(self.heads, own):
                    self.optimizer.state[h[name]] = {k: _clone(v) for k, v in o.items()}
        self.forward = functools.partial(_packed_forward(accel.compile), model)

    @staticmethod
    def _stacked(key: str, value: Any, param: Tensor) -> bool:
        return (key not in _STEP_KEYS and isinstance(value, Tensor)
                and value.shape == param.shape)

    def train_epoch(self, train: data.LabelledImages, *, batch_size: int,
                    generator: torch.Generator, augment: str = "none",
                    ) -> list[tuple[float, str]]:
        """One epoch for every candidate; (mean training loss, status) per candidate."""
        m = self.m
        drop_last = len(train) > batch_size  # as the reference path
        device = train.device
        stats = step_stats.StepStats(m, device)  # on the device, read every READ_EVERY steps
        nan = torch.full((), float("nan"), device=device)
        checked = None
        kept: list[Tensor] = []  # each step's (M,) losses, read once at the end
        try:
            for images, labels in data.batches(train, batch_size, generator=generator,
                                               augment=augment, drop_last=drop_last):
                if not any(stats.alive):
                    break
                self.optimizer.zero_grad(set_to_none=True)
                with _autocast(device, self.accel):
                    emb = self.forward(self.params, self.buffers, _images(images, self.accel))
                cut = [emb[i].detach().requires_grad_() for i in range(m)]
                values = []
                for i in range(m):
                    if not stats.alive[i]:
                        values.append(nan)
                        continue
                    try:
                        with _autocast(device, self.accel):
                            value = functional_call(self.losses[i], self.heads[i],
                                                    (cut[i], labels))
                    except ValueError:  # the input check refuses non-finite embeddings
                        if bool(torch.isfinite(cut[i]).all()):
                            raise
                        values.append(nan)
                        continue
                    value.backward()
                    values.append(value.detach().float())
                if checked is None:  # inputs checked once: later calls skip the host sync
                    checked = step_stats.set_validate(self.losses, False)
                # a candidate whose loss is not finite takes no gradient (masked on the device)
                stacked = torch.stack(values)
                live = stats.add(stacked, len(labels))
                kept.append(stacked)
                for i in range(m):
                    for h in self.heads[i].values():
                        if h.grad is not None:
                            h.grad = torch.where(live[i], h.grad, 0.0)
                grads = torch.stack([c.grad if c.grad is not None else torch.zeros_like(c)
                                     for c in cut])
                emb.backward(torch.where(live.view(m, 1, 1), grads, 0.0))
                self.optimizer.step()
                if stats.due():
                    stats.read()
        finally:
            step_stats.restore_validate(checked or [])
        rows = torch.stack(kept).tolist() if kept else []
        self.step_losses = [[r[i] for r in rows if math.isfinite(r[i])] for i in range(m)]
        return stats.result()

    def candidate_state(self, i: int) -> dict[str, Any]:
        """Candidate i's {"model", "loss", "optimizer"} state dicts (views, not copies)."""
        model_sd = {**{n: p[i].detach() for n, p in self.params.items()},
                    **{n: b[i] for n, b in self.buffers.items()}}
        loss_sd = self.losses[i].state_dict()
        for n, h in self.heads[i].items():
            loss_sd[n] = h.detach()
        opt_sd = {"param_groups": copy.deepcopy(self.groups), "state": {}}
        for index, (kind, name) in enumerate(self.slots):
            if kind == "model":
                state = self.optimizer.state.get(self.params[name])
                if state:
                    p = self.params[name]
                    opt_sd["state"][index] = {
                        k: (v[i] if isinstance(v, Tensor) and k not in _STEP_KEYS
                            and v.shape == p.shape else v) for k, v in state.items()}
            else:
                state = self.optimizer.state.get(self.heads[i][name])
                if state:
                    opt_sd["state"][index] = dict(state)
        return {"model": model_sd, "loss": loss_sd, "optimizer": opt_sd}

    def load_candidate(self, i: int) -> None:
        """Load candidate i into the trainee (backbone, loss and optimiser)."""
        state = self.candidate_state(i)
        self.trainee.model.load_state_dict(state["model"])
        self.trainee.loss.load_state_dict(state["loss"])
        self.trainee.optimizer.load_state_dict(state["optimizer"])


def _gather(state_dicts: list[dict[str, Tensor]], name: str, current: Tensor) -> Tensor:
    """Each candidate's own tensor `name`, stacked (M, ...); a tensor a state_dict leaves
    out (a non-persistent buffer) is the module's current one, repeated."""
    if all(name in sd for sd in state_dicts):
        return torch.stack([sd[name].detach().to(current.device) for sd in state_dicts]).clone()
    return _stack(current, len(state_dicts))


def _clone(v: Any) -> Any:
    return v.detach().clone() if isinstance(v, Tensor) else copy.deepcopy(v)


def run_epoch_packed(trainee: Trainee, start: dict[str, Any] | list[dict[str, Any] | None],
                     params: list[dict[str, float]], *,
                     train: data.LabelledImages, validations: list[Validation], batch_size: int,
                     lr: float, data_seed: int, candidate_seeds: list[int], augment: str = "none",
                     on_candidate: Callable[[int, CandidateResult], None] | None = None,
                     accel: Accel | None = None, keep_all: bool = False) -> list[CandidateResult]:
    """Train the candidates together from `start` (see the module docstring); keeps only the
    best one's state (or every one's: keep_all). Same arguments and results as
    `sequential_mod.run_epoch_sequential`, per-candidate starts included (a candidate whose start
    is None is not packed and stays "diverged"); `accel` defaults to `Accel.for_device` of
    the training data's device."""
    if not params:
        return []
    starts = candidate_mod.starts_of(start, len(params))
    alive = [i for i, st in enumerate(starts) if st is not None]
    if len(alive) < len(params):  # pack the live candidates only, report the others as skipped
        inner = run_epoch_packed(
            trainee, [starts[i] for i in alive], [params[i] for i in alive], train=train,
            validations=validations, batch_size=batch_size, lr=lr, data_seed=data_seed,
            candidate_seeds=[candidate_seeds[i] for i in alive], augment=augment,
            accel=accel, keep_all=keep_all) if alive else []
        by_index = dict(zip(alive, inner))
        results = [by_index[i] if i in by_index else candidate_mod.skipped(params[i])
                   for i in range(len(params))]
        if on_candidate is not None:
            for i, r in enumerate(results):
                on_candidate(i, r)
        return results
    if all(st is starts[0] for st in starts):
        start = starts[0]
    device = train.device
    accel = Accel.for_device(device) if accel is None else accel
    if accel.channels_last and isinstance(train, data.LabelledImages):
        # once per epoch: batches cut from it stay channels-last (streamed ones: per batch)
        train = dataclasses.replace(train, images=_images(train.images, accel))
    torch.manual_seed(candidate_seeds[0])  # backbone randomness (dropout), if any
    pop = PackedPopulation(trainee, start, params, lr=lr, accel=accel)
    generator = torch.Generator().manual_seed(data_seed)  # CPU: the same draws on any device
    trained = pop.train_epoch(train, batch_size=batch_size, generator=generator, augment=augment)
    results: list[CandidateResult] = []
    for i, (values, (train_loss, status)) in enumerate(zip(params, trained)):
        if status == "ok":
            trainee.loss.set_params(**values)  # as the reference path; the trained state wins
            pop.load_candidate(i)
        candidate_mod.record_candidate(results, values, train_loss, status, trainee, validations,
                                    on_candidate, keep_all=keep_all,
                                    step_losses=pop.step_losses[i])
    return results


def run_in_chunks(trainee: Trainee, start: dict[str, Any] | list[dict[str, Any] | None],
                  params: list[dict[str, float]], chunk: int, *,
                  on_candidate: Callable[[int, CandidateResult], None] | None = None,
                  keep_all: bool = False, candidate_seeds: list[int], **kwargs,
                  ) -> list[CandidateResult]:
    """`run_epoch_packed` on `chunk` candidates at a time (the memory guard's plan), the same
    results as packing all: the same batches, each candidate its own seed; only the best
    state over all chunks is kept (first on ties), or every one's (keep_all)."""
    starts = candidate_mod.starts_of(start, len(params))
    results: list[CandidateResult] = []
    for lo in range(0, len(params), chunk):
        idx = range(lo, min(lo + chunk, len(params)))
        shared = all(starts[i] is starts[0] for i in idx)
        part = run_epoch_packed(
            trainee, starts[lo] if shared and starts[lo] is not None
            else [starts[i] for i in idx],
            [params[i] for i in idx], candidate_seeds=[candidate_seeds[i] for i in idx],
            on_candidate=(None if on_candidate is None
                          else lambda j, r, lo=lo: on_candidate(lo + j, r)),
            keep_all=keep_all, **kwargs)
        if not keep_all:
            best = next((r for r in results if r.state is not None), None)
            new = next((r for r in part if r.state is not None), None)
            if best is not None and new is not None:
                if new.reward > best.reward:
                    best.state = None
                else:
                    new.state = None
        results.extend(part)
    return results
