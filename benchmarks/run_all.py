"""`make bench`: run every benchmark that applies and rewrite BENCHMARKS.md."""

from __future__ import annotations

import datetime as dt
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_chapters  # noqa: E402
import bench_compression  # noqa: E402
import bench_text  # noqa: E402
import bench_tinygpt  # noqa: E402
import bench_training  # noqa: E402
import machine  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def overhead_summary(results: dict, pairs: dict) -> str:
    lines = []
    for kind, samples in results.items():
        plain = statistics.median(samples["plain PyTorch loop"])
        ratio = statistics.median(pairs[kind])
        q1, _, q3 = statistics.quantiles(pairs[kind], n=4)
        keras = statistics.median(samples["Keras fit (defaults)"]) / plain
        best_name = max((n for n in samples if n.startswith("Keras")), key=lambda n: statistics.median(samples[n]))
        verdict = "meets" if ratio >= 0.95 else "misses"
        lines.append(f"- {kind.upper()}: `utils.fit`/plain = {ratio:.2f}× (median of {len(pairs[kind])} back-to-back "
                     f"pairs, interquartile range {q1:.2f}–{q3:.2f}; {verdict} the ≥ 0.95× target); "
                     f"Keras/plain = {keras:.2f}×; fastest Keras variant: {best_name} "
                     f"({statistics.median(samples[best_name]) / plain:.2f}× plain).")
    lines += ["", "Where Keras's time goes (milliseconds per training step of 64 samples, from the medians below):"]
    for kind, samples in results.items():
        per_step = {n: 1000 * bench_training.BATCH_SIZE / statistics.median(v) for n, v in samples.items()}
        plain, default = per_step["plain PyTorch loop"], per_step["Keras fit (defaults)"]
        spe = per_step["Keras fit, steps_per_execution=20"]
        lines.append(f"- {kind.upper()}: plain PyTorch {plain:.2f} ms, Keras defaults {default:.2f} ms, "
                     f"with steps_per_execution=20 {spe:.2f} ms, jit_compile=False "
                     f"{per_step['Keras fit, jit_compile=False']:.2f} ms. Running 20 steps per call into the compiled "
                     f"function removes {default - spe:.2f} ms per step (Python-side dispatch and callbacks, "
                     f"{(default - spe) / default:.0%} of a step); the remaining {spe - plain:+.2f} ms is TensorFlow's own "
                     "per-step cost (tf.data, op dispatch on tiny tensors). Keras's default `jit_compile=\"auto\"` vs "
                     f"`jit_compile=False`: {default:.2f} vs {per_step['Keras fit, jit_compile=False']:.2f} ms, so XLA "
                     "compilation is not the gap.")
    lines += ["", f"The `utils.fit`/plain ratio comes from paired runs of {bench_training.PAIR_EPOCHS} epochs each "
              "(plain loop and `utils.fit` back to back, order alternating, same seed): on this shared 2-core "
              "machine single runs drift by 10–20 %, more than the overhead itself, and a ratio within a pair "
              "cancels the slow part of that drift. The interquartile range shows what is left; a ratio whose "
              "range includes 1.00 means no overhead could be measured. The tables below (ratios of medians "
              "across rounds of 10 epochs) carry the drift."]
    return "\n".join(lines)


def run_gpu() -> dict | None:
    """Section 5: the PyTorch measurements again on CUDA, in float32 and with mixed precision."""
    import torch

    if not torch.cuda.is_available():
        return None
    print("GPU …", flush=True)
    return {
        "name": torch.cuda.get_device_name(0),
        "training": {kind: bench_training.measure(kind, bench_training.gpu_contenders()) for kind in ("mlp", "cnn")},
        "tinygpt": [bench_tinygpt.run(device="cuda"), bench_tinygpt.run(device="cuda", amp="auto")],
    }


def gpu_markdown(gpu: dict) -> str:
    lines = [f"Device: {gpu['name']}. Same protocol as sections 2 and 3, PyTorch only (TensorFlow's CPU-only "
             "wheel may be installed).", "", bench_training.markdown(gpu["training"], device="CUDA"),
             "| TinyGPT | training tokens/s | validation loss after the budget | generation tokens/s |",
             "|---|---:|---:|---:|"]
    for r in gpu["tinygpt"]:
        lines.append(f"| {r['amp']} | {r['train_tokens_per_s']:,.0f} | {r['val_loss']:.3f} | {r['gen_tokens_per_s']:,.0f} |")
    fp32, mixed = gpu["tinygpt"]
    lines += ["", f"Mixed-precision speed-up of TinyGPT training: {mixed['train_tokens_per_s'] / fp32['train_tokens_per_s']:.2f}×."]
    return "\n".join(lines)


def gpu_check_section() -> str:
    """The table of the last `make gpu-check` on a CUDA machine (build/gpu_check.md), if there is one."""
    report = ROOT / "build" / "gpu_check.md"
    if report.is_file() and "CPU (" not in report.read_text(encoding="utf-8").splitlines()[0]:
        return report.read_text(encoding="utf-8")
    return ("Not run on a GPU yet: `make gpu-check` on a CUDA machine writes build/gpu_check.md, which the next "
            "`make bench` copies here. Without CUDA it runs the same checks on the CPU (a test does that in "
            "`make test`).")


def main() -> None:
    started = time.perf_counter()
    header = machine.header_markdown()  # before any benchmark changes a setting such as the thread count
    print("Training-loop overhead …", flush=True)
    training = bench_training.run_all()
    pairs = bench_training.run_pairs()
    chapter_names = {p.name[:2] for p in bench_chapters.CHAPTERS.glob("[0-9][0-9]_*.ipynb")}
    tinygpt = text = None
    comparison = None
    if "10" in chapter_names:
        print("TinyGPT …", flush=True)
        tinygpt = bench_tinygpt.run()
        print("TinyGPT: float32 vs amp='auto', and vs Hugging Face GPT-2 …", flush=True)
        comparison = bench_tinygpt.compare_precision_and_hf()
    if "11" in chapter_names:
        print("Text classifier …", flush=True)
        text = bench_text.run()
    compression = None
    if "15" in chapter_names:
        print("Compression, serving, KV cache …", flush=True)
        compression = bench_compression.run()
    print("Chapters …", flush=True)
    chapters = bench_chapters.run_all()
    gpu = run_gpu()
    elapsed = time.perf_counter() - started

    sections = [
        "# Benchmarks",
        "",
        f"Written by `make bench` on {dt.date.today().isoformat()} in {elapsed / 60:.1f} min. "
        "Not part of `make test`: speed is measured here, never asserted in a test.",
        "",
        "## Machine",
        "",
        header,
        "",
        "## 1. Chapters",
        "",
        bench_chapters.markdown(chapters),
        "",
        "## 2. Training-loop overhead",
        "",
        overhead_summary(training, pairs),
        "",
        bench_training.markdown(training),
        "## 3. TinyGPT",
        "",
        "Not run: chapter 10 (TinyGPT) does not exist yet." if tinygpt is None else bench_tinygpt.markdown(tinygpt),
        "",
        "## 4. Text classifier",
        "",
        "Not run: chapter 11 (text classifier) does not exist yet." if text is None else bench_text.markdown(text),
        "",
        "## 5. GPU",
        "",
    ]
    if gpu is None:
        sections.append("Not run: no CUDA device on this machine (`torch.cuda.is_available()` is False).")
    else:
        sections += [gpu_markdown(gpu), ""]
    sections += ["## 6. Compression, serving and KV cache (chapter 15)", "",
                 "Not run: chapter 15 does not exist yet." if compression is None else bench_compression.markdown(compression),
                 "", "## 7. TinyGPT: float32 vs `amp=\"auto\"`, and TinyGPT vs Hugging Face GPT-2", "",
                 "Not run: chapter 10 (TinyGPT) does not exist yet." if comparison is None
                 else bench_tinygpt.compare_markdown(comparison), "",
                 "## 8. `make gpu-check`", "", gpu_check_section(), ""]
    (ROOT / "BENCHMARKS.md").write_text("\n".join(sections) + "\n", encoding="utf-8")
    print(f"BENCHMARKS.md written ({elapsed / 60:.1f} min)")


if __name__ == "__main__":
    main()
