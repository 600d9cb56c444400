"""A scenario scaled to what one machine's loopback relay can carry.

`livesim bench` and `livesim bench --compare` run the same scaled scenario in both worlds: the
audience, stock and winners shrink by the scale factor; the delivery tree becomes the relay's
(one origin, one node per middle tier, at most `EDGES_MAX` edges, each its own process); the
stream becomes what the built-in publisher sends (one rendition, every part a key frame, each
part sent when its last frame is captured, so no encoder delay).
"""

from __future__ import annotations

import math

from sim.errors import ScenarioError
from sim.scenario import Scenario, parse_scenario

EDGES_MAX = 8
"""Edge processes a bench starts at most (a 2-core machine carries them with the load)."""

HOSTS_MAX = 4
"""Streams a bench publishes at most."""

FAULT_KINDS = ("edge-down",)
"""Faults a bench can make real (an edge process is killed, then started again)."""


def scale_overrides(scenario: Scenario, scale: float) -> list[str]:
    """KEY=VALUE overrides that turn `scenario` into its scaled, relay-shaped version."""
    if not 0.0 < scale <= 1.0:
        raise ScenarioError("--scale", f"must be in (0, 1]; given {scale}")
    bad = [f.kind for f in scenario.faults if f.kind not in FAULT_KINDS]
    if bad:
        raise ScenarioError(
            "fault.kind",
            f"a bench makes only {', '.join(FAULT_KINDS)} faults real; this scenario has {bad[0]}",
        )
    if scenario.stream.protocol == "webrtc":
        raise ScenarioError("stream.protocol", "the relay does not serve webrtc")
    audience = scenario.audience
    edges = scenario.tiers[-1]
    n_edges = min(edges.nodes, EDGES_MAX)
    out = [
        f"audience.peak_viewers={max(1, round(audience.peak_viewers * scale))}",
        f"hosts.count={min(scenario.hosts.count, HOSTS_MAX)}",
        f"stream.bitrates_kbps=[{min(scenario.stream.bitrates_kbps)}]",
        "stream.encoder_delay_s=0.0",
    ]
    for tier in scenario.tiers[:-1]:
        out.append(f"tier.{tier.name}.nodes=1")
    out.append(f"tier.{edges.name}.nodes={n_edges}")
    for i, fault in enumerate(scenario.faults):
        count = max(1, math.floor(fault.count * n_edges / edges.nodes))
        out.append(f"fault.{i}.count={min(count, n_edges - 1)}")
    for i, sale in enumerate(scenario.sales):
        out.append(f"sale.{i}.stock={max(1, round(sale.stock * scale))}")
    for i, lottery in enumerate(scenario.lotteries):
        out.append(f"lottery.{i}.winners={max(1, round(lottery.winners * scale))}")
    return out


def scaled(scenario: Scenario, scale: float) -> Scenario:
    return parse_scenario(scenario.resolved(), scale_overrides(scenario, scale))


REQUESTS_PER_CORE_PER_S = 3_500.0
"""Viewer requests per second (a pushed part counts as one) that one core of the bench machine
carries for the relay and the load generator together, with the load generator's event loop
still on time: 2 cores carried 1,000 LL-HLS viewers (6,000 requests/s) with a loop lag p99 of
60-70 ms and 3,000 (18,000 requests/s) not (lag p99 350 ms)."""


def requests_per_viewer_per_s(scenario: Scenario) -> float:
    """Requests each viewer makes per second: a playlist and a media request per part (LL-HLS)
    or segment (HLS); one pushed part (push)."""
    stream = scenario.stream
    if stream.protocol == "hls":
        return 2.0 / stream.segment_s
    if stream.protocol == "ll-hls":
        return 2.0 / stream.part_s
    return 1.0 / stream.part_s


def largest_scale(scenario: Scenario, cores: int) -> float:
    """The largest scale (3 significant digits, at most 1) this machine carries."""
    rate = scenario.audience.peak_viewers * requests_per_viewer_per_s(scenario)
    scale = REQUESTS_PER_CORE_PER_S * cores / rate
    return min(1.0, float(f"{scale:.3g}"))
