"""What large models cost: FLOPs, compute-optimal sizes, memory, GPU-hours, money, serving cost.

Every formula names its source:

- Training FLOPs ``C ≈ 6·N·D`` and inference ``≈ 2·N`` per token, plus the attention term
  ``2·n_layer·n_ctx·d_attn`` per token forward: Kaplan et al. 2020, *Scaling Laws for Neural Language
  Models*, arXiv:2001.08361, §2.1 (Table 1). Backward costs twice the forward, hence 6 = 3 × 2.
- Compute-optimal split and the parametric loss ``L(N, D) = E + A/N^α + B/D^β``: Hoffmann et al. 2022,
  *Training Compute-Optimal Large Language Models* (Chinchilla), arXiv:2203.15556, Table 3 and §3.3
  (approach 3: E 1.69, A 406.4, B 410.7, α 0.34, β 0.28). Re-fit of approach 3 by Besiroglu et al.
  2024, *Chinchilla Scaling: A replication attempt*, arXiv:2404.10102 (E 1.8172, A 482.01, B 2085.43,
  α 0.3478, β 0.3658); the same paper quotes the unrounded approach-3 values of the paper's TeX source
  (E 1.6934, α 0.3392, β 0.2849), which reproduce Hoffmann et al.'s own approach-3 table (Table A3).
- Serving utilisation from a published throughput: a forward pass costs 2·N per token (Kaplan et al. 2020),
  so a server producing ``t`` output tokens per second for requests of ``i`` input and ``o`` output tokens
  does ``2·N·t·(i + o)/o`` model FLOP/s; divided by the GPU's peak it is the model FLOPs utilisation of serving.
- Training memory (16 bytes per parameter for Adam in mixed precision, ZeRO stages 1–3):
  Rajbhandari et al. 2020, *ZeRO: Memory Optimizations Toward Training Trillion Parameter Models*,
  arXiv:1910.02054, §3.1 and Figure 1.
- MFU (model FLOPs utilisation) = model FLOPs / (time × peak FLOP/s): Chowdhery et al. 2022 (PaLM),
  arXiv:2204.02311, §4.1 / Appendix B.

All sizes are plain numbers (parameters, tokens, FLOPs, seconds, US dollars); memory is in decimal GB
(1 GB = 1e9 bytes), as in the ZeRO paper.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

from .data import read_data_csv

__all__ = [
    "HOFFMANN_2022", "BESIROGLU_2024", "training_flops", "inference_flops", "compute_optimal",
    "chinchilla_loss", "chinchilla_optimal", "training_memory_bytes", "training_memory_gb", "gpu_hours",
    "implied_mfu", "cost_usd", "co2_kg", "cost_per_1k_requests", "break_even_requests", "serving_utilisation",
    "load_hardware_prices", "load_api_prices", "load_serving_benchmarks", "gpu_spec", "HOFFMANN_2022_UNROUNDED",
]

HOFFMANN_2022 = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
"""Chinchilla approach-3 constants as printed in Hoffmann et al. 2022, §3.3 (eq. 10 context)."""

HOFFMANN_2022_UNROUNDED = {"E": 1.6934, "A": 406.4, "B": 410.7, "alpha": 0.3392, "beta": 0.2849}
"""The same approach-3 fit with the unrounded values of the paper's TeX source, as quoted by Besiroglu et al. 2024."""

BESIROGLU_2024 = {"E": 1.8172, "A": 482.01, "B": 2085.43, "alpha": 0.3478, "beta": 0.3658}
"""Epoch AI re-fit of approach 3 from the paper's own data points (Besiroglu et al. 2024, Table 1)."""

_CONSTANTS = {"hoffmann2022": HOFFMANN_2022, "hoffmann2022_unrounded": HOFFMANN_2022_UNROUNDED,
              "besiroglu2024": BESIROGLU_2024}
_WEIGHT_BYTES = {"fp32": 4, "mixed": 2, "bf16": 2}  # bytes per weight (and per gradient) during training
_OPTIMIZER_BYTES = {"adam": 8, "adamw": 8, "momentum": 4, "sgd": 0}  # fp32 optimizer buffers per parameter


def _real(name: str, value: Any, *, positive: bool = True, allow_zero: bool = False) -> float:
    """``value`` as a finite float; TypeError for non-numbers and bools, ValueError for NaN/inf/sign."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number (int or float), got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if positive and (value < 0 or (value == 0 and not allow_zero)):
        raise ValueError(f"{name} must be {'non-negative' if allow_zero else 'positive'}, got {value}")
    return value


def _integral(name: str, value: Any, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


# No accelerator (nor a CPU socket) peaks below 1 GFLOP/s: a smaller "peak" is a unit slip (TFLOP/s given as FLOP/s).
_MIN_PEAK_FLOPS = 1e9


def _peak(value: Any) -> float:
    peak = _real("peak_flops_per_s", value)
    if peak < _MIN_PEAK_FLOPS:
        raise ValueError(f"peak_flops_per_s = {peak:g} FLOP/s is below any real accelerator (an H100 is about 989e12 "
                         f"in dense bf16): the value looks like TFLOP/s; pass {peak:g}e12 for {peak:g} TFLOP/s")
    return peak


def _fraction(name: str, value: Any) -> float:
    value = _real(name, value, positive=False)
    if not 0 < value <= 1:
        raise ValueError(f"{name} is a utilisation in (0, 1], e.g. 0.4 for 40%; got {value}")
    return value


def _attention_flops_per_token(n_layer: Any, n_ctx: Any, d_attn: Any) -> float:
    given = [v is not None for v in (n_layer, n_ctx, d_attn)]
    if not any(given):
        return 0.0
    if not all(given):
        raise ValueError("for the attention term pass all three of n_layer, n_ctx and d_attn (or none)")
    return 2.0 * _integral("n_layer", n_layer) * _integral("n_ctx", n_ctx) * _integral("d_attn", d_attn)


def inference_flops(n_params: Any, n_tokens: Any = 1, *, n_layer: Any = None, n_ctx: Any = None,
                    d_attn: Any = None) -> float:
    """Forward-pass FLOPs for ``n_tokens`` tokens: ``(2·N + 2·n_layer·n_ctx·d_attn) · n_tokens``.

    A multiply-add is 2 FLOPs and each parameter is used once per token (Kaplan et al. 2020, §2.1).
    The attention term is added only if ``n_layer``, ``n_ctx`` and ``d_attn`` are given.

    Example:
        >>> inference_flops(7e9)  # one token through a 7B model
        14000000000.0
    """
    n_params = _real("n_params", n_params)
    n_tokens = _real("n_tokens", n_tokens)
    return (2.0 * n_params + _attention_flops_per_token(n_layer, n_ctx, d_attn)) * n_tokens


def training_flops(n_params: Any, n_tokens: Any, *, n_layer: Any = None, n_ctx: Any = None,
                   d_attn: Any = None) -> float:
    """Training FLOPs ``C ≈ 6·N·D`` (forward 2·N, backward 4·N per token; Kaplan et al. 2020, §2.1).

    With ``n_layer``, ``n_ctx`` and ``d_attn`` it adds Kaplan's attention term, 3 × 2·n_layer·n_ctx·d_attn
    per token, which matters only when the context is long compared with the width (n_ctx ≳ 12·d_model).

    Example:
        >>> f"{training_flops(175e9, 300e9):.3g}"  # GPT-3 (Brown et al. 2020 report 3.14e23)
        '3.15e+23'
    """
    n_params = _real("n_params", n_params)
    n_tokens = _real("n_tokens", n_tokens)
    return 3.0 * (2.0 * n_params + _attention_flops_per_token(n_layer, n_ctx, d_attn)) * n_tokens


def compute_optimal(compute_flops: Any, *, tokens_per_param: Any = 20.0) -> tuple[float, float]:
    """Compute-optimal ``(n_params, n_tokens)`` for a budget: solve ``C = 6·N·D`` with ``D = r·N``.

    ``N = sqrt(C / (6 r))``, ``D = r·N``. ``r ≈ 20`` is the Chinchilla rule of thumb (Hoffmann et al. 2022
    trained Chinchilla with 70B parameters on 1.4T tokens; their Table 3 rows have D/N between 20 and 22).

    Example:
        >>> n, d = compute_optimal(1.92e19)  # Table 3, first row: 400 million parameters, 8.0 billion tokens
        >>> round(n / 1e6), round(d / 1e9, 1)
        (400, 8.0)
    """
    compute_flops = _real("compute_flops", compute_flops)
    ratio = _real("tokens_per_param", tokens_per_param)
    n_params = math.sqrt(compute_flops / (6.0 * ratio))
    return n_params, ratio * n_params


def _constants(constants: Any) -> dict[str, float]:
    if isinstance(constants, str):
        if constants not in _CONSTANTS:
            raise ValueError(f"unknown constants {constants!r}; use one of {sorted(_CONSTANTS)} or a dict")
        return _CONSTANTS[constants]
    if isinstance(constants, dict):
        missing = {"E", "A", "B", "alpha", "beta"} - set(constants)
        if missing:
            raise ValueError(f"constants dict lacks {sorted(missing)}")
        return {k: _real(k, constants[k], allow_zero=(k == "E")) for k in ("E", "A", "B", "alpha", "beta")}
    raise TypeError(f"constants must be a name or a dict, got {type(constants).__name__}")


def chinchilla_loss(n_params: Any, n_tokens: Any, *, constants: Any = "hoffmann2022") -> float:
    """Predicted pretraining loss ``L(N, D) = E + A / N^α + B / D^β`` (Hoffmann et al. 2022, eq. 2).

    ``constants``: ``"hoffmann2022"`` (approach 3 as printed), ``"hoffmann2022_unrounded"`` (the same fit with
    the TeX-source digits), ``"besiroglu2024"`` (the Epoch AI re-fit,
    which its authors find consistent with approaches 1 and 2), or a dict with ``E, A, B, alpha, beta``.
    Losses are in nats per token of the MassiveText tokenizer: meaningful only for that data.

    Example:
        >>> round(chinchilla_loss(70e9, 1.4e12), 3)  # Chinchilla itself
        1.937
    """
    c = _constants(constants)
    n_params = _real("n_params", n_params)
    n_tokens = _real("n_tokens", n_tokens)
    return c["E"] + c["A"] / n_params ** c["alpha"] + c["B"] / n_tokens ** c["beta"]


def chinchilla_optimal(compute_flops: Any, *, constants: Any = "hoffmann2022") -> tuple[float, float]:
    """``(N, D)`` minimising ``chinchilla_loss`` subject to ``6·N·D = C`` (Hoffmann et al. 2022, eq. 4).

    ``N = G · (C/6)^(β/(α+β))`` with ``G = (α·A / (β·B))^(1/(α+β))``, ``D = C / (6 N)``.

    Example:
        >>> n, d = chinchilla_optimal(5.76e23)  # Gopher's budget
        >>> round(n / 1e9), round(d / 1e12, 2)
        (32, 2.98)
    """
    c = _constants(constants)
    compute_flops = _real("compute_flops", compute_flops)
    a, b = c["alpha"], c["beta"]
    g = (a * c["A"] / (b * c["B"])) ** (1.0 / (a + b))
    n_params = g * (compute_flops / 6.0) ** (b / (a + b))
    return n_params, compute_flops / (6.0 * n_params)


def training_memory_bytes(n_params: Any, *, precision: str = "mixed", optimizer: str = "adam",
                          zero_stage: int = 0, n_gpus: int = 1, activation_bytes: Any = 0.0) -> dict[str, float]:
    """Bytes per GPU of training, by part: weights, gradients, optimizer states, activations.

    Mixed precision (ZeRO paper §3.1): fp16/bf16 weights and gradients (2 + 2 bytes) and fp32 master weights
    plus Adam's two moments (4 + 4 + 4 = 12 bytes), so 16 bytes per parameter; fp32 training also totals 16
    (4 + 4 + 8). ``optimizer``: ``adam``/``adamw`` (two buffers), ``momentum`` (one), ``sgd`` (none).
    ZeRO ``zero_stage`` 1 shards optimizer states over ``n_gpus``, 2 also gradients, 3 also weights.
    Activations depend on batch and sequence length: pass them in ``activation_bytes``.

    Example:
        >>> parts = training_memory_bytes(7.5e9, zero_stage=1, n_gpus=64)  # ZeRO Figure 1: 31.4 GB
        >>> round(sum(parts.values()) / 1e9, 1)
        31.4
    """
    n_params = _real("n_params", n_params)
    if precision not in _WEIGHT_BYTES:
        raise ValueError(f"unknown precision {precision!r}; use one of {sorted(_WEIGHT_BYTES)}")
    if optimizer not in _OPTIMIZER_BYTES:
        raise ValueError(f"unknown optimizer {optimizer!r}; use one of {sorted(_OPTIMIZER_BYTES)}")
    zero_stage = _integral("zero_stage", zero_stage, minimum=0)
    if zero_stage > 3:
        raise ValueError(f"zero_stage is 0, 1, 2 or 3, got {zero_stage}")
    n_gpus = _integral("n_gpus", n_gpus)
    activation_bytes = _real("activation_bytes", activation_bytes, allow_zero=True)
    half = precision != "fp32"
    weights = n_params * _WEIGHT_BYTES[precision]
    gradients = n_params * _WEIGHT_BYTES[precision]
    states = n_params * _OPTIMIZER_BYTES[optimizer] + (4 * n_params if half else 0)  # + fp32 master copy

    def share(part: float, stage: int) -> float:
        return part / n_gpus if zero_stage >= stage else part

    return {"weights": share(weights, 3), "gradients": share(gradients, 2),
            "optimizer states": share(states, 1), "activations": activation_bytes}


def training_memory_gb(n_params: Any, *, precision: str = "mixed", optimizer: str = "adam",
                       zero_stage: int = 0, n_gpus: int = 1, activation_bytes: Any = 0.0) -> float:
    """Total training memory per GPU in decimal GB (the sum of ``training_memory_bytes``).

    Example:
        >>> [round(training_memory_gb(7.5e9, zero_stage=s, n_gpus=64), 1) for s in range(4)]
        [120.0, 31.4, 16.6, 1.9]
    """
    parts = training_memory_bytes(n_params, precision=precision, optimizer=optimizer, zero_stage=zero_stage,
                                  n_gpus=n_gpus, activation_bytes=activation_bytes)
    return sum(parts.values()) / 1e9


def gpu_hours(flops: Any, *, peak_flops_per_s: Any, mfu: Any) -> float:
    """GPU-hours to execute ``flops`` at a fraction ``mfu`` of a GPU's peak: ``C / (peak · mfu · 3600)``.

    Example:
        >>> round(gpu_hours(3.8e25, peak_flops_per_s=989e12, mfu=0.4) / 1e6, 1)  # Llama 3.1 405B on H100s
        26.7
    """
    flops = _real("flops", flops)
    peak = _peak(peak_flops_per_s)
    return flops / (peak * _fraction("mfu", mfu) * 3600.0)


def implied_mfu(flops: Any, gpu_hours: Any, *, peak_flops_per_s: Any) -> float:
    """Model FLOPs utilisation implied by a reported compute and GPU-hours: ``C / (hours · 3600 · peak)``.

    Example:
        >>> round(implied_mfu(6 * 405e9 * 15.6e12, 30.84e6, peak_flops_per_s=989e12), 3)
        0.345
    """
    flops = _real("flops", flops)
    hours = _real("gpu_hours", gpu_hours)
    peak = _peak(peak_flops_per_s)
    mfu = flops / (hours * 3600.0 * peak)
    if mfu > 1:
        raise ValueError(f"{flops:.3g} FLOPs in {hours:.3g} GPU-hours at {peak:.3g} FLOP/s implies an MFU of {mfu:,.3g}, "
                         "above 1, which no GPU can do: check the units (GPU-hours in millions? total FLOPs vs "
                         "FLOP/s? the peak of the precision actually used?)")
    return mfu


def cost_usd(gpu_hours: Any, *, price_per_gpu_hour: Any) -> float:
    """Money for ``gpu_hours`` at a price per GPU-hour (US dollars).

    Example:
        >>> cost_usd(1000, price_per_gpu_hour=2.5)
        2500.0
    """
    return _real("gpu_hours", gpu_hours, allow_zero=True) * _real("price_per_gpu_hour", price_per_gpu_hour,
                                                                  allow_zero=True)


def co2_kg(gpu_hours: Any, *, power_w: Any, kg_per_kwh: Any) -> float:
    """Emissions of ``gpu_hours`` at ``power_w`` per GPU and a grid intensity in kg CO2e per kWh.

    This is the method of the Llama model cards (GPU-hours × peak power × carbon intensity).

    Example:
        >>> round(co2_kg(1000, power_w=400, kg_per_kwh=0.4))
        160
    """
    return (_real("gpu_hours", gpu_hours, allow_zero=True) * _real("power_w", power_w) / 1000.0
            * _real("kg_per_kwh", kg_per_kwh, allow_zero=True))


def cost_per_1k_requests(*, price_per_hour: Any, latency_s: Any = None, throughput_rps: Any = None,
                         concurrency: Any = None, utilisation: Any = 1.0) -> float:
    """Serving cost of 1,000 requests on a machine rented at ``price_per_hour``.

    Give either a measured ``throughput_rps`` (requests per second the machine sustains) or a per-request
    ``latency_s`` with the number of requests served in parallel (``concurrency``, default 1; it is refused
    with ``throughput_rps``, which already includes it); ``utilisation`` is the
    busy fraction of the hours paid for (a machine idle half the time doubles the cost per request).

    Example:
        >>> round(cost_per_1k_requests(price_per_hour=3.6, latency_s=0.05), 4)  # 20 req/s, $3.60/h
        0.05
    """
    price = _real("price_per_hour", price_per_hour, allow_zero=True)
    if (latency_s is None) == (throughput_rps is None):
        raise ValueError("pass exactly one of latency_s or throughput_rps")
    if throughput_rps is None:
        concurrency = 1 if concurrency is None else concurrency
        throughput_rps = _integral("concurrency", concurrency) / _real("latency_s", latency_s)
    elif concurrency is not None:
        raise ValueError("concurrency is only used with latency_s (requests per second = concurrency / latency_s); "
                         "a measured throughput_rps already includes the parallelism: drop concurrency")
    else:
        throughput_rps = _real("throughput_rps", throughput_rps)
    requests_per_hour = throughput_rps * 3600.0 * _fraction("utilisation", utilisation)
    return 1000.0 * price / requests_per_hour


def break_even_requests(fixed_cost_usd: Any, *, price_per_request: Any, variable_cost_per_request: Any) -> float:
    """Requests needed before revenue covers a fixed cost: ``F / (p − v)``; ``inf`` if ``p ≤ v``.

    Example:
        >>> break_even_requests(10_000, price_per_request=0.01, variable_cost_per_request=0.002)
        1250000.0
    """
    fixed = _real("fixed_cost_usd", fixed_cost_usd, allow_zero=True)
    price = _real("price_per_request", price_per_request, allow_zero=True)
    variable = _real("variable_cost_per_request", variable_cost_per_request, allow_zero=True)
    margin = price - variable
    return math.inf if margin <= 0 else fixed / margin


# FP8 doubles the dense bf16 peak; a published throughput above twice the bf16 peak is a unit slip.
_MAX_SERVING_UTILISATION = 2.0


def serving_utilisation(n_params: Any, output_tokens_per_s: Any, *, input_tokens: Any, output_tokens: Any,
                        peak_flops_per_s: Any) -> float:
    """Model FLOPs utilisation of a server from its published output throughput per GPU.

    Every request of ``input_tokens`` + ``output_tokens`` costs ``2·N`` FLOPs per token (prompt and generated
    tokens alike; the attention term is ignored), and the server emits ``output_tokens_per_s`` generated
    tokens per second, so it does ``2·N·output_tokens_per_s·(input_tokens + output_tokens)/output_tokens``
    model FLOP/s. Divided by ``peak_flops_per_s`` this is the utilisation to pass to ``gpu_hours``. It can
    exceed 1 when the benchmark ran in a lower precision than the peak you divide by (FP8 vs a bf16 peak).

    Example:
        >>> round(serving_utilisation(7e9, 1000, input_tokens=100, output_tokens=100, peak_flops_per_s=1e15), 3)
        0.028
    """
    n_params = _real("n_params", n_params)
    rate = _real("output_tokens_per_s", output_tokens_per_s)
    n_in = _real("input_tokens", input_tokens, allow_zero=True)
    n_out = _real("output_tokens", output_tokens)
    peak = _peak(peak_flops_per_s)
    utilisation = 2.0 * n_params * rate * (n_in + n_out) / n_out / peak
    if utilisation > _MAX_SERVING_UTILISATION:
        raise ValueError(f"{rate:g} output tokens/s for a {n_params:.3g}-parameter model implies {utilisation:,.3g}× the "
                         f"peak of {peak:.3g} FLOP/s, more than even FP8 against a bf16 peak allows "
                         f"({_MAX_SERVING_UTILISATION:g}×): check the units of the throughput, the parameters and the peak")
    return utilisation


def _load_csv(name: str, required: list[str]) -> Any:
    frame = read_data_csv(name)
    missing = set(required) - set(frame.columns)
    if missing:
        raise ValueError(f"data/{name} lacks columns {sorted(missing)}")
    return frame


def load_hardware_prices() -> Any:
    """``data/hardware_prices.csv``: accelerators' peak dense FLOP/s and dated hourly prices, with sources.

    Example:
        >>> "H100 SXM" in set(load_hardware_prices()["hardware"])
        True
    """
    return _load_csv("hardware_prices.csv", ["hardware", "kind", "value", "unit", "provider", "date_seen", "source"])


def load_api_prices() -> Any:
    """``data/api_prices.csv``: published per-token prices of hosted models, with date and source.

    Example:
        >>> {"input", "output"} <= set(load_api_prices()["direction"])
        True
    """
    return _load_csv("api_prices.csv", ["model", "provider", "direction", "usd_per_million_tokens", "date_seen",
                                        "source"])


def load_serving_benchmarks() -> Any:
    """``data/serving_benchmarks.csv``: published LLM serving throughputs per GPU (vendor benchmarks, dated).

    Example:
        >>> int(load_serving_benchmarks()["output_tokens_per_s_per_gpu"].min()) > 0
        True
    """
    return _load_csv("serving_benchmarks.csv", ["model", "n_params", "hardware", "precision", "batch_size",
                                                "input_tokens", "output_tokens", "output_tokens_per_s_per_gpu",
                                                "software", "date_seen", "source"])


def gpu_spec(hardware: str, kind: str = "peak_bf16_dense_flops") -> float:
    """One number from ``data/hardware_prices.csv`` (e.g. peak dense bf16 FLOP/s, TDP in W).

    Example:
        >>> gpu_spec("A100 SXM")
        312000000000000.0
    """
    frame = load_hardware_prices()
    rows = frame[(frame["hardware"] == hardware) & (frame["kind"] == kind)]
    if rows.empty:
        known = sorted(set(frame.loc[frame["kind"] == kind, "hardware"]))
        raise ValueError(f"no {kind!r} for {hardware!r} in data/hardware_prices.csv; known: {known}")
    return float(rows["value"].iloc[0])
