"""The viewer process: join, play with the protocol's hold-back, adapt the rendition, fail over.

Per media unit a viewer that keeps up costs one shared SimPy event (the unit arriving at its edge)
plus arithmetic: the edge's request queue and egress link, the viewer's own last-mile link, the
play head and the latency record.
"""

from __future__ import annotations

import math
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import simpy

from sim.exact.node import DOWN

if TYPE_CHECKING:
    from sim.exact.model import Model

_EWMA = 0.3
"""Weight of the newest throughput sample in the ABR estimate."""


def viewer(
    model: Model,
    *,
    vid: int,
    leave_s: float,
    stream: int,
    rtt_s: float,
    rate_bps: float,
    edge_draw: float,
) -> Generator[simpy.Event, Any, None]:
    env = model.env
    arrived_s = env.now
    proto = model.protocol
    push = proto == "http-flv"
    hls = proto == "hls"
    unit_s = model.schedule.unit_s
    capture0 = float(model.schedule.start_s[stream])
    unit_bits = model.unit_bits
    rendition_bps = model.rendition_bps
    safety = model.scenario.player.abr_safety
    half = 0.5 * rtt_s
    requests_per_unit = 0 if push else 2
    playlist_bits = 0.0 if push else model.playlist_bits
    key_stride = model.key_stride
    key_base = stream * len(unit_bits)
    replay = model.replay
    rebuffer_bins = model.rebuffer_bins
    inv_bin = 1.0 / model.bin_s
    last_bin = len(rebuffer_bins) - 1

    edge = model.pick_edge(edge_draw)
    # Connection set-up (one round trip), then the playlist (or the push request).
    yield env.timeout(rtt_s + half)
    while not edge.alive:
        yield env.timeout(model.scenario.player.reconnect_s)
        edge = model.pick_edge(model.draw())
        yield env.timeout(rtt_s + half)
    now = env.now
    listed = model.schedule.live_unit(stream, now - edge.chain_s)
    cold = (key_base + listed * key_stride) not in edge.cache
    answered = edge.serve(now, playlist_bits, 1) + (edge.chain_rtt_s if cold else 0.0)
    g = listed + 1 - model.hold_back_units
    if push:
        rendition = model.push_rendition(rate_bps)
        t_req = answered
    else:
        rendition = 0
        t_req = answered + rtt_s
    estimate_bps = 0.0
    play_end = 0.0
    started = False
    link_free = 0.0
    poll_phase = arrived_s

    while True:
        if t_req > env.now:
            yield env.timeout(t_req - env.now)
        now = env.now
        if now >= leave_s:
            break
        if not edge.alive:
            yield env.timeout(model.scenario.player.reconnect_s)
            edge = model.pick_edge(model.draw())
            t_req = env.now + rtt_s + (half if push else rtt_s)
            continue
        key = key_base + g * key_stride + rendition
        available = edge.cache.lookup(key)
        if available is None:
            available = yield edge.wait(key)
            if available is DOWN:
                continue
            now = env.now
            if now >= leave_s:
                break
        bits = unit_bits[rendition]
        sent = edge.serve(now, bits + playlist_bits, requests_per_unit)
        link_free = (link_free if link_free > now else now) + bits / rate_bps
        received = (sent if sent > link_free else link_free) + half
        # Playback: a unit plays when it has arrived and the one before it has finished.
        if not started:
            started = True
            play_at = received + model.startup_buffer_s
            model.join.record(play_at - arrived_s)
            model.play_start_s[vid] = play_at
        elif received > play_end:
            play_at = received
            stall = received - play_end
            model.stall_s += stall
            b = int(received * inv_bin)
            rebuffer_bins[b if b < last_bin else last_bin] += stall
        else:
            play_at = play_end
        replay.record(play_at - (capture0 + g * unit_s))
        play_end = play_at + unit_s
        g += 1
        if push:
            t_req = now
            continue
        # Rate adaptation on measured throughput (HTTP delivery only).
        sample_bps = bits / (received - now)
        estimate_bps = sample_bps if estimate_bps == 0.0 else (
            (1.0 - _EWMA) * estimate_bps + _EWMA * sample_bps
        )
        budget = safety * estimate_bps
        rendition = 0
        for i, bps in enumerate(rendition_bps):
            if bps <= budget:
                rendition = i
        t_req = now + rtt_s
        if hls:
            # Classic HLS: the segment is found by the next playlist poll after it is listed.
            listed_at = model.schedule.publish_s[stream, g] + edge.chain_s
            poll_s = poll_phase + math.ceil((listed_at - poll_phase) / unit_s) * unit_s
            if poll_s + rtt_s > t_req:
                t_req = poll_s + rtt_s
