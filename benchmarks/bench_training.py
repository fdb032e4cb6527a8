"""Training-loop overhead: a plain PyTorch loop vs ``utils.fit`` vs Keras ``model.fit``.

Same data (digits train split, standardised), same architecture, batch size and number of
epochs for every contender. Each contender builds a fresh model, trains one untimed warm-up
epoch, then a timed run of ``EPOCHS`` epochs; throughput = training samples processed / s.
Contenders are interleaved (round-robin, order rotated every round) for ``ROUNDS`` rounds
so that slow drifts of the machine hit all of them alike; the median and min–max are reported.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import torch
from torch import nn

import utils

BATCH_SIZE = 64
EPOCHS = 10
ROUNDS = 5


# ---------------------------------------------------------------- models (one definition per framework)
def torch_model(kind: str) -> nn.Module:
    if kind == "mlp":
        return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    return nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)),
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 10),
    )


def keras_model(kind: str, **compile_kwargs):
    tf = utils.configure_tensorflow()
    keras = tf.keras
    if kind == "mlp":
        layers = [keras.Input((64,)), keras.layers.Dense(256, activation="relu"),
                  keras.layers.Dense(256, activation="relu"), keras.layers.Dense(10)]
    else:
        layers = [keras.Input((64,)), keras.layers.Reshape((8, 8, 1)),
                  keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
                  keras.layers.Conv2D(32, 3, padding="same", activation="relu"), keras.layers.MaxPooling2D(2),
                  keras.layers.Flatten(), keras.layers.Dense(10)]
    model = keras.Sequential(layers)
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), **compile_kwargs)
    return model


# ---------------------------------------------------------------- contenders: each returns seconds for EPOCHS epochs
def plain_loop(kind: str, X: np.ndarray, y: np.ndarray, device: str = "cpu") -> float:
    model = torch_model(kind).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    loader = utils.to_torch_loader(X, y, batch_size=BATCH_SIZE, shuffle=True)

    def epoch() -> float:
        model.train()
        total = 0.0
        for xb, yb in loader:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            loss = loss_fn(model(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(yb)  # a hand-written loop records its loss too
        return total / len(X)

    epoch()  # warm-up
    start = time.perf_counter()
    for _ in range(EPOCHS):
        epoch()
    return time.perf_counter() - start


def utils_fit(kind: str, X: np.ndarray, y: np.ndarray, device: str = "cpu", amp: str | None = None) -> float:
    model = torch_model(kind)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = utils.to_torch_loader(X, y, batch_size=BATCH_SIZE, shuffle=True)
    kwargs = dict(loss_fn=nn.CrossEntropyLoss(), optimizer=optimizer, device=device, amp=amp, progress=False)
    utils.fit(model, loader, num_epochs=1, **kwargs)  # warm-up
    start = time.perf_counter()
    utils.fit(model, loader, num_epochs=EPOCHS, **kwargs)
    return time.perf_counter() - start


def gpu_contenders() -> dict[str, Callable]:
    """Section 5 (CUDA only): the PyTorch contenders on the GPU, and utils.fit with mixed precision."""
    return {
        "plain PyTorch loop": lambda kind, X, y: plain_loop(kind, X, y, device="cuda"),
        "utils.fit": lambda kind, X, y: utils_fit(kind, X, y, device="cuda"),
        "utils.fit, amp='auto'": lambda kind, X, y: utils_fit(kind, X, y, device="cuda", amp="auto"),
    }


def keras_fit(**compile_kwargs) -> Callable[[str, np.ndarray, np.ndarray], float]:
    def run(kind: str, X: np.ndarray, y: np.ndarray) -> float:
        model = keras_model(kind, **compile_kwargs)
        model.fit(X, y, batch_size=BATCH_SIZE, epochs=1, verbose=0, shuffle=True)  # warm-up (traces)
        start = time.perf_counter()
        model.fit(X, y, batch_size=BATCH_SIZE, epochs=EPOCHS, verbose=0, shuffle=True)
        return time.perf_counter() - start

    return run


CONTENDERS: dict[str, Callable] = {
    "plain PyTorch loop": plain_loop,
    "utils.fit": utils_fit,
    "Keras fit (defaults)": keras_fit(),
    "Keras fit, jit_compile=False": keras_fit(jit_compile=False),
    "Keras fit, steps_per_execution=20": keras_fit(steps_per_execution=20),
}


def measure(kind: str, contenders: dict[str, Callable] | None = None, rounds: int = ROUNDS) -> dict[str, list[float]]:
    contenders = CONTENDERS if contenders is None else contenders
    split = utils.load_digits_split(seed=0)
    X, y = split.X_train, split.y_train
    names = list(contenders)
    samples_per_s: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(rounds):
        order = names[round_ % len(names):] + names[: round_ % len(names)]
        for name in order:
            utils.set_seed(round_)
            seconds = contenders[name](kind, X, y)
            samples_per_s[name].append(len(X) * EPOCHS / seconds)
        print(f"  {kind} round {round_ + 1}/{rounds} done", flush=True)
    return samples_per_s


PAIR_ROUNDS = 11
PAIR_EPOCHS = 20  # longer than EPOCHS: each run lasts 1-3 s, which halves the drift within a pair


def paired_overhead(kind: str, rounds: int = PAIR_ROUNDS) -> list[float]:
    """``utils.fit``/plain throughput ratios from back-to-back pairs (order alternating ABBA).

    Runs of half a second drift by ±10-15 % on a shared 2-core machine, more than the overhead
    being measured; a ratio taken within each pair cancels most of that drift.
    """
    global EPOCHS
    split = utils.load_digits_split(seed=0)
    X, y = split.X_train, split.y_train
    ratios = []
    saved, EPOCHS = EPOCHS, PAIR_EPOCHS
    try:
        ratios = _pairs(kind, X, y, rounds)
    finally:
        EPOCHS = saved
    print(f"  {kind}: {rounds} paired plain/utils.fit runs done", flush=True)
    return ratios


def _pairs(kind: str, X: np.ndarray, y: np.ndarray, rounds: int) -> list[float]:
    ratios = []
    for round_ in range(rounds):
        utils.set_seed(round_)
        if round_ % 2 == 0:
            plain, fit_ = plain_loop(kind, X, y), utils_fit(kind, X, y)
        else:
            fit_, plain = utils_fit(kind, X, y), plain_loop(kind, X, y)
        ratios.append(plain / fit_)  # seconds plain / seconds fit = throughput fit / throughput plain
    return ratios


def markdown(results: dict[str, dict[str, list[float]]], device: str = "CPU only") -> str:
    threads = f"PyTorch threads {torch.get_num_threads()}"
    tf = utils.configure_tensorflow()
    tf_threads = (f"TensorFlow intra-op threads {tf.config.threading.get_intra_op_parallelism_threads() or 'default (all cores)'}")
    rounds = max(len(v) for samples in results.values() for v in samples.values())
    lines = [
        f"Digits training split ({len(utils.load_digits_split().X_train)} samples, 64 features, standardised), "
        f"batch size {BATCH_SIZE}, Adam(lr=1e-3), {EPOCHS} timed epochs after one untimed warm-up epoch, "
        f"fresh model per run; {rounds} interleaved rounds (order rotated each round); {device}; {threads}, {tf_threads}.",
        "The plain loop does what `utils.fit` does per step: forward, loss, zero_grad, backward, step, and "
        "`loss.item()` to record the epoch loss. MLP: 64-256-256-10 (ReLU); CNN: two 3×3 convolutions "
        "(16, 32 channels), 2×2 max-pool, linear head.",
        "",
    ]
    for kind, samples in results.items():
        plain = statistics.median(samples["plain PyTorch loop"])
        lines += [f"**{kind.upper()}**", "",
                  "| contender | median samples/s | min–max | ratio to plain loop |", "|---|---:|---:|---:|"]
        for name, values in samples.items():
            med = statistics.median(values)
            lines.append(f"| {name} | {med:,.0f} | {min(values):,.0f}–{max(values):,.0f} | {med / plain:.2f}× |")
        lines.append("")
    return "\n".join(lines)


def run_all() -> dict[str, dict[str, list[float]]]:
    return {kind: measure(kind) for kind in ("mlp", "cnn")}


def run_pairs() -> dict[str, list[float]]:
    return {kind: paired_overhead(kind) for kind in ("mlp", "cnn")}


if __name__ == "__main__":
    print(markdown(run_all()))
