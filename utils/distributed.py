"""Data-parallel helpers for :func:`utils.fit`, and a launcher for ``torchrun`` scripts.

``fit`` calls these when the process was started by ``torchrun`` (``WORLD_SIZE > 1``):
the process group is created if needed (gloo on CPU, NCCL on CUDA), each process takes the
GPU ``cuda:LOCAL_RANK`` (or the CPU), the training data is sharded with a
``DistributedSampler`` and epoch metrics are summed over all processes.

A notebook cannot be data-parallel itself (every process must run the same script), so a
chapter writes a small script and launches it with :func:`run_torchrun`.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

__all__ = [
    "DistributedContext",
    "world_size_from_env",
    "is_main_process",
    "setup_distributed",
    "shard_loader",
    "all_reduce_sums",
    "run_torchrun",
]


def world_size_from_env() -> int:
    """Number of processes ``torchrun`` started (``WORLD_SIZE``), 1 when not launched by it.

    Example:
        >>> world_size_from_env()  # in a notebook
        1
    """
    value = os.environ.get("WORLD_SIZE", "1")
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"WORLD_SIZE must be an integer, got {value!r}") from None


def is_main_process() -> bool:
    """True on rank 0 of a distributed run, and always in a single process.

    Example:
        >>> if is_main_process(): print("only once")
        only once
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


@dataclass
class DistributedContext:
    """Where this process sits in a data-parallel run (``world_size == 1``: not distributed)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    created_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: torch.device | None = None) -> DistributedContext:
    """Join (or create) the process group ``torchrun`` prepared, and pick this process's device.

    Backend: NCCL when CUDA is available, gloo otherwise. Each process uses
    ``cuda:LOCAL_RANK``; on a CPU-only machine every process uses the CPU. If ``device``
    is given and is a CUDA device without an index, the index becomes ``LOCAL_RANK``.
    A group created here is destroyed when the process exits.

    Example:
        >>> ctx = setup_distributed()   # inside a script started by torchrun
        >>> ctx.rank, ctx.world_size
        (0, 2)
    """
    world_size = world_size_from_env()
    if world_size <= 1:
        return DistributedContext(device=device or torch.device("cpu"))
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this PyTorch build has no torch.distributed support.")
    missing = [k for k in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing and not dist.is_initialized():
        raise RuntimeError(
            f"WORLD_SIZE={world_size} but {missing} are not set: start the script with "
            "`torchrun --nproc_per_node=N script.py` (or python -m torch.distributed.run)."
        )
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and (device is None or device.type == "cuda")
    if use_cuda:
        device = torch.device("cuda", local_rank if device is None or device.index is None else device.index)
        torch.cuda.set_device(device)
    elif device is None or device.type == "cuda":
        device = torch.device("cpu")
    created = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        created = True
        atexit.register(_destroy_group)
    return DistributedContext(rank=dist.get_rank(), local_rank=local_rank, world_size=dist.get_world_size(),
                              device=device, created_group=created)


def _destroy_group() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard_loader(loader: Any, ctx: DistributedContext) -> tuple[DataLoader, DistributedSampler]:
    """A copy of ``loader`` whose batches come from this process's shard of the data set.

    The new ``DataLoader`` keeps ``batch_size``, ``drop_last``, ``collate_fn``,
    ``num_workers`` and ``pin_memory``; it shuffles if ``loader`` shuffled (seeded from the
    loader's generator, identically on every process). The per-process batch is
    ``batch_size``, so one optimizer step sees ``world_size * batch_size`` samples.
    Call ``sampler.set_epoch(epoch)`` before every epoch (``fit`` does).

    Example:
        >>> loader, sampler = shard_loader(to_torch_loader(X, y, 32, shuffle=True), ctx)
    """
    if not isinstance(loader, DataLoader):
        raise TypeError(
            f"Distributed training needs a torch DataLoader to re-shard, got {type(loader).__name__}. "
            "Build it with utils.to_torch_loader or torch.utils.data.DataLoader."
        )
    if loader.batch_size is None:
        raise ValueError("Distributed training needs a DataLoader built with batch_size (not a custom batch_sampler).")
    shuffle = isinstance(loader.sampler, RandomSampler)
    seed = loader.generator.initial_seed() if loader.generator is not None else 0
    sampler = DistributedSampler(loader.dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=shuffle,
                                 seed=seed % 2**63, drop_last=loader.drop_last)
    sharded = DataLoader(
        loader.dataset, batch_size=loader.batch_size, sampler=sampler, drop_last=loader.drop_last,
        collate_fn=loader.collate_fn, num_workers=loader.num_workers, pin_memory=loader.pin_memory,
    )
    return sharded, sampler


def all_reduce_sums(sums: Mapping[str, float], ctx: DistributedContext) -> dict[str, float]:
    """Sum each value over all processes (one ``all_reduce``); unchanged in a single process.

    Example:
        >>> all_reduce_sums({"loss_sum": 3.0, "n": 4}, ctx)   # two processes
        {'loss_sum': 6.5, 'n': 8.0}
    """
    if not ctx.enabled:
        return dict(sums)
    names = list(sums)
    device = ctx.device if dist.get_backend() == "nccl" else torch.device("cpu")
    packed = torch.tensor([float(sums[k]) for k in names], dtype=torch.float64, device=device)
    dist.all_reduce(packed, op=dist.ReduceOp.SUM)
    return dict(zip(names, packed.tolist()))


def run_torchrun(
    script: str | os.PathLike,
    args: Sequence[str] = (),
    *,
    nproc_per_node: int = 2,
    timeout_s: float = 300.0,
    env: Mapping[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess:
    """Run ``torchrun --standalone --nproc_per_node=N script args…`` and return its result.

    Uses this Python interpreter (``python -m torch.distributed.run``), so it works from a
    notebook or a test. ``--standalone`` picks a free port. Output is captured; with
    ``check=True`` a failure raises with the last lines of stderr.

    Example:
        >>> result = run_torchrun("train_ddp.py", ["--epochs", "3"], nproc_per_node=2)
        >>> print(result.stdout)
    """
    script = Path(script)
    if not script.is_file():
        raise FileNotFoundError(f"No script at {script}: write the training script first.")
    if isinstance(nproc_per_node, bool) or not isinstance(nproc_per_node, int) or nproc_per_node < 1:
        raise ValueError(f"nproc_per_node must be a positive int, got {nproc_per_node!r}")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc_per_node}",
               str(script), *map(str, args)]
    child_env = {**os.environ, **(env or {})}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        if env is None or name not in env:
            child_env.pop(name, None)  # never inherit a parent's distributed settings
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=child_env)
    if check and result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-25:])
        raise RuntimeError(f"torchrun exited with code {result.returncode}:\n{tail}")
    return result
