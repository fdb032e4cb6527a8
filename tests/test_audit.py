"""The audit of the documents (data/audit.csv), the FAQ (data/faq_documents.csv) and chapter 19's cross-checks.

Tests that read the source documents look for them in ``../shared/seeds/`` beside the repository and skip,
saying so, when they are not there (a clone without the documents). Everything else runs on the repository alone.
"""

import csv
import re

import pytest

from conftest import CHAPTERS, ROOT
from utils import audit

DATA = ROOT / "data"
SEEDS = ROOT.parent / "shared" / "seeds"
CHAPTER19 = CHAPTERS / "19_faq_glossary_and_errata.ipynb"
SEED_FILES = sorted(SEEDS.glob("00[0-4]_*.txt")) if SEEDS.is_dir() else []
needs_seeds = pytest.mark.skipif(len(SEED_FILES) != 5, reason=f"the five source documents are not in {SEEDS}")


def _rows(name):
    with (DATA / name).open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _chapters():
    return {p.name[:2]: p for p in CHAPTERS.glob("[0-9][0-9]_*.ipynb")}


def _links(field):
    """'NN § heading; NN § heading' -> [(NN, heading)]; a malformed part fails the test."""
    pairs = []
    for part in filter(None, (p.strip() for p in field.split(";"))):
        m = re.match(r"^(\d\d) § (.+)$", part)
        assert m, f"{part!r} should read 'NN § heading'"
        pairs.append(m.groups())
    return pairs


# --- utils.audit --------------------------------------------------------------------------------------


def test_document_headings_reads_markdown_and_numbered_bold_headings_but_not_code(tmp_path):
    doc = tmp_path / "doc.txt"
    doc.write_text("# 标题\n\n## 1. 背景介绍\n\n**2.1 定义**\n\n**优点**：\n\n```python\n# 训练模型\n```\n"
                   "**Q1: 为什么？**\n", encoding="utf-8")
    assert [(h.level, h.text) for h in audit.document_headings(doc)] == [
        (1, "标题"), (2, "1. 背景介绍"), (audit.BOLD_LEVEL, "2.1 定义"), (audit.BOLD_LEVEL, "Q1: 为什么？")]


def test_faq_questions_stop_at_the_next_heading_of_the_same_level():
    hs = [audit.Heading(2, "9. 附录：常见问题与解答", 1), audit.Heading(3, "9.1 常见问题", 2),
          audit.Heading(7, "Q1: 如何？", 3), audit.Heading(2, "10. 扩展阅读", 4), audit.Heading(3, "10.1 为何？", 5)]
    assert audit.faq_questions(hs) == ["Q1: 如何？"]


def test_section_names_heading_needs_a_separator_on_both_sides():
    assert audit.section_names_heading("2.2.4 激活函数; 2.3.4 激活函数", "2.3.4 激活函数")
    assert audit.section_names_heading("附录：常见问题与解答 / 3. 如何优化？ (all three copies)", "3. 如何优化？")
    assert not audit.section_names_heading("5.2 源代码详细实现和代码解读", "5.2 源代码详细实现")
    assert not audit.section_names_heading("12.1 定义", "2.1 定义")


def test_shown_in_exists_matches_heading_prefixes_and_ignores_a_trailing_note():
    headings = ["A sourced timeline (001 §1)", "5 · The FAQ's other advice — 001 附录 3"]
    assert audit.shown_in_exists("A sourced timeline", headings)
    assert audit.shown_in_exists("5 The FAQ's other advice (pruning timing cell)", headings)
    assert not audit.shown_in_exists("A timeline", headings)


def test_audit_functions_refuse_bad_input(tmp_path):
    with pytest.raises(ValueError, match="not a file"):
        audit.document_headings(tmp_path / "missing.txt")
    with pytest.raises(TypeError, match="path"):
        audit.document_headings(3)
    with pytest.raises(ValueError, match="three-digit"):
        audit.count_errata_rows([], "0", "1. 背景介绍")
    with pytest.raises(ValueError, match="heading is empty"):
        audit.section_names_heading("1. 背景介绍", " ")
    with pytest.raises(ValueError, match="non-empty"):
        audit.shown_in_exists("", ["Summary"])
    with pytest.raises(TypeError, match="Heading"):
        audit.faq_questions(["9.1 问题？"])


def test_refresh_audit_counts_rewrites_only_the_count_column(tmp_path):
    (tmp_path / "audit.csv").write_text("document,section,covered_by,errata_rows,audited\n000,4.2 损失函数,03,0,yes\n",
                                        encoding="utf-8")
    (tmp_path / "errata.csv").write_text("id,document,section\nE1,000,4.2 损失函数; 4.5 举例说明\n", encoding="utf-8")
    assert audit.refresh_audit_counts(tmp_path / "audit.csv", tmp_path / "errata.csv") == 1
    assert (tmp_path / "audit.csv").read_text(encoding="utf-8").splitlines()[1] == "000,4.2 损失函数,03,1,yes"
    assert not list(tmp_path.glob(".audit.*"))


# --- data/audit.csv -----------------------------------------------------------------------------------


@needs_seeds
def test_audit_csv_covers_every_heading_of_the_five_documents():
    listed = {(r["document"], r["section"]) for r in _rows("audit.csv")}
    printed = {(p.name[:3], h.text) for p in SEED_FILES for h in audit.document_headings(p)}
    assert printed - listed == set(), f"headings missing from data/audit.csv: {sorted(printed - listed)[:10]}"
    assert listed - printed == set(), f"data/audit.csv lists headings the documents do not print: {sorted(listed - printed)[:10]}"


@needs_seeds
def test_audit_csv_has_a_row_for_every_copy_whose_text_differs():
    listed = [(r["document"], r["section"], r["copies"]) for r in _rows("audit.csv")]
    expected = [(p.name[:3], section, copies) for p in SEED_FILES for section, copies in audit.heading_copies(p)]
    assert sorted(listed) == sorted(expected), (
        f"missing {sorted(set(expected) - set(listed))[:5]}, extra {sorted(set(listed) - set(expected))[:5]}")
    # The case that a merged row hid: 001 prints §5.4 twice with different listings and results.
    assert ("001", "5.4 运行结果展示", "2") in listed


def test_audit_csv_rows_are_unique_and_say_how_each_heading_is_covered():
    rows, chapters = _rows("audit.csv"), _chapters()
    assert list(rows[0]) == ["document", "section", "copies", "covered_by", "coverage", "errata_rows"]
    keys = [(r["document"], r["section"], r["copies"]) for r in rows]
    assert len(keys) == len(set(keys)), "a heading copy is listed twice"
    for r in rows:
        numbers = re.findall(r"\d\d", r["covered_by"])
        assert set(numbers) <= set(chapters), f"{r['section']!r}: covered_by {r['covered_by']!r}"
        if r["coverage"] == "demonstrated":
            assert numbers, f"{r['document']} {r['section']!r} is 'demonstrated' but names no chapter"
        else:
            reason = r["coverage"].removeprefix("read only: ")
            assert r["coverage"].startswith("read only: ") and len(reason) >= 15, (
                f"{r['document']} {r['section']!r}: coverage must be 'demonstrated' or 'read only: <reason>'")
    read_only = sum(r["coverage"] != "demonstrated" for r in rows)
    only19 = sum(r["covered_by"] == "19" and r["coverage"] == "demonstrated" for r in rows)
    assert read_only > 0 and only19 < 60, "chapter 19 is not a catch-all: a heading it only reads is 'read only'"


def test_audit_csv_errata_rows_equal_the_errata_that_name_each_heading():
    errata = _rows("errata.csv")
    stale = [(r["document"], r["section"], r["errata_rows"]) for r in _rows("audit.csv")
             if int(r["errata_rows"]) != audit.count_errata_rows(errata, r["document"], r["section"], r["copies"])]
    assert not stale, f"errata_rows is stale, run `python -m utils.audit`: {stale[:5]}"


def test_copy_notes_and_document_prefixes_direct_an_errata_row_to_the_right_heading():
    rows = [{"document": "001", "section": "5.2 源代码详细实现 (first copy); 5.4 运行结果展示 (second copy)"},
            {"document": "002", "section": "5.2 源代码详细实现 (also 6.1); 004 5.2 源代码详细实现"},
            {"document": "001", "section": "附录：常见问题与解答 / 3. 如何优化？ (all three copies), item 3"}]
    assert audit.count_errata_rows(rows, "001", "5.2 源代码详细实现", "1") == 1
    assert audit.count_errata_rows(rows, "001", "5.2 源代码详细实现", "2") == 0
    assert audit.count_errata_rows(rows, "001", "5.4 运行结果展示", "2") == 1
    assert audit.count_errata_rows(rows, "001", "3. 如何优化？", "1;2;3") == 1
    assert audit.count_errata_rows(rows, "004", "5.2 源代码详细实现") == 1
    assert audit.count_errata_rows(rows, "002", "5.2 源代码详细实现") == 1
    assert audit.copy_note("3.1 算法原理概述 (first copy; flowchart)", "3.1 算法原理概述") == {1}
    assert audit.copy_note("4.3 案例分析与讲解 (both copies)", "4.3 案例分析与讲解") is None
    with pytest.raises(ValueError, match="copies"):
        audit.count_errata_rows(rows, "001", "5.2 源代码详细实现", "second")


def test_heading_copies_keeps_identical_copies_together_and_splits_different_ones(tmp_path):
    doc = tmp_path / "doc.txt"
    doc.write_text("## 1. 甲\n\n文字\n\n## 2. 乙\n\n一\n\n## 1. 甲\n\n文字\n\n## 2. 乙\n\n二\n", encoding="utf-8")
    assert audit.heading_copies(doc) == [("1. 甲", "1;2"), ("2. 乙", "1"), ("2. 乙", "2")]


def test_every_errata_row_names_a_heading_its_document_prints():
    listed = {}
    for r in _rows("audit.csv"):
        listed.setdefault(r["document"], []).append(r["section"])
    for row in _rows("errata.csv"):
        assert any(audit.section_names_heading(row["section"], h) for h in listed[row["document"]]), (
            f"{row['id']}: section {row['section']!r} names no heading of document {row['document']} as printed")


# --- errata shown_in, FAQ, glossary -------------------------------------------------------------------


def test_every_errata_row_shown_in_names_a_heading_of_that_chapter():
    chapters = _chapters()
    headings = {n: audit.notebook_headings(p) for n, p in chapters.items()}
    for row in _rows("errata.csv"):
        for number, heading in _links(row["shown_in"]):
            assert number in chapters, f"{row['id']}: chapter {number} does not exist"
            assert audit.shown_in_exists(heading, headings[number]), (
                f"{row['id']}: chapter {number} has no heading starting {heading!r}")


def test_faq_documents_links_and_errata_ids_resolve():
    chapters = _chapters()
    headings = {n: audit.notebook_headings(p) for n, p in chapters.items()}
    ids = {r["id"] for r in _rows("errata.csv")}
    rows = _rows("faq_documents.csv")
    assert list(rows[0]) == ["question_zh", "question_en", "documents", "answer", "chapter_link", "errata_ids"]
    for r in rows:
        assert all(r[c].strip() for c in ("question_zh", "question_en", "documents", "answer", "chapter_link")), r
        for number, heading in _links(r["chapter_link"]):
            assert number in chapters and audit.shown_in_exists(heading, headings[number]), (r["question_zh"], number, heading)
        named = {e.strip() for e in r["errata_ids"].split(";") if e.strip()}
        assert named <= ids, f"{r['question_zh']}: unknown errata {sorted(named - ids)}"


@needs_seeds
def test_every_faq_question_of_the_documents_is_in_faq_documents_once():
    printed = {(p.name[:3], q) for p in SEED_FILES for q in audit.faq_questions(audit.document_headings(p))}
    rows = _rows("faq_documents.csv")
    listed = [(r["documents"][:3], r["question_zh"]) for r in rows]
    assert len(listed) == len(set(listed)), "a question is listed twice"
    assert set(listed) == printed, f"missing {sorted(printed - set(listed))}, extra {sorted(set(listed) - printed)}"


def test_chapter19_renders_the_whole_faq_the_glossary_the_errata_and_the_reading_list():
    assert CHAPTER19.is_file(), "chapters/19_faq_glossary_and_errata.ipynb is missing"
    source = CHAPTER19.read_text(encoding="utf-8")
    for name in ("faq_documents.csv", "glossary.csv", "reading_list.csv", "audit.csv", "make_panel", "show_errata(\\\"19\\\")"):
        assert name in source, f"chapter 19 does not use {name}"
    assert "assert rendered == len(faq)" in source, "chapter 19 must render every FAQ row"
    headings = audit.notebook_headings(CHAPTER19)
    for required in ("The documents' FAQ, answered", "中英术语表", "The complete errata", "The reading list, corrected",
                     "Corrections found in the audit"):
        assert any(h.startswith(required) for h in headings), f"chapter 19 lacks a heading {required!r}"


def test_every_glossary_term_is_taught_in_an_existing_chapter():
    if not (DATA / "glossary.csv").is_file():
        pytest.skip("data/glossary.csv is not there yet: chapter 19 fails without it, this test waits for it")
    chapters = _chapters()
    for r in _rows("glossary.csv"):
        numbers = re.findall(r"\d\d", r["chapter"])
        assert numbers and set(numbers) <= set(chapters), f"{r['zh']} / {r['en']}: chapter {r['chapter']!r} does not exist"
