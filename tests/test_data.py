import numpy as np
import pytest
import torch

import utils


@pytest.mark.parametrize("loader, n_total, n_features, n_classes", [
    (utils.load_digits_split, 1797, 64, 10),
    (utils.load_breast_cancer_split, 569, 30, 2),
    (utils.load_diabetes_split, 442, 10, 0),
])
def test_splits_partition_the_data_set(loader, n_total, n_features, n_classes):
    split = loader(seed=0)
    sizes = split.sizes()
    assert sum(sizes.values()) == n_total
    assert abs(sizes["test"] - 0.15 * n_total) <= 1 and abs(sizes["val"] - 0.15 * n_total) <= 2
    assert split.n_features == n_features and split.n_classes == n_classes
    assert split.X_train.dtype == np.float32


def test_standardisation_is_fitted_on_the_training_split_only():
    split = utils.load_breast_cancer_split(seed=0)
    assert np.allclose(split.X_train.mean(axis=0), 0, atol=1e-5)
    assert np.allclose(split.X_train.std(axis=0), 1, atol=1e-3)
    # The test split is transformed with training statistics, so it is not exactly centred.
    assert not np.allclose(split.X_test.mean(axis=0), 0, atol=1e-3)
    raw = utils.load_breast_cancer_split(seed=0, standardize=False)
    assert raw.scaler is None
    np.testing.assert_allclose(split.scaler.transform(raw.X_test), split.X_test, rtol=1e-4, atol=1e-4)


def test_classification_splits_are_stratified():
    split = utils.load_digits_split(seed=1)
    train_share = np.bincount(split.y_train) / len(split.y_train)
    test_share = np.bincount(split.y_test) / len(split.y_test)
    assert np.abs(train_share - test_share).max() < 0.02


def test_splits_depend_on_seed_and_are_repeatable():
    a, b, c = (utils.load_digits_split(seed=s) for s in (0, 0, 1))
    assert np.array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.y_test, c.y_test)


@pytest.mark.parametrize("val_size, test_size", [(0, 0.2), (0.5, 0.5), (0.2, 1.2), (-0.1, 0.2)])
def test_bad_split_fractions_raise(val_size, test_size):
    with pytest.raises(ValueError, match="fraction|leave data"):
        utils.load_digits_split(val_size=val_size, test_size=test_size)


def test_to_torch_loader_batches_and_dtypes():
    X = np.arange(30, dtype=np.float64).reshape(10, 3)
    loader = utils.to_torch_loader(X, np.arange(10), batch_size=4)
    batches = list(loader)
    assert [len(xb) for xb, _ in batches] == [4, 4, 2]
    xb, yb = batches[0]
    assert xb.dtype == torch.float32 and yb.dtype == torch.int64
    regression = utils.to_torch_loader(X, np.linspace(0, 1, 10), batch_size=10)
    assert next(iter(regression))[1].dtype == torch.float32


def test_to_torch_loader_shuffles_reproducibly_with_a_seed():
    X, y = np.zeros((50, 1)), np.arange(50)
    order = lambda seed: torch.cat([yb for _, yb in utils.to_torch_loader(X, y, 10, shuffle=True, seed=seed)])  # noqa: E731
    assert torch.equal(order(3), order(3))
    assert not torch.equal(order(3), order(4))
    assert sorted(order(3).tolist()) == list(range(50))


@pytest.mark.parametrize("X, y, error, match", [
    (np.zeros((0, 3)), np.zeros(0), ValueError, "empty"),
    (np.zeros((5, 3)), np.zeros(4), ValueError, "same number of samples"),
    (np.array([["a", "b"]] * 3), np.zeros(3), TypeError, "numeric"),
    (np.zeros((3, 2)), np.array(["x", "y", "z"]), TypeError, "integers"),
    (np.array([[1.0, np.nan]] * 3), np.zeros(3), ValueError, "NaN"),
])
def test_to_torch_loader_rejects_bad_input(X, y, error, match):
    with pytest.raises(error, match=match):
        utils.to_torch_loader(X, y)


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, True])
def test_to_torch_loader_rejects_bad_batch_size(batch_size):
    with pytest.raises(ValueError, match="batch_size"):
        utils.to_torch_loader(np.zeros((4, 2)), np.zeros(4), batch_size=batch_size)


@pytest.mark.tensorflow
def test_to_tf_dataset_matches_torch_loader(tf):
    X, y = np.random.default_rng(0).normal(size=(10, 3)), np.arange(10)
    ds = utils.to_tf_dataset(X, y, batch_size=4)
    batches = list(ds)
    assert [int(xb.shape[0]) for xb, _ in batches] == [4, 4, 2]
    assert batches[0][0].dtype == tf.float32 and batches[0][1].dtype == tf.int64
    loader = utils.to_torch_loader(X, y, batch_size=4)
    for (xt, yt), (xf, yf) in zip(loader, batches):
        np.testing.assert_array_equal(xt.numpy(), xf.numpy())
        np.testing.assert_array_equal(yt.numpy(), yf.numpy())


@pytest.mark.tensorflow
def test_to_tf_dataset_rejects_bad_input(tf):
    with pytest.raises(ValueError, match="same number of samples"):
        utils.to_tf_dataset(np.zeros((3, 2)), np.zeros(2))


def test_data_path_finds_course_files_and_explains_missing_ones():
    assert utils.data_path("errata.csv").is_file()
    with pytest.raises(FileNotFoundError, match="ships with the repository"):
        utils.data_path("no_such_file.csv")


def test_models_csv_has_the_documented_columns_rows_and_sources():
    import pandas as pd

    models = pd.read_csv(utils.data_path("models.csv"))
    assert list(models.columns) == ["model", "year", "parameters", "training_data", "source"]
    assert len(models) == 17 and models["model"].is_unique
    assert models["parameters"].dtype.kind == "i" and models["parameters"].gt(0).all()
    assert models["year"].between(1998, 2024).all() and models["year"].is_monotonic_increasing
    assert models["source"].str.len().gt(20).all()


def test_models_csv_holds_the_released_gpt2_count():
    import pandas as pd

    models = pd.read_csv(utils.data_path("models.csv")).set_index("model")
    # 48 blocks, d = 1600, V = 50,257, n_ctx = 1,024: the released model OpenAI names 1558M
    assert models.loc["GPT-2", "parameters"] == utils.transformer_param_count(48, 1600, 50257, 1024) == 1_557_611_200


def test_read_data_csv_names_the_file_when_it_is_not_utf8(monkeypatch, tmp_path):
    from utils import data

    (tmp_path / "broken.csv").write_bytes(b"a,b\n\xff\xfe,1\n")
    (tmp_path / "empty.csv").write_bytes(b"")
    monkeypatch.setattr(data, "DATA_DIR", tmp_path)
    with pytest.raises(ValueError, match="broken.csv.*not UTF-8"):
        data.read_data_csv("broken.csv")
    with pytest.raises(ValueError, match="empty.csv"):
        data.read_data_csv("empty.csv")


def test_the_course_tables_load_through_read_data_csv():
    assert len(utils.read_data_csv("errata.csv")) > 0
    assert len(utils.cost.load_hardware_prices()) > 0
