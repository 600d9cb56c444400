"""When viewers x bitrate exceed the last tier's egress, playback degrades; capacity fixes it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sim.cli import main

SCENARIO = """
[scenario]
name = "congested"
duration_s = 90
seed = 3

[stream]
protocol = "ll-hls"
bitrates_kbps = [2500]

[[tier]]
name = "origin"
nodes = 1
egress_gbps = 10

[[tier]]
name = "edge"
nodes = 1
egress_gbps = 1
rtt_ms = 20

[audience]
peak_viewers = 800          # 800 x 2.5 Mbit/s = 2 Gbit/s demand on 1 Gbit/s per edge
profile = "steady"
ramp_s = 10
last_mile_mbps = 50

[slo]
rebuffer_ratio_max = 0.01
replay_latency_p99_s = 3.0
"""


@pytest.fixture
def scenario_file(tmp_path: Path) -> Path:
    path = tmp_path / "congested.toml"
    path.write_text(SCENARIO)
    return path


def test_overloaded_edges_rebuffer_and_miss_the_slo(scenario_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = main(["run", str(scenario_file), "--out", str(out), "--quiet"])
    result = json.loads((out / "result.json").read_text())
    assert code == 1
    assert result["ok"] is False
    assert result["rebuffer_ratio"] > 0.05
    assert result["tiers"]["edge"]["peak_utilization"] >= 0.95
    missed = {s["name"] for s in result["slo"] if not s["met"]}
    assert "rebuffer_ratio_max" in missed


def test_adding_edge_nodes_brings_it_back(scenario_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = main(
        ["run", str(scenario_file), "--out", str(out), "--quiet", "--set", "tier.edge.nodes=4"]
    )
    result = json.loads((out / "result.json").read_text())
    assert code == 0, result["slo"]
    assert result["rebuffer_ratio"] < 0.01
    assert result["tiers"]["edge"]["peak_utilization"] < 0.8
