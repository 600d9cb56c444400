"""Request coalescing at the edge: one upstream fetch per object, whatever the audience."""

from __future__ import annotations

from tests.conftest import BASE, run

ONE_EDGE = ("tier.edge.nodes=1", "stream.bitrates_kbps=[800]", "scenario.duration_s=40")


def edge_fetches_per_unit(viewers: int, coalescing: bool) -> float:
    result = run(
        *ONE_EDGE,
        f"audience.peak_viewers={viewers}",
        f"tier.edge.coalescing={str(coalescing).lower()}",
    )
    units = 40 / (2.0 / 6)  # parts published during the run, one rendition
    return result["tiers"]["edge"]["fetches"] / units


def test_with_coalescing_one_fetch_per_part_per_edge_whatever_the_viewers() -> None:
    few = edge_fetches_per_unit(20, coalescing=True)
    many = edge_fetches_per_unit(1000, coalescing=True)
    # Every part of the run is fetched once (a few more from the viewers' starting window).
    assert 0.9 <= few <= 1.1
    assert 0.9 <= many <= 1.1


def test_without_coalescing_fetches_grow_with_viewers() -> None:
    few = edge_fetches_per_unit(20, coalescing=False)
    many = edge_fetches_per_unit(1000, coalescing=False)
    assert many > 10 * few
    assert many > 100


def test_shield_tier_sees_one_fetch_per_part_from_each_edge() -> None:
    result = run(
        "scenario.duration_s=40",
        "stream.bitrates_kbps=[800]",
        "audience.peak_viewers=500",
        base={
            **BASE,
            "tier": [
                {"name": "origin", "nodes": 1, "egress_gbps": 10, "rtt_ms": 5},
                {"name": "shield", "nodes": 1, "egress_gbps": 10, "rtt_ms": 10},
                {"name": "edge", "nodes": 4, "egress_gbps": 10, "rtt_ms": 20},
            ],
        },
    )
    units = 40 / (2.0 / 6)
    # Four edges each fetch every part once from the one shield, which fetches it once.
    assert result["tiers"]["edge"]["fetches"] / (4 * units) <= 1.1
    assert result["tiers"]["shield"]["fetches"] / units <= 1.1
    assert result["tiers"]["origin"]["requests"] <= 1.1 * units


def test_many_small_streams_lower_the_edge_hit_ratio() -> None:
    def hit_ratio(streams: int) -> float:
        result = run(
            f"hosts.count={streams}",
            "audience.peak_viewers=1000",
            "scenario.duration_s=40",
            "tier.edge.nodes=4",
        )
        return float(result["tiers"]["edge"]["hit_ratio"])

    one, many = hit_ratio(1), hit_ratio(500)
    # Each edge fetches every part of every stream its viewers watch: spread 1,000 viewers
    # over 500 streams and most requests have nobody to share a fetch with.
    assert one > 0.98
    assert many < 0.8


def test_streams_spread_over_every_parent_node() -> None:
    """Each stream's objects go to one parent; many streams must use all of them, whatever the
    node count (a multiplier sharing a factor with it would leave nodes idle)."""
    import numpy as np

    from sim.exact.model import Model
    from sim.scenario import load_scenario

    scenario = load_scenario(
        "scenarios/singles-day-peak.toml",
        ["audience.peak_viewers=1000", "tier.1.nodes=30", "tier.2.nodes=60", "fault.0.count=2"],
    )
    model = Model(scenario, np.random.default_rng(1))
    shields = model.tiers[1]
    edge = model.tiers[2][0]
    assert edge.parent_of is not None
    renditions = len(model.unit_bits)
    used = {edge.parent_of(stream * renditions).index for stream in range(scenario.hosts.count)}
    assert used == {node.index for node in shields}
