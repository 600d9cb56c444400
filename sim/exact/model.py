"""The exact engine: one SimPy process per viewer, driving relay.core's edge cache.

Phases, desmod-style: build the component tree (tiers of nodes, the publish schedule, the
audience), run the environment, collect the measurements.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import numpy as np
import simpy

from sim.audience import Arrivals, draw_arrivals
from sim.events import start_scenario_events
from sim.exact.node import Node, OriginNode
from sim.exact.schedule import (
    Network,
    Schedule,
    build_schedule,
    draw_network,
    hold_back_units,
    playlist_bytes,
)
from sim.exact.viewer import Session, viewer
from sim.measurements import Measurements, TierMeasurements, viewer_curve
from sim.metrics import Histogram, time_bins
from sim.scenario import Scenario

_DRAW_POOL = 65_536
_SPREAD = 1_000_003
"""A prime above any tier's node count: streams hashed with it reach every parent node."""
_PROGRESS_STEPS = 200


@dataclass(frozen=True)
class Draws:
    """What one replication of the exact engine draws before it runs, in this order."""

    network: Network
    arrivals: Arrivals
    viewer_rtt_s: np.ndarray
    """Per viewer: round trip to its edge."""
    viewer_rate_bps: np.ndarray
    """Per viewer: access-link rate."""
    edge_draws: np.ndarray
    """Per viewer: uniform [0, 1) picking its first edge (edge int(draw * alive edges))."""


def draw_replication(scenario: Scenario, rng: np.random.Generator) -> Draws:
    """The network and audience of a replication (a bench drives the same audience)."""
    network = draw_network(scenario, rng)
    duration_s = scenario.scenario.duration_s
    arrivals = draw_arrivals(scenario.audience, scenario.hosts, duration_s, rng)
    n = len(arrivals)
    return Draws(
        network=network,
        arrivals=arrivals,
        viewer_rtt_s=scenario.tiers[-1].rtt_ms.sample(rng, n) / 1e3,
        viewer_rate_bps=scenario.audience.last_mile_mbps.sample(rng, n) * 1e6,
        edge_draws=rng.random(n),
    )


class Model:
    """Everything one replication of the exact engine needs, built from a scenario and a seed."""

    def __init__(self, scenario: Scenario, rng: np.random.Generator) -> None:
        self.scenario = scenario
        self.rng = rng
        self.env = simpy.Environment()
        duration_s = scenario.scenario.duration_s
        self.bin_s, self.n_bins = time_bins(duration_s)
        self.protocol = scenario.stream.protocol

        n_streams = scenario.hosts.count
        draws = draw_replication(scenario, rng)
        self.network = draws.network
        self.schedule: Schedule = build_schedule(scenario, self.network)
        unit_s = self.unit_s = self.schedule.unit_s
        self.rendition_bps = [kbps * 1e3 for kbps in scenario.stream.bitrates_kbps]
        self.unit_bits = [bps * unit_s for bps in self.rendition_bps]
        self.key_stride = n_streams * len(self.unit_bits)
        self.playlist_bits = 8.0 * playlist_bytes(scenario)
        self.hold_back_units = hold_back_units(scenario)
        self.requests_per_unit = 0 if self.protocol == "http-flv" else 2
        """LL-HLS and HLS: a playlist (blocking or polled) and a media request per unit."""
        self.abr_safety = scenario.player.abr_safety
        self.startup_buffer_s = (
            scenario.player.push_buffer_s if self.protocol == "http-flv" else 0.0
        )

        self.tiers: list[list[Node]] = [self._build_tier(i) for i in range(len(scenario.tiers))]
        self._link_tiers()
        self.edges = self.tiers[-1]
        self.alive_edges: list[Node] = list(self.edges)

        self.arrivals: Arrivals = draws.arrivals
        n = len(self.arrivals)
        self.viewer_rtt_s = draws.viewer_rtt_s
        self.viewer_rate_bps = draws.viewer_rate_bps
        self.edge_draws = draws.edge_draws
        self._pool = [float(x) for x in rng.random(_DRAW_POOL)]
        self._pool_i = 0

        self.replay = Histogram()
        self.join = Histogram()
        self.rebuffer_bins = [0.0] * self.n_bins
        self.stall_s = 0.0
        self.play_start_s = np.full(n, np.nan)
        self.watching: dict[int, Session] = {}
        """Sessions of the viewers present now, by viewer id."""
        self.sale_audiences: list[np.ndarray] = []
        self.lottery_audiences: list[np.ndarray] = []

    # -- build ---------------------------------------------------------------------------------

    def _build_tier(self, i: int) -> list[Node]:
        tier = self.scenario.tiers[i]
        rtt_s = self.network.rtt_s[i]
        service = self.network.service_s[i]
        common: dict[str, Any] = dict(
            tier_index=i,
            egress_bps=tier.egress_gbps * 1e9,
            workers=tier.workers,
            cache_objects=tier.cache_parts,
            n_bins=self.n_bins,
            bin_s=self.bin_s,
            bits_of=self._bits_of,
        )
        nodes: list[Node] = []
        for k in range(tier.nodes):
            if i == 0:
                node: Node = OriginNode(
                    self.env,
                    self._publish_of,
                    index=k,
                    service_s=np.roll(service, k),
                    coalescing=True,
                    rtt_to_parent_s=float(rtt_s[k]),
                    **common,
                )
            else:
                node = Node(
                    self.env,
                    index=k,
                    service_s=np.roll(service, k),
                    coalescing=tier.coalescing,
                    rtt_to_parent_s=float(rtt_s[k]),
                    **common,
                )
            nodes.append(node)
        return nodes

    def _link_tiers(self) -> None:
        for i in range(1, len(self.tiers)):
            parents = self.tiers[i - 1]
            for node in self.tiers[i]:
                node.parent_of = self._parent_picker(parents, i)
                parent = parents[node.index % len(parents)]
                node.chain_s = parent.chain_s + 0.5 * node.rtt_to_parent_s
                node.chain_rtt_s = parent.chain_rtt_s + node.rtt_to_parent_s

    def _parent_picker(self, parents: list[Node], tier_index: int) -> Callable[[int], Node]:
        """Objects of one stream go to one parent (best coalescing), the next alive one if down."""
        n_parents = len(parents)
        n_renditions = len(self.unit_bits)
        n_streams = self.scenario.hosts.count

        def parent_of(key: int) -> Node:
            stream = (key // n_renditions) % n_streams
            first = (stream * _SPREAD + tier_index) % n_parents
            for step in range(n_parents):
                node = parents[(first + step) % n_parents]
                if node.alive:
                    return node
            return parents[first]

        return parent_of

    def _bits_of(self, key: int) -> float:
        return self.unit_bits[key % len(self.unit_bits)]

    def _publish_of(self, key: int) -> float:
        unit, rest = divmod(key, self.key_stride)
        stream = rest // len(self.unit_bits)
        if unit >= self.schedule.units:
            return math.inf
        return float(self.schedule.publish_s[stream, unit])

    # -- helpers for viewers -------------------------------------------------------------------

    def pick_edge(self, draw: float) -> Node:
        alive = self.alive_edges
        if not alive:
            return self.edges[int(draw * len(self.edges))]
        return alive[int(draw * len(alive))]

    def draw(self) -> float:
        """A uniform number from a pre-drawn pool (failover choices)."""
        i = self._pool_i
        self._pool_i = (i + 1) % _DRAW_POOL
        return self._pool[i]

    def push_rendition(self, rate_bps: float) -> int:
        """Push viewers pick one rendition at connect time from their access rate."""
        budget = self.scenario.player.abr_safety * rate_bps
        chosen = 0
        for i, bps in enumerate(self.rendition_bps):
            if bps <= budget:
                chosen = i
        return chosen

    # -- run -----------------------------------------------------------------------------------

    def _spawn(self) -> Generator[simpy.Event, Any, None]:
        env = self.env
        a = self.arrivals
        at_s, leave_s, stream = a.at_s.tolist(), a.leave_s.tolist(), a.stream.tolist()
        rtt_s, rate_bps = self.viewer_rtt_s.tolist(), self.viewer_rate_bps.tolist()
        draws = self.edge_draws.tolist()
        for vid in range(len(at_s)):
            delay = at_s[vid] - env.now
            if delay > 0:
                yield env.timeout(delay)
            session = Session(
                self,
                vid=vid,
                leave_s=leave_s[vid],
                stream=stream[vid],
                rtt_s=rtt_s[vid],
                rate_bps=rate_bps[vid],
            )
            env.process(viewer(self, session, draws[vid]))

    def _fault(self, index: int) -> Generator[simpy.Event, Any, None]:
        fault = self.scenario.faults[index]
        tier_names = [t.name for t in self.scenario.tiers]
        nodes = self.tiers[tier_names.index(fault.tier or tier_names[-1])]
        if fault.kind == "origin-down":
            return  # publishing is delayed in the schedule; nothing to switch here
        chosen = [nodes[int(i)] for i in self.rng.choice(len(nodes), fault.count, replace=False)]
        yield self.env.timeout(fault.at_s)
        for node in chosen:
            if fault.kind == "edge-down":
                node.fail()
            else:
                node.egress.capacity_bps = node.nominal_egress_bps * fault.factor
        self._refresh_alive()
        yield self.env.timeout(fault.duration_s)
        for node in chosen:
            if fault.kind == "edge-down":
                node.recover()
            else:
                node.egress.capacity_bps = node.nominal_egress_bps
        self._refresh_alive()

    def _announce(self, at_s: float, into: list[np.ndarray]) -> Generator[simpy.Event, Any, None]:
        """At `at_s`, note the replay latency of every viewer who is playing."""
        yield self.env.timeout(at_s)
        into.append(
            np.array([s.latency_s for s in self.watching.values() if s.started], dtype=float)
        )

    def _refresh_alive(self) -> None:
        self.alive_edges = [n for n in self.edges if n.alive]

    def run(self, progress: Callable[[float], None] | None = None) -> Measurements:
        env = self.env
        env.process(self._spawn())
        start_scenario_events(
            env,
            self.scenario,
            self._fault,
            self._announce,
            self.sale_audiences,
            self.lottery_audiences,
        )
        duration_s = self.scenario.scenario.duration_s
        steps = _PROGRESS_STEPS if progress is not None else 1
        for k in range(1, steps + 1):
            env.run(until=duration_s * k / steps)
            if progress is not None:
                progress(k / steps)
        return self._collect()

    # -- collect -------------------------------------------------------------------------------

    def _collect(self) -> Measurements:
        duration_s = self.scenario.scenario.duration_s
        a = self.arrivals
        end_s = np.minimum(a.leave_s, duration_s)
        started = ~np.isnan(self.play_start_s) & (self.play_start_s < end_s)
        watched_s = float(np.sum(end_s[started] - self.play_start_s[started]))
        peak, curve = viewer_curve(a.at_s, end_s, self.bin_s, self.n_bins)
        tiers = []
        for spec, nodes in zip(self.scenario.tiers, self.tiers, strict=True):
            bits = np.array([n.bits_bins for n in nodes], dtype=float)
            requests = np.array([n.request_bins for n in nodes], dtype=float)
            fetched = np.array([n.fetched_bins for n in nodes], dtype=float)
            capacity_bps = spec.egress_gbps * 1e9
            tiers.append(
                TierMeasurements(
                    name=spec.name,
                    nodes=spec.nodes,
                    capacity_gbps=spec.egress_gbps * spec.nodes,
                    egress_bits=bits.sum(axis=0),
                    fetched_bits=fetched.sum(axis=0),
                    requests=requests.sum(axis=0),
                    peak_node_utilization=float(
                        bits.max(initial=0.0) / (capacity_bps * self.bin_s)
                    ),
                    cache_requests=sum(n.cache.requests for n in nodes),
                    fetches=sum(n.cache.fetches for n in nodes),
                )
            )
        return Measurements(
            sim_time_s=duration_s,
            bin_s=self.bin_s,
            replay=self.replay,
            join=self.join,
            stall_s=self.stall_s,
            watched_s=watched_s,
            rebuffer_s=np.array(self.rebuffer_bins),
            peak_viewers=peak,
            sessions=len(a),
            viewers=curve,
            tiers=tiers,
            sale_audiences=self.sale_audiences,
            lottery_audiences=self.lottery_audiences,
        )


def run_exact(
    scenario: Scenario,
    rng: np.random.Generator,
    progress: Callable[[float], None] | None = None,
) -> Measurements:
    """One replication of the exact engine."""
    return Model(scenario, rng).run(progress)
