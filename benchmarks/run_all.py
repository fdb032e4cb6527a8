"""`make bench`: run every benchmark that applies and rewrite BENCHMARKS.md."""

from __future__ import annotations

import datetime as dt
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_chapters  # noqa: E402
import bench_training  # noqa: E402
import machine  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def overhead_summary(results: dict) -> str:
    lines = []
    for kind, samples in results.items():
        plain = statistics.median(samples["plain PyTorch loop"])
        ratio = statistics.median(samples["utils.fit"]) / plain
        keras = statistics.median(samples["Keras fit (defaults)"]) / plain
        best_name = max((n for n in samples if n.startswith("Keras")), key=lambda n: statistics.median(samples[n]))
        verdict = "meets" if ratio >= 0.95 else "misses"
        lines.append(f"- {kind.upper()}: `utils.fit`/plain = {ratio:.2f}× ({verdict} the ≥ 0.95× target); "
                     f"Keras/plain = {keras:.2f}×; fastest Keras variant: {best_name} "
                     f"({statistics.median(samples[best_name]) / plain:.2f}× plain).")
    return "\n".join(lines)


def main() -> None:
    started = time.perf_counter()
    print("Training-loop overhead …", flush=True)
    training = bench_training.run_all()
    print("Chapters …", flush=True)
    chapters = bench_chapters.run_all()
    chapter_names = {r["chapter"][:2] for r in chapters}
    elapsed = time.perf_counter() - started

    sections = [
        "# Benchmarks",
        "",
        f"Written by `make bench` on {dt.date.today().isoformat()} in {elapsed / 60:.1f} min. "
        "Not part of `make test`: speed is measured here, never asserted in a test.",
        "",
        "## Machine",
        "",
        machine.header_markdown(),
        "",
        "## 1. Chapters",
        "",
        bench_chapters.markdown(chapters),
        "",
        "## 2. Training-loop overhead",
        "",
        overhead_summary(training),
        "",
        bench_training.markdown(training),
        "## 3. TinyGPT",
        "",
        "Not run: chapter 10 (TinyGPT) does not exist yet." if "10" not in chapter_names else
        "TinyGPT benchmarks are not implemented yet.",
        "",
        "## 4. Text classifier",
        "",
        "Not run: chapter 11 (text classifier) does not exist yet." if "11" not in chapter_names else
        "Text-classifier benchmarks are not implemented yet.",
        "",
        "## 5. GPU",
        "",
    ]
    import torch

    if torch.cuda.is_available():
        sections.append("A CUDA device is present, but the GPU section is not implemented yet.")
    else:
        sections.append("Not run: no CUDA device on this machine (`torch.cuda.is_available()` is False).")
    (ROOT / "BENCHMARKS.md").write_text("\n".join(sections) + "\n", encoding="utf-8")
    print(f"BENCHMARKS.md written ({elapsed / 60:.1f} min)")


if __name__ == "__main__":
    main()
