"""``History``: one record of a training run, whichever framework trained the model."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["History"]


@dataclass
class History:
    """Per-epoch values of a training run, shared by :func:`utils.fit` and :func:`utils.fit_keras`.

    ``values`` maps a name to one value per epoch. Names follow Keras: ``loss``,
    ``val_loss``, ``accuracy``, ``val_accuracy``, …; ``fit`` also records
    ``epoch_time_s`` and ``lr``. Plots (:func:`utils.plot_history`) only read this object,
    so they don't care which framework trained the model.

    Example:
        >>> h = History(framework="torch")
        >>> h.log(loss=0.9, val_loss=1.0); h.log(loss=0.5, val_loss=0.7)
        >>> h.best("val_loss")
        (2, 0.7)
    """

    framework: str = "torch"
    values: dict[str, list[float]] = field(default_factory=dict)
    #: epoch at which early stopping ended training (1-based), ``None`` if it ran to the end
    stopped_epoch: int | None = None
    #: epoch whose weights :func:`utils.fit` restored (``restore_best=True``), else ``None``
    best_epoch: int | None = None

    def log(self, **values: float) -> None:
        """Append one epoch of values (missing names are padded with NaN)."""
        n = self.num_epochs
        for name, value in values.items():
            column = self.values.setdefault(name, [math.nan] * n)
            column.append(float(value))
        for name, column in self.values.items():
            if len(column) < n + 1:
                column.append(math.nan)

    @property
    def num_epochs(self) -> int:
        return max((len(v) for v in self.values.values()), default=0)

    def __getitem__(self, name: str) -> list[float]:
        if name not in self.values:
            raise KeyError(f"{name!r} was not recorded; recorded: {sorted(self.values)}")
        return self.values[name]

    def __contains__(self, name: object) -> bool:
        return name in self.values

    def keys(self) -> list[str]:
        return list(self.values)

    def best(self, metric: str = "val_loss", mode: str | None = None) -> tuple[int, float]:
        """``(epoch, value)`` of the best epoch (1-based). ``mode`` is ``"min"`` or ``"max"``;
        by default losses and errors are minimised and anything else maximised."""
        column = self[metric]
        if mode is None:
            mode = "min" if any(word in metric for word in ("loss", "error", "mse", "mae")) else "max"
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        finite = [(v, i) for i, v in enumerate(column) if not math.isnan(v)]
        if not finite:
            raise ValueError(f"{metric!r} has no finite values yet")
        value, index = (min if mode == "min" else max)(finite)
        return index + 1, value

    def to_dataframe(self) -> Any:
        """A pandas DataFrame with one row per epoch (index ``epoch`` starting at 1)."""
        import pandas as pd

        n = self.num_epochs
        frame = pd.DataFrame({k: v + [math.nan] * (n - len(v)) for k, v in self.values.items()})
        frame.index = pd.RangeIndex(1, n + 1, name="epoch")
        return frame

    def __repr__(self) -> str:
        last = {k: round(v[-1], 4) for k, v in self.values.items() if v}
        extra = "".join(f", {name}={getattr(self, name)}" for name in ("stopped_epoch", "best_epoch")
                        if getattr(self, name) is not None)
        return f"History(framework={self.framework!r}, epochs={self.num_epochs}, last={last}{extra})"
