"""Viewer sessions for `livesim bench`: real LL-HLS, HLS and push clients driving a `Player`.

Each session plays one stream from the edge its `pick_edge` names, as the simulator's viewers
do:

* LL-HLS: the playlist, then from `hold_back` parts behind the newest listed one, for every part
  a blocking playlist reload naming it (`_HLS_msn`/`_HLS_part`) and the part itself.
* HLS: the playlist, then from `hold_back` segments behind the newest; afterwards it polls the
  playlist once per segment duration (from its arrival on) and fetches what is new.
* Push: one long response; the edge sends the newest part at once and every part after it.

On a refused or broken connection the session waits `reconnect_s`, asks `pick_edge` again and
resumes where it was (LL-HLS, HLS) or from the live edge (push); its play head carries on, so the
gap shows as rebuffering, not as a new join. Sessions run until cancelled.
"""

from __future__ import annotations

import asyncio
import functools
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from relay.core.fmp4 import first_capture_s
from relay.load.http_client import HttpConnection
from relay.load.player import Player
from relay.load.push_probe import ProbeStats, PushProbe

_PART_URI = re.compile(rb"seg(\d+)\.part(\d+)\.m4s")
_SEGMENT_URI = re.compile(rb"^seg(\d+)\.m4s$", re.MULTILINE)


class RunClock:
    """Seconds since the run's start (`zero_unix`, a wall-clock instant), read monotonically.

    The wall clock is read once, to place the zero; capture stamps (wall-clock `prft` times) are
    moved onto the same axis.
    """

    def __init__(self, zero_unix: float) -> None:
        self.zero_unix = zero_unix
        self._mono_zero = time.monotonic() - (time.time() - zero_unix)

    def now(self) -> float:
        return time.monotonic() - self._mono_zero

    def capture_s(self, unix_s: float) -> float:
        return unix_s - self.zero_unix


@dataclass(frozen=True)
class Target:
    """Where a session watches: the edges (host, port), which one to use, and the stream."""

    edges: Sequence[tuple[str, int]]
    pick_edge: Callable[[], int]
    """The index of the edge to (re)connect to: a request router's choice."""
    stream: str
    reconnect_s: float
    unit_s: float
    """Duration of one unit (part, segment or push chunk) of the stream."""
    hold_back: int
    """Units behind the newest listed one where an HLS or LL-HLS player starts."""


class EdgeFailed(Exception):
    """The edge refused or dropped the session: reconnect where `pick_edge` says."""


class Gone(EdgeFailed):
    """A 404 for media the session asked for: it fell out of the live window, start again from
    the live edge."""


def capture_unix_s(body: bytes) -> float:
    """Capture stamp of a part or segment (its first `prft`)."""
    try:
        capture_s = first_capture_s(body)
    except ValueError as error:
        raise EdgeFailed(f"media that is not fMP4: {error}") from None
    if capture_s is None:
        raise EdgeFailed("media without a prft capture stamp")
    return capture_s


async def _get(connection: HttpConnection, path: str) -> bytes:
    status, body = await connection.get(path)
    if status == 404:
        raise Gone(f"GET {path} answered 404")
    if status != 200:
        raise EdgeFailed(f"GET {path} answered {status}")
    return body


async def _on_edges(target: Target, play: Callable[[HttpConnection], Awaitable[None]]) -> None:
    """Run `play` on a connection to the edge `pick_edge` names, again and again: at once when
    it returns, after `reconnect_s` when the edge fails it."""
    while True:
        host, port = target.edges[target.pick_edge()]
        connection: HttpConnection | None = None
        try:
            connection = await HttpConnection.open(host, port)
            await play(connection)
            continue
        except (EdgeFailed, ConnectionError, OSError, TimeoutError):
            pass
        finally:
            if connection is not None:
                connection.close()
        await asyncio.sleep(target.reconnect_s)


async def llhls_session(target: Target, player: Player, clock: RunClock) -> None:
    """Play over LL-HLS until cancelled."""
    base = f"/live/{target.stream}"
    position: tuple[int, int] | None = None

    async def play(connection: HttpConnection) -> None:
        nonlocal position
        try:
            if position is None:
                listed = _PART_URI.findall(_listed(await _get(connection, f"{base}/index.m3u8")))
                if not listed:
                    raise EdgeFailed("playlist lists no parts")
                msn, index = listed[max(0, len(listed) - target.hold_back)]
                wanted = (int(msn), int(index))
                position = (wanted[0], wanted[1] - 1)  # a failover before it resumes at `wanted`
            else:
                wanted = await _next_part(connection, base, position)
            while True:
                body = await _get(connection, f"{base}/seg{wanted[0]}.part{wanted[1]}.m4s")
                player.receive(clock.now(), clock.capture_s(capture_unix_s(body)), target.unit_s)
                position = wanted
                wanted = await _next_part(connection, base, position)
        except Gone:
            position = None  # fell out of the live window: start again from the live edge

    await _on_edges(target, play)


async def _next_part(
    connection: HttpConnection, base: str, position: tuple[int, int]
) -> tuple[int, int]:
    """Block on the playlist until the part after `position` is listed; name that part."""
    msn, index = position
    text = _listed(
        await _get(connection, f"{base}/index.m3u8?_HLS_msn={msn}&_HLS_part={index + 1}")
    )
    if f"seg{msn}.part{index + 1}.m4s".encode() in text:
        return msn, index + 1
    if f"seg{msn + 1}.part0.m4s".encode() in text:
        return msn + 1, 0
    later = [(int(m), int(i)) for m, i in _PART_URI.findall(text) if (int(m), int(i)) > position]
    if not later:
        raise EdgeFailed(f"playlist reload lists nothing after seg{msn}.part{index}")
    return min(later)


def _listed(playlist: bytes) -> bytes:
    """The playlist up to its preload hint: the parts that exist, not the one announced next."""
    return playlist.split(b"#EXT-X-PRELOAD-HINT", 1)[0]


async def hls_session(target: Target, player: Player, clock: RunClock) -> None:
    """Play over classic HLS (whole segments, polled playlist) until cancelled."""
    base = f"/live/{target.stream}"
    next_poll_s = clock.now()
    last: int | None = None

    async def play(connection: HttpConnection) -> None:
        nonlocal last, next_poll_s
        while True:
            playlist = await _get(connection, f"{base}/index.m3u8")
            listed = [int(m) for m in _SEGMENT_URI.findall(playlist)]
            if last is None and listed:
                last = listed[max(0, len(listed) - target.hold_back)] - 1
            for msn in listed:
                if last is not None and msn > last:
                    body = await _get(connection, f"{base}/seg{msn}.m4s")
                    capture_s = clock.capture_s(capture_unix_s(body))
                    player.receive(clock.now(), capture_s, target.unit_s)
                    last = msn
            # The next poll on this viewer's own cadence (counted, not derived from the clock:
            # a timer may fire a little early).
            next_poll_s += target.unit_s
            while next_poll_s <= clock.now():
                next_poll_s += target.unit_s
            await asyncio.sleep(next_poll_s - clock.now())

    await _on_edges(target, play)


class _PushSession(PushProbe):
    """A push probe whose parts feed a play head."""

    def __init__(
        self, stats: ProbeStats, request: bytes, on_part: Callable[[float | None], None]
    ) -> None:
        super().__init__(stats, request)
        self.on_part = on_part
        self.ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def part_received(self, capture_unix_s: float | None) -> None:
        self.on_part(capture_unix_s)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self.ended.done():
            self.ended.set_result(None)


async def push_session(target: Target, player: Player, clock: RunClock, stats: ProbeStats) -> None:
    """Watch over push until cancelled (`stats` is shared by a crowd: one read buffer)."""
    loop = asyncio.get_running_loop()

    def on_part(capture_unix: float | None) -> None:
        if capture_unix is not None:
            player.receive(clock.now(), clock.capture_s(capture_unix), target.unit_s)

    while True:
        host, port = target.edges[target.pick_edge()]
        request = f"GET /push/{target.stream} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
        session: _PushSession | None = None
        try:
            _, session = await loop.create_connection(
                functools.partial(_PushSession, stats, request, on_part), host, port
            )
            await session.ended
        except (ConnectionError, OSError, TimeoutError):
            pass
        finally:
            if session is not None:
                session.close()
        await asyncio.sleep(target.reconnect_s)
