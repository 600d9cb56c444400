"""Viewer-parts per wall second: the cohort engine at festival size against the exact engine.

Both rates count viewer-parts the same way, from the engine's Measurements: viewer-seconds
watched over the part length. The exact engine runs a quickstart-like scenario (10,000 viewers,
60 s); the cohort engine runs the shipped singles-day-peak scenario at full size (10 M viewers,
1 h). Target: the cohort engine at >= 1000x the exact engine's rate.

Scaling: the same festival scenario shortened to 300 s (sale and fault moved inside it) at 1 M
and 10 M peak viewers, with and without its flash sale. Each size runs in a fresh interpreter
(this file run as a script) that reports the engine's wall time and its own peak RSS. The peak
is the kernel's high-water mark of the child's address space (VmHWM), not getrusage: Linux
carries the parent's peak into a forked child's ru_maxrss across exec, so after the full-size
run above every child would report the pytest process's peak.
"""

from __future__ import annotations

import dataclasses
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sim.cohort.model import run_cohort
from sim.exact.model import run_exact
from sim.measurements import Measurements
from sim.scenario import Scenario, load_scenario

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
FESTIVAL = SCENARIOS / "singles-day-peak.toml"
QUICKSTART = SCENARIOS / "quickstart.toml"
UNIT_S = 2.0 / 6
"""One LL-HLS part of both scenarios (0.333 s parts, six to a 2 s segment)."""

EXACT_OVERRIDES = ("audience.peak_viewers=10000", "scenario.duration_s=60", "tier.1.nodes=8")
SCALING_OVERRIDES = ("scenario.duration_s=300", "sale.0.at_s=240", "fault.0.at_s=120")
SCALING_VIEWERS = (1_000_000, 10_000_000)


def viewer_parts(m: Measurements) -> float:
    """Viewer-parts played: viewer-seconds watched over the part length."""
    return m.watched_s / UNIT_S


def scaling_scenario(peak_viewers: int, with_sale: bool) -> Scenario:
    """singles-day-peak in 300 s at `peak_viewers`, with or without its [[sale]]."""
    scenario = load_scenario(
        FESTIVAL, (*SCALING_OVERRIDES, f"audience.peak_viewers={peak_viewers}")
    )
    return scenario if with_sale else dataclasses.replace(scenario, sales=())


def _rss_mib() -> float:
    """Peak resident memory of this process so far (VmHWM where /proc exists)."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024.0


def measure_in_this_process(peak_viewers: int, with_sale: bool) -> dict[str, float]:
    """Engine wall time and peak RSS of one scaling run; meant for a fresh interpreter."""
    scenario = scaling_scenario(peak_viewers, with_sale)
    base_mib = _rss_mib()
    started = time.perf_counter()
    m = run_cohort(scenario, np.random.default_rng(scenario.scenario.seed))
    wall_s = time.perf_counter() - started
    return {
        "wall_s": wall_s,
        "peak_rss_mib": _rss_mib(),
        "run_rss_mib": _rss_mib() - base_mib,
        "peak_viewers": float(m.peak_viewers),
        "viewer_parts": viewer_parts(m),
    }


def measure_in_subprocess(peak_viewers: int, with_sale: bool) -> dict[str, float]:
    """`measure_in_this_process` in a fresh interpreter running this file as a script."""
    args = [sys.executable, __file__, str(peak_viewers), "sale" if with_sale else "no-sale"]
    done = subprocess.run(args, capture_output=True, text=True, check=True)
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def exact_engine() -> float:
    scenario = load_scenario(QUICKSTART, EXACT_OVERRIDES)
    return viewer_parts(run_exact(scenario, np.random.default_rng(scenario.scenario.seed)))


def cohort_engine() -> float:
    scenario = load_scenario(FESTIVAL)
    return viewer_parts(run_cohort(scenario, np.random.default_rng(scenario.scenario.seed)))


def test_exact_engine_viewer_parts(benchmark: Any, record_rate: Any) -> None:
    parts = benchmark.pedantic(exact_engine, rounds=3, iterations=1)
    assert parts > 1e6
    record_rate("exact_engine_viewer_parts", parts, benchmark.stats.stats.median)


def test_cohort_engine_singles_day_peak(benchmark: Any, record_rate: Any) -> None:
    parts = benchmark.pedantic(cohort_engine, rounds=3, iterations=1)
    assert parts > 1e11  # ~8 M viewers on average over 10,800 parts
    record_rate("cohort_engine", parts, benchmark.stats.stats.median)


@pytest.mark.parametrize("with_sale", [False, True], ids=["no-sale", "sale"])
@pytest.mark.parametrize("peak_viewers", SCALING_VIEWERS, ids=["1M", "10M"])
def test_cohort_scaling(
    benchmark: Any, record_scaling: Any, peak_viewers: int, with_sale: bool
) -> None:
    figures = benchmark.pedantic(
        measure_in_subprocess, (peak_viewers, with_sale), rounds=1, iterations=1
    )
    assert figures["peak_viewers"] > 0.5 * peak_viewers
    sale = "with sale" if with_sale else "no sale"
    record_scaling(f"{peak_viewers / 1e6:g} M viewers, {sale}", figures)


if __name__ == "__main__":
    viewers, sale = sys.argv[1:3]
    print(json.dumps(measure_in_this_process(int(viewers), sale == "sale")))
