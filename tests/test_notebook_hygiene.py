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


# The chapter map of the course blueprint (COURSE.md §3): number -> file name.
CHAPTER_MAP = {
    "00": "welcome_and_setup", "01": "what_is_a_large_model", "02": "neural_networks_and_activations",
    "03": "losses_and_backpropagation", "04": "optimizers", "05": "first_models_mlp", "06": "cnns_for_vision_and_speech",
    "07": "training_techniques", "08": "distributed_and_efficient_training", "09": "attention_and_transformers",
    "10": "pretraining_a_tiny_gpt", "11": "finetuning_and_transfer_learning", "12": "application_customer_service",
    "13": "application_finance", "14": "application_recommendation", "15": "efficiency_compression_deployment",
    "16": "scaling_laws_and_compute_cost", "17": "market_positioning_and_user_demand",
    "18": "challenges_ethics_and_trends", "19": "faq_glossary_and_errata",
    "20": "aligning_models_to_user_demand",
}


def test_chapters_are_numbered_as_in_the_chapter_map():
    """NN_name.ipynb, NN from 00, one file per number, each named as in the course's chapter map.

    Chapters land issue by issue, not always in reading order, so a number that is not written
    yet may be missing; every file that exists must sit at its place in the map.
    """
    numbers = [p.name[:2] for p in CHAPTER_PATHS]
    assert numbers and numbers[0] == "00", "the course starts with chapter 00"
    assert len(numbers) == len(set(numbers)), f"two chapters share a number: {numbers}"
    for path in CHAPTER_PATHS:
        assert re.fullmatch(r"\d\d_[a-z0-9]+(_[a-z0-9]+)*\.ipynb", path.name), f"bad name: {path.name}"
        number, name = path.stem[:2], path.stem[3:]
        assert CHAPTER_MAP.get(number) == name, (
            f"{path.name}: chapter {number} is {CHAPTER_MAP.get(number)!r} in the course map (COURSE.md §3)")


def test_missing_chapters_are_listed_as_planned_in_the_readme():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    present = {p.name[:2] for p in CHAPTER_PATHS}
    missing = sorted(set(CHAPTER_MAP) - present)
    if not missing:
        return  # the whole course map is present; README.md has no "Planned" list to check
    assert "Planned, in reading order" in readme, f"chapters {missing} are missing and README.md lists none as planned"
    planned = readme[readme.index("Planned, in reading order"):]
    for number in missing:
        assert number in planned.split("##")[0], f"chapter {number} is neither present nor listed as planned in README.md"


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
