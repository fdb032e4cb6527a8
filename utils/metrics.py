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

import numbers
from typing import Any, Sequence

import numpy as np

from utils._checks import check_bool

__all__ = ["accuracy", "precision", "recall", "f1", "confusion_matrix", "classification_report"]

_AVERAGES = ("binary", "macro", "micro", "weighted")


def _as_array(values: Any) -> np.ndarray:
    if hasattr(values, "detach") and hasattr(values, "cpu"):  # a torch tensor, perhaps on a GPU
        values = values.detach().cpu().numpy()
    return np.asarray(values)


def _kind(values: np.ndarray, name: str) -> str:
    """``"number"`` or ``"str"``: what kind of labels ``values`` holds (bools count as numbers)."""
    if values.dtype.kind in "biuf":
        return "number"
    if values.dtype.kind in "US":
        return "str"
    kinds = {"str" if isinstance(v, str) else "number" if isinstance(v, (int, float, np.number, bool, np.bool_))
             else type(v).__name__ for v in values.tolist()}
    if len(kinds) == 1 and kinds <= {"str", "number"}:
        return kinds.pop()
    raise ValueError(f"{name} must hold labels of one kind (all numbers or all strings), got {sorted(kinds)}")


def _check_values(values: np.ndarray, name: str) -> None:
    if values.dtype.kind == "f" or (values.dtype == object and _kind(values, name) == "number"):
        numeric = values.astype(float)
        bad = np.flatnonzero(~np.isfinite(numeric))
        if len(bad):
            raise ValueError(f"{name} contains NaN or infinite values (at positions {bad[:5].tolist()}): "
                             "every sample needs a label; drop or fill those samples first.")
        fractional = np.flatnonzero(numeric != np.round(numeric))
        if len(fractional):
            raise ValueError(
                f"{name} holds non-integer values such as {float(numeric[fractional[0]])!r}: these look like "
                "probabilities or scores, not labels. Threshold them ((p >= 0.5).astype(int)) or take the "
                "argmax of the class scores first."
            )


def _check(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    y_true, y_pred = _as_array(y_true), _as_array(y_pred)
    if y_true.ndim != 1 or y_pred.ndim != 1:
        raise ValueError(
            f"y_true and y_pred must be 1-D label arrays, got shapes {y_true.shape} and {y_pred.shape} "
            "(for probabilities or logits take argmax or a threshold first)"
        )
    if len(y_true) != len(y_pred):
        raise ValueError(f"y_true and y_pred have different lengths: {len(y_true)} and {len(y_pred)}")
    if len(y_true) == 0:
        raise ValueError("y_true and y_pred are empty: metrics need at least one sample")
    kind_true, kind_pred = _kind(y_true, "y_true"), _kind(y_pred, "y_pred")
    if kind_true != kind_pred:
        raise ValueError(
            f"y_true holds {kind_true} labels ({y_true[:3].tolist()}…) but y_pred holds {kind_pred} labels "
            f"({y_pred[:3].tolist()}…), so no prediction could ever match: convert one to the other's type, "
            "e.g. np.asarray(y_pred).astype(str) or .astype(int)."
        )
    _check_values(y_true, "y_true")
    _check_values(y_pred, "y_pred")
    return y_true, y_pred


def _labels(y_true: np.ndarray, y_pred: np.ndarray, labels: Sequence | None) -> np.ndarray:
    if labels is not None:
        labels = _as_array(labels)
        if labels.ndim != 1 or len(labels) == 0:
            raise ValueError(f"labels must be a non-empty 1-D list of class labels, got {labels.tolist()!r}")
        if _kind(labels, "labels") != _kind(y_true, "y_true"):
            raise ValueError(f"labels {labels.tolist()} are not of the same type as the labels in y_true and "
                             f"y_pred ({np.unique(np.concatenate([y_true, y_pred])).tolist()[:5]}).")
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
        present_list = present.tolist()
        pos_kind = "str" if isinstance(pos_label, str) else "number" if isinstance(pos_label, (int, float, np.number)) \
            else type(pos_label).__name__
        if pos_kind != _kind(present, "labels") or (pos_label not in present_list and len(present_list) == 2):
            raise ValueError(
                f"pos_label={pos_label!r} (the positive class of average='binary') is not one of the labels "
                f"{present_list}: pass pos_label= one of them, e.g. pos_label={present_list[-1]!r}, or use "
                "average='macro'."
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
        >>> float(classification_report([0, 1, 1], [0, 1, 0], target_names=["neg", "pos"]).loc["pos", "recall"])
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


# --------------------------------------------------------------------------- ranking metrics (chapter 14)
#
# Recommendation is judged on ranked lists. For one user with the set R of relevant items and a ranked
# list L (best first), with binary relevance rel(j) = 1 if L[j] is in R (positions j = 1, 2, ...):
#
# - recall@k   = |top-k(L) ∩ R| / |R|;
# - hit rate@k = 1 if top-k(L) ∩ R is not empty, else 0;
# - NDCG@k     = DCG@k / IDCG@k with DCG@k = Σ_{j ≤ k} rel(j) / log2(j + 1) and IDCG@k the DCG of a perfect
#                list (all of R first): Σ_{j ≤ min(k, |R|)} 1 / log2(j + 1) — scikit-learn's ndcg_score;
# - MRR@k      = 1 / (position of the first relevant item) if it is within the top k, else 0.
#
# Each is averaged over users (``per_user=True`` returns the values per user, e.g. for a bootstrap).

__all__ += ["recall_at_k", "ndcg_at_k", "hit_rate_at_k", "mrr_at_k"]


def _id_kind(item: Any, name: str, user: int) -> str:
    """``"int"`` or ``"str"``: the kind of one item id; a clear error for None, NaN, bools and scores."""
    import numbers

    if isinstance(item, (str, np.str_)):
        return "str"
    if isinstance(item, (bool, np.bool_)) or item is None:
        raise TypeError(f"{name}[{user}] holds {item!r}: item ids are ints or strings, not None or booleans")
    if isinstance(item, numbers.Integral):
        return "int"
    if isinstance(item, numbers.Real):
        if item != item:
            raise ValueError(f"user {user}: item ids must not be None or NaN, got {item!r}")
        if float(item).is_integer():
            return "int"
        raise ValueError(
            f"{name}[{user}] holds {item!r}, which is not an item id: it looks like a score. Pass the item ids "
            "ranked best first, e.g. np.argsort(-scores, axis=1)[:, :k], not the scores themselves.")
    raise TypeError(f"{name}[{user}] holds a {type(item).__name__} ({item!r}); item ids must be ints or strings")


def _as_ids(values: Any) -> list:
    """A user's item ids as a Python list, without NumPy's silent casting of mixed lists to strings."""
    if hasattr(values, "detach") and hasattr(values, "cpu"):  # a torch tensor
        values = values.detach().cpu().numpy()
    if isinstance(values, np.ndarray):
        return values.ravel().tolist()
    return [v.item() if isinstance(v, np.generic) else v for v in values]


def _check_ranking(relevant: Any, ranked: Any, k: Any) -> tuple[list[set], list[list], int]:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise TypeError(f"k must be an int, got {type(k).__name__} {k!r}")
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    for name, value in (("relevant", relevant), ("ranked", ranked)):
        if isinstance(value, (str, bytes, set, frozenset, dict)) or not hasattr(value, "__len__"):
            raise TypeError(f"{name} must be a sequence with one entry per user (a list), got {type(value).__name__}")
    if len(relevant) == 0 or len(ranked) == 0:
        raise ValueError("relevant and ranked are empty: pass one entry per user for at least one user")
    if len(relevant) != len(ranked):
        raise ValueError(f"relevant and ranked have different lengths: {len(relevant)} users and {len(ranked)} ranked lists")
    sets, lists, kinds = [], [], {"relevant": set(), "ranked": set()}
    for user, (items, order) in enumerate(zip(relevant, ranked)):
        if isinstance(items, (str, bytes)) or not hasattr(items, "__iter__"):
            raise TypeError(f"relevant[{user}] must be a set (or list) of item ids, got {type(items).__name__}")
        if isinstance(order, (str, bytes, set, frozenset)) or not hasattr(order, "__iter__"):
            raise TypeError(f"ranked[{user}] must be an ordered list of item ids, got {type(order).__name__}")
        items, head = _as_ids(items), _as_ids(order)[:k]
        for name, values in (("relevant", items), ("ranked", head)):
            kinds[name].update(_id_kind(item, name, user) for item in values)
            if len(kinds[name]) > 1:
                raise ValueError(f"{name} mixes integer and string item ids (user {user}: {values[:5]!r}); "
                                 "use one kind of id throughout, e.g. all ints")
        if not items:
            raise ValueError(f"user {user} has no relevant items: recall and NDCG are undefined for them; "
                             "leave such users out of the evaluation")
        if len(set(head)) != len(head):
            raise ValueError(f"ranked[{user}] repeats an item in its top {k}: a ranked list names each item once")
        sets.append({int(i) if isinstance(i, float) else i for i in items})
        lists.append([int(i) if isinstance(i, float) else i for i in head])
    if kinds["relevant"] and kinds["ranked"] and kinds["relevant"] != kinds["ranked"]:
        raise ValueError(
            f"relevant holds {kinds['relevant'].pop()} item ids but ranked holds {kinds['ranked'].pop()} ids, so no "
            "recommended item could ever count as relevant: convert one side to the other's type "
            "(e.g. [int(i) for i in ids] or [str(i) for i in ids]).")
    return sets, lists, int(k)


def _reduce(values: list[float], per_user: bool) -> Any:
    per_user = check_bool("per_user", bool(per_user) if isinstance(per_user, np.bool_) else per_user)
    values_arr = np.asarray(values, dtype=float)
    return values_arr if per_user else float(values_arr.mean())


def recall_at_k(relevant: Sequence, ranked: Sequence, k: int, *, per_user: bool = False) -> Any:
    """Recall@k: the share of each user's relevant items found in the top ``k`` of their ranked list, averaged.

    ``relevant`` holds one set of relevant item ids per user, ``ranked`` one ranked list of item ids per user
    (best first; only the first ``k`` are read). With ``per_user=True`` returns an array of the per-user values.

    Example:
        >>> recall_at_k([{1, 2}, {5}], [[1, 3, 4], [4, 5, 6]], k=2)
        0.75
    """
    sets, lists, k = _check_ranking(relevant, ranked, k)
    return _reduce([len(r.intersection(l)) / len(r) for r, l in zip(sets, lists)], per_user)


def hit_rate_at_k(relevant: Sequence, ranked: Sequence, k: int, *, per_user: bool = False) -> Any:
    """Hit rate@k: the share of users with at least one relevant item in their top ``k``.

    With one relevant item per user it equals :func:`recall_at_k`.

    Example:
        >>> hit_rate_at_k([{1, 2}, {5}], [[1, 3, 4], [4, 6, 5]], k=2)
        0.5
    """
    sets, lists, k = _check_ranking(relevant, ranked, k)
    return _reduce([float(bool(r.intersection(l))) for r, l in zip(sets, lists)], per_user)


def _dcg(gains: Sequence[float]) -> float:
    return float(sum(g / np.log2(position + 2) for position, g in enumerate(gains)))


def ndcg_at_k(relevant: Sequence, ranked: Sequence, k: int, *, per_user: bool = False) -> Any:
    """NDCG@k with binary relevance, averaged over users (equal to ``sklearn.metrics.ndcg_score``).

    DCG@k = Σ_{j ≤ k} rel(j) / log2(j + 1); IDCG@k is the DCG of the perfect list, so a user whose relevant
    items fill the top of the list scores 1.

    Example:
        >>> round(ndcg_at_k([{1}], [[3, 1, 2]], k=3), 4)  # the only relevant item at position 2: 1 / log2(3)
        0.6309
    """
    sets, lists, k = _check_ranking(relevant, ranked, k)
    values = [_dcg([1.0 if item in r else 0.0 for item in l]) / _dcg([1.0] * min(k, len(r)))
              for r, l in zip(sets, lists)]
    return _reduce(values, per_user)


def mrr_at_k(relevant: Sequence, ranked: Sequence, k: int, *, per_user: bool = False) -> Any:
    """Mean reciprocal rank@k: 1 / (position of the first relevant item), 0 if none is in the top ``k``.

    Example:
        >>> mrr_at_k([{1}, {5}], [[3, 1, 2], [7, 8, 9]], k=3)
        0.25
    """
    sets, lists, k = _check_ranking(relevant, ranked, k)
    values = [next((1.0 / (j + 1) for j, item in enumerate(l) if item in r), 0.0) for r, l in zip(sets, lists)]
    return _reduce(values, per_user)
