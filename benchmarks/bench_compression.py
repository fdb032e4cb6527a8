"""Compression, serving and KV cache (chapter 15): a Pareto table, HTTP load figures, KV-cache speed-up.

The model is chapter 15's teacher: ``utils.train_text_classifier(..., method="frozen")`` on the training
split of ``data/intents.csv`` (all-MiniLM-L6-v2, mean pooling, L2 normalisation, linear head). Variants:
fp32 PyTorch; magnitude pruning of the encoder's Linear weights to ``SPARSITY`` (stored densely); the first
``KEEP_LAYERS`` encoder layers with the head refitted (logistic regression); the ONNX export
(TorchScript exporter) run by ONNX Runtime in fp32 and after ONNX Runtime's dynamic int8 quantization
(per-channel). (The chapter also distils a 2-layer student; it is left out here to keep the section short.)
Every variant: the same 170 test messages, tokenized outside the timer, ``THREADS`` thread(s) for torch and
ONNX Runtime, ``BATCH1_CALLS`` batch-1 calls (p50/p95) and ``BATCH32_CALLS`` batch-32 calls after
``WARMUP_CALLS`` untimed ones. A variant is dominated when another one is no worse on size, median latency
(95 % bootstrap interval) and accuracy (95 % Wilson interval) and separably better on at least one.

Serving: the fastest non-dominated variant within ``MAX_LOSS_POINTS`` of the teacher's accuracy, behind
FastAPI + uvicorn on 127.0.0.1 (``utils.serving.serve``, a thread of this process), ``REQUESTS`` single-message
POSTs per concurrency level from httpx clients in threads of the same process.

KV cache: an untrained TinyGPT (4 layers, 4 heads, width 128, context 512, vocabulary 96), greedy decoding
from an 8-token prompt, best of ``KV_RUNS`` runs per length, with and without the cache.
"""


import copy
import io
import logging
import math
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.utils.prune as prune
from torch import nn
from torch.nn import functional as F

import utils
from utils.models import GPTConfig, TinyGPT

THREADS = 1
SPARSITY = 0.9
KEEP_LAYERS = 2
BATCH = 32
BATCH1_CALLS = 100
BATCH32_CALLS = 10
WARMUP_CALLS = 5
MAX_LOSS_POINTS = 3.0
CLIENTS = (1, 4, 16)
REQUESTS = 200
KV_TOKENS = (50, 200, 500)
KV_RUNS = 3


class _Classifier(nn.Module):
    def __init__(self, encoder: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.encoder, self.head = encoder, head

    def features(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        w = mask.unsqueeze(-1).to(hidden.dtype)
        return F.normalize((hidden * w).sum(1) / w.sum(1).clamp(min=1e-9), p=2, dim=1)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(ids, mask))


def _wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    p = k / n
    c = (p + z * z / (2 * n)) / (1 + z * z / n)
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return c - h, c + h


def _timed(run, inputs, calls: int) -> np.ndarray:
    for i in range(WARMUP_CALLS):
        run(*inputs[i % len(inputs)])
    out = []
    for i in range(calls):
        start = time.perf_counter()
        run(*inputs[i % len(inputs)])
        out.append(time.perf_counter() - start)
    return np.array(out)


def _state_bytes(model: nn.Module) -> int:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def run_models() -> dict:
    """The Pareto table and the serving table."""
    import httpx
    import onnxruntime as ort
    from fastapi import FastAPI
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from pydantic import BaseModel, Field
    from sklearn.linear_model import LogisticRegression

    from utils.serving import serve

    torch.set_num_threads(THREADS)
    utils.set_seed(0)
    intents = pd.read_csv(utils.data_path("intents.csv"))
    train = intents[intents.split == "train"].reset_index(drop=True)
    test = intents[intents.split == "test"].reset_index(drop=True)
    clf = utils.train_text_classifier(train.text.tolist(), train.intent.tolist(), method="frozen")
    labels = clf.labels
    y_train = np.array([labels.index(c) for c in train.intent])
    y_test = np.array([labels.index(c) for c in test.intent])
    tokenizer, _ = utils.load_pretrained_encoder()

    def encode(texts):
        b = tokenizer(list(texts), padding=True, truncation=True, max_length=64, return_tensors="np")
        return b["input_ids"].astype(np.int64), b["attention_mask"].astype(np.int64)

    singles = [encode([t]) for t in test.text]
    batches = [encode(test.text[i:i + BATCH]) for i in range(0, len(test), BATCH)]
    full = [b for b in batches if len(b[0]) == BATCH]

    def torch_run(model):
        def run(ids, mask):
            with torch.inference_mode():
                return model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
        return run

    encoder = copy.deepcopy(clf.model.body.encoder)
    encoder.pooler = None
    teacher = _Classifier(encoder, copy.deepcopy(clf.model.head)).eval()
    pruned = copy.deepcopy(teacher)
    linears = [(m, "weight") for m in pruned.encoder.modules() if isinstance(m, nn.Linear)]
    prune.global_unstructured(linears, pruning_method=prune.L1Unstructured, amount=SPARSITY)
    for module, name in linears:
        prune.remove(module, name)
    short = copy.deepcopy(teacher)
    short.encoder.encoder.layer = short.encoder.encoder.layer[:KEEP_LAYERS]
    with torch.inference_mode():
        X = np.concatenate([short.features(*map(torch.from_numpy, encode(train.text[s:s + 64]))).numpy()
                            for s in range(0, len(train), 64)])
    probe = LogisticRegression(C=20.0, max_iter=2000).fit(X, y_train)
    with torch.no_grad():
        short.head.weight.copy_(torch.from_numpy(probe.coef_).float())
        short.head.bias.copy_(torch.from_numpy(probe.intercept_).float())

    work = Path(tempfile.mkdtemp(prefix="bench_compression_"))
    fp32_path, int8_path = work / "fp32.onnx", work / "int8.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(teacher, tuple(map(torch.from_numpy, batches[0])), fp32_path, dynamo=False, opset_version=17,
                          input_names=["input_ids", "attention_mask"], output_names=["logits"],
                          dynamic_axes={"input_ids": {0: "b", 1: "t"}, "attention_mask": {0: "b", 1: "t"}, "logits": {0: "b"}})
    logging.getLogger().setLevel(logging.ERROR)
    quantize_dynamic(fp32_path, int8_path, weight_type=QuantType.QInt8, per_channel=True)

    def ort_run(path):
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = THREADS
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return lambda ids, mask: session.run(["logits"], {"input_ids": ids, "attention_mask": mask})[0]

    variants = {
        "fp32 PyTorch": (torch_run(teacher), _state_bytes(teacher)),
        f"magnitude-pruned {SPARSITY:.0%} (dense)": (torch_run(pruned), _state_bytes(pruned)),
        f"first {KEEP_LAYERS} of 6 layers, head refitted": (torch_run(short), _state_bytes(short)),
        "fp32 ONNX Runtime": (ort_run(fp32_path), fp32_path.stat().st_size),
        "int8 ONNX Runtime": (ort_run(int8_path), int8_path.stat().st_size),
    }
    rng = np.random.default_rng(0)
    rows = []
    for name, (run, size) in variants.items():
        logits = np.concatenate([run(*b) for b in batches])
        correct = int((logits.argmax(1) == y_test).sum())
        lat = 1000 * _timed(run, singles, BATCH1_CALLS)
        boot = np.median(rng.choice(lat, size=(1000, len(lat))), axis=1)
        lo, hi = np.percentile(boot, [2.5, 97.5])
        acc_lo, acc_hi = _wilson(correct, len(y_test))
        rows.append({"variant": name, "size_MB": size / 1e6, "p50_ms": float(np.median(lat)), "p50_lo": lo, "p50_hi": hi,
                     "p95_ms": float(np.percentile(lat, 95)),
                     "throughput_per_s": BATCH / float(np.median(_timed(run, full, BATCH32_CALLS))),
                     "accuracy": correct / len(y_test), "acc_lo": acc_lo, "acc_hi": acc_hi})
    table = pd.DataFrame(rows).set_index("variant")

    def sign(a, b, lo, hi):
        return 1 if a[hi] < b[lo] else (-1 if a[lo] > b[hi] else 0)

    def better(a, b):
        size = 0 if abs(a.size_MB - b.size_MB) <= 0.01 * max(a.size_MB, b.size_MB) else (1 if a.size_MB < b.size_MB else -1)
        return size, sign(a, b, "p50_lo", "p50_hi"), -sign(a, b, "acc_lo", "acc_hi")

    table["dominated_by"] = [", ".join(o for o in table.index if o != n and min(better(table.loc[o], table.loc[n])) >= 0
                                       and max(better(table.loc[o], table.loc[n])) > 0) or "—" for n in table.index]
    ok = table[(table.dominated_by == "—") & (100 * (table.accuracy.iloc[0] - table.accuracy) <= MAX_LOSS_POINTS)]
    best = ok.p50_ms.idxmin()
    serve_run = variants[best][0]

    class Query(BaseModel):
        texts: list[str] = Field(min_length=1, max_length=32)

    app = FastAPI()

    @app.post("/predict")
    def predict(query: Query):
        return {"intents": [labels[i] for i in serve_run(*encode(query.texts)).argmax(1)]}

    serving = []
    texts = test.text.tolist()
    with serve(app) as url:
        bad_status = httpx.post(f"{url}/predict", json={"texts": "not a list"}).status_code
        for clients in CLIENTS:
            with httpx.Client(base_url=url, timeout=30, limits=httpx.Limits(max_connections=clients)) as client:
                def one(i):
                    start = time.perf_counter()
                    client.post("/predict", json={"texts": [texts[i % len(texts)]]}).raise_for_status()
                    return time.perf_counter() - start
                for i in range(clients):
                    one(i)
                start = time.perf_counter()
                with ThreadPoolExecutor(clients) as pool:
                    lat = 1000 * np.array(list(pool.map(one, range(REQUESTS))))
                wall = time.perf_counter() - start
            serving.append({"clients": clients, "p50_ms": float(np.median(lat)), "p95_ms": float(np.percentile(lat, 95)),
                            "requests_per_s": REQUESTS / wall})
    flags = set()
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    isa = next((f for f in ("amx_int8", "avx512_vnni", "avx_vnni", "avx2") if f in flags), "no AVX2")
    return {"table": table, "best": best, "serving": serving, "bad_status": bad_status, "isa": isa}


def run_kv() -> list[dict]:
    torch.set_num_threads(THREADS)
    torch.manual_seed(0)
    gpt = TinyGPT(GPTConfig(vocab_size=96, n_layer=4, n_head=4, d_model=128, block_size=512)).eval()
    prompt = torch.randint(0, 96, (1, 8), generator=torch.Generator().manual_seed(0))
    gpt.generate(prompt, 10, top_k=1)
    gpt.generate(prompt, 10, top_k=1, use_cache=False)
    rows = []
    for n in KV_TOKENS:
        best = {}
        for use_cache in (True, False):
            times = []
            for _ in range(KV_RUNS if use_cache or n < 500 else 1):
                start = time.perf_counter()
                out = gpt.generate(prompt, n, top_k=1, use_cache=use_cache)
                times.append(time.perf_counter() - start)
            best[use_cache] = (min(times), out)
        rows.append({"tokens": n, "cached_s": best[True][0], "uncached_s": best[False][0],
                     "identical": bool(torch.equal(best[True][1], best[False][1])),
                     "cache_KB": gpt.kv_cache_bytes(8 + n) / 1024})
    return rows


def run() -> dict:
    return {"models": run_models(), "kv": run_kv()}


def markdown(r: dict) -> str:
    m, table = r["models"], r["models"]["table"]
    lines = [f"Chapter 15's intent classifier and its compressed variants ({THREADS} thread, 170 test messages; "
             f"{BATCH1_CALLS} batch-1 calls and {BATCH32_CALLS} batch-{BATCH} calls per variant after {WARMUP_CALLS} "
             "warm-up calls; tokenization outside the timer). Intervals: 95 % bootstrap of the median latency, "
             "95 % Wilson for accuracy; 'dominated' only where they separate.", "",
             "| variant | size (MB) | p50 ms [95 % interval] | p95 ms | batch-32 messages/s | accuracy | dominated by |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for name, row in table.iterrows():
        lines.append(f"| {name} | {row.size_MB:.1f} | {row.p50_ms:.2f} [{row.p50_lo:.2f}–{row.p50_hi:.2f}] | {row.p95_ms:.2f} "
                     f"| {row.throughput_per_s:.0f} | {row.accuracy:.3f} | {row.dominated_by} |")
    i8, f32 = table.loc["int8 ONNX Runtime"], table.loc["fp32 ONNX Runtime"]
    sep = "faster (intervals separate)" if i8.p50_hi < f32.p50_lo else (
        "slower (intervals separate)" if i8.p50_lo > f32.p50_hi else "not separably different")
    lines += ["", f"int8 vs fp32 (ONNX Runtime) on this CPU, best int8 instruction set **{m['isa']}**: p50 "
              f"{i8.p50_ms:.2f} vs {f32.p50_ms:.2f} ms ({f32.p50_ms / i8.p50_ms:.2f}×, {sep}); batch {BATCH}: "
              f"{i8.throughput_per_s:.0f} vs {f32.throughput_per_s:.0f} messages/s.", "",
              f"Served: **{m['best']}** (FastAPI + uvicorn on 127.0.0.1, {REQUESTS} single-message requests per level; "
              f"a malformed body got HTTP {m['bad_status']}).", "",
              "| concurrent clients | p50 ms | p95 ms | requests/s |", "|---:|---:|---:|---:|"]
    lines += [f"| {s['clients']} | {s['p50_ms']:.1f} | {s['p95_ms']:.1f} | {s['requests_per_s']:.0f} |" for s in m["serving"]]
    lines += ["", f"TinyGPT generation with and without the KV cache (untrained, 4 layers, width 128, context 512, batch 1, "
              f"greedy, best of {KV_RUNS} runs; uncached 500 tokens: one run):", "",
              "| new tokens | no cache (s) | KV cache (s) | speed-up | identical tokens | cache memory (KB) |",
              "|---:|---:|---:|---:|---|---:|"]
    lines += [f"| {k['tokens']} | {k['uncached_s']:.2f} | {k['cached_s']:.2f} | {k['uncached_s'] / k['cached_s']:.1f}× | "
              f"{'yes' if k['identical'] else 'NO'} | {k['cache_KB']:.0f} |" for k in r["kv"]]
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(run()))
