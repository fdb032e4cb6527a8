"""TinyGPT (chapter 10): training tokens/s, validation loss after a fixed time budget, generation tokens/s.

The model is chapter 10's default: character-level, 4 layers, 4 heads, d_model 128, context 64,
batch 16, AdamW (lr 2e-3, betas 0.9/0.95, weight decay 0.1), gradient clipping at 1.0, float32.
The corpus is the chapter's default, Python's reference documentation (``pydoc_data.topics``),
split 90/10 by position. Training runs on random windows for ``TRAIN_SECONDS`` of wall time after
``WARMUP_STEPS`` untimed steps; the validation loss is the mean over every non-overlapping window of
the validation split. Generation samples ``GEN_TOKENS`` characters at batch 1 (no KV cache: ``use_cache=False``; section 6 measures
the cache), median of ``GEN_RUNS`` runs after one warm-up run.
"""

from __future__ import annotations

import statistics
import time

import torch

import utils
from utils.models import GPTConfig, TinyGPT

TRAIN_SECONDS = 30.0
WARMUP_STEPS = 5
BATCH_SIZE = 16
BLOCK_SIZE = 64
GEN_TOKENS = 200
GEN_RUNS = 3


def corpus() -> str:
    from pydoc_data.topics import topics

    return "\n".join(topics[key] for key in sorted(topics))


def run(device: str = "cpu", amp: str | None = None, train_seconds: float = TRAIN_SECONDS) -> dict:
    """Measure on ``device``; ``amp`` as in ``utils.fit`` (None, "auto", "bf16", "fp16")."""
    utils.set_seed(0)
    amp_dtype = utils.training.resolve_amp(amp, torch.device(device))
    text = corpus()
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    ids = torch.tensor([index[c] for c in text], dtype=torch.long, device=device)
    n_train = int(0.9 * len(ids))
    train_ids, val_ids = ids[:n_train], ids[n_train:]
    config = GPTConfig(vocab_size=len(chars), n_layer=4, n_head=4, d_model=128, block_size=BLOCK_SIZE, dropout=0.0)
    model = TinyGPT(config).to(device)
    scaler = torch.amp.GradScaler(device, enabled=amp_dtype == torch.float16)
    optimizer = torch.optim.AdamW(model.parameter_groups(0.1), lr=2e-3, betas=(0.9, 0.95))
    generator = torch.Generator().manual_seed(0)

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    def step() -> float:
        starts = torch.randint(0, len(train_ids) - BLOCK_SIZE - 1, (BATCH_SIZE,), generator=generator).tolist()
        x = torch.stack([train_ids[s:s + BLOCK_SIZE] for s in starts])
        y = torch.stack([train_ids[s + 1:s + BLOCK_SIZE + 1] for s in starts])
        with torch.autocast(torch.device(device).type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            _, loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(optimizer)
        scaler.update()
        return loss.item()

    model.train()
    for _ in range(WARMUP_STEPS):
        step()
    steps = 0
    sync()
    start = time.perf_counter()
    while time.perf_counter() - start < train_seconds:
        step()  # loss.item() synchronises every step
        steps += 1
    train_s = time.perf_counter() - start
    tokens = steps * BATCH_SIZE * BLOCK_SIZE

    model.eval()
    n_windows = (len(val_ids) - 1) // BLOCK_SIZE
    losses = []
    with torch.no_grad():
        for first in range(0, n_windows, 64):
            rows = range(first, min(first + 64, n_windows))
            x = torch.stack([val_ids[r * BLOCK_SIZE:(r + 1) * BLOCK_SIZE] for r in rows])
            y = torch.stack([val_ids[r * BLOCK_SIZE + 1:(r + 1) * BLOCK_SIZE + 1] for r in rows])
            _, loss = model(x, y)
            losses.append(loss.item() * len(rows))
    val_loss = sum(losses) / n_windows

    # Reference: an add-0.1 smoothed bigram model fitted on the training split (chapter 10's baseline).
    vocab = len(chars)
    train_cpu, val_cpu = train_ids.cpu(), val_ids.cpu()
    counts = torch.full((vocab, vocab), 0.1, dtype=torch.float64)
    counts.index_put_((train_cpu[:-1], train_cpu[1:]), torch.ones(len(train_cpu) - 1, dtype=torch.float64),
                      accumulate=True)
    log_probs = torch.log(counts / counts.sum(dim=1, keepdim=True))
    bigram = -log_probs[val_cpu[:-1], val_cpu[1:]].mean().item()

    prompt = torch.tensor([[index["\n"]]], dtype=torch.long, device=device)
    model.generate(prompt, 20, generator=torch.Generator(device=device).manual_seed(1), use_cache=False)
    rates = []
    for run_index in range(GEN_RUNS):
        sync()
        begin = time.perf_counter()
        model.generate(prompt, GEN_TOKENS, generator=torch.Generator(device=device).manual_seed(run_index),
                       use_cache=False)
        sync()
        rates.append(GEN_TOKENS / (time.perf_counter() - begin))
    return {
        "parameters": utils.count_parameters(model),
        "steps": steps,
        "train_s": train_s,
        "train_tokens": tokens,
        "train_tokens_per_s": tokens / train_s,
        "val_loss": val_loss,
        "val_windows": n_windows,
        "bigram": bigram,
        "gen_tokens_per_s": statistics.median(rates),
        "gen_min": min(rates),
        "gen_max": max(rates),
        "threads": torch.get_num_threads(),
        "budget_s": train_seconds,
        "device": device,
        "amp": str(amp_dtype).replace("torch.", "") if amp_dtype is not None else "float32",
    }


def markdown(r: dict) -> str:
    return "\n".join([
        f"Chapter 10's default TinyGPT ({r['parameters']:,} parameters, character level, context {BLOCK_SIZE}, "
        f"batch {BATCH_SIZE}, {r['amp']}, {r['threads']} torch threads) trained on Python's reference documentation "
        f"for a fixed {r['budget_s']:.0f} s of wall time after {WARMUP_STEPS} untimed warm-up steps "
        "(a plain loop: random windows, AdamW lr 2e-3 constant, clipping 1.0; no validation during the budget).",
        "",
        "| measurement | value |",
        "|---|---:|",
        f"| training throughput | {r['train_tokens_per_s']:,.0f} tokens/s ({r['steps']} steps, "
        f"{r['train_tokens']:,} tokens in {r['train_s']:.1f} s) |",
        f"| validation loss after {r['budget_s']:.0f} s | {r['val_loss']:.3f} nats/char "
        f"(all {r['val_windows']} non-overlapping windows of the last 10%) |",
        f"| generation, batch 1, {GEN_TOKENS} new characters | {r['gen_tokens_per_s']:,.0f} tokens/s "
        f"(median of {GEN_RUNS}, min–max {r['gen_min']:,.0f}–{r['gen_max']:,.0f}; no KV cache) |",
        "",
        f"For comparison, an add-0.1 bigram model fitted on the training split scores {r['bigram']:.3f} nats/char "
        "on the same validation split (chapter 10's baseline).",
    ])


if __name__ == "__main__":
    print(markdown(run()))
