"""Classification metrics written from their definitions (scikit-learn is the reference in tests).

For one class c, with TP/FP/FN counted over the samples:

- precision_c = TP / (TP + FP)  — of the samples predicted c, the share that really are c;
- recall_c    = TP / (TP + FN)  — of the samples that really are c, the share predicted c;
- F1_c        = 2·P·R / (P + R) = 2·TP / (2·TP + FP + FN).

Averages: ``"binary"`` reports the positive class only; ``"macro"`` is the unweighted mean over
classes; ``"weighted"`` weights each class by its support (number of true samples);
``"micro"`` pools the counts of all classes first (for single-label data it equals accuracy).
A ratio whose denominator is 0 is 0, as in scikit-learn with ``zero_division=0``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = ["accuracy", "precision", "recall", "f1", "confusion_matrix", "classification_report"]

_AVERAGES = ("binary", "macro", "micro", "weighted")


def _check(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.ndim != 1 or y_pred.ndim != 1:
        raise ValueError(
            f"y_true and y_pred must be 1-D label arrays, got shapes {y_true.shape} and {y_pred.shape} "
            "(for probabilities or logits take argmax or a threshold first)"
        )
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true and y_pred have different lengths: {len(y_true)} and {len(y_pred)}")
    if len(y_true) == 0:
        raise ValueError("y_true and y_pred are empty: metrics need at least one sample")
    return y_true, y_pred


def _labels(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence | None) -> np.ndarray:
    if labels is not None:
        labels = np.asarray(labels)
        if len(labels) == 0:
            raise ValueError("labels is empty")
        return labels
    return np.unique(np.concatenate([y_true, y_pred]))


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    return np.divide(num, den, out=np.zeros_like(num), where=den != 0)


def confusion_matrix(y_true: Any, y_pred: Any, *, labels: Sequence | None = None) -> np.ndarray:
    """Counts ``C[i, j]`` of samples with true label ``labels[i]`` predicted as ``labels[j]``.

    Example:
        >>> confusion_matrix([0, 1, 1, 2], [0, 2, 1, 2])
        array([[1, 0, 0],
               [0, 1, 1],
               [0, 0, 1]])
    """
    y_true, y_pred = _check(y_true, y_pred)
    labels = _labels(y_true, y_pred, labels)
    index = {label: i for i, label in enumerate(labels.tolist())}
    matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for t, p in zip(y_true.tolist(), y_pred.tolist()):
        if t in index and p in index:  # samples with labels outside `labels` are ignored, as in sklearn
            matrix[index[t], index[p]] += 1
    return matrix


def accuracy(y_true: Any, y_pred: Any) -> float:
    """Share of samples whose predicted label equals the true label.

    Example:
        >>> accuracy([0, 1, 1, 0], [0, 1, 0, 0])
        0.75
    """
    y_true, y_pred = _check(y_true, y_pred)
    return float(np.mean(y_true == y_pred))


def _counts(y_true: np.ndarray, y_pred: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """TP, FP, FN and support of each of ``labels``, counted over all samples (not only those
    whose labels are in ``labels``: a wrong prediction of c is a false positive of c whatever the truth)."""
    every = np.unique(np.concatenate([y_true, y_pred, labels]))
    matrix = confusion_matrix(y_true, y_pred, labels=every)
    position = {label: i for i, label in enumerate(every.tolist())}
    idx = np.array([position[label] for label in labels.tolist()])
    tp = np.diag(matrix)[idx]
    fp = matrix.sum(axis=0)[idx] - tp
    fn = matrix.sum(axis=1)[idx] - tp
    support = matrix.sum(axis=1)[idx]
    return tp, fp, fn, support


def _score(kind: str, y_true: Any, y_pred: Any, average: str, pos_label: Any, labels: Sequence | None) -> float:
    y_true, y_pred = _check(y_true, y_pred)
    if average not in _AVERAGES:
        raise ValueError(f"average must be one of {_AVERAGES}, got {average!r}")
    if average == "binary":
        present = np.unique(np.concatenate([y_true, y_pred]))
        if len(present) > 2:
            raise ValueError(
                f"average='binary' needs two classes but the labels contain {len(present)}: "
                "choose average='macro', 'micro' or 'weighted'"
            )
        labels_arr = np.asarray([pos_label])
    else:
        labels_arr = _labels(y_true, y_pred, labels)
    tp, fp, fn, support = _counts(y_true, y_pred, labels_arr)
    if average == "micro":
        tp, fp, fn = tp.sum(keepdims=True), fp.sum(keepdims=True), fn.sum(keepdims=True)
    if kind == "precision":
        per_class = _safe_div(tp, tp + fp)
    elif kind == "recall":
        per_class = _safe_div(tp, tp + fn)
    else:
        per_class = _safe_div(2 * tp, 2 * tp + fp + fn)
    if average == "weighted":
        return float(_safe_div((per_class * support).sum(), support.sum()))
    return float(per_class.mean())


def precision(y_true: Any, y_pred: Any, *, average: str = "binary", pos_label: Any = 1,
              labels: Sequence | None = None) -> float:
    """Precision TP / (TP + FP), per class then averaged (see the module docstring).

    Example:
        >>> precision([0, 1, 1, 0], [1, 1, 1, 0])
        0.6666666666666666
    """
    return _score("precision", y_true, y_pred, average, pos_label, labels)


def recall(y_true: Any, y_pred: Any, *, average: str = "binary", pos_label: Any = 1,
           labels: Sequence | None = None) -> float:
    """Recall TP / (TP + FN), per class then averaged (see the module docstring).

    Example:
        >>> recall([0, 1, 1, 0], [0, 1, 0, 0])
        0.5
    """
    return _score("recall", y_true, y_pred, average, pos_label, labels)


def f1(y_true: Any, y_pred: Any, *, average: str = "binary", pos_label: Any = 1,
       labels: Sequence | None = None) -> float:
    """F1 = harmonic mean of precision and recall, per class then averaged.

    Example:
        >>> round(f1([0, 1, 1, 0], [1, 1, 0, 0]), 3)
        0.5
    """
    return _score("f1", y_true, y_pred, average, pos_label, labels)


def classification_report(y_true: Any, y_pred: Any, *, target_names: Sequence[str] | None = None,
                          labels: Sequence | None = None) -> Any:
    """Per-class precision, recall, F1 and support, plus macro and weighted averages, as a DataFrame.

    Example:
        >>> classification_report([0, 1, 1], [0, 1, 0], target_names=["neg", "pos"]).loc["pos", "recall"]
        0.5
    """
    import pandas as pd

    y_true, y_pred = _check(y_true, y_pred)
    labels_arr = _labels(y_true, y_pred, labels)
    if target_names is not None and len(target_names) != len(labels_arr):
        raise ValueError(f"{len(target_names)} target_names for {len(labels_arr)} labels {labels_arr.tolist()}")
    tp, fp, fn, support = _counts(y_true, y_pred, labels_arr)
    frame = pd.DataFrame({
        "precision": _safe_div(tp, tp + fp),
        "recall": _safe_div(tp, tp + fn),
        "f1": _safe_div(2 * tp, 2 * tp + fp + fn),
        "support": support,
    }, index=[str(n) for n in (target_names if target_names is not None else labels_arr.tolist())])
    per_class = frame.copy()
    for name, weights in (("macro avg", np.ones(len(per_class))), ("weighted avg", support.astype(float))):
        row = {m: float(_safe_div((per_class[m] * weights).sum(), weights.sum())) for m in ("precision", "recall", "f1")}
        frame.loc[name] = {**row, "support": int(support.sum())}
    frame["support"] = frame["support"].astype(int)
    frame.attrs["accuracy"] = accuracy(y_true, y_pred)
    return frame
