"""The course's PyTorch training loop: ``fit``, ``evaluate`` and ``predict``.

The loop is the plain one every chapter would otherwise write (forward, loss, backward,
step), plus what a careful engineer adds: device placement with ``non_blocking`` copies,
optional mixed precision, gradient clipping, a learning-rate scheduler, a NaN check that
says where training broke, exact validation metrics and a quiet-under-CI progress bar.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch
from torch import nn

from .device import get_device
from .history import History

__all__ = ["fit", "evaluate", "predict", "NonFiniteLossError", "resolve_amp", "progress_enabled"]

MetricFn = Callable[[torch.Tensor, torch.Tensor], float]


class NonFiniteLossError(FloatingPointError):
    """Raised when the training loss becomes NaN or infinite."""


def progress_enabled(progress: bool = True) -> bool:
    """Whether to draw progress bars: never under CI (``CI`` set), else as asked."""
    return bool(progress) and not os.environ.get("CI")


def accuracy_from_logits(output: torch.Tensor, target: torch.Tensor) -> float:
    """Fraction of correct predictions from raw model outputs.

    ``output`` of shape ``(N, C)`` is scored by argmax; shape ``(N,)`` or ``(N, 1)`` is a
    single logit per sample, predicted positive when it is above 0 (probability 0.5).
    """
    if output.ndim == 2 and output.shape[1] > 1:
        predicted = output.argmax(dim=1)
    else:
        predicted = (output.reshape(-1) > 0).long()
    return (predicted == target.reshape(-1).long()).float().mean().item()


_BUILTIN_METRICS: dict[str, MetricFn] = {"accuracy": accuracy_from_logits}


def _resolve_metrics(metrics: Mapping[str, MetricFn] | Iterable[str] | None) -> dict[str, MetricFn]:
    if metrics is None:
        return {}
    if isinstance(metrics, str):
        metrics = [metrics]
    if isinstance(metrics, Mapping):
        resolved = dict(metrics)
    else:
        resolved = {}
        for name in metrics:
            if name not in _BUILTIN_METRICS:
                raise ValueError(
                    f"Unknown metric {name!r}. Built-in: {sorted(_BUILTIN_METRICS)}; "
                    "or pass a dict {name: fn(output, target) -> float}."
                )
            resolved[name] = _BUILTIN_METRICS[name]
    for name, fn in resolved.items():
        if not callable(fn):
            raise TypeError(f"metric {name!r} must be callable, got {type(fn).__name__}")
        if name.startswith("val_") or name in ("loss", "lr", "epoch_time_s"):
            raise ValueError(f"metric name {name!r} is reserved; choose another name")
    return resolved


def resolve_amp(amp: str | None, device: torch.device) -> torch.dtype | None:
    """Map ``amp`` (``None | "auto" | "bf16" | "fp16"``) to an autocast dtype for ``device``.

    ``"auto"``: bf16 where the hardware supports it (CUDA with bf16, or the CPU),
    fp16 on older CUDA GPUs and on MPS. ``None`` or ``"off"``: full precision.
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
        return torch.bfloat16
    return torch.bfloat16 if amp == "bf16" else torch.float16


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _unpack(batch: Any) -> tuple[Any, Any]:
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    raise TypeError(
        "Each batch must be a pair (inputs, targets), as yielded by utils.to_torch_loader; "
        f"got {type(batch).__name__}"
        + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else "")
    )


def _to(x: Any, device: torch.device) -> Any:
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=True)
    if isinstance(x, (tuple, list)):
        return type(x)(_to(v, device) for v in x)
    if isinstance(x, dict):
        return {k: _to(v, device) for k, v in x.items()}
    return x


def _forward(model: nn.Module, X: Any, y: Any, loss_fn: Callable | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(output, loss)``. Without ``loss_fn`` the model computes its own loss:
    ``model(X, y)`` must return ``(output, loss)`` (as ``utils.models.TinyGPT`` does)."""
    if loss_fn is None:
        result = model(X, y)
        if not (isinstance(result, (tuple, list)) and len(result) == 2):
            raise TypeError("With loss_fn=None the model must return (output, loss) when called as model(X, y).")
        return result[0], result[1]
    output = model(X)
    return output, loss_fn(output, y)


def _check_loader(loader: Any, name: str) -> None:
    if loader is None:
        raise ValueError(f"{name} is None: pass a DataLoader (see utils.to_torch_loader).")
    try:
        n = len(loader)
    except TypeError:
        return  # an iterable without a length is fine
    if n == 0:
        raise ValueError(f"{name} yields no batches: is the data set empty, or drop_last=True with too few samples?")


def fit(
    model: nn.Module,
    train_loader: Iterable,
    *,
    loss_fn: Callable[[Any, Any], torch.Tensor] | None,
    optimizer: torch.optim.Optimizer,
    num_epochs: int,
    val_loader: Iterable | None = None,
    metrics: Mapping[str, MetricFn] | Iterable[str] | None = None,
    device: torch.device | str | None = None,
    amp: str | None = None,
    grad_clip: float | None = None,
    scheduler: Any = None,
    scheduler_step: str = "epoch",
    progress: bool = True,
    desc: str = "training",
) -> History:
    """Train ``model`` for ``num_epochs`` and return a :class:`History`.

    Args:
        model: a ``torch.nn.Module``; moved to ``device``.
        train_loader: yields ``(X, y)`` batches (e.g. :func:`utils.to_torch_loader`).
        loss_fn: ``loss_fn(model(X), y) -> scalar``; ``None`` if ``model(X, y)`` returns
            ``(output, loss)`` itself.
        optimizer: any ``torch.optim`` optimizer over ``model``'s parameters.
        num_epochs: passes over ``train_loader``.
        val_loader: evaluated after every epoch (``val_loss`` and ``val_<metric>``).
        metrics: names of built-in metrics (``"accuracy"``) or ``{name: fn(output, y)}``.
            Training metrics are batch averages weighted by batch size (like Keras);
            validation metrics are computed on the whole validation set.
        device: ``None`` picks :func:`utils.get_device`.
        amp: mixed precision, ``None | "auto" | "bf16" | "fp16"`` (fp16 uses a gradient scaler).
        grad_clip: clip the global gradient norm to this value.
        scheduler: a ``torch.optim.lr_scheduler`` stepped every epoch or, with
            ``scheduler_step="step"``, every optimizer step.
        progress: draw a tqdm bar (never under CI).

    Raises:
        NonFiniteLossError: the loss became NaN/inf; the message names epoch and step.

    Example:
        >>> model = nn.Linear(4, 2)
        >>> loader = to_torch_loader(np.random.rand(32, 4), np.random.randint(0, 2, 32), batch_size=8)
        >>> h = fit(model, loader, loss_fn=nn.CrossEntropyLoss(), num_epochs=2,
        ...         optimizer=torch.optim.SGD(model.parameters(), lr=0.1), progress=False)
        >>> h.num_epochs
        2
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    if isinstance(num_epochs, bool) or not isinstance(num_epochs, int) or num_epochs < 1:
        raise ValueError(f"num_epochs must be a positive int, got {num_epochs!r}")
    if grad_clip is not None and not (isinstance(grad_clip, (int, float)) and grad_clip > 0):
        raise ValueError(f"grad_clip must be a positive number or None, got {grad_clip!r}")
    if scheduler_step not in ("epoch", "step"):
        raise ValueError(f"scheduler_step must be 'epoch' or 'step', got {scheduler_step!r}")
    _check_loader(train_loader, "train_loader")
    metric_fns = _resolve_metrics(metrics)
    device = get_device(device) if not isinstance(device, torch.device) else device
    amp_dtype = resolve_amp(amp, device)
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None
    model.to(device)

    history = History(framework="torch")
    from tqdm.auto import tqdm

    bar = tqdm(range(1, num_epochs + 1), desc=desc, unit="epoch", disable=not progress_enabled(progress))
    for epoch in bar:
        model.train()
        start = time.perf_counter()
        total_loss, total_n = 0.0, 0
        metric_sums = dict.fromkeys(metric_fns, 0.0)
        for step, batch in enumerate(train_loader, start=1):
            X, y = _unpack(batch)
            X, y = _to(X, device), _to(y, device)
            with _autocast(device, amp_dtype):
                output, loss = _forward(model, X, y, loss_fn)
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                lr = optimizer.param_groups[0].get("lr")
                raise NonFiniteLossError(
                    f"The training loss became {loss_value} at epoch {epoch}, step {step}. "
                    f"Try a lower learning rate (currently {lr}), gradient clipping (grad_clip=1.0), "
                    "or check the inputs for NaN/inf values."
                )
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                if grad_clip is not None:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                if grad_clip is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                optimizer.step()
            if scheduler is not None and scheduler_step == "step":
                scheduler.step()
            n = len(y) if hasattr(y, "__len__") else 1
            total_loss += loss_value * n
            total_n += n
            if metric_fns:
                with torch.no_grad():
                    detached = output.detach().float()
                    for name, fn in metric_fns.items():
                        metric_sums[name] += float(fn(detached, y)) * n
        if scheduler is not None and scheduler_step == "epoch":
            scheduler.step()
        record = {"loss": total_loss / total_n}
        record.update({name: s / total_n for name, s in metric_sums.items()})
        if val_loader is not None:
            val = evaluate(model, val_loader, loss_fn=loss_fn, metrics=metric_fns, device=device, amp=amp)
            record.update({f"val_{k}": v for k, v in val.items()})
        record["lr"] = optimizer.param_groups[0]["lr"]
        record["epoch_time_s"] = time.perf_counter() - start
        history.log(**record)
        bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k in ("loss", "val_loss", "val_accuracy")})
    return history


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    *,
    loss_fn: Callable[[Any, Any], torch.Tensor] | None,
    metrics: Mapping[str, MetricFn] | Iterable[str] | None = None,
    device: torch.device | str | None = None,
    amp: str | None = None,
) -> dict[str, float]:
    """Mean loss and metrics of ``model`` over every batch of ``loader`` (in eval mode).

    The loss is averaged per sample (batch means weighted by batch size). Metrics are
    computed once on the concatenated outputs, so they are exact for the whole set.

    Example:
        >>> evaluate(model, val_loader, loss_fn=nn.CrossEntropyLoss(), metrics=["accuracy"])
        {'loss': 0.21, 'accuracy': 0.95}
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    _check_loader(loader, "loader")
    metric_fns = _resolve_metrics(metrics)
    device = get_device(device) if not isinstance(device, torch.device) else device
    amp_dtype = resolve_amp(amp, device)
    model.to(device)
    was_training = model.training
    model.eval()
    total_loss, total_n = 0.0, 0
    outputs, targets = [], []
    try:
        for batch in loader:
            X, y = _unpack(batch)
            X, y = _to(X, device), _to(y, device)
            with _autocast(device, amp_dtype):
                output, loss = _forward(model, X, y, loss_fn)
            n = len(y) if hasattr(y, "__len__") else 1
            total_loss += loss.item() * n
            total_n += n
            if metric_fns:
                outputs.append(output.float().cpu())
                targets.append(y.cpu())
    finally:
        model.train(was_training)
    result = {"loss": total_loss / total_n}
    if metric_fns:
        all_outputs, all_targets = torch.cat(outputs), torch.cat(targets)
        result.update({name: float(fn(all_outputs, all_targets)) for name, fn in metric_fns.items()})
    return result


@torch.no_grad()
def predict(
    model: nn.Module, X: Any, *, batch_size: int = 256, device: torch.device | str | None = None
) -> np.ndarray:
    """Raw outputs (e.g. logits) of ``model`` for the samples in ``X``, as a NumPy array.

    Example:
        >>> predict(nn.Linear(3, 2), np.zeros((5, 3))).shape
        (5, 2)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    X_t = torch.as_tensor(np.asarray(X), dtype=torch.float32) if not isinstance(X, torch.Tensor) else X
    if X_t.ndim == 0 or len(X_t) == 0:
        raise ValueError("X is empty: pass at least one sample.")
    device = get_device(device) if not isinstance(device, torch.device) else device
    model.to(device)
    was_training = model.training
    model.eval()
    try:
        chunks = [model(X_t[i : i + batch_size].to(device, non_blocking=True)).float().cpu()
                  for i in range(0, len(X_t), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(chunks).numpy()
