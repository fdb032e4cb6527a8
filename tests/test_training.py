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


def test_resolve_amp_picks_bf16_on_cpu():
    assert utils.training.resolve_amp("auto", torch.device("cpu")) == torch.bfloat16
    assert utils.training.resolve_amp(None, torch.device("cpu")) is None
    assert utils.training.resolve_amp("fp16", torch.device("cpu")) == torch.float16
