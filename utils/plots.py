"""One plotting style for the whole course, and the plots more than one chapter draws."""

from __future__ import annotations

import functools
import shutil
import subprocess
import warnings
from typing import Any, Mapping, Sequence

from .history import History

__all__ = ["use_course_style", "plot_history", "cjk_font", "COLORS", "CJK_FONTS"]

# Font families that cover Simplified Chinese, in order of preference. The one found is used only as a
# fallback after DejaVu Sans, so Latin text looks the same on every machine.
CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "WenQuanYi Micro Hei", "WenQuanYi Zen Hei",
             "Microsoft YaHei", "PingFang SC", "Heiti SC", "SimHei", "AR PL UMing CN", "Droid Sans Fallback")

# Colour-blind-safe palette (Okabe & Ito), in the order lines are drawn.
COLORS = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]

_STYLE = {
    "figure.figsize": (7.0, 4.0),
    "figure.dpi": 100,
    "savefig.dpi": 120,
    "savefig.bbox": "tight",
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 12,
    "axes.labelsize": 11,
    "legend.frameon": False,
    "lines.linewidth": 2.0,
}


@functools.lru_cache(maxsize=1)
def cjk_font() -> str | None:
    """The installed font family (one of ``CJK_FONTS``) matplotlib can draw Chinese with, or None.

    Also finds a font installed after matplotlib built its font cache (asks fontconfig's ``fc-list``).

    Example:
        >>> cjk_font()  # doctest: +SKIP
        'WenQuanYi Micro Hei'
    """
    from matplotlib import font_manager

    def first_known() -> str | None:
        names = {f.name for f in font_manager.fontManager.ttflist}
        return next((name for name in CJK_FONTS if name in names), None)

    found = first_known()
    if found is None and shutil.which("fc-list"):
        try:
            listing = subprocess.run(["fc-list", ":lang=zh", "file"], capture_output=True, text=True,
                                     timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            listing = ""
        for path in {line.split(":")[0].strip() for line in listing.splitlines()} - {""}:
            try:
                font_manager.fontManager.addfont(path)
            except (OSError, RuntimeError, ValueError):
                continue
        found = first_known()
    return found


def use_course_style(chinese: bool = False) -> None:
    """Apply the course's matplotlib style (grid, palette, sizes). Idempotent.

    If a CJK font is installed (see ``cjk_font``), it becomes the fallback for characters DejaVu Sans
    lacks, so Chinese labels draw as characters. Pass ``chinese=True`` in a notebook whose figures show
    Chinese text: it then warns when no CJK font is installed (the labels would be empty boxes).

    Example:
        >>> use_course_style()
    """
    import matplotlib as mpl
    from cycler import cycler

    if not isinstance(chinese, bool):
        raise TypeError(f"chinese must be True or False, got {type(chinese).__name__} {chinese!r}")
    mpl.rcParams.update(_STYLE)
    mpl.rcParams["axes.prop_cycle"] = cycler(color=COLORS)
    family = cjk_font()
    if family is not None:
        # matplotlib falls back along font.family (not along one generic family's list).
        mpl.rcParams["font.family"] = [name for name in mpl.rcParams["font.family"] if name != family] + [family]
    elif chinese:
        warnings.warn("No CJK font is installed, so Chinese text in figures shows as empty boxes: install one "
                      "(Debian/Ubuntu: `apt-get install fonts-wqy-microhei`; or Noto Sans CJK SC), then restart "
                      "the kernel.", UserWarning, stacklevel=2)


def plot_history(
    history: History | Mapping[str, History] | Sequence[History],
    metrics: Sequence[str] | str = ("loss",),
    *,
    title: str | None = None,
    log_y: bool = False,
    axes: Any = None,
) -> Any:
    """Plot training (solid) and validation (dashed) curves per epoch, one panel per metric.

    ``history`` may be one :class:`History`, a list, or a ``{label: History}`` dict to
    compare runs (e.g. PyTorch vs Keras). Returns the matplotlib Figure.

    Example:
        >>> fig = plot_history({"PyTorch": h_torch, "Keras": h_keras}, metrics=["loss", "accuracy"])
    """
    import matplotlib.pyplot as plt

    if isinstance(history, History):
        runs = {history.framework: history}
    elif isinstance(history, Mapping):
        runs = dict(history)
    elif isinstance(history, Sequence) and not isinstance(history, str):
        runs = {f"run {i + 1} ({h.framework})": h for i, h in enumerate(history)}
    else:
        raise TypeError(f"history must be a History, a list or a dict of them, got {type(history).__name__}")
    if not runs:
        raise ValueError("Nothing to plot: no History given.")
    for label, h in runs.items():
        if not isinstance(h, History):
            raise TypeError(f"{label!r} is a {type(h).__name__}, not a utils.History")
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    for metric in metrics:
        if not any(metric in h or f"val_{metric}" in h for h in runs.values()):
            raise KeyError(f"No run recorded {metric!r}. Recorded: {sorted(set().union(*(h.keys() for h in runs.values())))}")

    use_course_style()
    if axes is None:
        fig, axes = plt.subplots(1, len(metrics), figsize=(5.0 * len(metrics), 3.6), squeeze=False)
        axes = axes[0]
    else:
        axes = list(axes) if isinstance(axes, Sequence) or hasattr(axes, "__len__") else [axes]
        fig = axes[0].figure
    for ax, metric in zip(axes, metrics):
        for color, (label, h) in zip(COLORS * 4, runs.items()):
            many = len(runs) > 1
            for name, style, suffix in ((metric, "-", "train"), (f"val_{metric}", "--", "validation")):
                if name in h:
                    values = h[name]
                    ax.plot(range(1, len(values) + 1), values, style, color=color,
                            label=f"{label} {suffix}" if many else suffix)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.set_title(metric if title is None else f"{title}: {metric}")
        if log_y:
            ax.set_yscale("log")
        ax.legend()
    fig.tight_layout()
    return fig
