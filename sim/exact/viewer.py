"""A viewer: one SimPy process for its life (join, failover, leave) and a session for playback.

Steady-state delivery costs no SimPy event. Like an LL-HLS edge holding blocking requests (or a
push edge with subscribers), the edge keeps the viewer's request for the next unit and, when the
unit lands, the session receives and plays it in place and asks for the one after. The process is
woken only when that cannot go on by itself: the viewer's request is not at the edge yet, the
next unit is already cached (the viewer is behind), the viewer leaves, classic HLS has to poll,
or the edge fails.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import simpy

from sim.exact.node import DOWN, Node

if TYPE_CHECKING:
    from sim.exact.model import Model

_EWMA = 0.3
"""Weight of the newest throughput sample in the ABR estimate."""


class Session:
    """One viewer's playback state: what to fetch next, the play head, the ABR estimate."""

    __slots__ = (
        "_inv_bin",
        "_last_bin",
        "arrived_s",
        "capture0_s",
        "edge",
        "estimate_bps",
        "half_rtt_s",
        "key_base",
        "latency_s",
        "leave_s",
        "link_free_s",
        "model",
        "play_end_s",
        "poll_phase_s",
        "rate_bps",
        "rendition",
        "rtt_s",
        "started",
        "t_req",
        "unit",
        "vid",
        "wake",
    )

    def __init__(
        self, model: Model, *, vid: int, leave_s: float, stream: int, rtt_s: float, rate_bps: float
    ) -> None:
        self.model = model
        self.vid = vid
        self.arrived_s = model.env.now
        self.leave_s = leave_s
        self.rtt_s = rtt_s
        self.half_rtt_s = 0.5 * rtt_s
        self.rate_bps = rate_bps
        self.key_base = stream * len(model.unit_bits)
        self.capture0_s = float(model.schedule.start_s[stream])
        self.poll_phase_s = self.arrived_s
        self.edge: Node = model.edges[0]
        self.unit = 0
        self.rendition = 0
        self.t_req = 0.0
        """When the request for `unit` reaches the edge."""
        self.link_free_s = 0.0
        """When the viewer's own access link has drained what it was sent."""
        self.play_end_s = 0.0
        self.started = False
        self.latency_s = 0.0
        """Replay latency of the unit played last."""
        self.estimate_bps = 0.0
        self.wake: simpy.Event = model.env.event()
        """Succeeds when the edge hands control back to the viewer process."""
        self._inv_bin = 1.0 / model.bin_s
        self._last_bin = len(model.rebuffer_bins) - 1

    def key(self) -> int:
        return self.key_base + self.unit * self.model.key_stride + self.rendition

    def arrived(self, now: float) -> None:
        """Called by the edge: the unit this session is held on has landed there at `now`."""
        if self.t_req > now or now >= self.leave_s:
            self.wake.succeed(now)
            return
        self.play(now)
        if self.model.protocol == "hls":
            self.wake.succeed(None)
            return
        edge = self.edge
        key = self.key_base + self.unit * self.model.key_stride + self.rendition
        available = edge.cache.lookup(key)
        if available is None:
            edge.hold(key, self)
        else:
            self.wake.succeed(available)

    def play(self, now: float) -> None:
        """The edge answers this session's request for `unit` at `now`: receive it and play it."""
        model = self.model
        rendition = self.rendition
        bits = model.unit_bits[rendition]
        sent = self.edge.serve(now, bits + model.playlist_bits, model.requests_per_unit)
        # The unit's bytes leave the edge from `first_byte` to `sent`; the access link carries
        # them from the first byte on, after what it still had to deliver.
        first_byte = sent - bits / self.edge.egress.capacity_bps
        link_free = (self.link_free_s if self.link_free_s > first_byte else first_byte) + (
            bits / self.rate_bps
        )
        self.link_free_s = link_free
        received = (sent if sent > link_free else link_free) + self.half_rtt_s
        # A unit plays when it has arrived and the one before it has finished.
        if not self.started:
            self.started = True
            play_at = received + model.startup_buffer_s
            model.join.record(play_at - self.arrived_s)
            model.play_start_s[self.vid] = play_at
        elif received > self.play_end_s:
            play_at = received
            stall = received - self.play_end_s
            model.stall_s += stall
            b = int(received * self._inv_bin)
            model.rebuffer_bins[b if b < self._last_bin else self._last_bin] += stall
        else:
            play_at = self.play_end_s
        unit_s = model.unit_s
        latency_s = play_at - (self.capture0_s + self.unit * unit_s)
        self.latency_s = latency_s
        model.replay.record(latency_s)
        self.play_end_s = play_at + unit_s
        self.unit += 1
        if model.protocol == "http-flv":
            self.t_req = now  # pushed: no request per unit, no rate adaptation
            return
        # Rate adaptation on the throughput of the transfer itself, first byte to last: the
        # time a request spends held or queued behind other viewers says nothing about the path
        # (low-latency players leave time-to-first-byte out of the sample for that reason).
        sample_bps = bits / (received - self.half_rtt_s - first_byte)
        estimate = self.estimate_bps
        estimate = sample_bps if estimate == 0.0 else estimate + _EWMA * (sample_bps - estimate)
        self.estimate_bps = estimate
        budget = model.abr_safety * estimate
        chosen = 0
        for i, bps in enumerate(model.rendition_bps):
            if bps <= budget:
                chosen = i
        self.rendition = chosen
        t_req = now + self.rtt_s
        if model.protocol == "hls":
            # Classic HLS: a segment is found by the first playlist poll after it is listed.
            stream = self.key_base // len(model.unit_bits)
            listed_at = model.schedule.publish_s[stream, self.unit] + self.edge.chain_s
            phase = self.poll_phase_s
            poll_s = phase + math.ceil((listed_at - phase) / unit_s) * unit_s
            if poll_s + self.rtt_s > t_req:
                t_req = poll_s + self.rtt_s
        self.t_req = t_req


def viewer(model: Model, session: Session, edge_draw: float) -> Generator[simpy.Event, Any, None]:
    """The viewer process: join, then hand the session to the edge; step in when woken."""
    model.watching[session.vid] = session
    try:
        yield from _watch(model, session, edge_draw)
    finally:
        del model.watching[session.vid]


def _watch(model: Model, session: Session, edge_draw: float) -> Generator[simpy.Event, Any, None]:
    env = model.env
    reconnect_s = model.scenario.player.reconnect_s
    rtt_s = session.rtt_s
    half = session.half_rtt_s
    push = model.protocol == "http-flv"
    edge = session.edge = model.pick_edge(edge_draw)
    # Connection set-up (one round trip), then the playlist (or the push request) reaches it.
    yield env.timeout(rtt_s + half)
    while not edge.alive:
        yield env.timeout(reconnect_s)
        edge = session.edge = model.pick_edge(model.draw())
        yield env.timeout(rtt_s + half)
    now = env.now
    stream = session.key_base // len(model.unit_bits)
    listed = model.schedule.live_unit(stream, now - edge.chain_s)
    # The playlist is fresh at the edge if any rendition of the newest unit is there.
    newest = session.key_base + listed * model.key_stride
    cold = all(newest + r not in edge.cache for r in range(len(model.unit_bits)))
    answered = edge.serve(now, model.playlist_bits, 1) + (edge.chain_rtt_s if cold else 0.0)
    session.unit = listed + 1 - model.hold_back_units
    if push:
        session.rendition = model.push_rendition(session.rate_bps)
        session.t_req = answered
    else:
        session.t_req = answered + rtt_s

    available: Any = None
    """What the last wake said: the unit's arrival time at the edge, DOWN, or None (unknown)."""
    while True:
        if session.t_req > env.now:
            yield env.timeout(session.t_req - env.now)
        if env.now >= session.leave_s:
            return
        if available is DOWN or not session.edge.alive:
            available = None
            yield env.timeout(reconnect_s)
            session.edge = model.pick_edge(model.draw())
            session.t_req = env.now + rtt_s + (half if push else rtt_s)
            continue
        if available is None:
            available = session.edge.cache.lookup(session.key())
        if available is None:
            session.wake = env.event()
            session.edge.hold(session.key(), session)
            available = yield session.wake
            continue
        session.play(env.now)
        available = None
