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


def scale_overrides(scenario: Scenario, scale: float, edges: int | None = None) -> list[str]:
    """KEY=VALUE overrides that turn `scenario` into its scaled, relay-shaped version (with
    `edges` edges when given: a running relay's)."""
    if not 0.0 < scale <= 1.0:
        raise ScenarioError("--scale", f"must be in (0, 1]; given {scale}")
    bad = [f.kind for f in scenario.faults if f.kind not in FAULT_KINDS]
    if bad:
        raise ScenarioError(
            "fault.kind",
            f"a bench makes only {', '.join(FAULT_KINDS)} faults real; this scenario has {bad[0]}",
        )
    last = scenario.tiers[-1].name
    if any(f.tier not in (None, last) for f in scenario.faults):
        raise ScenarioError(
            "fault.tier", f"a bench takes down edges of the last tier ({last}) only"
        )
    if scenario.stream.protocol == "webrtc":
        raise ScenarioError("stream.protocol", "the relay does not serve webrtc")
    audience = scenario.audience
    edge_tier = scenario.tiers[-1]
    n_edges = min(edge_tier.nodes, EDGES_MAX) if edges is None else edges
    out = [
        f"audience.peak_viewers={max(1, round(audience.peak_viewers * scale))}",
        f"hosts.count={min(scenario.hosts.count, HOSTS_MAX)}",
        f"stream.bitrates_kbps=[{min(scenario.stream.bitrates_kbps)}]",
        "stream.encoder_delay_s=0.0",
    ]
    for tier in scenario.tiers[:-1]:
        out.append(f"tier.{tier.name}.nodes=1")
    out.append(f"tier.{edge_tier.name}.nodes={n_edges}")
    for i, fault in enumerate(scenario.faults):
        count = max(1, math.floor(fault.count * n_edges / edge_tier.nodes))
        out.append(f"fault.{i}.count={min(count, n_edges - 1)}")
    for i, sale in enumerate(scenario.sales):
        out.append(f"sale.{i}.stock={max(1, round(sale.stock * scale))}")
    for i, lottery in enumerate(scenario.lotteries):
        out.append(f"lottery.{i}.winners={max(1, round(lottery.winners * scale))}")
    return out


def scaled(scenario: Scenario, scale: float, edges: int | None = None) -> Scenario:
    return parse_scenario(scenario.resolved(), scale_overrides(scenario, scale, edges))


RELAY_UP_SEGMENT_S = 2.0
"""Segment length of the origin `livesim relay up` starts."""


def check_attachable(scenario: Scenario) -> None:
    """A (scaled) scenario a running `livesim relay up` can serve as it is, or ScenarioError."""
    if len(scenario.tiers) != 2:
        raise ScenarioError(
            "tier",
            f"`livesim relay up` runs an origin and edges; this scenario has {len(scenario.tiers)} "
            "tiers: drop --urls and the bench starts a relay of that shape",
        )
    if scenario.faults:
        raise ScenarioError(
            "fault", "faults need a relay the bench starts (it restarts killed edges): drop --urls"
        )
    if abs(scenario.stream.segment_s - RELAY_UP_SEGMENT_S) > 1e-9:
        raise ScenarioError(
            "stream.segment_s",
            f"`livesim relay up` makes {RELAY_UP_SEGMENT_S:g} s segments; this scenario has "
            f"{scenario.stream.segment_s:g} s: drop --urls",
        )


REQUESTS_PER_CORE_PER_S = 3_500.0
"""Viewer requests per second that one core of the bench machine carries for the relay and the
load generator together, with the load generator's event loop still on time: 2 cores carried
1,170 LL-HLS viewers (7,000 requests/s) with a loop lag p99 of 45-55 ms, and 3,000 (18,000
requests/s) not (lag p99 350 ms)."""

PUSHED_PART_COST = 0.25
"""A pushed part costs about a quarter of a request: 2,000 push viewers of 0.2 s parts (10,000
parts/s) ran with a loop lag p99 of 4 ms and 6 % of a core per load process."""


def requests_per_viewer_per_s(scenario: Scenario) -> float:
    """Requests each viewer makes per second: a playlist and a media request per part (LL-HLS)
    or segment (HLS); for push, its parts at PUSHED_PART_COST each."""
    stream = scenario.stream
    if stream.protocol == "hls":
        return 2.0 / stream.segment_s
    if stream.protocol == "ll-hls":
        return 2.0 / stream.part_s
    return PUSHED_PART_COST / stream.part_s


def largest_scale(scenario: Scenario, cores: int) -> float:
    """The largest scale (3 significant digits, at most 1) this machine carries."""
    rate = scenario.audience.peak_viewers * requests_per_viewer_per_s(scenario)
    scale = REQUESTS_PER_CORE_PER_S * cores / rate
    return min(1.0, float(f"{scale:.3g}"))
