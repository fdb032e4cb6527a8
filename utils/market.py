"""Serving a demand: options, segments' needs, monthly cost, constrained ranking and crossover volumes.

An :class:`Option` is one way to serve requests (call a hosted API, rent a GPU for an open model, run a small
model on CPUs, train your own model ...): a fixed cost per month plus a cost per request, a quality (the share
of requests answered correctly, in [0, 1]), a p95 latency and whether the data stays on infrastructure you
control. A :class:`Demand` is a segment's needs: a monthly volume and hard constraints. The monthly cost is
linear, ``fixed + usd_per_request · volume``; :func:`rank_options` filters by the constraints and sorts the
feasible options by cost, ties going to higher quality, then lower latency; :func:`crossover_volume` is the
volume at which two options cost the same, ``(F_b − F_a) / (v_a − v_b)``.

The helper constructors compute the two cost numbers from first principles with :mod:`utils.cost`:

- :func:`api_option`: price per million tokens × tokens in and out (the published way hosted models bill);
- :func:`gpu_option`: a GPU-hour price, the model FLOPs utilisation a published serving benchmark implies
  (``cost.serving_utilisation``), ``2·N`` FLOPs per token (Kaplan et al. 2020) and the busy fraction of the
  paid hours; the GPUs kept on around the clock are a fixed cost;
- :func:`cpu_option`: a measured throughput on a CPU machine (``cost.cost_per_1k_requests``);
- :func:`platform_option`: :func:`gpu_option` plus your own pretraining run (``6·N·D`` FLOPs at an MFU,
  ``cost.gpu_hours``), times a multiplier for experiments, amortised over the months the model stays
  competitive, plus the research staff.

Every helper adds staff and operations: ``staff_fte`` full-time equivalents at ``usd_per_fte_year`` and
``ops_usd_per_month`` (monitoring, support, compliance ...). Costs are US dollars; volumes requests per month.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

from . import cost
from ._checks import ArgumentTypeError, check_bool, check_real

__all__ = ["Option", "Demand", "RankedOption", "HOURS_PER_MONTH", "monthly_cost", "violations", "rank_options",
           "best_option", "crossover_volume", "api_option", "gpu_requests_per_hour", "gpu_option", "cpu_option", "platform_option",
           "ranking_table"]

HOURS_PER_MONTH = 730.0
"""Average hours in a month (8,760 / 12), the convention of cloud price pages."""


def _money(name: str, value: Any) -> float:
    try:
        return check_real(name, value, non_negative=True)
    except ArgumentTypeError:
        raise
    except ValueError as exc:
        raise ValueError(f"{exc}; pass a finite amount of US dollars >= 0 (e.g. 1200.0)") from None


def _name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ArgumentTypeError(f"name must be a non-empty string, got {type(value).__name__} {value!r}")
    return value


def _quality(name: str, value: Any) -> float:
    value = check_real(name, value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} is a share of requests answered correctly, in [0, 1] (e.g. 0.92 for 92%); "
                         f"got {value}")
    return value


def _fraction(name: str, value: Any) -> float:
    value = check_real(name, value)
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{name} is a fraction in (0, 1], e.g. 0.35 for 35%; got {value}")
    return value


@dataclass(frozen=True)
class Option:
    """One way to serve requests: ``fixed_usd_per_month + usd_per_request · volume`` per month.

    ``quality`` is the share of requests answered correctly (in [0, 1]); ``p95_latency_s`` the 95th-percentile
    latency in seconds; ``on_premises`` whether the data stays on infrastructure you control.

    Example:
        >>> Option("hosted API", fixed_usd_per_month=500, usd_per_request=0.0002, quality=0.9, p95_latency_s=2.0)
        Option(name='hosted API', fixed_usd_per_month=500.0, usd_per_request=0.0002, quality=0.9, p95_latency_s=2.0, on_premises=False)
    """

    name: str
    fixed_usd_per_month: float = field(default=0.0)
    usd_per_request: float = field(default=0.0)
    quality: float = field(default=0.0)
    p95_latency_s: float = field(default=0.0)
    on_premises: bool = False

    def __init__(self, name: str, *, fixed_usd_per_month: Any, usd_per_request: Any, quality: Any,
                 p95_latency_s: Any, on_premises: Any = False) -> None:
        object.__setattr__(self, "name", _name(name))
        object.__setattr__(self, "fixed_usd_per_month", _money("fixed_usd_per_month", fixed_usd_per_month))
        object.__setattr__(self, "usd_per_request", _money("usd_per_request", usd_per_request))
        object.__setattr__(self, "quality", _quality("quality", quality))
        latency = check_real("p95_latency_s", p95_latency_s, allow_inf=True)
        if not latency > 0:
            raise ValueError(f"p95_latency_s must be a positive number of seconds (e.g. 0.8), got {latency}")
        object.__setattr__(self, "p95_latency_s", latency)
        object.__setattr__(self, "on_premises", check_bool("on_premises", on_premises))


@dataclass(frozen=True)
class Demand:
    """A segment's needs: a monthly volume and hard constraints on quality, p95 latency and data location.

    Example:
        >>> Demand("bank", requests_per_month=2e6, min_quality=0.9, max_p95_latency_s=3.0, needs_on_premises=True)
        Demand(name='bank', requests_per_month=2000000.0, min_quality=0.9, max_p95_latency_s=3.0, needs_on_premises=True)
    """

    name: str
    requests_per_month: float = field(default=0.0)
    min_quality: float = field(default=0.0)
    max_p95_latency_s: float = field(default=math.inf)
    needs_on_premises: bool = False

    def __init__(self, name: str, *, requests_per_month: Any, min_quality: Any, max_p95_latency_s: Any,
                 needs_on_premises: Any = False) -> None:
        object.__setattr__(self, "name", _name(name))
        try:
            volume = check_real("requests_per_month", requests_per_month, non_negative=True)
        except ArgumentTypeError:
            raise
        except ValueError as exc:
            raise ValueError(f"{exc}; pass a finite number of requests per month >= 0 (e.g. 2e6)") from None
        object.__setattr__(self, "requests_per_month", volume)
        object.__setattr__(self, "min_quality", _quality("min_quality", min_quality))
        latency = check_real("max_p95_latency_s", max_p95_latency_s, allow_inf=True)
        if not latency > 0:
            raise ValueError("max_p95_latency_s must be a positive number of seconds, or math.inf for no target; "
                             f"got {latency}")
        object.__setattr__(self, "max_p95_latency_s", latency)
        object.__setattr__(self, "needs_on_premises", check_bool("needs_on_premises", needs_on_premises))


@dataclass(frozen=True)
class RankedOption:
    """One row of :func:`rank_options`: the option, its monthly cost for the demand, and why it is infeasible."""

    option: Option
    monthly_cost_usd: float
    feasible: bool
    violations: tuple[str, ...]


def _check_option(value: Any, name: str = "option") -> Option:
    if not isinstance(value, Option):
        raise ArgumentTypeError(f"{name} must be a utils.market.Option, got {type(value).__name__}")
    return value


def _check_demand(value: Any) -> Demand:
    if not isinstance(value, Demand):
        raise ArgumentTypeError(f"demand must be a utils.market.Demand, got {type(value).__name__}")
    return value


def monthly_cost(option: Option, demand: Demand) -> float:
    """Monthly cost of serving ``demand`` with ``option``: ``fixed + usd_per_request · requests_per_month``.

    Example:
        >>> api = Option("api", fixed_usd_per_month=100, usd_per_request=0.001, quality=0.9, p95_latency_s=2)
        >>> monthly_cost(api, Demand("shop", requests_per_month=1e5, min_quality=0.8, max_p95_latency_s=5))
        200.0
    """
    option, demand = _check_option(option), _check_demand(demand)
    return option.fixed_usd_per_month + option.usd_per_request * demand.requests_per_month


def _fmt_s(value: float) -> str:
    return f"{value:.3g} s"


def violations(option: Option, demand: Demand) -> list[str]:
    """Human-readable reasons why ``option`` cannot serve ``demand`` (empty when it can).

    Example:
        >>> slow = Option("slow", fixed_usd_per_month=0, usd_per_request=0, quality=0.95, p95_latency_s=1.2)
        >>> violations(slow, Demand("chat", requests_per_month=10, min_quality=0.9, max_p95_latency_s=1.0))
        ['p95 latency 1.2 s > 1 s']
    """
    option, demand = _check_option(option), _check_demand(demand)
    reasons = []
    if demand.needs_on_premises and not option.on_premises:
        reasons.append("data must stay on premises, option is hosted elsewhere")
    if option.quality < demand.min_quality:
        reasons.append(f"quality {option.quality:.3f} < {demand.min_quality:.3f}")
    if option.p95_latency_s > demand.max_p95_latency_s:
        reasons.append(f"p95 latency {_fmt_s(option.p95_latency_s)} > {_fmt_s(demand.max_p95_latency_s)}")
    return reasons


def _options_list(options: Any) -> list[Option]:
    if isinstance(options, (str, bytes, Option)) or not isinstance(options, Iterable):
        raise ArgumentTypeError("options must be a list of utils.market.Option, "
                                f"got {type(options).__name__}")
    options = [_check_option(o, "each option") for o in options]
    if not options:
        raise ValueError("options is empty: pass at least one utils.market.Option to rank")
    names = [o.name for o in options]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"option names must be unique, {duplicates} appear more than once")
    return options


def rank_options(options: Iterable[Option], demand: Demand) -> list[RankedOption]:
    """Rank options for a demand: feasible first by monthly cost; equal cost (to the micro-dollar) goes to higher
    quality, then lower p95 latency; infeasible options follow, in the same order, with their violations.

    Example:
        >>> a = Option("A", fixed_usd_per_month=10, usd_per_request=0, quality=0.86, p95_latency_s=0.1)
        >>> b = Option("B", fixed_usd_per_month=10, usd_per_request=0, quality=1.00, p95_latency_s=0.2)
        >>> need = Demand("router", requests_per_month=1e6, min_quality=0.8, max_p95_latency_s=1)
        >>> [r.option.name for r in rank_options([a, b], need)]
        ['B', 'A']
    """
    options, demand = _options_list(options), _check_demand(demand)
    rows = []
    for option in options:
        reasons = violations(option, demand)
        rows.append(RankedOption(option, monthly_cost(option, demand), not reasons, tuple(reasons)))
    return sorted(rows, key=lambda r: (not r.feasible, round(r.monthly_cost_usd, 6), -r.option.quality,
                                       r.option.p95_latency_s))


def best_option(options: Iterable[Option], demand: Demand) -> Optional[RankedOption]:
    """The first feasible row of :func:`rank_options`, or ``None`` when no option meets the demand.

    Example:
        >>> a = Option("A", fixed_usd_per_month=10, usd_per_request=0, quality=0.7, p95_latency_s=0.1)
        >>> print(best_option([a], Demand("d", requests_per_month=1, min_quality=0.8, max_p95_latency_s=1)))
        None
    """
    top = rank_options(options, demand)[0]
    return top if top.feasible else None


def crossover_volume(a: Option, b: Option) -> Optional[float]:
    """Requests per month (> 0) at which ``a`` and ``b`` cost the same: ``(F_b − F_a) / (v_a − v_b)``.

    ``None`` when the lines never cross at a positive volume (equal costs per request, or one option is
    cheaper at every volume).

    Example:
        >>> api = Option("api", fixed_usd_per_month=0, usd_per_request=0.001, quality=0.9, p95_latency_s=2)
        >>> gpu = Option("gpu", fixed_usd_per_month=3000, usd_per_request=0.0001, quality=0.9, p95_latency_s=2)
        >>> round(crossover_volume(api, gpu))
        3333333
    """
    a, b = _check_option(a, "a"), _check_option(b, "b")
    slope = a.usd_per_request - b.usd_per_request
    if slope == 0:
        return None
    volume = (b.fixed_usd_per_month - a.fixed_usd_per_month) / slope
    return volume if volume > 0 and math.isfinite(volume) else None


def _staff(staff_fte: Any, usd_per_fte_year: Any, ops_usd_per_month: Any) -> float:
    fte = check_real("staff_fte", staff_fte, non_negative=True)
    return fte * _money("usd_per_fte_year", usd_per_fte_year) / 12.0 + _money("ops_usd_per_month", ops_usd_per_month)


def api_option(name: str, *, usd_per_million_input: Any, usd_per_million_output: Any, input_tokens: Any,
               output_tokens: Any, quality: Any, p95_latency_s: Any, staff_fte: Any = 0.0,
               usd_per_fte_year: Any = 0.0, ops_usd_per_month: Any = 0.0, on_premises: Any = False) -> Option:
    """A hosted model billed per token: ``usd_per_request = (in · p_in + out · p_out) / 1e6``.

    Example:
        >>> o = api_option("gpt-4o-mini", usd_per_million_input=0.15, usd_per_million_output=0.60, input_tokens=400,
        ...                output_tokens=150, quality=0.9, p95_latency_s=2.0, staff_fte=0.25, usd_per_fte_year=200_000)
        >>> round(o.usd_per_request * 1000, 3), round(o.fixed_usd_per_month)  # USD per 1,000 requests; per month
        (0.15, 4167)
    """
    n_in = check_real("input_tokens", input_tokens, non_negative=True)
    n_out = check_real("output_tokens", output_tokens, non_negative=True)
    per_request = (n_in * _money("usd_per_million_input", usd_per_million_input)
                   + n_out * _money("usd_per_million_output", usd_per_million_output)) / 1e6
    return Option(name, fixed_usd_per_month=_staff(staff_fte, usd_per_fte_year, ops_usd_per_month),
                  usd_per_request=per_request, quality=quality, p95_latency_s=p95_latency_s, on_premises=on_premises)


def gpu_requests_per_hour(*, n_params: Any, peak_flops_per_s: Any, benchmark_output_tokens_per_s: Any,
                          benchmark_input_tokens: Any, benchmark_output_tokens: Any, input_tokens: Any,
                          output_tokens: Any) -> float:
    """Requests one GPU serves per busy hour at the model FLOPs utilisation a published benchmark implies.

    ``mfu = cost.serving_utilisation(...)`` of the benchmark; a request of ``i + o`` tokens costs ``2·N·(i + o)``
    FLOPs, so the GPU serves ``mfu · peak · 3600 / (2·N·(i + o))`` requests an hour. Counting prompt tokens at
    the price of generated ones is an approximation (prefill runs in parallel and is cheaper per token).

    Example:
        >>> round(gpu_requests_per_hour(n_params=6.7e9, peak_flops_per_s=989e12, benchmark_output_tokens_per_s=9193,
        ...       benchmark_input_tokens=128, benchmark_output_tokens=128, input_tokens=128, output_tokens=128))
        258553
    """
    mfu = cost.serving_utilisation(n_params, benchmark_output_tokens_per_s, input_tokens=benchmark_input_tokens,
                                   output_tokens=benchmark_output_tokens, peak_flops_per_s=peak_flops_per_s)
    flops = cost.inference_flops(n_params, check_real("input_tokens", input_tokens, non_negative=True)
                                 + check_real("output_tokens", output_tokens, positive=True))
    return mfu * float(peak_flops_per_s) * 3600.0 / flops


def gpu_option(name: str, *, n_params: Any, usd_per_gpu_hour: Any, peak_flops_per_s: Any,
               benchmark_output_tokens_per_s: Any, benchmark_input_tokens: Any, benchmark_output_tokens: Any,
               input_tokens: Any, output_tokens: Any, busy_fraction: Any, quality: Any, p95_latency_s: Any,
               min_gpus: Any = 1, staff_fte: Any = 0.0, usd_per_fte_year: Any = 0.0, ops_usd_per_month: Any = 0.0,
               extra_fixed_usd_per_month: Any = 0.0, on_premises: Any = True) -> Option:
    """An open model on rented GPUs: ``usd_per_request = price / (requests per GPU-hour · busy_fraction)``.

    ``busy_fraction`` is the share of paid GPU-hours spent serving at the benchmark's rate (traffic peaks, idle
    nights, batches that are not full); ``min_gpus`` GPUs stay on around the clock and are a fixed cost, so the
    line is an upper bound that exceeds the exact step cost by at most ``min_gpus`` GPU-months.

    Example:
        >>> o = gpu_option("open 7B", n_params=6.7e9, usd_per_gpu_hour=4.916, peak_flops_per_s=989e12,
        ...                benchmark_output_tokens_per_s=9193, benchmark_input_tokens=128, benchmark_output_tokens=128,
        ...                input_tokens=400, output_tokens=150, busy_fraction=0.35, quality=0.85, p95_latency_s=1.5)
        >>> round(o.usd_per_request * 1000, 4), round(o.fixed_usd_per_month)  # USD per 1,000 requests; per month
        (0.1167, 3589)
    """
    price = _money("usd_per_gpu_hour", usd_per_gpu_hour)
    per_hour = gpu_requests_per_hour(n_params=n_params, peak_flops_per_s=peak_flops_per_s,
                                     benchmark_output_tokens_per_s=benchmark_output_tokens_per_s,
                                     benchmark_input_tokens=benchmark_input_tokens,
                                     benchmark_output_tokens=benchmark_output_tokens, input_tokens=input_tokens,
                                     output_tokens=output_tokens)
    busy = _fraction("busy_fraction", busy_fraction)
    gpus = check_real("min_gpus", min_gpus, non_negative=True)
    fixed = (gpus * price * HOURS_PER_MONTH + _staff(staff_fte, usd_per_fte_year, ops_usd_per_month)
             + _money("extra_fixed_usd_per_month", extra_fixed_usd_per_month))
    return Option(name, fixed_usd_per_month=fixed, usd_per_request=price / (per_hour * busy), quality=quality,
                  p95_latency_s=p95_latency_s, on_premises=on_premises)


def cpu_option(name: str, *, throughput_rps: Any, usd_per_hour: Any, busy_fraction: Any, quality: Any,
               p95_latency_s: Any, min_machines: Any = 1, staff_fte: Any = 0.0, usd_per_fte_year: Any = 0.0,
               ops_usd_per_month: Any = 0.0, on_premises: Any = True) -> Option:
    """A model on CPU machines with a measured throughput (``cost.cost_per_1k_requests``).

    Example:
        >>> o = cpu_option("TF-IDF", throughput_rps=2000, usd_per_hour=0.34, busy_fraction=0.35, quality=0.86,
        ...                p95_latency_s=0.002)
        >>> round(o.fixed_usd_per_month, 1), f"{o.usd_per_request:.2e}"
        (248.2, '1.35e-07')
    """
    price = _money("usd_per_hour", usd_per_hour)
    per_1k = cost.cost_per_1k_requests(price_per_hour=price, throughput_rps=throughput_rps,
                                       utilisation=_fraction("busy_fraction", busy_fraction))
    machines = check_real("min_machines", min_machines, non_negative=True)
    fixed = machines * price * HOURS_PER_MONTH + _staff(staff_fte, usd_per_fte_year, ops_usd_per_month)
    return Option(name, fixed_usd_per_month=fixed, usd_per_request=per_1k / 1000.0, quality=quality,
                  p95_latency_s=p95_latency_s, on_premises=on_premises)


def platform_option(name: str, *, training_tokens: Any, training_mfu: Any, training_usd_per_gpu_hour: Any,
                    experiment_multiplier: Any, amortisation_months: Any, research_fte: Any,
                    **serving: Any) -> Option:
    """Your own pretrained model: :func:`gpu_option` plus the pretraining cost amortised per month.

    Pretraining is ``6·N·D`` FLOPs (``cost.training_flops``) at ``training_mfu`` of the GPU's peak
    (``cost.gpu_hours``), priced at ``training_usd_per_gpu_hour``, times ``experiment_multiplier`` (>= 1) for
    the experiments and failed runs before the final one, spread over ``amortisation_months``; the research
    team (``research_fte`` at the serving ``usd_per_fte_year``) is a monthly cost. ``serving`` takes
    :func:`gpu_option`'s keywords.

    Example:
        >>> o = platform_option("own 7B", training_tokens=2e12, training_mfu=0.4, training_usd_per_gpu_hour=4.916,
        ...     experiment_multiplier=2, amortisation_months=12, research_fte=10, n_params=6.7e9,
        ...     usd_per_gpu_hour=4.916, peak_flops_per_s=989e12, benchmark_output_tokens_per_s=9193,
        ...     benchmark_input_tokens=128, benchmark_output_tokens=128, input_tokens=400, output_tokens=150,
        ...     busy_fraction=0.35, quality=0.85, p95_latency_s=1.5, usd_per_fte_year=200_000)
        >>> round(o.fixed_usd_per_month, -3)
        217000.0
    """
    multiplier = check_real("experiment_multiplier", experiment_multiplier)
    if multiplier < 1:
        raise ValueError(f"experiment_multiplier counts the final run once and experiments on top: pass >= 1, "
                         f"got {multiplier}")
    months = check_real("amortisation_months", amortisation_months, positive=True)
    flops = cost.training_flops(serving.get("n_params"), training_tokens)
    hours = cost.gpu_hours(flops, peak_flops_per_s=serving.get("peak_flops_per_s"), mfu=training_mfu)
    training = cost.cost_usd(hours, price_per_gpu_hour=training_usd_per_gpu_hour) * multiplier
    research = check_real("research_fte", research_fte, non_negative=True) * _money(
        "usd_per_fte_year", serving.get("usd_per_fte_year", 0.0)) / 12.0
    extra = _money("extra_fixed_usd_per_month", serving.pop("extra_fixed_usd_per_month", 0.0))
    return gpu_option(name, extra_fixed_usd_per_month=extra + training / months + research, **serving)


def ranking_table(rows: Iterable[RankedOption]) -> Any:
    """The rows of :func:`rank_options` as a pandas DataFrame (one line per option, best first).

    Example:
        >>> a = Option("A", fixed_usd_per_month=10, usd_per_request=0, quality=0.9, p95_latency_s=0.1)
        >>> list(ranking_table(rank_options([a], Demand("d", requests_per_month=1, min_quality=0,
        ...      max_p95_latency_s=1))).columns)
        ['option', 'USD per month', 'feasible', 'quality', 'p95 latency (s)', 'why not']
    """
    import pandas as pd

    rows = list(rows)
    return pd.DataFrame({"option": [r.option.name for r in rows],
                         "USD per month": [r.monthly_cost_usd for r in rows],
                         "feasible": [r.feasible for r in rows],
                         "quality": [r.option.quality for r in rows],
                         "p95 latency (s)": [r.option.p95_latency_s for r in rows],
                         "why not": ["; ".join(r.violations) for r in rows]})
