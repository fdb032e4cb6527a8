"""Devices, TensorFlow set-up, seeding and an environment report.

Nothing here imports TensorFlow at module level: ``configure_tensorflow`` imports it
when called, and ``set_seed`` / ``environment_report`` only touch it if it is already
imported, so a PyTorch-only reader never pays for TensorFlow's start-up.
"""

from __future__ import annotations

import numbers
import os
import platform
import random
import sys
from typing import Any

import numpy as np
import torch

from ._checks import check_bool

__all__ = ["get_device", "configure_tensorflow", "set_seed", "environment_report"]

_DEVICE_CHOICES = ("cuda", "mps", "cpu")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def get_device(prefer: str | None = None) -> torch.device:
    """Return the best available torch device: CUDA, then Apple's MPS, then the CPU.

    ``prefer`` forces a device type (``"cuda"``, ``"cuda:1"``, ``"mps"`` or ``"cpu"``; a
    ``torch.device`` is accepted too); a device index that does not exist is refused.
    The environment variable ``WORKBOOK_DEVICE`` does the same when ``prefer`` is None,
    so a whole course run can be pinned to the CPU without editing notebooks.

    Example:
        >>> get_device("cpu")
        device(type='cpu')
    """
    source = "prefer"
    if prefer is None:
        prefer = os.environ.get("WORKBOOK_DEVICE") or None
        source = "the environment variable WORKBOOK_DEVICE"
    if prefer is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if isinstance(prefer, torch.device):
        prefer = str(prefer)
    if not isinstance(prefer, str):
        raise TypeError(f"prefer must be a string such as 'cpu' or None, got {type(prefer).__name__}")
    where = "" if source == "prefer" else f" (from {source}; unset it or set it to cpu, cuda or mps)"
    name = prefer.strip().lower()
    kind, _, index = name.partition(":")
    if kind not in _DEVICE_CHOICES or (index and not index.isdigit()) or (":" in name and not index):
        raise ValueError(
            f"Unknown device {prefer!r}{where}. Valid choices: {', '.join(_DEVICE_CHOICES)} "
            "(optionally 'cuda:N'), or None to pick the best available."
        )
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": _mps_available()}
    if not available[kind]:
        have = [k for k, ok in available.items() if ok]
        raise ValueError(
            f"Device {prefer!r}{where} is not available on this machine. Available: {', '.join(have)}."
        )
    count = torch.cuda.device_count() if kind == "cuda" else 1  # one CPU device and one MPS device
    if index and int(index) >= count:
        raise ValueError(
            f"Device {prefer!r}{where} does not exist: this machine has {count} {kind.upper()} device(s)"
            + (f"; use {kind!r} or '{kind}:0'." if kind != "cuda" else ".")
        )
    return torch.device(name)


_TF_CONFIGURED = False


def configure_tensorflow(*, quiet: bool = True) -> Any:
    """Import TensorFlow configured for the course and return the module.

    - quiet logs (``TF_CPP_MIN_LOG_LEVEL`` 2, or 3 without an NVIDIA driver, unless already set;
      Python logger at ERROR),
    - GPU memory growth on every visible GPU, so TensorFlow does not grab all GPU memory
      and PyTorch can share the card in the same kernel.

    Safe to call any number of times.

    Example:
        >>> tf = configure_tensorflow()
        >>> tf.constant(1.0).numpy()
        1.0
    """
    global _TF_CONFIGURED
    quiet = check_bool("quiet", quiet)
    if quiet:
        # Level 2 hides TensorFlow's C++ INFO/WARNING lines. Without an NVIDIA driver, level 3 also
        # hides the "failed call to cuInit" ERROR line, which only says there is no GPU.
        no_driver = not os.path.exists("/proc/driver/nvidia/version")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3" if no_driver else "2")
    tf = _import_tensorflow(quiet=quiet)
    if _TF_CONFIGURED:
        return tf
    if quiet:
        tf.get_logger().setLevel("ERROR")
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:
            # Devices were already initialised by earlier TF code; memory growth can only
            # be set before that. Nothing is broken, TF just keeps its default allocator.
            pass
    _TF_CONFIGURED = True
    return tf


# Lines TensorFlow's C++ runtime writes to stderr while it is imported, before any setting can
# silence them. On a machine without an NVIDIA GPU the first two only say that there is no GPU; the
# oneDNN line is printed on CPUs where TensorFlow turns its oneDNN kernels on by default (AVX-512,
# AVX512-BF16, AMX: Zen 4/5 EPYC, recent Xeons), an information, not a fault; the CPU-feature line is
# printed by builds that could use more instructions than they were compiled for. oneDNN stays on.
_HARMLESS_TF_STARTUP_LINES = (
    "All log messages before absl::InitializeLog() is called are written to STDERR",
    "Could not find cuda drivers on your machine, GPU will not be used",
    "oneDNN custom operations are on",
    "This TensorFlow binary is optimized to use available CPU instructions",
    "To enable the following instructions:",
)


def _import_tensorflow(*, quiet: bool) -> Any:
    """Import TensorFlow; with ``quiet``, drop only the known-harmless start-up lines from stderr."""
    if "tensorflow" in sys.modules or not quiet:
        import tensorflow as tf  # noqa: PLC0415 - deliberately lazy

        return tf
    import tempfile

    sys.stderr.flush()
    saved_fd = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf  # noqa: PLC0415
        finally:
            os.dup2(saved_fd, 2)
            os.close(saved_fd)
            captured.seek(0)
            lines = captured.read().decode("utf-8", errors="replace").splitlines()
            kept = [line for line in lines
                    if line.strip() and not any(h in line for h in _HARMLESS_TF_STARTUP_LINES)]
            if kept:  # anything else (e.g. a CUDA library that failed to load) is shown as usual
                print("\n".join(kept), file=sys.stderr)
    return tf


def set_seed(seed: int = 0, *, deterministic: bool = False) -> None:
    """Seed Python, NumPy, PyTorch (CPU and CUDA) and, if already imported, TensorFlow.

    ``deterministic=True`` also asks PyTorch for deterministic kernels (slower on GPU);
    ``deterministic=False`` (the default) turns that request off again.

    Example:
        >>> set_seed(0); a = torch.rand(1); set_seed(0); bool(a == torch.rand(1))
        True
    """
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an integer, got {type(seed).__name__}")
    if not 0 <= int(seed) < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    check_bool("deterministic", deterministic)
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    # Set both ways: set_seed(0) after set_seed(0, deterministic=True) turns deterministic mode off again.
    torch.use_deterministic_algorithms(bool(deterministic), warn_only=True)
    if "tensorflow" in sys.modules:
        sys.modules["tensorflow"].random.set_seed(seed)
    if "keras" in sys.modules:
        keras = sys.modules["keras"]
        if hasattr(keras, "utils") and hasattr(keras.utils, "set_random_seed"):
            keras.utils.set_random_seed(seed)


def _version(module_name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(module_name)
    except metadata.PackageNotFoundError:
        return None


def environment_report(*, include_tensorflow: bool = True, show: bool = True) -> dict[str, Any]:
    """Collect versions, CPU count and accelerators for torch (and TensorFlow); print a table.

    ``include_tensorflow=False`` skips importing TensorFlow (it is reported only if
    already imported). Returns the report as a dict.

    Example:
        >>> report = environment_report(include_tensorflow=False, show=False)
        >>> report["torch_device"] in {"cpu", "cuda", "mps"}
        True
    """
    include_tensorflow, show = check_bool("include_tensorflow", include_tensorflow), check_bool("show", show)
    report: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
        "mps_available": _mps_available(),
        "torch_device": get_device().type,
        "numpy": np.__version__,
    }
    for pkg in ("scikit-learn", "matplotlib", "pandas", "ipywidgets", "transformers"):
        report[pkg] = _version(pkg)
    if include_tensorflow or "tensorflow" in sys.modules:
        tf = configure_tensorflow()
        report["tensorflow"] = tf.__version__
        report["keras"] = _version("keras")
        report["tf_gpus"] = [d.name for d in tf.config.list_physical_devices("GPU")]
    if show:
        width = max(len(k) for k in report)
        for key, value in report.items():
            print(f"{key:<{width}}  {value}")
    return report
