"""utils.metrics agrees with scikit-learn (zero_division=0) on random and edge-case inputs."""

import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

import utils.metrics as M

AVERAGES = ["macro", "micro", "weighted"]


def random_labels(seed, n=60, k=4):
    rng = np.random.default_rng(seed)
    return rng.integers(0, k, n), rng.integers(0, k, n)


@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("average", AVERAGES)
def test_multiclass_scores_match_sklearn(seed, average):
    y_true, y_pred = random_labels(seed)
    for ours, theirs in ((M.precision, skm.precision_score), (M.recall, skm.recall_score), (M.f1, skm.f1_score)):
        assert ours(y_true, y_pred, average=average) == pytest.approx(
            theirs(y_true, y_pred, average=average, zero_division=0), abs=1e-12)


@pytest.mark.parametrize("seed", range(10))
def test_binary_scores_accuracy_and_confusion_match_sklearn(seed):
    y_true, y_pred = random_labels(seed, k=2)
    assert M.accuracy(y_true, y_pred) == pytest.approx(skm.accuracy_score(y_true, y_pred))
    for ours, theirs in ((M.precision, skm.precision_score), (M.recall, skm.recall_score), (M.f1, skm.f1_score)):
        assert ours(y_true, y_pred) == pytest.approx(theirs(y_true, y_pred, zero_division=0))
        assert ours(y_true, y_pred, pos_label=0) == pytest.approx(theirs(y_true, y_pred, pos_label=0, zero_division=0))
    np.testing.assert_array_equal(M.confusion_matrix(y_true, y_pred), skm.confusion_matrix(y_true, y_pred))


@pytest.mark.parametrize("average", AVERAGES)
def test_a_class_never_predicted_scores_zero_without_warnings(average):
    y_true = np.array([0, 1, 2, 2, 1, 0, 2])
    y_pred = np.array([0, 1, 1, 1, 1, 0, 0])  # class 2 is never predicted
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = M.precision(y_true, y_pred, average=average)
    assert ours == pytest.approx(skm.precision_score(y_true, y_pred, average=average, zero_division=0))
    assert M.f1(y_true, y_pred, average=average) == pytest.approx(
        skm.f1_score(y_true, y_pred, average=average, zero_division=0))


@pytest.mark.filterwarnings("ignore:A single label was found")
def test_a_single_class_everywhere():
    y = np.array([1, 1, 1])
    assert M.accuracy(y, y) == 1.0
    assert M.precision(y, y) == skm.precision_score(y, y, zero_division=0) == 1.0
    zeros = np.zeros(3, dtype=int)
    assert M.recall(zeros, zeros) == skm.recall_score(zeros, zeros, zero_division=0) == 0.0
    np.testing.assert_array_equal(M.confusion_matrix(y, y), skm.confusion_matrix(y, y))


def test_string_labels_and_explicit_label_order():
    y_true = ["cat", "dog", "dog", "bird"]
    y_pred = ["cat", "cat", "dog", "dog"]
    labels = ["dog", "cat", "bird"]
    np.testing.assert_array_equal(M.confusion_matrix(y_true, y_pred, labels=labels),
                                  skm.confusion_matrix(y_true, y_pred, labels=labels))
    assert M.f1(y_true, y_pred, average="macro") == pytest.approx(
        skm.f1_score(y_true, y_pred, average="macro", zero_division=0))


def test_micro_average_equals_accuracy_for_single_label_data():
    y_true, y_pred = random_labels(3)
    assert M.f1(y_true, y_pred, average="micro") == pytest.approx(M.accuracy(y_true, y_pred))


def test_classification_report_matches_sklearn():
    y_true, y_pred = random_labels(5, k=3)
    ours = M.classification_report(y_true, y_pred, target_names=["a", "b", "c"])
    theirs = skm.classification_report(y_true, y_pred, target_names=["a", "b", "c"], output_dict=True, zero_division=0)
    for name in ("a", "b", "c", "macro avg", "weighted avg"):
        assert ours.loc[name, "precision"] == pytest.approx(theirs[name]["precision"])
        assert ours.loc[name, "recall"] == pytest.approx(theirs[name]["recall"])
        assert ours.loc[name, "f1"] == pytest.approx(theirs[name]["f1-score"])
        assert ours.loc[name, "support"] == theirs[name]["support"]
    assert ours.attrs["accuracy"] == pytest.approx(theirs["accuracy"])


@pytest.mark.parametrize("fn", [M.accuracy, M.precision, M.recall, M.f1, M.confusion_matrix])
def test_mismatched_or_empty_inputs_raise(fn):
    with pytest.raises(ValueError, match="different lengths"):
        fn([0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="empty"):
        fn([], [])
    with pytest.raises(ValueError, match="1-D"):
        fn(np.zeros((3, 2)), np.zeros((3, 2)))


def test_bad_average_and_binary_on_multiclass_raise():
    y_true, y_pred = random_labels(0, k=3)
    with pytest.raises(ValueError, match="average must be"):
        M.f1(y_true, y_pred, average="samples")
    with pytest.raises(ValueError, match="average='binary' needs two classes"):
        M.f1(y_true, y_pred)
    with pytest.raises(ValueError, match="target_names"):
        M.classification_report(y_true, y_pred, target_names=["a"])
