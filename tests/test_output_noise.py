"""Executed chapters show results, not noise.

Reads the executed copies in build/executed/ that tests/test_notebooks.py writes (it runs first:
pytest collects test files alphabetically) and fails on output lines a learner should never have to
read past: TensorFlow / oneDNN / XLA start-up logging, warnings that print a local file path,
NumPy 2 scalar reprs such as ``np.str_('a')`` or ``np.float64(0.5)``, and counts printed as floats
(``12.0 errors``, ``n_params = 60.0``). Skips when no executed chapter is there (``make test-fast``).
"""

import re

import nbformat
import pytest

from conftest import CHAPTERS, ROOT

EXECUTED = ROOT / "build" / "executed"

COUNT_NOUNS = (r"(?:parameters|params|weights|errors|mistakes|samples|examples|tokens|images|digits|rows|"
               r"layers|heads|neurons|units|misclassified|documents|sentences|utterances|classes|batches)")
NOISE = {
    "TensorFlow/oneDNN start-up line": re.compile(
        r"oneDNN custom operations|TF_ENABLE_ONEDNN_OPTS|This TensorFlow binary is optimized|"
        r"Unable to register cu(?:DNN|FFT|BLAS) factory|absl::InitializeLog|Could not find cuda drivers|"
        r"cuda_(?:dnn|blas|fft|driver)\.cc|^[IWE]\d{4} \d\d:\d\d:\d\d\.\d+\s|^\S*tensorflow/(?:core|compiler)/|"
        r"external/local_xla/"),
    "warning with a local file path": re.compile(r"(?:/|\\)[\w.\-]+\.py:\d+: \w*Warning"),
    "NumPy scalar repr": re.compile(
        r"\bnp\.(?:str_|bytes_|bool_?|True_|False_|u?int(?:8|16|32|64)|float(?:16|32|64)|complex128)\("),
    "count printed as a float": re.compile(
        rf"\b\d+\.0\s+{COUNT_NOUNS}\b|\b(?:n|num)_\w+\s*[=:]\s*\d+\.0(?![\d.])"),
}


def _output_texts(output):
    """The text a learner sees for one output: streams, plain-text and Markdown results."""
    if output.get("output_type") == "stream":
        yield output.get("text", "")
    data = output.get("data", {})
    for mime in ("text/plain", "text/markdown"):
        if mime in data and not (mime == "text/plain" and "text/html" in data):
            text = data[mime]
            yield "".join(text) if isinstance(text, list) else text


def find_noise(path):
    """List of (cell index, kind, line) for every noisy output line of one executed notebook."""
    found = []
    for index, cell in enumerate(nbformat.read(path, as_version=4).cells):
        if cell.cell_type != "code":
            continue
        for output in cell.get("outputs", []):
            for text in _output_texts(output):
                for line in text.splitlines():
                    for kind, pattern in NOISE.items():
                        if pattern.search(line):
                            found.append((index, kind, line.strip()[:160]))
    return found


def test_noise_patterns_catch_known_noise_and_spare_ordinary_results():
    noisy = ["I0000 00:00:1733000000.123456  1234 cpu_feature_guard.cc:210] This TensorFlow binary is optimized",
             "oneDNN custom operations are on. You may see slightly different numerical results",
             "/home/me/.venv/lib/python3.11/site-packages/keras/src/layers/core/dense.py:93: UserWarning: Do not pass",
             "labels: [np.str_('refund'), np.str_('cancel')]", "best: np.float64(0.953)",
             "test set: 4.0 errors in 86", "n_params = 60.0"]
    clean = ["relu(3.0) = 3.0 | F.relu: 3.0", "lr = 1.0, loss 2.0 after 7.0 epochs (mean of 5 seeds)",
             "test set: 4 errors in 86", "accuracy 0.953 (82/86)", "w = 8.0, b = -4.0", "n_params = 60",
             "n = 1024: max absolute error 7.63e-05"]
    for line in noisy:
        assert any(p.search(line) for p in NOISE.values()), f"not caught: {line!r}"
    for line in clean:
        assert not any(p.search(line) for p in NOISE.values()), f"false positive: {line!r}"


def test_executed_chapters_print_no_start_up_lines_warnings_or_scalar_reprs():
    chapters = {p.name for p in CHAPTERS.glob("[0-9][0-9]_*.ipynb")}
    executed = sorted(p for p in EXECUTED.glob("[0-9][0-9]_*.ipynb") if p.name in chapters)
    if not executed:
        pytest.skip(f"no executed chapters in {EXECUTED}: tests/test_notebooks.py writes them (make test)")
    report = [f"{path.stem[:2]} cell {index} [{kind}]: {line}"
              for path in executed for index, kind, line in find_noise(path)]
    assert not report, "noisy outputs in executed chapters:\n" + "\n".join(report)
