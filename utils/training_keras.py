"""Keras counterpart of :func:`utils.fit`: same ``History``, same progress bar."""

from __future__ import annotations

import time
from typing import Any

from ._checks import check_bool, check_int
from .history import History
from .training import progress_enabled

__all__ = ["fit_keras"]


def fit_keras(
    model: Any,
    x: Any,
    y: Any = None,
    *,
    num_epochs: int,
    batch_size: int | None = 32,
    validation_data: Any = None,
    shuffle: bool = True,
    progress: bool = True,
    callbacks: list | None = None,
    desc: str = "training (keras)",
    **fit_kwargs: Any,
) -> History:
    """Train a compiled Keras model with ``model.fit`` and return a course :class:`History`.

    ``x``/``y`` are arrays or ``x`` is a ``tf.data.Dataset`` (then ``y`` and ``batch_size``
    must be None). Keras' own per-epoch logs (``loss``, ``accuracy``, ``val_…``) are kept
    under the same names :func:`utils.fit` uses, plus ``epoch_time_s``.

    Example:
        >>> model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        >>> history = fit_keras(model, X_train, y_train, num_epochs=5, validation_data=(X_val, y_val))
    """
    from .device import configure_tensorflow

    tf = configure_tensorflow()
    _check_model(tf.keras, model)
    num_epochs = check_int("num_epochs", num_epochs)
    if batch_size is not None:
        batch_size = check_int("batch_size", batch_size)
    check_bool("shuffle", shuffle)
    check_bool("progress", progress)
    is_dataset = isinstance(x, tf.data.Dataset)
    if is_dataset:
        batch_size = None
    else:
        _check_arrays(x, y)

    from tqdm.auto import tqdm

    times: list[float] = []  # seconds per epoch, one per epoch run
    bar = tqdm(total=num_epochs, desc=desc, unit="epoch", disable=not progress_enabled(progress))
    own_callbacks, nan_guard = _course_callbacks(tf.keras, times, bar)
    try:
        keras_history = model.fit(
            x, y, batch_size=batch_size, epochs=num_epochs, validation_data=validation_data,
            shuffle=shuffle and not is_dataset, verbose=0, callbacks=[*own_callbacks, *(callbacks or [])],
            **fit_kwargs,
        )
    finally:
        bar.close()
    _raise_if_loss_diverged(nan_guard, epochs_run=len(times))
    return _to_history(keras_history.history, times)


def _check_model(keras: Any, model: Any) -> None:
    """Refuse anything but a compiled ``keras.Model``."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"model must be a keras.Model, got {type(model).__name__}")
    if getattr(model, "optimizer", None) is None or not getattr(model, "compiled", True):
        raise ValueError("The Keras model is not compiled: call model.compile(optimizer=..., loss=...) first.")


def _check_arrays(x: Any, y: Any) -> None:
    """Refuse array inputs without ``y``, empty, of different lengths, or with NaN/inf values."""
    import numpy as np

    if y is None:
        raise ValueError("y is required when x is an array (pass a tf.data.Dataset to omit it).")
    if len(x) == 0:
        raise ValueError("x is empty: pass at least one sample.")
    if len(x) != len(y):
        raise ValueError(f"x and y must have the same number of samples, got {len(x)} and {len(y)}.")
    if np.issubdtype(np.asarray(x).dtype, np.floating) and not np.isfinite(np.asarray(x)).all():
        raise ValueError("x contains NaN or infinite values: impute or drop them before training.")
    if np.issubdtype(np.asarray(y).dtype, np.floating) and not np.isfinite(np.asarray(y)).all():
        raise ValueError("y contains NaN or infinite values: drop those samples or fill the targets first.")


def _course_callbacks(keras: Any, times: list[float], bar: Any) -> tuple[list, Any]:
    """The course's own callbacks (epoch timer into ``times``, progress ``bar``, NaN guard) and the NaN guard.

    The guard stops training at the first non-finite batch loss and keeps ``(step, loss)`` in ``_bad``.
    """

    class _Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            times.append(time.perf_counter() - self._start)

    class _Progress(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            logs = logs or {}
            bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items() if k in ("loss", "val_loss", "val_accuracy")})
            bar.update(1)

    class _StopOnNaN(keras.callbacks.Callback):
        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            loss = (logs or {}).get("loss")
            if loss is not None and not _finite(loss):
                self._bad = (batch + 1, loss)
                self.model.stop_training = True

    nan_guard = _StopOnNaN()
    nan_guard._bad = None  # type: ignore[attr-defined]
    return [_Timer(), _Progress(), nan_guard], nan_guard


def _raise_if_loss_diverged(nan_guard: Any, epochs_run: int) -> None:
    """Raise NonFiniteLossError if the NaN guard stopped training."""
    if nan_guard._bad is not None:
        from .training import NonFiniteLossError

        step, loss = nan_guard._bad
        raise NonFiniteLossError(
            f"The training loss became {loss} at epoch {epochs_run}, step {step}. "
            f"Try a lower learning rate, gradient clipping (clipnorm=1.0 in the optimizer), "
            "or check the inputs for NaN/inf values."
        )


def _to_history(logs: dict, times: list[float]) -> History:
    """A course History from Keras' per-epoch logs (``learning_rate`` renamed ``lr``), plus ``epoch_time_s``."""
    history = History(framework="keras")
    for epoch in range(len(times)):
        record = {k: v[epoch] for k, v in logs.items() if epoch < len(v)}
        if "learning_rate" in record:
            record["lr"] = record.pop("learning_rate")
        record["epoch_time_s"] = times[epoch]
        history.log(**record)
    return history


def _finite(value: Any) -> bool:
    import math

    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return True
