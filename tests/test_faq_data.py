"""data/faq.csv and data/faq_queries.csv (chapter 12): what data/README.md promises about them."""

import re

import pandas as pd
import pytest

import utils


def normalise(text):
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


@pytest.fixture(scope="module")
def faq():
    return pd.read_csv(utils.data_path("faq.csv"), dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def queries():
    return pd.read_csv(utils.data_path("faq_queries.csv"), dtype=str, keep_default_na=False)


def test_faq_has_40_unique_entries_four_per_intent_of_intents_csv(faq):
    intents = set(pd.read_csv(utils.data_path("intents.csv")).intent)
    assert list(faq.columns) == ["faq_id", "question", "answer", "intent", "alternatives"]
    assert len(faq) == 40 and faq.faq_id.is_unique
    assert set(faq.intent) == intents and (faq.intent.value_counts() == 4).all()
    assert (faq.question.str.strip() != "").all() and (faq.answer.str.len() >= 40).all()
    assert faq.question.map(normalise).is_unique


def test_queries_have_236_rows_labelled_with_an_faq_id_or_none(queries, faq):
    assert list(queries.columns) == ["text", "faq_id", "split"]
    assert len(queries) == 236
    assert set(queries.faq_id) <= set(faq.faq_id) | {"none"}
    assert set(queries.split) == {"dev", "test"}


def test_every_faq_entry_has_five_questions_two_dev_three_test(queries, faq):
    in_scope = queries[queries.faq_id != "none"]
    counts = in_scope.groupby(["faq_id", "split"]).size().unstack()
    assert set(counts.index) == set(faq.faq_id)
    assert (counts["dev"] == 2).all() and (counts["test"] == 3).all()


def test_about_15_percent_are_out_of_scope_in_each_split(queries):
    none = queries[queries.faq_id == "none"]
    assert len(none) == 36 and (none.split == "dev").sum() == 16
    for _, part in queries.groupby("split"):
        assert 0.12 <= (part.faq_id == "none").mean() <= 0.18


def test_queries_are_unique_and_copy_neither_the_faq_nor_intents_csv(queries, faq):
    texts = queries.text.map(normalise)
    assert texts.is_unique
    assert not set(texts) & set(faq.question.map(normalise))
    assert not set(texts) & set(pd.read_csv(utils.data_path("intents.csv")).text.map(normalise))


def alternatives_of(faq):
    return faq.alternatives.str.split(" | ", regex=False)


def test_every_faq_entry_has_four_to_six_distinct_alternative_phrasings(faq):
    alternatives = alternatives_of(faq)
    assert alternatives.map(len).between(4, 6).all()
    for question, phrasings in zip(faq.question, alternatives):
        normalised = [normalise(p) for p in phrasings]
        assert all(normalised) and len(set(normalised)) == len(normalised)
        assert normalise(question) not in normalised and not any("|" in p for p in phrasings)


def test_alternatives_copy_no_customer_question_and_are_not_shared_between_entries(faq, queries):
    every = [normalise(p) for phrasings in alternatives_of(faq) for p in phrasings]
    assert len(set(every)) == len(every)
    assert not set(every) & set(queries.text.map(normalise))
