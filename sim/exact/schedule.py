"""When each media unit of each host stream is captured and published at the origin, and the
random parts of the network both engines share.

A *unit* is what a viewer fetches: a part for LL-HLS, a push chunk for HTTP-FLV, a whole segment
for classic HLS. Streams are already live when the run starts (units before t=0 exist), each with
its own phase. Publishing is limited by the host's uplink (the top rendition is uploaded, renditions
are transcoded at the origin) and delayed by origin outages; all of it is closed-form, so the whole
schedule is computed up front with numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from relay.core.playlist import render_playlist
from relay.core.stream import LiveStream
from sim.scenario import Scenario

PRE_ROLL_S = 60.0
"""Stream history that exists before the run starts."""

SERVICE_SAMPLES = 4096
"""Request service times drawn per tier and cycled through (a draw per request would be slow)."""


@dataclass(frozen=True)
class Network:
    """The streams' clocks and the nodes' round trips and service times for one replication.

    Both engines draw it first, from the replication's generator, so for one seed they see the
    same network (common random numbers: their differences are the models', not the draws').
    """

    ingest_rtt_s: np.ndarray
    """Per stream: the host's round trip to the origin."""
    phase_s: np.ndarray
    """Per stream: capture of its units' first frames, modulo the unit duration."""
    rtt_s: list[np.ndarray]
    """Per tier, per node: round trip to its parent (first tier: unused, ingest is per stream)."""
    service_s: list[np.ndarray]
    """Per tier: a cycle of request service times."""


def draw_network(scenario: Scenario, rng: np.random.Generator) -> Network:
    unit_s, _ = unit_layout(scenario)
    n_streams = scenario.hosts.count
    ingest_rtt_s = scenario.tiers[0].rtt_ms.sample(rng, n_streams) / 1e3
    phase_s = rng.uniform(0.0, unit_s, n_streams)
    rtt_s, service_s = [], []
    for tier in scenario.tiers:
        rtt_s.append(tier.rtt_ms.sample(rng, tier.nodes) / 1e3)
        service_s.append(tier.request_ms.sample(rng, SERVICE_SAMPLES) / 1e3)
    return Network(ingest_rtt_s=ingest_rtt_s, phase_s=phase_s, rtt_s=rtt_s, service_s=service_s)


def unit_layout(scenario: Scenario) -> tuple[float, int]:
    """(unit duration, units per segment) for the scenario's protocol.

    Parts are made equal and no longer than `part_s` (players reject a part longer than
    PART-TARGET), so a 2 s segment with 0.333 s parts has 6 parts of 0.3333 s: a part target
    within 1 % of a divisor of the segment is taken as that divisor.
    """
    stream = scenario.stream
    if stream.protocol == "hls":
        return stream.segment_s, 1
    ratio = stream.segment_s / stream.part_s
    per_segment = round(ratio) if abs(ratio - round(ratio)) <= 0.01 * ratio else math.ceil(ratio)
    per_segment = max(1, per_segment)
    return stream.segment_s / per_segment, per_segment


def hold_back_units(scenario: Scenario) -> int:
    """How many units behind the newest listed one a player starts."""
    player = scenario.player
    if scenario.stream.protocol == "hls":
        return math.ceil(player.hold_back_segments - 1e-9)
    if scenario.stream.protocol == "ll-hls":
        return math.ceil(player.part_hold_back_parts - 1e-9)
    return 1


def playlist_bytes(scenario: Scenario) -> int:
    """Size of a steady-state media playlist, rendered by relay.core for this stream layout."""
    if scenario.stream.protocol == "http-flv":
        return 0
    ll = scenario.stream.protocol == "ll-hls"
    unit_s, per_segment = unit_layout(scenario)
    segment_s = unit_s * per_segment
    stream = LiveStream(
        "sized",
        target_duration_s=segment_s,
        part_target_s=unit_s if ll else None,
    )
    for i in range(12 * per_segment):
        if ll:
            stream.add_part(unit_s, independent=True, now=i * unit_s)
            if (i + 1) % per_segment == 0:
                stream.close_segment(now=i * unit_s)
        else:
            stream.add_segment(segment_s, now=i * segment_s)
    return len(render_playlist(stream).encode())


@dataclass(frozen=True)
class Schedule:
    unit_s: float
    units_per_segment: int
    start_s: np.ndarray
    """Capture time of unit 0, per stream (negative: streams are already live)."""
    publish_s: np.ndarray
    """Shape (streams, units): when each unit is complete at its origin node."""

    @property
    def units(self) -> int:
        return int(self.publish_s.shape[1])

    def capture_s(self, stream: int, unit: int) -> float:
        """Capture time of the first frame of a unit."""
        return float(self.start_s[stream]) + unit * self.unit_s

    def live_unit(self, stream: int, t_s: float) -> int:
        """Newest unit published at or before `t_s` (-1 if none)."""
        return int(np.searchsorted(self.publish_s[stream], t_s, side="right")) - 1


def build_schedule(scenario: Scenario, network: Network) -> Schedule:
    """Publish times for every unit of every stream, for the whole run."""
    unit_s, per_segment = unit_layout(scenario)
    n_streams = scenario.hosts.count
    duration_s = scenario.scenario.duration_s
    pre_units = math.ceil(PRE_ROLL_S / unit_s)
    n_units = pre_units + math.ceil(duration_s / unit_s) + 2
    start_s = network.phase_s - pre_units * unit_s
    g = np.arange(n_units, dtype=float)
    ready = start_s[:, None] + (g[None, :] + 1.0) * unit_s + scenario.stream.encoder_delay_s
    top_bits = max(scenario.stream.bitrates_kbps) * 1e3 * unit_s
    upload_s = top_bits / (scenario.hosts.uplink_mbps * 1e6)
    # end_g = max(ready_g, end_{g-1}) + u  ==  u (g+1) + cummax(ready_k - u k)
    done = upload_s * (g + 1.0) + np.maximum.accumulate(ready - upload_s * g, axis=1)
    publish = done + 0.5 * network.ingest_rtt_s[:, None]
    origin_nodes = scenario.tiers[0].nodes
    for fault in scenario.faults:
        if fault.kind != "origin-down":
            continue
        down = np.arange(n_streams) % origin_nodes < fault.count
        end_s = fault.at_s + fault.duration_s
        hit = down[:, None] & (publish >= fault.at_s) & (publish < end_s)
        publish = np.where(hit, end_s, publish)
    publish = np.maximum.accumulate(publish, axis=1)
    return Schedule(
        unit_s=unit_s, units_per_segment=per_segment, start_s=start_s, publish_s=publish
    )
