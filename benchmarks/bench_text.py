"""Text classifier (chapter 11): inference sentences/s and latency p50/p95 at batch 1 and 32.

The classifier is ``utils.train_text_classifier(..., method="frozen")`` with its defaults on the
training split of ``data/intents.csv``: all-MiniLM-L6-v2 (tokenizer, 6-layer encoder, mean pooling,
L2 normalisation) and a linear head. Its inference cost is the encoder's forward pass, which a fully
fine-tuned or a merged-LoRA classifier shares. ``embed_texts`` caches embeddings per text, so the
cache is emptied before every timed call: each call tokenises and encodes from scratch.

Latency is the wall time of one ``predict`` call (texts in, labels out), on the test split's
sentences: ``BATCH1_CALLS`` calls with one sentence, ``BATCH32_CALLS`` calls with 32 sentences
(consecutive test sentences, wrapping around), each after ``WARMUP_CALLS`` untimed calls.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import pandas as pd
import torch

import utils
import utils.text as text_module

BATCH1_CALLS = 100
BATCH32_CALLS = 30
WARMUP_CALLS = 5


def _timed_calls(classifier, batches: list[list[str]]) -> list[float]:
    for batch in batches[:WARMUP_CALLS]:
        text_module._EMBED_CACHE.clear()
        classifier.predict(batch)
    seconds = []
    for batch in batches:
        text_module._EMBED_CACHE.clear()
        start = time.perf_counter()
        classifier.predict(batch)
        seconds.append(time.perf_counter() - start)
    return seconds


def run() -> dict:
    frame = pd.read_csv(utils.data_path("intents.csv"))
    train, test = frame[frame["split"] == "train"], frame[frame["split"] == "test"]
    start = time.perf_counter()
    classifier = utils.train_text_classifier(train["text"].tolist(), train["intent"].tolist(), method="frozen")
    train_s = time.perf_counter() - start
    test_texts = test["text"].tolist()
    accuracy = float(np.mean(np.array(classifier.predict(test_texts)) == test["intent"].to_numpy()))

    results = {"train_s": train_s, "accuracy": accuracy, "n_test": len(test_texts),
               "threads": torch.get_num_threads(), "rows": []}
    for batch_size, calls in ((1, BATCH1_CALLS), (32, BATCH32_CALLS)):
        batches = [[test_texts[(i * batch_size + j) % len(test_texts)] for j in range(batch_size)]
                   for i in range(calls)]
        seconds = _timed_calls(classifier, batches)
        results["rows"].append({
            "batch": batch_size, "calls": calls,
            "p50_ms": 1000 * float(np.percentile(seconds, 50)),
            "p95_ms": 1000 * float(np.percentile(seconds, 95)),
            "sentences_per_s": batch_size * calls / sum(seconds),
        })
    return results


def markdown(r: dict) -> str:
    lines = [
        "The frozen-encoder classifier of chapter 11 (all-MiniLM-L6-v2 + linear head, trained with defaults on the "
        f"390 training sentences of `data/intents.csv` in {r['train_s']:.1f} s including model loading; test accuracy "
        f"{r['accuracy']:.3f} on {r['n_test']} sentences), float32 on the CPU, {r['threads']} torch threads. "
        "Each `predict` call tokenises and encodes from scratch (embedding cache emptied before every call); "
        f"{WARMUP_CALLS} untimed warm-up calls per batch size. Full fine-tuning and merged LoRA run the same "
        "encoder, so their inference cost is the same.",
        "",
        "| batch | calls | latency p50 (ms) | latency p95 (ms) | sentences/s |",
        "|---:|---:|---:|---:|---:|",
    ]
    for row in r["rows"]:
        lines.append(f"| {row['batch']} | {row['calls']} | {row['p50_ms']:.1f} | {row['p95_ms']:.1f} | "
                     f"{row['sentences_per_s']:,.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(run()))
