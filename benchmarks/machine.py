"""Describe the machine a benchmark ran on: CPU, cores, RAM, GPU, library versions."""

from __future__ import annotations

import os
import platform
from importlib import metadata


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def ram_gib() -> float:
    import psutil

    return psutil.virtual_memory().total / 2**30


def gpus() -> list[str]:
    import torch

    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("torch", "tensorflow", "keras", "numpy", "papermill", "transformers"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def header_markdown() -> str:
    import torch

    gpu_list = gpus()
    lines = [
        f"- CPU: {cpu_model()}, {os.cpu_count()} logical cores; PyTorch threads: {torch.get_num_threads()}",
        f"- RAM: {ram_gib():.1f} GiB",
        f"- GPU: {', '.join(gpu_list) if gpu_list else 'none (CUDA not available)'}",
        f"- OS: {platform.platform()}",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()),
    ]
    return "\n".join(lines)
