"""The text classifier: its networks (bag of word pieces, pretrained sentence encoder, LoRA) and
:class:`TextClassifier` with ``predict``, ``predict_proba``, atomic ``save`` and ``load``.

It is trained by :func:`utils.text.train_text_classifier`; import both from :mod:`utils.text`.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .encoders import (
    PRETRAINED_PACKAGE,
    _batches_by_length,
    _check_positive,
    _check_texts,
    _mean_pool,
    _pad,
    _pristine,
    _pristine_on,
    _resolve_device,
    _tokenize,
    embed_texts,
)
from .lora import apply_lora
from .checkpoint import _fsync_dir

__all__ = ["METHODS", "TextClassifier"]

METHODS = ("scratch", "frozen", "full", "lora")


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
