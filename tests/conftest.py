"""Shared helpers: small scenarios built in code, run through the public API."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from sim.run import run_scenario
from sim.scenario import Scenario, parse_scenario

BASE: dict[str, Any] = {
    "scenario": {"name": "test", "duration_s": 60, "seed": 1},
    "stream": {
        "protocol": "ll-hls",
        "segment_s": 2.0,
        "part_s": 0.333,
        "bitrates_kbps": [800, 2500],
        "encoder_delay_s": 0.2,
    },
    "tier": [
        {"name": "origin", "nodes": 1, "egress_gbps": 10, "rtt_ms": 5},
        {"name": "edge", "nodes": 2, "egress_gbps": 10, "rtt_ms": 20},
    ],
    "audience": {
        "peak_viewers": 200,
        "profile": "steady",
        "ramp_s": 10,
        "watch_s": {"dist": "exponential", "mean": 600},
        "last_mile_mbps": 50,
    },
}


def make_scenario(*overrides: str, base: dict[str, Any] | None = None) -> Scenario:
    """BASE (or `base`) with --set style overrides applied."""
    return parse_scenario(copy.deepcopy(base or BASE), overrides)


def run(*overrides: str, base: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
    return run_scenario(make_scenario(*overrides, base=base), **kw)


@pytest.fixture
def base_dict() -> dict[str, Any]:
    return copy.deepcopy(BASE)
