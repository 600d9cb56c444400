"""The published sell-outs, scaled down to what the exact engine runs in seconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sim.run import run_scenario
from sim.scenario import load_scenario

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
SMALL_CDN = ["tier.edge.nodes=4", "tier.shield.nodes=2"]


def test_kardashian_launch_sells_out_within_minutes_scaled_down() -> None:
    scenario = load_scenario(
        SCENARIOS / "kardashian-launch.toml",
        [
            *SMALL_CDN,
            "audience.peak_viewers=8000",
            "audience.ramp_s=60",
            "scenario.duration_s=150",
            "sale.0.at_s=90",
            "sale.0.stock=60",
        ],
    )
    (sale,) = run_scenario(scenario)["sales"]
    assert sale["sold"] == 60 and sale["oversold"] == 0
    assert sale["sold_out_after_s"] < 180


def test_li_jiaqi_eyeshadow_is_gone_in_about_a_second_scaled_down() -> None:
    scenario = load_scenario(
        SCENARIOS / "li-jiaqi-eyeshadow.toml",
        [
            *SMALL_CDN,
            "audience.peak_viewers=8000",
            "audience.ramp_s=20",
            "scenario.duration_s=60",
            "sale.0.at_s=40",
            "sale.0.stock=32",
        ],
    )
    result = run_scenario(scenario)
    (sale,) = result["sales"]
    assert sale["sold"] == 32 and sale["oversold"] == 0
    # From the first buyer's press to the last unit: about a second.
    fastest = result["latency_s"]["replay"]["p50"]
    assert sale["sold_out_after_s"] - fastest < 2.0
    assert np.isfinite(sale["peak_orders_per_s"]) and sale["peak_orders_per_s"] > 10
