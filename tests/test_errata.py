import re

import pytest

import utils
from conftest import CHAPTERS


def test_errata_rows_are_complete_and_ids_unique():
    frame = utils.load_errata()
    assert len(frame) > 0
    assert frame["id"].is_unique
    for column in utils.errata.ERRATA_COLUMNS:
        assert (frame[column].str.strip() != "").all(), f"empty {column!r} in data/errata.csv"
    assert set(frame["document"]) <= {"000", "001", "002", "003", "004"}


def test_every_errata_row_has_a_known_kind():
    kinds = set(utils.load_errata()["kind"])
    assert kinds <= set(utils.errata.ERRATA_KINDS), f"unknown kinds {sorted(kinds - set(utils.errata.ERRATA_KINDS))}"


def test_every_errata_row_points_at_an_existing_chapter():
    chapters = {p.name[:2] for p in CHAPTERS.glob("[0-9][0-9]_*.ipynb")}
    for _, row in utils.load_errata().iterrows():
        assert row["chapter"] in chapters, f"{row['id']} points at chapter {row['chapter']}, which does not exist"
        assert re.match(r"^\d\d §", row["shown_in"]), f"{row['id']}: shown_in should read 'NN § section'"


def test_load_errata_filters_by_chapter_and_validates():
    assert set(utils.load_errata("02")["chapter"]) == {"02"}
    with pytest.raises(ValueError, match="two-digit"):
        utils.load_errata("2")


def test_show_errata_of_a_chapter_without_rows_says_so_and_refuses_unknown_chapters(monkeypatch):
    import pandas as pd

    monkeypatch.setattr(utils.errata, "load_errata", lambda chapter=None: pd.DataFrame(columns=utils.errata.ERRATA_COLUMNS))
    shown = utils.show_errata("02")
    assert "vague is not wrong" in shown.data
    with pytest.raises(ValueError, match="no chapter 98"):
        utils.show_errata("98")


def test_no_errata_row_is_withdrawn_as_vague_or_only_outdated():
    # A row stands only if the claim is false under a fair reading: a row that itself calls the sentence
    # outdated or right does not belong in the table.
    frame = utils.load_errata()
    bad = frame[frame["correct"].str.contains(r"^(?:Outdated rather than wrong|Right about)", regex=True)]
    assert bad.empty, f"rows that concede the sentence is not wrong: {bad['id'].tolist()}"


def test_one_sentence_is_corrected_by_one_row():
    frame = utils.load_errata()
    quoted = frame["says"].str.extract(r"[（(]([^（()）]*[\u4e00-\u9fff][^（()）]{8,})[)）]", expand=False).dropna()
    assert quoted.is_unique, f"the same Chinese sentence is corrected twice: {quoted[quoted.duplicated()].tolist()}"
