"""Execute every chapter end to end with papermill, default parameters.

Executed copies are kept in build/executed/ (ignored by git) with their run time in
build/executed/timings.csv, so a failure can be read cell by cell.
"""

import time

import pytest

from conftest import CHAPTERS, ROOT

CHAPTER_PATHS = sorted(CHAPTERS.glob("[0-9][0-9]_*.ipynb"))
OUT_DIR = ROOT / "build" / "executed"


@pytest.mark.notebook
@pytest.mark.parametrize("path", CHAPTER_PATHS, ids=[p.stem for p in CHAPTER_PATHS])
def test_chapter_runs_end_to_end(path, monkeypatch):
    import papermill

    monkeypatch.setenv("CI", "true")  # progress bars off in the kernel
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    out = OUT_DIR / path.name
    start = time.perf_counter()
    papermill.execute_notebook(
        str(path), str(out), cwd=str(CHAPTERS), kernel_name="python3",
        progress_bar=False, log_output=False, execution_timeout=1200,
    )
    seconds = time.perf_counter() - start
    with open(OUT_DIR / "timings.csv", "a", encoding="utf-8") as f:
        f.write(f"{path.stem},{seconds:.1f}\n")
    print(f"{path.name}: {seconds:.1f} s")
