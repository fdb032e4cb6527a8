"""Build an ipywidgets panel around a plain function.

Every widget in the course wraps a function that also works without the widget, so
the same code runs headless under CI and interactively in JupyterLab. The panel runs
the function once when built, so an executed notebook shows a first result.
"""

from __future__ import annotations

import contextlib
import inspect
import math
import numbers
import traceback
from typing import Any, Callable, Iterator, Mapping

__all__ = ["Panel", "make_panel"]


def _to_widget(name: str, spec: Any) -> Any:
    import ipywidgets as W

    if isinstance(spec, W.ValueWidget):
        return spec
    description = name.replace("_", " ")
    style = {"description_width": "initial"}
    if isinstance(spec, bool):
        return W.Checkbox(value=spec, description=description, style=style)
    if isinstance(spec, tuple):
        if len(spec) not in (3, 4) or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in spec):
            raise TypeError(f"control {name!r}: a slider is (min, max, step[, value]) with numbers, got {spec!r}; "
                            "use a list for a dropdown")
        if not all(math.isfinite(v) for v in spec):
            raise ValueError(f"control {name!r}: slider numbers must be finite, got {spec!r}")
        integral = all(isinstance(v, numbers.Integral) for v in spec)
        spec = tuple(int(v) if integral else float(v) for v in spec)
        lo, hi, step = spec[:3]
        value = spec[3] if len(spec) == 4 else lo
        if not lo < hi:
            raise ValueError(f"control {name!r}: a slider needs min < max, got min={lo}, max={hi}")
        if not step > 0:
            raise ValueError(f"control {name!r}: the slider step must be positive, got {step} "
                             f"(e.g. {(hi - lo) / 10:g} for ten steps)")
        if not lo <= value <= hi:
            raise ValueError(f"control {name!r}: start value {value} is outside [{lo}, {hi}]")
        cls = W.IntSlider if integral else W.FloatSlider
        return cls(min=lo, max=hi, step=step, value=value, description=description,
                   continuous_update=False, style=style)
    if isinstance(spec, list) and spec:
        return W.Dropdown(options=spec, value=spec[0], description=description, style=style)
    if isinstance(spec, str):
        return W.Text(value=spec, description=description, continuous_update=False, style=style)
    raise TypeError(
        f"control {name!r}: use an ipywidgets widget, a (min, max, step[, value]) tuple for a slider, "
        f"a list of options for a dropdown, a bool for a checkbox or a str for a text box; got {spec!r}"
    )


def _check_names(fn: Callable[..., Any], controls: Mapping[str, Any]) -> None:
    """Refuse a control ``fn`` cannot take, and a required parameter of ``fn`` without a control."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature: nothing to check
        return
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return
    accepted = {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    unknown = [name for name in controls if name not in accepted]
    if unknown:
        raise TypeError(f"{getattr(fn, '__name__', 'fn')} has no parameter {', '.join(map(repr, unknown))}: "
                        f"its parameters are {sorted(accepted)}; name each control after one of them.")
    missing = [p.name for p in parameters if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
               and p.name not in controls]
    if missing:
        raise TypeError(f"{getattr(fn, '__name__', 'fn')} needs {', '.join(map(repr, missing))}, which no control "
                        "provides: add a control for each, or give the parameter a default.")


class Panel:
    """Controls + a Run button + an Output, wired to ``fn(**values)``.

    Attributes:
        controls: ``{name: widget}``; set ``controls[name].value`` to drive the panel
            from code or a test (with ``auto=True`` this re-runs ``fn``).
        output: the ``ipywidgets.Output`` that shows ``fn``'s figures, prints and result.
        result: what ``fn`` returned on the last run; ``error`` the exception, if it raised.
        runs: how many times ``fn`` ran.
    """

    def __init__(self, fn: Callable[..., Any], controls: Mapping[str, Any], *, auto: bool = True,
                 title: str | None = None, run_on_build: bool = True) -> None:
        import ipywidgets as W

        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        if not controls:
            raise ValueError("A panel needs at least one control.")
        for flag_name, flag in (("auto", auto), ("run_on_build", run_on_build)):
            if not isinstance(flag, bool):
                raise TypeError(f"{flag_name} must be True or False, got {type(flag).__name__} {flag!r}")
        if title is not None and not isinstance(title, str):
            raise TypeError(f"title must be a string or None, got {type(title).__name__}")
        _check_names(fn, controls)
        self.fn = fn
        self.controls = {name: _to_widget(name, spec) for name, spec in controls.items()}
        self.output = W.Output(layout=W.Layout(min_height="40px"))
        self.button = W.Button(description="Run", button_style="primary", icon="play")
        # Stable DOM markers for the browser test (tests/test_browser.py) and for styling.
        self.output.add_class("workbook-panel-output")
        self.button.add_class("workbook-panel-run")
        self.button.on_click(lambda _: self.run())
        self.result: Any = None
        self.error: BaseException | None = None
        self.runs = 0
        self.auto = auto
        self._held = False
        if auto:
            for widget in self.controls.values():
                widget.observe(lambda change: None if self._held else self.run(), names="value")
        header = [W.HTML(f"<b>{title}</b>")] if title else []
        self.widget = W.VBox(header + [W.HBox(list(self.controls.values()) + [self.button],
                                              layout=W.Layout(flex_flow="row wrap")), self.output])
        self.widget.add_class("workbook-panel")
        if not auto:
            self.widget.add_class("workbook-panel-manual")  # runs only on the Run button
        if run_on_build:
            self.run()

    @property
    def values(self) -> dict[str, Any]:
        return {name: widget.value for name, widget in self.controls.items()}

    def run(self) -> Any:
        """Call ``fn`` with the current control values and show the result in ``output``."""
        import matplotlib.pyplot as plt
        from IPython.display import clear_output, display

        self.runs += 1
        with self.output:
            clear_output(wait=True)
            try:
                self.error = None
                self.result = self.fn(**self.values)
                if hasattr(self.result, "savefig"):  # a matplotlib Figure
                    display(self.result)
                    plt.close(self.result)
                elif self.result is not None:
                    display(self.result)
                plt.show()
                self.output.remove_class("workbook-panel-error")
            except Exception as exc:  # show the error in the panel instead of killing the UI
                self.error = exc
                self.result = None
                self.output.add_class("workbook-panel-error")
                print("".join(traceback.format_exception_only(type(exc), exc)).strip())
        return self.result

    @contextlib.contextmanager
    def hold(self) -> Iterator["Panel"]:
        """Change several controls, then run ``fn`` once on leaving the block.

        Example:
            >>> with panel.hold():
            ...     panel.controls["lr"].value = 0.1
            ...     panel.controls["steps"].value = 50
        """
        self._held = True
        try:
            yield self
        finally:
            self._held = False
        self.run()

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


def make_panel(fn: Callable[..., Any], *, auto: bool = True, title: str | None = None,
               **controls: Any) -> Panel:
    """Build a :class:`Panel` calling ``fn`` with one keyword argument per control.

    A control is an ipywidgets widget or a shorthand: ``(min, max, step[, value])`` for a
    slider (integers give an IntSlider), a list for a dropdown, a bool for a checkbox,
    a str for a text box. ``auto=False`` runs ``fn`` only on the Run button (for slow
    functions). The panel runs ``fn`` once when built.

    Example:
        >>> def square(x): return x * x
        >>> panel = make_panel(square, x=(0, 10, 1, 3))
        >>> panel.result
        9
        >>> panel.controls["x"].value = 4; panel.result
        16
    """
    return Panel(fn, controls, auto=auto, title=title)
