"""Viewer-parts simulated per wall second: the exact engine against a minimal SimPy loop.

The reference is the cheapest process-per-viewer model there is: each viewer process just waits
one part duration per part. Both run 10,000 viewers in the same session, so the ratio is
comparable across machines even when absolute rates are not.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import simpy

from sim.exact.model import Model
from sim.scenario import parse_scenario

VIEWERS = 10_000
DURATION_S = 30.0
PART_S = 2.0 / 6

SCENARIO = {
    "scenario": {"name": "bench-exact", "duration_s": DURATION_S, "seed": 5},
    "stream": {
        "protocol": "ll-hls",
        "segment_s": 2.0,
        "part_s": 0.333,
        "bitrates_kbps": [800, 2500, 5000],
    },
    "tier": [
        {"name": "origin", "nodes": 1, "egress_gbps": 40, "rtt_ms": 5},
        {
            "name": "edge",
            "nodes": 8,
            "egress_gbps": 10,
            "rtt_ms": {"dist": "lognormal", "median": 20, "p95": 60},
        },
    ],
    "audience": {
        "peak_viewers": VIEWERS,
        "profile": "steady",
        "ramp_s": 1.0,
        "watch_s": 1e6,
        "last_mile_mbps": {"dist": "lognormal", "median": 25, "p95": 80},
    },
}


def minimal_loop() -> int:
    env = simpy.Environment()
    parts = [0]

    def viewer(env: simpy.Environment, start_s: float) -> Any:
        yield env.timeout(start_s)
        while True:
            yield env.timeout(PART_S)
            parts[0] += 1

    starts = np.random.default_rng(5).uniform(0.0, 1.0, VIEWERS)
    for start_s in starts:
        env.process(viewer(env, float(start_s)))
    env.run(until=DURATION_S)
    return parts[0]


def exact_engine() -> int:
    scenario = parse_scenario(SCENARIO)
    model = Model(scenario, np.random.default_rng(5))
    measurements = model.run()
    return int(measurements.replay.count)


def test_minimal_simpy_loop(benchmark: Any, record_rate: Any) -> None:
    parts = benchmark.pedantic(minimal_loop, rounds=3, iterations=1)
    record_rate("minimal_simpy_loop", parts, benchmark.stats.stats.median)


def test_exact_engine(benchmark: Any, record_rate: Any) -> None:
    parts = benchmark.pedantic(exact_engine, rounds=3, iterations=1)
    assert parts > 0.8 * VIEWERS * (DURATION_S - 3) / PART_S
    record_rate("exact_engine", parts, benchmark.stats.stats.median)
