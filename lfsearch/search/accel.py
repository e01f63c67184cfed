"""Device options of a training epoch (`Accel`): bf16/fp16 autocast, channels_last images and
torch.compile are what a GPU wants; `Accel.for_device` turns them on for CUDA only, and they do
nothing on CPU unless asked for. `resolve_mode` maps ``[training] packing`` to a path:
"sequential", "packed", or "auto" = sequential on CPU (measured: packing does not pay on a
2-core CPU, see benchmarks/README.md) and packed on CUDA; search/population.py applies it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import Tensor

MODES = ("auto", "sequential", "packed")
AMP_MODES = ("auto", "off", "bf16", "fp16")
#: Optimisers whose update is element-wise, so that one stacked step is M independent steps.
ELEMENTWISE_OPTIMIZERS = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW)
_STEP_KEYS = ("step",)  # optimiser state shared by every element (a scalar), never stacked


@dataclass(frozen=True)
class Accel:
    """Device options of the training step.

    autocast: dtype for ``torch.autocast`` around forward and loss (None: full precision);
    channels_last: images (and, on the sequential path, the backbone) in channels-last
    memory format; compile: ``torch.compile`` the backbone (packed: the vmapped backbone
    function, compiled once per model; sequential: ``model.compile()`` in place).
    """

    autocast: torch.dtype | None = None
    channels_last: bool = False
    compile: bool = False

    @staticmethod
    def for_device(device: torch.device | str, *, compile: bool = False,
                   amp: str = "auto") -> "Accel":
        """On CUDA: channels_last and autocast by `amp` ([training] amp): auto and bf16 ->
        bfloat16, fp16 -> float16 (with a GradScaler, sequential path only), off -> none.
        On CPU: no autocast whatever `amp` says (mixed precision is for GPUs here)."""
        if amp not in AMP_MODES:
            raise ValueError(f"training.amp {amp!r} is not known; allowed: {', '.join(AMP_MODES)}")
        if torch.device(device).type == "cuda":
            dtype = {"auto": torch.bfloat16, "bf16": torch.bfloat16, "fp16": torch.float16,
                     "off": None}[amp]
            return Accel(autocast=dtype, channels_last=True, compile=compile)
        return Accel(compile=compile)


def resolve_mode(mode: str, device: torch.device | str) -> str:
    """auto -> 'packed' on CUDA, 'sequential' elsewhere; 'sequential'/'packed' as given."""
    if mode not in MODES:
        raise ValueError(f"training.packing {mode!r} is not known; allowed: {', '.join(MODES)}")
    if mode == "auto":
        return "packed" if torch.device(device).type == "cuda" else "sequential"
    return mode


def _autocast(device: torch.device, accel: Accel):
    if accel.autocast is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=accel.autocast)


def _images(images: Tensor, accel: Accel) -> Tensor:
    if accel.channels_last and images.dim() == 4:
        return images.contiguous(memory_format=torch.channels_last)
    return images
