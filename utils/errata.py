"""The errata of the source documents: one table, read by every chapter and by chapter 19."""

from __future__ import annotations

from typing import Any

from .data import read_data_csv

__all__ = ["load_errata", "show_errata", "ERRATA_COLUMNS", "ERRATA_KINDS"]

ERRATA_COLUMNS = ["id", "document", "section", "says", "correct", "kind", "chapter", "shown_in"]
# What sort of mistake a row corrects (chapter 19 counts them by kind).
ERRATA_KINDS = ("formula", "worked example", "code", "citation", "date", "definition", "claim")


def load_errata(chapter: str | None = None) -> Any:
    """The errata table (``data/errata.csv``) as a DataFrame, optionally for one chapter.

    ``chapter`` is the two-digit chapter number, e.g. ``"02"``.

    Example:
        >>> load_errata("02").columns.tolist()[:3]
        ['id', 'document', 'section']
    """
    frame = read_data_csv("errata.csv", dtype=str, keep_default_na=False)
    missing = set(ERRATA_COLUMNS) - set(frame.columns)
    if missing:
        raise ValueError(f"data/errata.csv lacks columns {sorted(missing)}")
    if chapter is not None:
        if not (isinstance(chapter, str) and len(chapter) == 2 and chapter.isdigit()):
            raise ValueError(f"chapter must be a two-digit string such as '02', got {chapter!r}")
        frame = frame[frame["chapter"] == chapter]
    return frame.reset_index(drop=True)


def show_errata(chapter: str) -> Any:
    """Display this chapter's errata rows as a table (a pandas ``Styler`` without the index).

    ``chapter`` is required: the two-digit chapter number of an existing chapter, as a string. For the
    whole table use :func:`load_errata` with no argument. A chapter with no rows (every sentence it
    treats is right or only vague) gets a one-line Markdown note instead of an empty table.

    Example:
        >>> show_errata("02")  # doctest: +SKIP
    """
    if chapter is None:
        raise ValueError("show_errata needs the chapter, e.g. show_errata('02'); for every row use load_errata().")
    if not (isinstance(chapter, str) and len(chapter) == 2 and chapter.isdigit()):
        raise ValueError(f"chapter must be a two-digit string such as '02', got {chapter!r}")
    from .data import data_path as _data_path

    notebooks = sorted(_data_path("errata.csv").parent.parent.joinpath("chapters").glob(f"{chapter}_*.ipynb"))
    if not notebooks:
        raise ValueError(f"There is no chapter {chapter} (no chapters/{chapter}_*.ipynb); pass an existing chapter number")
    frame = load_errata(chapter)
    if frame.empty:
        from IPython.display import Markdown

        return Markdown(f"No row of the errata table belongs to chapter {chapter}: read fairly, the sentences of the "
                        "documents' sections treated here are right or only vague, and vague is not wrong.")
    return frame[["id", "document", "section", "says", "correct", "shown_in"]].style.hide(axis="index")
