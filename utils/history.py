"""``History``: one record of a training run, whichever framework trained the model."""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["History", "monitor_mode"]

#: Words of a metric name that say which way is better (used only when ``mode`` is not given).
MINIMISED = ("loss", "nll", "ppl", "perplexity", "error", "err", "mse", "mae", "rmse", "wer", "cer")
MAXIMISED = ("acc", "accuracy", "f1", "auc", "roc_auc", "precision", "recall", "score", "r2", "iou", "dice", "bleu")


def monitor_mode(name: str, mode: str | None = None) -> str:
    """``"min"`` or ``"max"``: ``mode`` if given, else read from the words of ``name``.

    The words of ``name`` (split at ``_``, ``-``, ``.`` and ``/``; a leading ``val`` ignored) are
    looked up in two tables: losses, NLL, perplexity (``ppl``), errors, MSE/MAE are minimised;
    accuracy (``acc``), F1, AUC, precision, recall, scores are maximised. A name matching
    neither (or both) raises ``ValueError``: pass ``mode`` then.

    Example:
        >>> monitor_mode("val_ppl"), monitor_mode("val_accuracy"), monitor_mode("val_wobble", "min")
        ('min', 'max', 'min')
    """
    if mode is not None:
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min', 'max' or None, got {mode!r}")
        return mode
    if not isinstance(name, str):
        raise TypeError(f"the metric name must be a string, got {type(name).__name__}")
    words = [w for w in re.split(r"[_\-./\s]+", name.lower()) if w]
    if words and words[0] == "val":
        words = words[1:]
    lowered = "_".join(words)
    down = any(w in MINIMISED for w in words)
    up = any(w in MAXIMISED for w in words) or lowered in MAXIMISED
    if down == up:
        raise ValueError(
            f"Cannot tell whether {name!r} should be minimised or maximised: pass mode='min' "
            "(losses, errors, perplexity) or mode='max' (accuracy, F1, scores)."
        )
    return "min" if down else "max"


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
            if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:  # NumPy / torch scalars
                value = value.item()
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TypeError(f"History.log: {name}={value!r} is not a number; log one float per name.")
        for name, value in values.items():
            if hasattr(value, "item"):
                value = value.item()
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
        """``(epoch, value)`` of the best epoch (1-based), the first one on a tie.

        ``mode`` is ``"min"`` or ``"max"``; by default it is read from the name (see
        :func:`monitor_mode`: losses, NLL, perplexity and errors are minimised; accuracy, F1,
        AUC, precision, recall and scores maximised); any other name needs ``mode``.
        """
        column = self[metric]
        mode = monitor_mode(metric, mode)
        finite = [(v, i) for i, v in enumerate(column) if not math.isnan(v)]
        if not finite:
            raise ValueError(f"{metric!r} has no finite values yet")
        sign = 1.0 if mode == "min" else -1.0
        value, index = min(finite, key=lambda pair: (sign * pair[0], pair[1]))  # first best epoch on a tie
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
