"""data/glossary.csv (chapter 19, 中英术语表): what data/README.md promises about the bilingual glossary."""

import re

import pandas as pd
import pytest

import utils
from conftest import CHAPTERS, ROOT

SEEDS = ROOT.parent / "shared" / "seeds"
# The course map (COURSE.md §3) numbers chapters 00–19. Chapters 18 and 19 are written alongside
# this glossary, so their notebooks may not exist yet; every earlier chapter must exist already.
COURSE_CHAPTERS = {f"{n:02d}" for n in range(20)}
MUST_EXIST = {f"{n:02d}" for n in range(18)}


@pytest.fixture(scope="module")
def glossary():
    return pd.read_csv(utils.data_path("glossary.csv"), dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def seeds_text():
    files = sorted(SEEDS.glob("00[0-4]_*.txt"))
    if len(files) != 5:
        pytest.skip(f"the five source documents are not in {SEEDS}; the glossary's terms cannot be checked against them")
    return {p.name[:3]: p.read_text(encoding="utf-8") for p in files}


def test_glossary_has_the_promised_columns_and_size(glossary):
    assert list(glossary.columns) == ["zh", "en", "definition", "chapter"]
    assert 150 <= len(glossary) <= 400
    for column in glossary.columns:
        assert (glossary[column].str.strip() != "").all(), f"empty {column!r}"
        assert (glossary[column] == glossary[column].str.strip()).all(), f"stray spaces in {column!r}"


def test_every_chinese_term_is_listed_once(glossary):
    assert glossary.zh.is_unique, sorted(glossary.zh[glossary.zh.duplicated()])


def test_every_term_occurs_in_at_least_one_source_document(glossary, seeds_text):
    everything = "\n".join(seeds_text.values())
    missing = [term for term in glossary.zh if term not in everything]
    assert not missing, f"not in any document: {missing}"


def test_the_terms_of_document_000s_own_glossary_are_all_included(glossary, seeds_text):
    text = seeds_text["000"]
    section = text[text.index("### 1.4 术语表"): text.index("## 2. 核心概念与联系")]
    # Lines such as "- 大模型（Large Model）：…", "- **神经网络（Neural Network）**：…", "- AI：人工智能（Artificial Intelligence）"
    terms = set(re.findall(r"^- (?:\*\*)?([^（(：*]+?)(?:\*\*)?[（(]", section, flags=re.M))
    terms |= set(re.findall(r"^- [A-Z]+：([^（(]+)[（(]", section, flags=re.M))
    assert len(terms) >= 8, terms
    assert terms <= set(glossary.zh), sorted(terms - set(glossary.zh))


def test_english_names_and_definitions_are_single_english_lines(glossary):
    for _, row in glossary.iterrows():
        for field in ("en", "definition"):
            value = row[field]
            assert "\n" not in value, f"{row.zh}: {field} spans lines"
            han = len(re.findall(r"[\u4e00-\u9fff]", value))
            assert han <= 0.25 * len(value), f"{row.zh}: {field} is not English"
        assert 25 <= len(row.definition) <= 220, f"{row.zh}: definition of {len(row.definition)} characters"
        assert row.definition[0].isupper() and row.definition.endswith("."), f"{row.zh}: {row.definition!r}"
        assert row.definition.lower() != row.en.lower()


def test_every_term_points_at_a_chapter_of_the_course(glossary):
    existing = {p.name[:2] for p in CHAPTERS.glob("[0-9][0-9]_*.ipynb")}
    assert MUST_EXIST <= existing, f"chapters missing: {sorted(MUST_EXIST - existing)}"
    chapters = set(glossary.chapter)
    assert chapters <= COURSE_CHAPTERS, sorted(chapters - COURSE_CHAPTERS)
    assert all(c in existing for c in chapters & MUST_EXIST)
    # The glossary spans the course, not one corner of it.
    assert len(chapters) >= 18, sorted(COURSE_CHAPTERS - chapters)


def test_every_glossary_row_names_a_chapter_that_uses_the_term():
    # Chapter 19 marks the terms no chapter teaches ("defined here only"); every other row's chapter uses
    # the term in Chinese or in English.
    import json
    import re as _re

    from conftest import CHAPTERS
    from utils import audit

    import csv

    rows = list(csv.DictReader((ROOT / "data" / "glossary.csv").open(encoding="utf-8")))
    texts = {}
    for p in CHAPTERS.glob("[0-9][0-9]_*.ipynb"):
        cells = json.loads(p.read_text(encoding="utf-8"))["cells"]
        texts[p.name[:2]] = "\n".join("".join(c["source"]) if isinstance(c["source"], list) else c["source"] for c in cells)
    unused = [(r["zh"], r["en"], r["chapter"]) for r in rows for ch in _re.findall(r"\d\d", r["chapter"])
              if ch != "19" and not audit.term_used(texts[ch], r["zh"], r["en"])]
    assert not unused, f"glossary rows whose chapter never uses the term: {unused[:5]}"
    zh = {r["zh"] for r in rows}
    for term in ("对抗训练", "同态加密", "模型裁剪", "参数高效微调"):
        assert term in zh, f"{term} is missing from the glossary"
