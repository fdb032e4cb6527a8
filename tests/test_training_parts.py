"""The named pieces ``utils.fit`` is made of, each tested on its own: the step rule, precision,
early stopping and the checkpointer (``tests/test_training.py`` tests them together, through ``fit``)."""

import numpy as np
import pytest
import torch
from torch import nn

import utils
from utils.checkpoint import Checkpointer
from utils.early_stopping import EarlyStopping
from utils.history import History
from utils.precision import Precision
from utils.training import StepRule


def linear(seed=0):
    torch.manual_seed(seed)
    return nn.Linear(3, 2)


# --- StepRule ------------------------------------------------------------------------------------

def test_step_rule_steps_an_epoch_scheduler_once_per_epoch_and_a_step_scheduler_never_at_epoch_end():
    opt = torch.optim.SGD(linear().parameters(), lr=1.0)
    per_epoch = StepRule.checked(None, None, 1, torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5), "epoch")
    per_step = StepRule.checked(None, None, 1, torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5), "step")
    opt.step()  # a scheduler steps after the optimizer
    per_epoch.end_epoch({"loss": 1.0}, "val_loss")
    assert opt.param_groups[0]["lr"] == 0.5 and per_epoch.per_step_scheduler is None
    per_step.end_epoch({"loss": 1.0}, "val_loss")
    assert opt.param_groups[0]["lr"] == 0.5 and per_step.per_step_scheduler is per_step.scheduler


def test_step_rule_gives_reduce_lr_on_plateau_the_monitored_value():
    opt = torch.optim.SGD(linear().parameters(), lr=1.0)
    rule = StepRule.checked(None, None, 1, torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0), "epoch")
    rule.end_epoch({"val_loss": 1.0}, "val_loss")
    rule.end_epoch({"val_loss": 2.0}, "val_loss")  # worse: the learning rate drops
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1)
    with pytest.raises(KeyError):
        rule.end_epoch({"loss": 1.0}, "val_loss")


@pytest.mark.parametrize("kwargs, error", [
    (dict(grad_clip=-1.0), ValueError), (dict(grad_accum_steps=0), ValueError),
    (dict(scheduler_step="batch"), ValueError), (dict(scheduler=object()), TypeError),
    (dict(loss_fn=nn.MSELoss), TypeError),
])
def test_step_rule_refuses_bad_options(kwargs, error):
    options = dict(loss_fn=None, grad_clip=None, grad_accum_steps=1, scheduler=None, scheduler_step="epoch")
    with pytest.raises(error):
        StepRule.checked(**{**options, **kwargs})


# --- Precision -----------------------------------------------------------------------------------

def test_precision_fp16_gets_a_scaler_bf16_and_float32_do_not():
    cpu = torch.device("cpu")
    assert Precision.for_run("fp16", cpu).scaler is not None
    bf16 = Precision.for_run("bf16", cpu)
    assert bf16.scaler is None and bf16.autocast_dtype == torch.bfloat16
    assert Precision.for_run(None, cpu) == Precision(cpu, None, None, None)


def test_precision_takes_a_device_name_and_refuses_other_devices():
    assert Precision.for_run(None, "cpu").device == torch.device("cpu")
    with pytest.raises(TypeError, match="torch.device"):
        Precision.for_run(None, 0)


def test_precision_under_fsdp_leaves_the_cast_to_fsdp_and_refuses_fp16():
    sharded = Precision.for_run("bf16", torch.device("cpu"), sharded=True)
    assert sharded.dtype == torch.bfloat16 and sharded.autocast_dtype is None
    with pytest.raises(ValueError, match="fp16.*fsdp"):
        Precision.for_run("fp16", torch.device("cpu"), sharded=True)


def test_precision_step_clips_the_gradient_norm():
    model = linear()
    model.weight.grad = torch.full_like(model.weight, 10.0)
    model.bias.grad = torch.zeros_like(model.bias)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    before = model.weight.detach().clone()
    Precision.for_run(None, torch.device("cpu")).step(model, opt, grad_clip=1.0)
    assert torch.linalg.vector_norm(model.weight.detach() - before).item() == pytest.approx(1.0, rel=1e-5)


# --- EarlyStopping -------------------------------------------------------------------------------

def run_stopping(values, patience=2, restore_best=True):
    """Feed ``values`` as val_loss, one epoch each; the model's bias records the epoch."""
    model, history = linear(), History(framework="torch")
    stopping = EarlyStopping.checked(patience, "val_loss", None, restore_best, ["loss", "val_loss"], has_val=True)
    for epoch, value in enumerate(values, start=1):
        model.bias.data.fill_(epoch)
        history.log(loss=value, val_loss=value)
        stopping.update(history, model, epoch)
        if history.stopped_epoch is not None:
            break
    stopping.restore(model, history)
    return model, history


def test_early_stopping_stops_after_patience_epochs_without_a_strictly_better_value_and_restores_the_best():
    model, history = run_stopping([3.0, 2.0, 2.0, 2.5, 1.0])  # a tie is no improvement
    assert history.stopped_epoch == 4 and history.best_epoch == 2
    assert model.bias.detach().tolist() == [2.0, 2.0]


def test_early_stopping_without_restore_keeps_the_last_weights():
    model, history = run_stopping([3.0, 2.0, 2.5, 2.6], restore_best=False)
    assert history.stopped_epoch == 4 and history.best_epoch is None
    assert model.bias.detach().tolist() == [4.0, 4.0]


def test_early_stopping_refuses_an_unrecorded_monitor_and_a_mismatched_plateau_scheduler():
    with pytest.raises(ValueError, match="not recorded"):
        EarlyStopping.checked(2, "val_accuracy", None, True, ["loss", "val_loss"], has_val=True)
    with pytest.raises(ValueError, match="needs val_loader"):
        EarlyStopping.checked(2, "val_loss", None, True, ["loss"], has_val=False)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(torch.optim.SGD(linear().parameters(), lr=1.0), mode="max")
    with pytest.raises(ValueError, match="mode='min'"):
        EarlyStopping.checked(None, "val_loss", None, True, ["loss", "val_loss"], has_val=True, scheduler=plateau)


# --- Checkpointer --------------------------------------------------------------------------------

def test_checkpointer_is_none_without_a_path_and_refuses_resume_without_one():
    assert Checkpointer.checked(None, False, sharded=False) is None
    with pytest.raises(ValueError, match="resume=True needs checkpoint_path"):
        Checkpointer.checked(None, True, sharded=False)
    with pytest.raises(TypeError, match="file path"):
        Checkpointer.checked(3, False, sharded=False)


def test_checkpointer_round_trip_restores_weights_optimizer_history_and_random_state(tmp_path):
    model = linear()
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.ones(4, 3)).sum().backward()
    opt.step()
    history = History(framework="torch")
    history.log(loss=0.5)
    loader = utils.to_torch_loader(np.zeros((8, 3), np.float32), np.zeros(8, np.int64), batch_size=4, shuffle=True,
                                   seed=1)
    saver = Checkpointer.checked(tmp_path / "c.pt", True, sharded=False)
    saver.check_writable()
    saver.save(1, model, opt, None, None, history, None, loader)
    expected = torch.rand(3)
    fresh = linear(seed=5)
    fresh_opt = torch.optim.Adam(fresh.parameters(), lr=0.1)
    state = saver.restore(fresh, fresh_opt, None, None, loader)
    torch.testing.assert_close(fresh.weight, model.weight)
    assert fresh_opt.state_dict()["state"][0]["step"] == 1
    assert state["epoch"] == 1 and state["history"]["loss"] == [0.5]
    torch.testing.assert_close(torch.rand(3), expected)  # the torch RNG is back where it was at the save


def test_checkpointer_restore_without_a_file_is_a_fresh_start(tmp_path):
    model = linear()
    saver = Checkpointer.checked(tmp_path / "missing.pt", True, sharded=False)
    assert saver.restore(model, torch.optim.SGD(model.parameters(), lr=0.1), None, None, []) is None
