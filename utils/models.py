"""Models reused across chapters: ``TinyGPT``, a small GPT-2-style decoder-only Transformer.

The layout follows GPT-2 (Radford et al., 2019) as nanoGPT writes it: learned token and
position embeddings, ``n_layer`` pre-norm blocks (LayerNorm → causal self-attention →
residual, LayerNorm → MLP → residual), a final LayerNorm and an output head that shares
its weight with the token embedding. Its parameter count equals
:func:`utils.transformer_param_count` for the same configuration.

Attention uses ``torch.nn.functional.scaled_dot_product_attention`` (fused kernels on
CPU and GPU) when PyTorch has it, and an explicit masked softmax otherwise; both compute
the same numbers, and a test checks that they do.

``generate`` keeps a key/value cache by default (``use_cache=True``, chapter 15): the keys and
values of earlier positions are stored per layer, so each new token costs one position's work
instead of a forward pass over the whole context. The cache holds
``2 · n_layer · d_model · context`` numbers per sequence (:meth:`TinyGPT.kv_cache_bytes`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ._checks import check_bool, check_int, check_real

__all__ = ["GPTConfig", "KVCache", "TinyGPT"]

# One (keys, values) pair per layer, each of shape (batch, n_kv_head, context, head_size).
KVCache = list[tuple[torch.Tensor, torch.Tensor]]


@dataclass
class GPTConfig:
    """Size of a :class:`TinyGPT`.

    Attributes:
        vocab_size: number of token ids; inputs must lie in ``[0, vocab_size)``.
        n_layer: Transformer blocks.
        n_head: attention heads per block; must divide ``d_model``.
        d_model: width of the residual stream (embedding size).
        block_size: longest context the model accepts (number of position embeddings).
        dropout: dropout probability after attention weights, attention output and MLP, in ``[0, 1)``.
        bias: whether Linear layers and LayerNorms have biases (GPT-2: yes).
        n_kv_head: key/value heads per block (``None``: ``n_head``, ordinary multi-head attention). Fewer
            than ``n_head`` is grouped-query attention (Ainslie et al., 2023): each key/value head serves
            ``n_head // n_kv_head`` query heads, so the KV cache shrinks by that factor; ``1`` is multi-query
            attention (Shazeer, 2019). Must divide ``n_head``. With ``n_kv_head == n_head`` the model is
            exactly the multi-head one (same parameters, same numbers).

    Example:
        >>> GPTConfig(vocab_size=65, n_layer=2, n_head=4, d_model=64, block_size=32).head_size
        16
    """

    vocab_size: int
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 128
    block_size: int = 128
    dropout: float = 0.0
    bias: bool = True
    n_kv_head: int | None = None

    def __post_init__(self) -> None:
        for name in ("vocab_size", "n_layer", "n_head", "d_model", "block_size"):
            # NumPy integers (np.int64 from a tokenizer or a grid) are accepted and stored as int.
            setattr(self, name, check_int(f"GPTConfig.{name}", getattr(self, name)))
        if self.d_model % self.n_head != 0:
            raise ValueError(
                f"d_model ({self.d_model}) must be divisible by n_head ({self.n_head}): each head gets "
                f"d_model // n_head dimensions. Try n_head in {_divisors(self.d_model)}."
            )
        self.dropout = check_real("GPTConfig.dropout", self.dropout)
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"GPTConfig.dropout must be in [0, 1), got {self.dropout}")
        self.bias = check_bool("GPTConfig.bias", self.bias)
        self.n_kv_head = self.n_head if self.n_kv_head is None else check_int("GPTConfig.n_kv_head", self.n_kv_head)
        if self.n_head % self.n_kv_head != 0:
            raise ValueError(f"n_head ({self.n_head}) must be divisible by n_kv_head ({self.n_kv_head}): each "
                             "key/value head serves n_head // n_kv_head query heads. "
                             f"Try n_kv_head in {_divisors(self.n_head)}.")

    @property
    def head_size(self) -> int:
        return self.d_model // self.n_head


def _divisors(n: int) -> list[int]:
    return [k for k in range(1, min(n, 64) + 1) if n % k == 0]


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which position t only sees positions ≤ t."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head, self.n_kv_head = config.n_head, config.n_kv_head
        self.kv_dim = config.n_kv_head * config.head_size  # = d_model for multi-head attention
        self.dropout = config.dropout
        self.c_attn = nn.Linear(config.d_model, config.d_model + 2 * self.kv_dim, bias=config.bias)  # fused Q, K, V
        self.c_proj = nn.Linear(config.d_model, config.d_model, bias=config.bias)
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)
        # Feature detection, not a flag: fused attention exists in PyTorch ≥ 2.0.
        self.use_sdpa = hasattr(F, "scaled_dot_product_attention")
        # The mask for the manual path is a buffer (moves with .to(), is not a parameter, not saved).
        mask = torch.tril(torch.ones(config.block_size, config.block_size, dtype=torch.bool))
        self.register_buffer("causal_mask", mask.view(1, 1, config.block_size, config.block_size),
                             persistent=False)

    def forward_cached(self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None
                       ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Attention of the new positions ``x`` (B, T, C) over the cached ones and themselves.

        Returns the output and the cache extended by this call's keys and values.
        """
        B, T, C = x.shape
        q, k, v = self._qkv(x)
        if past is not None:
            k, v = torch.cat((past[0], k), dim=2), torch.cat((past[1], v), dim=2)
        cache = (k, v)  # n_kv_head heads: what grouped-query attention saves
        k, v = self._expand(k), self._expand(v)
        P = k.size(2) - T  # positions already cached
        if T == 1:  # one new query sees every cached key: no mask needed
            mask = None
        else:  # query i (absolute position P + i) sees keys 0 … P + i
            mask = self.causal_mask[:, :, P:P + T, :P + T]
        if self.use_sdpa:
            if P == 0 and T > 1:  # prefill: the plain causal case, fused kernel
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            else:
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        else:
            att = (q @ k.transpose(-2, -1)) / math.sqrt(k.size(-1))
            if mask is not None:
                att = att.masked_fill(~mask, float("-inf"))
            y = F.softmax(att, dim=-1) @ v
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y), cache

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # (B, T, C) -> q (B, n_head, T, head_size), k and v (B, n_kv_head, T, head_size)
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split([C, self.kv_dim, self.kv_dim], dim=2)
        size = C // self.n_head
        return (q.view(B, T, self.n_head, size).transpose(1, 2), k.view(B, T, self.n_kv_head, size).transpose(1, 2),
                v.view(B, T, self.n_kv_head, size).transpose(1, 2))

    def _expand(self, t: torch.Tensor) -> torch.Tensor:
        # Grouped-query attention: key/value head j serves query heads j·g … j·g + g - 1.
        return t if self.n_kv_head == self.n_head else t.repeat_interleave(self.n_head // self.n_kv_head, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self._qkv(x)
        k, v = self._expand(k), self._expand(v)
        if self.use_sdpa:
            y = F.scaled_dot_product_attention(
                q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
            )
        else:
            att = (q @ k.transpose(-2, -1)) / math.sqrt(k.size(-1))
            att = att.masked_fill(~self.causal_mask[:, :, :T, :T], float("-inf"))
            att = self.attn_dropout(F.softmax(att, dim=-1))
            y = att @ v
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # heads side by side again
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """Position-wise feed-forward network: d → 4d → GELU → d."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.d_model, 4 * config.d_model, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.d_model, config.d_model, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-norm Transformer block: x + attn(LN(x)), then x + mlp(LN(x))."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.d_model, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.d_model, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))

    def forward_cached(self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None
                       ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        attn_out, present = self.attn.forward_cached(self.ln_1(x), past)
        x = x + attn_out
        return x + self.mlp(self.ln_2(x)), present


class TinyGPT(nn.Module):
    """A GPT-2-style language model small enough to train on a laptop CPU.

    ``forward(idx, targets=None)`` returns ``(logits, loss)``: logits of shape
    ``(B, T, vocab_size)`` for the next token at every position, and the mean
    cross-entropy over all ``B·T`` positions when ``targets`` (same shape as ``idx``) are
    given, else ``None``. That is the ``(output, loss)`` pair :func:`utils.fit` expects
    with ``loss_fn=None``.

    Example:
        >>> model = TinyGPT(GPTConfig(vocab_size=10, n_layer=1, n_head=2, d_model=16, block_size=8))
        >>> logits, loss = model(torch.zeros(2, 8, dtype=torch.long), torch.zeros(2, 8, dtype=torch.long))
        >>> logits.shape, loss.ndim
        (torch.Size([2, 8, 10]), 0)
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise TypeError(f"TinyGPT needs a GPTConfig, got {type(config).__name__}")
        self.config = config
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.vocab_size, config.d_model),   # token embedding
            wpe=nn.Embedding(config.block_size, config.d_model),   # learned position embedding
            drop=nn.Dropout(config.dropout),
            h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=nn.LayerNorm(config.d_model, bias=config.bias),
        ))
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        # Weight tying (Press & Wolf, 2017): the output head reuses the token embedding matrix.
        self.lm_head.weight = self.transformer.wte.weight
        self.apply(self._init_weights)
        # GPT-2: scale the init of the projections that write into the residual stream by
        # 1/sqrt(2·n_layer), so the residual's variance does not grow with depth.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_parameters(self, non_embedding: bool = False) -> int:
        """Parameters, counted once each (the tied head is not counted twice).

        ``non_embedding=True`` leaves out the token and position embeddings, the count
        Kaplan et al. (2020) use in their scaling laws.

        Example:
            >>> TinyGPT(GPTConfig(vocab_size=10, n_layer=1, n_head=1, d_model=8, block_size=4)).num_parameters()
            1000
        """
        n = sum(p.numel() for p in self.parameters())
        if check_bool("non_embedding", non_embedding):
            n -= self.transformer.wte.weight.numel() + self.transformer.wpe.weight.numel()
        return n

    def parameter_groups(self, weight_decay: float = 0.1) -> list[dict[str, Any]]:
        """Optimizer groups: weight decay on matrices (Linear, Embedding), none on biases and LayerNorms.

        Example:
            >>> opt = torch.optim.AdamW(model.parameter_groups(0.1), lr=1e-3)
        """
        weight_decay = check_real("weight_decay", weight_decay, non_negative=True)
        params = list(self.parameters())  # de-duplicated: the tied weight appears once
        return [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": float(weight_decay)},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]

    def _check_idx(self, idx: Any, name: str = "idx", crop: bool = False) -> None:
        if not isinstance(idx, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of token ids, got {type(idx).__name__}")
        if idx.ndim != 2:
            raise ValueError(
                f"{name} must have shape (batch, sequence_length), got shape {tuple(idx.shape)}; "
                "for a single sequence use idx[None, :]"
            )
        if idx.dtype != torch.long:
            raise TypeError(f"{name} must hold token ids as torch.long (int64), got {idx.dtype}; use {name}.long()")
        if idx.shape[1] == 0:
            raise ValueError(f"{name} is empty: give at least one token per sequence")
        if not crop and idx.shape[1] > self.config.block_size:
            raise ValueError(
                f"Sequence length {idx.shape[1]} is longer than block_size={self.config.block_size}: "
                f"the model has only {self.config.block_size} position embeddings. "
                f"Feed the last {self.config.block_size} tokens ({name}[:, -block_size:])."
            )
        if idx.numel():
            lo, hi = int(idx.min()), int(idx.max())
            if lo < 0 or hi >= self.config.vocab_size:
                bad = lo if lo < 0 else hi
                raise ValueError(
                    f"{name} contains token id {bad}, outside [0, vocab_size={self.config.vocab_size}): "
                    "was the text encoded with a tokenizer of a different vocabulary?"
                )

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits for the next token at every position, and the loss if ``targets`` are given."""
        self._check_idx(idx)
        if targets is not None:
            self._check_idx(targets, "targets")
            if targets.shape != idx.shape:
                raise ValueError(f"targets must have the shape of idx {tuple(idx.shape)}, got {tuple(targets.shape)}")
        T = idx.shape[1]
        pos = torch.arange(T, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        for block in self.transformer.h:
            x = block(x)
        logits = self.lm_head(self.transformer.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1))
        return logits, loss

    @torch.no_grad()
    def forward_with_cache(self, idx: torch.Tensor, past: KVCache | None = None) -> tuple[torch.Tensor, KVCache]:
        """Logits of the new tokens ``idx`` (B, T) given the cache ``past`` of earlier positions.

        Returns ``(logits, cache)``: logits of shape ``(B, T, vocab_size)`` — the same numbers
        ``forward`` gives for these positions of the whole sequence — and the cache extended by
        ``T`` positions (one ``(keys, values)`` pair per layer, each ``(B, n_kv_head, context, head_size)``).
        The new tokens take positions ``context … context + T - 1``, so the total may not exceed
        ``block_size``. Inference only (no gradients, no dropout: call it in eval mode).

        Example:
            >>> logits, cache = model.forward_with_cache(prompt)          # prefill the prompt
            >>> logits, cache = model.forward_with_cache(next_id, cache)  # one new token
        """
        self._check_idx(idx)
        n_past = 0
        if past is not None:
            if not isinstance(past, list) or len(past) != self.config.n_layer:
                raise ValueError(f"past must be the list of {self.config.n_layer} (keys, values) pairs that "
                                 "forward_with_cache returned, or None for the first call")
            n_past = past[0][0].shape[2]
            if past[0][0].shape[0] != idx.shape[0]:
                raise ValueError(f"past holds {past[0][0].shape[0]} sequences but idx has {idx.shape[0]}")
        T = idx.shape[1]
        if n_past + T > self.config.block_size:
            raise ValueError(
                f"{n_past} cached + {T} new positions exceed block_size={self.config.block_size}; "
                f"start again from the last {self.config.block_size} tokens with past=None"
            )
        pos = torch.arange(n_past, n_past + T, device=idx.device)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
        present: KVCache = []
        for i, block in enumerate(self.transformer.h):
            x, kv = block.forward_cached(x, None if past is None else past[i])
            present.append(kv)
        return self.lm_head(self.transformer.ln_f(x)), present

    def kv_cache_bytes(self, context: int, batch_size: int = 1, dtype: torch.dtype | None = None) -> int:
        """Memory of the key/value cache: ``2 · n_layer · n_kv_head · head_size · context · B · bytes``.

        Two tensors (keys and values) per layer, each ``n_kv_head · head_size`` numbers per position
        (``= d_model`` for multi-head attention; ``n_head // n_kv_head`` times fewer with grouped-query
        attention). ``dtype`` defaults to the model's parameter dtype.

        Example:
            >>> TinyGPT(GPTConfig(vocab_size=65, n_layer=4, d_model=128, block_size=512)).kv_cache_bytes(512)
            2097152
        """
        context, batch_size = check_int("context", context), check_int("batch_size", batch_size)
        if dtype is None:
            dtype = next(self.parameters()).dtype
        if not isinstance(dtype, torch.dtype):
            raise TypeError(f"dtype must be a torch.dtype such as torch.float16, got {dtype!r}")
        if context > self.config.block_size:
            raise ValueError(f"context {context} exceeds block_size={self.config.block_size}: the cache never holds "
                             "more than block_size positions (generate re-prefills the last block_size tokens)")
        element = torch.empty((), dtype=dtype).element_size()
        per_position = self.config.n_kv_head * self.config.head_size
        return 2 * self.config.n_layer * per_position * context * batch_size * element

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, generator: torch.Generator | None = None,
                 use_cache: bool = True) -> torch.Tensor:
        """Extend ``idx`` (shape ``(B, T)``) by ``max_new_tokens`` sampled tokens.

        Each step conditions on the last ``block_size`` tokens, divides the last logits by
        ``temperature`` (> 0; lower is greedier), keeps the ``top_k`` most likely tokens
        if given, and samples from the softmax. ``top_k=1`` is greedy decoding and
        deterministic. Pass a seeded ``torch.Generator`` for reproducible samples. The
        model runs in eval mode (no dropout) and its mode is restored afterwards.

        ``use_cache=True`` (default) keeps the keys and values of earlier positions
        (:meth:`forward_with_cache`): the prompt is processed once, then each step feeds only
        the newest token. ``use_cache=False`` runs the whole context through the model at every
        step. Both condition on the same tokens at the same positions, so greedy decoding gives
        the same tokens. **Overflow rule:** once the context would exceed ``block_size``, the
        context is cropped to its last ``block_size`` tokens and the cache is rebuilt from them
        (re-prefilled) — every step from then on, because the learned position embeddings of
        all kept tokens shift by one. Past ``block_size`` the cache therefore saves nothing; its
        speed-up holds while ``T + max_new_tokens ≤ block_size``.

        Example:
            >>> out = model.generate(torch.zeros(1, 1, dtype=torch.long), 20, temperature=0.8, top_k=10)
            >>> out.shape
            torch.Size([1, 21])
        """
        self._check_idx(idx, crop=True)
        max_new_tokens = check_int("max_new_tokens", max_new_tokens, minimum=0)
        try:
            temperature = check_real("temperature", temperature, positive=True)
        except ValueError as error:  # ArgumentTypeError is a ValueError too
            raise type(error)(f"{error}; for greedy decoding use top_k=1") from None
        if top_k is not None:
            top_k = min(check_int("top_k", top_k), self.config.vocab_size)
        use_cache = check_bool("use_cache", use_cache)
        was_training = self.training
        self.eval()
        try:
            cache: KVCache | None = None
            for _ in range(max_new_tokens):
                logits, cache = self._last_logits(idx, cache, use_cache)
                next_id = _sample(logits, temperature, top_k, generator)
                idx = torch.cat((idx, next_id), dim=1)
        finally:
            self.train(was_training)
        return idx

    def _last_logits(self, idx: torch.Tensor, cache: KVCache | None,
                     use_cache: bool) -> tuple[torch.Tensor, KVCache | None]:
        """Float32 logits ``(B, vocab_size)`` for the token after ``idx``, and the updated cache.

        Without the cache the last ``block_size`` tokens run through the model. With it, the first
        step and every step after an overflow (re-)prefill the last ``block_size`` tokens; the
        others feed only the newest token.
        """
        block_size = self.config.block_size
        if not use_cache:
            logits, _ = self(idx[:, -block_size:])
        elif cache is None or cache[0][0].shape[2] >= block_size:
            logits, cache = self.forward_with_cache(idx[:, -block_size:])
        else:
            logits, cache = self.forward_with_cache(idx[:, -1:], cache)
        return logits[:, -1, :].float(), cache


def _sample(logits: torch.Tensor, temperature: float, top_k: int | None,
            generator: torch.Generator | None) -> torch.Tensor:
    """One token id per row of ``logits`` ``(B, vocab)``: greedy for ``top_k=1``, else sampled from the
    softmax of ``logits / temperature`` restricted to the ``top_k`` most likely tokens. Shape ``(B, 1)``."""
    # Shift so the largest logit is 0 before dividing: a tiny temperature (1e-45) then sends the
    # others to -inf (probability 0) instead of overflowing every logit to ±inf (NaN probabilities).
    # (0 stays 0 where float32 cannot hold the temperature at all and 0 / 0 would be NaN.)
    shifted = logits - logits.max(dim=-1, keepdim=True).values
    logits = torch.where(shifted == 0, shifted, shifted / temperature)
    if top_k == 1:  # greedy: no randomness at all
        return logits.argmax(dim=-1, keepdim=True)
    if top_k is not None:
        kth = torch.topk(logits, top_k, dim=-1).values[:, [-1]]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(F.softmax(logits, dim=-1), num_samples=1, generator=generator)
