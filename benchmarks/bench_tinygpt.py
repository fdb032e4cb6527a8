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


# --------------------------------------------------------------------------- precision and Hugging Face GPT-2

COMPARE_STEPS = 120  # timed training steps per measurement
COMPARE_ROUNDS = 5  # interleaved rounds (A, B, A, B, …): drift on a shared machine hits both alike
COMPARE_GEN_TOKENS = 48  # new tokens per cached greedy generation (prompt of 8, all within the context of 64)
LOSS_TOLERANCE = 0.02  # nats/char: validation losses closer than this count as equal


def _char_data():
    text = corpus()
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    ids = torch.tensor([index[c] for c in text], dtype=torch.long)
    n_train = int(0.9 * len(ids))
    return len(chars), ids[:n_train], ids[n_train:]


def _batches(train_ids: torch.Tensor, steps: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        starts = torch.randint(0, len(train_ids) - BLOCK_SIZE - 1, (BATCH_SIZE,), generator=generator).tolist()
        yield (torch.stack([train_ids[s:s + BLOCK_SIZE] for s in starts]),
               torch.stack([train_ids[s + 1:s + BLOCK_SIZE + 1] for s in starts]))


def _val_loss(loss_of, val_ids: torch.Tensor, windows: int = 256) -> float:
    with torch.no_grad():
        rows = range(min(windows, (len(val_ids) - 1) // BLOCK_SIZE))
        x = torch.stack([val_ids[r * BLOCK_SIZE:(r + 1) * BLOCK_SIZE] for r in rows])
        y = torch.stack([val_ids[r * BLOCK_SIZE + 1:(r + 1) * BLOCK_SIZE + 1] for r in rows])
        return float(loss_of(x, y))


def _tinygpt(vocab: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return TinyGPT(GPTConfig(vocab_size=vocab, n_layer=4, n_head=4, d_model=128, block_size=BLOCK_SIZE))


def _hf_gpt2(vocab: int) -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=vocab, n_positions=BLOCK_SIZE, n_embd=128, n_layer=4, n_head=4,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(config, attn_implementation="sdpa") if _hf_takes_attn_arg() else GPT2LMHeadModel(config)


def _hf_takes_attn_arg() -> bool:
    import inspect

    from transformers import PreTrainedModel

    return "attn_implementation" in inspect.signature(PreTrainedModel.__init__).parameters


def _loss_fn(model: torch.nn.Module):
    """Mean next-token cross-entropy of ``(x, y)`` windows, the same sum for both models."""
    if isinstance(model, TinyGPT):
        return lambda x, y: model(x, y)[1]

    def hf_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = model(input_ids=x).logits
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
    return hf_loss


def _train_steps(model: torch.nn.Module, train_ids: torch.Tensor, steps: int, amp_dtype, seed: int) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) for ``steps`` AdamW steps, as in ``run``."""
    loss_of = _loss_fn(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, betas=(0.9, 0.95))
    model.train()
    wall, cpu = time.perf_counter(), time.process_time()
    for x, y in _batches(train_ids, steps, seed):
        with torch.autocast("cpu", dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            loss = loss_of(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    return time.perf_counter() - wall, time.process_time() - cpu


def _generate_rate(model: torch.nn.Module, prompt: torch.Tensor) -> float:
    start = time.perf_counter()
    model.eval()
    with torch.no_grad():
        if isinstance(model, TinyGPT):
            out = model.generate(prompt, COMPARE_GEN_TOKENS, top_k=1, use_cache=True)
        else:
            out = model.generate(prompt, max_new_tokens=COMPARE_GEN_TOKENS, min_new_tokens=COMPARE_GEN_TOKENS,
                                 do_sample=False, use_cache=True, pad_token_id=0,
                                 attention_mask=torch.ones_like(prompt))
    assert out.shape[1] == prompt.shape[1] + COMPARE_GEN_TOKENS
    return COMPARE_GEN_TOKENS / (time.perf_counter() - start)


def compare_precision_and_hf() -> dict:
    """TinyGPT fp32 vs ``amp="auto"``, and TinyGPT vs Hugging Face ``GPT2LMHeadModel`` at the same size.

    Interleaved rounds on one machine; each round trains a fresh model for ``COMPARE_STEPS`` steps per
    variant and times one cached greedy generation per model. Ratios are taken within a round, then
    the median over rounds. The precision verdict compares validation losses after the same number of
    steps; with a throughput ratio >= 1 the faster precision takes at least as many steps in the same
    wall-clock budget, so "auto" reaches at least float32's loss in that budget when its loss after the
    same steps is no worse (within ``LOSS_TOLERANCE``) and its throughput ratio is >= 1.
    """
    vocab, train_ids, val_ids = _char_data()
    auto = utils.training.resolve_amp("auto", torch.device("cpu"))
    variants = {"TinyGPT fp32": (_tinygpt, None), "TinyGPT auto": (_tinygpt, auto),
                "HF GPT-2 fp32": (_hf_gpt2, None), "HF GPT-2 auto": (_hf_gpt2, auto)}
    prompt = train_ids[:8].unsqueeze(0)
    rounds: list[dict] = []
    for round_index in range(COMPARE_ROUNDS):
        row: dict = {}
        names = list(variants) if round_index % 2 == 0 else list(reversed(variants))
        for name in names:
            build, amp_dtype = variants[name]
            model = build(vocab)
            wall, cpu = _train_steps(model, train_ids, COMPARE_STEPS, amp_dtype, seed=round_index)
            row[name] = {"tokens_per_s": COMPARE_STEPS * BATCH_SIZE * BLOCK_SIZE / wall,
                         "tokens_per_cpu_s": COMPARE_STEPS * BATCH_SIZE * BLOCK_SIZE / cpu,
                         "val_loss": _val_loss(_loss_fn(model.eval()), val_ids)}
            if amp_dtype is None:
                row[name]["gen_tokens_per_s"] = _generate_rate(model, prompt)
        rounds.append(row)

    def median_ratio(a: str, b: str, key: str) -> float:
        return statistics.median(r[a][key] / r[b][key] for r in rounds)

    def median(name: str, key: str) -> float:
        return statistics.median(r[name][key] for r in rounds)

    return {"rounds": rounds, "auto_dtype": "float32" if auto is None else str(auto).replace("torch.", ""),
            "threads": torch.get_num_threads(), "parameters": {n: utils.count_parameters(variants[n][0](vocab))
                                                               for n in ("TinyGPT fp32", "HF GPT-2 fp32")},
            "auto_vs_fp32_train": median_ratio("TinyGPT auto", "TinyGPT fp32", "tokens_per_s"),
            "auto_vs_fp32_train_cpu": median_ratio("TinyGPT auto", "TinyGPT fp32", "tokens_per_cpu_s"),
            "val_loss": {n: median(n, "val_loss") for n in variants},
            "tiny_vs_hf_train_fp32": median_ratio("TinyGPT fp32", "HF GPT-2 fp32", "tokens_per_s"),
            "tiny_vs_hf_train_auto": median_ratio("TinyGPT auto", "HF GPT-2 auto", "tokens_per_s"),
            "tiny_vs_hf_generate": median_ratio("TinyGPT fp32", "HF GPT-2 fp32", "gen_tokens_per_s"),
            "tokens_per_s": {n: median(n, "tokens_per_s") for n in variants}}


def compare_markdown(c: dict) -> str:
    auto_loss, fp32_loss = c["val_loss"]["TinyGPT auto"], c["val_loss"]["TinyGPT fp32"]
    if c["auto_dtype"] == "float32":
        verdict = ("`amp=\"auto\"` stays in float32 on this CPU (no native bf16), so both rows are the same computation: "
                   "chapter 10 and section 3 use float32 here.")
    else:
        ratio, gap = c["auto_vs_fp32_train"], auto_loss - fp32_loss
        faster, no_worse = ratio >= 1, gap <= LOSS_TOLERANCE
        measured = (f"`amp=\"auto\"` (bf16) trains {ratio:.2f}× float32's tokens per second and ends {gap:+.3f} nats "
                    "from float32 after the same steps")
        if faster and no_worse:
            verdict = (f"{measured}: in the same wall-clock budget it takes at least as many steps and reaches at least "
                       "float32's validation loss, so `amp=\"auto\"` is the better default on this machine.")
        elif not faster and gap >= -LOSS_TOLERANCE:
            verdict = (f"{measured}: no faster and no better, so float32 stays the default on this machine.")
        else:
            verdict = (f"{measured}: the two measures point different ways, so this run does not establish that "
                       "`amp=\"auto\"` reaches float32's loss in the same budget; float32 stays the default until "
                       "it does.")
    lines = [f"Chapter 10's TinyGPT ({c['parameters']['TinyGPT fp32']:,} parameters) and Hugging Face "
             f"`GPT2LMHeadModel` at the same configuration ({c['parameters']['HF GPT-2 fp32']:,} parameters: 4 layers, "
             f"d_model 128, 4 heads, context {BLOCK_SIZE}, batch {BATCH_SIZE}, no dropout, SDPA attention), "
             f"{COMPARE_STEPS} AdamW steps per run, {len(c['rounds'])} interleaved rounds, {c['threads']} torch threads; "
             f"`auto` = {c['auto_dtype']} here. Ratios are medians of within-round ratios.", "",
             "| ratio | value |", "|---|---:|",
             f"| TinyGPT training, auto / fp32 (wall clock) | {c['auto_vs_fp32_train']:.2f}× |",
             f"| TinyGPT training, auto / fp32 (per CPU-second) | {c['auto_vs_fp32_train_cpu']:.2f}× |",
             f"| training tokens/s, TinyGPT / HF, fp32 | {c['tiny_vs_hf_train_fp32']:.2f}× |",
             f"| training tokens/s, TinyGPT / HF, auto | {c['tiny_vs_hf_train_auto']:.2f}× |",
             f"| cached greedy generation tokens/s, TinyGPT / HF `generate` | {c['tiny_vs_hf_generate']:.2f}× |", "",
             "| variant | training tokens/s (median) | validation loss after the steps (median) |", "|---|---:|---:|"]
    lines += [f"| {n} | {c['tokens_per_s'][n]:,.0f} | {c['val_loss'][n]:.3f} |" for n in c["val_loss"]]
    return "\n".join(lines + ["", verdict])
