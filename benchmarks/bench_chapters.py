"""Run every chapter with default parameters, as CI does, and measure wall time and peak memory.

Each chapter runs in its own Python process (papermill + a fresh kernel). Peak memory is the
largest resident set size among that process's children, i.e. the Jupyter kernel, read with
``getrusage(RUSAGE_CHILDREN)`` once the kernel has exited.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = ROOT / "chapters"
OUT = ROOT / "build" / "bench"

_RUNNER = r"""
import json, resource, sys
from pathlib import Path
src, dst, cwd, tests = sys.argv[1:5]
sys.path.insert(0, tests)
from nbrun import execute_chapter  # the same runner as the notebook tests
attempts = execute_chapter(Path(src), Path(dst), cwd=Path(cwd))
print(json.dumps({"peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
                  "attempts": attempts}))
"""


def run_chapter(path: Path) -> dict:
    OUT.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    env.update(CI="true", JUPYTER_PREFER_ENV_PATH="1")
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _RUNNER, str(path), str(OUT / path.name), str(CHAPTERS), str(ROOT / "tests")],
        capture_output=True, text=True, env=env,
    )
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        return {"chapter": path.stem, "seconds": seconds, "peak_rss_mib": float("nan"),
                "status": "failed: " + proc.stderr.strip().splitlines()[-1][:200]}
    peak = json.loads(proc.stdout.strip().splitlines()[-1])["peak_rss_mib"]
    return {"chapter": path.stem, "seconds": seconds, "peak_rss_mib": peak, "status": "ok"}


def run_all() -> list[dict]:
    results = []
    for path in sorted(CHAPTERS.glob("[0-9][0-9]_*.ipynb")):
        result = run_chapter(path)
        print(f"  {result['chapter']}: {result['seconds']:.1f} s, {result['peak_rss_mib']:.0f} MiB, {result['status']}",
              flush=True)
        results.append(result)
    return results


def markdown(results: list[dict]) -> str:
    lines = [
        "Each chapter executed once with papermill and its default parameters (`CI=true`, so progress bars",
        "are off), in a fresh kernel, one chapter at a time. Wall time includes kernel start-up; peak memory",
        "is the kernel's maximum resident set size.",
        "",
        "| chapter | wall time (s) | peak memory (MiB) | status |",
        "|---|---:|---:|---|",
    ]
    for r in results:
        lines.append(f"| {r['chapter']} | {r['seconds']:.1f} | {r['peak_rss_mib']:.0f} | {r['status']} |")
    total = sum(r["seconds"] for r in results)
    peak = max((r["peak_rss_mib"] for r in results), default=float("nan"))
    lines.append(f"| **total ({len(results)} chapters)** | **{total:.1f}** | max {peak:.0f} | |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(run_all()))
