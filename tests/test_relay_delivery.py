"""Delivery through real relay processes on loopback: latency, coalescing, failover.

The built-in publisher stamps each part with its capture time; viewers measure the delay to the
moment a part's last byte reached them (capture-to-receive, so it includes the part's own
length: a part cannot leave the encoder before its last frame is captured). Every test also
checks that the client's own event loop kept up, so the figures are the relay's.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator

import aiohttp
import numpy as np
import pytest
from relay_support import Relay, arun, crowd, publishing, relay_up

from relay.load.viewer import ViewerStats, llhls_viewer, push_viewer

STREAM = "demo"
PART_S = 1 / 3
CLIENT_LAG_MAX_S = 0.1


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Relay]:
    with relay_up(tmp_path_factory.mktemp("relay"), edges=2) as up, publishing(up, STREAM):
        yield up


def _metric(text: str, name: str, labels: str = "") -> float:
    pattern = rf"^{name}{{[^}}]*{labels}[^}}]*}} ([0-9.e+-]+)$"
    found = re.search(pattern, text, re.MULTILINE)
    assert found is not None, (name, labels)
    return float(found.group(1))


def _metrics(url: str) -> str:
    async def fetch() -> str:
        async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as response:
            return await response.text()

    return arun(fetch())


def _client_kept_up(lags: list[float]) -> None:
    assert float(np.quantile(lags, 0.99)) < CLIENT_LAG_MAX_S, "the load client was the bottleneck"


def test_push_delay_p99_under_a_second_with_1000_viewers(relay: Relay) -> None:
    stats = ViewerStats()

    async def viewer(session: aiohttp.ClientSession, i: int) -> None:
        await push_viewer(session, relay.edges[:1], STREAM, stats)

    lags = arun(crowd(viewer, 1000, 8.0))
    delays = np.array(stats.delays_s)
    p50, p99 = np.quantile(delays, [0.5, 0.99])
    print(f"push, 1000 viewers: {delays.size} parts, delay p50 {p50:.3f} s, p99 {p99:.3f} s")
    _client_kept_up(lags)
    assert len(stats.joins_s) == 1000
    assert delays.size >= 1000 * 18
    assert p99 < 1.0


def test_llhls_viewers_measure_each_part(relay: Relay) -> None:
    stats = ViewerStats()

    async def viewer(session: aiohttp.ClientSession, i: int) -> None:
        await llhls_viewer(session, relay.edges, STREAM, stats, first_edge=i)

    lags = arun(crowd(viewer, 100, 6.0))
    delays = np.array(stats.delays_s)
    p50, p99 = np.quantile(delays, [0.5, 0.99])
    print(f"LL-HLS, 100 viewers: {delays.size} parts, delay p50 {p50:.3f} s, p99 {p99:.3f} s")
    _client_kept_up(lags)
    assert stats.failovers == 0
    assert delays.size >= 100 * 14
    # Asked for once the blocking playlist lists it: the part's length, two round trips and
    # the servers' work.
    assert PART_S < p50 < 1.0


def test_1000_viewers_on_one_edge_make_one_origin_fetch_per_part(relay: Relay) -> None:
    stats = ViewerStats()

    async def viewer(session: aiohttp.ClientSession, i: int) -> None:
        await llhls_viewer(session, relay.edges[:1], STREAM, stats)

    before, edge_before = _metrics(relay.origin), _metrics(relay.edges[0])
    started = time.monotonic()
    arun(crowd(viewer, 1000, 6.0))
    elapsed_s = time.monotonic() - started
    after, edge_after = _metrics(relay.origin), _metrics(relay.edges[0])
    parts = _metric(after, "livesim_media_requests_total", 'kind="part"') - _metric(
        before, "livesim_media_requests_total", 'kind="part"'
    )
    playlists = _metric(after, "livesim_media_requests_total", 'kind="playlist"') - _metric(
        before, "livesim_media_requests_total", 'kind="playlist"'
    )
    published = elapsed_s / PART_S
    print(
        f"1000 LL-HLS viewers, {stats.parts} parts received: origin served {parts:.0f} part and "
        f"{playlists:.0f} playlist requests while ~{published:.0f} parts were published"
    )
    assert stats.parts >= 1000 * 10
    # One fetch per part (the newest part at the start is a cache miss like any other).
    assert parts <= published + 2
    # Blocking reloads for the same part share one forwarded request.
    assert playlists <= 2 * published + 4
    # The edge's own counters tell the same story: each part a viewer received cost it a
    # playlist and a part request, and all but the few that went upstream were cache hits or
    # waits on a fetch already in flight.
    shared = sum(
        _metric(edge_after, name) - _metric(edge_before, name)
        for name in ("livesim_cache_hits_total", "livesim_coalesced_waits_total")
    )
    assert shared >= 2 * stats.parts - parts - playlists - 2


def test_viewers_of_a_killed_edge_continue_from_another(relay: Relay) -> None:
    pushed = [ViewerStats() for _ in range(50)]
    pulled = [ViewerStats() for _ in range(50)]
    victim = relay.servers.edges[0][0]

    async def viewer(session: aiohttp.ClientSession, i: int) -> None:
        if i < 50:
            await push_viewer(session, relay.edges, STREAM, pushed[i], reconnect_s=0.2)
        else:
            await llhls_viewer(session, relay.edges, STREAM, pulled[i - 50], reconnect_s=0.2)

    async def run_and_kill() -> list[int]:
        import asyncio

        loop = asyncio.get_running_loop()
        counts: list[int] = []

        def kill() -> None:
            counts.extend(s.parts for s in pushed + pulled)
            os.kill(victim.pid, signal.SIGKILL)

        loop.call_later(3.0, kill)
        await crowd(viewer, 100, 7.0)
        return counts

    at_kill = arun(run_and_kill())
    victim.wait(5)
    after = [s.parts - n for s, n in zip(pushed + pulled, at_kill, strict=True)]
    print(f"edge killed: parts after the kill per viewer min {min(after)}, max {max(after)}")
    assert all(s.failovers >= 1 for s in pushed + pulled)
    # Four seconds after the kill, every viewer gets parts again from the other edge.
    assert min(after) >= 6
