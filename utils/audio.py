"""Audio features in NumPy (chapter 06): the mel scale, a mel filterbank and the log-mel spectrogram.

The results equal librosa's with its defaults (centred frames with zero padding, a periodic Hann window,
the Slaney mel scale with Slaney area normalisation, power 2, decibels relative to 1.0 without a floor
other than ``amin=1e-10``); ``tests/test_audio.py`` compares them with librosa on random signals.
Only NumPy is needed here: librosa is the reference in the tests, not a dependency of this module.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from ._checks import check_int, check_real

__all__ = ["hz_to_mel", "mel_to_hz", "mel_filterbank", "log_mel_spectrogram"]

_F_SP = 200.0 / 3  # Slaney mel scale: linear below 1 kHz, 3 mels per 200 Hz ...
_MIN_LOG_HZ = 1000.0  # ... and logarithmic above 1 kHz
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP  # = 15 mels
_LOGSTEP = np.log(6.4) / 27.0
_AMIN = 1e-10  # power floor before the logarithm (librosa's amin), i.e. -100 dB


def hz_to_mel(frequencies: Any) -> np.ndarray:
    """Frequencies in Hz → the Slaney mel scale (linear to 1 kHz, logarithmic above).

    Example:
        >>> round(float(hz_to_mel(1000.0)), 9)  # 1 kHz is 15 mels: 3 mels per 200 Hz below it
        15.0
    """
    f = np.asarray(frequencies, dtype=np.float64)
    mels = f / _F_SP
    log_region = f >= _MIN_LOG_HZ
    return np.where(log_region, _MIN_LOG_MEL + np.log(np.maximum(f, _MIN_LOG_HZ) / _MIN_LOG_HZ) / _LOGSTEP, mels)


def mel_to_hz(mels: Any) -> np.ndarray:
    """The inverse of :func:`hz_to_mel`.

    Example:
        >>> round(float(mel_to_hz(hz_to_mel(440.0))), 6)
        440.0
    """
    m = np.asarray(mels, dtype=np.float64)
    freqs = _F_SP * m
    log_region = m >= _MIN_LOG_MEL
    return np.where(log_region, _MIN_LOG_HZ * np.exp(_LOGSTEP * (np.maximum(m, _MIN_LOG_MEL) - _MIN_LOG_MEL)), freqs)


def mel_filterbank(sample_rate: float, n_fft: int, n_mels: int) -> np.ndarray:
    """Triangular mel filters, shape ``(n_mels, n_fft // 2 + 1)``, from 0 Hz to ``sample_rate / 2``.

    The filters' centres are equally spaced on the mel scale; each triangle rises from its left
    neighbour's centre to its own and falls to its right neighbour's, and is scaled by
    ``2 / (right edge - left edge in Hz)`` so that every filter has the same area (Slaney's normalisation,
    librosa's ``norm="slaney"``).

    Example:
        >>> mel_filterbank(8000, n_fft=256, n_mels=32).shape
        (32, 129)
    """
    sample_rate = check_real("sample_rate", sample_rate, positive=True)
    n_fft = check_int("n_fft", n_fft)
    n_mels = check_int("n_mels", n_mels)
    return _mel_filterbank(sample_rate, n_fft, n_mels).copy()


@lru_cache(maxsize=16)
def _mel_filterbank(sample_rate: float, n_fft: int, n_mels: int) -> np.ndarray:
    fft_freqs = np.fft.rfftfreq(n_fft, d=1.0 / sample_rate)
    edges = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sample_rate / 2), n_mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - fft_freqs[None, :]
    rising = -ramps[:-2] / widths[:-1, None]
    falling = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    return weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]


def _check_waveform(waveform: Any) -> np.ndarray:
    if isinstance(waveform, (str, bytes)):
        raise ValueError(f"waveform must be a 1-D array of samples, got {type(waveform).__name__}")
    x = np.asarray(waveform)
    if x.dtype == bool:
        raise ValueError("waveform must hold numbers (samples), got booleans; pass a float array such as x.astype(float)")
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ValueError(f"waveform must be a 1-D array of real numbers, got dtype {x.dtype}")
    if x.ndim != 1:
        raise ValueError(f"waveform must be 1-D (one mono signal), got shape {x.shape}; "
                         "for stereo pass one channel, e.g. x[:, 0], or the mean x.mean(axis=1)")
    if x.size == 0:
        raise ValueError("waveform is empty; pass at least one sample")
    x = x.astype(np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError("waveform contains NaN or infinite samples; clean or drop them first")
    return x


def log_mel_spectrogram(waveform: Any, sample_rate: float, *, n_fft: int = 2048, hop_length: int | None = None,
                        n_mels: int = 128) -> np.ndarray:
    """Log-mel power spectrogram in dB, shape ``(n_mels, 1 + len(waveform) // hop_length)``.

    Steps: pad ``n_fft // 2`` zeros at both ends (so frame ``t`` is centred on sample ``t * hop_length``),
    cut frames of ``n_fft`` samples every ``hop_length``, multiply by a periodic Hann window, take the real
    FFT, square the magnitudes (power), weight them with :func:`mel_filterbank`, and convert to decibels
    ``10 * log10(max(power, 1e-10))``. Equal to ``librosa.power_to_db(librosa.feature.melspectrogram(
    y=waveform, sr=sample_rate, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels), ref=1.0, top_db=None)``.

    Args:
        waveform: 1-D array of samples (floats; integers are converted to float as they are).
        sample_rate: samples per second (> 0).
        n_fft: frame length and FFT size in samples (librosa's default 2048).
        hop_length: samples between frame starts; ``None`` means ``n_fft // 4`` (librosa's default).
        n_mels: number of mel bands (librosa's default 128).

    Example:
        >>> t = np.arange(8000) / 8000
        >>> S = log_mel_spectrogram(np.sin(2 * np.pi * 440 * t), 8000, n_fft=256, hop_length=128, n_mels=32)
        >>> S.shape
        (32, 63)
    """
    x = _check_waveform(waveform)
    sample_rate = check_real("sample_rate", sample_rate, positive=True)
    n_fft = check_int("n_fft", n_fft)
    hop_length = n_fft // 4 if hop_length is None else check_int("hop_length", hop_length)
    if hop_length < 1:
        raise ValueError(f"hop_length must be a positive int; n_fft={n_fft} gives n_fft // 4 = 0, pass hop_length")
    n_mels = check_int("n_mels", n_mels)
    padded = np.pad(x, n_fft // 2)
    n_frames = 1 + (len(padded) - n_fft) // hop_length
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop_length][:n_frames]  # (frames, n_fft)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2  # (frames, n_fft // 2 + 1)
    mel_power = _mel_filterbank(sample_rate, n_fft, n_mels) @ power.T  # (n_mels, frames)
    return 10.0 * np.log10(np.maximum(mel_power, _AMIN))
