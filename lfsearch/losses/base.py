"""Losses of the unified margin family as ``nn.Module``s, plus joint-supervision terms.

Every loss is called as ``loss(embeddings (N, D) float, labels (N,) long) -> scalar``
(``reduction="none"`` on a head loss gives the (N,) per-sample values instead).

Head losses (the softmax family) own a class head ``.weight`` of shape
(num_classes, embedding_size) and expose ``.logits(embeddings)``: the plain class scores
with no margin (``s·cos θ_j`` for normalised heads, ``W x + b`` for softmax), and
``.margin_logits(embeddings, labels)``: the N×C logits the cross entropy sees.
They compute the N×C logit matrix once (the scale s folded into the normalised embedding)
and change only its target column, in place, inside one fused cross entropy
(:class:`_MarginCrossEntropy`) that keeps one N×C buffer for backward and builds one
gradient — fewer N×C tensors than ``F.cross_entropy`` on the plain logits; no one-hot
N×C mask is ever built. The margin's derivative df/dcos θ comes in closed form from
:mod:`lfsearch.losses.margins` (``*_and_slope``). Not twice differentiable.

Parameters a search changes during training (s, m, a, the AM-LFS coefficients, …) are
read with ``get_params() -> dict[str, float]`` and changed between steps with
``set_params(**values)`` or ``loss.s = 32`` (validated, no rebuild). They are kept exactly as
given and travel with ``state_dict()`` (as the module's extra state, with the loss's name:
a state of another loss is refused). ``set_schedule``/``set_epoch`` replay per-epoch
parameters (``lfsearch.losses.from_discovered``). docs/library.md.

Joint supervision: ``build("cosface", embedding_size=D, num_classes=C, aux="center",
aux_weight=0.01, aux_params={...})`` returns a :class:`Joint` loss L = L_main + aux_weight·L_aux
whose ``.weight``/``.logits`` are the main head's; its searchable parameters are the main
loss's, ``aux_weight`` and the aux term's prefixed with its name (``triplet_margin``).

Angles are in radians (see :mod:`lfsearch.losses.margins`). Bad input raises ``ValueError``
naming the field and its allowed values.
"""

from __future__ import annotations

import abc
import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from lfsearch.losses import margins

REDUCTIONS = ("mean", "sum", "none")
#: pytorch-metric-learning's attribute names and ours (docs/library.md).
_PML_NAMES = {"margin": "the margin is m, in radians (PML's margin is in degrees)",
              "scale": "the scale is s", "W": "the class weights are .weight, shape "
              "(num_classes, embedding_size) (PML's W is (embedding_size, num_classes))"}
_NORM_EPS = 1e-12


# ----------------------------------------------------------------------------- checks
def _check_size(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    return value


def _check_reduction(value: str) -> str:
    if value not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}; got {value!r}")
    return value


def _check_finite(name: str, value) -> float:
    return margins._number(name, value, "(-inf, inf)")


def _check_embeddings(x, embedding_size: int | None) -> None:
    d = embedding_size if embedding_size is not None else "D"
    if not isinstance(x, Tensor) or x.dim() != 2 or not x.is_floating_point():
        got = (f"{x.dtype} tensor of shape {tuple(x.shape)}" if isinstance(x, Tensor)
               else type(x).__name__)
        hint = ""
        if isinstance(x, Tensor) and x.dim() == 1 and x.shape[0] == embedding_size:
            hint = " (one embedding? pass x.unsqueeze(0))"
        elif isinstance(x, Tensor) and x.dim() == 4:
            hint = " (images? pass the backbone's embeddings, not its input)"
        raise ValueError(f"embeddings must be a floating-point tensor of shape (N, {d}); "
                         f"got {got}{hint}")
    if embedding_size is not None and x.shape[1] != embedding_size:
        hint = (" (transposed? pass x.T)" if x.shape[0] == embedding_size else "")
        raise ValueError(f"embeddings must have shape (N, {embedding_size}) "
                         f"(embedding_size={embedding_size}); got {tuple(x.shape)}{hint}")
    if x.shape[0] == 0:
        raise ValueError("embeddings must hold at least one row (N >= 1); got N = 0")


def _check_dtype(x: Tensor, weight: Tensor) -> None:
    """Embeddings in the head's dtype (under torch.autocast the head casts them itself)."""
    if x.dtype == weight.dtype or torch.is_autocast_enabled(x.device.type):
        return
    have, want = str(x.dtype).replace("torch.", ""), str(weight.dtype).replace("torch.", "")
    raise ValueError(f"embeddings are {have} but the loss's weight is {want}; allowed: {want} "
                     f"embeddings (x.to(torch.{want})), or convert the loss "
                     f"(loss.to(torch.{have})) or train under torch.autocast")


def _check_labels(labels, n: int) -> None:
    if (not isinstance(labels, Tensor) or labels.dim() != 1 or labels.is_floating_point()
            or labels.is_complex() or labels.dtype == torch.bool):
        got = (f"{labels.dtype} tensor of shape {tuple(labels.shape)}"
               if isinstance(labels, Tensor) else type(labels).__name__)
        raise ValueError(f"labels must be an integer (long) tensor of shape ({n},); got {got}")
    if labels.shape[0] != n:
        raise ValueError(f"labels must have shape ({n},) to match the embeddings; "
                         f"got {tuple(labels.shape)}")


def _check_values(x: Tensor, labels: Tensor, num_classes: int | None) -> None:
    """One host sync: embeddings finite and labels in [0, C−1]; diagnose only on failure."""
    bad = ~torch.isfinite(x.sum())
    if num_classes is not None:
        lo, hi = torch.aminmax(labels)
        bad = bad | (lo < 0) | (hi >= num_classes)
    else:
        lo, hi = None, None
        bad = bad | (labels.min() < 0)
    if not bool(bad):
        return
    if not bool(torch.isfinite(x).all()):
        raise ValueError("embeddings contain NaN or infinite values (allowed: finite values)")
    lo, hi = int(labels.min()), int(labels.max())
    if num_classes is not None and (lo < 0 or hi >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes - 1}] "
                         f"(num_classes={num_classes}); got min {lo}, max {hi}")
    if lo < 0:
        raise ValueError(f"labels must be >= 0; got min {lo}")


class _float32_head:
    """Context: autocast off for the device of the first tensor argument when it is on,
    floating-point arguments cast to float32 (a differentiable cast); otherwise a no-op."""

    def __init__(self, args: tuple) -> None:
        first = next((a for a in args if isinstance(a, Tensor)), None)
        kind = first.device.type if first is not None else None
        self.off = kind is not None and torch.is_autocast_enabled(kind)
        self.kind, self.args = kind, args

    def __enter__(self) -> tuple:
        if not self.off:
            return self.args
        self.ctx = torch.autocast(self.kind, enabled=False)
        self.ctx.__enter__()
        return tuple(a.float() if isinstance(a, Tensor) and a.is_floating_point() else a
                     for a in self.args)

    def __exit__(self, *exc) -> None:
        if self.off:
            self.ctx.__exit__(*exc)


# ------------------------------------------------------------------------------- base
class Loss(nn.Module):
    """Base of every loss: input checks and the searchable-parameter protocol.

    Subclasses list their searchable parameter names in ``param_names()`` and validate a
    value in ``_validate(name, value)``; values live in ``self._values`` (exact floats,
    saved as extra state) and ``_apply_params()`` refreshes derived tensors.
    """

    name = ""
    formula = ""
    family = "softmax"  # "softmax": a head loss; "aux": a joint-supervision term

    def __init__(self) -> None:
        super().__init__()
        self._values: dict[str, float] = {}
        #: Check inputs (shape, finiteness, label range) on every call (one host sync).
        self.validate = True

    def __call__(self, *args, **kwargs):
        """Every loss runs in float32, also under autocast: the normalised matmul, the
        margin, log-softmax and the value (insightface's choice; bf16 logits put the
        embeddings' gradient 7–9% off at cos θ_y ≈ 0.7). The backbone stays in bf16."""
        with _float32_head(args) as args:
            return super().__call__(*args, **kwargs)

    # -- parameters
    def param_names(self) -> list[str]:
        return list(self._values)

    def get_params(self) -> dict[str, float]:
        """Current searchable parameters as {name: float}."""
        return dict(self._values)

    def set_params(self, **values) -> None:
        """Change searchable parameters between steps (validated; no rebuild)."""
        allowed = self.param_names()
        for key in values:
            if key not in allowed:
                raise ValueError(f"unknown parameter {key!r} for loss {self.name!r}; "
                                 f"allowed: {', '.join(allowed) if allowed else '(none)'}")
        checked = {key: self._validate(key, value) for key, value in values.items()}
        self._values.update(checked)
        self._apply_params()

    def plan_training(self, total_steps: int) -> None:
        """Told by a run before training how many optimiser steps T it will take (members
        with a schedule over training progress, e.g. SphereFace's λ, use it)."""

    def _validate(self, name: str, value) -> float:  # pragma: no cover - overridden
        return _check_finite(name, value)

    def _apply_params(self) -> None:
        """Refresh attributes/buffers derived from ``self._values``."""

    def _apply(self, fn, *args, **kwargs):
        # .to()/.double()/.cuda() convert buffers; rewrite derived ones from the exact values
        out = super()._apply(fn, *args, **kwargs)
        self._apply_params()
        return out

    def get_extra_state(self) -> dict:
        return {"values": dict(self._values)}

    def set_extra_state(self, state: dict) -> None:
        self._values.update(state.get("values", {}))
        self._apply_params()

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v:g}" for k, v in self._values.items())

    # -- a per-epoch schedule (lfsearch.losses.from_discovered)
    def set_schedule(self, schedule: list[dict[str, float]]) -> None:
        """Keep a per-epoch list of parameter dicts for :meth:`set_epoch` (each checked now)."""
        before = self.get_params()
        try:
            for e, entry in enumerate(schedule):
                if not isinstance(entry, dict):
                    raise ValueError(f"schedule[{e}] must be a dict {{parameter: value}}; "
                                     f"got {entry!r}")
                self.set_params(**entry)
        finally:
            self.set_params(**{k: v for k, v in before.items() if k in self.param_names()})
        self.__dict__["_schedule"] = [dict(entry) for entry in schedule]

    @property
    def schedule(self) -> list[dict[str, float]]:
        """The per-epoch parameters :meth:`set_epoch` applies ([] when none)."""
        return [dict(entry) for entry in self.__dict__.get("_schedule", [])]

    def set_epoch(self, epoch: int) -> dict[str, float]:
        """Apply epoch ``epoch``'s parameters (0-based; past the schedule's end, its last
        entry, as the fixed controller replays it); returns them."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be an integer >= 0; got {epoch!r}")
        schedule = self.__dict__.get("_schedule", [])
        if not schedule:
            return self.get_params()
        values = schedule[min(epoch, len(schedule) - 1)]
        self.set_params(**values)
        return dict(values)

    # -- attributes: a searchable parameter is set through set_params
    def __setattr__(self, name: str, value) -> None:
        if not name.startswith("_") and name in self._settable():
            self.set_params(**{name: value})
            return
        descriptor = getattr(type(self), name, None)
        if isinstance(descriptor, property) and descriptor.fset is None:
            allowed = self._settable()
            raise AttributeError(
                f"{name!r} of loss {self.name!r} is read-only"
                + (f"; its searchable parameters are {', '.join(allowed)}: loss.<name> = value "
                   "or loss.set_params(...)" if allowed
                   else " (derived by the loss itself; it has no searchable parameters)"))
        if name in _PML_NAMES and not self._has(name):
            raise AttributeError(f"loss {self.name!r} has no {name!r} "
                                 f"(pytorch-metric-learning's name): {_PML_NAMES[name]}")
        super().__setattr__(name, value)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            values = self.__dict__.get("_values")
            if values is not None and name in values:
                return self.get_params().get(name, values[name])
            raise

    def _has(self, name: str) -> bool:
        return (name in self.__dict__ or hasattr(type(self), name)
                or any(name in self.__dict__.get(table, ())
                       for table in ("_parameters", "_buffers", "_modules")))

    def _settable(self) -> list[str]:
        if "_values" not in self.__dict__:
            return []
        try:
            return self.param_names()
        except AttributeError:  # a composite loss still being built
            return []

    # -- a state from another loss is refused before anything is copied
    def _save_to_state_dict(self, destination, prefix, keep_vars) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        key = prefix + "_extra_state"
        if isinstance(destination.get(key), dict):
            destination[key] = {**destination[key], "loss": self.name}

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        extra = state_dict.get(prefix + "_extra_state")
        if isinstance(extra, dict) and extra.get("loss", self.name) != self.name:
            raise ValueError(f"load_state_dict: the state is of loss {extra['loss']!r}, this "
                             f"loss is {self.name!r}; allowed: a state of {self.name!r} (load "
                             f"it into lfsearch.losses.build({extra['loss']!r}, ...))")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


# ------------------------------------------------------------------------------ heads
class _Head(Loss, metaclass=abc.ABCMeta):
    """A class head W (C, D) (+ optional bias) trained with a softmax cross entropy."""

    def __init__(self, embedding_size: int | None, num_classes: int | None, *,
                 bias: bool = False, reduction: str = "mean",
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.embedding_size = _check_size("embedding_size", embedding_size)
        self.num_classes = _check_size("num_classes", num_classes)
        self.reduction = _check_reduction(reduction)
        self.weight = nn.Parameter(torch.empty(self.num_classes, self.embedding_size))
        bound = 1.0 / math.sqrt(self.embedding_size)
        with torch.no_grad():
            self.weight.uniform_(-bound, bound, generator=generator)
        if bias:
            self.bias = nn.Parameter(torch.zeros(self.num_classes))
        else:
            self.register_parameter("bias", None)

    def _check(self, embeddings: Tensor, labels: Tensor | None) -> None:
        if not self.validate:
            return
        _check_embeddings(embeddings, self.embedding_size)
        _check_dtype(embeddings, self.weight)
        if labels is None:
            return
        _check_labels(labels, embeddings.shape[0])
        _check_values(embeddings, labels, self.num_classes)

    @abc.abstractmethod
    def _scores(self, x: Tensor) -> Tensor:
        """The plain N×C class scores (a fresh tensor, safe to modify in place)."""

    def logits(self, embeddings: Tensor) -> Tensor:
        """Plain class scores with no margin, (N, C) — for closed-set accuracy."""
        with _float32_head((embeddings,)) as (embeddings,):
            if self.validate:
                _check_embeddings(embeddings, self.embedding_size)
            return self._scores(embeddings)

    def margin_logits(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """The N×C logits the cross entropy sees (the target column changed); for
        inspection and plots — training uses a fused path that never builds them."""
        self._check(embeddings, labels)
        z = self._scores(embeddings)
        spec = self._target(embeddings, labels, z)
        if spec is None:
            return z
        fn, shift, scale = spec
        rows = torch.arange(z.shape[0], device=z.device)
        z_y = z[rows, labels]
        new = z_y + shift if fn is None else scale * self.target(z_y / scale)
        z.index_put_((rows, labels), (new - z_y).to(z.dtype), accumulate=True)
        return z

    def _target(self, x: Tensor, labels: Tensor, z: Tensor):
        """How the target logit z_y changes: None (it does not), or (fn, shift, scale):
        z_y ← scale·f(z_y / scale) with ``fn(cos) -> (f, df/dcos)`` (elementwise), or
        z_y ← z_y + shift when fn is None (shift a number or an (N,) tensor, no gradient).
        """
        return None

    def _class_weight(self, labels: Tensor) -> Tensor | None:
        return None

    def _cross_entropy(self, x: Tensor, labels: Tensor, reduction: str) -> Tensor:
        z = self._scores(x)
        spec = self._target(x, labels, z)
        fn, shift, scale = (None, None, None) if spec is None else spec
        return _MarginCrossEntropy.apply(z, scale, shift, labels, fn,
                                         self._class_weight(labels), reduction)

    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        self._check(embeddings, labels)
        return self._cross_entropy(embeddings, labels, self.reduction)


class _MarginCrossEntropy(torch.autograd.Function):
    """Softmax cross entropy of fresh logits z (N, C) whose target column is replaced,
    in place, by new_y = scale·f(z_y / scale) (``fn(cos) -> (f, df/dcos)``) or z_y + shift.

    Memory: z changes in its target column only; one N×C buffer (the log-probabilities)
    is saved and one (the gradient) is built in backward — fewer than
    ``F.cross_entropy`` needs. With c = z_y/scale, ∂new/∂z_y = f'(c) and
    ∂new/∂scale = f(c) − c·f'(c) are (N,) vectors. Half / bfloat16 logits: margin and
    log-softmax in float32. Not twice differentiable.
    """

    @staticmethod
    def forward(ctx, z, scale, shift, labels, fn, weight, reduction):
        n = z.shape[0]
        rows = torch.arange(n, device=z.device)
        d_zy = d_sc = None
        if fn is not None or shift is not None:
            z_y = z[rows, labels]
            if fn is None:
                new = z_y + shift
            else:
                if z_y.element_size() < 4:
                    z_y = z_y.float()
                sc = scale.to(z_y.dtype) if isinstance(scale, Tensor) else scale
                c = z_y / sc
                f, slope = fn(c)
                new = sc * f
                d_zy = slope
                if isinstance(scale, Tensor) and ctx.needs_input_grad[1]:
                    d_sc = f - c * slope
            z.index_put_((rows, labels), new.to(z.dtype))
        logp = torch.log_softmax(z, dim=1, dtype=torch.float32 if z.element_size() < 4 else None)
        nll = -logp[rows, labels]
        w_y = None
        if weight is not None:
            w_y = weight.to(device=nll.device, dtype=nll.dtype)[labels]
            nll = nll * w_y
        if reduction == "mean":
            denom = w_y.sum() if w_y is not None else None  # a number: no host-to-device copy
            loss = nll.sum() / (denom if denom is not None else n)
        else:
            denom = None
            loss = nll.sum() if reduction == "sum" else nll
        ctx.save_for_backward(logp, labels, d_zy, d_sc, w_y, denom)
        ctx.reduction = reduction
        ctx.z_dtype = z.dtype
        ctx.scale_dtype = scale.dtype if isinstance(scale, Tensor) else None
        return loss.to(z.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        logp, labels, d_zy, d_sc, w_y, denom = ctx.saved_tensors
        n = logp.shape[0]
        rows = torch.arange(n, device=logp.device)
        coef = g.to(logp.dtype)
        if ctx.reduction != "none":
            coef = coef.expand(n)
            if ctx.reduction == "mean":
                coef = coef / (denom if denom is not None else n)
        if w_y is not None:
            coef = coef * w_y
        grad = logp.exp()
        grad.mul_(coef[:, None])
        grad.index_put_((rows, labels), -coef, accumulate=True)  # coef·(p_j − [j = y])
        grad_scale = None
        if d_zy is not None:
            g_y = grad[rows, labels]
            if d_sc is not None:
                grad_scale = (g_y * d_sc).to(ctx.scale_dtype)
            grad.index_put_((rows, labels), (g_y * d_zy).to(grad.dtype))
        return grad.to(ctx.z_dtype), grad_scale, None, None, None, None, None


def _normalized_scores(x: Tensor, weight: Tensor, s: float) -> Tensor:
    """s·cos θ_j = <s·x/‖x‖, W_j/‖W_j‖> with s folded into the (N, D) embedding."""
    xs = x * (s / torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min(_NORM_EPS))
    return F.linear(xs, F.normalize(weight, dim=1, eps=_NORM_EPS))


class _MarginHead(_Head):
    """A head whose target logit is replaced: z_y ← scale_y·f(z_y / scale_y)."""

    @abc.abstractmethod
    def _target_scale(self, x: Tensor, labels: Tensor):
        """The factor scale_y with z_y = scale_y·cos θ_y (a number or an (N,) tensor)."""

    def target(self, cos: Tensor) -> Tensor:
        """The target function f(θ) of this member, on cos θ."""
        return cos

    def target_and_slope(self, cos: Tensor) -> tuple[Tensor, Tensor]:
        """(f(θ), df/dcos θ) on cos θ, without autograd (the fused cross entropy's input)."""
        return cos, torch.ones_like(cos)

    def _target(self, x, labels, z):
        return self.target_and_slope, None, self._target_scale(x, labels)


class _NormalizedHead(_MarginHead):
    """‖W_j‖ = ‖x‖ = 1, logits s·cos θ_j, target s·f(θ_y)."""

    def __init__(self, embedding_size=None, num_classes=None, *, s: float = 64.0,
                 reduction: str = "mean", generator=None) -> None:
        super().__init__(embedding_size, num_classes, reduction=reduction,
                         generator=generator)
        self._values["s"] = margins.check_positive("s", s)

    @property
    def s(self) -> float:
        return self._values["s"]

    def _validate(self, name, value):
        if name == "s":
            return margins.check_positive("s", value)
        return _check_finite(name, value)

    def _scores(self, x: Tensor) -> Tensor:
        return _normalized_scores(x, self.weight, self.s)

    def _target_scale(self, x, labels):
        return self.s
