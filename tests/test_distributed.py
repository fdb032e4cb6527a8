"""Data-parallel training: ``utils.fit`` under ``torchrun`` matches one process with the same global batch,
with DDP and with FSDP (sharded parameters, sharded checkpoints); ``run_torchrun`` stops and reports its workers."""

import os
import textwrap
import time

import numpy as np
import pytest
import torch
from torch import nn

import utils
from utils.distributed import DistributedContext, all_reduce_sums, run_torchrun, shard_loader, world_size_from_env

N, BATCH, EPOCHS, SEED = 64, 8, 3, 3  # per-process batch 8, two processes: global batch 16

SCRIPT = textwrap.dedent(f"""
    import sys
    import torch
    import torch.distributed as dist
    from torch import nn
    import utils

    out = sys.argv[1]
    torch.manual_seed(0)
    X = torch.randn({N}, 4)
    y = (X[:, 0] + X[:, 1] > 0).long()
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    loader = utils.to_torch_loader(X.numpy(), y.numpy(), batch_size={BATCH}, shuffle=True, seed={SEED})
    h = utils.fit(model, loader, loss_fn=nn.CrossEntropyLoss(), optimizer=torch.optim.SGD(model.parameters(), lr=0.5),
                  num_epochs={EPOCHS}, metrics=["accuracy"], device="cpu", progress=False,
                  checkpoint_path=out + "/ckpt.pt")
    torch.save({{"state": model.state_dict(), "loss": h["loss"], "accuracy": h["accuracy"],
                "world_size": dist.get_world_size()}}, f"{{out}}/rank{{dist.get_rank()}}.pt")
    utils.distributed.finish_worker()
""")


class DistributedOrder(torch.utils.data.Sampler):
    """The order DistributedSampler(shuffle=True, seed=SEED) gives epoch e before sharding."""

    def __init__(self, n, seed):
        self.n, self.seed, self.epoch = n, seed, 0

    def __iter__(self):
        self.epoch += 1  # fit calls set_epoch(1), (2), …
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.n, generator=generator).tolist())

    def __len__(self):
        return self.n


def single_process_reference(make_optimizer=lambda params: torch.optim.SGD(params, lr=0.5)):
    torch.manual_seed(0)
    X = torch.randn(N, 4)
    y = (X[:, 0] + X[:, 1] > 0).long()
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=2 * BATCH,
                                         sampler=DistributedOrder(N, SEED))
    h = utils.fit(model, loader, loss_fn=nn.CrossEntropyLoss(), optimizer=make_optimizer,
                  num_epochs=EPOCHS, metrics=["accuracy"], device="cpu", progress=False)
    return model.state_dict(), h


def test_torchrun_with_two_processes_matches_one_process_with_the_global_batch(tmp_path):
    script = tmp_path / "train_ddp.py"
    script.write_text(SCRIPT)
    run_torchrun(script, [str(tmp_path)], nproc_per_node=2, timeout_s=120, env={"OMP_NUM_THREADS": "1"})
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    for name, value in ranks[0]["state"].items():  # DDP keeps the replicas identical
        torch.testing.assert_close(ranks[1]["state"][name], value, rtol=0, atol=0)
    assert ranks[0]["loss"] == ranks[1]["loss"]  # metrics are averaged over both ranks
    state, h = single_process_reference()
    for name, value in state.items():
        torch.testing.assert_close(ranks[0]["state"][name], value, rtol=0, atol=1e-5)
    np.testing.assert_allclose(ranks[0]["loss"], h["loss"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(ranks[0]["accuracy"], h["accuracy"], rtol=0, atol=1e-9)
    assert h["loss"][-1] < h["loss"][0]  # it did learn, so the comparison is not between two untouched models
    # rank 0 alone wrote the checkpoint, atomically
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt", "rank0.pt", "rank1.pt", "train_ddp.py"]
    assert torch.load(tmp_path / "ckpt.pt", weights_only=True)["epoch"] == EPOCHS


def test_a_single_process_is_not_distributed(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert world_size_from_env() == 1
    ctx = utils.distributed.setup_distributed()
    assert not ctx.enabled and ctx.is_main
    assert all_reduce_sums({"loss": 2.5, "n": 4}, ctx) == {"loss": 2.5, "n": 4}


def test_shard_loader_splits_the_data_without_overlap_and_keeps_the_batch_size():
    loader = utils.to_torch_loader(np.arange(20.0).reshape(10, 2), np.arange(10), batch_size=3, shuffle=True, seed=1)
    seen = []
    for rank in (0, 1):
        sharded, sampler = shard_loader(loader, DistributedContext(rank=rank, world_size=2))
        sampler.set_epoch(1)
        assert sharded.batch_size == 3 and sampler.shuffle
        seen.append([int(i) for _, yb in sharded for i in yb])
    assert sorted(seen[0] + seen[1]) == list(range(10)) and len(seen[0]) == 5


def test_distributed_helpers_reject_bad_input(monkeypatch, tmp_path):
    with pytest.raises(TypeError, match="DataLoader"):
        shard_loader([(torch.zeros(2, 2), torch.zeros(2))], DistributedContext(rank=0, world_size=2))
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE"):
        world_size_from_env()
    monkeypatch.setenv("WORLD_SIZE", "2")
    for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeError, match="torchrun"):
        utils.distributed.setup_distributed()
    with pytest.raises(FileNotFoundError, match="script"):
        run_torchrun(tmp_path / "missing.py")


FSDP_SCRIPT = textwrap.dedent(f"""
    import sys
    import torch
    import torch.distributed as dist
    from torch import nn
    import utils
    from utils.distributed import full_state_dict

    out = sys.argv[1]


    def run(num_epochs, checkpoint=None, resume=False):
        torch.manual_seed(0)
        X = torch.randn({N}, 4)
        y = (X[:, 0] + X[:, 1] > 0).long()
        model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
        loader = utils.to_torch_loader(X.numpy(), y.numpy(), batch_size={BATCH}, shuffle=True, seed={SEED})
        made = []
        h = utils.fit(model, loader, loss_fn=nn.CrossEntropyLoss(), num_epochs=num_epochs, metrics=["accuracy"],
                      optimizer=lambda params: made.append(torch.optim.Adam(params, lr=0.05)) or made[0],
                      device="cpu", progress=False, strategy="fsdp", checkpoint_path=checkpoint, resume=resume)
        return model, made[0], h, X, y


    model, optimizer, h, X, y = run({EPOCHS})
    local = {{name: p.to_local().numel() for name, p in model.named_parameters()}}
    adam = sum(t.to_local().numel() for state in optimizer.state.values() for k, t in state.items() if k != "step")
    nn.functional.cross_entropy(model(X), y).backward()  # one more backward: the gradients' shards
    grads = sum(p.grad.to_local().numel() for p in model.parameters())
    full = full_state_dict(model)
    run({EPOCHS} - 1, out + "/ckpt")  # interrupted after {EPOCHS} - 1 epochs ...
    resumed, _, h_resumed, _, _ = run({EPOCHS}, out + "/ckpt", resume=True)  # ... and resumed in a fresh model
    options = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))  # the other options of fit, sharded
    val = utils.to_torch_loader(X.numpy(), y.numpy(), batch_size=16)
    h_options = utils.fit(options, utils.to_torch_loader(X.numpy(), y.numpy(), batch_size={BATCH}, shuffle=True),
                          val_loader=val, loss_fn=nn.CrossEntropyLoss(), num_epochs=3, device="cpu", progress=False,
                          optimizer=lambda params: torch.optim.Adam(params, lr=0.05), strategy="fsdp", amp="bf16",
                          grad_clip=1.0, grad_accum_steps=2, early_stopping=2, checkpoint_path=out + "/ckpt_options")
    torch.save({{"state": full, "loss": h["loss"], "accuracy": h["accuracy"], "local_numel": local,
                "adam_numel": adam, "grad_numel": grads, "resumed_state": full_state_dict(resumed),
                "resumed_loss": h_resumed["loss"], "type": type(model).__name__, "options_val_loss": h_options["val_loss"],
                "options_dtypes": [str(p.dtype) for p in options.parameters()], "options_best": h_options.best_epoch}},
               f"{{out}}/rank{{dist.get_rank()}}.pt")
    utils.distributed.finish_worker()
""")


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp")
    script = out / "train_fsdp.py"
    script.write_text(FSDP_SCRIPT)
    run_torchrun(script, [str(out)], nproc_per_node=2, timeout_s=300, env={"OMP_NUM_THREADS": "1"})
    return out, [torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)]


def test_fsdp_matches_one_process_with_the_global_batch(fsdp_run):
    _, ranks = fsdp_run
    assert ranks[0]["type"].startswith("FSDP")
    state, h = single_process_reference(lambda params: torch.optim.Adam(params, lr=0.05))
    for name, value in state.items():
        torch.testing.assert_close(ranks[0]["state"][name], value, rtol=0, atol=1e-5)
        torch.testing.assert_close(ranks[1]["state"][name], value, rtol=0, atol=1e-5)
    np.testing.assert_allclose(ranks[0]["loss"], h["loss"], rtol=0, atol=1e-5)
    assert ranks[0]["loss"] == ranks[1]["loss"] and h["loss"][-1] < h["loss"][0]


def test_fsdp_ranks_hold_half_of_the_parameters_gradients_and_adam_states(fsdp_run):
    _, ranks = fsdp_run
    # dim-0 shards: Linear(4, 8) weight 8x4 -> 4x4 and bias 8 -> 4; Linear(8, 2) weight 2x8 -> 1x8, bias 2 -> 1
    expected = {"0.weight": 16, "0.bias": 4, "2.weight": 8, "2.bias": 1}
    n_params = sum(v.numel() for v in ranks[0]["state"].values())
    for rank in ranks:
        assert rank["local_numel"] == expected
        assert sum(expected.values()) * 2 == n_params
        assert rank["grad_numel"] == n_params // 2 and rank["adam_numel"] == n_params  # m and v: 2 x half


def test_fsdp_sharded_checkpoint_resume_equals_an_uninterrupted_run(fsdp_run):
    out, ranks = fsdp_run
    for rank in ranks:
        for name, value in rank["state"].items():
            torch.testing.assert_close(rank["resumed_state"][name], value, rtol=0, atol=0)
        assert rank["resumed_loss"] == rank["loss"]
    folder = out / "ckpt"
    latest = (folder / "LATEST").read_text()
    assert latest == f"epoch-{EPOCHS:05d}" and sorted(p.name for p in folder.iterdir()) == ["LATEST", latest]
    assert sorted(p.name for p in (folder / latest).iterdir()) == [
        ".metadata", "__0_0.distcp", "__1_0.distcp", "extras-rank0.pt", "extras-rank1.pt"]


def test_fsdp_with_bf16_clipping_accumulation_validation_and_early_stopping(fsdp_run):
    out, ranks = fsdp_run
    for rank in ranks:
        assert rank["options_val_loss"][-1] < rank["options_val_loss"][0]
        assert rank["options_dtypes"] == ["torch.float32"] * 4  # bf16 compute, float32 sharded master weights
        assert rank["options_best"] == int(np.argmin(rank["options_val_loss"])) + 1
    assert ranks[0]["options_val_loss"] == ranks[1]["options_val_loss"]
    extras = torch.load(out / "ckpt_options" / "epoch-00003" / "extras-rank0.pt", weights_only=True)
    assert extras["has_best_state"] and extras["model"] is None  # the weights are in the sharded files


def test_fit_refuses_bad_strategies_and_a_ready_optimizer_with_fsdp(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    X, y = torch.randn(16, 4), torch.randint(0, 2, (16,))
    loader = utils.to_torch_loader(X.numpy(), y.numpy(), batch_size=8)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    common = dict(loss_fn=nn.CrossEntropyLoss(), num_epochs=1, device="cpu", progress=False)
    make = lambda params: torch.optim.SGD(params, lr=0.1)  # noqa: E731
    for bad in ("zero3", "FSDP", 3, True):
        with pytest.raises(ValueError, match="strategy must be None, 'ddp' or 'fsdp'"):
            utils.fit(model, loader, optimizer=make, strategy=bad, **common)
    with pytest.raises(ValueError, match="lambda params"):
        utils.fit(model, loader, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), strategy="fsdp", **common)
    for strategy in ("fsdp", "ddp"):
        with pytest.raises(RuntimeError, match="torchrun --nproc_per_node=2"):
            utils.fit(model, loader, optimizer=make, strategy=strategy, **common)
    with pytest.raises(TypeError, match="must return a torch.optim.Optimizer"):
        utils.fit(model, loader, optimizer=lambda params: "sgd", **common)
    with pytest.raises(TypeError, match="function params -> optimizer"):
        utils.fit(model, loader, optimizer=torch.optim.SGD, **common)


def test_an_optimizer_factory_trains_like_a_ready_optimizer():
    (state_a, h_a), (state_b, _) = single_process_reference(), single_process_reference(
        lambda params: torch.optim.SGD(params, lr=0.5))
    for name, value in state_a.items():
        torch.testing.assert_close(state_b[name], value, rtol=0, atol=0)
    assert h_a["loss"][-1] < h_a["loss"][0]


def _alive(pid):
    try:
        with open(f"/proc/{pid}/status") as status:
            return "\tZ" not in next(line for line in status if line.startswith("State"))
    except (FileNotFoundError, StopIteration):
        return False


def test_run_torchrun_on_timeout_stops_the_workers_too(tmp_path):
    script = tmp_path / "hang.py"  # no torch import: the worker starts fast and then hangs
    script.write_text("import os, sys, time\n"
                      "open(os.path.join(sys.argv[1], 'pid' + os.environ['RANK']), 'w').write(str(os.getpid()))\n"
                      "time.sleep(600)\n")
    with pytest.raises(TimeoutError, match="hang.py"):
        run_torchrun(script, [str(tmp_path)], nproc_per_node=2, timeout_s=30)
    pids = [int((tmp_path / f"pid{r}").read_text()) for r in (0, 1)]
    try:
        deadline = time.monotonic() + 10
        while any(map(_alive, pids)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(map(_alive, pids)), "a worker outlived the timeout"
    finally:
        for pid in pids:
            if _alive(pid):
                os.kill(pid, 9)


def test_run_torchrun_failure_names_the_script_and_shows_the_workers_own_error(tmp_path):
    script = tmp_path / "broken_worker.py"  # a deep traceback: torchrun's own report would push the message out
    script.write_text("import os\n"
                      "def deep(n):\n"
                      "    if n == 0:\n"
                      "        raise ValueError('the worker says: column 7 is missing')\n"
                      "    return deep(n - 1) + 1\n"
                      "if os.environ['RANK'] == '1':\n"
                      "    deep(40)\n")
    with pytest.raises(RuntimeError) as error:
        run_torchrun(script, nproc_per_node=2, timeout_s=120)
    message = str(error.value)
    assert "broken_worker.py" in message.splitlines()[0]
    assert "ValueError: the worker says: column 7 is missing" in message
    result = run_torchrun(script, nproc_per_node=2, timeout_s=120, check=False)
    assert result.returncode != 0 and "column 7 is missing" in result.stderr
