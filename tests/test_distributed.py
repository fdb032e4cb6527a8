"""Data-parallel training: ``utils.fit`` under ``torchrun`` matches one process with the same global batch."""

import textwrap

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


def single_process_reference():
    torch.manual_seed(0)
    X = torch.randn(N, 4)
    y = (X[:, 0] + X[:, 1] > 0).long()
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=2 * BATCH,
                                         sampler=DistributedOrder(N, SEED))
    h = utils.fit(model, loader, loss_fn=nn.CrossEntropyLoss(), optimizer=torch.optim.SGD(model.parameters(), lr=0.5),
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
