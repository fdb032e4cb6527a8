"""The course's PyTorch training loop: ``fit``, ``evaluate`` and ``predict``.

The loop is the plain one every chapter would otherwise write (forward, loss, backward,
step), plus what a careful engineer adds: device placement with ``non_blocking`` copies,
optional mixed precision, gradient clipping and accumulation, a learning-rate scheduler,
early stopping, atomic checkpoints with exact resume, data-parallel (DDP) or fully sharded
(FSDP) training when launched by ``torchrun`` (helpers in :mod:`utils.distributed`), a NaN
check that says where training broke, exact validation metrics and a quiet-under-CI progress bar.
"""

from __future__ import annotations

import collections.abc
import contextlib
import math
import os
import random
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ._checks import check_bool, check_int, check_real
from .device import get_device
from .distributed import (STRATEGIES, all_reduce_sums, load_sharded_checkpoint, save_sharded_checkpoint,
                          setup_distributed, shard_loader, shard_model)
from .history import History, monitor_mode

__all__ = ["fit", "evaluate", "predict", "NonFiniteLossError", "resolve_amp", "progress_enabled"]

MetricFn = Callable[[torch.Tensor, torch.Tensor], float]


class NonFiniteLossError(FloatingPointError):
    """Raised when the training loss becomes NaN or infinite."""


def progress_enabled(progress: bool = True) -> bool:
    """Whether to draw progress bars: never under CI (``CI`` set), else as asked."""
    return bool(progress) and not os.environ.get("CI")


class _NoBar:
    """Stands in for a tqdm bar where tqdm is not installed (a bare GPU machine running tools/gpu_check.py)."""

    def __init__(self, iterable: Iterable, **_: Any) -> None:
        self.iterable = iterable

    def __iter__(self) -> Iterator:
        return iter(self.iterable)

    def set_postfix(self, *_: Any, **__: Any) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(iterable: Iterable, **tqdm_kwargs: Any) -> Any:
    """``tqdm.auto.tqdm(iterable, **tqdm_kwargs)``, or a silent stand-in when tqdm is not installed."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _NoBar(iterable)
    return tqdm(iterable, **tqdm_kwargs)


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


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


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


def _check_optimizer_matches(model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Refuse an optimizer none of whose parameters belong to ``model`` (the stale-cell slip)."""
    model_ids = {id(p) for p in model.parameters()}
    optimizer_params = [p for group in optimizer.param_groups for p in group["params"]]
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError("The model has no trainable parameters (all have requires_grad=False): nothing would "
                         "train. Unfreeze some, e.g. model.requires_grad_(True) or for one layer.")
    if optimizer_params and not any(id(p) in model_ids for p in optimizer_params):
        raise ValueError(
            "The optimizer updates parameters that are not this model's (was the model re-created after the "
            "optimizer?), so training would change nothing. Build it from this model: "
            "optimizer = torch.optim.Adam(model.parameters(), lr=...)."
        )


def _check_checkpoint_path(path: Path, folder: bool = False) -> None:
    """Fail before training, not after the first epoch, if the checkpoint cannot be written.
    ``folder``: a sharded checkpoint, which is a folder."""
    if folder and path.exists() and not path.is_dir():
        raise ValueError(f"checkpoint_path {path} is a file, but a sharded (strategy='fsdp') checkpoint is a folder: "
                         "give a folder name, e.g. 'checkpoints/run1'.")
    if not folder and path.is_dir():
        raise ValueError(f"checkpoint_path {path} is a folder; give a file name inside it, e.g. {path / 'checkpoint.pt'}")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"checkpoint_path {path} is inside {parent}, which is a file, not a folder.")
            break
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe = path.with_name(f".{path.name}.{os.getpid()}.write-test.tmp")
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise ValueError(f"checkpoint_path {path} cannot be written ({error.strerror or error}): "
                         "choose a folder you can write to.") from error


def _check_strategy(strategy: Any, optimizer: Any) -> None:
    """Refuse an unknown strategy, a non-optimizer, and a ready optimizer with ``"fsdp"``."""
    if not (strategy is None or isinstance(strategy, str)) or strategy not in STRATEGIES:
        raise ValueError(f"strategy must be None, 'ddp' or 'fsdp', got {strategy!r}")
    if isinstance(optimizer, torch.optim.Optimizer):
        if strategy == "fsdp":
            raise ValueError(
                "strategy='fsdp' replaces the model's parameters by sharded ones, so an optimizer built before would "
                "update nothing: pass a function that builds it, e.g. "
                "optimizer=lambda params: torch.optim.Adam(params, lr=1e-3).")
        return
    if isinstance(optimizer, type) or not callable(optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer or a function params -> optimizer, got "
                        f"{optimizer.__name__ if isinstance(optimizer, type) else type(optimizer).__name__}: build one, "
                        "e.g. torch.optim.SGD(model.parameters(), lr=0.1), or pass lambda p: torch.optim.SGD(p, lr=0.1)")


def _build_optimizer(make: Callable[[Any], torch.optim.Optimizer], model: nn.Module) -> torch.optim.Optimizer:
    optimizer = make(model.parameters())
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer(params) must return a torch.optim.Optimizer, got {type(optimizer).__name__}")
    _check_optimizer_matches(model, optimizer)
    return optimizer


def _parallelize(model: nn.Module, strategy: str | None, device: torch.device,
                 amp_dtype: torch.dtype | None) -> nn.Module:
    """The module ``fit`` trains: a DDP wrapper (``None``/``"ddp"``) or ``model`` sharded in place (``"fsdp"``)."""
    if strategy == "fsdp":
        return shard_model(model, mp_dtype=amp_dtype)
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def _sharded_tensors(model: nn.Module, optimizer: torch.optim.Optimizer,
                     best_state: dict[str, torch.Tensor] | None) -> dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    tensors = {"model": get_model_state_dict(model), "optimizer": get_optimizer_state_dict(model, optimizer)}
    if best_state is not None:
        tensors["best_state"] = best_state
    return tensors


def _write_checkpoint(path: Path, state: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer,
                      best_state: dict[str, torch.Tensor] | None, sharded: bool) -> None:
    if not sharded:
        _save_checkpoint(path, state)
        return
    save_sharded_checkpoint(path, _sharded_tensors(model, optimizer, best_state), state,
                            tag=f"epoch-{state['epoch']:05d}")


def _read_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                     sharded: bool) -> dict[str, Any] | None:
    """Load model and optimizer from the checkpoint and return the rest of its state (None: no checkpoint)."""
    if not sharded:
        if not path.exists():
            return None
        state = _load_checkpoint(path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        return state
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    latest = path / "LATEST"
    if not latest.is_file():
        if path.is_dir() and any(path.iterdir()):
            raise RuntimeError(f"{path} holds no sharded checkpoint written by utils.fit (no LATEST file). "
                               "Delete it or choose another checkpoint_path.")
        return None  # checked first: building the optimizer template below initialises its state
    template = _sharded_tensors(model, optimizer, None)
    extras = torch.load(path / latest.read_text().strip() / "extras-rank0.pt", weights_only=True)
    if extras.get("has_best_state"):
        template["best_state"] = {k: torch.empty_like(v) for k, v in model.state_dict().items()}
    state = load_sharded_checkpoint(path, template)
    set_model_state_dict(model, template["model"])
    set_optimizer_state_dict(model, optimizer, template["optimizer"])
    state["best_state"] = template.get("best_state")
    return state


def fit(
    model: nn.Module,
    train_loader: Iterable,
    *,
    loss_fn: Callable[[Any, Any], torch.Tensor] | None,
    optimizer: torch.optim.Optimizer | Callable[[Any], torch.optim.Optimizer],
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
    grad_accum_steps: int = 1,
    early_stopping: int | None = None,
    monitor: str = "val_loss",
    mode: str | None = None,
    restore_best: bool = True,
    checkpoint_path: str | os.PathLike | None = None,
    resume: bool = False,
    strategy: str | None = None,
) -> History:
    """Train ``model`` for ``num_epochs`` and return a :class:`History`.

    Args:
        model: a ``torch.nn.Module``; moved to ``device``.
        train_loader: yields ``(X, y)`` batches (e.g. :func:`utils.to_torch_loader`).
        loss_fn: ``loss_fn(model(X), y) -> scalar``; ``None`` if ``model(X, y)`` returns
            ``(output, loss)`` itself.
        optimizer: any ``torch.optim`` optimizer over ``model``'s parameters, or a callable
            ``params -> optimizer`` (e.g. ``lambda p: torch.optim.Adam(p, lr=1e-3)``) that ``fit``
            calls once the model is on its device and, with ``strategy="fsdp"``, sharded — then
            required, since sharding replaces the parameters a ready optimizer holds.
        num_epochs: total passes over ``train_loader`` (when resuming, the epochs already
            in the checkpoint count).
        val_loader: evaluated after every epoch (``val_loss`` and ``val_<metric>``).
        metrics: names of built-in metrics (``"accuracy"``) or ``{name: fn(output, y)}``.
            Training metrics are batch averages weighted by batch size (like Keras);
            validation metrics are computed on the whole validation set.
        device: ``None`` picks :func:`utils.get_device`.
        amp: mixed precision, ``None | "auto" | "bf16" | "fp16"`` (fp16 uses a gradient
            scaler; gradients are unscaled before clipping).
        grad_clip: clip the global gradient norm to this value.
        scheduler: a ``torch.optim.lr_scheduler`` stepped every epoch or, with
            ``scheduler_step="step"``, after every optimizer step. ``ReduceLROnPlateau``
            is stepped each epoch with the value of ``monitor`` (``loss`` if not recorded).
        progress: draw a tqdm bar (never under CI; rank 0 only).
        grad_accum_steps: accumulate gradients over this many batches before each optimizer
            step. Each loss is divided by the number of batches in its window (``k``, or
            fewer for the last window of an epoch), so with equal batch sizes the step equals
            one step on a ``k`` times larger batch (exact without BatchNorm).
        early_stopping: patience in epochs: stop when ``monitor`` has not improved for this
            many epochs. Needs ``val_loader``. Only a strictly better value counts as an
            improvement, a tie does not.
        monitor: the recorded name early stopping and ``ReduceLROnPlateau`` watch
            (``val_loss``, ``val_accuracy``…); a name this run does not record is refused.
        mode: ``"min"`` or ``"max"``: whether ``monitor`` should go down or up. ``None`` reads
            it from the name (:func:`utils.history.monitor_mode`: loss, NLL, perplexity/ppl,
            error, MSE/MAE are minimised; accuracy/acc, F1, AUC, precision, recall, score
            maximised) and refuses any other name. A ``ReduceLROnPlateau`` must have been built
            with the same mode.
        restore_best: with ``early_stopping``, load the weights of the best epoch at the end
            (a copy of the ``state_dict`` is kept in memory), whether or not training stopped
            early. ``history.best_epoch`` says which epoch that was.
        checkpoint_path: after every epoch save model, optimizer, scheduler, gradient scaler,
            epoch, history, early-stopping state and random-number states to this file
            (written to a temporary file in the same folder, then renamed: a crash never
            leaves half a checkpoint).
        resume: if the checkpoint exists, load it and continue with the next epoch. The
            global RNGs (Python, NumPy, torch, CUDA) and the shuffling generator of
            ``train_loader`` are restored, so the resumed run repeats exactly what an
            uninterrupted run would have done (same data order, same dropout masks).
            A missing file starts from scratch.
        strategy: ``None`` (DDP when launched by ``torchrun`` with several processes, one plain
            process otherwise), ``"ddp"`` or ``"fsdp"`` (both need ``torchrun``; see below).

    Returns:
        The :class:`History` of every epoch run (including those before a resume), with
        fields ``stopped_epoch`` (the epoch early stopping ended training, else ``None``)
        and ``best_epoch`` (the epoch of the restored weights, else ``None``).

    Distributed data parallel:
        Launched by ``torchrun`` (``WORLD_SIZE > 1``), ``fit`` joins or creates the process
        group (gloo on CPU, NCCL on CUDA, device ``cuda:LOCAL_RANK``), wraps the model in
        ``DistributedDataParallel`` and rebuilds ``train_loader`` with a
        ``DistributedSampler``. Each process keeps the loader's ``batch_size``, so one step
        sees ``world_size * batch_size`` samples: the same step as one process with that
        global batch. Training metrics are summed over all processes; every process
        evaluates the whole validation set (identical weights give identical values), so all
        processes return the same ``History``. Only rank 0 draws progress and writes the
        checkpoint; a resumed run restores rank 0's RNG states on every process.

    Fully sharded data parallel (``strategy="fsdp"``):
        The same data sharding and metrics, but the model is sharded with FSDP2's
        ``fully_shard`` (:func:`utils.distributed.shard_model`: each direct child that holds
        parameters is one unit, then the root), so every rank keeps ``1/world_size`` of the
        weights, gradients and optimizer states; weights are all-gathered before each unit
        runs and gradients reduce-scattered after backward. ``amp`` becomes FSDP's
        ``MixedPrecisionPolicy`` (bf16 compute, float32 gradient reduction and master weights;
        fp16 is refused). ``checkpoint_path`` is then a folder written collectively by
        ``torch.distributed.checkpoint`` (one shard file per rank; a new version is renamed into
        place and named in ``LATEST``, so a crash leaves the previous one); resume needs the
        same number of processes. After ``fit`` the model stays sharded: get full weights with
        :func:`utils.distributed.full_state_dict` (on every rank). End the worker script with
        :func:`utils.distributed.finish_worker` (gloo on CPU can abort at interpreter exit).
        gloo on CPU and NCCL on CUDA, chosen from the device, with no change to the script.

    Raises:
        NonFiniteLossError: the loss became NaN/inf; the message names epoch and step.
        ValueError / TypeError: before the first optimizer step, for what would otherwise
            train a wrong model or fail late: an optimizer built for another model, outputs and
            targets of different shapes for an element-wise loss (``MSELoss``, ``BCEWithLogitsLoss``…),
            class labels that are floats or out of range, one logit with ``CrossEntropyLoss``,
            ``reduction="none"``, integer features, a wrong feature count, an empty or one-pass
            loader, NaN/inf in a batch, an unwritable ``checkpoint_path``, an unknown ``monitor``,
            an unknown ``strategy``, a ready optimizer with ``"fsdp"``.
        RuntimeError: ``strategy="ddp"``/``"fsdp"`` in a process not started by ``torchrun``.

    Example:
        >>> model = nn.Linear(4, 2)
        >>> loader = to_torch_loader(np.random.rand(32, 4), np.random.randint(0, 2, 32), batch_size=8)
        >>> h = fit(model, loader, loss_fn=nn.CrossEntropyLoss(), num_epochs=2,
        ...         optimizer=torch.optim.SGD(model.parameters(), lr=0.1), progress=False)
        >>> h.num_epochs
        2
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module instance, got {model!r}"
                        if isinstance(model, type) else f"model must be a torch.nn.Module, got {type(model).__name__}")
    _check_strategy(strategy, optimizer)
    num_epochs = check_int("num_epochs", num_epochs)
    if grad_clip is not None:
        grad_clip = check_real("grad_clip", grad_clip, positive=True)
    for flag_name, flag in (("restore_best", restore_best), ("resume", resume), ("progress", progress)):
        check_bool(flag_name, flag)
    if scheduler_step not in ("epoch", "step"):
        raise ValueError(f"scheduler_step must be 'epoch' or 'step', got {scheduler_step!r}")
    plateau = isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    if plateau and scheduler_step != "epoch":
        raise ValueError("ReduceLROnPlateau reacts to a validation value once per epoch: use scheduler_step='epoch'.")
    if scheduler is not None and not callable(getattr(scheduler, "step", None)):
        raise TypeError(f"scheduler must be a torch.optim.lr_scheduler object (with .step()), got {type(scheduler).__name__}")
    grad_accum_steps = check_int("grad_accum_steps", grad_accum_steps)
    _check_loss_fn(loss_fn)
    _check_loader(train_loader, "train_loader", passes=num_epochs)
    if val_loader is not None:
        _check_loader(val_loader, "val_loader", passes=num_epochs)
    if isinstance(optimizer, torch.optim.Optimizer):
        _check_optimizer_matches(model, optimizer)
    metric_fns = _resolve_metrics(metrics)
    if mode is not None and mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min', 'max' or None (read from the monitor's name), got {mode!r}")
    if not isinstance(monitor, str):
        raise TypeError(f"monitor must be the name of a recorded value such as 'val_loss', got {type(monitor).__name__}")
    recorded = ["loss", *metric_fns]
    if val_loader is not None:
        recorded += ["val_loss", *(f"val_{name}" for name in metric_fns)]
    if early_stopping is not None:
        early_stopping = check_int("early_stopping (a patience in epochs)", early_stopping)
        if val_loader is None:
            raise ValueError(
                f"early_stopping={early_stopping} needs val_loader: it stops when {monitor!r} on the "
                "validation set has not improved for that many epochs. Pass val_loader=…"
            )
    uses_monitor = early_stopping is not None or plateau
    if (uses_monitor or monitor != "val_loss" or mode is not None) and monitor not in recorded:
        hint = (" (pass val_loader=… to record validation values, or monitor='loss')" if monitor.startswith("val_")
                and val_loader is None else " (add the metric to metrics=… to monitor it)")
        raise ValueError(f"monitor={monitor!r} is not recorded by this run; recorded: {recorded}{hint}.")
    monitor_direction = monitor_mode(monitor, mode) if uses_monitor else None
    if plateau and scheduler.mode != monitor_direction:
        raise ValueError(
            f"ReduceLROnPlateau was built with mode={scheduler.mode!r}, but {monitor!r} is "
            f"{'minimised' if monitor_direction == 'min' else 'maximised'}: build it with "
            f"ReduceLROnPlateau(optimizer, mode={monitor_direction!r}, ...)."
        )
    if resume and checkpoint_path is None:
        raise ValueError("resume=True needs checkpoint_path=… (the file to resume from and to keep saving to).")
    if checkpoint_path is not None and not isinstance(checkpoint_path, (str, os.PathLike)):
        raise TypeError(f"checkpoint_path must be a file path (str or pathlib.Path), got {type(checkpoint_path).__name__}")
    checkpoint = Path(checkpoint_path) if checkpoint_path is not None else None

    device = get_device(device) if not isinstance(device, torch.device) else device
    ctx = setup_distributed(device)
    device = ctx.device
    if strategy is not None and not ctx.enabled:
        raise RuntimeError(
            f"strategy={strategy!r} spreads training over several processes started by torchrun, but this process "
            "is alone (WORLD_SIZE is not above 1). Launch the script with `torchrun --nproc_per_node=2 script.py` "
            "(from a notebook: utils.distributed.run_torchrun('script.py', nproc_per_node=2)), or pass "
            "strategy=None to train in this one process.")
    sharded = strategy == "fsdp"
    amp_dtype = resolve_amp(amp, device)
    if sharded and amp_dtype == torch.float16:
        raise ValueError("amp='fp16' with strategy='fsdp' is not supported (it would need a sharded gradient "
                         "scaler): use amp='bf16' or amp=None.")
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None
    if checkpoint is not None and ctx.is_main:
        _check_checkpoint_path(checkpoint, folder=sharded)
    model.to(device)
    train_model, sampler = model, None
    if ctx.enabled:
        train_model = _parallelize(model, strategy, device, amp_dtype)
        train_loader, sampler = shard_loader(train_loader, ctx)
        if sharded:
            amp_dtype = None  # FSDP's MixedPrecisionPolicy casts; autocast would cast twice
    if not isinstance(optimizer, torch.optim.Optimizer):
        optimizer = _build_optimizer(optimizer, model)

    history = History(framework="torch")
    best_state: dict[str, torch.Tensor] | None = None
    start_epoch = 1
    if resume and checkpoint is not None:
        state = _read_checkpoint(checkpoint, model, optimizer, sharded)
        if state is not None:
            if scheduler is not None and state["scheduler"] is not None:
                scheduler.load_state_dict(state["scheduler"])
            if scaler is not None and state["scaler"] is not None:
                scaler.load_state_dict(state["scaler"])
            history = History(framework=state["history"]["framework"],
                              values={k: list(v) for k, v in state["history"]["values"].items()})
            history.stopped_epoch, history.best_epoch = state["stopped_epoch"], None
            best_state = state["best_state"]
            _set_rng_state(state["rng"])
            _set_generator_states(train_loader, state["loader_generators"])
            start_epoch = state["epoch"] + 1 if state["stopped_epoch"] is None else num_epochs + 1

    bar = progress_bar(range(start_epoch, num_epochs + 1), initial=start_epoch - 1, total=num_epochs, desc=desc,
                       unit="epoch", disable=not (progress_enabled(progress) and ctx.is_main))
    for epoch in bar:
        if sampler is not None:
            sampler.set_epoch(epoch)
        start = time.perf_counter()
        sums = _train_epoch(
            train_model, train_loader, loss_fn=loss_fn, optimizer=optimizer, device=device, amp_dtype=amp_dtype,
            scaler=scaler, grad_clip=grad_clip, grad_accum_steps=grad_accum_steps, metric_fns=metric_fns,
            step_scheduler=scheduler if scheduler_step == "step" else None, epoch=epoch,
        )
        sums = all_reduce_sums(sums, ctx)
        record = {name: sums[name] / sums["n"] for name in ("loss", *metric_fns)}
        if val_loader is not None:
            val = evaluate(model, val_loader, loss_fn=loss_fn, metrics=metric_fns, device=device, amp=amp)
            record.update({f"val_{k}": v for k, v in val.items()})
        if scheduler is not None and scheduler_step == "epoch":
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(record[monitor])
            else:
                scheduler.step()
        record["lr"] = optimizer.param_groups[0]["lr"]
        record["epoch_time_s"] = time.perf_counter() - start
        history.log(**record)
        if early_stopping is not None:
            best_epoch = _first_best_epoch(history[monitor], monitor_direction)
            if best_epoch == epoch and restore_best:
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            elif epoch - best_epoch >= early_stopping:
                history.stopped_epoch = epoch
        if checkpoint is not None and (ctx.is_main or sharded):
            _write_checkpoint(checkpoint, _checkpoint_state(epoch, model, optimizer, scheduler, scaler, history,
                                                            best_state, train_loader, tensors=not sharded),
                              model, optimizer, best_state, sharded)
        bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k in ("loss", "val_loss", "val_accuracy")})
        if history.stopped_epoch is not None:
            break
    bar.close()
    if early_stopping is not None and restore_best and best_state is not None and history.num_epochs:
        model.load_state_dict(best_state)
        history.best_epoch = _first_best_epoch(history[monitor], monitor_direction)
    return history


def _first_best_epoch(values: list[float], mode: str) -> int:
    """1-based epoch of the first best finite value: a later tie is not an improvement."""
    best_epoch, best = 0, math.inf if mode == "min" else -math.inf
    for epoch, value in enumerate(values, start=1):
        if not math.isnan(value) and (value < best if mode == "min" else value > best):
            best_epoch, best = epoch, value
    return best_epoch


def _train_epoch(
    model: nn.Module,
    loader: Iterable,
    *,
    loss_fn: Callable | None,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    amp_dtype: torch.dtype | None,
    scaler: torch.amp.GradScaler | None,
    grad_clip: float | None,
    grad_accum_steps: int,
    metric_fns: dict[str, MetricFn],
    step_scheduler: Any,
    epoch: int,
) -> dict[str, float]:
    """One pass over ``loader``. Returns sums over samples: ``{"loss": Σ loss·n, <metric>: Σ m·n, "n": Σ n}``."""
    model.train()
    try:
        num_batches: int | None = len(loader)  # type: ignore[arg-type]
    except TypeError:
        num_batches = None
    sums = dict.fromkeys(["loss", *metric_fns, "n"], 0.0)
    optimizer.zero_grad(set_to_none=True)
    pending = 0  # batches whose gradients wait for an optimizer step
    for index, batch in enumerate(loader):
        window = grad_accum_steps
        if num_batches is not None:  # the last window of an epoch may be shorter
            window = min(grad_accum_steps, num_batches - index // grad_accum_steps * grad_accum_steps)
        steps_now = index % grad_accum_steps == window - 1
        X, y = _unpack(batch)
        X, y = _to(X, device), _to(y, device)
        # DDP: all-reduce gradients only on the backward that precedes a step
        sync = model.no_sync() if hasattr(model, "no_sync") and not steps_now else contextlib.nullcontext()
        with sync:
            with _autocast(device, amp_dtype):
                output, loss = _forward(model, X, y, loss_fn, check=index == 0)
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                bad = _non_finite_in(X, y)
                if bad is not None:
                    raise ValueError(
                        f"Batch {index + 1} of epoch {epoch} has NaN or infinite {bad}, so the loss is "
                        f"{loss_value}: clean the data first (utils.to_torch_loader refuses NaN/inf)."
                    )
                lr = optimizer.param_groups[0].get("lr")
                raise NonFiniteLossError(
                    f"The training loss became {loss_value} at epoch {epoch}, step {index + 1}. "
                    f"Try a lower learning rate (currently {lr}), gradient clipping (grad_clip=1.0), "
                    "or check the inputs for NaN/inf values."
                )
            scaled = loss / window if window > 1 else loss
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        pending += 1
        if steps_now:
            _optimizer_step(model, optimizer, scaler, grad_clip, step_scheduler)
            pending = 0
        n = len(y) if hasattr(y, "__len__") else 1
        sums["loss"] += loss_value * n
        sums["n"] += n
        if metric_fns:
            with torch.no_grad():
                detached = output.detach().float()
                for name, fn in metric_fns.items():
                    sums[name] += float(fn(detached, y)) * n
    if pending:  # a loader without len() ended inside a window
        _optimizer_step(model, optimizer, scaler, grad_clip, step_scheduler)
    if sums["n"] == 0:
        raise ValueError(
            f"train_loader yielded no batches in epoch {epoch}: is it empty, or a generator that was used up "
            "before? Pass a DataLoader (utils.to_torch_loader) or a list of batches."
        )
    return sums


def _optimizer_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    grad_clip: float | None,
    scheduler: Any,
) -> None:
    if scaler is not None:
        if grad_clip is not None:
            scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
    else:
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if scheduler is not None:
        scheduler.step()


# --- checkpoints -------------------------------------------------------------------------
# Everything is stored as tensors and plain containers so torch.load(weights_only=True) reads it.


def _checkpoint_state(
    epoch: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler | None,
    history: History,
    best_state: dict[str, torch.Tensor] | None,
    train_loader: Any,
    tensors: bool = True,
) -> dict[str, Any]:
    """The checkpoint's contents; ``tensors=False`` leaves out model, optimizer and best weights
    (a sharded checkpoint stores those with ``torch.distributed.checkpoint``)."""
    return {
        "format": 1,
        "epoch": epoch,
        "model": model.state_dict() if tensors else None,
        "optimizer": optimizer.state_dict() if tensors else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "history": {"framework": history.framework, "values": {k: list(v) for k, v in history.values.items()}},
        "stopped_epoch": history.stopped_epoch,
        "best_state": best_state if tensors else None,
        "has_best_state": best_state is not None,
        "rng": _rng_state(),
        "loader_generators": [g.get_state() for g in _loader_generators(train_loader)],
    }


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left behind by a run that was killed mid-save
        with contextlib.suppress(OSError):
            stale.unlink()
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as file:
            torch.save(state, file)
            file.flush()
            os.fsync(file.fileno())  # the bytes are on disk before the rename makes them the checkpoint
        os.replace(temporary, path)  # atomic on POSIX and Windows: readers see old or new, never half
        _fsync_dir(path.parent)
    finally:
        if temporary.exists():
            temporary.unlink()


def _load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise RuntimeError(f"Could not read the checkpoint {path} ({error}). Delete it to start afresh.") from error
    if not isinstance(state, dict) or state.get("format") != 1:
        raise RuntimeError(f"{path} is not a checkpoint written by utils.fit. Delete it or choose another path.")
    return state


def _rng_state() -> dict[str, Any]:
    python = random.getstate()
    numpy_state = np.random.get_state()
    return {
        "python": [python[0], list(python[1]), python[2]],
        "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)),
                  int(numpy_state[2]), int(numpy_state[3]), float(numpy_state[4])],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _loader_generators(loader: Any) -> list[torch.Generator]:
    """The distinct ``torch.Generator`` objects that decide a loader's order."""
    found: list[torch.Generator] = []
    batch_sampler = getattr(loader, "batch_sampler", None)
    for owner in (loader, getattr(loader, "sampler", None), getattr(batch_sampler, "sampler", None)):
        generator = getattr(owner, "generator", None)
        if isinstance(generator, torch.Generator) and all(generator is not g for g in found):
            found.append(generator)
    return found


def _set_generator_states(loader: Any, states: list[torch.Tensor]) -> None:
    generators = _loader_generators(loader)
    if len(generators) != len(states):
        warnings.warn(
            f"The checkpoint holds {len(states)} data-order generator state(s) but train_loader has "
            f"{len(generators)}: the resumed run will not see the data in the same order.", stacklevel=3)
        return
    for generator, generator_state in zip(generators, states):
        generator.set_state(generator_state)


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
            with _autocast(device, amp_dtype):
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
