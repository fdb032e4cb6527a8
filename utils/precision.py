"""Mixed precision for ``utils.fit``: which 16-bit format the hardware runs fast, and one optimizer step in it.

bf16 has float32's exponent range, so it needs no loss scaling; fp16 does, so an fp16 run gets a
``torch.amp.GradScaler`` and its gradients are unscaled before they are clipped.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
import torch
from torch import nn

from ._checks import check_bool

__all__ = ["cpu_has_fast_bf16", "resolve_amp", "autocast", "Precision"]


def cpu_has_fast_bf16() -> bool:
    """True if oneDNN reports native bf16 support on this CPU (AVX-512-BF16 / AMX class hardware).

    Without it bf16 matrix products are emulated and much slower than float32 (about 19× for
    chapter 10's TinyGPT on an AVX2 CPU), so ``amp="auto"`` stays in float32 there.
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


def resolve_amp(amp: str | None, device: torch.device) -> torch.dtype | None:
    """Map ``amp`` (``None | "auto" | "bf16" | "fp16"``) to an autocast dtype for ``device``.

    ``"auto"`` picks what the hardware runs fast: bf16 on CUDA GPUs that support it, fp16 on
    older CUDA GPUs and on MPS, bf16 on CPUs with native bf16 (see :func:`cpu_has_fast_bf16`)
    and full precision (``None``) on other CPUs. ``"bf16"`` / ``"fp16"`` force a format;
    ``None`` or ``"off"``: full precision.
    """
    if amp is None or amp == "off":
        return None
    if amp not in ("auto", "bf16", "fp16"):
        raise ValueError(f"amp must be None, 'auto', 'bf16' or 'fp16', got {amp!r}")
    if amp == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.type == "mps":
            return torch.float16
        return torch.bfloat16 if cpu_has_fast_bf16() else None
    return torch.bfloat16 if amp == "bf16" else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` to ``dtype`` on ``device``, or a no-op context for full precision (``None``)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@dataclass
class Precision:
    """The precision of one training run.

    ``dtype`` is the 16-bit format chosen by :func:`resolve_amp` (``None``: float32). ``autocast_dtype``
    is what the forward pass autocasts to: ``dtype``, except under FSDP, whose mixed-precision policy
    casts the weights itself. ``scaler`` scales fp16 losses (``None`` otherwise).
    """

    device: torch.device
    dtype: torch.dtype | None
    autocast_dtype: torch.dtype | None
    scaler: torch.amp.GradScaler | None

    @classmethod
    def for_run(cls, amp: str | None, device: torch.device | str, sharded: bool = False) -> "Precision":
        """The precision ``amp`` asks for on ``device`` (a ``torch.device`` or a name such as ``"cpu"``)."""
        check_bool("sharded", sharded)
        if isinstance(device, str):
            device = torch.device(device)
        if not isinstance(device, torch.device):
            raise TypeError(f"device must be a torch.device or a name such as 'cpu', got {type(device).__name__}")
        dtype = resolve_amp(amp, device)
        if sharded and dtype == torch.float16:
            raise ValueError("amp='fp16' with strategy='fsdp' is not supported (it would need a sharded gradient "
                             "scaler): use amp='bf16' or amp=None.")
        scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
        return cls(device, dtype, None if sharded else dtype, scaler)

    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.device, self.autocast_dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self, model: nn.Module, optimizer: torch.optim.Optimizer, grad_clip: float | None) -> None:
        """Clip the true (unscaled) gradients to ``grad_clip`` if given, then step the optimizer."""
        if self.scaler is not None:
            if grad_clip is not None:
                self.scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            self.scaler.step(optimizer)
            self.scaler.update()
            return
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
