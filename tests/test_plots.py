import matplotlib
import pytest

import utils

matplotlib.use("Agg")


def history(framework="torch", scale=1.0):
    h = utils.History(framework=framework)
    for i in range(4):
        h.log(loss=scale / (i + 1), val_loss=scale / (i + 1) + 0.1, accuracy=0.5 + 0.1 * i)
    return h


def test_plot_history_draws_train_and_validation_per_metric():
    fig = utils.plot_history(history(), metrics=["loss", "accuracy"])
    loss_ax, acc_ax = fig.axes
    assert [line.get_label() for line in loss_ax.lines] == ["train", "validation"]
    assert list(loss_ax.lines[0].get_ydata()) == history()["loss"]
    assert len(acc_ax.lines) == 1 and acc_ax.get_xlabel() == "epoch"


def test_plot_history_compares_several_runs_with_labels():
    fig = utils.plot_history({"PyTorch": history(), "Keras": history("keras", 2.0)}, log_y=True)
    labels = [line.get_label() for line in fig.axes[0].lines]
    assert labels == ["PyTorch train", "PyTorch validation", "Keras train", "Keras validation"]
    assert fig.axes[0].get_yscale() == "log"


def test_plot_history_rejects_bad_input():
    with pytest.raises(KeyError, match="No run recorded 'f1'"):
        utils.plot_history(history(), metrics=["f1"])
    with pytest.raises(TypeError):
        utils.plot_history({"a": {"loss": [1, 2]}})
    with pytest.raises(ValueError, match="Nothing to plot"):
        utils.plot_history({})


def test_use_course_style_sets_grid_and_palette():
    utils.use_course_style()
    assert matplotlib.rcParams["axes.grid"] is True
    assert matplotlib.rcParams["axes.prop_cycle"].by_key()["color"][0] == utils.COLORS[0]


def test_cjk_font_is_found_when_one_is_installed_and_draws_chinese_without_missing_glyphs():
    import shutil
    import subprocess
    import warnings

    import matplotlib.pyplot as plt

    from utils import plots

    has_zh = shutil.which("fc-list") and subprocess.run(["fc-list", ":lang=zh"], capture_output=True,
                                                        text=True).stdout.strip()
    if not has_zh:
        pytest.skip("no Chinese font installed (.ci/run installs fonts-wqy-microhei)")
    name = plots.cjk_font()
    assert name in plots.CJK_FONTS
    utils.use_course_style(chinese=True)
    fig, ax = plt.subplots()
    ax.set_title("大模型的市场定位")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns "Glyph ... missing from font(s)" for a box
        fig.canvas.draw()
    plt.close(fig)


def test_use_course_style_warns_about_chinese_figures_without_a_cjk_font(monkeypatch):
    from utils import plots

    monkeypatch.setattr(plots, "cjk_font", lambda: None)
    with pytest.warns(UserWarning, match="No CJK font"):
        utils.use_course_style(chinese=True)
    with pytest.raises(TypeError, match="chinese must be True or False"):
        utils.use_course_style(chinese="yes")


@pytest.mark.parametrize("kwargs, error", [
    ({"metrics": None}, ValueError),
    ({"metrics": []}, ValueError),
    ({"metrics": [1]}, TypeError),
    ({"log_y": "no"}, TypeError),
    ({"title": 3}, TypeError),
])
def test_plot_history_refuses_bad_options_before_drawing(kwargs, error):
    with pytest.raises(error):
        utils.plot_history(history(), **kwargs)


def test_plot_history_refuses_fewer_axes_than_metrics_instead_of_dropping_one():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match="2 metric"):
        utils.plot_history(history(), metrics=["loss", "accuracy"], axes=[ax])
    with pytest.raises(TypeError, match="Axes"):
        utils.plot_history(history(), metrics=["loss"], axes=["not an axes"])
    plt.close(fig)


def test_plot_history_refuses_a_list_of_non_histories_with_a_type_error():
    with pytest.raises(TypeError, match="History"):
        utils.plot_history([{"loss": [1.0, 0.5]}])
