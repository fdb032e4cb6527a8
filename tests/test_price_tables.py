"""data/hardware_prices.csv and data/api_prices.csv keep what data/README.md promises."""

import re

import pandas as pd

from utils import data_path

DATE = re.compile(r"^\d{4}(-\d{2}(-\d{2})?|-Q[1-4])?$")


def test_hardware_prices_have_a_dated_source_on_every_row_and_positive_values():
    frame = pd.read_csv(data_path("hardware_prices.csv"))
    assert list(frame.columns) == ["hardware", "kind", "value", "unit", "provider", "date_seen", "source"]
    assert frame.notna().all().all() and (frame["value"] > 0).all()
    assert frame["date_seen"].astype(str).map(DATE.match).notna().all()
    assert not frame.duplicated(["hardware", "kind"]).any()
    peaks = frame[frame["kind"] == "peak_bf16_dense_flops"].set_index("hardware")["value"]
    assert peaks["A100 SXM"] == 312e12 and peaks["H100 SXM"] == 989e12  # dense, not the 2:4-sparsity figures
    hourly = frame[frame["kind"].str.startswith("usd_per")]
    assert len(hourly) >= 3 and hourly["source"].str.len().min() > 30


def test_api_prices_list_input_and_output_for_every_model_with_a_date():
    frame = pd.read_csv(data_path("api_prices.csv"))
    assert list(frame.columns) == ["model", "provider", "direction", "usd_per_million_tokens", "date_seen", "source"]
    assert frame.notna().all().all() and (frame["usd_per_million_tokens"] > 0).all()
    assert frame["date_seen"].astype(str).map(DATE.match).notna().all()
    for model, rows in frame.groupby("model"):
        assert sorted(rows["direction"]) == ["input", "output"], model
        by = rows.set_index("direction")["usd_per_million_tokens"]
        assert by["output"] >= by["input"], model  # every listed provider charges more for output


def test_serving_benchmarks_are_sourced_dated_and_imply_a_utilisation_between_0_and_1():
    from utils import cost

    frame = pd.read_csv(data_path("serving_benchmarks.csv"))
    assert list(frame.columns) == ["model", "n_params", "hardware", "precision", "batch_size", "input_tokens",
                                   "output_tokens", "output_tokens_per_s_per_gpu", "software", "date_seen", "source"]
    assert frame.notna().all().all() and len(frame) >= 1
    numbers = frame[["n_params", "batch_size", "input_tokens", "output_tokens", "output_tokens_per_s_per_gpu"]]
    assert (numbers > 0).all().all()
    assert frame["date_seen"].astype(str).map(DATE.match).notna().all()
    assert frame["source"].str.len().min() > 30
    hardware = set(pd.read_csv(data_path("hardware_prices.csv"))["hardware"])
    assert set(frame["hardware"]) <= hardware  # every row's peak FLOP/s can be looked up
    for r in frame.itertuples():
        u = cost.serving_utilisation(r.n_params, r.output_tokens_per_s_per_gpu, input_tokens=r.input_tokens,
                                     output_tokens=r.output_tokens, peak_flops_per_s=cost.gpu_spec(r.hardware))
        assert 0 < u <= 1, (r.model, r.hardware, u)  # more than the GPU's peak would be a transcription error
