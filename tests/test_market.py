import math

import numpy as np
import pytest

from utils import cost, market
from utils.market import Demand, Option, crossover_volume, monthly_cost, rank_options


def opt(name, fixed=0.0, per=0.0, quality=0.9, p95=1.0, on_premises=False):
    return Option(name, fixed_usd_per_month=fixed, usd_per_request=per, quality=quality, p95_latency_s=p95,
                  on_premises=on_premises)


def need(volume=1e6, min_quality=0.8, p95=2.0, on_premises=False):
    return Demand("segment", requests_per_month=volume, min_quality=min_quality, max_p95_latency_s=p95,
                  needs_on_premises=on_premises)


def test_monthly_cost_is_fixed_plus_volume_times_price():
    assert monthly_cost(opt("a", 100.0, 0.002), need(5e5)) == pytest.approx(100.0 + 0.002 * 5e5)
    assert monthly_cost(opt("a", 100.0, 0.002), need(0)) == 100.0


def test_ties_go_to_higher_quality_then_lower_latency():
    weak = opt("weak", 31.025, 0.0, quality=0.859, p95=0.01)  # listed first: row order must not decide
    strong = opt("strong", 31.025, 0.0, quality=1.0, p95=0.05)
    assert [r.option.name for r in rank_options([weak, strong], need())] == ["strong", "weak"]
    fast = opt("fast", 10.0, quality=0.9, p95=0.2)
    slow = opt("slow", 10.0, quality=0.9, p95=0.9)
    assert [r.option.name for r in rank_options([slow, fast], need())] == ["fast", "slow"]
    cheap = opt("cheap", 9.0, quality=0.85)  # cheaper wins over better quality when both are feasible
    assert rank_options([strong, cheap], need())[0].option.name == "cheap"


def test_infeasible_options_come_last_with_readable_reasons():
    rows = rank_options([opt("cheap but slow", 1.0, p95=1.2), opt("hosted", 5.0), opt("ok", 50.0, on_premises=True),
                         opt("bad", 0.0, quality=0.5, on_premises=True)], need(p95=1.0, on_premises=True))
    assert [r.feasible for r in rows] == [True, False, False, False]
    assert rows[0].option.name == "ok"
    reasons = {r.option.name: r.violations for r in rows}
    assert "p95 latency 1.2 s > 1 s" in reasons["cheap but slow"]
    assert any("on premises" in v for v in reasons["hosted"])
    assert reasons["bad"] == ("quality 0.500 < 0.800",)
    assert market.best_option([opt("bad", quality=0.1)], need()) is None


def test_crossover_equals_the_formula_and_costs_match_there():
    api, gpu = opt("api", 500.0, 2e-4), opt("gpu", 3589.0, 5e-5)
    volume = crossover_volume(api, gpu)
    assert volume == pytest.approx((3589.0 - 500.0) / (2e-4 - 5e-5))
    assert crossover_volume(gpu, api) == pytest.approx(volume)
    at = need(volume)
    assert monthly_cost(api, at) == pytest.approx(monthly_cost(gpu, at), rel=1e-12)
    assert crossover_volume(api, opt("same slope", 10.0, 2e-4)) is None
    assert crossover_volume(opt("dominant", 0.0, 1e-5), opt("dominated", 10.0, 1e-4)) is None


def test_helpers_compute_costs_from_first_principles():
    api = market.api_option("api", usd_per_million_input=0.15, usd_per_million_output=0.6, input_tokens=300,
                            output_tokens=100, quality=0.9, p95_latency_s=2, staff_fte=0.5, usd_per_fte_year=120_000,
                            ops_usd_per_month=100)
    assert api.usd_per_request == pytest.approx((300 * 0.15 + 100 * 0.6) / 1e6)
    assert api.fixed_usd_per_month == pytest.approx(0.5 * 120_000 / 12 + 100)
    kwargs = dict(n_params=7e9, usd_per_gpu_hour=2.0, peak_flops_per_s=1e15, benchmark_output_tokens_per_s=5000,
                  benchmark_input_tokens=100, benchmark_output_tokens=100, input_tokens=300, output_tokens=100,
                  quality=0.8, p95_latency_s=1.0)
    gpu = market.gpu_option("gpu", busy_fraction=0.5, **kwargs)
    mfu = cost.serving_utilisation(7e9, 5000, input_tokens=100, output_tokens=100, peak_flops_per_s=1e15)
    per_hour = mfu * 1e15 * 3600 / (2 * 7e9 * 400)
    assert gpu.usd_per_request == pytest.approx(2.0 / (per_hour * 0.5))
    assert gpu.fixed_usd_per_month == pytest.approx(2.0 * 730)
    # Halving the busy fraction doubles the cost per request; staff add to the fixed cost only.
    half = market.gpu_option("gpu", busy_fraction=0.25, staff_fte=1, usd_per_fte_year=240_000, **kwargs)
    assert half.usd_per_request == pytest.approx(2 * gpu.usd_per_request)
    assert half.fixed_usd_per_month == pytest.approx(gpu.fixed_usd_per_month + 20_000)
    cpu = market.cpu_option("cpu", throughput_rps=np.float64(100.0), usd_per_hour=0.36, busy_fraction=1.0,
                            quality=np.float32(0.9), p95_latency_s=0.05, min_machines=np.int64(2))
    assert cpu.usd_per_request == pytest.approx(0.36 / 360_000)
    assert cpu.fixed_usd_per_month == pytest.approx(2 * 0.36 * 730)


def test_platform_option_amortises_training_and_research():
    serving = dict(n_params=7e9, usd_per_gpu_hour=2.0, peak_flops_per_s=1e15, benchmark_output_tokens_per_s=5000,
                   benchmark_input_tokens=100, benchmark_output_tokens=100, input_tokens=300, output_tokens=100,
                   busy_fraction=0.5, quality=0.8, p95_latency_s=1.0, usd_per_fte_year=120_000)
    own = market.platform_option("own", training_tokens=1e12, training_mfu=0.5, training_usd_per_gpu_hour=3.0,
                                 experiment_multiplier=2.0, amortisation_months=10, research_fte=3, **serving)
    bought = market.gpu_option("open", **serving)
    training = 6 * 7e9 * 1e12 / (1e15 * 0.5 * 3600) * 3.0 * 2.0
    assert own.fixed_usd_per_month - bought.fixed_usd_per_month == pytest.approx(training / 10 + 3 * 10_000)
    assert own.usd_per_request == bought.usd_per_request
    with pytest.raises(ValueError, match=">= 1"):
        market.platform_option("own", training_tokens=1e12, training_mfu=0.5, training_usd_per_gpu_hour=3.0,
                               experiment_multiplier=0.5, amortisation_months=10, research_fte=3, **serving)


@pytest.mark.parametrize("kwargs, match", [
    (dict(fixed_usd_per_month=-1.0), "US dollars"),
    (dict(usd_per_request=math.nan), "finite"),
    (dict(quality=1.2), r"\[0, 1\]"),
    (dict(quality=-0.1), r"\[0, 1\]"),
    (dict(p95_latency_s=0.0), "positive"),
    (dict(on_premises="False"), "True or False"),
    (dict(fixed_usd_per_month="100"), "number"),
    (dict(usd_per_request=True), "number"),
])
def test_bad_option_inputs_say_what_to_pass(kwargs, match):
    base = dict(fixed_usd_per_month=1.0, usd_per_request=0.0, quality=0.5, p95_latency_s=1.0)
    base.update(kwargs)
    with pytest.raises(ValueError, match=match):
        Option("x", **base)


@pytest.mark.parametrize("kwargs, match", [
    (dict(requests_per_month=-5), "requests per month"),
    (dict(requests_per_month=math.nan), "finite"),
    (dict(min_quality=2), r"\[0, 1\]"),
    (dict(max_p95_latency_s=-1), "math.inf"),
    (dict(needs_on_premises="yes"), "True or False"),
])
def test_bad_demand_inputs_say_what_to_pass(kwargs, match):
    base = dict(requests_per_month=1e6, min_quality=0.5, max_p95_latency_s=1.0)
    base.update(kwargs)
    with pytest.raises(ValueError, match=match):
        Demand("d", **base)


def test_bad_rank_and_crossover_arguments():
    with pytest.raises(ValueError, match="at least one"):
        rank_options([], need())
    with pytest.raises(ValueError, match="unique"):
        rank_options([opt("a"), opt("a")], need())
    with pytest.raises(TypeError, match="Option"):
        rank_options(opt("a"), need())
    with pytest.raises(TypeError, match="Demand"):
        monthly_cost(opt("a"), {"requests_per_month": 1})
    with pytest.raises(TypeError, match="Option"):
        crossover_volume(opt("a"), 3.0)
    with pytest.raises(ValueError, match="busy_fraction"):
        market.cpu_option("c", throughput_rps=10, usd_per_hour=1, busy_fraction=0, quality=0.5, p95_latency_s=1)
    with pytest.raises(ValueError, match="name"):
        Option("", fixed_usd_per_month=0, usd_per_request=0, quality=0.5, p95_latency_s=1)


def test_no_latency_target_accepts_any_latency():
    rows = rank_options([opt("slow", p95=math.inf)], Demand("d", requests_per_month=10, min_quality=0,
                                                            max_p95_latency_s=math.inf))
    assert rows[0].feasible
    assert list(market.ranking_table(rows)["option"]) == ["slow"]


def test_market_inputs_table_is_complete_and_ordered():
    import pandas as pd

    import utils

    frame = pd.read_csv(utils.data_path("market_inputs.csv"))
    assert list(frame.columns) == ["input", "low", "base", "high", "unit", "kind", "source"]
    assert frame["input"].is_unique and not frame.isna().any().any()
    assert ((frame["low"] <= frame["base"]) & (frame["base"] <= frame["high"])).all()
    assert set(frame["kind"]) <= {"sourced", "second-hand", "assumption"}
    assert (frame["source"].str.len() > 20).all()
