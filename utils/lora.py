"""LoRA written out by hand: :class:`LoRALinear` and :func:`apply_lora` (Hu et al., 2021).

Usually imported from :mod:`utils.text`, which re-exports both names.
"""

from __future__ import annotations

import math
import numbers
from typing import Sequence

import torch
from torch import nn

__all__ = ["LoRALinear", "apply_lora"]


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update (Hu et al., 2021, arXiv:2106.09685).

    ``y = base(x) + (alpha / rank) * x A^T B^T`` with ``A`` of shape ``(rank, in)`` (random) and
    ``B`` of shape ``(out, rank)`` (zeros), so at initialisation the layer equals ``base`` exactly.
    Only ``A`` and ``B`` are trained: ``rank * (in + out)`` parameters instead of ``in * out``.

    Example:
        >>> layer = LoRALinear(nn.Linear(384, 384), rank=8, alpha=16)
        >>> sum(p.numel() for p in layer.parameters() if p.requires_grad)
        6144
    """

    def __init__(self, base: nn.Linear, *, rank: int = 8, alpha: float = 16.0, dropout: float = 0.0) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRALinear wraps an nn.Linear, got {type(base).__name__}")
        if isinstance(rank, bool) or not isinstance(rank, numbers.Integral) or rank < 1:
            raise ValueError(f"rank must be a positive int, got {rank!r}")
        rank = int(rank)
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not math.isfinite(alpha) or not alpha > 0:
            raise ValueError(f"alpha must be positive, got {alpha!r}")
        self.base = base.requires_grad_(False)
        self.rank, self.alpha = rank, float(alpha)
        self.scaling = self.alpha / rank
        weight = base.weight
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, device=weight.device, dtype=weight.dtype))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, device=weight.device, dtype=weight.dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear does; B = 0 keeps the start exact
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (self.dropout(x) @ self.lora_A.T @ self.lora_B.T) * self.scaling

    def merged_weight(self) -> torch.Tensor:
        """``W + (alpha / rank) B A``: the single weight matrix to use after training (no extra cost)."""
        return self.base.weight + self.scaling * (self.lora_B @ self.lora_A)

    def extra_repr(self) -> str:
        return f"rank={self.rank}, alpha={self.alpha:g}"


def apply_lora(
    model: nn.Module,
    *,
    rank: int = 8,
    alpha: float = 16.0,
    targets: Sequence[str] = ("query", "value"),
    dropout: float = 0.0,
) -> list[str]:
    """Freeze ``model`` and wrap every ``nn.Linear`` whose name ends in one of ``targets`` in a
    :class:`LoRALinear`, in place. Returns the names of the wrapped layers.

    For BERT-style encoders the defaults adapt the attention query and value projections, as in
    the LoRA paper. Afterwards only the adapters are trainable.

    Example:
        >>> _, encoder = load_pretrained_encoder()
        >>> len(apply_lora(encoder, rank=8))  # 6 layers x (query, value)
        12
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(targets, str):
        targets = (targets,)
    model.requires_grad_(False)
    chosen = [(name, module) for name, module in model.named_modules()
              if isinstance(module, nn.Linear) and name.rsplit(".", 1)[-1] in targets]
    if not chosen:
        raise ValueError(f"No nn.Linear layer named {list(targets)} in the model; check `targets`.")
    for name, module in chosen:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, LoRALinear(module, rank=rank, alpha=alpha, dropout=dropout))
    return [name for name, _ in chosen]
