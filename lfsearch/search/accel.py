"""Device options of a training epoch (`Accel`): bf16/fp16 autocast, channels_last images and
torch.compile are what a GPU wants; `Accel.for_device` turns them on for CUDA only, and they do
nothing on CPU unless asked for. `resolve_mode` maps ``[training] packing`` to a path:
"sequential", "packed", or "auto" = sequential on CPU (measured: packing does not pay on a
2-core CPU, see benchmarks/README.md) and packed on CUDA, where a run then decides by a speed
trial (search/packing_trial.py); search/population.py applies it.
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


def backend_settings(device: torch.device | str) -> dict[str, bool]:
    """The backend flags training sets on `device` (none off CUDA):

    cudnn_benchmark  True: cuDNN times its convolution algorithms once per input shape and
                     keeps the fastest; a run's shapes are fixed (full batches, drop_last),
                     so it pays after the first steps. It makes CUDA runs not bit-identical
                     from one run to the next (README "Several GPUs").
    cudnn_tf32       True (PyTorch's default): fp32 convolutions of the backbone in TF32.
    matmul_tf32      False: fp32 matmuls stay full fp32, because under bf16 autocast the only
                     fp32 matmuls left are the margin heads' (lfsearch/losses/base.py), whose
                     cos θ must stay in fp32; the backbone's matmuls run in bf16 anyway.
    """
    if torch.device(device).type != "cuda":
        return {}
    return {"cudnn_benchmark": True, "cudnn_tf32": True, "matmul_tf32": False}


def apply_backends(device: torch.device | str) -> dict[str, bool]:
    """Set `backend_settings(device)` on torch.backends; returns them (for the manifest)."""
    settings = backend_settings(device)
    if settings:
        torch.backends.cudnn.benchmark = settings["cudnn_benchmark"]
        torch.backends.cudnn.allow_tf32 = settings["cudnn_tf32"]
        torch.backends.cuda.matmul.allow_tf32 = settings["matmul_tf32"]
    return settings


def _autocast(device: torch.device, accel: Accel):
    if accel.autocast is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=accel.autocast)


def _images(images: Tensor, accel: Accel) -> Tensor:
    if accel.channels_last and images.dim() == 4:
        return images.contiguous(memory_format=torch.channels_last)
    return images
