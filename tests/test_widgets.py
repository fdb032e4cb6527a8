import ipywidgets as W
import matplotlib
import pytest

import utils

matplotlib.use("Agg")


def test_panel_runs_on_build_and_reruns_when_a_control_changes():
    panel = utils.make_panel(lambda x, op: x * x if op == "square" else -x, x=(0, 10, 1, 3), op=["square", "negate"])
    assert isinstance(panel.controls["x"], W.IntSlider) and isinstance(panel.controls["op"], W.Dropdown)
    assert panel.result == 9 and panel.runs == 1
    panel.controls["x"].value = 4
    assert panel.result == 16
    panel.controls["op"].value = "negate"
    assert panel.result == -4 and panel.runs == 3


def test_panel_without_auto_waits_for_the_run_button():
    panel = utils.make_panel(lambda lr: lr * 2, auto=False, lr=(0.0, 1.0, 0.1, 0.5))
    assert isinstance(panel.controls["lr"], W.FloatSlider)
    panel.controls["lr"].value = 0.8
    assert panel.result == 1.0
    panel.button.click()
    assert panel.result == pytest.approx(1.6)


def test_panel_accepts_widgets_bools_and_text():
    slider = W.FloatLogSlider(value=0.01, base=10, min=-4, max=0)
    panel = utils.make_panel(lambda lr, flag, name: (lr, flag, name), lr=slider, flag=True, name="x")
    assert panel.result == (0.01, True, "x")
    assert panel.controls["lr"] is slider


def test_panel_shows_errors_instead_of_raising():
    def fn(x):
        if x > 5:
            raise ValueError("x too big")
        return x

    panel = utils.make_panel(fn, x=(0, 10, 1, 1))
    panel.controls["x"].value = 7
    assert panel.result is None and isinstance(panel.error, ValueError)
    panel.controls["x"].value = 2
    assert panel.result == 2 and panel.error is None


def test_panel_displays_figures():
    import matplotlib.pyplot as plt

    def fn(k):
        fig, ax = plt.subplots()
        ax.plot([0, 1], [0, k])
        return fig

    panel = utils.make_panel(fn, k=(1, 5, 1, 2))
    assert panel.result.axes[0].lines[0].get_ydata()[1] == 2


@pytest.mark.parametrize("spec", [(1, 2), (5, 1, 1, 0), object()])
def test_panel_rejects_bad_control_specs(spec):
    with pytest.raises((TypeError, ValueError)):
        utils.make_panel(lambda x: x, x=spec)


def test_panel_needs_controls_and_a_callable():
    with pytest.raises(ValueError, match="at least one control"):
        utils.make_panel(lambda: 1)
    with pytest.raises(TypeError, match="callable"):
        utils.Panel("fn", {"x": (0, 1, 1)})


def test_hold_changes_several_controls_and_runs_once():
    panel = utils.make_panel(lambda a, b: a + b, a=(0, 10, 1, 1), b=(0, 10, 1, 2))
    with panel.hold():
        panel.controls["a"].value = 5
        panel.controls["b"].value = 7
        assert panel.runs == 1  # nothing ran inside the block
    assert panel.runs == 2 and panel.result == 12
