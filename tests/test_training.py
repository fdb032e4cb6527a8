import numpy as np
import pytest
import torch
from torch import nn

import utils


def blobs(n=120, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    X = rng.normal(size=(n, 4)) + 2.0 * np.eye(3, 4)[y]
    return X.astype(np.float32), y


def make_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))


def test_fit_equals_a_plain_training_loop():
    X, y = blobs()
    a, b = make_model(), make_model()
    history = utils.fit(a, utils.to_torch_loader(X, y, batch_size=16, shuffle=True, seed=0), loss_fn=nn.CrossEntropyLoss(), optimizer=torch.optim.SGD(a.parameters(), lr=0.1),
                        num_epochs=3, device="cpu", progress=False)
    opt = torch.optim.SGD(b.parameters(), lr=0.1)
    plain_losses = []
    loader = utils.to_torch_loader(X, y, batch_size=16, shuffle=True, seed=0)  # same shuffling order
    for _ in range(3):
        total = 0.0
        for xb, yb in loader:
            loss = nn.functional.cross_entropy(b(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(yb)
        plain_losses.append(total / len(X))
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb)
    np.testing.assert_allclose(history["loss"], plain_losses, rtol=1e-6)


def test_fit_learns_and_records_validation_metrics():
    X, y = blobs(300)
    train = utils.to_torch_loader(X[:200], y[:200], batch_size=32, shuffle=True)
    val = utils.to_torch_loader(X[200:], y[200:], batch_size=64)
    model = make_model()
    h = utils.fit(model, train, val_loader=val, loss_fn=nn.CrossEntropyLoss(), metrics=["accuracy"],
                  optimizer=torch.optim.Adam(model.parameters(), lr=0.01), num_epochs=15, progress=False)
    assert set(h.keys()) >= {"loss", "accuracy", "val_loss", "val_accuracy", "lr", "epoch_time_s"}
    assert h["loss"][-1] < 0.5 * h["loss"][0]
    assert h["val_accuracy"][-1] > 0.8
    assert h.best("val_accuracy")[1] == max(h["val_accuracy"])


def test_fit_raises_on_nan_loss_naming_epoch_and_step():
    X, y = blobs(64)
    loader = utils.to_torch_loader(X, y, batch_size=16)  # 4 steps per epoch
    calls = []

    def loss_fn(output, target):  # turns NaN on the 7th call: epoch 2, step 3
        calls.append(1)
        loss = nn.functional.cross_entropy(output, target)
        return loss * float("nan") if len(calls) == 7 else loss

    model = make_model()
    with pytest.raises(utils.NonFiniteLossError, match=r"nan at epoch 2, step 3.*lower learning rate"):
        utils.fit(model, loader, loss_fn=loss_fn, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                  num_epochs=3, progress=False)


def test_fit_raises_when_a_huge_learning_rate_diverges():
    X, y = blobs(64)
    loader = utils.to_torch_loader(X * 100, y.astype(np.float32), batch_size=16)
    model = nn.Linear(4, 1)
    with pytest.raises(utils.NonFiniteLossError, match="epoch"):
        utils.fit(model, loader, loss_fn=lambda out, t: ((out.squeeze(1) - t) ** 2).mean(),
                  optimizer=torch.optim.SGD(model.parameters(), lr=10.0), num_epochs=50, progress=False)


def test_fit_steps_the_scheduler_per_epoch_or_per_step():
    X, y = blobs(64)
    loader = utils.to_torch_loader(X, y, batch_size=16)  # 4 steps per epoch
    for where, expected in (("epoch", [1.0, 0.5, 0.25]), ("step", [0.0625, 0.00390625, 0.000244140625])):
        model = make_model()
        opt = torch.optim.SGD(model.parameters(), lr=1.0)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        h = utils.fit(model, loader, loss_fn=nn.CrossEntropyLoss(), optimizer=opt, num_epochs=3,
                      scheduler=sched, scheduler_step=where, progress=False)
        # "lr" is recorded after the epoch's scheduler steps
        np.testing.assert_allclose(h["lr"], [e / 2 if where == "epoch" else e for e in expected])


def test_fit_clips_gradients():
    X, y = blobs(32)
    loader = utils.to_torch_loader(X * 1000, y, batch_size=32)
    norms = []
    model = make_model()

    class Spy(torch.optim.SGD):
        def step(self, closure=None):
            norms.append(torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters())).item())
            return super().step(closure)

    utils.fit(model, loader, loss_fn=nn.CrossEntropyLoss(), optimizer=Spy(model.parameters(), lr=1e-6),
              num_epochs=2, grad_clip=0.5, progress=False)
    assert max(norms) <= 0.5 + 1e-4


def test_fit_with_bf16_autocast_on_cpu_trains():
    X, y = blobs(200)
    loader = utils.to_torch_loader(X, y, batch_size=32, shuffle=True)
    model = make_model()
    h = utils.fit(model, loader, loss_fn=nn.CrossEntropyLoss(), optimizer=torch.optim.Adam(model.parameters(), lr=0.01),
                  num_epochs=5, amp="bf16", device="cpu", progress=False)
    assert h["loss"][-1] < h["loss"][0]
    assert next(model.parameters()).dtype == torch.float32  # master weights stay fp32


def test_fit_accepts_models_that_compute_their_own_loss():
    class WithLoss(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = make_model()

        def forward(self, x, targets=None):
            logits = self.net(x)
            return logits, None if targets is None else nn.functional.cross_entropy(logits, targets)

    X, y = blobs(64)
    model = WithLoss()
    h = utils.fit(model, utils.to_torch_loader(X, y, 16), loss_fn=None, num_epochs=2, progress=False,
                  optimizer=torch.optim.SGD(model.parameters(), lr=0.1), metrics=["accuracy"])
    assert len(h["accuracy"]) == 2


def test_evaluate_computes_exact_metrics_over_the_whole_set():
    X, y = blobs(50)
    model = make_model()
    loader = utils.to_torch_loader(X, y, batch_size=7)
    result = utils.evaluate(model, loader, loss_fn=nn.CrossEntropyLoss(), metrics=["accuracy"])
    logits = model(torch.as_tensor(X))
    assert result["accuracy"] == pytest.approx((logits.argmax(1).numpy() == y).mean())
    assert result["loss"] == pytest.approx(nn.functional.cross_entropy(logits, torch.as_tensor(y)).item(), rel=1e-5)
    assert model.training  # evaluate restores the mode it found


def test_accuracy_handles_single_logit_outputs():
    output = torch.tensor([[2.0], [-1.0], [0.5]])
    assert utils.training.accuracy_from_logits(output, torch.tensor([1, 0, 0])) == pytest.approx(2 / 3)


def test_predict_returns_numpy_logits_in_eval_mode():
    model = nn.Sequential(nn.Linear(3, 2), nn.Dropout(0.9))
    X = np.random.default_rng(0).normal(size=(9, 3))
    out1, out2 = utils.predict(model, X, batch_size=4), utils.predict(model, X)
    assert out1.shape == (9, 2)
    np.testing.assert_allclose(out1, out2)  # dropout is off


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(num_epochs=0), ValueError, "num_epochs"),
    (dict(num_epochs=1, grad_clip=-1.0), ValueError, "grad_clip"),
    (dict(num_epochs=1, amp="fp8"), ValueError, "amp"),
    (dict(num_epochs=1, device="tpu"), ValueError, "Valid choices"),
    (dict(num_epochs=1, metrics=["f1"]), ValueError, "Unknown metric"),
    (dict(num_epochs=1, scheduler_step="batch"), ValueError, "scheduler_step"),
])
def test_fit_rejects_bad_arguments(kwargs, error, match):
    X, y = blobs(16)
    model = make_model()
    with pytest.raises(error, match=match):
        utils.fit(model, utils.to_torch_loader(X, y), loss_fn=nn.CrossEntropyLoss(),
                  optimizer=torch.optim.SGD(model.parameters(), lr=0.1), progress=False, **kwargs)


def test_fit_rejects_wrong_types_and_empty_loaders():
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = utils.to_torch_loader(*blobs(16))
    with pytest.raises(TypeError, match="torch.nn.Module"):
        utils.fit("model", loader, loss_fn=nn.CrossEntropyLoss(), optimizer=opt, num_epochs=1)
    with pytest.raises(TypeError, match="Optimizer"):
        utils.fit(model, loader, loss_fn=nn.CrossEntropyLoss(), optimizer="adam", num_epochs=1)
    with pytest.raises(ValueError, match="no batches"):
        utils.fit(model, [], loss_fn=nn.CrossEntropyLoss(), optimizer=opt, num_epochs=1)
    with pytest.raises(TypeError, match="pair"):
        utils.fit(model, [torch.zeros(2, 4)], loss_fn=nn.CrossEntropyLoss(), optimizer=opt, num_epochs=1, progress=False)


def test_progress_is_quiet_under_ci(monkeypatch):
    monkeypatch.setenv("CI", "true")
    assert not utils.training.progress_enabled(True)
    monkeypatch.delenv("CI")
    assert utils.training.progress_enabled(True) and not utils.training.progress_enabled(False)


def test_resolve_amp_auto_uses_bf16_on_cpu_only_with_native_support(monkeypatch):
    assert isinstance(utils.training.cpu_has_fast_bf16(), bool)
    monkeypatch.setattr(utils.precision, "cpu_has_fast_bf16", lambda: True)
    assert utils.training.resolve_amp("auto", torch.device("cpu")) == torch.bfloat16
    monkeypatch.setattr(utils.precision, "cpu_has_fast_bf16", lambda: False)
    assert utils.training.resolve_amp("auto", torch.device("cpu")) is None
    assert utils.training.resolve_amp("bf16", torch.device("cpu")) == torch.bfloat16


def test_resolve_amp_explicit_formats_and_off():
    assert utils.training.resolve_amp(None, torch.device("cpu")) is None
    assert utils.training.resolve_amp("fp16", torch.device("cpu")) == torch.float16


# --- gradient accumulation -------------------------------------------------------------

def float64_loader(X, y, batch_size):
    dataset = torch.utils.data.TensorDataset(torch.as_tensor(X, dtype=torch.float64), torch.as_tensor(y))
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size)


class GradientRecorder(torch.optim.SGD):
    """SGD that keeps a copy of the gradients it is asked to apply."""

    def __init__(self, params, **kwargs):
        super().__init__(params, **kwargs)
        self.seen = []

    def step(self, closure=None):
        self.seen.append([p.grad.detach().clone() for group in self.param_groups for p in group["params"]])
        return super().step(closure)


@pytest.mark.parametrize("n, batch_size, accum, big_batch", [(64, 16, 4, 64), (80, 16, 3, 48)])
def test_gradient_accumulation_equals_one_big_batch_in_float64(n, batch_size, accum, big_batch):
    # (80, 16, 3): windows of 3 and 2 batches, i.e. big batches of 48 and 32 samples
    X, y = blobs(n)
    runs = []
    for loader, k in ((float64_loader(X, y, batch_size), accum), (float64_loader(X, y, big_batch), 1)):
        model = make_model().double()
        opt = GradientRecorder(model.parameters(), lr=0.1)
        h = utils.fit(model, loader, loss_fn=nn.CrossEntropyLoss(), optimizer=opt, num_epochs=2,
                      grad_accum_steps=k, device="cpu", progress=False)
        runs.append((opt.seen, list(model.parameters()), h))
    (grads_a, params_a, h_a), (grads_b, params_b, h_b) = runs
    assert len(grads_a) == len(grads_b) == 2 * -(-n // big_batch)
    for step_a, step_b in zip(grads_a, grads_b):
        for ga, gb in zip(step_a, step_b):
            torch.testing.assert_close(ga, gb, rtol=0, atol=1e-6)
    for pa, pb in zip(params_a, params_b):
        torch.testing.assert_close(pa, pb, rtol=0, atol=1e-6)
    np.testing.assert_allclose(h_a["loss"][0], h_b["loss"][0], rtol=1e-12)  # same first-epoch data, same weights


def test_gradient_accumulation_steps_the_scheduler_once_per_optimizer_step():
    X, y = blobs(64)
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    h = utils.fit(model, utils.to_torch_loader(X, y, batch_size=16), loss_fn=nn.CrossEntropyLoss(), optimizer=opt,
                  num_epochs=2, grad_accum_steps=2, scheduler=sched, scheduler_step="step", progress=False)
    np.testing.assert_allclose(h["lr"], [0.25, 0.0625])  # 4 batches / 2 = 2 steps per epoch


# --- early stopping --------------------------------------------------------------------

def scripted_validation(model, values):
    """A loss_fn whose validation value follows ``values`` (one per epoch), recording the weights it saw."""
    calls, snapshots = iter(values), []

    def loss_fn(output, target):
        loss = nn.functional.cross_entropy(output, target)
        if model.training:
            return loss
        snapshots.append([p.detach().clone() for p in model.parameters()])
        return loss * 0 + next(calls)

    return loss_fn, snapshots


def test_early_stopping_stops_after_patience_and_restores_the_best_weights():
    X, y = blobs(96)
    model = make_model()
    loss_fn, snapshots = scripted_validation(model, [1.0, 0.8, 0.9, 0.85, 0.7, 0.6])
    h = utils.fit(model, utils.to_torch_loader(X[:64], y[:64], 16), val_loader=utils.to_torch_loader(X[64:], y[64:], 64),
                  loss_fn=loss_fn, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), num_epochs=6,
                  early_stopping=2, progress=False)
    assert h.num_epochs == 4 and h.stopped_epoch == 4 and h.best_epoch == 2
    assert h["val_loss"] == pytest.approx([1.0, 0.8, 0.9, 0.85])
    for restored, seen_at_epoch_2 in zip(model.parameters(), snapshots[1]):
        torch.testing.assert_close(restored, seen_at_epoch_2, rtol=0, atol=0)


def test_early_stopping_maximises_accuracy_like_metrics_and_a_tie_is_no_improvement():
    X, y = blobs(96)
    model = make_model()
    scores = iter([0.5, 0.7, 0.6, 0.7, 0.9])
    metric = {"score": lambda out, t: next(scores) if len(out) == 32 else 0.0}  # the validation set has 32 rows
    h = utils.fit(model, utils.to_torch_loader(X[:64], y[:64], 16), val_loader=utils.to_torch_loader(X[64:], y[64:], 64),
                  loss_fn=nn.CrossEntropyLoss(), metrics=metric, optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
                  num_epochs=5, early_stopping=2, monitor="val_score", restore_best=False, progress=False)
    assert h.stopped_epoch == 4 and h["val_score"] == [0.5, 0.7, 0.6, 0.7]
    assert h.best_epoch is None  # restore_best=False keeps the last weights


def test_early_stopping_without_a_stop_restores_the_best_epoch_and_reports_none():
    X, y = blobs(96)
    model = make_model()
    loss_fn, snapshots = scripted_validation(model, [1.0, 0.5, 0.6])
    h = utils.fit(model, utils.to_torch_loader(X[:64], y[:64], 16), val_loader=utils.to_torch_loader(X[64:], y[64:], 64),
                  loss_fn=loss_fn, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), num_epochs=3,
                  early_stopping=5, progress=False)
    assert h.stopped_epoch is None and h.best_epoch == 2 and h.num_epochs == 3
    torch.testing.assert_close(list(model.parameters())[0], snapshots[1][0], rtol=0, atol=0)


# --- checkpoints -----------------------------------------------------------------------

def dropout_model(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 3))


def run_with_checkpoint(num_epochs, path=None, resume=False, init_seed=0):
    X, y = blobs(120)
    utils.set_seed(7)  # the global RNG decides dropout masks
    model = dropout_model(init_seed)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)
    h = utils.fit(model, utils.to_torch_loader(X[:96], y[:96], batch_size=16, shuffle=True, seed=3),
                  val_loader=utils.to_torch_loader(X[96:], y[96:], 64), loss_fn=nn.CrossEntropyLoss(),
                  optimizer=opt, scheduler=sched, num_epochs=num_epochs, checkpoint_path=path, resume=resume,
                  metrics=["accuracy"], device="cpu", progress=False)
    return model, h


def test_resuming_from_a_checkpoint_gives_the_same_result_as_not_stopping(tmp_path):
    straight, h_straight = run_with_checkpoint(4)
    path = tmp_path / "run" / "ckpt.pt"
    run_with_checkpoint(2, path)
    # a fresh process would build everything anew: other initial weights, fresh RNGs and loader
    resumed, h_resumed = run_with_checkpoint(4, path, resume=True, init_seed=123)
    for a, b in zip(straight.parameters(), resumed.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert h_resumed.num_epochs == 4
    np.testing.assert_allclose(h_resumed["loss"], h_straight["loss"], rtol=1e-6)
    np.testing.assert_allclose(h_resumed["lr"], h_straight["lr"])


def test_resume_after_the_last_epoch_trains_no_further(tmp_path):
    path = tmp_path / "ckpt.pt"
    model, _ = run_with_checkpoint(2, path)
    again, h = run_with_checkpoint(2, path, resume=True, init_seed=5)
    assert h.num_epochs == 2
    for a, b in zip(model.parameters(), again.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_resume_without_a_checkpoint_file_starts_from_scratch(tmp_path):
    path = tmp_path / "missing.pt"
    _, h = run_with_checkpoint(1, path, resume=True)
    assert h.num_epochs == 1 and path.exists()


def test_checkpoint_loads_with_weights_only_and_holds_the_whole_state(tmp_path):
    path = tmp_path / "ckpt.pt"
    model, h = run_with_checkpoint(2, path)
    state = torch.load(path, weights_only=True)
    assert state["epoch"] == 2
    assert set(state) >= {"model", "optimizer", "scheduler", "scaler", "history", "rng", "loader_generators"}
    torch.testing.assert_close(state["model"]["0.weight"], model[0].weight)
    assert state["history"]["values"]["loss"] == h["loss"]
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temporary file left behind


def test_a_crash_while_saving_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    run_with_checkpoint(1, path)
    before = path.read_bytes()
    real_save = torch.save

    def crashing_save(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(OSError, match="disk full"):
        run_with_checkpoint(2, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


# --- mixed precision -------------------------------------------------------------------

def test_fp16_with_a_gradient_scaler_on_cpu_trains_and_clips_unscaled_gradients():
    X, y = blobs(200)
    loader = utils.to_torch_loader(X * 30, y, batch_size=20, shuffle=True)
    model = make_model()
    norms = []

    class Spy(torch.optim.Adam):
        def step(self, closure=None):  # called by scaler.step only when the gradients are finite
            norms.append(torch.sqrt(sum((p.grad.float() ** 2).sum() for p in model.parameters())).item())
            return super().step(closure)

    h = utils.fit(model, loader, loss_fn=nn.CrossEntropyLoss(), optimizer=Spy(model.parameters(), lr=0.01),
                  num_epochs=4, amp="fp16", grad_clip=0.25, grad_accum_steps=2, device="cpu", progress=False)
    assert h["loss"][-1] < h["loss"][0]
    assert norms and max(norms) <= 0.25 + 1e-3  # scaled gradients (x65536) would be far above
    assert next(model.parameters()).dtype == torch.float32


@pytest.mark.parametrize("kwargs, match", [
    (dict(grad_accum_steps=0), "grad_accum_steps"),
    (dict(grad_accum_steps=1.5), "grad_accum_steps"),
    (dict(early_stopping=3), "needs val_loader"),
    (dict(early_stopping=0, val=True), "patience"),
    (dict(early_stopping=2, val=True, monitor="val_f1"), "not recorded"),
    (dict(resume=True), "checkpoint_path"),
])
def test_fit_rejects_bad_training_options(kwargs, match):
    X, y = blobs(16)
    model = make_model()
    val = utils.to_torch_loader(X, y) if kwargs.pop("val", False) else None
    with pytest.raises(ValueError, match=match):
        utils.fit(model, utils.to_torch_loader(X, y), loss_fn=nn.CrossEntropyLoss(), val_loader=val,
                  optimizer=torch.optim.SGD(model.parameters(), lr=0.1), num_epochs=1, progress=False, **kwargs)


def test_reduce_lr_on_plateau_is_stepped_with_the_monitored_value():
    X, y = blobs(96)
    model = make_model()
    loss_fn, _ = scripted_validation(model, [1.0, 1.0, 1.0, 1.0])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=1, factor=0.5)
    h = utils.fit(model, utils.to_torch_loader(X[:64], y[:64], 16), val_loader=utils.to_torch_loader(X[64:], y[64:], 64),
                  loss_fn=loss_fn, optimizer=opt, scheduler=sched, num_epochs=4, progress=False)
    np.testing.assert_allclose(h["lr"], [0.1, 0.1, 0.05, 0.05])  # a flat val_loss halves the rate after patience 1
