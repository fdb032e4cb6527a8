"""Errata rows quote what their chapter measures, and every chapter shows its errata table.

An errata row's ``correct`` text may quote a result that its chapter computes ("… macro-F1 0.342 … (measured)").
When the data or the code change, the chapter prints new numbers and the row goes stale. The convention checked
here: in every sentence of ``correct`` that contains the word "measured" (or "measures"), each *result-like*
number — a decimal (0.342, 1.70e−3), a percentage (47%) or an amount with thousands separators ($13,847) — must
appear in the executed copy of its chapter (``build/executed/NN_*.ipynb``), allowing for rounding to the digits
the row prints. Bounds quoted as requirements (after ≥, ≤, <, >, "at least", "at most") are not results and are
skipped; plain integers (years, section numbers, counts such as "10 epochs") are too ambiguous to check.

Like ``tests/test_output_noise.py`` it reads the executed copies that ``tests/test_notebooks.py`` writes, so its
name must sort after ``test_notebooks.py`` (pytest collects files alphabetically; as ``test_errata_numbers.py`` it
ran first and skipped every chapter on a fresh clone), and it skips a chapter whose executed copy is missing
(``make test-fast``).
"""

import ast
import re

import nbformat
import pandas as pd
import pytest

import utils
from conftest import CHAPTERS, ROOT

NOTEBOOKS = sorted(CHAPTERS.glob("[0-9][0-9]_*.ipynb"))
EXECUTED = ROOT / "build" / "executed"
MINUS = "\u2212"
NUMBER = re.compile(
    r"(?P<bound>(?:[≥≤<>]|at least|at most)\s*\$?)?(?<![\w.§:/])"
    r"(?P<num>[+\-\u2212]?(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+\.\d+(?:[eE][+\-\u2212]?\d+)?|\d+(?:[eE][+\-\u2212]?\d+)?))"
    r"(?P<pct>\s?%)?(?![\w.]*\d)")
SENTENCE = re.compile(r"(?<=[.!?;])\s+(?=[A-Z(])")


def _parse(token: str) -> tuple[float, float]:
    """A printed number and half a unit of its last printed digit (the rounding tolerance)."""
    text = token.replace(MINUS, "-").replace(",", "").lstrip("+-")
    mantissa, _, exponent = text.lower().partition("e")
    decimals = len(mantissa.partition(".")[2])
    scale = 10.0 ** int(exponent) if exponent else 1.0
    return float(mantissa) * scale, 0.5 * 10.0 ** -decimals * scale


def result_numbers(text: str) -> list[tuple[str, bool]]:
    """The result-like numbers of the 'measured' sentences of an errata text: (token, is a percentage)."""
    found = []
    for sentence in SENTENCE.split(text):
        if not re.search(r"\bmeasure[ds]\b", sentence, re.I):
            continue
        for m in NUMBER.finditer(sentence):
            token, pct = m.group("num"), bool(m.group("pct"))
            if m.group("bound"):
                continue
            if pct or "," in token or re.search(r"\.\d|[eE]", token):
                found.append((token, pct))
    return found


def output_numbers(nb) -> tuple[list[tuple[float, float]], list[tuple[float, float]]]:
    """Every number a learner sees in the executed chapter: (all numbers, numbers printed as percentages)."""
    texts = []
    for cell in nb.cells:
        if cell.cell_type != "code" or "errata" in cell.source:  # the errata table itself proves nothing
            continue
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                texts.append(out.get("text", ""))
            for mime in ("text/plain", "text/markdown", "text/html"):
                value = out.get("data", {}).get(mime)
                if value:
                    texts.append(value if isinstance(value, str) else "".join(value))
    numbers, percentages = [], []
    for m in NUMBER.finditer("\n".join(texts)):
        value, _ = _parse(m.group("num"))
        numbers.append(value)
        if m.group("pct"):
            percentages.append(value)
    return numbers, percentages


def stale_numbers(row_text: str, nb) -> list[str]:
    """The result-like numbers of ``row_text`` that the executed chapter ``nb`` never prints."""
    numbers, percentages = output_numbers(nb)
    stale = []
    for token, pct in result_numbers(row_text):
        value, tolerance = _parse(token)
        pool = percentages if pct else numbers
        if not any(abs(abs(v) - value) <= tolerance * (1 + 1e-9) for v in pool):
            stale.append(token + ("%" if pct else ""))
    return stale


def _executed(path):
    copy = EXECUTED / path.name
    if not copy.exists():
        pytest.skip(f"no executed copy of {path.name} (run tests/test_notebooks.py first)")
    return nbformat.read(copy, as_version=4)


@pytest.fixture(scope="module")
def errata():
    return pd.read_csv(utils.data_path("errata.csv"), dtype=str, keep_default_na=False)


def test_result_numbers_reads_decimals_percentages_and_amounts_but_not_bounds_or_plain_integers():
    text = ("Intro with 0.5 in it. Measured: macro-F1 0.342 on 300 headlines, 47% positive, cost $13,847, "
            "+1.70e\u22123 along +g; the bar is ≥ 0.80 and at least 0.9 (measured in 2024, §6.2).")
    assert [t for t, _ in result_numbers(text)] == ["0.342", "47", "13,847", "+1.70e\u22123"]


def test_stale_numbers_catches_a_number_the_chapter_does_not_print():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(outputs=[nbformat.v4.new_output(
        "stream", name="stdout", text="test macro-F1 0.3421 (690 headlines: 0.769); 47% positive; +1.697e-03\n")]),
        nbformat.v4.new_code_cell('utils.show_errata("13")', outputs=[nbformat.v4.new_output(
            "execute_result", data={"text/html": "<table><td>0.345 0.839 48%</td></table>"})])])
    assert stale_numbers("Scores 0.342 against 0.769, 47% positive, 1.70e\u22123 (measured).", nb) == []
    assert stale_numbers("Scores 0.345 against 0.839 (measured).", nb) == ["0.345", "0.839"]
    assert stale_numbers("Measured: 0.342 of them, 48% positive.", nb) == ["48%"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_errata_rows_quote_the_numbers_their_chapter_prints(path, errata):
    rows = errata[errata.chapter == path.name[:2]]
    if rows.empty:
        pytest.skip("no errata rows for this chapter")
    nb = _executed(path)
    stale = {row.id: found for row in rows.itertuples() if (found := stale_numbers(row.correct, nb))}
    assert not stale, (f"errata rows quote measured numbers that {path.name} does not print: {stale}; "
                       "update the rows to the chapter's current output")


def _errata_cell(nb, chapter):
    call = f'utils.show_errata("{chapter}")'
    cells = [c for c in nb.cells if c.cell_type == "code" and call in c.source]
    assert cells, f"no code cell calls {call}"
    return cells[-1], call


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_show_errata_is_the_last_expression_of_its_cell(path):
    chapter = path.name[:2]
    cell, call = _errata_cell(nbformat.read(path, as_version=4), chapter)
    last = ast.parse(cell.source).body[-1]
    assert isinstance(last, ast.Expr) and ast.unparse(last.value) == call.replace('"', "'"), (
        f"{call} must be the last expression of its cell, or its table is never displayed")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_executed_chapter_displays_its_errata_table(path, errata):
    chapter = path.name[:2]
    ids = errata.loc[errata.chapter == chapter, "id"].tolist()
    cell, _ = _errata_cell(_executed(path), chapter)
    shown = [out.get("data", {}) for out in cell.get("outputs", []) if out.get("output_type") == "execute_result"]
    assert shown, f"the cell calling show_errata('{chapter}') displays nothing"
    if ids:
        html = "".join(d.get("text/html", "") if isinstance(d.get("text/html", ""), str) else "".join(d["text/html"])
                       for d in shown)
        assert "<table" in html and all(i in html for i in ids), f"the errata table lacks rows of {ids}"
