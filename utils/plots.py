"""One plotting style for the whole course, and the plots more than one chapter draws."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from .history import History

__all__ = ["use_course_style", "plot_history", "COLORS"]

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


def use_course_style() -> None:
    """Apply the course's matplotlib style (grid, palette, sizes). Idempotent.

    Example:
        >>> use_course_style()
    """
    import matplotlib as mpl
    from cycler import cycler

    mpl.rcParams.update(_STYLE)
    mpl.rcParams["axes.prop_cycle"] = cycler(color=COLORS)


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
