"""``utils`` never lies: bad input gets a clear error, never a silently wrong result or a lost save.

One section per class of slip: training (fit/evaluate/predict), early stopping direction, metrics,
devices and seeds, data, small helpers (params, widgets, errata, History) and text classifiers.
"""

import math
import os

import numpy as np
import pytest
import torch
from sklearn import metrics as skm
from torch import nn

import utils
from utils import metrics as M


def blobs(n=64, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    X = (rng.normal(size=(n, 4)) + 2.0 * np.eye(3, 4)[y]).astype(np.float32)
    return X, y


def make_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


class StepCounter(torch.optim.SGD):
    def __init__(self, params, **kwargs):
        super().__init__(params, **kwargs)
        self.steps = 0

    def step(self, closure=None):
        self.steps += 1
        return super().step(closure)


def fit(model=None, loader=None, **kwargs):
    model = model if model is not None else make_model()
    kwargs.setdefault("loss_fn", nn.CrossEntropyLoss())
    kwargs.setdefault("optimizer", StepCounter(model.parameters(), lr=0.1))
    kwargs.setdefault("num_epochs", 1)
    return utils.fit(model, loader if loader is not None else utils.to_torch_loader(*blobs(), batch_size=16),
                     device="cpu", progress=False, **kwargs)


def regression_data(n=32):
    X, _ = blobs(n)
    return X, X.sum(axis=1).astype(np.float32)


# --- fit: the optimizer ---------------------------------------------------------------------

def test_fit_refuses_an_optimizer_built_for_another_model():
    model = make_model()
    stale = StepCounter(make_model(1).parameters(), lr=0.1)  # the model cell was re-run, not the optimizer cell
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match="not this model's"):
        fit(model, optimizer=stale)
    assert stale.steps == 0
    for p, q in zip(model.parameters(), before):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_fit_accepts_an_optimizer_over_part_of_the_model():
    model = make_model()
    head = StepCounter(model[2].parameters(), lr=0.1)
    fit(model, optimizer=head)
    assert head.steps == 4


def test_fit_refuses_a_model_without_trainable_parameters():
    model = make_model().requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        fit(model)


# --- fit/evaluate: shapes and dtypes of outputs and targets -----------------------------------

@pytest.mark.parametrize("loss_fn", [nn.MSELoss(), nn.L1Loss(), nn.SmoothL1Loss(), nn.HuberLoss(),
                                     nn.functional.mse_loss])
def test_fit_refuses_outputs_and_targets_that_would_broadcast(loss_fn):
    X, target = regression_data()  # target of shape (N,), model output (N, 1): MSE would compare (N, N) pairs
    model = nn.Linear(4, 1)
    optimizer = StepCounter(model.parameters(), lr=0.01)
    with pytest.raises(ValueError, match=r"shape \(16, 1\).*\(16,\).*broadcast.*reshape\(-1, 1\)"):
        fit(model, utils.to_torch_loader(X, target, batch_size=16), loss_fn=loss_fn, optimizer=optimizer)
    assert optimizer.steps == 0


def test_fit_with_matching_regression_shapes_equals_a_plain_loop():
    X, target = regression_data()
    a, b = nn.Linear(4, 1), nn.Linear(4, 1)
    b.load_state_dict(a.state_dict())
    fit(a, utils.to_torch_loader(X, target.reshape(-1, 1), batch_size=32), loss_fn=nn.MSELoss(),
        optimizer=torch.optim.SGD(a.parameters(), lr=0.01))
    opt = torch.optim.SGD(b.parameters(), lr=0.01)
    loss = nn.functional.mse_loss(b(torch.as_tensor(X)), torch.as_tensor(target).reshape(-1, 1))
    loss.backward()
    opt.step()
    torch.testing.assert_close(a.weight, b.weight)


def test_evaluate_refuses_outputs_and_targets_that_would_broadcast():
    X, target = regression_data()
    with pytest.raises(ValueError, match="element by element"):
        utils.evaluate(nn.Linear(4, 1), utils.to_torch_loader(X, target), loss_fn=nn.MSELoss())


def test_fit_asks_for_float_targets_with_binary_cross_entropy():
    X, y = blobs()
    model = nn.Linear(4, 1)
    with pytest.raises(TypeError, match=r"float targets.*astype\(np.float32\)"):
        fit(model, utils.to_torch_loader(X, (y % 2).reshape(-1, 1)), loss_fn=nn.BCEWithLogitsLoss(),
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1))


def test_fit_explains_a_single_logit_with_cross_entropy():
    X, y = blobs()
    model = nn.Linear(4, 1)
    with pytest.raises(ValueError, match="one logit per class.*BCEWithLogitsLoss"):
        fit(model, utils.to_torch_loader(X, y % 2), optimizer=torch.optim.SGD(model.parameters(), lr=0.1))


def test_fit_asks_for_integer_class_labels_instead_of_floats():
    X, y = blobs()
    with pytest.raises(TypeError, match=r"integer class labels.*astype\(np.int64\)"):
        fit(loader=utils.to_torch_loader(X, y.astype(np.float32)))


def test_fit_accepts_class_probabilities_of_the_output_shape():
    X, y = blobs()
    soft = np.eye(3, dtype=np.float32)[y] * 0.9 + 0.1 / 3
    h = fit(loader=utils.to_torch_loader(X, soft, batch_size=16))
    assert h.num_epochs == 1


def test_fit_refuses_class_labels_outside_the_model_outputs():
    X, y = blobs()
    with pytest.raises(ValueError, match=r"\[0, 3\) for a model with 3 outputs, got labels from 5"):
        fit(loader=utils.to_torch_loader(X, y + 5))


def test_fit_asks_to_flatten_class_labels_of_shape_n_by_1():
    X, y = blobs()
    with pytest.raises(ValueError, match=r"reshape\(-1\)"):
        fit(loader=utils.to_torch_loader(X, y.reshape(-1, 1)))


def test_fit_refuses_a_loss_with_reduction_none():
    with pytest.raises(ValueError, match="reduction='mean'"):
        fit(loss_fn=nn.CrossEntropyLoss(reduction="none"))


def test_fit_refuses_a_loss_function_that_returns_one_value_per_sample():
    with pytest.raises(ValueError, match="one number per batch"):
        fit(loss_fn=lambda out, t: nn.functional.cross_entropy(out, t, reduction="none"))


def test_fit_refuses_a_loss_class_instead_of_an_instance():
    with pytest.raises(TypeError, match=r"pass an instance: loss_fn=CrossEntropyLoss\(\)"):
        fit(loss_fn=nn.CrossEntropyLoss)


def test_fit_explains_integer_features():
    X, y = blobs()
    with pytest.raises(TypeError, match=r"integer inputs.*astype\(np.float32\)"):
        fit(loader=utils.to_torch_loader(np.round(X).astype(np.int64), y))


def test_fit_explains_a_wrong_feature_count():
    X, y = blobs()
    with pytest.raises(ValueError, match=r"cannot take inputs of shape \(16, 5\).*number of features"):
        fit(loader=utils.to_torch_loader(np.hstack([X, X[:, :1]]), y, batch_size=16))


def test_fit_refuses_batches_of_numpy_arrays():
    X, y = blobs()
    with pytest.raises(TypeError, match="to_torch_loader"):
        fit(loader=[(X[:16], y[:16])])


def test_fit_without_loss_fn_explains_a_model_that_takes_only_inputs():
    with pytest.raises(TypeError, match="pass a loss_fn"):
        fit(loss_fn=None)


# --- fit/evaluate: loaders and NaN -------------------------------------------------------------

def test_fit_refuses_an_empty_iterator():
    with pytest.raises(ValueError, match="no batches"):
        fit(loader=iter([]))


def test_fit_refuses_a_one_pass_generator_for_several_epochs():
    loader = utils.to_torch_loader(*blobs(), batch_size=16)
    with pytest.raises(ValueError, match="one-pass iterator"):
        fit(loader=(batch for batch in loader), num_epochs=2)


def test_fit_accepts_a_generator_for_a_single_epoch():
    loader = utils.to_torch_loader(*blobs(), batch_size=16)
    assert fit(loader=(batch for batch in loader)).num_epochs == 1


def test_evaluate_refuses_an_empty_iterator():
    with pytest.raises(ValueError, match="no batches"):
        utils.evaluate(make_model(), iter([]), loss_fn=nn.CrossEntropyLoss())


def raw_loader(X, y, batch_size=16):
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=batch_size)


@pytest.mark.parametrize("where", ["inputs", "targets"])
def test_evaluate_refuses_nan_instead_of_returning_a_nan_loss(where):
    X, target = (torch.as_tensor(a) for a in regression_data())
    (X if where == "inputs" else target)[3] = float("nan")
    with pytest.raises(ValueError, match=f"NaN or infinite {where}"):
        utils.evaluate(nn.Linear(4, 1), raw_loader(X, target.reshape(-1, 1)), loss_fn=nn.MSELoss())


@pytest.mark.parametrize("where", ["inputs", "targets"])
def test_fit_says_which_part_of_the_batch_holds_nan(where):
    X, target = (torch.as_tensor(a) for a in regression_data())
    (X if where == "inputs" else target)[3] = float("nan")
    model = nn.Linear(4, 1)
    with pytest.raises(ValueError, match=f"Batch 1 of epoch 1 has NaN or infinite {where}"):
        fit(model, raw_loader(X, target.reshape(-1, 1)), loss_fn=nn.MSELoss(),
            optimizer=torch.optim.SGD(model.parameters(), lr=0.1))


# --- fit: checkpoints ----------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["a folder", "under a file"])
def test_fit_checks_the_checkpoint_path_before_training(tmp_path, kind):
    if kind == "a folder":
        path = tmp_path
    else:
        (tmp_path / "notes.txt").write_text("x")
        path = tmp_path / "notes.txt" / "ckpt.pt"
    model = make_model()
    optimizer = StepCounter(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="checkpoint_path"):
        fit(model, optimizer=optimizer, num_epochs=2, checkpoint_path=path)
    assert optimizer.steps == 0  # refused before the first epoch, not after it


def test_fit_checks_that_the_checkpoint_folder_is_writable(tmp_path, monkeypatch):
    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(type(tmp_path), "write_bytes", refuse)
    model = make_model()
    optimizer = StepCounter(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="cannot be written.*Permission denied"):
        fit(model, optimizer=optimizer, checkpoint_path=tmp_path / "ckpt.pt")
    assert optimizer.steps == 0


def test_the_next_checkpoint_save_removes_what_a_killed_run_left_behind(tmp_path):
    (tmp_path / ".ckpt.pt.424242.tmp").write_bytes(b"half a checkpoint")
    fit(checkpoint_path=tmp_path / "ckpt.pt")
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_checkpoints_are_flushed_to_disk_before_the_rename(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    fit(checkpoint_path=tmp_path / "ckpt.pt")
    assert synced


@pytest.mark.parametrize("flag", ["resume", "restore_best", "progress"])
def test_fit_refuses_strings_for_flags(tmp_path, flag):
    with pytest.raises(TypeError, match=f"{flag} must be True or False"):
        utils.fit(make_model(), utils.to_torch_loader(*blobs()), loss_fn=nn.CrossEntropyLoss(),
                  optimizer=torch.optim.SGD(make_model().parameters(), lr=0.1), num_epochs=1,
                  checkpoint_path=tmp_path / "c.pt", **{flag: "False"})


# --- early stopping and ReduceLROnPlateau: the direction -----------------------------------------

def scripted(name, values, **kwargs):
    """fit with early stopping on a metric whose validation value follows ``values``."""
    X, y = blobs(64)
    it = iter(values)
    metric = {name: lambda out, t: next(it) if len(out) == 16 else 0.0}  # the validation set has 16 rows
    return fit(loader=utils.to_torch_loader(X[:48], y[:48], batch_size=12),
               val_loader=utils.to_torch_loader(X[48:], y[48:], batch_size=16), metrics=metric,
               num_epochs=len(values), early_stopping=len(values), monitor=f"val_{name}", **kwargs)


@pytest.mark.parametrize("name", ["ppl", "perplexity", "nll", "error"])
def test_early_stopping_minimises_perplexity_and_nll_like_names(name):
    assert scripted(name, [5.0, 3.0, 4.0, 6.0]).best_epoch == 2


@pytest.mark.parametrize("name", ["acc", "f1", "auc", "recall"])
def test_early_stopping_maximises_accuracy_like_names(name):
    assert scripted(name, [0.5, 0.9, 0.7, 0.6]).best_epoch == 2


def test_an_explicit_mode_overrides_the_name():
    assert scripted("wobble", [5.0, 3.0, 4.0, 6.0], mode="min").best_epoch == 2
    assert scripted("wobble", [5.0, 3.0, 4.0, 6.0], mode="max").best_epoch == 4


def test_a_monitored_name_of_unknown_direction_needs_a_mode():
    with pytest.raises(ValueError, match="pass mode='min'"):
        scripted("wobble", [1.0, 2.0])


def test_fit_refuses_an_unknown_mode():
    with pytest.raises(ValueError, match="mode must be"):
        scripted("ppl", [1.0, 2.0], mode="up")


def plateau_fit(monitor="val_loss", mode="min", val=True):
    model = make_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=mode, patience=0)
    return fit(model, optimizer=optimizer, scheduler=scheduler, metrics=["accuracy"], monitor=monitor,
               val_loader=utils.to_torch_loader(*blobs(16)) if val else None, num_epochs=2)


def test_reduce_lr_on_plateau_refuses_a_monitor_that_is_not_recorded():
    with pytest.raises(ValueError, match=r"'val_acc' is not recorded.*'val_accuracy'"):
        plateau_fit(monitor="val_acc")


def test_reduce_lr_on_plateau_without_validation_data_does_not_silently_follow_the_training_loss():
    with pytest.raises(ValueError, match="pass val_loader=.*or monitor='loss'"):
        plateau_fit(val=False)
    assert plateau_fit(monitor="loss", val=False).num_epochs == 2


def test_reduce_lr_on_plateau_must_share_the_direction_of_the_monitor():
    with pytest.raises(ValueError, match="mode='max'"):
        plateau_fit(monitor="val_accuracy", mode="min")
    assert plateau_fit(monitor="val_accuracy", mode="max").num_epochs == 2


def test_fit_refuses_a_misspelt_monitor_even_when_nothing_uses_it():
    with pytest.raises(ValueError, match="not recorded"):
        fit(monitor="val_acurracy")


@pytest.mark.parametrize("name, expected", [("val_ppl", (2, 3.0)), ("val_perplexity", (2, 3.0)),
                                            ("val_nll", (2, 3.0)), ("val_top1_acc", (1, 5.0))])
def test_history_best_reads_the_direction_from_known_names(name, expected):
    h = utils.History()
    for value in (5.0, 3.0, 4.0):
        h.log(**{name: value})
    assert h.best(name) == expected


def test_history_best_needs_a_mode_for_a_name_of_unknown_direction():
    h = utils.History()
    h.log(val_wobble=1.0)
    with pytest.raises(ValueError, match="pass mode="):
        h.best("val_wobble")
    assert h.best("val_wobble", mode="max") == (1, 1.0)


def test_history_refuses_values_that_are_not_numbers():
    with pytest.raises(TypeError, match="not a number"):
        utils.History().log(loss="0.5")
    h = utils.History()
    h.log(loss=np.float32(0.5), val_loss=torch.tensor(0.25))
    assert h["loss"] == [0.5] and h["val_loss"] == [0.25]


# --- sizes: NumPy integers welcome, bools and strings refused ----------------------------------------

def test_fit_accepts_numpy_integers_for_sizes():
    val = utils.to_torch_loader(*blobs(16))
    h = fit(num_epochs=np.int64(2), grad_accum_steps=np.int32(2), early_stopping=np.int64(5), val_loader=val,
            grad_clip=np.float32(1.0))
    assert h.num_epochs == 2


@pytest.mark.parametrize("value, error", [(True, TypeError), ("3", TypeError), (2.0, TypeError), (0, ValueError)])
def test_fit_refuses_non_integer_epochs(value, error):
    with pytest.raises(error, match="num_epochs"):
        fit(num_epochs=value)


def test_fit_refuses_a_nan_gradient_clip():
    with pytest.raises(ValueError, match="grad_clip must be a finite number"):
        fit(grad_clip=float("nan"))


def test_to_torch_loader_accepts_numpy_integers_and_refuses_bools():
    X, y = blobs()
    assert len(utils.to_torch_loader(X, y, batch_size=np.int64(8))) == 8
    with pytest.raises(TypeError, match="batch_size must be an int"):
        utils.to_torch_loader(X, y, batch_size=True)


def test_transformer_param_count_accepts_numpy_integers():
    sizes = (np.int64(12), np.int64(768), np.int64(50257), np.int64(1024))
    assert utils.transformer_param_count(*sizes, d_ff=np.int32(3072)) == utils.transformer_param_count(12, 768, 50257, 1024)


@pytest.mark.parametrize("flag", ["bias", "tied_embeddings"])
def test_transformer_param_count_refuses_a_string_for_a_flag(flag):
    with pytest.raises(TypeError, match=f"{flag} must be True or False"):
        utils.transformer_param_count(2, 8, 10, 4, **{flag: "False"})


def test_count_parameters_refuses_a_string_for_trainable_only():
    with pytest.raises(TypeError, match="trainable_only"):
        utils.count_parameters(make_model(), trainable_only="False")


# --- predict ---------------------------------------------------------------------------------------

def tiny_gpt():
    torch.manual_seed(0)
    return utils.TinyGPT(utils.GPTConfig(vocab_size=11, n_layer=1, n_head=2, d_model=16, block_size=8))


def test_predict_runs_tiny_gpt_on_integer_token_ids():
    model = tiny_gpt()
    ids = np.random.default_rng(0).integers(0, 11, (3, 8))
    logits = utils.predict(model, ids, batch_size=2)
    with torch.no_grad():
        expected = model.eval()(torch.as_tensor(ids))[0]
    assert logits.shape == (3, 8, 11)
    np.testing.assert_allclose(logits, expected.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(utils.predict(model, torch.as_tensor(ids)), logits)


def test_predict_still_converts_integer_features_to_float_for_a_linear_model():
    out = utils.predict(make_model(), np.ones((2, 4), dtype=np.int64))
    np.testing.assert_allclose(out, utils.predict(make_model(), np.ones((2, 4), dtype=np.float32)))


@pytest.mark.parametrize("batch_size, error", [(0, ValueError), (-1, ValueError), (True, TypeError), (2.5, TypeError)])
def test_predict_refuses_a_bad_batch_size(batch_size, error):
    with pytest.raises(error, match="batch_size"):
        utils.predict(make_model(), np.zeros((4, 4)), batch_size=batch_size)


def test_predict_refuses_nan_inputs():
    X, _ = blobs(8)
    X[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        utils.predict(make_model(), X)


def test_predict_refuses_a_single_sample_without_its_batch_axis():
    with pytest.raises(ValueError, match=r"X\[None, :\]"):
        utils.predict(make_model(), np.zeros(4))


def test_predict_explains_a_wrong_feature_count():
    with pytest.raises(ValueError, match="number of features"):
        utils.predict(make_model(), np.zeros((2, 5)))


# --- metrics ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("fn", [M.accuracy, M.precision, M.recall, M.f1, M.confusion_matrix, M.classification_report])
def test_metrics_refuse_string_labels_against_integer_predictions(fn):
    with pytest.raises(ValueError, match=r"y_true holds str labels \(\['1', '0', '1'\].*y_pred holds number"):
        fn(["1", "0", "1"], [1, 0, 1])


@pytest.mark.parametrize("fn", [M.precision, M.recall, M.f1])
def test_binary_metrics_refuse_a_positive_label_that_is_absent(fn):
    with pytest.raises(ValueError, match=r"pos_label=1 .*not one of the labels \[0, 2\].*pos_label=2"):
        fn([0, 2, 2, 0], [0, 2, 0, 0])


def test_binary_metrics_ask_for_pos_label_with_string_labels():
    with pytest.raises(ValueError, match="pos_label='spam'"):
        M.precision(["ham", "spam", "spam"], ["ham", "spam", "ham"])
    assert M.recall(["ham", "spam", "spam"], ["ham", "spam", "ham"], pos_label="spam") == pytest.approx(
        skm.recall_score(["ham", "spam", "spam"], ["ham", "spam", "ham"], pos_label="spam"))


def test_binary_metrics_match_sklearn_when_only_one_class_is_present():
    zeros = [0, 0, 0]
    assert M.recall(zeros, zeros) == skm.recall_score(zeros, zeros, zero_division=0) == 0.0


@pytest.mark.parametrize("fn", [M.accuracy, M.precision, M.f1, M.confusion_matrix])
def test_metrics_refuse_nan_predictions(fn):
    with pytest.raises(ValueError, match=r"y_pred contains NaN.*positions \[2\]"):
        fn([0, 1, 1], [0, 1, np.nan])


def test_metrics_refuse_probabilities_in_place_of_labels():
    with pytest.raises(ValueError, match="look like probabilities"):
        M.accuracy([0, 1, 1], [0.2, 0.9, 0.7])


def test_metrics_refuse_labels_of_another_type_than_the_data():
    with pytest.raises(ValueError, match="not of the same type"):
        M.f1([0, 1, 1], [0, 1, 0], average="macro", labels=["0", "1"])


def test_metrics_accept_bools_integral_floats_and_tensors_like_sklearn():
    y_true, y_pred = np.array([True, False, True, True]), np.array([1, 0, 0, 1])
    assert M.recall(y_true, y_pred) == pytest.approx(skm.recall_score(y_true, y_pred))
    assert M.accuracy([0.0, 1.0, 1.0], [0, 1, 0]) == pytest.approx(2 / 3)
    assert M.accuracy(torch.tensor([0.0, 1.0], requires_grad=True), torch.tensor([0, 1])) == 1.0


# --- devices and seeds -----------------------------------------------------------------------------

def test_get_device_refuses_a_cpu_index_that_does_not_exist():
    with pytest.raises(ValueError, match="does not exist.*'cpu:0'"):
        utils.get_device("cpu:3")
    assert utils.get_device("cpu:0") == torch.device("cpu:0")


def test_fit_refuses_a_device_that_does_not_exist():
    model = make_model()
    with pytest.raises(ValueError, match="does not exist"):
        utils.fit(model, utils.to_torch_loader(*blobs()), loss_fn=nn.CrossEntropyLoss(), num_epochs=1,
                  device="cpu:1", optimizer=torch.optim.SGD(model.parameters(), lr=0.1), progress=False)


@pytest.mark.parametrize("value", ["gpu", "cpu:2"])
def test_a_bad_workbook_device_variable_is_named_in_the_error(monkeypatch, value):
    monkeypatch.setenv("WORKBOOK_DEVICE", value)
    with pytest.raises(ValueError, match="WORKBOOK_DEVICE"):
        utils.get_device()


def test_get_device_accepts_a_torch_device():
    assert utils.get_device(torch.device("cpu")) == torch.device("cpu")


def test_set_seed_without_deterministic_turns_deterministic_mode_off_again():
    try:
        utils.set_seed(0, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled()
        utils.set_seed(0)
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)


def test_set_seed_refuses_a_string_for_deterministic():
    with pytest.raises(TypeError, match="deterministic must be True or False"):
        utils.set_seed(0, deterministic="no")


# --- data ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../utils/__init__.py", "/etc/passwd", "sub/../../README.md"])
def test_data_path_refuses_paths_that_leave_the_data_folder(name):
    with pytest.raises(ValueError, match="inside the course's data/ folder"):
        utils.data_path(name)


def test_data_path_refuses_a_non_string():
    with pytest.raises(TypeError, match="file name inside data/"):
        utils.data_path(5)


@pytest.mark.parametrize("seed, error", [("0", TypeError), (-1, ValueError), (1.5, TypeError), (True, TypeError)])
def test_split_loaders_check_the_seed_themselves(seed, error):
    with pytest.raises(error, match="seed must be"):
        utils.load_breast_cancer_split(seed=seed)


def test_split_loaders_accept_numpy_numbers():
    a = utils.load_breast_cancer_split(seed=np.int64(3), val_size=np.float64(0.2))
    b = utils.load_breast_cancer_split(seed=3, val_size=0.2)
    np.testing.assert_array_equal(a.y_val, b.y_val)


def test_split_loaders_refuse_a_string_for_standardize():
    with pytest.raises(TypeError, match="standardize must be True or False"):
        utils.load_diabetes_split(standardize="False")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_to_torch_loader_refuses_non_finite_targets_as_it_does_features(bad):
    X, target = regression_data(8)
    target[3] = bad
    with pytest.raises(ValueError, match="y contains 1 NaN or infinite"):
        utils.to_torch_loader(X, target)


@pytest.mark.parametrize("option", ["shuffle", "drop_last"])
def test_to_torch_loader_refuses_strings_for_flags(option):
    with pytest.raises(TypeError, match=f"{option} must be True or False"):
        utils.to_torch_loader(*blobs(), **{option: "False"})


def test_to_torch_loader_checks_seed_and_workers_itself():
    with pytest.raises(TypeError, match="seed must be an int"):
        utils.to_torch_loader(*blobs(), shuffle=True, seed="1")
    with pytest.raises(ValueError, match="num_workers must be a non-negative int"):
        utils.to_torch_loader(*blobs(), num_workers=-1)


def test_to_torch_loader_explains_ragged_samples():
    with pytest.raises(ValueError, match="same shape"):
        utils.to_torch_loader([[1.0, 2.0], [1.0]], [0, 1])


# --- errata, widgets -------------------------------------------------------------------------------

def test_show_errata_refuses_none_instead_of_showing_every_row():
    with pytest.raises(ValueError, match="needs the chapter"):
        utils.show_errata(None)


@pytest.mark.parametrize("spec, match", [((0, 10, 0), "step must be positive"), ((0, 10, -1), "step must be positive"),
                                         ((10, 0, 1), "min < max"), ((0.0, float("nan"), 0.1), "finite")])
def test_make_panel_refuses_sliders_that_cannot_move(spec, match):
    with pytest.raises(ValueError, match=match):
        utils.make_panel(lambda x: x, x=spec)


def test_make_panel_accepts_numpy_numbers_in_a_slider():
    panel = utils.make_panel(lambda x: x * 2, x=(np.int64(0), np.int64(10), np.int64(1), np.int64(3)))
    assert panel.result == 6 and type(panel.controls["x"]).__name__ == "IntSlider"


def test_make_panel_refuses_a_control_the_function_cannot_take():
    with pytest.raises(TypeError, match="has no parameter 'y'"):
        utils.make_panel(lambda x: x, x=(0, 3, 1), y=(0, 3, 1))
    with pytest.raises(TypeError, match="needs 'y'"):
        utils.make_panel(lambda x, y: x, x=(0, 3, 1))


def test_make_panel_refuses_a_string_for_auto():
    with pytest.raises(TypeError, match="auto must be True or False"):
        utils.make_panel(lambda x: x, auto="no", x=(0, 3, 1))


# --- text classifiers: saves that survive a crash, loads that explain -------------------------------

TEXTS = ["where is my order", "refund please", "track my parcel", "money back"] * 3
LABELS = ["track", "refund", "track", "refund"] * 3
PROBE = ["my parcel?", "give me my money"]


@pytest.fixture(scope="module")
def scratch_classifier():
    return utils.train_text_classifier(TEXTS, LABELS, method="scratch", num_epochs=1, min_steps=5)


def test_a_save_that_fails_halfway_leaves_the_earlier_classifier_intact(tmp_path, monkeypatch, scratch_classifier):
    folder = tmp_path / "clf"
    scratch_classifier.save(folder)
    before = scratch_classifier.predict_proba(PROBE)
    newer = utils.train_text_classifier(TEXTS, LABELS, method="scratch", num_epochs=1, min_steps=5, seed=3)
    assert not np.allclose(newer.predict_proba(PROBE), before)

    def half_written(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a file")  # the disk fills up in the middle of the weights
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", half_written)
    with pytest.raises(OSError, match="No space left"):
        newer.save(folder)
    monkeypatch.undo()
    np.testing.assert_allclose(utils.TextClassifier.load(folder).predict_proba(PROBE), before, rtol=0, atol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clf"]  # no temporary folder left behind


def test_a_save_interrupted_between_the_renames_is_recovered(tmp_path, monkeypatch, scratch_classifier):
    folder = tmp_path / "clf"
    scratch_classifier.save(folder)
    before = scratch_classifier.predict_proba(PROBE)
    real_replace = os.replace
    calls = []

    def killed_after_moving_the_old_folder_away(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # the new folder is never moved in
            raise KeyboardInterrupt
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", killed_after_moving_the_old_folder_away)
    with pytest.raises(KeyboardInterrupt):
        scratch_classifier.save(folder)
    monkeypatch.undo()
    np.testing.assert_allclose(utils.TextClassifier.load(folder).predict_proba(PROBE), before, rtol=0, atol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clf"]


def test_a_process_killed_between_the_renames_loses_nothing(tmp_path, scratch_classifier):
    folder = tmp_path / "clf"
    scratch_classifier.save(folder)
    before = scratch_classifier.predict_proba(PROBE)
    os.replace(folder, tmp_path / ".clf.old-12345")  # what a save killed after its first rename leaves
    (tmp_path / ".clf.tmp-12345").mkdir()
    np.testing.assert_allclose(utils.TextClassifier.load(folder).predict_proba(PROBE), before, rtol=0, atol=1e-6)
    scratch_classifier.save(folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clf"]


def test_the_next_save_removes_what_a_killed_save_left_behind(tmp_path, scratch_classifier):
    folder = tmp_path / "clf"
    scratch_classifier.save(folder)
    (tmp_path / ".clf.tmp-99999").mkdir()
    (tmp_path / ".clf.tmp-99999" / "weights.pt").write_bytes(b"half")
    scratch_classifier.save(folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clf"]
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "weights.pt"]


def test_save_refuses_a_folder_holding_other_files(tmp_path, scratch_classifier):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="notes.txt"):
        scratch_classifier.save(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_load_says_a_damaged_weights_file_is_damaged_and_never_suggests_unsafe_loading(tmp_path, scratch_classifier):
    folder = tmp_path / "clf"
    scratch_classifier.save(folder)
    (folder / "weights.pt").write_bytes(b"this is not a torch file")
    with pytest.raises(ValueError, match="weights.pt is damaged.*Recreate it") as info:
        utils.TextClassifier.load(folder)
    chain, error = [], info.value
    while error is not None:
        chain.append(str(error))
        error = error.__cause__ or (None if error.__suppress_context__ else error.__context__)
    assert "weights_only=False" not in " ".join(chain)


def test_load_says_a_damaged_config_is_damaged(tmp_path, scratch_classifier):
    folder = tmp_path / "clf"
    scratch_classifier.save(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json is damaged.*Recreate it"):
        utils.TextClassifier.load(folder)


def test_train_text_classifier_refuses_texts_that_are_all_empty():
    with pytest.raises(ValueError, match="empty or blank"):
        utils.train_text_classifier(["", "  "] * 2, ["a", "b"] * 2, method="scratch", num_epochs=1)


def test_train_text_classifier_accepts_numpy_integers_and_refuses_nan_rates():
    clf = utils.train_text_classifier(TEXTS, LABELS, method="scratch", num_epochs=np.int64(1), min_steps=1,
                                      batch_size=np.int64(4), seed=np.int64(1))
    assert clf.labels == ["refund", "track"] and isinstance(clf.config.train_info["batch_size"], int)
    with pytest.raises(ValueError, match="lr must be a positive finite number"):
        utils.train_text_classifier(TEXTS, LABELS, method="scratch", lr=math.nan)


def test_predict_proba_refuses_a_zero_batch_size(scratch_classifier):
    with pytest.raises(ValueError, match="batch_size"):
        scratch_classifier.predict_proba(PROBE, batch_size=0)
