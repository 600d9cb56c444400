"""The cohort engine: viewers as counts, advanced one media unit at a time with numpy.

State is `counts[g, h, k, b]`: viewers on edge group g, watching a stream of popularity band h,
in access-rate class k, whose replay latency is in bucket b. Each step (one part for LL-HLS, one
push chunk, one segment for classic HLS):

1. faults that start or end now move viewers and change capacities (SimPy processes, as in the
   exact engine);
2. departures thin every cell by the same binomially drawn fraction;
3. delivery is computed per cell from the loads: edge and upper-tier egress as fluid queues with
   the burst a unit makes when it lands, coalesced fetches per (stream, rendition, node), ABR's
   settled rendition per class; when a unit's delivery delay passes a viewer's latency the
   viewer stalls and its latency becomes the delay (`grid.max_with`);
4. every viewer present plays one unit at its latency (the replay histogram, weighted);
5. arrivals are drawn as a Poisson count and spread over cells; their join time and starting
   latency follow the same formulas as the exact engine's join, with per-viewer spread from
   kernels.

Cost per step depends on groups x bands x classes x buckets, never on the number of viewers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from typing import Any

import numpy as np
import simpy
from scipy.signal import fftconvolve

from sim.audience import expected_arrivals
from sim.cohort.grid import JoinKernel, Kernel, LatencyGrid, max_with, step_cdf
from sim.cohort.population import EdgeGroups, StreamBands, edge_groups, rate_classes, stream_bands
from sim.events import start_scenario_events
from sim.exact.schedule import (
    PRE_ROLL_S,
    draw_network,
    hold_back_units,
    playlist_bytes,
    unit_layout,
)
from sim.measurements import Measurements, TierMeasurements
from sim.metrics import Histogram, time_bins
from sim.scenario import Fault, Scenario

RATE_CLASSES = 24
MAX_BANDS = 8
GRID_BUCKETS = 256
JOIN_BUCKETS = 384
_KERNEL_SAMPLES = 8192
_WATCH_SAMPLES = 1_000_000
_ABR_ROUNDS = 4
_PHASES_PER_BAND = 32
_KEY_SECONDS = 2e-3
_KEY_PROBABILITY = 0.01
_KEY_LOG_RATE = 0.05
"""How far a row's join conditions may drift before its profiles are recomputed."""
_PROGRESS_STEPS = 200


class CohortModel:
    """One replication of the cohort engine, built from a scenario and a seed."""

    def __init__(self, scenario: Scenario, rng: np.random.Generator) -> None:
        self.scenario = scenario
        self.rng = rng
        self.env = simpy.Environment()
        s = scenario
        duration_s = s.scenario.duration_s
        self.bin_s, self.n_bins = time_bins(duration_s)
        self.protocol = s.stream.protocol
        unit_s, _ = unit_layout(s)
        self.unit_s = unit_s
        self.n_steps = max(1, math.ceil(duration_s / unit_s - 1e-9))
        self.step_edges_s = np.minimum(np.arange(self.n_steps + 1) * unit_s, duration_s)

        self.rendition_bps = np.array(s.stream.bitrates_kbps) * 1e3
        self.unit_bits = self.rendition_bps * unit_s
        self.playlist_bits = 8.0 * playlist_bytes(s)
        self.hold_back = hold_back_units(s)
        push = self.protocol == "http-flv"
        self.requests_per_unit = 0 if push else 2
        self.buffer_s = s.player.push_buffer_s if push else 0.0
        self.failover_rtts = 2.0 if push else 2.5
        """Round trips from reconnecting to a new edge to the first unit from it."""

        # The streams' clocks and the network as the exact engine draws them for this seed.
        network = draw_network(s, rng)
        self.stream_ingest_s = 0.5 * network.ingest_rtt_s
        self.stream_start_s = network.phase_s
        """Capture time of each stream's first unit, modulo the unit clock."""
        self.tier_specs = s.tiers
        chain_s = np.zeros(1)
        chain_rtt_s = np.zeros(1)
        self.service_s = [tier.request_ms.mean() / 1e3 for tier in s.tiers]
        for i, rtt_s in enumerate(network.rtt_s):
            if i > 0:
                parent = np.arange(rtt_s.size) % chain_s.size
                chain_s = chain_s[parent] + 0.5 * rtt_s
                chain_rtt_s = chain_rtt_s[parent] + rtt_s
            else:
                chain_s, chain_rtt_s = np.zeros(rtt_s.size), np.zeros(rtt_s.size)
        edge_chain_s = chain_s
        edge_rtt_s = rtt_s + self.service_s[-2] if len(s.tiers) > 1 else chain_rtt_s
        self.chain_s = float(edge_chain_s.mean())

        safety = s.player.abr_safety
        classes = rate_classes(s, RATE_CLASSES, rng, self.rendition_bps / safety)
        self.rates_bps = classes.rate_bps
        self.class_share = classes.share
        self.bands: StreamBands = stream_bands(s, MAX_BANDS)
        self.groups: EdgeGroups = edge_groups(s, rng)
        G, H, K = self.groups.nodes.size, self.bands.streams.size, self.rates_bps.size
        self.shape = (G, H, K)
        # The first unit: the lowest rendition (HLS, LL-HLS) or the one a push player picks.
        self.push_rendition = np.clip(
            np.searchsorted(self.rendition_bps, safety * self.rates_bps, side="right") - 1, 0, None
        )
        first = self.push_rendition if push else np.zeros(K, dtype=np.intp)
        self.first_rendition = first
        self.join_bits = self.unit_bits[first]

        # Per-viewer spread: phase against the unit clock, the viewer's round trips,
        # propagation to its edge, the host's ingest leg, the first unit over the access link.
        m = _KERNEL_SAMPLES
        viewer_rtt_s = s.tiers[-1].rtt_ms.sample(rng, m) / 1e3
        phase_s = rng.uniform(0.0, unit_s, m)
        to_edge_s = edge_chain_s[rng.integers(0, edge_chain_s.size, m)]
        miss_s = edge_rtt_s
        cold_s = float(chain_rtt_s.mean())
        ingest_s = 0.5 * s.tiers[0].rtt_ms.sample(rng, m) / 1e3
        rate_s = classes.samples_bps[:, rng.integers(0, classes.samples_bps.shape[1], m)]
        first_link_s = self.unit_bits[first][:, None] / rate_s
        self.half_rtt_s = 0.5 * float(viewer_rtt_s.mean())
        self.ingest_s = float(ingest_s.mean())
        request_rtts = 0.0 if push else 1.0
        self.join_kernel = JoinKernel(
            to_edge_s + ingest_s + first_link_s,
            viewer_rtt_s,
            unit_s,
            miss_s,
            cold_s,
            request_rtts=request_rtts,
            latency=True,
        )
        self.join_time_kernel = JoinKernel(
            first_link_s,
            viewer_rtt_s,
            unit_s,
            miss_s,
            cold_s,
            request_rtts=request_rtts,
            latency=False,
        )
        self._resume_rtt_s = self.failover_rtts * viewer_rtt_s
        """Per-viewer part of the delay from reconnecting to the first unit from a new edge."""
        self.outage_kernel = Kernel(-phase_s + 0.5 * viewer_rtt_s + to_edge_s + ingest_s)

        top_bits = float(self.unit_bits.max())
        upload_s = top_bits / (s.hosts.uplink_mbps * 1e6)
        self.publish_lag_s = unit_s + s.stream.encoder_delay_s + upload_s
        self.stream_lag_s = self.publish_lag_s + self.stream_ingest_s
        """Per stream: capture of a unit's first frame to its arrival at the origin."""
        """Capture of a unit's first frame to its arrival at the origin, less the ingest leg."""
        self.uplink_drift = max(0.0, upload_s / unit_s - 1.0)
        """An uplink slower than the top rendition falls further behind every unit."""

        lowest_s = self.publish_lag_s + self.join_kernel.low_s
        self.grid = LatencyGrid(0.5 * lowest_s, GRID_BUCKETS)
        self.join_grid = LatencyGrid(0.5 * self.join_time_kernel.low_s, JOIN_BUCKETS)
        self.counts = np.zeros((G, H, K, self.grid.size))
        self.viewers = np.zeros((G, H, K))
        self.rendition = np.zeros((G, H, K), dtype=np.intp)
        self.floor_bucket = self.grid.size - 1
        """No viewer has a latency below this bucket (a conservative bound)."""

        self.alive = np.ones(G, dtype=bool)
        self.edge_factor = np.ones(G)
        self.tier_alive = [float(t.nodes) for t in s.tiers]
        self.tier_factor = [1.0] * len(s.tiers)
        self._egress_shift: dict[int, float] = {}
        """Edge egress moved between steps by failovers (step -> bits added or removed)."""
        self.stranded_since: float | None = None
        """When the last edge died with viewers on it (they wait for one to come back)."""
        self.outage_since: dict[int, float] = {}
        """Origin-down faults in progress: fault index -> start time."""
        self.skipped_steps = np.zeros(H)
        """Steps a band's viewers waited on an origin outage (their units play when it ends)."""

        self.edge_backlog_bits = np.zeros(G)
        self.edge_backlog_work_s = np.zeros(G)
        self.tier_backlog_bits = np.zeros(len(s.tiers))
        self.edge_delay_s = np.zeros((G, H))
        """Queueing at the edge before a viewer's turn in a burst (backlog, own service)."""
        self.edge_burst_s = np.zeros((G, H))
        """How long an edge takes to send a newly landed unit to all of a stream's viewers."""
        self.join_delay_s = np.zeros(G)
        self.join_lock_s = np.zeros((G, H))
        self.join_busy = np.zeros((G, H))
        self.join_burst_s = np.zeros((G, H))
        self.upper_delay_s = np.zeros(H)
        """Service and backlog at the tiers above the edges, per band."""
        self.upper_burst_s = np.zeros(H)
        """How long the tiers above take to send a unit to all the nodes that wait for it."""

        self._arrivals = expected_arrivals(s.audience, duration_s, self.step_edges_s)
        self._departure_hazard = self._hazard()
        self._profile = np.zeros((G, H, K, self.grid.size))
        """Where a joiner's starting latency falls, per cell (recomputed when it moves)."""
        self._join_profile = np.zeros((G, H, K, self.join_grid.size))
        self._join_stall = np.zeros((G, H, K))
        """Rebuffering per joiner when it catches up, per cell (seconds)."""
        self._profile_key: np.ndarray | None = None
        """The join conditions each (group, band) row's profiles were computed for."""
        self._profile_floor = self.grid.size - 1
        self._last_joins = np.zeros((G, H))
        self._catch_up = np.zeros((G, H, self.unit_bits.size))
        self._catch_up_above = np.zeros((H, self.unit_bits.size))
        """Fetches of hold-back units by the first joiners of streams new to an edge."""

        # Measurements.
        self.replay_counts = np.zeros(self.grid.size)
        self.join_counts = np.zeros(self.join_grid.size)
        self.stall_s = 0.0
        self.watched_s = 0.0
        self.rebuffer_bins = np.zeros(self.n_bins)
        self.viewer_bins = np.zeros(self.n_bins)
        self.peak_viewers = 0.0
        self.sessions = 0
        n_tiers = len(s.tiers)
        self.egress_bins = np.zeros((n_tiers, self.n_bins))
        self.fetched_bins = np.zeros((n_tiers, self.n_bins))
        self.request_bins = np.zeros((n_tiers, self.n_bins))
        self.node_bits_bins = np.zeros((n_tiers, self.n_bins))
        self.cache_requests = np.zeros(n_tiers)
        self.fetches = np.zeros(n_tiers)
        self.sale_audiences: list[np.ndarray] = []
        self.lottery_audiences: list[np.ndarray] = []

    # -- audience law ---------------------------------------------------------------------------

    def _hazard(self) -> np.ndarray:
        """Per step, the expected fraction of present viewers who leave (any watch-time law)."""
        n = self.n_steps
        law = self.scenario.audience.watch_s
        watch_s = law.sample(self.rng, _WATCH_SAMPLES)
        watch_s *= law.mean() / watch_s.mean()  # the sample's mean made exact
        lag = np.floor(self.rng.random(_WATCH_SAMPLES) + np.maximum(watch_s, 1e-3) / self.unit_s)
        lag = np.clip(lag, 1, n + 1).astype(np.intp)
        pmf = np.bincount(lag, minlength=n + 2)[: n + 1] / _WATCH_SAMPLES
        leaving = np.clip(fftconvolve(self._arrivals, pmf)[:n], 0.0, None)
        present = np.concatenate(([0.0], np.cumsum(self._arrivals - leaving)[:-1]))
        with np.errstate(divide="ignore", invalid="ignore"):
            hazard = np.where(present > 1e-9, leaving / present, 0.0)
        return np.clip(hazard, 0.0, 1.0)

    # -- faults ---------------------------------------------------------------------------------

    def _fault(self, index: int) -> Generator[simpy.Event, Any, None]:
        fault = self.scenario.faults[index]
        yield self.env.timeout(fault.at_s)
        self._fault_starts(index, fault)
        yield self.env.timeout(fault.duration_s)
        self._fault_ends(index, fault)

    def _fault_starts(self, index: int, fault: Fault) -> None:
        if fault.kind == "origin-down":
            self.outage_since[index] = fault.at_s
            return
        tier = [t.name for t in self.tier_specs].index(fault.tier or self.tier_specs[-1].name)
        if tier < len(self.tier_specs) - 1:
            if fault.kind == "edge-down":
                self.tier_alive[tier] -= fault.count
            else:
                self.tier_factor[tier] *= fault.factor
            return
        hit = self.groups.faults[:, index]
        if fault.kind == "link-degrade":
            self.edge_factor[hit] *= fault.factor
            return
        self.alive[hit] = False
        self._fail_over(hit)

    def _fault_ends(self, index: int, fault: Fault) -> None:
        if fault.kind == "origin-down":
            self._outage_over(index)
            return
        tier = [t.name for t in self.tier_specs].index(fault.tier or self.tier_specs[-1].name)
        if tier < len(self.tier_specs) - 1:
            if fault.kind == "edge-down":
                self.tier_alive[tier] += fault.count
            else:
                self.tier_factor[tier] /= fault.factor
            return
        hit = self.groups.faults[:, index]
        if fault.kind == "link-degrade":
            self.edge_factor[hit] /= fault.factor
        else:
            self.alive[hit] = True
            self._fail_over(np.zeros_like(hit))  # viewers stranded with no edge alive resume

    def _fail_over(self, failed: np.ndarray) -> None:
        """Viewers of dead groups reconnect to live ones: a stall of reconnect_s and more."""
        moving = failed | ~self.alive
        if not (self.viewers[moving].sum() > 0):
            return
        now = self.env.now
        if not self.alive.any():
            self.stranded_since = now if self.stranded_since is None else self.stranded_since
            return
        stranded_s = 0.0 if self.stranded_since is None else now - self.stranded_since
        self.stranded_since = None
        reconnect_s = self.scenario.player.reconnect_s
        shift = (
            self.upper_delay_s[None, :, None]
            + reconnect_s
            + stranded_s
            + self.join_delay_s[self.alive].mean()
            + self.unit_bits[self.rendition[moving]] / self.rates_bps
        )
        # Each viewer resumes with the unit it was waiting for: the next to land after `now`
        # on its stream's clock.
        capture_to_landing_s = self.stream_lag_s + self.chain_s
        wait_s = (self.stream_start_s + capture_to_landing_s - now) % self.unit_s
        behind_s = capture_to_landing_s - wait_s  # per stream: now minus that unit's capture
        new = np.empty_like(self.counts[moving])
        stall = np.zeros(new.shape[:-1])
        weights = self.scenario.hosts.popularity.weights(self.scenario.hosts.count)
        for h in range(self.bands.streams.size):
            mine = np.flatnonzero(self.bands.band_of == h)
            picked = self.rng.choice(
                mine, self._resume_rtt_s.size, p=weights[mine] / weights[mine].sum()
            )
            kernel = Kernel(behind_s[picked] + self._resume_rtt_s)
            cdf = kernel.cdf_at_edges(self.grid, shift[:, h, :])
            new[:, h], stall[:, h] = max_with(self.grid, self.counts[moving][:, h], cdf)
        self._rebuffer(float(stall.sum()), now + reconnect_s)
        # They receive nothing while they reconnect, then the units they missed at once.
        moved_bits = float(
            (
                self.viewers[moving] * (self.unit_bits[self.rendition[moving]] + self.playlist_bits)
            ).sum()
        )
        t = int(np.searchsorted(self.step_edges_s, now, side="right")) - 1
        back = int(np.searchsorted(self.step_edges_s, now + reconnect_s, side="right")) - 1
        for step in range(t + 1, min(back, self.n_steps - 1) + 1):
            self._egress_shift[step] = self._egress_shift.get(step, 0.0) - moved_bits
        if t + 1 <= back < self.n_steps:
            missed = moved_bits * (back - t)
            self._egress_shift[back] = self._egress_shift.get(back, 0.0) + missed
        share = self.groups.nodes * self.alive
        share = share / share.sum()
        self.counts[self.alive] += share[self.alive, None, None, None] * new.sum(axis=0)
        moved = self.viewers[moving].sum(axis=0)
        self.viewers[self.alive] += share[self.alive, None, None] * moved
        self.counts[moving] = 0.0
        self.viewers[moving] = 0.0
        self.floor_bucket = min(self.floor_bucket, _lowest_bucket(self.counts))

    def _outage_over(self, index: int) -> None:
        """An origin outage ends: the units it held back arrive at once, latency jumps."""
        start_s = self.outage_since.pop(index)
        band = self.bands.origin_down[:, self._outage_column(index)]
        now = self.env.now
        shift = (
            (now - start_s)
            + self.publish_lag_s
            + self.upper_delay_s[None, :, None]
            + self.edge_delay_s[:, :, None]
            + self.unit_bits[self.rendition] / self.rates_bps
        )[:, band]
        cdf = self.outage_kernel.cdf_at_edges(self.grid, shift)
        new, stall = max_with(self.grid, self.counts[:, band], cdf)
        self._rebuffer(float(stall.sum()), now)
        self.counts[:, band] = new
        # The units held back play now, at the new latency.
        skipped = self.skipped_steps[band]
        self.replay_counts += np.einsum("ghkb,h->b", new, skipped)
        self.skipped_steps[band] = 0.0

    def _outage_column(self, index: int) -> int:
        origin_faults = [i for i, f in enumerate(self.scenario.faults) if f.kind == "origin-down"]
        return origin_faults.index(index)

    # -- audience snapshots ---------------------------------------------------------------------

    def _announce(self, at_s: float, into: list[np.ndarray]) -> Generator[simpy.Event, Any, None]:
        """At `at_s`, the replay latency of every viewer playing, drawn from the cohort counts."""
        yield self.env.timeout(at_s)
        weights = self.counts.sum(axis=(0, 1, 2))
        total = round(float(weights.sum()))
        if total == 0:
            into.append(np.zeros(0))
            return
        per_bucket = self.rng.multinomial(total, weights / weights.sum())
        lo = np.repeat(self.grid.edges_s[:-1], per_bucket)
        hi = np.repeat(self.grid.edges_s[1:], per_bucket)
        into.append(lo * (hi / lo) ** self.rng.random(total))

    # -- one step -------------------------------------------------------------------------------

    def _lag_s(self, now_s: float, *, outages: bool = True) -> np.ndarray:
        """Capture to origin arrival per band at `now_s`; outages add the time they have run."""
        drift_s = self.uplink_drift * (now_s + PRE_ROLL_S)
        lag = np.full(self.bands.streams.size, self.publish_lag_s + self.ingest_s + drift_s)
        if outages:
            for index, start_s in self.outage_since.items():
                lag[self.bands.origin_down[:, self._outage_column(index)]] += now_s - start_s
        return lag

    def _depart(self, t: int) -> None:
        total = float(self.viewers.sum())
        if total <= 0.0:
            return
        leaving = self.rng.binomial(round(total), self._departure_hazard[t])
        keep = max(0.0, 1.0 - leaving / total)
        self.counts *= keep
        self.viewers *= keep

    def _deliver(self, t: int) -> None:
        """Loads, queueing delays, fetches and renditions for step t; the stalls they cause."""
        edge = self.scenario.tiers[-1]
        dt = self.unit_s
        n = self.viewers
        alive_nodes = self.groups.nodes * self.alive
        per_node = np.where(alive_nodes > 0, 1.0 / np.maximum(alive_nodes, 1.0), 0.0)
        cap_bps = edge.egress_gbps * 1e9 * self.edge_factor
        cell_bits = n * (self.unit_bits[self.rendition] + self.playlist_bits)
        offered_bits = cell_bits.sum(axis=(1, 2)) * per_node
        service_s = self.service_s[-1]
        work_s = n.sum(axis=(1, 2)) * per_node * self.requests_per_unit * service_s / edge.workers
        self.edge_backlog_bits = np.maximum(
            0.0, self.edge_backlog_bits + offered_bits - cap_bps * dt
        )
        self.edge_backlog_work_s = np.maximum(0.0, self.edge_backlog_work_s + work_s - dt)
        carried_s = self.edge_backlog_bits / cap_bps + self.edge_backlog_work_s
        band_viewers = n.sum(axis=2)
        mean_bits = cell_bits.sum(axis=2) / np.maximum(band_viewers, 1e-12)
        # One viewer's turn at the edge: its bits on the link, or its requests on the workers.
        one_s = np.maximum(
            mean_bits / cap_bps[:, None], self.requests_per_unit * service_s / edge.workers
        )
        own_s = self.requests_per_unit * service_s
        if self.protocol == "hls":
            # Polling viewers ask at their own phases: no bursts, the edge is busy at random.
            self.edge_delay_s = carried_s[:, None] + 0.5 * one_s + own_s
            self.join_lock_s = np.zeros_like(one_s)
            self.join_busy = np.broadcast_to(
                np.clip(offered_bits / (cap_bps * dt), 0.0, 1.0)[:, None], one_s.shape
            )
            self.join_burst_s = one_s
        else:
            # A unit lands for all of a stream's viewers on an edge at once (their requests are
            # held there), and they are served in turn: a burst.
            per_stream = band_viewers * per_node[:, None] / self.bands.streams[None, :]
            burst_s = per_stream * one_s
            self.edge_delay_s = carried_s[:, None] + own_s + np.zeros_like(burst_s)
            # A joiner of the stream arriving before its burst ends waits for the end
            # (`join_lock_s`); other streams' bursts come at random phases. Beyond one unit the
            # edge never drains: the backlog carried over accounts for that.
            burst_s = np.minimum(burst_s, dt)
            self.edge_burst_s = burst_s
            self.join_lock_s = burst_s
            others_s = (self.bands.streams[None, :] * burst_s).sum(axis=1, keepdims=True) - burst_s
            self.join_busy = np.clip(others_s / dt, 0.0, 1.0)
            weighted = (self.bands.streams[None, :] * burst_s**2).sum(axis=1, keepdims=True)
            self.join_burst_s = (weighted - burst_s**2) / np.maximum(others_s, 1e-12)
        self.join_delay_s = carried_s + service_s

        edge_fetches = self._fetch_up(t)
        if self.protocol != "http-flv":
            self._adapt()
        self._steady_stalls(float(self.step_edges_s[t]))

        last = len(self.scenario.tiers) - 1
        shifted = self._egress_shift.pop(t, 0.0)
        self._add_bins(self.egress_bins[last], t, max(0.0, float(cell_bits.sum()) + shifted))
        self._add_bins(self.request_bins[last], t, float(n.sum()) * self.requests_per_unit)
        self._add_bins(self.node_bits_bins[last], t, float(offered_bits.max(initial=0.0)))
        self._add_fetched(self.fetched_bins[last], t, (edge_fetches @ self.unit_bits).sum(axis=0))
        self.cache_requests[last] += float(n.sum())
        self.fetches[last] += float(edge_fetches.sum())

    def _fetch_up(self, t: int) -> np.ndarray:
        """Coalesced fetches, tier by tier upwards; edge fetches per (group, band, rendition).

        A node fetches an object once per unit when any of its clients wants it (coalescing),
        or once per client request otherwise; a stream's objects all go to one parent node.
        """
        tiers = self.scenario.tiers
        dt = self.unit_s
        streams = self.bands.streams
        wanted = self._by_rendition()
        # Joiners' first units, and on an edge new to the stream the rest of the hold-back.
        first_share = np.bincount(
            self.first_rendition, weights=self.class_share, minlength=self.unit_bits.size
        )
        wanted += self._last_joins[:, :, None] * first_share
        extra = self._catch_up
        edges = (self.groups.nodes * self.alive)[:, None, None]
        per_object = wanted / np.maximum(edges * streams[None, :, None], 1e-12)
        edge_fetches = edges * streams[None, :, None] * _fetches(per_object, tiers[-1].coalescing)
        edge_fetches += extra
        below = edge_fetches.sum(axis=0)
        # A stream's objects go to one node per tier: that node fetches one when any edge asked.
        asked = -np.expm1(-(edges * per_object).sum(axis=0))
        upper_delay_s = np.zeros(streams.size)
        upper_burst_s = np.zeros(streams.size)
        for i in range(len(tiers) - 2, -1, -1):
            tier = tiers[i]
            stream_bits = (below @ self.unit_bits) / streams
            total_bits = float((stream_bits * streams).sum())
            nodes = max(self.tier_alive[i], 1.0)
            cap_bps = tier.egress_gbps * 1e9 * self.tier_factor[i]
            backlog = max(0.0, self.tier_backlog_bits[i] + total_bits / nodes - cap_bps * dt)
            self.tier_backlog_bits[i] = backlog
            upper_delay_s += self.service_s[i] + backlog / cap_bps
            upper_burst_s += np.minimum(stream_bits / cap_bps, dt)
            node_bits = max(total_bits / nodes, float(stream_bits.max(initial=0.0)))
            band_bits = stream_bits * streams
            self._add_fetched(self.egress_bins[i], t, band_bits)
            self._add_fetched(self.request_bins[i], t, below.sum(axis=1))
            if total_bits > 0.0:
                self._add_fetched(self.node_bits_bins[i], t, band_bits * node_bits / total_bits)
            self.cache_requests[i] += float(below.sum())
            own = streams[:, None] * asked if (i == 0 or tier.coalescing) else below
            own = own + self._catch_up_above
            self.fetches[i] += float(own.sum())
            if i > 0:
                self._add_fetched(self.fetched_bins[i], t, own @ self.unit_bits)
            below = own
        self.upper_delay_s = upper_delay_s
        self.upper_burst_s = upper_burst_s
        return edge_fetches

    def _by_rendition(self) -> np.ndarray:
        """Viewers per (group, band, rendition) now."""
        return np.stack(
            [
                (self.viewers * (self.rendition == r)).sum(axis=2)
                for r in range(self.unit_bits.size)
            ],
            axis=-1,
        )

    def _adapt(self) -> None:
        """The rendition ABR settles on per cell, from the throughput of a unit's transfer.

        As in the exact engine the sample runs from first byte to last, so it shows the slower
        of the viewer's access link and the edge's link, not the wait for the first byte.
        """
        edge_bps = self.scenario.tiers[-1].egress_gbps * 1e9 * self.edge_factor
        bits = self.unit_bits[None, None, None, :]
        link_s = bits / self.rates_bps[None, None, :, None]
        own_s = bits / edge_bps[:, None, None, None]
        budget = self.scenario.player.abr_safety * bits / np.maximum(link_s, own_s)
        budget = np.broadcast_to(budget, (*self.shape, self.unit_bits.size))
        r = np.zeros(self.shape, dtype=np.intp)
        for _ in range(_ABR_ROUNDS):
            b = np.take_along_axis(budget, r[..., None], axis=-1)[..., 0]
            r = np.clip(np.searchsorted(self.rendition_bps, b, side="right") - 1, 0, None)
        self.rendition = r

    def _delivery_s(self, now_s: float) -> np.ndarray:
        """Capture to playable at the viewer, per cell, for the unit delivered now."""
        link_s = self.unit_bits[self.rendition] / self.rates_bps
        delay = (
            self._lag_s(now_s, outages=False)[None, :, None]
            + self.chain_s
            + self.upper_delay_s[None, :, None]
            + self.edge_delay_s[:, :, None]
            + link_s
            + self.half_rtt_s
        )
        if self.protocol == "hls":
            delay += 0.5 * self.unit_s + 2.0 * self.half_rtt_s  # the poll that finds it, a request
        return delay

    def _steady_stalls(self, now_s: float) -> None:
        delay = self._delivery_s(now_s)
        delay[~self.alive] = 0.0
        hit = delay > self.grid.edges_s[self.floor_bucket + 1]
        if not hit.any():
            return
        new, stall = max_with(self.grid, self.counts[hit], step_cdf(self.grid, delay[hit]))
        self.counts[hit] = new
        self._rebuffer(float(stall.sum()), now_s)

    def _play(self, t: int) -> None:
        """Every viewer present plays one unit (except those an origin outage holds)."""
        held = np.zeros(self.bands.streams.size, dtype=bool)
        for index in self.outage_since:
            held |= self.bands.origin_down[:, self._outage_column(index)]
        if held.any():
            self.replay_counts += self.counts[:, ~held].sum(axis=(0, 1, 2))
            self.skipped_steps[held] += 1.0
        else:
            self.replay_counts += self.counts.reshape(-1, self.grid.size).sum(axis=0)
        total = float(self.viewers.sum())
        self.watched_s += total * (self.step_edges_s[t + 1] - self.step_edges_s[t])
        for b in self._bins_starting[t]:
            self.viewer_bins[b] = round(total)  # a whole number, less float drift

    def _join(self, t: int) -> None:
        now = float(self.step_edges_s[t])
        expected = self._arrivals[t]
        arriving = int(self.rng.poisson(expected)) if expected > 0 else 0
        self.sessions += arriving
        self._last_joins = np.zeros(self.shape[:2])
        self._catch_up = np.zeros_like(self._catch_up)
        self._catch_up_above = np.zeros_like(self._catch_up_above)
        if arriving == 0 or not self.alive.any():
            return
        share = self.groups.nodes * self.alive
        p = (
            (share / share.sum())[:, None, None]
            * self.bands.share[None, :, None]
            * self.class_share[None, None, :]
        )
        joins = self.rng.multinomial(arriving, np.broadcast_to(p, self.shape).ravel())
        joins = joins.reshape(self.shape)

        # A joiner waits at the edge for the playlist and its first unit (whose link time is in
        # the kernels), plus a miss up the tiers when the edge lacks what it asks for.
        served_s = self.service_s[-1] + self.join_delay_s[:, None, None] + self.buffer_s
        served_s = np.broadcast_to(served_s, self.shape)
        objects = np.maximum(share[:, None] * self.bands.streams[None, :], 1e-12)
        cold = np.exp(-self.viewers.sum(axis=2) / objects)
        playing = self._by_rendition()
        absent = np.exp(-playing[:, :, self.first_rendition] / objects[..., None])
        joining = (
            expected
            * (share / share.sum() / np.maximum(share, 1e-12))[:, None]
            * (self.bands.share / self.bands.streams)[None, :]
        )
        start = self._lag_s(now)[None, :, None] + (self.hold_back - 1) * self.unit_s + served_s
        # Once caught up, a joiner's requests are held at the edge behind everyone else's: its
        # units come at the end of the edge's burst, its edge somewhere in the bursts above.
        if self.protocol == "hls":
            caught_up_s = np.zeros(self.shape)
        else:
            caught_up_s = self._delivery_s(now) + self.edge_burst_s[:, :, None]
        self._refresh_profiles(start, served_s, cold, absent, joining, caught_up_s)
        self.counts += joins[..., None] * self._profile
        self._rebuffer(float((joins * self._join_stall).sum()), now)
        self.viewers += joins
        self.join_counts += np.tensordot(joins, self._join_profile, axes=3)
        self.floor_bucket = min(self.floor_bucket, self._profile_floor)
        self._last_joins = joins.sum(axis=2)
        # Edges (and tiers above) new to a stream also fetch the rest of the hold-back.
        warmed = objects * cold * -np.expm1(-self._last_joins / objects)
        streams = self.bands.streams
        band_joins = self._last_joins.sum(axis=0)
        cold_above = np.exp(-(self.viewers.sum(axis=(0, 2)) - band_joins) / streams)
        warmed_above = streams * cold_above * -np.expm1(-band_joins / streams)
        by_class = joins / np.maximum(self._last_joins[..., None], 1e-12)
        for r in range(self.unit_bits.size):
            share_r = (by_class * (self.rendition == r)).sum(axis=2)
            self._catch_up[..., r] = warmed * share_r * (self.hold_back - 1)
            band_share_r = (joins * (self.rendition == r)).sum(axis=(0, 2)) / np.maximum(
                band_joins, 1e-12
            )
            self._catch_up_above[:, r] = warmed_above * band_share_r * (self.hold_back - 1)

        last = len(self.scenario.tiers) - 1
        self._add_bins(self.request_bins[last], t, float(arriving))
        # Joiners also fetch the hold-back ahead of what they play: units they will not play if
        # they leave (the first one at its own rendition).
        ahead_bits = (self.hold_back - 2) * self.unit_bits[self.rendition] + self.join_bits
        extra_bits = float((joins * ahead_bits).sum())
        self._add_bins(self.egress_bins[last], t, arriving * self.playlist_bits + extra_bits)

    def _refresh_profiles(
        self,
        start_s: np.ndarray,
        served_s: np.ndarray,
        cold: np.ndarray,
        absent: np.ndarray,
        joining: np.ndarray,
        caught_up_s: np.ndarray,
    ) -> None:
        """Recompute where joiners land, for the (group, band) rows whose conditions moved."""
        G, H, K = self.shape
        rows = G * H
        upper_burst_s = np.broadcast_to(self.upper_burst_s[None, :], (G, H))
        per_row = (
            (start_s.reshape(rows, K), _KEY_SECONDS),
            (served_s.reshape(rows, K), _KEY_SECONDS),
            (caught_up_s.reshape(rows, K), _KEY_SECONDS),
            (absent.reshape(rows, K), _KEY_PROBABILITY),
            (cold.reshape(rows, 1), _KEY_PROBABILITY),
            (np.log1p(joining).reshape(rows, 1), _KEY_LOG_RATE),
            (self.join_lock_s.reshape(rows, 1), _KEY_SECONDS),
            (self.join_busy.reshape(rows, 1), _KEY_PROBABILITY),
            (self.join_burst_s.reshape(rows, 1), _KEY_SECONDS),
            (upper_burst_s.reshape(rows, 1), _KEY_SECONDS),
        )
        key = np.concatenate([values for values, _ in per_row], axis=1)
        tolerance = np.concatenate([np.full(values.shape[1], tol) for values, tol in per_row])
        if self._profile_key is None:
            self._profile_key = key.copy()
            changed = np.ones(rows, dtype=bool)
        else:
            changed = (np.abs(key - self._profile_key) > tolerance).any(axis=1)
            if not changed.any():
                return
            self._profile_key[changed] = key[changed]
        args = (
            cold.reshape(rows)[changed],
            absent.reshape(rows, K)[changed],
            joining.reshape(rows)[changed],
            self.join_lock_s.reshape(rows)[changed],
            self.join_busy.reshape(rows)[changed],
            self.join_burst_s.reshape(rows)[changed],
        )
        started = self.join_kernel.spread(self.grid, start_s.reshape(rows, K)[changed], *args)
        # The first units held at the edge: a stall when they come later than the start allows.
        lowest = caught_up_s.reshape(rows, K)[changed][..., None]
        width = np.maximum(upper_burst_s.reshape(rows)[changed], 1e-9)[:, None, None]
        later = np.clip((self.grid.edges_s - lowest) / width, 0.0, 1.0)
        latency = self._profile.reshape(rows, K, -1)
        latency[changed], stall = max_with(self.grid, started, later)
        self._join_stall.reshape(rows, K)[changed] = stall
        join = self._join_profile.reshape(rows, K, -1)
        join[changed] = self.join_time_kernel.spread(
            self.join_grid, served_s.reshape(rows, K)[changed], *args
        )
        self._profile_floor = _lowest_bucket(self._profile)

    # -- bookkeeping ----------------------------------------------------------------------------

    def _rebuffer(self, stall_s: float, at_s: float) -> None:
        self.stall_s += stall_s
        self.rebuffer_bins[min(int(at_s / self.bin_s), self.n_bins - 1)] += stall_s

    def _add_bins(self, into: np.ndarray, t: int, value: float) -> None:
        """Add a step's amount to the time bins it overlaps, in proportion."""
        bins, share = self._step_bins[t]
        into[bins] += value * share

    def _add_fetched(self, into: np.ndarray, t: int, per_band: np.ndarray) -> None:
        """Add a step's fetch traffic per band: spread over the step, or for classic HLS (a step
        is a whole segment) at the moments the bands' streams publish, when edges fetch."""
        if self.protocol != "hls":
            self._add_bins(into, t, float(per_band.sum()))
            return
        t0 = float(self.step_edges_s[t])
        for value, phases in zip(per_band, self._band_phases, strict=True):
            if value <= 0.0:
                continue
            at = np.minimum(
                ((t0 + phases * self.unit_s) / self.bin_s).astype(np.intp), self.n_bins - 1
            )
            np.add.at(into, at, value / phases.size)

    def _layout_bins(self) -> None:
        edges = self.step_edges_s
        last = self.n_bins - 1
        self._step_bins: list[tuple[np.ndarray, np.ndarray]] = []
        for t in range(self.n_steps):
            t0, t1 = float(edges[t]), float(edges[t + 1])
            b0 = min(int(t0 / self.bin_s), last)
            b1 = min(int(max(t0, t1 - 1e-12) / self.bin_s), last)
            bins = np.arange(b0, b1 + 1)
            lo = np.maximum(bins * self.bin_s, t0)
            hi = np.minimum((bins + 1) * self.bin_s, t1)
            hi[-1] = max(hi[-1], t1)  # the last bin takes what is past the run's end
            span = np.maximum(hi - lo, 0.0)
            share = span / span.sum() if span.sum() > 0 else np.eye(1, bins.size).ravel()
            self._step_bins.append((bins, share))
        starts = np.arange(self.n_bins) * self.bin_s
        owner = np.clip(np.searchsorted(edges, starts, side="right") - 1, 0, self.n_steps - 1)
        self._bins_starting: list[list[int]] = [[] for _ in range(self.n_steps)]
        # Each band's streams publish at their own phases of the segment clock.
        self._band_phases = [
            self.rng.random(int(m))
            if m <= _PHASES_PER_BAND
            else (np.arange(_PHASES_PER_BAND) + 0.5) / _PHASES_PER_BAND
            for m in self.bands.streams
        ]
        for b, t in enumerate(owner):
            self._bins_starting[int(t)].append(b)

    # -- run ------------------------------------------------------------------------------------

    def run(self, progress: Callable[[float], None] | None = None) -> Measurements:
        self._layout_bins()
        if self.protocol == "http-flv":
            self.rendition[:] = self.push_rendition[None, None, :]
        env = self.env
        start_scenario_events(
            env,
            self.scenario,
            self._fault,
            self._announce,
            self.sale_audiences,
            self.lottery_audiences,
        )
        every = max(1, self.n_steps // _PROGRESS_STEPS)
        for t in range(self.n_steps):
            env.run(until=float(self.step_edges_s[t]) + 1e-9)
            self._depart(t)
            self._deliver(t)
            self._play(t)
            self._join(t)
            self.peak_viewers = max(self.peak_viewers, float(self.viewers.sum()))
            if progress is not None and ((t + 1) % every == 0 or t + 1 == self.n_steps):
                progress((t + 1) / self.n_steps)
        env.run(until=self.scenario.scenario.duration_s + 1e-9)
        return self._collect()

    def _collect(self) -> Measurements:
        replay, join = Histogram(), Histogram()
        replay.record_many(self.grid.values_s, self.replay_counts)
        join.record_many(self.join_grid.values_s, self.join_counts)
        tiers = []
        for i, spec in enumerate(self.scenario.tiers):
            capacity_bps = spec.egress_gbps * 1e9
            tiers.append(
                TierMeasurements(
                    name=spec.name,
                    nodes=spec.nodes,
                    capacity_gbps=spec.egress_gbps * spec.nodes,
                    egress_bits=self.egress_bins[i],
                    fetched_bits=self.fetched_bins[i],
                    requests=self.request_bins[i],
                    peak_node_utilization=float(
                        self.node_bits_bins[i].max(initial=0.0) / (capacity_bps * self.bin_s)
                    ),
                    cache_requests=round(self.cache_requests[i]),
                    fetches=round(self.fetches[i]),
                )
            )
        return Measurements(
            sim_time_s=self.scenario.scenario.duration_s,
            bin_s=self.bin_s,
            replay=replay,
            join=join,
            stall_s=self.stall_s,
            watched_s=self.watched_s,
            rebuffer_s=self.rebuffer_bins,
            peak_viewers=round(self.peak_viewers),
            sessions=self.sessions,
            viewers=self.viewer_bins,
            tiers=tiers,
            sale_audiences=self.sale_audiences,
            lottery_audiences=self.lottery_audiences,
        )


def _fetches(per_object: np.ndarray, coalescing: bool) -> np.ndarray:
    """Expected fetches of one object by one node whose clients ask for it `per_object` times
    (Poisson): one if anyone asks when coalescing, one per request otherwise."""
    return -np.expm1(-per_object) if coalescing else per_object


def _lowest_bucket(counts: np.ndarray) -> int:
    occupied = np.flatnonzero(counts.reshape(-1, counts.shape[-1]).sum(axis=0) > 1e-12)
    return int(occupied[0]) if occupied.size else counts.shape[-1] - 1


def run_cohort(
    scenario: Scenario,
    rng: np.random.Generator,
    progress: Callable[[float], None] | None = None,
) -> Measurements:
    """One replication of the cohort engine."""
    return CohortModel(scenario, rng).run(progress)
