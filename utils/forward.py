"""One batch through the model, checked: unpack it, move it to the device, call the model and the loss.

The checks run on the first batch of each pass (``check=True``) and turn the classic slips into errors
that say what to change: a loss class instead of an instance, ``reduction="none"``, outputs and targets
that an element-wise loss would silently broadcast, float or out-of-range class labels, integer features,
a wrong feature count, a model and a batch on different devices, an empty or one-pass loader.
"""

from __future__ import annotations

import collections.abc
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

def _unpack(batch: Any) -> tuple[Any, Any]:
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        for part, name in ((batch[0], "inputs"), (batch[1], "targets")):
            if isinstance(part, np.ndarray):
                raise TypeError(
                    f"A batch holds NumPy arrays ({name} of dtype {part.dtype}), but the model needs torch "
                    "tensors: build the loader with utils.to_torch_loader(X, y, batch_size=...)."
                )
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


_ELEMENTWISE_LOSSES = (nn.MSELoss, nn.L1Loss, nn.SmoothL1Loss, nn.HuberLoss, nn.BCELoss, nn.BCEWithLogitsLoss,
                      nn.SoftMarginLoss, nn.PoissonNLLLoss, nn.KLDivLoss)
_ELEMENTWISE_FUNCTIONS = (F.mse_loss, F.l1_loss, F.smooth_l1_loss, F.huber_loss, F.binary_cross_entropy,
                          F.binary_cross_entropy_with_logits, F.soft_margin_loss, F.poisson_nll_loss, F.kl_div)
_BINARY_LOSSES = (nn.BCELoss, nn.BCEWithLogitsLoss)
_BINARY_FUNCTIONS = (F.binary_cross_entropy, F.binary_cross_entropy_with_logits)
_CLASS_LOSSES = (nn.CrossEntropyLoss, nn.NLLLoss)
_CLASS_FUNCTIONS = (F.cross_entropy, F.nll_loss)


def _loss_name(loss_fn: Any) -> str:
    return getattr(loss_fn, "__name__", None) or type(loss_fn).__name__


def _check_loss_fn(loss_fn: Any) -> None:
    """Refuse a loss class instead of an instance, a non-callable, and ``reduction="none"``."""
    if loss_fn is None:
        return
    if isinstance(loss_fn, type):
        raise TypeError(f"loss_fn is the class {loss_fn.__name__}; pass an instance: loss_fn={loss_fn.__name__}().")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable as loss_fn(output, target), got {type(loss_fn).__name__}")
    if getattr(loss_fn, "reduction", None) == "none":
        raise ValueError(
            f"{_loss_name(loss_fn)}(reduction='none') returns one loss per sample, but training needs one "
            "number per batch: use reduction='mean' (the default)."
        )


def _is(loss_fn: Any, classes: tuple, functions: tuple) -> bool:
    return isinstance(loss_fn, classes) or any(loss_fn is f for f in functions)


def _check_output_and_target(output: Any, y: Any, loss_fn: Any) -> None:
    """Catch the classic shape and dtype slips before the loss silently broadcasts or torch fails."""
    if loss_fn is None:
        return
    if not isinstance(output, torch.Tensor):
        raise TypeError(
            f"model(X) returned a {type(output).__name__}, not a tensor. A model that returns (output, loss) "
            "computes its own loss: pass loss_fn=None."
        )
    if not isinstance(y, torch.Tensor):
        return
    name = _loss_name(loss_fn)
    if _is(loss_fn, _ELEMENTWISE_LOSSES, _ELEMENTWISE_FUNCTIONS):
        if tuple(output.shape) != tuple(y.shape):
            hint = ""
            if output.ndim == y.ndim + 1 and output.shape[-1] == 1:
                hint = (f" (torch would broadcast them to {tuple(torch.broadcast_shapes(output.shape, y.shape))} "
                        "and train a wrong model). Reshape the targets to (N, 1) — y.reshape(-1, 1) — or use a "
                        "model output of shape (N,): output.squeeze(1)")
            raise ValueError(f"{name} compares outputs and targets element by element, but the model output has "
                             f"shape {tuple(output.shape)} and the targets {tuple(y.shape)}{hint}.")
        if _is(loss_fn, _BINARY_LOSSES, _BINARY_FUNCTIONS) and not y.is_floating_point():
            raise TypeError(f"{name} needs float targets (0.0 / 1.0), got {y.dtype}: convert them, e.g. "
                            "y.astype(np.float32) before utils.to_torch_loader.")
    elif _is(loss_fn, _CLASS_LOSSES, _CLASS_FUNCTIONS):
        if output.ndim < 2 or output.shape[1] < 2:
            raise ValueError(
                f"{name} needs one logit per class, output shape (N, C) with C >= 2, but the model outputs "
                f"{tuple(output.shape)}. For two classes either give the last layer 2 outputs, or keep one logit "
                "and use nn.BCEWithLogitsLoss() with float targets of shape (N, 1)."
            )
        n_classes = output.shape[1]
        if y.is_floating_point():
            if tuple(y.shape) == tuple(output.shape):
                return  # class probabilities (soft labels) are allowed
            raise TypeError(
                f"{name} needs integer class labels, got {y.dtype} targets of shape {tuple(y.shape)}: convert "
                "them with y.astype(np.int64) (utils.to_torch_loader keeps integer labels as int64). "
                "For a regression target use nn.MSELoss()."
            )
        expected = (output.shape[0], *output.shape[2:])
        if tuple(y.shape) != expected:
            hint = " — flatten them: y.reshape(-1)" if y.ndim == 2 and y.shape[1] == 1 else ""
            raise ValueError(f"{name} needs class labels of shape {expected} for outputs of shape "
                             f"{tuple(output.shape)}; the targets have shape {tuple(y.shape)}{hint}.")
        ignore = getattr(loss_fn, "ignore_index", -100)
        labels = y[y != ignore]
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
            raise ValueError(
                f"Class labels must lie in [0, {n_classes}) for a model with {n_classes} outputs, got labels from "
                f"{int(labels.min())} to {int(labels.max())}: give the last layer as many outputs as there are "
                "classes, or re-encode the labels as 0..C-1."
            )


def _check_loss_value(loss: Any, loss_fn: Any) -> None:
    if not isinstance(loss, torch.Tensor):
        raise TypeError(f"The loss must be a tensor (so it can be back-propagated), got {type(loss).__name__}.")
    if loss.numel() != 1:
        raise ValueError(
            f"The loss must be one number per batch, got a tensor of shape {tuple(loss.shape)}"
            + (" from loss_fn" if loss_fn is not None else " from the model")
            + ": average it (reduction='mean', or .mean())."
        )


def _describe(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"shape {tuple(x.shape)}, dtype {x.dtype}"
    return type(x).__name__


def _explain_model_error(error: Exception, X: Any) -> Exception | None:
    """A clear error for the classic reasons a model rejects a batch, or None to re-raise as is."""
    text = str(error)
    first_line = text.splitlines()[0] if text else type(error).__name__
    if isinstance(X, torch.Tensor) and any(p in text for p in ("must have the same dtype", "expected scalar type",
                                                               "Expected object of scalar type", "dtype",
                                                               "Input type")):
        if not X.is_floating_point() and X.dtype != torch.bool:
            return TypeError(
                f"The model got integer inputs ({_describe(X)}) but computes in floating point ({first_line}). "
                "Convert features to float32 — X.astype(np.float32) — integers are only for embedding layers "
                "(token ids)."
            )
        return TypeError(f"The inputs ({_describe(X)}) do not have the model's dtype ({first_line}): "
                         "convert them, e.g. X.float() for a float32 model.")
    if any(p in text for p in ("shapes cannot be multiplied", "size mismatch", "to have", "Expected input batch_size",
                               "Given groups", "Expected 3D", "Expected 4D", "expected input")):
        return ValueError(
            f"The model cannot take inputs of {_describe(X)}: {first_line}. Check that the data has the number "
            "of features (or channels, or image size) the model's first layer was built for."
        )
    if "same device" in text:
        return RuntimeError(f"The model and the batch are on different devices ({first_line}): pass device=... "
                            "to fit/evaluate/predict and let it move both.")
    return None


def _call_model(model: nn.Module, *args: Any) -> Any:
    try:
        return model(*args)
    except (RuntimeError, TypeError) as error:
        if isinstance(error, torch.OutOfMemoryError):
            raise
        explained = _explain_model_error(error, args[0])
        if explained is None:
            raise
        raise explained from error


def _forward(model: nn.Module, X: Any, y: Any, loss_fn: Callable | None,
             check: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(output, loss)``. Without ``loss_fn`` the model computes its own loss:
    ``model(X, y)`` must return ``(output, loss)`` (as ``utils.models.TinyGPT`` does).
    ``check`` validates shapes, dtypes and the loss (done on the first batch of a pass)."""
    if loss_fn is None:
        try:
            result = _call_model(model, X, y)
        except TypeError as error:
            if "positional argument" not in str(error):
                raise
            raise TypeError(
                "With loss_fn=None the model is called as model(X, y) and must return (output, loss), but this "
                f"model takes only its inputs ({str(error).splitlines()[0]}): pass a loss_fn, e.g. "
                "loss_fn=nn.CrossEntropyLoss()."
            ) from error
        if not (isinstance(result, (tuple, list)) and len(result) == 2):
            raise TypeError("With loss_fn=None the model must return (output, loss) when called as model(X, y).")
        if check:
            _check_loss_value(result[1], None)
        return result[0], result[1]
    output = _call_model(model, X)
    if check:
        _check_output_and_target(output, y, loss_fn)
    loss = loss_fn(output, y)
    if check:
        _check_loss_value(loss, loss_fn)
    return output, loss


def _non_finite_in(*tensors: Any) -> str | None:
    for name, t in zip(("inputs", "targets"), tensors):
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not torch.isfinite(t).all():
            return name
    return None


def _is_one_pass(loader: Any) -> bool:
    # Not iter(loader) is loader: iterating a shuffling DataLoader draws from its generator.
    return isinstance(loader, collections.abc.Iterator)


def _check_loader(loader: Any, name: str, passes: int = 1) -> None:
    if loader is None:
        raise ValueError(f"{name} is None: pass a DataLoader (see utils.to_torch_loader).")
    if isinstance(loader, (str, bytes, dict)) or not hasattr(loader, "__iter__"):
        raise TypeError(f"{name} must be an iterable of (inputs, targets) batches such as a DataLoader "
                        f"(see utils.to_torch_loader), got {type(loader).__name__}")
    if passes > 1 and _is_one_pass(loader):
        raise ValueError(
            f"{name} is a one-pass iterator ({type(loader).__name__}): it would be empty after the first epoch. "
            "Pass a DataLoader or a list of batches, which can be iterated again."
        )
    try:
        n = len(loader)
    except TypeError:
        return  # an iterable without a length is fine
    if n == 0:
        raise ValueError(f"{name} yields no batches: is the data set empty, or drop_last=True with too few samples?")


