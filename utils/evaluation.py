"""A trained model on data: ``evaluate`` (loss and exact metrics over a loader) and ``predict`` (raw outputs).

Both run the model in eval mode (no dropout, BatchNorm's running statistics) without gradients, and
restore its mode afterwards.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch
from torch import nn

from ._checks import check_int
from .device import get_device
from .forward import _call_model, _check_loader, _check_loss_fn, _forward, _non_finite_in, _to, _unpack
from .precision import autocast, resolve_amp

__all__ = ["evaluate", "predict", "accuracy_from_logits"]

MetricFn = Callable[[torch.Tensor, torch.Tensor], float]


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
    _check_loss_fn(loss_fn)
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
        for index, batch in enumerate(loader):
            X, y = _unpack(batch)
            bad = _non_finite_in(X, y)
            if bad is not None:
                raise ValueError(f"Batch {index + 1} of the loader has NaN or infinite {bad}: the loss and metrics "
                                 "would be NaN. Clean the data first (utils.to_torch_loader refuses NaN/inf).")
            X, y = _to(X, device), _to(y, device)
            with autocast(device, amp_dtype):
                output, loss = _forward(model, X, y, loss_fn, check=index == 0)
            n = len(y) if hasattr(y, "__len__") else 1
            total_loss += loss.item() * n
            total_n += n
            if metric_fns:
                outputs.append(output.float().cpu())
                targets.append(y.cpu())
    finally:
        model.train(was_training)
    if total_n == 0:
        raise ValueError("The loader yielded no batches: is it empty, or a generator that was used up before? "
                         "Pass a DataLoader (utils.to_torch_loader) or a list of batches.")
    result = {"loss": total_loss / total_n}
    if metric_fns:
        all_outputs, all_targets = torch.cat(outputs), torch.cat(targets)
        result.update({name: float(fn(all_outputs, all_targets)) for name, fn in metric_fns.items()})
    return result


def _first_layer(model: nn.Module) -> nn.Module | None:
    for module in model.modules():
        if next(module.parameters(recurse=False), None) is not None:
            return module
    return None


def _as_input_tensor(model: nn.Module, X: Any) -> torch.Tensor:
    if isinstance(X, torch.Tensor):
        return X
    if X is None:
        raise ValueError("X is None: pass an array of samples (first axis = samples).")
    try:
        array = np.asarray(X)
    except ValueError as error:  # ragged nested lists
        raise ValueError(f"X cannot be made into an array ({error}); all samples must have the same shape.") from None
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise TypeError(f"X must be numeric, got dtype {array.dtype}")
    if np.issubdtype(array.dtype, np.integer) and isinstance(_first_layer(model), nn.Embedding):
        return torch.as_tensor(array, dtype=torch.long)  # token ids for an embedding layer (e.g. TinyGPT)
    return torch.as_tensor(array, dtype=torch.float32)


@torch.no_grad()
def predict(
    model: nn.Module, X: Any, *, batch_size: int = 256, device: torch.device | str | None = None
) -> np.ndarray:
    """Raw outputs (e.g. logits) of ``model`` for the samples in ``X``, as a NumPy array.

    ``X`` is an array, nested list or tensor whose first axis is the samples. NumPy input becomes
    float32, except integers for a model whose first layer is an ``nn.Embedding`` (token ids,
    e.g. :class:`utils.TinyGPT`), which become int64; tensors are used as they are. A model
    that returns a tuple ``(output, ...)`` (as ``TinyGPT`` does) contributes its first element.

    Example:
        >>> predict(nn.Linear(3, 2), np.zeros((5, 3))).shape
        (5, 2)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    batch_size = check_int("batch_size", batch_size)
    X_t = _as_input_tensor(model, X)
    if X_t.ndim == 0 or len(X_t) == 0:
        raise ValueError("X is empty: pass at least one sample (first axis = samples).")
    if X_t.is_floating_point() and not torch.isfinite(X_t).all():
        raise ValueError("X contains NaN or infinite values: the outputs would be NaN. Impute or drop them first.")
    device = get_device(device) if not isinstance(device, torch.device) else device
    model.to(device)
    was_training = model.training
    model.eval()
    chunks = []
    try:
        for i in range(0, len(X_t), batch_size):
            part = X_t[i : i + batch_size]
            output = _call_model(model, part.to(device, non_blocking=True))
            if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
                output = output[0]
            if not isinstance(output, torch.Tensor):
                raise TypeError(f"The model returned a {type(output).__name__}; predict needs a tensor (or a tuple "
                                "whose first element is one).")
            if output.ndim == 0 or output.shape[0] != len(part):
                hint = " X is 1-D: for a single sample pass X[None, :]." if X_t.ndim == 1 else ""
                raise ValueError(f"The model returned outputs of shape {tuple(output.shape)} for a batch of "
                                 f"{len(part)} samples (shape {tuple(part.shape)}): the first axis must be the "
                                 f"samples.{hint}")
            chunks.append(output.float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(chunks).numpy()
