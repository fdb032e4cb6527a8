"""Execute every chapter end to end with papermill, default parameters.

Executed copies are kept in build/executed/ (ignored by git) with their run time in
build/executed/timings.csv, so a failure can be read cell by cell. See tests/nbrun.py for the
guard against a known nbclient hang with widgets.

``WORKBOOK_NOTEBOOK_JOBS=N`` (N > 1) runs the selected chapters N at a time, each in its own
process with ``cores // N`` threads, longest first (by the run time each chapter states in its
first cell); every test then waits for its own chapter and reports it as before.
"""

import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import CHAPTERS, ROOT, stated_seconds
from nbrun import execute_chapter

CHAPTER_PATHS = sorted(CHAPTERS.glob("[0-9][0-9]_*.ipynb"))
OUT_DIR = ROOT / "build" / "executed"
JOBS = int(os.environ.get("WORKBOOK_NOTEBOOK_JOBS", "1"))


def _run_in_subprocess(path, threads: int) -> tuple[float, int]:
    n = str(threads)  # PyTorch (OpenMP/MKL) and TensorFlow thread pools: no spinning threads competing for a core
    env = dict(os.environ, CI="true", OMP_NUM_THREADS=n, MKL_NUM_THREADS=n, TF_NUM_INTRAOP_THREADS=n)
    env.pop("MPLBACKEND", None)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, str(ROOT / "tests" / "nbrun.py"), str(path), str(OUT_DIR / path.name),
                           str(CHAPTERS)], env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise AssertionError(f"{path.name} failed (executed copy in build/executed/):\n{done.stderr[-6000:]}")
    return seconds, int(re.search(r"ATTEMPTS=(\d)", done.stdout).group(1))


@pytest.fixture(scope="session")
def parallel_runs(request):
    """Start every selected chapter in a pool of JOBS workers; a dict name → future."""
    selected = [item.callspec.params["path"] for item in request.session.items
                if item.originalname == "test_chapter_runs_end_to_end"]
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    threads = max(1, (os.cpu_count() or 1) // JOBS)
    pool = ThreadPoolExecutor(max_workers=JOBS)
    futures = {p.name: pool.submit(_run_in_subprocess, p, threads)
               for p in sorted(selected, key=stated_seconds, reverse=True)}
    yield futures
    pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.notebook
@pytest.mark.parametrize("path", CHAPTER_PATHS, ids=[p.stem for p in CHAPTER_PATHS])
def test_chapter_runs_end_to_end(path, monkeypatch, request):
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    if JOBS > 1:
        seconds, attempts = request.getfixturevalue("parallel_runs")[path.name].result()
    else:
        monkeypatch.setenv("CI", "true")  # progress bars off in the kernel
        monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel must keep the inline backend
        start = time.perf_counter()
        attempts = execute_chapter(path, OUT_DIR / path.name, cwd=CHAPTERS)
        seconds = time.perf_counter() - start
    with open(OUT_DIR / "timings.csv", "a", encoding="utf-8") as f:
        f.write(f"{path.stem},{seconds:.1f},{attempts}\n")
    print(f"{path.name}: {seconds:.1f} s ({attempts} attempt(s))")
