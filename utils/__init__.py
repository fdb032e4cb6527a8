"""Large Models Workbook — the small toolbox every chapter imports.

Importing ``utils`` never imports TensorFlow; the TensorFlow helpers load it on first use.

Modules: ``device`` (devices, seeds, TF set-up, environment report), ``params`` (parameter
counting), ``data`` (offline datasets and loaders), ``training`` / ``training_keras``
(``fit``, ``evaluate``, ``fit_keras``), ``history``, ``metrics`` (accuracy, precision, recall, F1, confusion matrix),
``plots``, ``widgets``, ``errata``, ``distributed`` (DDP and FSDP under torchrun);
``fit`` is made of ``forward`` (one batch, checked), ``precision``, ``evaluation`` (``evaluate``, ``predict``),
``early_stopping`` and ``checkpoint``; ``models`` (``TinyGPT``, chapter 10),
``text`` (training text classifiers; chapter 11 — imports ``transformers`` on first use) with ``encoders``
(the pretrained MiniLM, ``embed_texts``), ``lora`` (LoRA adapters) and ``classifier`` (``TextClassifier``),
``cost`` (FLOPs, compute-optimal sizes, training memory, GPU-hours, serving cost; chapters 08, 16, 17), ``market`` (options,
demands, constrained ranking, crossover volumes; chapter 17),
``retrieval`` (``Retriever``: BM25, embedding and hybrid search; chapter 12), ``serving`` (``serve``: a
local uvicorn server that always stops, ``DynamicBatcher``; with ``load_testing``, the open/closed-loop
``load_test``; chapter 15 — import it as ``utils.serving``), ``audit``
(the headings of the five documents and the audit table; chapter 19), ``alignment`` (response
log-probabilities, SFT loss on response tokens, the DPO loss; chapter 20), ``audio`` (mel filterbank and
log-mel spectrograms in NumPy; chapter 06).
"""

from .data import (
    DATA_DIR,
    Split,
    data_path,
    load_breast_cancer_split,
    load_diabetes_split,
    load_digits_split,
    load_spoken_digits,
    read_data_csv,
    SpokenDigits,
    to_tf_dataset,
    to_torch_loader,
)
from .device import configure_tensorflow, environment_report, get_device, set_seed
from .errata import load_errata, show_errata
from . import alignment, audio, cost, distributed, market, metrics
from .history import History
from .models import GPTConfig, TinyGPT
from .text import TextClassifier, load_pretrained_encoder, train_text_classifier
from .params import count_parameters, transformer_param_count
from .retrieval import Retriever
from .plots import COLORS, plot_history, use_course_style
from .training import NonFiniteLossError, evaluate, fit, predict
from .training_keras import fit_keras
from .widgets import Panel, make_panel

__all__ = [
    "alignment", "audio", "COLORS", "configure_tensorflow", "cost", "count_parameters", "DATA_DIR", "data_path", "distributed",
    "environment_report", "evaluate", "fit", "fit_keras", "get_device", "GPTConfig", "History",
    "load_breast_cancer_split", "load_diabetes_split", "load_digits_split", "load_errata", "load_spoken_digits",
    "load_pretrained_encoder", "make_panel", "market", "metrics", "NonFiniteLossError", "Panel", "plot_history",
    "predict", "read_data_csv", "Retriever", "set_seed", "show_errata", "Split", "SpokenDigits", "TextClassifier", "TinyGPT", "to_tf_dataset",
    "to_torch_loader", "train_text_classifier", "transformer_param_count", "use_course_style",
]
__version__ = "0.1.0"
