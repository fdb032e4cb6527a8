"""Counting parameters: of a built model, and of a GPT-2-style decoder from its config."""

from __future__ import annotations

import numbers
from typing import Any

__all__ = ["count_parameters", "transformer_param_count"]


def count_parameters(model: Any, trainable_only: bool = False) -> int:
    """Number of parameters of a PyTorch module or a Keras model.

    Shared (tied) tensors are counted once. Works for modules built on the ``meta``
    device, which have shapes but no memory, so huge models can be counted for free.

    Example:
        >>> import torch
        >>> count_parameters(torch.nn.Linear(10, 5))
        55
    """
    import torch

    _check_flag("trainable_only", trainable_only)
    if isinstance(model, torch.nn.Module):
        params = model.parameters()
        return int(sum(p.numel() for p in params if p.requires_grad or not trainable_only))
    if hasattr(model, "trainable_weights") and hasattr(model, "count_params"):  # Keras
        if not model.built:
            raise ValueError(
                "This Keras model is not built yet, so it has no weights to count. "
                "Call it on a batch or give its first layer an input shape (keras.Input) first."
            )
        weights = model.trainable_weights if trainable_only else model.weights
        import numpy as np

        seen: set[int] = set()
        total = 0
        for w in weights:
            if id(w) not in seen:
                seen.add(id(w))
                total += int(np.prod(w.shape))
        return total
    raise TypeError(
        f"count_parameters expects a torch.nn.Module or a Keras model, got {type(model).__name__}"
    )


def _check_positive_int(name: str, value: Any) -> int:
    """A positive ``numbers.Integral`` (``np.int64`` too, not ``bool``) as a Python int."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")
    return int(value)


def _check_flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {type(value).__name__} {value!r}")
    return value


def transformer_param_count(
    n_layer: int,
    d_model: int,
    vocab_size: int,
    n_ctx: int,
    *,
    d_ff: int | None = None,
    tied_embeddings: bool = True,
    bias: bool = True,
) -> int:
    """Exact parameter count of a GPT-2-style decoder-only Transformer.

    Conventions (GPT-2 / nanoGPT): learned token (``vocab_size × d_model``) and position
    (``n_ctx × d_model``) embeddings; ``n_layer`` pre-norm blocks, each with two
    LayerNorms, a fused QKV projection plus an output projection, and an MLP
    ``d_model → d_ff → d_model`` (``d_ff`` defaults to ``4·d_model``); a final LayerNorm;
    an output head tied to the token embedding unless ``tied_embeddings=False``.
    ``bias=False`` drops every Linear bias and LayerNorm bias (LayerNorm weights stay).

    Per block that is ``4·d² + 2·d·d_ff`` weights (``12·d²`` with ``d_ff = 4d``) plus
    ``9d + d_ff`` biases and LayerNorm parameters.

    Example:
        >>> transformer_param_count(12, 768, 50257, 1024)  # GPT-2 small
        124439808
    """
    n_layer = _check_positive_int("n_layer", n_layer)
    d = _check_positive_int("d_model", d_model)
    vocab_size = _check_positive_int("vocab_size", vocab_size)
    n_ctx = _check_positive_int("n_ctx", n_ctx)
    d_ff = 4 * d if d_ff is None else _check_positive_int("d_ff", d_ff)
    _check_flag("tied_embeddings", tied_embeddings)
    _check_flag("bias", bias)

    layer_norm = 2 * d if bias else d
    attention = d * 3 * d + d * d + ((3 * d + d) if bias else 0)
    mlp = d * d_ff + d_ff * d + ((d_ff + d) if bias else 0)
    block = 2 * layer_norm + attention + mlp

    embeddings = vocab_size * d + n_ctx * d
    head = 0 if tied_embeddings else vocab_size * d
    return embeddings + n_layer * block + layer_norm + head
