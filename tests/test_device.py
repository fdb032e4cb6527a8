import os
import subprocess
import sys
import types

import numpy as np
import pytest
import torch

import utils


def test_get_device_defaults_to_an_available_device():
    device = utils.get_device()
    assert isinstance(device, torch.device)
    expected = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    assert device.type == expected


def test_get_device_cpu_is_always_available():
    assert utils.get_device("cpu") == torch.device("cpu")
    assert utils.get_device(" CPU ") == torch.device("cpu")


def test_get_device_rejects_unknown_names_listing_choices():
    with pytest.raises(ValueError, match="cuda, mps, cpu"):
        utils.get_device("tpu")
    with pytest.raises(ValueError, match="Valid choices"):
        utils.get_device("cuda:x")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_get_device_rejects_unavailable_cuda():
    with pytest.raises(ValueError, match="not available"):
        utils.get_device("cuda")


def test_get_device_rejects_non_strings():
    with pytest.raises(TypeError):
        utils.get_device(0)


def test_get_device_honours_environment_variable(monkeypatch):
    monkeypatch.setenv("WORKBOOK_DEVICE", "cpu")
    assert utils.get_device() == torch.device("cpu")
    monkeypatch.setenv("WORKBOOK_DEVICE", "quantum")
    with pytest.raises(ValueError):
        utils.get_device()


def test_set_seed_makes_numpy_and_torch_repeatable():
    utils.set_seed(123)
    a = (np.random.rand(3), torch.rand(3))
    utils.set_seed(123)
    b = (np.random.rand(3), torch.rand(3))
    assert np.array_equal(a[0], b[0]) and torch.equal(a[1], b[1])
    utils.set_seed(124)
    assert not np.array_equal(a[0], np.random.rand(3))


@pytest.mark.parametrize("bad", [-1, 2**32, 1.5, "0", True])
def test_set_seed_rejects_bad_seeds(bad):
    with pytest.raises((TypeError, ValueError)):
        utils.set_seed(bad)


@pytest.mark.tensorflow
def test_set_seed_seeds_tensorflow_when_imported(tf):
    utils.set_seed(7)
    a = tf.random.uniform((3,)).numpy()
    utils.set_seed(7)
    b = tf.random.uniform((3,)).numpy()
    assert np.array_equal(a, b)


@pytest.mark.tensorflow
def test_configure_tensorflow_is_idempotent_and_quiet(tf):
    import os

    assert utils.configure_tensorflow() is tf
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] in {"1", "2", "3"}
    assert float(tf.constant(2.0) * 3) == 6.0


def test_environment_report_without_tensorflow_returns_versions(capsys):
    report = utils.environment_report(include_tensorflow=False)
    assert report["torch"] == torch.__version__
    assert report["cpu_count"] >= 1
    assert report["torch_device"] in {"cpu", "cuda", "mps"}
    printed = capsys.readouterr().out
    assert "torch_device" in printed and torch.__version__ in printed


@pytest.mark.tensorflow
def test_environment_report_includes_tensorflow(tf):
    report = utils.environment_report(show=False)
    assert report["tensorflow"] == tf.__version__
    assert isinstance(report["tf_gpus"], list)


def test_import_utils_does_not_import_tensorflow():
    code = "import utils, sys; assert 'tensorflow' not in sys.modules, 'utils imported tensorflow'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _import_tensorflow_in_subprocess(code: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    environment.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment,
                          timeout=300)


@pytest.mark.tensorflow
def test_configure_tensorflow_prints_nothing_with_onednn_forced_on():
    """TensorFlow prints 'oneDNN custom operations are on' while it is imported on CPUs where oneDNN is on by
    default (AVX-512, AMX, Zen 4/5). Forcing oneDNN on makes the check the same on every CPU; oneDNN stays on."""
    code = ("import os, utils; tf = utils.configure_tensorflow(); import keras; "
            "print(os.environ.get('TF_ENABLE_ONEDNN_OPTS'))")
    result = _import_tensorflow_in_subprocess(code, TF_ENABLE_ONEDNN_OPTS="1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1"
    assert result.stderr.strip() == "", f"TensorFlow start-up printed:\n{result.stderr}"


def test_tensorflow_import_filter_keeps_lines_it_does_not_know(monkeypatch, capfd):
    """Only the known start-up lines are dropped: anything else (a CUDA library that failed to load) is shown."""
    from utils import device

    fake = types.ModuleType("tensorflow")
    monkeypatch.delitem(sys.modules, "tensorflow", raising=False)

    def fake_import(name, *args, **kwargs):
        if name == "tensorflow":
            os.write(2, b"I0000 port.cc:153] oneDNN custom operations are on. You may see ...\n"
                        b"W0000 Could not load dynamic library 'libcudnn.so.9'\n")
            return fake
        return real_import(name, *args, **kwargs)

    real_import = __builtins__["__import__"] if isinstance(__builtins__, dict) else __builtins__.__import__
    monkeypatch.setattr("builtins.__import__", fake_import)
    assert device._import_tensorflow(quiet=True) is fake
    err = capfd.readouterr().err
    assert "libcudnn.so.9" in err
    assert "oneDNN" not in err
