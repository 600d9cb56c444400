"""Real viewers for the relay: an LL-HLS player loop and a push client, with failover.

Each viewer records, per part, the delay from the part's capture (the `prft` stamp the built-in
publisher writes) to the moment its last byte arrived here. Both sides read one machine's wall
clock, which is what loopback runs give; parts without a stamp count as received but carry no
delay. Viewers run until cancelled.

* `llhls_viewer`: starts at the newest listed part, then for every part asks for the playlist
  with `_HLS_msn`/`_HLS_part` of the part after the one it has (a blocking reload, held by the
  server until that part exists) and then for the part, as low-latency HLS players do.
* `push_viewer`: one long-lived response; parts arrive as the edge gets them.

On a connection error or a 5xx the viewer moves to the next edge in its list after
`reconnect_s` and resumes where it was (LL-HLS) or from the live edge (push).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp

from relay.core.fmp4 import Fragment, FragmentSplitter, parse_init
from relay.core.playlist import parse_playlist
from relay.core.push import PushStreamReader


@dataclass
class ViewerStats:
    """What one viewer (or a crowd sharing it) saw."""

    delays_s: list[float] = field(default_factory=list)
    """Capture-to-receive delay of each stamped part."""
    parts: int = 0
    joins_s: list[float] = field(default_factory=list)
    """From starting (or failing over) to the first part received."""
    failovers: int = 0

    def record(self, fragment: Fragment, received_s: float) -> None:
        self.parts += 1
        if fragment.capture_s is not None:
            self.delays_s.append(received_s - fragment.capture_s)


class EdgeFailed(Exception):
    """The current edge refused or dropped the viewer: it moves to the next one."""


class NotFound(Exception):
    """A 404: the viewer lost its place (resynchronise from the playlist)."""


_FAILURES = (EdgeFailed, aiohttp.ClientError, TimeoutError, ConnectionError)


async def llhls_viewer(
    session: aiohttp.ClientSession,
    edges: Sequence[str],
    stream: str,
    stats: ViewerStats,
    *,
    first_edge: int = 0,
    reconnect_s: float = 0.5,
) -> None:
    """Play `stream` over LL-HLS until cancelled."""
    edge = first_edge % len(edges)
    position: tuple[int, int] | None = None
    splitter: FragmentSplitter | None = None
    started_s: float | None = time.monotonic()
    while True:
        base = f"{edges[edge]}/live/{stream}"
        try:
            if splitter is None:
                splitter = FragmentSplitter(parse_init(await get(session, f"{base}/init.mp4")))
            nxt = await _next_part(session, base, position)
            if nxt is None:
                await asyncio.sleep(0.05)
                continue
            data = await get(session, f"{base}/seg{nxt[0]}.part{nxt[1]}.m4s")
            received_s = time.time()
            for fragment in splitter.feed(data):
                stats.record(fragment, received_s)
            if started_s is not None:
                stats.joins_s.append(time.monotonic() - started_s)
                started_s = None
            position = nxt
        except NotFound:
            position = None
        except _FAILURES:
            stats.failovers += 1
            edge = (edge + 1) % len(edges)
            splitter = None
            started_s = time.monotonic()
            await asyncio.sleep(reconnect_s)


async def _next_part(
    session: aiohttp.ClientSession, base: str, position: tuple[int, int] | None
) -> tuple[int, int] | None:
    """The part to fetch after `position` (the newest listed one at the start)."""
    if position is None:
        parts = parse_playlist((await get(session, f"{base}/index.m3u8")).decode()).parts
        return (parts[-1].msn, parts[-1].part_index) if parts else None
    msn, index = position
    text = await get(session, f"{base}/index.m3u8?_HLS_msn={msn}&_HLS_part={index + 1}")
    later = [
        (p.msn, p.part_index)
        for p in parse_playlist(text.decode()).parts
        if (p.msn, p.part_index) > position
    ]
    return min(later) if later else None


async def push_viewer(
    session: aiohttp.ClientSession,
    edges: Sequence[str],
    stream: str,
    stats: ViewerStats,
    *,
    first_edge: int = 0,
    reconnect_s: float = 0.5,
) -> None:
    """Watch `stream` over push until cancelled."""
    edge = first_edge % len(edges)
    while True:
        started_s = time.monotonic()
        subscribed_s = time.time()
        try:
            async with session.get(
                f"{edges[edge]}/push/{stream}", timeout=aiohttp.ClientTimeout(total=None)
            ) as response:
                if response.status != 200:
                    raise EdgeFailed(f"push answered {response.status}")
                reader = PushStreamReader()
                joined = False
                async for chunk in response.content.iter_any():
                    received_s = time.time()
                    for fragment in reader.feed(chunk):
                        if not joined:
                            stats.joins_s.append(time.monotonic() - started_s)
                            joined = True
                        # Parts sent to catch up at subscription are not delivery delays.
                        if fragment.capture_s is None or fragment.capture_s >= subscribed_s:
                            stats.record(fragment, received_s)
            raise EdgeFailed("push stream ended")
        except (*_FAILURES, ValueError):
            stats.failovers += 1
            edge = (edge + 1) % len(edges)
            await asyncio.sleep(reconnect_s)


async def get(session: aiohttp.ClientSession, url: str) -> bytes:
    """GET `url`'s body; EdgeFailed on a 5xx, NotFound on a 404."""
    async with session.get(url) as response:
        if response.status >= 500:
            raise EdgeFailed(f"{url} answered {response.status}")
        if response.status == 404:
            raise NotFound(url)
        if response.status != 200:
            raise EdgeFailed(f"{url} answered {response.status}")
        return await response.read()
