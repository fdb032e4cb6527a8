"""Offline datasets as ready train/validation/test splits, and converters to loaders.

All data comes from scikit-learn's bundled files: nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numbers
import os

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from ._checks import check_bool, check_int, check_seed

__all__ = [
    "Split",
    "load_digits_split",
    "load_breast_cancer_split",
    "load_diabetes_split",
    "to_torch_loader",
    "to_tf_dataset",
    "data_path",
    "read_data_csv",
    "DATA_DIR",
    "SpokenDigits",
    "load_spoken_digits",
]


@dataclass
class Split:
    """Train/validation/test arrays plus what a chapter needs to describe them."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray
    y_val: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    feature_names: list[str] = field(default_factory=list)
    target_names: list[str] = field(default_factory=list)
    scaler: Any = None  # the fitted StandardScaler, or None

    @property
    def n_features(self) -> int:
        return int(self.X_train.shape[1])

    @property
    def n_classes(self) -> int:
        """Number of classes (0 for a regression target)."""
        return len(self.target_names)

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.X_train), "val": len(self.X_val), "test": len(self.X_test)}

    def __repr__(self) -> str:
        kind = f"{self.n_classes} classes" if self.n_classes else "regression"
        return f"Split({self.sizes()}, {self.n_features} features, {kind}, standardized={self.scaler is not None})"


def _check_fractions(val_size: float, test_size: float) -> None:
    for name, value in (("val_size", val_size), ("test_size", test_size)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < 1:
            raise ValueError(f"{name} must be a fraction strictly between 0 and 1 (e.g. 0.15), got {value!r}")
    if val_size + test_size >= 1:
        raise ValueError(
            f"val_size + test_size must leave data for training, got {val_size} + {test_size} >= 1"
        )


def _split(
    X: np.ndarray,
    y: np.ndarray,
    *,
    val_size: float,
    test_size: float,
    seed: int,
    stratify: bool,
    standardize: bool,
    feature_names: list[str],
    target_names: list[str],
) -> Split:
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    _check_fractions(val_size, test_size)
    val_size, test_size = float(val_size), float(test_size)
    if seed is not None:  # None: a different split on every call, as in scikit-learn
        seed = check_seed("seed", seed)
    check_bool("standardize", standardize)
    X_rest, X_test, y_rest, y_test = train_test_split(
        X, y, test_size=test_size, random_state=seed, stratify=y if stratify else None
    )
    # val_size is a fraction of the whole data set, so rescale it to the remainder.
    val_of_rest = val_size / (1.0 - test_size)
    X_train, X_val, y_train, y_val = train_test_split(
        X_rest, y_rest, test_size=val_of_rest, random_state=seed, stratify=y_rest if stratify else None
    )
    scaler = None
    if standardize:
        scaler = StandardScaler().fit(X_train)  # fitted on the training split only
        X_train, X_val, X_test = (scaler.transform(a) for a in (X_train, X_val, X_test))
    as32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
    return Split(
        as32(X_train), y_train, as32(X_val), y_val, as32(X_test), y_test,
        feature_names=feature_names, target_names=target_names, scaler=scaler,
    )


def load_digits_split(
    *, val_size: float = 0.15, test_size: float = 0.15, seed: int = 0, standardize: bool = True
) -> Split:
    """scikit-learn's 8×8 handwritten digits (1,797 images, 64 pixel features, 10 classes).

    Stratified train/validation/test split; with ``standardize=True`` a StandardScaler is
    fitted on the training split only and applied to all three. Use
    ``standardize=False`` for raw pixel intensities 0–16 (e.g. to reshape into images).

    Example:
        >>> split = load_digits_split(seed=0)
        >>> split.X_train.shape[1], split.n_classes
        (64, 10)
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    return _split(
        data.data, data.target.astype(np.int64), val_size=val_size, test_size=test_size, seed=seed,
        stratify=True, standardize=standardize,
        feature_names=list(data.feature_names), target_names=[str(t) for t in data.target_names],
    )


def load_breast_cancer_split(
    *, val_size: float = 0.15, test_size: float = 0.15, seed: int = 0, standardize: bool = True
) -> Split:
    """Wisconsin breast-cancer data (569 samples, 30 features; 0 = malignant, 1 = benign).

    Example:
        >>> load_breast_cancer_split().target_names
        ['malignant', 'benign']
    """
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    return _split(
        data.data, data.target.astype(np.int64), val_size=val_size, test_size=test_size, seed=seed,
        stratify=True, standardize=standardize,
        feature_names=list(data.feature_names), target_names=list(data.target_names),
    )


def load_diabetes_split(
    *, val_size: float = 0.15, test_size: float = 0.15, seed: int = 0, standardize: bool = True
) -> Split:
    """Diabetes regression data (442 patients, 10 features, target = disease progression).

    The split is not stratified (the target is continuous); ``y`` arrays are float32.

    Example:
        >>> load_diabetes_split().n_classes
        0
    """
    from sklearn.datasets import load_diabetes

    data = load_diabetes()
    return _split(
        data.data, data.target.astype(np.float32), val_size=val_size, test_size=test_size, seed=seed,
        stratify=False, standardize=standardize,
        feature_names=list(data.feature_names), target_names=[],
    )


def _check_xy(X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(X, torch.Tensor):
        X = X.detach().cpu().numpy()
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().numpy()
    for name, value in (("X", X), ("y", y)):
        if value is None:
            raise ValueError(f"{name} is None: pass an array with one row per sample.")
    try:
        X = np.asarray(X)
        y = np.asarray(y)
    except ValueError as error:  # ragged nested lists
        raise ValueError(f"X or y cannot be made into an array ({error}); every sample must have the same "
                         "shape (pad sequences to a common length first).") from None
    if X.ndim == 0 or len(X) == 0:
        raise ValueError("X is empty: pass at least one sample (first axis = samples).")
    if y.ndim == 0 or len(X) != len(y):
        raise ValueError(f"X and y must have the same number of samples, got {len(X)} and {y.size if y.ndim == 0 else len(y)}.")
    if not (np.issubdtype(X.dtype, np.number) or X.dtype == np.bool_):
        raise TypeError(f"X must be numeric, got dtype {X.dtype}")
    if not (np.issubdtype(y.dtype, np.number) or y.dtype == np.bool_):
        raise TypeError(f"y must be numeric (encode string labels as integers first), got dtype {y.dtype}")
    if np.issubdtype(X.dtype, np.floating) and not np.isfinite(X).all():
        raise ValueError("X contains NaN or infinite values: impute or drop them before training.")
    if np.issubdtype(y.dtype, np.floating) and not np.isfinite(y).all():
        bad = int((~np.isfinite(y)).sum())
        raise ValueError(f"y contains {bad} NaN or infinite value(s): drop those samples or fill the targets first.")
    return X, y


def _check_loader_options(batch_size: Any, shuffle: Any, seed: Any) -> int:
    batch_size = check_int("batch_size", batch_size)
    check_bool("shuffle", shuffle)
    if seed is not None:
        check_seed("seed", seed)
    return batch_size


def _as_tensors(X: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    X_t = torch.as_tensor(X, dtype=torch.float32) if np.issubdtype(X.dtype, np.floating) or X.dtype == np.bool_ \
        else torch.as_tensor(X)
    # Integer targets are class indices (int64, what CrossEntropyLoss expects); floats stay float32.
    y_t = torch.as_tensor(y, dtype=torch.int64) if np.issubdtype(y.dtype, np.integer) \
        else torch.as_tensor(y, dtype=torch.float32)
    return X_t, y_t


def to_torch_loader(
    X: Any,
    y: Any,
    batch_size: int = 32,
    shuffle: bool = False,
    *,
    seed: int | None = 0,
    drop_last: bool = False,
    num_workers: int = 0,
    pin_memory: bool | None = None,
) -> DataLoader:
    """Wrap arrays in a ``DataLoader`` of ``(X, y)`` batches.

    Floating ``X`` becomes float32; integer ``y`` becomes int64 class indices, floating
    ``y`` float32. ``seed`` fixes the shuffling order (``None`` = not reproducible).
    ``pin_memory`` defaults to True when CUDA is available, which lets ``fit`` copy
    batches with ``non_blocking=True``. NaN or infinite values in ``X`` or ``y`` are refused;
    sizes accept NumPy integers, flags only real booleans.

    Example:
        >>> loader = to_torch_loader(np.zeros((10, 3)), np.arange(10), batch_size=4)
        >>> [len(xb) for xb, yb in loader]
        [4, 4, 2]
    """
    X, y = _check_xy(X, y)
    batch_size = _check_loader_options(batch_size, shuffle, seed)
    check_bool("drop_last", drop_last)
    num_workers = check_int("num_workers", num_workers, minimum=0)
    if pin_memory is not None:
        check_bool("pin_memory", pin_memory)
    X_t, y_t = _as_tensors(X, y)
    generator = None
    if shuffle and seed is not None:
        generator = torch.Generator().manual_seed(int(seed))
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    return DataLoader(
        TensorDataset(X_t, y_t), batch_size=batch_size, shuffle=shuffle, generator=generator,
        drop_last=drop_last, num_workers=num_workers, pin_memory=pin_memory,
    )


def to_tf_dataset(
    X: Any,
    y: Any,
    batch_size: int = 32,
    shuffle: bool = False,
    *,
    seed: int | None = 0,
    prefetch: bool = True,
    map_fn: Callable | None = None,
) -> Any:
    """The TensorFlow twin of :func:`to_torch_loader`: a batched ``tf.data.Dataset``.

    Imports TensorFlow (configured by :func:`utils.configure_tensorflow`).

    Example:
        >>> ds = to_tf_dataset(np.zeros((10, 3)), np.arange(10), batch_size=4)
        >>> [int(xb.shape[0]) for xb, yb in ds]
        [4, 4, 2]
    """
    from .device import configure_tensorflow

    X, y = _check_xy(X, y)
    batch_size = _check_loader_options(batch_size, shuffle, seed)
    check_bool("prefetch", prefetch)
    if map_fn is not None and not callable(map_fn):
        raise TypeError(f"map_fn must be a function or None, got {type(map_fn).__name__}")
    tf = configure_tensorflow()
    X = X.astype(np.float32) if np.issubdtype(X.dtype, np.floating) else X
    y = y.astype(np.int64) if np.issubdtype(y.dtype, np.integer) else y.astype(np.float32)
    ds = tf.data.Dataset.from_tensor_slices((X, y))
    if shuffle:
        ds = ds.shuffle(len(X), seed=None if seed is None else int(seed), reshuffle_each_iteration=True)
    ds = ds.batch(batch_size)
    if map_fn is not None:
        ds = ds.map(map_fn, num_parallel_calls=tf.data.AUTOTUNE)
    if prefetch:
        ds = ds.prefetch(tf.data.AUTOTUNE)
    return ds


DATA_DIR = Path(__file__).resolve().parent.parent / "data"


def data_path(name: str) -> Path:
    """Path of a file in the course's ``data/`` folder; a clear error if it is missing.

    ``name`` is relative to ``data/`` (sub-folders allowed); absolute paths and ``..`` that
    lead outside ``data/`` are refused.

    Example:
        >>> data_path("models.csv").name
        'models.csv'
    """
    if not isinstance(name, (str, os.PathLike)):
        raise TypeError(f"name must be a file name inside data/ such as 'models.csv', got {type(name).__name__}")
    relative = Path(name)
    path = DATA_DIR / relative
    if relative.is_absolute() or not path.resolve().is_relative_to(DATA_DIR.resolve()):
        raise ValueError(f"data_path only opens files inside the course's data/ folder ({DATA_DIR}); "
                         f"{str(name)!r} points outside it. Pass a name relative to data/, e.g. 'errata.csv'.")
    if not path.is_file():
        raise FileNotFoundError(
            f"Course data file {name!r} not found at {path}. It ships with the repository: "
            "run the notebooks from a full clone (git status should show data/ intact)."
        )
    return path


def read_data_csv(name: str, **read_csv_kwargs: Any) -> Any:
    """A CSV file of the course's ``data/`` folder as a pandas DataFrame (UTF-8).

    Like ``pandas.read_csv(data_path(name))``, but an unreadable file (not UTF-8, not CSV, empty)
    raises a ``ValueError`` that names the file and says how to restore it.

    Example:
        >>> read_data_csv("models.csv").shape[0] > 0
        True
    """
    import pandas as pd

    path = data_path(name)
    try:
        return pd.read_csv(path, encoding="utf-8", **read_csv_kwargs)
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        reason = "it is not UTF-8 text" if isinstance(error, UnicodeDecodeError) else str(error).splitlines()[0]
        raise ValueError(f"Course data file {path} cannot be read as CSV ({reason}). Restore it from git "
                         f"(git checkout -- data/{name}).") from None


@dataclass
class SpokenDigits:
    """The Free Spoken Digit Dataset (chapter 06): one entry per recording, in the same order in every array.

    ``waveforms`` are float32 arrays in [-1, 1) of different lengths; ``recordings`` is the take number
    0–49 of a digit by a speaker (upstream's test split is takes 0–4); ``files`` are upstream's WAV names.
    """

    waveforms: list[np.ndarray]
    sample_rate: int
    labels: np.ndarray  # int64 digits 0–9
    speakers: np.ndarray  # str
    recordings: np.ndarray  # int64 take numbers 0–49
    files: list[str]
    speaker_info: dict[str, dict[str, str]]  # speaker → gender, accent, language

    def __len__(self) -> int:
        return len(self.waveforms)

    def __repr__(self) -> str:
        seconds = sum(len(w) for w in self.waveforms) / self.sample_rate
        return (f"SpokenDigits({len(self)} recordings, {len(set(self.speakers.tolist()))} speakers, "
                f"{self.sample_rate} Hz, {seconds / 60:.1f} min)")


def load_spoken_digits() -> SpokenDigits:
    """Load the 3,000 recordings of the Free Spoken Digit Dataset shipped in ``data/fsdd/`` (CC BY-SA 4.0).

    Each speaker's recordings are stored losslessly in one FLAC file, cut apart with ``data/fsdd/index.csv``;
    every file's decoded samples are checked against the SHA-256 in ``data/fsdd/speakers.csv``. A missing
    file raises FileNotFoundError, a damaged one ValueError, both naming the file.

    Example:
        >>> digits = load_spoken_digits()
        >>> len(digits), digits.sample_rate, sorted(set(digits.labels.tolist())) == list(range(10))
        (3000, 8000, True)
    """
    import csv
    import hashlib

    import soundfile as sf

    speakers_csv, index_csv = data_path("fsdd/speakers.csv"), data_path("fsdd/index.csv")
    try:
        with open(speakers_csv, encoding="utf-8", newline="") as f:
            speaker_rows = list(csv.DictReader(f))
        with open(index_csv, encoding="utf-8", newline="") as f:
            index_rows = list(csv.DictReader(f))
        starts = [(r["speaker"], int(r["start"]), int(r["length"]), int(r["digit"]), int(r["recording"]), r["file"])
                  for r in index_rows]
        info = {r["speaker"]: {k: r[k] for k in ("gender", "accent", "language")} for r in speaker_rows}
    except (KeyError, ValueError, TypeError) as exc:
        raise ValueError(f"data/fsdd/index.csv or data/fsdd/speakers.csv is damaged ({exc!r}); "
                         "restore data/fsdd/ from the repository") from exc
    waveforms, labels, speakers, recordings, files = [], [], [], [], []
    for row in speaker_rows:
        name = f"fsdd/{row['flac']}"
        path = data_path(name)
        try:
            pcm, rate = sf.read(path, dtype="int16", always_2d=False)
        except Exception as exc:  # soundfile raises its own error types for unreadable files
            raise ValueError(f"Course data file data/{name} cannot be decoded as FLAC ({exc}); "
                             "restore it from the repository") from exc
        digest = hashlib.sha256(np.ascontiguousarray(pcm, dtype="<i2").tobytes()).hexdigest()
        if rate != 8000 or pcm.ndim != 1 or len(pcm) != int(row["samples"]) or digest != row["sha256_pcm16"]:
            raise ValueError(f"Course data file data/{name} is damaged (rate {rate} Hz, {len(pcm)} samples, "
                             "checksum mismatch against data/fsdd/speakers.csv); restore it from the repository")
        audio = pcm.astype(np.float32) / 32768.0
        for speaker, start, length, digit, recording, file in starts:
            if speaker == row["speaker"]:
                waveforms.append(audio[start:start + length])
                labels.append(digit), speakers.append(speaker), recordings.append(recording), files.append(file)
    if len(waveforms) != len(starts):
        raise ValueError(f"data/fsdd/index.csv lists {len(starts)} recordings but the speakers in "
                         f"data/fsdd/speakers.csv cover {len(waveforms)}; restore data/fsdd/ from the repository")
    return SpokenDigits(waveforms, 8000, np.asarray(labels, dtype=np.int64), np.asarray(speakers),
                        np.asarray(recordings, dtype=np.int64), files, info)
