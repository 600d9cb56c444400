"""Bits and viewer-seconds add up in both engines, on shipped scenarios scaled down."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sim.cohort.model import run_cohort
from sim.exact.model import run_exact
from sim.exact.schedule import unit_layout
from sim.measurements import Measurements, merge_replications
from sim.scenario import Scenario, load_scenario

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
SMALL = ["audience.peak_viewers=500", "scenario.duration_s=60"]
CASES = {
    "quickstart": [],  # two tiers, LL-HLS
    "edge-failure": ["fault.0.at_s=20", "fault.0.duration_s=20"],  # three tiers, 2 edges down
    "push-flv": [],
    "hls-classic": [],
}


def _scenario(name: str) -> Scenario:
    return load_scenario(SCENARIOS / f"{name}.toml", [*SMALL, *CASES[name]])


def _in_flight_bound_bits(scenario: Scenario, child_nodes: int) -> float:
    """Most bits a tier can have sent that its children have not received yet.

    With coalescing, a child node fetches each object once, and at the live edge only the newest
    unit (a part, a push chunk or, for classic HLS, a segment) of each stream and rendition is on
    its way: one unit of every rendition per child node and stream.
    """
    unit_s, _ = unit_layout(scenario)
    unit_bits = sum(scenario.stream.bitrates_kbps) * 1e3 * unit_s
    return child_nodes * scenario.hosts.count * unit_bits


ENGINES = {"exact": run_exact, "cohort": run_cohort}


@pytest.fixture(
    scope="module",
    params=[(name, engine) for name in CASES for engine in ENGINES],
    ids=lambda p: f"{p[0]}-{p[1]}",
)
def run(request: pytest.FixtureRequest) -> tuple[Scenario, Measurements]:
    name, engine = request.param
    scenario = _scenario(name)
    return scenario, ENGINES[engine](scenario, np.random.default_rng(scenario.scenario.seed))


def test_first_tier_fetches_nothing_from_a_parent(run: tuple[Scenario, Measurements]) -> None:
    _, m = run
    assert not m.tiers[0].fetched_bits.any()
    assert all(t.fetched_bits.shape == t.egress_bits.shape for t in m.tiers)


def test_bits_leaving_a_tier_arrive_at_the_next(run: tuple[Scenario, Measurements]) -> None:
    scenario, m = run
    for parent, child, spec in zip(m.tiers, m.tiers[1:], scenario.tiers[1:], strict=False):
        sent = np.cumsum(parent.egress_bits)
        arrived = np.cumsum(child.fetched_bits)
        assert arrived[-1] > 0.0
        # Bits arrive after they are sent, so by every bin boundary no more have arrived than
        # left; the rest are the objects on their way then (and at the end of the run, which
        # stops before they land). Sums of floats: a relative 1e-9 for rounding.
        slack = _in_flight_bound_bits(scenario, spec.nodes)
        assert np.all(arrived <= sent * (1 + 1e-9)), (parent.name, child.name)
        assert np.all(sent - arrived <= slack + 1e-9 * sent), (parent.name, child.name)
        # In total that remainder is a handful of objects against a minute of streaming.
        assert sent[-1] - arrived[-1] <= 0.01 * sent[-1]


def test_viewer_curve_and_watched_time_agree(run: tuple[Scenario, Measurements]) -> None:
    scenario, m = run
    assert np.all(m.viewers >= 0)
    assert m.viewers.max() <= m.peak_viewers
    integral_s = float(m.viewers.sum()) * m.bin_s
    # The curve counts the viewers present at each bin start, so each session's presence is
    # counted within one bin of its true length: the sum is within sessions * bin_s of the exact
    # integral of presence.
    grid_s = m.sessions * m.bin_s
    assert m.watched_s <= integral_s + grid_s
    # Presence minus watching is the time to first frame: the join times of the sessions that
    # started, and at most the whole run for the few that never got a frame.
    join_s = m.join.count * m.join.mean
    never_started = m.sessions - m.join.count
    assert never_started <= 0.01 * m.sessions
    gap_s = integral_s - m.watched_s
    assert gap_s >= join_s - grid_s
    assert gap_s <= join_s + grid_s + never_started * scenario.scenario.duration_s
    assert m.watched_s > 0.9 * integral_s


def test_replications_average_fetched_bits() -> None:
    scenario = _scenario("quickstart")
    runs = [run_exact(scenario, np.random.default_rng(seed)) for seed in (1, 2)]
    merged = merge_replications(runs)
    for i, tier in enumerate(merged.tiers):
        mean = (runs[0].tiers[i].fetched_bits + runs[1].tiers[i].fetched_bits) / 2
        np.testing.assert_allclose(tier.fetched_bits, mean)
    assert merged.tiers[1].fetched_bits.sum() > 0.0
