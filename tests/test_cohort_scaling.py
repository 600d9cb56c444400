"""The cohort engine's cost does not grow with the number of viewers (checked without timing).

The shipped festival scenario, shortened to 90 s and without its flash sale (whose audience
snapshot is one latency per viewer by design), runs at 1 M and at 10 M peak viewers: the engine
keeps the same state arrays and the same peak of traced memory, while the audience it simulates
is ten times larger.
"""

from __future__ import annotations

import dataclasses
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from sim.cohort.model import CohortModel
from sim.measurements import Measurements
from sim.scenario import load_scenario

FESTIVAL = Path(__file__).resolve().parent.parent / "scenarios" / "singles-day-peak.toml"
SHORT = ("scenario.duration_s=90", "sale.0.at_s=60", "fault.0.at_s=40", "fault.0.duration_s=30")


@dataclasses.dataclass(frozen=True)
class Run:
    shapes: dict[str, tuple[int, ...]]
    """Shape of every array the model holds after the run."""
    traced_peak_bytes: int
    """tracemalloc's peak over model build and run, above what was allocated before."""
    measurements: Measurements


def run_at(peak_viewers: int) -> Run:
    scenario = load_scenario(FESTIVAL, (*SHORT, f"audience.peak_viewers={peak_viewers}"))
    scenario = dataclasses.replace(scenario, sales=())
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        model = CohortModel(scenario, np.random.default_rng(11))
        m = model.run()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        if not tracing:
            tracemalloc.stop()
    shapes = {k: v.shape for k, v in vars(model).items() if isinstance(v, np.ndarray)}
    return Run(shapes, peak - before, m)


@pytest.fixture(scope="module")
def runs() -> dict[int, Run]:
    return {n: run_at(n) for n in (1_000_000, 10_000_000)}


def test_state_arrays_keep_their_shapes(runs: dict[int, Run]) -> None:
    small, large = runs[1_000_000].shapes, runs[10_000_000].shapes
    assert "counts" in small and len(small["counts"]) == 4
    assert small == large


def test_traced_memory_peak_does_not_grow_with_viewers(runs: dict[int, Run]) -> None:
    small, large = runs[1_000_000].traced_peak_bytes, runs[10_000_000].traced_peak_bytes
    assert small > 0
    assert large <= 1.2 * small


def test_ten_times_the_viewers_are_simulated(runs: dict[int, Run]) -> None:
    ratio = runs[10_000_000].measurements.peak_viewers / runs[1_000_000].measurements.peak_viewers
    assert ratio == pytest.approx(10.0, rel=0.05)


@pytest.mark.parametrize("peak_viewers", [1_000_000, 10_000_000])
def test_viewer_curve_is_consistent(runs: dict[int, Run], peak_viewers: int) -> None:
    m = runs[peak_viewers].measurements
    assert (m.viewers >= 0).all()
    assert m.viewers.max() > 0.4 * peak_viewers
    assert m.watched_s == pytest.approx(float(m.viewers.sum()) * m.bin_s, rel=0.01)
