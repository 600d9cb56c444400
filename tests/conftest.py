"""Shared helpers: small scenarios built in code, run through the public API."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis_server import RedisServer, start_redis

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


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A private redis-server on 127.0.0.1 for the module's tests."""
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "redis"])
def spec(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A sale store spec of each kind; each Redis test uses its own sales (ids are never reused)."""
    if request.param == "sqlite":
        return f"sqlite:{tmp_path / 'sales.db'}"
    server: RedisServer = request.getfixturevalue("redis_server")
    return server.url
