"""Ranking metrics of utils.metrics (chapter 14) against their definitions and scikit-learn's ndcg_score."""

import math

import numpy as np
import pytest
from sklearn.metrics import ndcg_score

from utils.metrics import hit_rate_at_k, mrr_at_k, ndcg_at_k, recall_at_k


def random_case(seed, n_users=40, n_items=30):
    """Random relevant sets (1-8 items per user) and a random full ranking of all items per user."""
    rng = np.random.default_rng(seed)
    relevant = [set(rng.choice(n_items, rng.integers(1, 9), replace=False).tolist()) for _ in range(n_users)]
    scores = rng.random((n_users, n_items))  # continuous scores: no ties
    ranked = [np.argsort(-row).tolist() for row in scores]
    return relevant, ranked, scores


def binary_relevance(relevant, n_items):
    y_true = np.zeros((len(relevant), n_items))
    for user, items in enumerate(relevant):
        y_true[user, list(items)] = 1.0
    return y_true


def test_recall_at_k_matches_the_hand_computed_example():
    assert recall_at_k([{1, 2}, {5}], [[1, 3, 4], [4, 5, 6]], k=2) == pytest.approx(0.75)
    assert recall_at_k([{1, 2}, {5}], [[1, 3, 4], [4, 5, 6]], k=1) == pytest.approx(0.25)


def test_ndcg_puts_one_relevant_item_at_position_two_at_one_over_log2_of_three():
    assert ndcg_at_k([{1}], [[3, 1, 2]], k=3) == pytest.approx(1 / math.log2(3))
    assert ndcg_at_k([{1, 3}], [[3, 1, 2]], k=3) == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k", [1, 3, 10, 30])
def test_ndcg_equals_sklearn_ndcg_score_on_random_data(seed, k):
    relevant, ranked, scores = random_case(seed)
    y_true = binary_relevance(relevant, scores.shape[1])
    assert ndcg_at_k(relevant, ranked, k) == pytest.approx(ndcg_score(y_true, scores, k=k), abs=1e-12)
    per_user = ndcg_at_k(relevant, ranked, k, per_user=True)
    reference = [ndcg_score(y_true[[u]], scores[[u]], k=k) for u in range(len(relevant))]
    np.testing.assert_allclose(per_user, reference, atol=1e-12)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k", [1, 5, 10])
def test_all_metrics_agree_with_their_direct_definitions_on_random_data(seed, k):
    relevant, ranked, _ = random_case(seed + 100)
    recall = [len(set(r[:k]) & rel) / len(rel) for rel, r in zip(relevant, ranked)]
    hit = [float(bool(set(r[:k]) & rel)) for rel, r in zip(relevant, ranked)]
    rr = []
    for rel, r in zip(relevant, ranked):
        first = [j for j, item in enumerate(r[:k]) if item in rel]
        rr.append(1 / (first[0] + 1) if first else 0.0)
    assert recall_at_k(relevant, ranked, k) == pytest.approx(np.mean(recall))
    assert hit_rate_at_k(relevant, ranked, k) == pytest.approx(np.mean(hit))
    assert mrr_at_k(relevant, ranked, k) == pytest.approx(np.mean(rr))
    np.testing.assert_allclose(recall_at_k(relevant, ranked, k, per_user=True), recall)


def test_with_one_relevant_item_recall_equals_hit_rate():
    relevant, ranked, _ = random_case(7)
    single = [{min(items)} for items in relevant]
    assert recall_at_k(single, ranked, 5) == hit_rate_at_k(single, ranked, 5)


def test_metrics_accept_numpy_rankings_and_string_ids():
    ranked = np.array([[4, 2, 9], [1, 0, 3]])
    assert recall_at_k([{2}, {7}], ranked, 2) == pytest.approx(0.5)
    assert recall_at_k([{"tent"}], [["kettle", "tent"]], 2) == 1.0


def test_only_the_first_k_items_of_a_longer_list_count():
    assert recall_at_k([{9}], [[1, 2, 9]], 2) == 0.0


@pytest.mark.parametrize("metric", [recall_at_k, ndcg_at_k, hit_rate_at_k, mrr_at_k])
def test_metrics_raise_on_empty_input(metric):
    with pytest.raises(ValueError, match="empty"):
        metric([], [], 10)


@pytest.mark.parametrize("metric", [recall_at_k, ndcg_at_k, hit_rate_at_k, mrr_at_k])
@pytest.mark.parametrize("k", [0, -3])
def test_metrics_raise_when_k_is_below_one(metric, k):
    with pytest.raises(ValueError, match="k must be at least 1"):
        metric([{1}], [[1, 2]], k)


@pytest.mark.parametrize("metric", [recall_at_k, ndcg_at_k, hit_rate_at_k, mrr_at_k])
@pytest.mark.parametrize("k", [2.0, "10", None, True])
def test_metrics_raise_type_error_when_k_is_not_an_int(metric, k):
    with pytest.raises(TypeError, match="k must be an int"):
        metric([{1}], [[1, 2]], k)


@pytest.mark.parametrize("metric", [recall_at_k, ndcg_at_k, hit_rate_at_k, mrr_at_k])
def test_metrics_raise_when_lengths_differ(metric):
    with pytest.raises(ValueError, match="different lengths"):
        metric([{1}, {2}], [[1, 2]], 1)


@pytest.mark.parametrize("metric", [recall_at_k, ndcg_at_k, hit_rate_at_k, mrr_at_k])
def test_metrics_raise_for_a_user_without_relevant_items(metric):
    with pytest.raises(ValueError, match="user 1 has no relevant items"):
        metric([{1}, set()], [[1, 2], [2, 1]], 1)


@pytest.mark.parametrize("metric", [recall_at_k, ndcg_at_k])
def test_metrics_raise_on_nan_item_ids(metric):
    with pytest.raises(ValueError, match="NaN"):
        metric([{1.0}], [[float("nan"), 1.0]], 2)
    with pytest.raises(ValueError, match="NaN"):
        metric([[np.nan]], [[1, 2]], 2)


@pytest.mark.parametrize("metric", [recall_at_k, ndcg_at_k])
def test_metrics_raise_type_error_for_wrong_container_types(metric):
    with pytest.raises(TypeError, match="relevant must be a sequence"):
        metric({1, 2}, [[1, 2]], 1)
    with pytest.raises(TypeError, match="ranked must be a sequence"):
        metric([{1}], "12", 1)
    with pytest.raises(TypeError, match=r"ranked\[0\] must be an ordered list"):
        metric([{1}], [{1, 2}], 1)
    with pytest.raises(TypeError, match=r"relevant\[0\] must be a set"):
        metric([5], [[1, 2]], 1)


def test_a_ranked_list_that_repeats_an_item_is_rejected():
    with pytest.raises(ValueError, match="repeats an item"):
        recall_at_k([{1}], [[2, 2, 1]], 3)


ALL_RANKING_METRICS = [recall_at_k, ndcg_at_k, hit_rate_at_k, mrr_at_k]


@pytest.mark.parametrize("metric", ALL_RANKING_METRICS)
def test_metrics_refuse_string_ids_on_one_side_and_int_ids_on_the_other(metric):
    # before: 0.0 silently, as "1" never equals 1
    with pytest.raises(ValueError, match="relevant holds str item ids but ranked holds int"):
        metric([{"1", "2"}], [[1, 2, 3]], 2)
    with pytest.raises(ValueError, match="relevant holds int item ids but ranked holds str"):
        metric([{1}], [np.array(["1", "2"])], 2)


@pytest.mark.parametrize("metric", ALL_RANKING_METRICS)
def test_metrics_refuse_scores_passed_instead_of_item_ids(metric):
    scores = np.array([[0.91, 0.12, 0.55]])
    with pytest.raises(ValueError, match="looks like a score"):
        metric([{0}], scores, 2)


@pytest.mark.parametrize("metric", ALL_RANKING_METRICS)
def test_metrics_refuse_mixed_id_kinds_instead_of_scoring_a_list_and_a_set_differently(metric):
    # before: the list was cast to strings by NumPy and the set was not, giving two different answers
    for relevant in ([[1, "a"]], [{1, "a"}]):
        with pytest.raises(ValueError, match="mixes integer and string item ids"):
            metric(relevant, [[1, "a", 3]], 2)


def test_integer_ids_of_any_numeric_type_still_match():
    ranked = np.array([[3, 1, 2]], dtype=np.int64)
    assert recall_at_k([{np.int32(1)}], ranked, 2) == recall_at_k([[1.0]], [[3, 1, 2]], 2) == 1.0
    assert recall_at_k([{"b"}], [np.array(["a", "b"])], 2) == 1.0


@pytest.mark.parametrize("metric", ALL_RANKING_METRICS)
@pytest.mark.parametrize("flag", ["False", "True", 0, 1, None])
def test_metrics_refuse_per_user_flags_that_are_not_booleans(metric, flag):
    with pytest.raises(TypeError, match="per_user must be True or False"):
        metric([{1}], [[1, 2]], 1, per_user=flag)
    assert isinstance(metric([{1}], [[1, 2]], 1, per_user=np.bool_(True)), np.ndarray)
