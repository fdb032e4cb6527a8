"""Compression, serving and KV cache (chapter 15): a Pareto table, HTTP load figures, KV-cache speed-up.

The model is chapter 15's teacher: ``utils.train_text_classifier(..., method="frozen")`` on the training
split of ``data/intents.csv`` (all-MiniLM-L6-v2, mean pooling, L2 normalisation, linear head). Variants:
fp32 PyTorch; magnitude pruning of the encoder's Linear weights to ``SPARSITY`` (stored densely); the first
``KEEP_LAYERS`` encoder layers with the head refitted (logistic regression); the ONNX export
(TorchScript exporter) run by ONNX Runtime in fp32 and after ONNX Runtime's dynamic int8 quantization
(per-channel). (The chapter also distils a 3-layer student; it is left out here to keep the section short.)
Every variant: the same 170 test messages, tokenized outside the timer, ``THREADS`` thread(s) for torch and
ONNX Runtime. Timing is interleaved so that drift of a shared machine falls on every variant alike:
``ROUNDS`` rounds, each visiting every variant once (the order rotates by one per round), each visit one
untimed call, ``CALLS_PER_ROUND`` timed batch-1 calls and one batch-32 call. p50 is the median of the
per-round medians (with their interquartile range across rounds), p95 is over all batch-1 calls, throughput
the median over rounds of the batch-32 calls. Two variants are compared by the per-round ratio of their
medians: "faster" only when a two-sided sign test over the rounds (is the ratio below 1 in more rounds than
chance allows?) gives p <= ``ALPHA``, otherwise within the noise; chapter 15 simulates this rule's false-positive
rate for equal speeds (at most ALPHA, where the older "interquartile range below 1" rule was wrong about one time
in five). Accuracy differences on the same messages use the exact McNemar test (paired), p <= ``ALPHA``.
A variant is dominated when another one is no worse on size, latency and accuracy (those tests) and
separably better on at least one.

Serving: the fastest non-dominated variant within ``MAX_LOSS_POINTS`` of the teacher's accuracy, behind
FastAPI + uvicorn on 127.0.0.1 (``utils.serving.serve``, a thread of this process), ``REQUESTS`` single-message
POSTs per concurrency level from httpx clients in threads of the same process, to two servers running side by
side: one model call per request, and dynamic batching (``utils.serving.DynamicBatcher``: up to ``MAX_BATCH``
messages, waiting at most ``MAX_WAIT_MS`` ms). ``SERVE_ROUNDS`` rounds alternate the two servers at every level;
the table gives medians over rounds and the range of requests/s. The same pair of servers is run for the fp32
PyTorch teacher (slow model call, large gain from batch 32) at the highest concurrency.

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
ROUNDS = 9
CALLS_PER_ROUND = 10
MAX_LOSS_POINTS = 3.0
CLIENTS = (1, 4, 16)
REQUESTS = 200
MAX_BATCH = 32
MAX_WAIT_MS = 5.0
SERVE_ROUNDS = 3
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


def _interleaved(runs: dict, singles: list, full: list) -> tuple[dict, dict, dict]:
    """Per variant: (ROUNDS, CALLS_PER_ROUND) batch-1 ms, the per-round medians, the ROUNDS batch-32 seconds."""
    names = list(runs)
    lat = {n: [] for n in names}
    batch_s = {n: [] for n in names}
    for r in range(ROUNDS):
        for k in range(len(names)):
            name = names[(r + k) % len(names)]
            run = runs[name]
            offset = r * CALLS_PER_ROUND
            run(*singles[offset % len(singles)])  # untimed: the first call after switching variants
            times = []
            for i in range(CALLS_PER_ROUND):
                start = time.perf_counter()
                run(*singles[(offset + 1 + i) % len(singles)])
                times.append(1000 * (time.perf_counter() - start))
            lat[name].append(times)
            start = time.perf_counter()
            run(*full[r % len(full)])
            batch_s[name].append(time.perf_counter() - start)
    lat = {n: np.array(v) for n, v in lat.items()}
    return lat, {n: np.median(v, axis=1) for n, v in lat.items()}, {n: np.array(v) for n, v in batch_s.items()}


ALPHA = 0.05


def _two_sided_binomial_p(k: int, n: int) -> float:
    """Exact two-sided p-value of k successes in n fair coin flips (sign test, exact McNemar)."""
    from math import comb

    if n == 0:
        return 1.0
    tail = sum(comb(n, i) for i in range(min(k, n - k) + 1)) / 2**n
    return min(1.0, 2 * tail)


def compare(round_medians: dict, a: str, b: str) -> tuple[int, float, float, float]:
    """(-1 a faster / +1 a slower / 0 within the noise by the sign test, median, q1, q3 of the ratio a/b)."""
    ratios = round_medians[a] / round_medians[b]
    q1, med, q3 = np.percentile(ratios, [25, 50, 75])
    below, above = int((ratios < 1).sum()), int((ratios > 1).sum())
    significant = _two_sided_binomial_p(below, below + above) <= ALPHA
    return (0 if not significant else -1 if below > above else 1), float(med), float(q1), float(q3)


def mcnemar(right_a: np.ndarray, right_b: np.ndarray) -> tuple[int, float]:
    """(+1 a more accurate / -1 b more accurate / 0 no difference shown, exact McNemar p) on the same messages."""
    only_a, only_b = int((right_a & ~right_b).sum()), int((~right_a & right_b).sum())
    p = _two_sided_binomial_p(only_a, only_a + only_b)
    return (0 if p > ALPHA else 1 if only_a > only_b else -1), p


def _load_test(url: str, clients: int, texts: list) -> dict:
    import httpx

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
    return {"clients": clients, "p50_ms": float(np.median(lat)), "p95_ms": float(np.percentile(lat, 95)),
            "requests_per_s": REQUESTS / wall}


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

    from utils.serving import DynamicBatcher, serve

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
    right = {name: np.concatenate([run(*b) for b in batches]).argmax(1) == y_test
             for name, (run, _) in variants.items()}  # also the warm-up of every variant
    correct = {name: int(r.sum()) for name, r in right.items()}
    lat, round_medians, batch_s = _interleaved({n: v[0] for n, v in variants.items()}, singles, full)
    rows = []
    for name, (_, size) in variants.items():
        acc_lo, acc_hi = _wilson(correct[name], len(y_test))
        q1, q3 = np.percentile(round_medians[name], [25, 75])
        rows.append({"variant": name, "size_MB": size / 1e6, "p50_ms": float(np.median(round_medians[name])),
                     "p50_q1": q1, "p50_q3": q3, "p95_ms": float(np.percentile(lat[name], 95)),
                     "throughput_per_s": BATCH / float(np.median(batch_s[name])),
                     "accuracy": correct[name] / len(y_test), "acc_lo": acc_lo, "acc_hi": acc_hi})
    table = pd.DataFrame(rows).set_index("variant")

    def better(a, b):
        ra, rb = table.loc[a], table.loc[b]
        size = 0 if abs(ra.size_MB - rb.size_MB) <= 0.01 * max(ra.size_MB, rb.size_MB) else (1 if ra.size_MB < rb.size_MB else -1)
        return size, -compare(round_medians, a, b)[0], mcnemar(right[a], right[b])[0]

    table["dominated_by"] = [", ".join(o for o in table.index if o != n and min(better(o, n)) >= 0
                                       and max(better(o, n)) > 0) or "—" for n in table.index]
    ok = table[(table.dominated_by == "—") & (100 * (table.accuracy.iloc[0] - table.accuracy) <= MAX_LOSS_POINTS)]
    best = ok.p50_ms.idxmin()
    serve_run = variants[best][0]

    class Query(BaseModel):
        texts: list[str] = Field(min_length=1, max_length=32)

    def classifier(run):
        return lambda texts: [labels[i] for i in run(*encode(texts)).argmax(1)]

    def make_app(classify, batcher=None):
        app = FastAPI()

        @app.post("/predict")
        def predict(query: Query):
            if batcher is None:
                return {"intents": classify(query.texts)}
            futures = [batcher.submit(t) for t in query.texts]
            return {"intents": [f.result(timeout=30) for f in futures]}

        return app

    texts = test.text.tolist()
    modes = ("one call per request", "dynamic batching")
    serving = {}
    # The served variant at every level; the fp32 teacher (slow call, large batch gain) at the most clients.
    for model, levels in ((best, CLIENTS), ("fp32 PyTorch", CLIENTS[-1:])):
        classify = classifier(variants[model][0])
        runs = {mode: {c: [] for c in levels} for mode in modes}
        mean_batch = {c: [] for c in levels}
        with (DynamicBatcher(classify, max_batch=MAX_BATCH, max_wait_ms=MAX_WAIT_MS) as batcher,
              serve(make_app(classify)) as plain_url, serve(make_app(classify, batcher)) as batched_url):
            bad_status = httpx.post(f"{plain_url}/predict", json={"texts": "not a list"}).status_code
            urls = dict(zip(modes, (plain_url, batched_url)))
            for r in range(SERVE_ROUNDS):
                for c in levels:
                    for mode in modes if r % 2 == 0 else modes[::-1]:
                        before = len(batcher.batch_sizes)
                        runs[mode][c].append(_load_test(urls[mode], c, texts))
                        if mode == "dynamic batching":
                            mean_batch[c].append(float(np.mean(batcher.batch_sizes[before:])))
        serving[model] = {mode: [{"clients": c, "p50_ms": float(np.median([x["p50_ms"] for x in runs[mode][c]])),
                                  "p95_ms": float(np.median([x["p95_ms"] for x in runs[mode][c]])),
                                  "requests_per_s": float(np.median([x["requests_per_s"] for x in runs[mode][c]])),
                                  "rps_min": min(x["requests_per_s"] for x in runs[mode][c]),
                                  "rps_max": max(x["requests_per_s"] for x in runs[mode][c]),
                                  "mean_batch": float(np.median(mean_batch[c])) if mode == "dynamic batching" else 1.0}
                                 for c in levels] for mode in modes}
    flags = set()
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    isa = next((f for f in ("amx_int8", "avx512_vnni", "avx_vnni", "avx2") if f in flags), "no AVX2")
    int8_vs_fp32 = compare(round_medians, "int8 ONNX Runtime", "fp32 ONNX Runtime")
    return {"table": table, "best": best, "serving": serving, "bad_status": bad_status, "isa": isa,
            "int8_vs_fp32": int8_vs_fp32}


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
    """Both benchmarks at ``THREADS`` torch threads; the caller's thread count is restored afterwards."""
    saved = torch.get_num_threads()
    try:
        return {"models": run_models(), "kv": run_kv()}
    finally:
        torch.set_num_threads(saved)


def markdown(r: dict) -> str:
    m, table = r["models"], r["models"]["table"]
    lines = [f"Chapter 15's intent classifier and its compressed variants ({THREADS} thread, 170 test messages, "
             f"tokenization outside the timer). Timing interleaved: {ROUNDS} rounds, each visiting every variant once "
             f"in a rotating order with {CALLS_PER_ROUND} batch-1 calls (after one untimed call) and one batch-{BATCH} "
             "call. p50 = median of the per-round medians, [interquartile range across rounds]; p95 over all "
             f"{ROUNDS * CALLS_PER_ROUND} batch-1 calls. Latency counts as different only when a sign test over the rounds "
             f"gives p <= {ALPHA}; accuracy only when the exact McNemar test on the same messages does.", "",
             "| variant | size (MB) | p50 ms [IQR] | p95 ms | batch-32 messages/s | accuracy | dominated by |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for name, row in table.iterrows():
        lines.append(f"| {name} | {row.size_MB:.1f} | {row.p50_ms:.2f} [{row.p50_q1:.2f}–{row.p50_q3:.2f}] | {row.p95_ms:.2f} "
                     f"| {row.throughput_per_s:.0f} | {row.accuracy:.3f} | {row.dominated_by} |")
    i8, f32 = table.loc["int8 ONNX Runtime"], table.loc["fp32 ONNX Runtime"]
    sign, ratio, q1, q3 = m["int8_vs_fp32"]
    sep = {-1: "faster", 1: "slower", 0: "within the noise"}[sign]
    lines += ["", f"int8 vs fp32 (ONNX Runtime) on this CPU, best int8 instruction set **{m['isa']}**: p50 "
              f"{i8.p50_ms:.2f} vs {f32.p50_ms:.2f} ms; per-round time ratio int8/fp32 {ratio:.2f} (interquartile range "
              f"{q1:.2f}–{q3:.2f}): **{sep}**; batch {BATCH}: {i8.throughput_per_s:.0f} vs {f32.throughput_per_s:.0f} "
              "messages/s.", "",
              f"Served: **{m['best']}** (FastAPI + uvicorn on 127.0.0.1, {REQUESTS} single-message requests per level, "
              f"clients in the same process; a malformed body got HTTP {m['bad_status']}). Dynamic batching: up to "
              f"{MAX_BATCH} messages per model call, waiting at most {MAX_WAIT_MS:g} ms. Both servers ran side by side, "
              f"{SERVE_ROUNDS} rounds alternating between them at every level: medians over rounds, requests/s with "
              f"its range. The fp32 PyTorch teacher (slow call, large gain from batching) was served the same way at "
              f"{CLIENTS[-1]} clients.", "",
              "| model | server | concurrent clients | p50 ms | p95 ms | requests/s [range] | mean batch |",
              "|---|---|---:|---:|---:|---:|---:|"]
    verdicts = []
    for model, by_mode in m["serving"].items():
        for mode, levels in by_mode.items():
            lines += [f"| {model} | {mode} | {s['clients']} | {s['p50_ms']:.1f} | {s['p95_ms']:.1f} | "
                      f"{s['requests_per_s']:.0f} [{s['rps_min']:.0f}–{s['rps_max']:.0f}] | {s['mean_batch']:.1f} |"
                      for s in levels]
        for plain, batched in zip(by_mode["one call per request"], by_mode["dynamic batching"]):
            word = ("more" if batched["rps_min"] > plain["rps_max"] else
                    "fewer" if batched["rps_max"] < plain["rps_min"] else "within the noise (ranges overlap):")
            verdicts.append(f"{model}, {plain['clients']} client(s): {word} "
                            f"{batched['requests_per_s'] / plain['requests_per_s']:.2f}×")
    lines += ["", "Dynamic batching vs one call per request, requests/s: " + "; ".join(verdicts) + "."]
    lines += ["", f"TinyGPT generation with and without the KV cache (untrained, 4 layers, width 128, context 512, batch 1, "
              f"greedy, best of {KV_RUNS} runs; uncached 500 tokens: one run):", "",
              "| new tokens | no cache (s) | KV cache (s) | speed-up | identical tokens | cache memory (KB) |",
              "|---:|---:|---:|---:|---|---:|"]
    lines += [f"| {k['tokens']} | {k['uncached_s']:.2f} | {k['cached_s']:.2f} | {k['uncached_s'] / k['cached_s']:.1f}× | "
              f"{'yes' if k['identical'] else 'NO'} | {k['cache_KB']:.0f} |" for k in r["kv"]]
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(run()))
