"""Checkpoints for ``utils.fit``: atomic saves and an exact resume.

A checkpoint holds the model, the optimizer, the scheduler, the gradient scaler, the epoch, the history,
the early-stopping state and every random-number state (Python, NumPy, torch, CUDA and the loader's
shuffling generator), so a resumed run repeats what an uninterrupted run would have done.

One file (``torch.save`` to a temporary file in the same folder, ``fsync``, then an atomic rename), or,
under FSDP, a folder written collectively by ``torch.distributed.checkpoint`` (see :mod:`utils.distributed`).
Everything is stored as tensors and plain containers, so ``torch.load(weights_only=True)`` reads it.
"""

from __future__ import annotations

import contextlib
import os
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ._checks import check_bool
from .distributed import load_sharded_checkpoint, save_sharded_checkpoint
from .history import History

__all__ = ["Checkpointer"]

def _check_checkpoint_path(path: Path, folder: bool = False) -> None:
    """Fail before training, not after the first epoch, if the checkpoint cannot be written.
    ``folder``: a sharded checkpoint, which is a folder."""
    if folder and path.exists() and not path.is_dir():
        raise ValueError(f"checkpoint_path {path} is a file, but a sharded (strategy='fsdp') checkpoint is a folder: "
                         "give a folder name, e.g. 'checkpoints/run1'.")
    if not folder and path.is_dir():
        raise ValueError(f"checkpoint_path {path} is a folder; give a file name inside it, e.g. {path / 'checkpoint.pt'}")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"checkpoint_path {path} is inside {parent}, which is a file, not a folder.")
            break
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe = path.with_name(f".{path.name}.{os.getpid()}.write-test.tmp")
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise ValueError(f"checkpoint_path {path} cannot be written ({error.strerror or error}): "
                         "choose a folder you can write to.") from error



def _sharded_tensors(model: nn.Module, optimizer: torch.optim.Optimizer,
                     best_state: dict[str, torch.Tensor] | None) -> dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    tensors = {"model": get_model_state_dict(model), "optimizer": get_optimizer_state_dict(model, optimizer)}
    if best_state is not None:
        tensors["best_state"] = best_state
    return tensors


def _write_checkpoint(path: Path, state: dict[str, Any], model: nn.Module, optimizer: torch.optim.Optimizer,
                      best_state: dict[str, torch.Tensor] | None, sharded: bool) -> None:
    if not sharded:
        _save_checkpoint(path, state)
        return
    save_sharded_checkpoint(path, _sharded_tensors(model, optimizer, best_state), state,
                            tag=f"epoch-{state['epoch']:05d}")


def _read_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                     sharded: bool) -> dict[str, Any] | None:
    """Load model and optimizer from the checkpoint and return the rest of its state (None: no checkpoint)."""
    if not sharded:
        if not path.exists():
            return None
        state = _load_checkpoint(path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        return state
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    latest = path / "LATEST"
    if not latest.is_file():
        if path.is_dir() and any(path.iterdir()):
            raise RuntimeError(f"{path} holds no sharded checkpoint written by utils.fit (no LATEST file). "
                               "Delete it or choose another checkpoint_path.")
        return None  # checked first: building the optimizer template below initialises its state
    template = _sharded_tensors(model, optimizer, None)
    extras = torch.load(path / latest.read_text().strip() / "extras-rank0.pt", weights_only=True)
    if extras.get("has_best_state"):
        template["best_state"] = {k: torch.empty_like(v) for k, v in model.state_dict().items()}
    state = load_sharded_checkpoint(path, template)
    set_model_state_dict(model, template["model"])
    set_optimizer_state_dict(model, optimizer, template["optimizer"])
    state["best_state"] = template.get("best_state")
    return state

def _checkpoint_state(
    epoch: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: torch.amp.GradScaler | None,
    history: History,
    best_state: dict[str, torch.Tensor] | None,
    train_loader: Any,
    tensors: bool = True,
) -> dict[str, Any]:
    """The checkpoint's contents; ``tensors=False`` leaves out model, optimizer and best weights
    (a sharded checkpoint stores those with ``torch.distributed.checkpoint``)."""
    return {
        "format": 1,
        "epoch": epoch,
        "model": model.state_dict() if tensors else None,
        "optimizer": optimizer.state_dict() if tensors else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "history": {"framework": history.framework, "values": {k: list(v) for k, v in history.values.items()}},
        "stopped_epoch": history.stopped_epoch,
        "best_state": best_state if tensors else None,
        "has_best_state": best_state is not None,
        "rng": _rng_state(),
        "loader_generators": [g.get_state() for g in _loader_generators(train_loader)],
    }


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left behind by a run that was killed mid-save
        with contextlib.suppress(OSError):
            stale.unlink()
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") as file:
            torch.save(state, file)
            file.flush()
            os.fsync(file.fileno())  # the bytes are on disk before the rename makes them the checkpoint
        os.replace(temporary, path)  # atomic on POSIX and Windows: readers see old or new, never half
        _fsync_dir(path.parent)
    finally:
        if temporary.exists():
            temporary.unlink()


def _load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise RuntimeError(f"Could not read the checkpoint {path} ({error}). Delete it to start afresh.") from error
    if not isinstance(state, dict) or state.get("format") != 1:
        raise RuntimeError(f"{path} is not a checkpoint written by utils.fit. Delete it or choose another path.")
    return state


def _rng_state() -> dict[str, Any]:
    python = random.getstate()
    numpy_state = np.random.get_state()
    return {
        "python": [python[0], list(python[1]), python[2]],
        "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)),
                  int(numpy_state[2]), int(numpy_state[3]), float(numpy_state[4])],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _loader_generators(loader: Any) -> list[torch.Generator]:
    """The distinct ``torch.Generator`` objects that decide a loader's order."""
    found: list[torch.Generator] = []
    batch_sampler = getattr(loader, "batch_sampler", None)
    for owner in (loader, getattr(loader, "sampler", None), getattr(batch_sampler, "sampler", None)):
        generator = getattr(owner, "generator", None)
        if isinstance(generator, torch.Generator) and all(generator is not g for g in found):
            found.append(generator)
    return found


def _set_generator_states(loader: Any, states: list[torch.Tensor]) -> None:
    generators = _loader_generators(loader)
    if len(generators) != len(states):
        warnings.warn(
            f"The checkpoint holds {len(states)} data-order generator state(s) but train_loader has "
            f"{len(generators)}: the resumed run will not see the data in the same order.", stacklevel=4)
        return
    for generator, generator_state in zip(generators, states):
        generator.set_state(generator_state)


class Checkpointer:
    """Where ``fit`` saves its state after every epoch and what it resumes from.

    ``path`` is a file, or a folder when ``sharded`` (FSDP). :meth:`checked` validates ``fit``'s
    ``checkpoint_path`` and ``resume`` and returns ``None`` when no checkpoint is asked for.
    """

    def __init__(self, path: Path, *, sharded: bool = False, resume: bool = False) -> None:
        self.path = path
        self.sharded, self.resume = check_bool("sharded", sharded), check_bool("resume", resume)

    @classmethod
    def checked(cls, checkpoint_path: Any, resume: bool, sharded: bool) -> "Checkpointer | None":
        if resume and checkpoint_path is None:
            raise ValueError("resume=True needs checkpoint_path=… (the file to resume from and to keep saving to).")
        if checkpoint_path is None:
            return None
        if not isinstance(checkpoint_path, (str, os.PathLike)):
            raise TypeError(f"checkpoint_path must be a file path (str or pathlib.Path), got "
                            f"{type(checkpoint_path).__name__}")
        return cls(Path(checkpoint_path), sharded=sharded, resume=resume)

    def check_writable(self) -> None:
        """Fail before training, not after the first epoch, if the checkpoint cannot be written."""
        _check_checkpoint_path(self.path, folder=self.sharded)

    def save(self, epoch: int, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
             scaler: torch.amp.GradScaler | None, history: History, best_state: dict[str, torch.Tensor] | None,
             train_loader: Any) -> None:
        state = _checkpoint_state(epoch, model, optimizer, scheduler, scaler, history, best_state, train_loader,
                                  tensors=not self.sharded)
        _write_checkpoint(self.path, state, model, optimizer, best_state, self.sharded)

    def restore(self, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                scaler: torch.amp.GradScaler | None, train_loader: Any) -> dict[str, Any] | None:
        """Load model, optimizer, scheduler, scaler and random-number states in place; return the rest
        of the checkpoint (``epoch``, ``history``, ``stopped_epoch``, ``best_state``), or ``None`` if
        there is no checkpoint yet (a fresh start)."""
        state = _read_checkpoint(self.path, model, optimizer, self.sharded)
        if state is None:
            return None
        if scheduler is not None and state["scheduler"] is not None:
            scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state["scaler"] is not None:
            scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        _set_generator_states(train_loader, state["loader_generators"])
        history = History(framework=state["history"]["framework"],
                          values={k: list(v) for k, v in state["history"]["values"].items()})
        history.stopped_epoch, history.best_epoch = state["stopped_epoch"], None
        state["history"] = history
        return state
