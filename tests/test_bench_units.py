"""The pieces of `livesim bench` that need no relay: scaling, the play head, the comparison."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import generate_latest

from relay.load.player import Playback, Player
from relay.server.http import Request
from relay.server.metrics import ServerMetrics
from sim.bench.compare import compare, ks_distance, rebuffer_spike, render_table
from sim.bench.relay import parse_counters
from sim.bench.scale import EDGES_MAX, largest_scale, scaled
from sim.errors import ScenarioError
from sim.run import run_scenario
from sim.scenario import load_scenario

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "scenarios"


def test_scaling_shrinks_the_audience_and_stock_and_takes_the_relays_shape() -> None:
    full = load_scenario(SCENARIOS / "flash-sale-backends.toml")
    small = scaled(full, 0.2)
    assert small.audience.peak_viewers == 600
    assert small.sales[0].stock == 60
    assert small.lotteries[0].winners == 4
    assert small.stream.bitrates_kbps == (800.0,)
    assert small.stream.encoder_delay_s == 0.0
    assert [t.nodes for t in small.tiers] == [1, 4]
    # Everything else is the scenario's own.
    assert small.sales[0].reaction_s == full.sales[0].reaction_s
    assert small.audience.profile == full.audience.profile


def test_scaling_caps_edges_and_keeps_faults_proportional() -> None:
    full = load_scenario(SCENARIOS / "edge-failure.toml", ["tier.edge.nodes=32", "fault.0.count=8"])
    small = scaled(full, 0.5)
    assert [t.nodes for t in small.tiers] == [1, 1, EDGES_MAX]
    assert small.faults[0].count == 2


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (['fault.0.kind="origin-down"', "fault.0.count=1"], "fault.kind"),
        (['fault.0.kind="link-degrade"'], "fault.kind"),
    ],
)
def test_faults_a_bench_cannot_make_real_are_refused(overrides: list[str], key: str) -> None:
    full = load_scenario(SCENARIOS / "edge-failure.toml", overrides)
    with pytest.raises(ScenarioError) as error:
        scaled(full, 0.5)
    assert error.value.path == key


@pytest.mark.parametrize("scale", [0.0, -0.1, 1.5])
def test_a_scale_outside_zero_to_one_is_refused(scale: float) -> None:
    with pytest.raises(ScenarioError, match="--scale"):
        scaled(load_scenario(SCENARIOS / "quickstart.toml"), scale)


def test_the_largest_scale_follows_the_request_rate() -> None:
    quickstart = load_scenario(SCENARIOS / "quickstart.toml")  # LL-HLS: 6 requests/s a viewer
    hls = load_scenario(SCENARIOS / "hls-classic.toml")  # 6 s segments: 1/3 request/s
    assert largest_scale(quickstart, 2) < largest_scale(quickstart, 4) <= 1.0
    assert largest_scale(hls, 2) == 1.0
    assert 1000 <= scaled(quickstart, largest_scale(quickstart, 2)).audience.peak_viewers <= 1500


def test_the_play_head_joins_plays_in_order_and_counts_stalls() -> None:
    playback = Playback(bin_s=1.0, n_bins=10)
    player = Player(playback, arrived_s=1.0, startup_s=0.2)
    player.receive(received_s=1.5, capture_s=0.0, duration_s=0.5)  # plays at 1.7
    player.receive(received_s=1.6, capture_s=0.5, duration_s=0.5)  # waits: plays at 2.2
    player.receive(received_s=3.0, capture_s=1.0, duration_s=0.5)  # 0.3 s stall, plays at 3.0
    player.leave(4.0)
    assert list(playback.join_s) == pytest.approx([0.7])
    assert list(playback.replay_s) == pytest.approx([1.7, 1.7, 2.0])
    assert playback.stall_s == pytest.approx(0.3)
    assert playback.rebuffer_s[3] == pytest.approx(0.3)
    assert playback.watched_s == pytest.approx(4.0 - 1.7)


@pytest.fixture(scope="module")
def model_result() -> dict[str, Any]:
    scenario = load_scenario(
        SCENARIOS / "flash-sale-backends.toml",
        ["scenario.duration_s=30", "sale.0.at_s=10", "lottery.0.at_s=20"],
    )
    return run_scenario(scaled(scenario, 0.1))


def test_a_result_agrees_with_itself(model_result: dict[str, Any]) -> None:
    doc = compare(model_result, model_result)
    assert doc["ok"]
    assert doc["ks_replay"] == 0.0
    assert all(m["ok"] for m in doc["metrics"])
    assert "lipstick drop: sold out after" in render_table(doc)


def _with(result: dict[str, Any], path: tuple[str | int, ...], factor: float) -> dict[str, Any]:
    changed = copy.deepcopy(result)
    node: Any = changed
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] *= factor
    return changed


@pytest.mark.parametrize(
    ("path", "factor", "metric"),
    [
        (("latency_s", "replay", "p50"), 1.3, "replay latency p50"),
        (("latency_s", "replay", "p95"), 0.7, "replay latency p95"),
        (("sales", 0, "sold_out_after_s"), 1.3, "lipstick drop: sold out after"),
        (("sales", 0, "sold"), 0.7, "lipstick drop: orders"),
    ],
)
def test_a_metric_beyond_the_tolerance_disagrees(
    model_result: dict[str, Any], path: tuple[str | int, ...], factor: float, metric: str
) -> None:
    doc = compare(model_result, _with(model_result, path, factor))
    assert not doc["ok"]
    assert [m["name"] for m in doc["metrics"] if not m["ok"]] == [metric]
    # Within the tolerance it agrees again.
    assert compare(model_result, _with(model_result, path, 1.0 + (factor - 1.0) / 3))["ok"]


def test_any_oversell_disagrees_even_when_both_worlds_oversell(
    model_result: dict[str, Any],
) -> None:
    oversold = copy.deepcopy(model_result)
    oversold["sales"][0]["oversold"] = 3
    assert not compare(oversold, oversold)["ok"]


def test_ks_distance_of_cdfs_apart_is_one_and_of_a_shift_is_in_between(
    model_result: dict[str, Any],
) -> None:
    later = copy.deepcopy(model_result)
    x = np.asarray(later["cdf"]["replay_s"]["x"])
    later["cdf"]["replay_s"]["x"] = list(x + 100.0)
    assert ks_distance(model_result, later) == 1.0
    nudged = copy.deepcopy(model_result)
    nudged["cdf"]["replay_s"]["x"] = list(x + 0.5 * (x.max() - x.min()))
    assert 0.0 < ks_distance(model_result, nudged) < 1.0


def test_the_rebuffering_spike_is_the_busiest_ten_seconds(model_result: dict[str, Any]) -> None:
    spiky = copy.deepcopy(model_result)
    stalls = [0.0] * len(spiky["series"]["rebuffering_s"])
    stalls[12:14] = [30.0, 10.0]  # 40 viewer-seconds within two 1 s bins
    spiky["series"]["rebuffering_s"] = stalls
    assert rebuffer_spike(spiky) == pytest.approx(40.0 / 10.0)


def test_counters_are_read_from_a_servers_metrics_page() -> None:
    metrics = ServerMetrics("edge-0")
    request = Request("GET", "/live/s0/index.m3u8", {}, {}, b"")
    for status in (200, 200, 200, 404):
        metrics.response(request, status)
    metrics.sent(1500)
    metrics.counter("livesim_media_from_parent", "parts from the parent").inc(7)
    metrics.gauge("livesim_push_viewers", "viewers").set(12)  # a gauge: not kept
    text = generate_latest(metrics.registry).decode()
    assert parse_counters(text) == {
        "requests": 4.0,
        "bytes_sent": 1500.0,
        "media_from_parent": 7.0,
        "cache_hits": 0.0,
        "cache_misses": 0.0,
    }
