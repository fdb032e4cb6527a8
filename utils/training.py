"""The course's PyTorch training loop: ``fit``, ``evaluate`` and ``predict``.

The loop is the plain one every chapter would otherwise write (forward, loss, backward,
step), plus what a careful engineer adds: device placement with ``non_blocking`` copies,
optional mixed precision, gradient clipping and accumulation, a learning-rate scheduler,
early stopping, atomic checkpoints with exact resume, data-parallel training when launched
by ``torchrun`` (helpers in :mod:`utils.distributed`), a NaN check that says where training
broke, exact validation metrics and a quiet-under-CI progress bar.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch
from torch import nn

from .device import get_device
from .distributed import all_reduce_sums, setup_distributed, shard_loader
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
    grad_accum_steps: int = 1,
    early_stopping: int | None = None,
    monitor: str = "val_loss",
    restore_best: bool = True,
    checkpoint_path: str | os.PathLike | None = None,
    resume: bool = False,
) -> History:
    """Train ``model`` for ``num_epochs`` and return a :class:`History`.

    Args:
        model: a ``torch.nn.Module``; moved to ``device``.
        train_loader: yields ``(X, y)`` batches (e.g. :func:`utils.to_torch_loader`).
        loss_fn: ``loss_fn(model(X), y) -> scalar``; ``None`` if ``model(X, y)`` returns
            ``(output, loss)`` itself.
        optimizer: any ``torch.optim`` optimizer over ``model``'s parameters.
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
            many epochs. Needs ``val_loader``. The direction follows :meth:`History.best`
            (losses and errors are minimised, anything else maximised); only a strictly
            better value counts as an improvement, a tie does not.
        monitor: the recorded name early stopping watches (``val_loss``, ``val_accuracy``…).
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
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau) and scheduler_step != "epoch":
        raise ValueError("ReduceLROnPlateau reacts to a validation value once per epoch: use scheduler_step='epoch'.")
    if isinstance(grad_accum_steps, bool) or not isinstance(grad_accum_steps, int) or grad_accum_steps < 1:
        raise ValueError(f"grad_accum_steps must be an int >= 1 (1 = no accumulation), got {grad_accum_steps!r}")
    _check_loader(train_loader, "train_loader")
    metric_fns = _resolve_metrics(metrics)
    if early_stopping is not None:
        if isinstance(early_stopping, bool) or not isinstance(early_stopping, int) or early_stopping < 1:
            raise ValueError(f"early_stopping is a patience in epochs (an int >= 1) or None, got {early_stopping!r}")
        if val_loader is None:
            raise ValueError(
                f"early_stopping={early_stopping} needs val_loader: it stops when {monitor!r} on the "
                "validation set has not improved for that many epochs. Pass val_loader=…"
            )
        recorded = ["loss", *metric_fns, "val_loss", *(f"val_{name}" for name in metric_fns)]
        if monitor not in recorded:
            raise ValueError(f"monitor={monitor!r} is not recorded by this run; recorded: {recorded} "
                             "(add the metric to metrics=… to monitor it).")
    if resume and checkpoint_path is None:
        raise ValueError("resume=True needs checkpoint_path=… (the file to resume from and to keep saving to).")
    checkpoint = Path(checkpoint_path) if checkpoint_path is not None else None

    device = get_device(device) if not isinstance(device, torch.device) else device
    ctx = setup_distributed(device)
    device = ctx.device
    amp_dtype = resolve_amp(amp, device)
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None
    model.to(device)

    history = History(framework="torch")
    best_state: dict[str, torch.Tensor] | None = None
    start_epoch = 1
    if resume and checkpoint is not None and checkpoint.exists():
        state = _load_checkpoint(checkpoint)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
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

    train_model, sampler = model, None
    if ctx.enabled:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        train_loader, sampler = shard_loader(train_loader, ctx)

    from tqdm.auto import tqdm

    bar = tqdm(range(start_epoch, num_epochs + 1), initial=start_epoch - 1, total=num_epochs, desc=desc,
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
                scheduler.step(record.get(monitor, record["loss"]))
            else:
                scheduler.step()
        record["lr"] = optimizer.param_groups[0]["lr"]
        record["epoch_time_s"] = time.perf_counter() - start
        history.log(**record)
        if early_stopping is not None:
            best_epoch = _first_best_epoch(history[monitor], _monitor_mode(monitor))
            if best_epoch == epoch and restore_best:
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            elif epoch - best_epoch >= early_stopping:
                history.stopped_epoch = epoch
        if checkpoint is not None and ctx.is_main:
            _save_checkpoint(checkpoint, _checkpoint_state(epoch, model, optimizer, scheduler, scaler, history,
                                                           best_state, train_loader))
        bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k in ("loss", "val_loss", "val_accuracy")})
        if history.stopped_epoch is not None:
            break
    bar.close()
    if early_stopping is not None and restore_best and best_state is not None and history.num_epochs:
        model.load_state_dict(best_state)
        history.best_epoch = _first_best_epoch(history[monitor], _monitor_mode(monitor))
    return history


def _monitor_mode(name: str) -> str:
    """``"min"`` for losses and errors, ``"max"`` otherwise: the rule of :meth:`History.best`."""
    return "min" if any(word in name for word in ("loss", "error", "mse", "mae")) else "max"


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
                output, loss = _forward(model, X, y, loss_fn)
            loss_value = loss.item()
            if not math.isfinite(loss_value):
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
) -> dict[str, Any]:
    return {
        "format": 1,
        "epoch": epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "history": {"framework": history.framework, "values": {k: list(v) for k, v in history.values.items()}},
        "stopped_epoch": history.stopped_epoch,
        "best_state": best_state,
        "rng": _rng_state(),
        "loader_generators": [g.get_state() for g in _loader_generators(train_loader)],
    }


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(state, temporary)
        os.replace(temporary, path)  # atomic on POSIX and Windows: readers see old or new, never half
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
