"""The course's PyTorch training loop: ``fit``.

``fit`` is the plain loop every chapter would otherwise write — for each epoch, forward, loss,
backward and an optimizer step per batch, then validation — plus what a careful engineer adds.
Each addition is one named piece, in the module of its concern:

- one batch through the model, with the checks that explain the classic slips: :mod:`utils.forward`;
- how a step is made (loss, clipping, accumulation, scheduler): :class:`StepRule` below;
- mixed precision and the gradient scaler: :class:`utils.precision.Precision`;
- validation (``evaluate``, exact metrics) and ``predict``: :mod:`utils.evaluation`;
- early stopping on a monitored value, best weights restored: :class:`utils.early_stopping.EarlyStopping`;
- atomic checkpoints and an exact resume: :class:`utils.checkpoint.Checkpointer`;
- data-parallel (DDP) and fully sharded (FSDP) training under ``torchrun``: :mod:`utils.distributed`;
- the record of the run: :class:`utils.history.History`; a progress bar that is quiet under CI.

``evaluate``, ``predict``, ``resolve_amp`` and ``accuracy_from_logits`` are importable from here too.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping

import torch
from torch import nn

from ._checks import check_bool, check_int, check_real
from .checkpoint import Checkpointer
from .device import get_device
from .distributed import STRATEGIES, DistributedContext, all_reduce_sums, setup_distributed, shard_loader, shard_model
from .early_stopping import EarlyStopping, is_plateau
from .evaluation import MetricFn, _resolve_metrics, accuracy_from_logits, evaluate, predict
from .forward import _check_loader, _check_loss_fn, _forward, _non_finite_in, _to, _unpack
from .history import History
from .precision import Precision, cpu_has_fast_bf16, resolve_amp

__all__ = ["fit", "evaluate", "predict", "NonFiniteLossError", "resolve_amp", "cpu_has_fast_bf16",
           "accuracy_from_logits", "progress_enabled", "StepRule", "EarlyStopping"]


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




@dataclass
class StepRule:
    """How ``fit`` makes one optimizer step: the loss, gradient clipping and accumulation, and the scheduler.

    ``scheduler_step="epoch"`` steps the scheduler after every epoch (``ReduceLROnPlateau`` with the
    monitored value), ``"step"`` after every optimizer step.
    """

    loss_fn: Callable | None
    grad_clip: float | None = None
    accumulate: int = 1
    scheduler: Any = None
    scheduler_step: str = "epoch"

    @classmethod
    def checked(cls, loss_fn: Any, grad_clip: Any, grad_accum_steps: Any, scheduler: Any,
                scheduler_step: Any) -> "StepRule":
        if grad_clip is not None:
            grad_clip = check_real("grad_clip", grad_clip, positive=True)
        if scheduler_step not in ("epoch", "step"):
            raise ValueError(f"scheduler_step must be 'epoch' or 'step', got {scheduler_step!r}")
        if is_plateau(scheduler) and scheduler_step != "epoch":
            raise ValueError("ReduceLROnPlateau reacts to a validation value once per epoch: use scheduler_step='epoch'.")
        if scheduler is not None and not callable(getattr(scheduler, "step", None)):
            raise TypeError(f"scheduler must be a torch.optim.lr_scheduler object (with .step()), got "
                            f"{type(scheduler).__name__}")
        grad_accum_steps = check_int("grad_accum_steps", grad_accum_steps)
        _check_loss_fn(loss_fn)
        return cls(loss_fn, grad_clip, grad_accum_steps, scheduler, scheduler_step)

    @property
    def per_step_scheduler(self) -> Any:
        return self.scheduler if self.scheduler_step == "step" else None

    def end_epoch(self, record: Mapping[str, float], monitor: str) -> None:
        """Step an epoch-wise scheduler; ``ReduceLROnPlateau`` gets the value of ``monitor``."""
        if self.scheduler is None or self.scheduler_step != "epoch":
            return
        if is_plateau(self.scheduler):
            self.scheduler.step(record[monitor])
        else:
            self.scheduler.step()


def fit(
    model: nn.Module, train_loader: Iterable, *, loss_fn: Callable[[Any, Any], torch.Tensor] | None,
    optimizer: torch.optim.Optimizer | Callable[[Any], torch.optim.Optimizer], num_epochs: int,
    val_loader: Iterable | None = None, metrics: Mapping[str, MetricFn] | Iterable[str] | None = None,
    device: torch.device | str | None = None, amp: str | None = None, grad_clip: float | None = None,
    scheduler: Any = None, scheduler_step: str = "epoch", progress: bool = True, desc: str = "training",
    grad_accum_steps: int = 1, early_stopping: int | None = None, monitor: str = "val_loss", mode: str | None = None,
    restore_best: bool = True, checkpoint_path: str | os.PathLike | None = None, resume: bool = False,
    strategy: str | None = None,
) -> History:
    """Train ``model`` for ``num_epochs`` and return the :class:`History` of every epoch.

    Args:
        model: a ``torch.nn.Module``; moved to ``device``.
        train_loader: yields ``(X, y)`` batches (e.g. :func:`utils.to_torch_loader`).
        loss_fn: ``loss_fn(model(X), y) -> scalar``; ``None`` if ``model(X, y)`` returns ``(output, loss)``.
        optimizer: a ``torch.optim`` optimizer over ``model``'s parameters, or ``params -> optimizer`` (e.g.
            ``lambda p: torch.optim.Adam(p, lr=1e-3)``), called once the model is on its device and, with
            ``strategy="fsdp"``, sharded — then required, since sharding replaces the parameters.
        num_epochs: total passes over ``train_loader`` (a resumed run counts the epochs already done).
        val_loader: evaluated after every epoch (``val_loss`` and ``val_<metric>``).
        metrics: built-in names (``"accuracy"``) or ``{name: fn(output, y)}``. Training metrics are batch
            averages weighted by batch size (like Keras); validation metrics are exact on the whole set.
        device: ``None`` picks :func:`utils.get_device`.
        amp: mixed precision, ``None | "auto" | "bf16" | "fp16"`` (:mod:`utils.precision`; fp16 scales
            the loss, and gradients are unscaled before clipping).
        grad_clip, grad_accum_steps, scheduler, scheduler_step: how a step is made (:class:`StepRule`):
            clip the global gradient norm; accumulate gradients over ``k`` batches (each loss divided by
            its window's batch count, so with equal batches a step equals one on a ``k`` times larger
            batch); step the scheduler every ``"epoch"`` (``ReduceLROnPlateau`` with ``monitor``) or ``"step"``.
        progress, desc: a tqdm bar labelled ``desc`` (never under CI; rank 0 only).
        early_stopping, monitor, mode, restore_best: stop when ``monitor`` (a recorded name such as
            ``val_loss`` or ``val_accuracy``) has not strictly improved for ``early_stopping`` epochs;
            ``mode`` ``"min"``/``"max"``, or ``None`` to read it from the name (:func:`utils.history.monitor_mode`);
            end with the best epoch's weights if ``restore_best`` (:class:`EarlyStopping`). Needs ``val_loader``.
        checkpoint_path, resume: save everything needed to resume after every epoch, atomically; with
            ``resume``, continue exactly where the checkpoint ended — same data order, same dropout masks
            (:mod:`utils.checkpoint`). A missing checkpoint starts from scratch.
        strategy: ``None`` (DDP when launched by ``torchrun`` with several processes, one plain process
            otherwise), ``"ddp"`` or ``"fsdp"`` (both need ``torchrun``; see :mod:`utils.distributed`).

    Returns:
        The :class:`History` (epochs before a resume included), with ``stopped_epoch`` (the epoch early
        stopping ended training, else ``None``) and ``best_epoch`` (the restored weights' epoch, else ``None``).

    Raises:
        NonFiniteLossError: the loss became NaN/inf; the message names epoch and step.
        ValueError / TypeError: before the first step, for what would train a wrong model or fail late — the
            batch checks of :mod:`utils.forward`, an optimizer built for another model, NaN/inf in a batch,
            an unwritable ``checkpoint_path``, an unknown ``monitor`` or ``strategy``, a ready optimizer with ``"fsdp"``.
        RuntimeError: ``strategy="ddp"``/``"fsdp"`` in a process not started by ``torchrun``.

    Example:
        >>> model = nn.Linear(4, 2)
        >>> loader = to_torch_loader(np.random.rand(32, 4), np.random.randint(0, 2, 32), batch_size=8)
        >>> fit(model, loader, loss_fn=nn.CrossEntropyLoss(), optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        ...     num_epochs=2, progress=False).num_epochs
        2
    """
    num_epochs = _check_run(model, optimizer, num_epochs, strategy, progress=progress, resume=resume,
                            restore_best=restore_best)
    step = StepRule.checked(loss_fn, grad_clip, grad_accum_steps, scheduler, scheduler_step)
    _check_data(model, train_loader, val_loader, optimizer, num_epochs)
    metric_fns = _resolve_metrics(metrics)
    stopping = EarlyStopping.checked(early_stopping, monitor, mode, restore_best, _recorded(metric_fns, val_loader),
                                     has_val=val_loader is not None, scheduler=scheduler)
    checkpointer = Checkpointer.checked(checkpoint_path, resume, sharded=strategy == "fsdp")
    ctx = _join_processes(device, strategy)
    precision = Precision.for_run(amp, ctx.device, sharded=strategy == "fsdp")
    if checkpointer is not None and ctx.is_main:
        checkpointer.check_writable()
    train_model, train_loader, sampler, optimizer = _place(model, train_loader, optimizer, strategy, ctx, precision)
    history, first = _resume(checkpointer, model, optimizer, step, precision, train_loader, stopping, num_epochs)
    bar = progress_bar(range(first, num_epochs + 1), initial=first - 1, total=num_epochs, desc=desc, unit="epoch",
                       disable=not (progress_enabled(progress) and ctx.is_main))
    for epoch in bar:
        if sampler is not None:
            sampler.set_epoch(epoch)
        start = time.perf_counter()
        sums = all_reduce_sums(_train_epoch(train_model, train_loader, optimizer, step, precision, metric_fns, epoch),
                               ctx)
        record = {name: sums[name] / sums["n"] for name in ("loss", *metric_fns)}
        if val_loader is not None:
            val = evaluate(model, val_loader, loss_fn=loss_fn, metrics=metric_fns, device=ctx.device, amp=amp)
            record.update({f"val_{k}": v for k, v in val.items()})
        step.end_epoch(record, monitor)
        record.update(lr=optimizer.param_groups[0]["lr"], epoch_time_s=time.perf_counter() - start)
        history.log(**record)
        stopping.update(history, model, epoch)
        if checkpointer is not None and (ctx.is_main or checkpointer.sharded):
            checkpointer.save(epoch, model, optimizer, scheduler, precision.scaler, history, stopping.best_state,
                              train_loader)
        bar.set_postfix({k: f"{v:.4g}" for k, v in record.items() if k in ("loss", "val_loss", "val_accuracy")})
        if history.stopped_epoch is not None:
            break
    bar.close()
    stopping.restore(model, history)
    return history


# --- set-up: arguments, processes, devices, resume ----------------------------------------


def _check_run(model: Any, optimizer: Any, num_epochs: Any, strategy: Any, *, progress: Any, resume: Any,
               restore_best: Any) -> int:
    """Check the model, the strategy and the flags; return ``num_epochs`` as an int."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module instance, got {model!r}"
                        if isinstance(model, type) else f"model must be a torch.nn.Module, got {type(model).__name__}")
    _check_strategy(strategy, optimizer)
    num_epochs = check_int("num_epochs", num_epochs)
    for flag_name, flag in (("restore_best", restore_best), ("resume", resume), ("progress", progress)):
        check_bool(flag_name, flag)
    return num_epochs


def _check_data(model: nn.Module, train_loader: Any, val_loader: Any, optimizer: Any, num_epochs: int) -> None:
    """Check the loaders (each must yield batches for every epoch) and that a ready optimizer is ``model``'s."""
    _check_loader(train_loader, "train_loader", passes=num_epochs)
    if val_loader is not None:
        _check_loader(val_loader, "val_loader", passes=num_epochs)
    if isinstance(optimizer, torch.optim.Optimizer):
        _check_optimizer_matches(model, optimizer)


def _recorded(metric_fns: Mapping[str, MetricFn], val_loader: Any) -> list[str]:
    """The names a run records each epoch (besides ``lr`` and ``epoch_time_s``)."""
    recorded = ["loss", *metric_fns]
    if val_loader is not None:
        recorded += ["val_loss", *(f"val_{name}" for name in metric_fns)]
    return recorded


def _join_processes(device: Any, strategy: str | None) -> DistributedContext:
    """Pick the device and, under ``torchrun``, join the process group; refuse a strategy without it."""
    device = get_device(device) if not isinstance(device, torch.device) else device
    ctx = setup_distributed(device)
    if strategy is not None and not ctx.enabled:
        raise RuntimeError(
            f"strategy={strategy!r} spreads training over several processes started by torchrun, but this process "
            "is alone (WORLD_SIZE is not above 1). Launch the script with `torchrun --nproc_per_node=2 script.py` "
            "(from a notebook: utils.distributed.run_torchrun('script.py', nproc_per_node=2)), or pass "
            "strategy=None to train in this one process.")
    return ctx


def _place(model: nn.Module, train_loader: Any, optimizer: Any, strategy: str | None, ctx: DistributedContext,
           precision: Precision) -> tuple[nn.Module, Any, Any, torch.optim.Optimizer]:
    """Move the model to its device; under ``torchrun`` wrap or shard it and shard the data; build the optimizer.

    Returns the module to train (``model`` itself, or its DDP wrapper), the loader, its
    ``DistributedSampler`` (``None`` in one process) and the optimizer."""
    model.to(ctx.device)
    train_model, sampler = model, None
    if ctx.enabled:
        train_model = _parallelize(model, strategy, ctx.device, precision.dtype)
        train_loader, sampler = shard_loader(train_loader, ctx)
    if not isinstance(optimizer, torch.optim.Optimizer):
        optimizer = _build_optimizer(optimizer, model)
    return train_model, train_loader, sampler, optimizer


def _resume(checkpointer: Checkpointer | None, model: nn.Module, optimizer: torch.optim.Optimizer, step: StepRule,
            precision: Precision, train_loader: Any, stopping: EarlyStopping, num_epochs: int) -> tuple[History, int]:
    """The history so far and the first epoch to run: from the checkpoint when resuming, else a fresh start."""
    state = None
    if checkpointer is not None and checkpointer.resume:
        state = checkpointer.restore(model, optimizer, step.scheduler, precision.scaler, train_loader)
    if state is None:
        return History(framework="torch"), 1
    stopping.best_state = state["best_state"]
    return state["history"], state["epoch"] + 1 if state["stopped_epoch"] is None else num_epochs + 1


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


# --- one epoch -------------------------------------------------------------------------------


def _train_epoch(model: nn.Module, loader: Iterable, optimizer: torch.optim.Optimizer, step: StepRule,
                 precision: Precision, metric_fns: dict[str, MetricFn], epoch: int) -> dict[str, float]:
    """One pass over ``loader``. Returns sums over samples: ``{"loss": Σ loss·n, <metric>: Σ m·n, "n": Σ n}``."""
    model.train()
    try:
        num_batches: int | None = len(loader)  # type: ignore[arg-type]
    except TypeError:
        num_batches = None
    k = step.accumulate
    sums = dict.fromkeys(["loss", *metric_fns, "n"], 0.0)
    optimizer.zero_grad(set_to_none=True)
    pending = 0  # batches whose gradients wait for an optimizer step
    for index, batch in enumerate(loader):
        window = k if num_batches is None else min(k, num_batches - index // k * k)  # the last window may be shorter
        steps_now = index % k == window - 1
        X, y = _unpack(batch)
        X, y = _to(X, precision.device), _to(y, precision.device)
        # DDP: all-reduce gradients only on the backward that precedes a step
        sync = model.no_sync() if hasattr(model, "no_sync") and not steps_now else contextlib.nullcontext()
        with sync:
            with precision.autocast():
                output, loss = _forward(model, X, y, step.loss_fn, check=index == 0)
            loss_value = loss.item()
            _check_finite_loss(loss_value, X, y, index, epoch, optimizer)
            precision.backward(loss / window if window > 1 else loss)
        pending += 1
        if steps_now:
            _optimizer_step(model, optimizer, step, precision)
            pending = 0
        _accumulate(sums, loss_value, output, y, metric_fns)
    if pending:  # a loader without len() ended inside a window
        _optimizer_step(model, optimizer, step, precision)
    if sums["n"] == 0:
        raise ValueError(
            f"train_loader yielded no batches in epoch {epoch}: is it empty, or a generator that was used up "
            "before? Pass a DataLoader (utils.to_torch_loader) or a list of batches."
        )
    return sums


def _check_finite_loss(loss_value: float, X: Any, y: Any, index: int, epoch: int,
                       optimizer: torch.optim.Optimizer) -> None:
    """Say where training broke when the loss is NaN/inf: in the data (ValueError) or in training."""
    if math.isfinite(loss_value):
        return
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


def _accumulate(sums: dict[str, float], loss_value: float, output: torch.Tensor, y: Any,
                metric_fns: dict[str, MetricFn]) -> None:
    """Add one batch's loss and metrics, weighted by its size, to the epoch's sums."""
    n = len(y) if hasattr(y, "__len__") else 1
    sums["loss"] += loss_value * n
    sums["n"] += n
    if metric_fns:
        with torch.no_grad():
            detached = output.detach().float()
            for name, fn in metric_fns.items():
                sums[name] += float(fn(detached, y)) * n


def _optimizer_step(model: nn.Module, optimizer: torch.optim.Optimizer, step: StepRule, precision: Precision) -> None:
    precision.step(model, optimizer, step.grad_clip)
    optimizer.zero_grad(set_to_none=True)
    if step.per_step_scheduler is not None:
        step.per_step_scheduler.step()
