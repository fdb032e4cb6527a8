"""Shared test set-up: quiet TensorFlow, a non-interactive matplotlib backend, repo paths."""

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = ROOT / "chapters"


@pytest.fixture(scope="session")
def tf():
    """TensorFlow, configured the course's way (imported only by tests that ask for it)."""
    import utils

    return utils.configure_tensorflow()
