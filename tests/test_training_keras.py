import numpy as np
import pytest

import utils

pytestmark = pytest.mark.tensorflow


def blobs(n=200, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    return (rng.normal(size=(n, 4)) + 2.0 * np.eye(3, 4)[y]).astype(np.float32), y


def make_model(tf, lr=0.01):
    keras = tf.keras
    utils.set_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(3)])
    model.compile(optimizer=keras.optimizers.Adam(lr),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    return model


def test_fit_keras_returns_a_course_history(tf):
    X, y = blobs()
    h = utils.fit_keras(make_model(tf), X[:150], y[:150], num_epochs=10, batch_size=32,
                        validation_data=(X[150:], y[150:]), progress=False)
    assert h.framework == "keras" and h.num_epochs == 10
    assert set(h.keys()) >= {"loss", "accuracy", "val_loss", "val_accuracy", "epoch_time_s"}
    assert h["loss"][-1] < h["loss"][0]
    assert h["val_accuracy"][-1] > 0.8


def test_fit_keras_accepts_a_tf_dataset(tf):
    X, y = blobs(64)
    h = utils.fit_keras(make_model(tf), utils.to_tf_dataset(X, y, batch_size=16), num_epochs=2, progress=False)
    assert len(h["loss"]) == 2


def test_fit_keras_raises_on_nan_loss(tf):
    X, y = blobs(64)
    keras = tf.keras
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(10.0), loss="mse")  # diverges to inf, then NaN
    with pytest.raises(utils.NonFiniteLossError, match="lower learning rate"):
        utils.fit_keras(model, X * 100, y.astype("float32"), num_epochs=20, progress=False)


def test_fit_keras_rejects_bad_input(tf):
    X, y = blobs(20)
    model = make_model(tf)
    with pytest.raises(ValueError, match="same number of samples"):
        utils.fit_keras(model, X, y[:10], num_epochs=1)
    with pytest.raises(ValueError, match="empty"):
        utils.fit_keras(model, X[:0], y[:0], num_epochs=1)
    with pytest.raises(ValueError, match="NaN"):
        utils.fit_keras(model, np.full_like(X, np.nan), y, num_epochs=1)
    with pytest.raises(ValueError, match="num_epochs"):
        utils.fit_keras(model, X, y, num_epochs=0)
    uncompiled = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="not compiled"):
        utils.fit_keras(uncompiled, X, y, num_epochs=1)
    with pytest.raises(TypeError, match="keras.Model"):
        utils.fit_keras("model", X, y, num_epochs=1)


def test_to_history_renames_learning_rate_and_keeps_only_the_epochs_run():
    from utils.training_keras import _to_history
    logs = {"loss": [0.9, 0.5, 0.4], "learning_rate": [0.1, 0.05, 0.05], "val_loss": [1.0, 0.7]}
    h = _to_history(logs, times=[1.5, 1.25])  # two epochs ran (e.g. stopped early)
    assert h.framework == "keras" and h.num_epochs == 2
    assert list(h["loss"]) == [0.9, 0.5] and list(h["lr"]) == [0.1, 0.05] and list(h["epoch_time_s"]) == [1.5, 1.25]
    assert "learning_rate" not in h.keys() and list(h["val_loss"]) == [1.0, 0.7]
