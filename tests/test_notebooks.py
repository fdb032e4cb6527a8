"""Execute every chapter end to end with papermill, default parameters.

Executed copies are kept in build/executed/ (ignored by git) with their run time in
build/executed/timings.csv, so a failure can be read cell by cell. See tests/nbrun.py for the
guard against a known nbclient hang with widgets.
"""

import time

import pytest

from conftest import CHAPTERS, ROOT
from nbrun import execute_chapter

CHAPTER_PATHS = sorted(CHAPTERS.glob("[0-9][0-9]_*.ipynb"))
OUT_DIR = ROOT / "build" / "executed"


@pytest.mark.notebook
@pytest.mark.parametrize("path", CHAPTER_PATHS, ids=[p.stem for p in CHAPTER_PATHS])
def test_chapter_runs_end_to_end(path, monkeypatch):
    monkeypatch.setenv("CI", "true")  # progress bars off in the kernel
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel must keep the inline backend
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    attempts = execute_chapter(path, OUT_DIR / path.name, cwd=CHAPTERS)
    seconds = time.perf_counter() - start
    with open(OUT_DIR / "timings.csv", "a", encoding="utf-8") as f:
        f.write(f"{path.stem},{seconds:.1f},{attempts}\n")
    print(f"{path.name}: {seconds:.1f} s ({attempts} attempt(s))")
