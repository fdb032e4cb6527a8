"""data/reading_list.csv (chapter 19): what data/README.md promises about the corrected reading list."""

import re

import pandas as pd
import pytest

import utils

COLUMNS = ["title", "authors", "year", "venue", "identifier", "kind", "recommended_in", "status", "note"]
STATUSES = {"verified", "corrected", "not found", "tool"}
KINDS = {"book", "paper", "course", "blog", "website", "tool"}
ARXIV = re.compile(r"^arXiv:\d{4}\.\d{4,5}(v\d+)?$")
DOI = re.compile(r"^DOI 10\.\d{4,9}/\S+$")
ISBN = re.compile(r"^ISBN (97[89]\d{10})$")
URL = re.compile(r"^https?://[^\s/]+\.[^\s/]+(/\S*)?$")
# "000 §7.1.1", "001 §1 (大模型的发展历程)"; several separated by "; ".
REFERENCE = re.compile(r"^00[0-4] §\d+(\.\d+)*( \([^)]+\))?$")


def isbn13_is_valid(digits: str) -> bool:
    """ISBN-13 check digit: weights 1, 3, 1, 3, … over all 13 digits sum to a multiple of 10."""
    return len(digits) == 13 and sum(int(d) * (1 if i % 2 == 0 else 3) for i, d in enumerate(digits)) % 10 == 0


@pytest.fixture(scope="module")
def reading():
    return pd.read_csv(utils.data_path("reading_list.csv"), dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def errata():
    return utils.load_errata().set_index("id")


def test_reading_list_has_the_promised_columns_statuses_and_kinds(reading):
    assert list(reading.columns) == COLUMNS
    assert len(reading) >= 50
    assert set(reading.status) <= STATUSES, sorted(set(reading.status) - STATUSES)
    assert set(reading.kind) <= KINDS, sorted(set(reading.kind) - KINDS)
    assert (reading.title.str.strip() != "").all()


def test_no_item_is_listed_twice(reading):
    def key(title):
        return re.sub(r"\W+", " ", title.split(" (")[0].lower()).strip()

    keys = reading.title.map(key)
    assert keys.is_unique, sorted(keys[keys.duplicated()])
    ids = reading.identifier[reading.identifier != ""]
    assert ids.is_unique, sorted(ids[ids.duplicated()])


def test_every_item_names_the_documents_and_sections_that_recommend_it(reading):
    for _, row in reading.iterrows():
        parts = row.recommended_in.split("; ")
        assert parts and all(REFERENCE.match(p) for p in parts), f"{row.title}: {row.recommended_in!r}"
        assert len(parts) == len(set(parts)), f"{row.title}: a section listed twice"


def test_every_item_that_exists_has_an_identifier_and_only_those(reading):
    found = reading.status != "not found"
    assert (reading.identifier[found] != "").all(), list(reading.title[found & (reading.identifier == "")])
    # An identifier that could not be verified is left empty, not guessed.
    assert (reading.identifier[~found] == "").all(), list(reading.title[~found & (reading.identifier != "")])
    # A verified book or paper also carries its year and venue.
    cited = found & reading.kind.isin({"book", "paper"})
    assert (reading.year[cited].str.fullmatch(r"(19|20)\d\d")).all(), list(reading.title[cited])
    assert (reading.venue[cited] != "").all()


def test_identifiers_are_well_formed_arxiv_ids_dois_isbns_or_urls(reading):
    for _, row in reading[reading.identifier != ""].iterrows():
        ident = row.identifier
        assert ARXIV.match(ident) or DOI.match(ident) or ISBN.match(ident) or URL.match(ident), f"{row.title}: {ident!r}"
        if ident.startswith("arXiv"):
            yymm = ident.split(":")[1][:4]
            assert 1 <= int(yymm[2:]) <= 12, f"{row.title}: month {yymm[2:]} in {ident}"
            assert row.year and int(row.year) >= 2000 + int(yymm[:2]), f"{row.title}: year before its arXiv id"
        if ident.startswith("ISBN"):
            assert isbn13_is_valid(ISBN.match(ident).group(1)), f"{row.title}: ISBN check digit wrong in {ident}"
    # Papers get an arXiv id or DOI wherever one exists; only GPT-2 (an OpenAI report) has a URL here.
    papers = reading[(reading.kind == "paper") & (reading.identifier != "")]
    assert (papers.identifier.str.match(r"arXiv:|DOI ") | papers.identifier.str.contains("openai.com")).all()


def test_the_isbn_check_rejects_a_wrong_check_digit():
    assert isbn13_is_valid("9780262035613")
    assert not isbn13_is_valid("9780262035614")
    assert not isbn13_is_valid("978026203561")


def test_every_corrected_or_missing_item_has_a_citation_errata_row_about_it(reading, errata):
    for _, row in reading[reading.status.isin({"corrected", "not found"})].iterrows():
        ids = re.findall(r"\bE\d{3,4}\b", row.note)
        assert ids, f"{row.title}: the note must name its errata row"
        title = row.title.split(" (")[0]
        surname = row.authors.split(";")[0].split("(")[0].strip().split(" ")[-1] if row.authors else ""
        for id_ in ids:
            assert id_ in errata.index, f"{row.title}: {id_} is not in data/errata.csv"
            text = (errata.loc[id_, "says"] + " " + errata.loc[id_, "correct"]).lower()
            assert title.lower() in text or (surname and surname.lower() in text), f"{id_} does not mention {title!r}"
            assert errata.loc[id_, "document"] in {r[:3] for r in row.recommended_in.split("; ")}
    # The rows written for the reading list are citation errata shown in chapter 19's corrected list.
    mine = errata[errata.index.str.fullmatch(r"E19[5-9]\d")]
    assert len(mine) >= 20
    assert set(mine.kind) == {"citation"} and set(mine.chapter) == {"19"}
    assert set(mine.shown_in) == {"19 § The reading list, corrected"}


def test_every_errata_row_of_the_reading_list_is_used_by_an_item(reading, errata):
    named = set(re.findall(r"\bE19[5-9]\d\b", " ".join(reading.note)))
    mine = set(errata.index[errata.index.str.fullmatch(r"E19[5-9]\d")])
    assert mine <= named, sorted(mine - named)
