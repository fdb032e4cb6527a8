"""The errata of the source documents: one table, read by every chapter and by chapter 19."""

from __future__ import annotations

from typing import Any

from .data import data_path, read_data_csv

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
    import pandas as pd

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

    ``chapter`` is required: the two-digit chapter number as a string. For the whole table use
    :func:`load_errata` with no argument.

    Example:
        >>> show_errata("02")  # doctest: +SKIP
    """
    if chapter is None:
        raise ValueError("show_errata needs the chapter, e.g. show_errata('02'); for every row use load_errata().")
    if not (isinstance(chapter, str) and len(chapter) == 2 and chapter.isdigit()):
        raise ValueError(f"chapter must be a two-digit string such as '02', got {chapter!r}")
    frame = load_errata(chapter)
    if frame.empty:
        raise ValueError(f"No errata rows for chapter {chapter}: add them to data/errata.csv")
    return frame[["id", "document", "section", "says", "correct", "shown_in"]].style.hide(axis="index")
