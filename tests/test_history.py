import math

import pytest

import utils


def make_history():
    h = utils.History(framework="torch")
    h.log(loss=1.0, val_loss=1.2, accuracy=0.5, val_accuracy=0.4)
    h.log(loss=0.6, val_loss=0.9, accuracy=0.7, val_accuracy=0.8)
    h.log(loss=0.3, val_loss=1.0, accuracy=0.9, val_accuracy=0.7)
    return h


def test_best_minimises_losses_and_maximises_other_metrics():
    h = make_history()
    assert h.best("val_loss") == (2, 0.9)
    assert h.best("val_accuracy") == (2, 0.8)
    assert h.best("loss", mode="max") == (1, 1.0)


def test_best_rejects_unknown_metric_and_mode():
    h = make_history()
    with pytest.raises(KeyError, match="was not recorded"):
        h.best("f1")
    with pytest.raises(ValueError, match="mode"):
        h.best("loss", mode="up")


def test_log_pads_missing_values_with_nan():
    h = utils.History()
    h.log(loss=1.0)
    h.log(loss=0.5, val_loss=0.7)
    assert h.num_epochs == 2
    assert math.isnan(h["val_loss"][0]) and h["val_loss"][1] == 0.7
    h.log(val_loss=0.6)
    assert math.isnan(h["loss"][2])


def test_to_dataframe_has_one_row_per_epoch():
    frame = make_history().to_dataframe()
    assert list(frame.index) == [1, 2, 3]
    assert frame.loc[3, "loss"] == 0.3
    assert set(frame.columns) == {"loss", "val_loss", "accuracy", "val_accuracy"}


def test_early_stopping_fields_default_to_none_and_show_in_repr():
    h = utils.History()
    assert h.stopped_epoch is None and h.best_epoch is None
    h.log(loss=1.0)
    assert "stopped_epoch" not in repr(h)
    h.stopped_epoch, h.best_epoch = 4, 2
    assert "stopped_epoch=4" in repr(h) and "best_epoch=2" in repr(h)
