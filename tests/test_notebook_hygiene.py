"""Chapters follow the course's shape (COURSE.md §4) and are committed clean."""

import re

import nbformat
import pytest

from conftest import CHAPTERS, ROOT

CHAPTER_PATHS = sorted(CHAPTERS.glob("*.ipynb"))
IDS = [p.stem for p in CHAPTER_PATHS]


def read(path):
    return nbformat.read(path, as_version=4)


def test_there_are_chapters():
    assert CHAPTER_PATHS, "chapters/ has no notebooks"


def test_chapters_are_numbered_from_00_without_gaps():
    for path in CHAPTER_PATHS:
        assert re.fullmatch(r"\d\d_[a-z0-9]+(_[a-z0-9]+)*\.ipynb", path.name), f"bad name: {path.name}"
    numbers = [int(p.name[:2]) for p in CHAPTER_PATHS]
    assert numbers == list(range(len(numbers))), f"chapter numbers {numbers} should be 0..{len(numbers) - 1}"


@pytest.mark.parametrize("path", CHAPTER_PATHS, ids=IDS)
def test_chapter_is_valid_and_stripped(path):
    nb = read(path)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert not cell.outputs, f"{path.name} cell {i} has outputs: run `make strip`"
            assert cell.execution_count is None, f"{path.name} cell {i} has an execution count: run `make strip`"
    assert "widgets" not in nb.metadata, f"{path.name} stores widget state: run `make strip`"
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"


@pytest.mark.parametrize("path", CHAPTER_PATHS, ids=IDS)
def test_chapter_opens_with_title_goals_sources_and_run_time(path):
    first = read(path).cells[0]
    assert first.cell_type == "markdown"
    assert first.source.startswith(f"# {path.name[:2]} "), f"{path.name}: first line should be '# {path.name[:2]} · Title'"
    for required in ("Learning goals", "Source sections", "Estimated run time"):
        assert required in first.source, f"{path.name}: opening cell lacks '{required}'"


@pytest.mark.parametrize("path", CHAPTER_PATHS, ids=IDS)
def test_chapter_has_one_parameters_cell_with_seed_and_smoke(path):
    cells = [c for c in read(path).cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{path.name}: needs exactly one cell tagged 'parameters'"
    assert cells[0].cell_type == "code"
    assert re.search(r"^SEED\s*=", cells[0].source, re.M) and re.search(r"^SMOKE\s*=\s*False", cells[0].source, re.M)


@pytest.mark.parametrize("path", CHAPTER_PATHS, ids=IDS)
def test_chapter_closes_with_summary_and_exercises(path):
    headings = [line.strip() for c in read(path).cells if c.cell_type == "markdown"
                for line in c.source.splitlines() if line.startswith("## ")]
    assert "## Summary" in headings, f"{path.name}: no '## Summary'"
    assert "## Exercises" in headings, f"{path.name}: no '## Exercises'"


@pytest.mark.parametrize("path", CHAPTER_PATHS, ids=IDS)
def test_chapter_with_errata_shows_them(path):
    import utils

    if utils.load_errata(path.name[:2]).empty:
        pytest.skip("no errata rows for this chapter")
    nb = read(path)
    headings = [c.source for c in nb.cells if c.cell_type == "markdown"]
    assert any("## What the documents got wrong here" in h for h in headings)
    assert any(f'show_errata("{path.name[:2]}")' in c.source for c in nb.cells if c.cell_type == "code")


def test_readme_lists_every_chapter():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for path in CHAPTER_PATHS:
        assert path.name in readme, f"README.md does not list {path.name}"
