"""utils.audio (log-mel spectrograms, chapter 06) against librosa, and utils.load_spoken_digits."""

import warnings

import numpy as np
import pytest

import utils
from utils.audio import hz_to_mel, log_mel_spectrogram, mel_filterbank, mel_to_hz

librosa = pytest.importorskip("librosa")


def librosa_log_mel(y, sr, n_fft, hop_length, n_mels):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # librosa warns about empty mel filters and short signals
        S = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=n_fft, hop_length=hop_length, n_mels=n_mels)
        return librosa.power_to_db(S, ref=1.0, top_db=None)


@pytest.mark.parametrize("seed", range(12))
def test_log_mel_matches_librosa_on_random_signals(seed):
    rng = np.random.default_rng(1000 + seed)
    n = int(rng.integers(1, 30_000))
    sr = float(rng.choice([8000, 16000, 22050, 44100, 11025.5]))
    n_fft = int(rng.choice([32, 100, 255, 256, 512, 2048]))
    hop = int(rng.integers(1, n_fft + 1))
    n_mels = int(rng.integers(1, 64))
    y = rng.standard_normal(n) * 10 ** rng.uniform(-4, 1)
    if seed % 3 == 0:  # a chirp instead of noise: tonal, with a silent tail
        t = np.arange(n) / sr
        y = np.sin(2 * np.pi * (100 + 2000 * t) * t) * (t < t.max() * 0.7)
    ours = log_mel_spectrogram(y, sr, n_fft=n_fft, hop_length=hop, n_mels=n_mels)
    ref = librosa_log_mel(y, sr, n_fft, hop, n_mels)
    assert ours.shape == ref.shape == (n_mels, 1 + n // hop)
    assert np.abs(ours - ref).max() < 0.01


def test_defaults_and_float32_input_match_librosa():
    y = np.random.default_rng(3).standard_normal(5000).astype(np.float32)
    ours = log_mel_spectrogram(y, 22050)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=22050), ref=1.0, top_db=None)
    assert ours.shape == ref.shape == (128, 1 + 5000 // 512)
    assert np.abs(ours - ref).max() < 0.01


def test_filterbank_and_mel_scale_match_librosa():
    ours = mel_filterbank(8000, n_fft=256, n_mels=24)
    ref = librosa.filters.mel(sr=8000, n_fft=256, n_mels=24)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-8)
    f = np.array([0.0, 300.0, 1000.0, 3999.0, 11025.0])
    np.testing.assert_allclose(hz_to_mel(f), librosa.hz_to_mel(f), rtol=1e-12)
    np.testing.assert_allclose(mel_to_hz(hz_to_mel(f)), f, rtol=1e-12, atol=1e-9)


def test_integer_input_and_numpy_sizes_are_accepted():
    y = (np.random.default_rng(0).standard_normal(800) * 1000).astype(np.int16)
    a = log_mel_spectrogram(y, np.int64(8000), n_fft=np.int64(128), hop_length=np.int32(64), n_mels=np.int64(16))
    b = log_mel_spectrogram(y.astype(float), 8000, n_fft=128, hop_length=64, n_mels=16)
    assert np.array_equal(a, b)


@pytest.mark.parametrize("bad, match", [
    (np.array([]), "empty"),
    (np.array([0.0, np.nan, 1.0]), "NaN"),
    (np.array([0.0, np.inf]), "NaN or infinite"),
    (np.zeros((2, 100)), "1-D"),
    (np.array([True, False, True]), "booleans"),
    ("0.1 0.2", "1-D array"),
    (np.array(["a", "b"]), "real numbers"),
])
def test_bad_waveforms_raise_value_error(bad, match):
    with pytest.raises(ValueError, match=match):
        log_mel_spectrogram(bad, 8000, n_fft=64, hop_length=16, n_mels=8)


@pytest.mark.parametrize("kwargs", [
    dict(sample_rate=0), dict(sample_rate=-8000), dict(sample_rate=float("nan")), dict(sample_rate=True),
    dict(n_fft=0), dict(n_fft=-4), dict(n_fft=64.0), dict(n_fft=True), dict(hop_length=0), dict(hop_length=False),
    dict(n_mels=0), dict(n_mels=True), dict(n_fft=3, hop_length=None),
])
def test_bad_sizes_raise_value_error(kwargs):
    args = dict(sample_rate=8000, n_fft=64, hop_length=16, n_mels=8) | kwargs
    sr = args.pop("sample_rate")
    with pytest.raises(ValueError):
        log_mel_spectrogram(np.ones(100), sr, **args)


def test_load_spoken_digits_returns_the_whole_data_set():
    d = utils.load_spoken_digits()
    assert len(d) == 3000 and d.sample_rate == 8000
    assert np.bincount(d.labels).tolist() == [300] * 10
    assert sorted(set(d.speakers.tolist())) == ["george", "jackson", "lucas", "nicolas", "theo", "yweweler"]
    assert set(d.recordings.tolist()) == set(range(50))
    assert all(w.dtype == np.float32 and w.ndim == 1 and len(w) > 0 and np.abs(w).max() <= 1.0 for w in d.waveforms)
    i = d.files.index("7_jackson_32.wav")
    assert (d.labels[i], d.speakers[i], d.recordings[i]) == (7, "jackson", 32)
    assert {info["gender"] for info in d.speaker_info.values()} == {"male"}


def _copy_fsdd(tmp_path, monkeypatch):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(utils.DATA_DIR / "fsdd", data / "fsdd")
    monkeypatch.setattr("utils.data.DATA_DIR", data)
    return data / "fsdd"


def test_missing_recordings_name_the_file(tmp_path, monkeypatch):
    fsdd = _copy_fsdd(tmp_path, monkeypatch)
    (fsdd / "theo.flac").unlink()
    with pytest.raises(FileNotFoundError, match="theo.flac"):
        utils.load_spoken_digits()


def test_corrupt_recordings_name_the_file(tmp_path, monkeypatch):
    fsdd = _copy_fsdd(tmp_path, monkeypatch)
    raw = bytearray((fsdd / "lucas.flac").read_bytes())
    (fsdd / "lucas.flac").write_bytes(bytes(raw[:100]) + bytes(len(raw) - 100))  # header kept, audio zeroed
    with pytest.raises(ValueError, match="lucas.flac"):
        utils.load_spoken_digits()
    (fsdd / "lucas.flac").write_bytes(b"not a flac file")
    with pytest.raises(ValueError, match="lucas.flac"):
        utils.load_spoken_digits()
