"""data/financial_news.csv holds what data/README.md promises (chapter 13)."""

import re

import pandas as pd
import pytest

import utils

LABELS = {"positive", "negative", "neutral"}


@pytest.fixture(scope="module")
def news():
    return pd.read_csv(utils.data_path("financial_news.csv"), keep_default_na=False)


def test_financial_news_has_the_promised_columns_labels_and_size(news):
    assert list(news.columns) == ["text", "label", "split"]
    assert set(news.label) == LABELS
    assert len(news) == 990
    assert (news.text.str.len() >= 15).all() and (news.text.str.len() <= 120).all()


def test_financial_news_split_is_fixed_stratified_330_per_label_230_train_100_test(news):
    counts = news.groupby(["label", "split"]).size().unstack()
    assert set(news.split) == {"train", "test"}
    assert (counts["train"] == 230).all() and (counts["test"] == 100).all()


def test_financial_news_pattern_rows_come_first_and_hand_written_rows_follow_with_the_same_split_share(news):
    parts = {"pattern": (news.iloc[:690], 160, 70), "hand-written": (news.iloc[690:], 70, 30)}
    for name, (part, n_train, n_test) in parts.items():
        counts = part.groupby(["label", "split"]).size().unstack()
        assert set(counts.index) == LABELS, name
        assert (counts["train"] == n_train).all() and (counts["test"] == n_test).all(), name


def test_financial_news_hand_written_rows_split_by_company_so_its_three_headlines_share_a_split(news):
    hand = news.iloc[690:].reset_index(drop=True)
    blocks = [hand.iloc[k * 100:(k + 1) * 100] for k in range(3)]
    assert [set(b.label) for b in blocks] == [{"positive"}, {"negative"}, {"neutral"}]
    first_words = [b.text.str.extract(r"([A-Z][a-z]+)", expand=False).reset_index(drop=True) for b in blocks]
    assert (first_words[0] == first_words[1]).mean() > 0.8, "the blocks are not in the same company order"
    splits = [b.split.reset_index(drop=True) for b in blocks]
    assert (splits[0] == splits[1]).all() and (splits[1] == splits[2]).all()


def test_financial_news_has_no_duplicates_after_normalising_case_and_punctuation(news):
    key = news.text.str.lower().str.replace(r"[^a-z0-9]", "", regex=True)
    assert not key.duplicated().any()


def test_financial_news_contains_numbers_and_negations_in_every_label(news):
    for label, group in news.groupby("label"):
        assert group.text.str.contains(r"\d").mean() > 0.2, f"{label}: too few headlines with numbers"
        negated = group.text.str.contains(r"\b(?:not|no|fails?|never|unable|cannot|without)\b", flags=re.I)
        assert negated.sum() >= 5, f"{label}: too few headlines with a negation"

