"""Early stopping for ``utils.fit``: watch one recorded value, stop when it stops improving, keep the best weights.

Which way is better (``"min"`` for losses, ``"max"`` for accuracies) is read from the value's name by
:func:`utils.history.monitor_mode` unless ``mode`` says it.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ._checks import check_bool, check_int
from .history import History, monitor_mode

__all__ = ["EarlyStopping", "is_plateau"]


def is_plateau(scheduler: Any) -> bool:
    """True for a ``ReduceLROnPlateau`` scheduler, which is stepped with the monitored value."""
    return isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)


class EarlyStopping:
    """Stop when ``monitor`` has not improved for ``patience`` epochs; keep and restore the best weights.

    Only a strictly better value counts as an improvement (a tie does not). With ``patience=None``
    it only names the monitored value (for ``ReduceLROnPlateau``) and never stops.
    """

    def __init__(self, patience: int | None, monitor: str, direction: str | None, restore_best: bool) -> None:
        self.patience, self.monitor, self.direction = patience, monitor, direction
        self.restore_best = check_bool("restore_best", restore_best)
        self.best_state: dict[str, torch.Tensor] | None = None

    @classmethod
    def checked(cls, patience: Any, monitor: Any, mode: Any, restore_best: bool, recorded: list[str],
                has_val: bool, scheduler: Any = None) -> "EarlyStopping":
        """Validate ``fit``'s options: ``recorded`` names what the run records, ``has_val`` whether it validates."""
        check_bool("has_val", has_val)
        if mode is not None and mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min', 'max' or None (read from the monitor's name), got {mode!r}")
        if not isinstance(monitor, str):
            raise TypeError(f"monitor must be the name of a recorded value such as 'val_loss', got "
                            f"{type(monitor).__name__}")
        if patience is not None:
            patience = check_int("early_stopping (a patience in epochs)", patience)
            if not has_val:
                raise ValueError(f"early_stopping={patience} needs val_loader: it stops when {monitor!r} on the "
                                 "validation set has not improved for that many epochs. Pass val_loader=…")
        uses_monitor = patience is not None or is_plateau(scheduler)
        if (uses_monitor or monitor != "val_loss" or mode is not None) and monitor not in recorded:
            hint = (" (pass val_loader=… to record validation values, or monitor='loss')"
                    if monitor.startswith("val_") and not has_val else " (add the metric to metrics=… to monitor it)")
            raise ValueError(f"monitor={monitor!r} is not recorded by this run; recorded: {recorded}{hint}.")
        direction = monitor_mode(monitor, mode) if uses_monitor else None
        if is_plateau(scheduler) and scheduler.mode != direction:
            raise ValueError(
                f"ReduceLROnPlateau was built with mode={scheduler.mode!r}, but {monitor!r} is "
                f"{'minimised' if direction == 'min' else 'maximised'}: build it with "
                f"ReduceLROnPlateau(optimizer, mode={direction!r}, ...).")
        return cls(patience, monitor, direction, restore_best)

    def update(self, history: History, model: nn.Module, epoch: int) -> None:
        """After ``epoch`` is logged: keep the weights if it is the best so far, or set ``history.stopped_epoch``."""
        if self.patience is None:
            return
        best_epoch = _first_best_epoch(history[self.monitor], self.direction)
        if best_epoch == epoch and self.restore_best:
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        elif epoch - best_epoch >= self.patience:
            history.stopped_epoch = epoch

    def restore(self, model: nn.Module, history: History) -> None:
        """At the end: load the best epoch's weights (if asked) and record it as ``history.best_epoch``."""
        if self.patience is not None and self.restore_best and self.best_state is not None and history.num_epochs:
            model.load_state_dict(self.best_state)
            history.best_epoch = _first_best_epoch(history[self.monitor], self.direction)


def _first_best_epoch(values: list[float], mode: str) -> int:
    """1-based epoch of the first best finite value: a later tie is not an improvement."""
    best_epoch, best = 0, math.inf if mode == "min" else -math.inf
    for epoch, value in enumerate(values, start=1):
        if not math.isnan(value) and (value < best if mode == "min" else value > best):
            best_epoch, best = epoch, value
    return best_epoch
