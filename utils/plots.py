"""One plotting style for the whole course, and the plots more than one chapter draws."""

from __future__ import annotations

import functools
import shutil
import subprocess
import warnings
from typing import Any, Mapping, Sequence

from ._checks import check_bool
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

    chinese = check_bool("chinese", chinese)
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
        bad = [type(h).__name__ for h in history if not isinstance(h, History)]
        if bad:
            raise TypeError(f"history must be a History, a list or a dict of them; the list holds {bad}")
        runs = {f"run {i + 1} ({h.framework})": h for i, h in enumerate(history)}
    else:
        raise TypeError(f"history must be a History, a list or a dict of them, got {type(history).__name__}")
    if not runs:
        raise ValueError("Nothing to plot: no History given.")
    for label, h in runs.items():
        if not isinstance(h, History):
            raise TypeError(f"{label!r} is a {type(h).__name__}, not a utils.History")
    metrics = _check_metric_names(metrics)
    log_y = check_bool("log_y", log_y)
    if title is not None and not isinstance(title, str):
        raise TypeError(f"title must be a string or None, got {type(title).__name__} {title!r}")
    for metric in metrics:
        if not any(metric in h or f"val_{metric}" in h for h in runs.values()):
            raise KeyError(f"No run recorded {metric!r}. Recorded: {sorted(set().union(*(h.keys() for h in runs.values())))}")

    use_course_style()
    if axes is None:
        fig, axes = plt.subplots(1, len(metrics), figsize=(5.0 * len(metrics), 3.6), squeeze=False)
        axes = axes[0]
    else:
        axes = _check_axes(axes, len(metrics))
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


def _check_metric_names(metrics: Any) -> list[str]:
    """``metrics`` as a non-empty list of names; a clear error for None, [] or non-strings."""
    if metrics is None:
        raise ValueError('metrics must name at least one recorded metric, e.g. metrics=["loss"]; got None')
    names = [metrics] if isinstance(metrics, str) else metrics
    if not isinstance(names, (Sequence, set, tuple)) or isinstance(names, (bytes, Mapping)):
        raise TypeError(f"metrics must be a metric name or a list of names, got {type(metrics).__name__}")
    names = list(names)
    if not names:
        raise ValueError('metrics must name at least one recorded metric, e.g. metrics=["loss"]; got an empty list')
    bad = [m for m in names if not isinstance(m, str)]
    if bad:
        raise TypeError(f"metric names must be strings such as 'loss' or 'accuracy', got {bad!r}")
    return names


def _check_axes(axes: Any, n_metrics: int) -> list[Any]:
    """``axes`` as a list of matplotlib Axes, one per metric (a shortfall would drop metrics silently)."""
    from matplotlib.axes import Axes

    if isinstance(axes, Axes):
        axes = [axes]
    elif hasattr(axes, "ravel"):  # the array plt.subplots returns
        axes = list(axes.ravel())
    elif isinstance(axes, (Sequence, tuple)) and not isinstance(axes, str):
        axes = list(axes)
    else:
        raise TypeError(f"axes must be a matplotlib Axes or a list of them, got {type(axes).__name__}")
    bad = [type(a).__name__ for a in axes if not isinstance(a, Axes)]
    if bad:
        raise TypeError(f"axes must hold matplotlib Axes only, got {bad}")
    if len(axes) < n_metrics:
        raise ValueError(f"{n_metrics} metric(s) to plot but only {len(axes)} Axes given: pass one Axes per "
                         "metric (or axes=None to create them)")
    return axes
