"""A lean push client for load tests: thousands of push viewers in one process.

`relay.load.viewer.push_viewer` parses every part (aiohttp, then the fragment splitter, which
copies the media twice); at thousands of viewers that client, not the edge, would be measured.
Here each viewer is an `asyncio.BufferedProtocol` that reads into one buffer shared by the
whole process (each read is handled before the next begins), follows the chunked framing and the
MP4 box headers, and copies only the header bytes and each part's `prft` box (its capture
stamp), never the media.

A part counts as received when the last byte of its mdat arrives; its delay is that moment
minus its capture stamp, both read from this machine's wall clock (so the figure means
something only when publisher and probe share a clock, as on loopback). Parts captured before
the viewer subscribed (the catch-up an edge sends at join) are not delays.

The probe also samples its own event-loop lag (how late a 50 ms timer fires) and CPU share
(and its core's, when it is pinned to one): a probe whose loop lags is measuring itself, and
its delays are too high by that lag. It can watch the server under test too: the CPU share of
a process and the busy share of its core over the measured window, and how much of that core
other processes took (Linux, from /proc).

    python -m relay.load.push_probe URL --viewers N [--duration-s D] [--warmup-s W]
        [--watch-pid PID] [--watch-core CORE]

opens N connections to `URL` (an edge's `/push/<stream>`), waits until all have their init
segment (or `--join-timeout-s`), lets `--warmup-s` pass, measures for `--duration-s` and prints
one JSON line (`ProbeReport`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import cast
from urllib.parse import urlsplit

from relay.core.fmp4 import ntp_to_unix
from relay.server.run import run

READ_BUFFER_BYTES = 256 * 1024
HEAD_MAX_BYTES = 16 * 1024
"""Largest response head or chunk-size line accepted."""
PRFT_MAX_BYTES = 64
DELAY_BUCKET_S = 0.001
DELAY_BUCKETS = 60_000
"""Delays are counted in 1 ms buckets up to a minute (the last bucket takes anything above)."""
LAG_TICK_S = 0.05

# Chunked-framing states.
_HEAD, _SIZE, _DATA, _CRLF, _END = range(5)


class ProbeError(Exception):
    """The edge answered something that is not a push stream."""


@dataclass
class ProbeStats:
    """What all the probe's viewers saw; shared by its connections."""

    buffer: bytearray = field(default_factory=lambda: bytearray(READ_BUFFER_BYTES))
    """The one read buffer: each read is parsed before the next one is made."""
    measuring: bool = False
    """Parts count as delays only while measuring."""
    delays: list[int] = field(default_factory=lambda: [0] * DELAY_BUCKETS)
    """Parts by capture-to-receive delay, in DELAY_BUCKET_S buckets."""
    parts: int = 0
    """Live parts received while measuring (stamped or not)."""
    max_delay_s: float = 0.0
    connected: int = 0
    """Connections answered 200."""
    joined: int = 0
    """Connections that received their init segment."""
    refused: int = 0
    """Connections refused, or answered with anything but 200."""
    dropped: int = 0
    """Connections that got 200 and then ended before the probe stopped."""
    errors: dict[str, int] = field(default_factory=dict)
    """Why connections failed or ended, with how many."""

    def record(self, delay_s: float) -> None:
        self.parts += 1
        bucket = int(delay_s / DELAY_BUCKET_S)
        self.delays[min(max(bucket, 0), DELAY_BUCKETS - 1)] += 1
        if delay_s > self.max_delay_s:
            self.max_delay_s = delay_s

    def error(self, reason: str) -> None:
        self.errors[reason] = self.errors.get(reason, 0) + 1

    def delay_quantile_s(self, q: float) -> float | None:
        """Quantile `q` of the delays (its bucket's upper edge, capped at the largest); or None."""
        total = sum(self.delays)
        if total == 0:
            return None
        rank = q * total
        seen = 0
        for bucket, count in enumerate(self.delays):
            seen += count
            if count and seen >= rank:
                return min((bucket + 1) * DELAY_BUCKET_S, self.max_delay_s)
        return self.max_delay_s


class PushProbe(asyncio.BufferedProtocol):
    """One push viewer: sends `GET path`, then tracks part boundaries and capture stamps."""

    def __init__(self, stats: ProbeStats, request: bytes) -> None:
        self.stats = stats
        self.request = request
        self.transport: asyncio.Transport | None = None
        self.subscribed_s = 0.0
        self.closing = False
        """Set when the probe itself ends the connection (then it is not a drop)."""
        self._state = _HEAD
        self._line = bytearray()
        """The response head or a chunk-size line, as it arrives."""
        self._chunk_left = 0
        self._crlf_left = 0
        # Box scanning of the payload.
        self._head = bytearray()
        self._head_size = 8
        self._kind = b""
        self._body_left = 0
        self._prft: bytearray | None = None
        self._capture_s: float | None = None

    # -- asyncio.BufferedProtocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.subscribed_s = time.time()
        self.transport.write(self.request)

    def get_buffer(self, sizehint: int) -> bytearray:
        return self.stats.buffer

    def buffer_updated(self, nbytes: int) -> None:
        try:
            self._framing(self.stats.buffer, 0, nbytes)
        except (ProbeError, ValueError) as error:
            self._fail(str(error).split(":")[0])

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closing:
            return
        if self._state == _HEAD:
            self.stats.refused += 1
            self.stats.error("closed before answering")
        elif self._state != _END:
            self.stats.dropped += 1
            self.stats.error("connection lost")

    def close(self) -> None:
        """End the connection (no drop is counted)."""
        self.closing = True
        if self.transport is not None:
            self.transport.abort()

    # -- HTTP chunked framing ------------------------------------------------------------------

    def _framing(self, buf: bytearray, start: int, end: int) -> None:
        while start < end:
            state = self._state
            if state == _DATA:
                n = min(self._chunk_left, end - start)
                self._payload(buf, start, start + n)
                start += n
                self._chunk_left -= n
                if self._chunk_left == 0:
                    self._state = _CRLF
                    self._crlf_left = 2
            elif state == _CRLF:
                n = min(self._crlf_left, end - start)
                start += n
                self._crlf_left -= n
                if self._crlf_left == 0:
                    self._state = _SIZE
            elif state == _SIZE:
                start = self._size_line(buf, start, end)
            elif state == _HEAD:
                start = self._response_head(buf, start, end)
            else:  # _END: ignore anything after the last chunk
                return

    def _response_head(self, buf: bytearray, start: int, end: int) -> int:
        at = len(self._line)
        self._line += buf[start:end]
        found = self._line.find(b"\r\n\r\n", max(0, at - 3))
        if found < 0:
            if len(self._line) > HEAD_MAX_BYTES:
                raise ProbeError("response head too large")
            return end
        head = bytes(self._line[:found]).lower()
        if not head.startswith((b"http/1.1 200", b"http/1.0 200")):
            self.stats.refused += 1
            self.stats.error(f"answered {head[9:12].decode('latin-1')}")
            self.close()
            return end
        if b"transfer-encoding: chunked" not in head:
            raise ProbeError("push response is not chunked")
        self.stats.connected += 1
        self._state = _SIZE
        used = found + 4 - at
        self._line.clear()
        return start + used

    def _size_line(self, buf: bytearray, start: int, end: int) -> int:
        if self._line.endswith(b"\r") and buf[start] == 0x0A:  # "\r" and "\n" in two reads
            line = bytes(self._line[:-1])
            after = start + 1
        else:
            found = buf.find(b"\r\n", start, end)
            if found < 0:
                self._line += buf[start:end]
                if len(self._line) > HEAD_MAX_BYTES:
                    raise ProbeError("chunk size line too long")
                return end
            line = bytes(self._line) + bytes(buf[start:found])
            after = found + 2
        self._line.clear()
        size = int(line.split(b";", 1)[0], 16)
        if size == 0:
            self._state = _END
            self.stats.dropped += 1
            self.stats.error("stream ended")
            self.close()
            return end
        self._chunk_left = size
        self._state = _DATA
        return after

    # -- MP4 boxes in the payload --------------------------------------------------------------

    def _payload(self, buf: bytearray, start: int, end: int) -> None:
        while start < end:
            if self._body_left:
                n = min(self._body_left, end - start)
                if self._prft is not None:
                    self._prft += buf[start : start + n]
                start += n
                self._body_left -= n
                if self._body_left == 0:
                    self._box_done()
                continue
            take = min(self._head_size - len(self._head), end - start)
            self._head += buf[start : start + take]
            start += take
            if len(self._head) == self._head_size:
                self._box_header()

    def _box_header(self) -> None:
        head = self._head
        size = int.from_bytes(head[0:4], "big")
        if size == 1 and self._head_size == 8:
            self._head_size = 16  # a 64-bit largesize follows
            return
        if size == 1:
            size = int.from_bytes(head[8:16], "big")
        self._kind = bytes(head[4:8])
        self._body_left = size - self._head_size
        if size == 0 or self._body_left < 0:
            raise ProbeError(f"bad {self._kind!r} box size {size}")
        if self._kind == b"prft":
            if self._body_left > PRFT_MAX_BYTES:
                raise ProbeError(f"prft box of {size} bytes")
            self._prft = bytearray()
        if self._body_left == 0:
            self._box_done()

    def _box_done(self) -> None:
        kind = self._kind
        self._head.clear()
        self._head_size = 8
        if kind == b"mdat":
            self._part_done()
        elif kind == b"prft":
            assert self._prft is not None
            self._capture_s = _prft_capture_s(self._prft)
            self._prft = None
        elif kind == b"moov":
            self.stats.joined += 1

    def _part_done(self) -> None:
        capture_s, self._capture_s = self._capture_s, None
        self.part_received(capture_s)

    def part_received(self, capture_s: float | None) -> None:
        """A part's last byte arrived (`capture_s`: its prft stamp, if any): count its delay."""
        stats = self.stats
        if not stats.measuring:
            return
        if capture_s is None:
            stats.parts += 1
        elif capture_s >= self.subscribed_s:
            stats.record(time.time() - capture_s)

    def _fail(self, reason: str) -> None:
        self.stats.dropped += 1
        self.stats.error(reason)
        self.close()


def _prft_capture_s(body: bytearray) -> float:
    """Unix time of a prft body (version/flags, track id, 64-bit NTP time, media time)."""
    if len(body) < 16:
        raise ProbeError("prft box too short")
    return ntp_to_unix(int.from_bytes(body[8:16], "big"))


@dataclass
class ProbeReport:
    """One probe run; delays and lags in milliseconds, None when nothing was measured."""

    viewers: int
    connected: int
    joined: int
    refused: int
    dropped: int
    errors: dict[str, int]
    connect_s: float
    """From the first connection attempt until every viewer joined (or the join timeout)."""
    measured_s: float
    parts: int
    delay_p50_ms: float | None
    delay_p99_ms: float | None
    delay_max_ms: float | None
    lag_p50_ms: float | None
    lag_p99_ms: float | None
    lag_max_ms: float | None
    probe: Shares
    """The probe's own CPU, and its core's when it runs on one core."""
    watched: Shares
    """CPU of the watched process and its core over the measured window (None: not watched)."""


@dataclass(frozen=True)
class Usage:
    """CPU seconds so far of a process and of a core (zeros for what is not watched)."""

    process_s: float = 0.0
    core_busy_s: float = 0.0
    core_interrupt_s: float = 0.0
    """Of the busy time, hard and soft interrupts (loopback TCP work among them)."""
    core_total_s: float = 0.0


@dataclass(frozen=True)
class Shares:
    """CPU over a window, as shares of it; None for what was not watched."""

    process: float | None
    """The process's CPU time over the wall time."""
    core_busy: float | None
    """The core's busy time (the process, the kernel's work for it, anyone else's)."""
    core_other: float | None
    """The core's busy time not spent by the process nor in interrupts: another process ran
    there, and the figures measured meanwhile are low."""


@dataclass(frozen=True)
class Watch:
    """A process (the server under test) and the core it runs on, read from /proc (Linux)."""

    pid: int | None = None
    core: int | None = None

    def sample(self) -> Usage:
        tick_s = 1.0 / os.sysconf("SC_CLK_TCK")
        process_s = 0.0
        if self.pid is not None:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
            process_s = (int(fields[11]) + int(fields[12])) * tick_s
        if self.core is None:
            return Usage(process_s)
        name = f"cpu{self.core}"
        for line in Path("/proc/stat").read_text().splitlines():
            fields = line.split()
            if fields[0] == name:
                user, nice, system, idle, iowait, irq, softirq, steal = map(int, fields[1:9])
                busy = user + nice + system + irq + softirq + steal
                return Usage(
                    process_s,
                    busy * tick_s,
                    (irq + softirq) * tick_s,
                    (busy + idle + iowait) * tick_s,
                )
        raise ValueError(f"no core {self.core} in /proc/stat")

    def shares(
        self, before: Usage, after: Usage, wall_s: float, process_s: float | None = None
    ) -> Shares:
        """What was used between two samples `wall_s` apart.

        `process_s`: the process's CPU seconds over the window when they are known otherwise
        (a child process that has ended and left /proc); then `pid` need not be set.
        """
        if process_s is None and self.pid is not None:
            process_s = after.process_s - before.process_s
        total_s = after.core_total_s - before.core_total_s
        busy_s = after.core_busy_s - before.core_busy_s
        interrupt_s = after.core_interrupt_s - before.core_interrupt_s
        return Shares(
            None if process_s is None else round(process_s / wall_s, 3),
            None if self.core is None else round(busy_s / total_s, 3),
            None
            if self.core is None or process_s is None
            else round(max(0.0, busy_s - interrupt_s - process_s) / total_s, 3),
        )


def _only_core() -> int | None:
    """The core this process is pinned to, if it is pinned to one."""
    cores = os.sched_getaffinity(0)
    return next(iter(cores)) if len(cores) == 1 else None


def raise_open_files(needed: int) -> int:
    """Raise the soft limit on open files towards `needed` (up to the hard limit); the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        soft = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft


async def probe(
    url: str,
    viewers: int,
    duration_s: float,
    *,
    warmup_s: float = 2.0,
    join_timeout_s: float = 30.0,
    connecting_max: int = 256,
    watch: Watch | None = None,
) -> ProbeReport:
    """Run `viewers` push viewers of `url` and measure them for `duration_s`.

    Connects at most `connecting_max` at a time, waits until every viewer has its init segment
    (or `join_timeout_s`), lets `warmup_s` pass, then measures.
    """
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname is None:
        raise ValueError(f"url must be http://HOST:PORT/push/STREAM, got {url!r}")
    host, port = parts.hostname, parts.port or 80
    limit = raise_open_files(viewers + 64)
    if limit < viewers + 64:
        raise ValueError(f"{viewers} viewers need {viewers + 64} open files; the limit is {limit}")
    request = f"GET {parts.path or '/'} HTTP/1.1\r\nhost: {parts.netloc}\r\n\r\n".encode("latin-1")
    loop = asyncio.get_running_loop()
    stats = ProbeStats()
    probes: list[PushProbe] = []
    gate = asyncio.Semaphore(connecting_max)

    async def connect() -> None:
        async with gate:
            try:
                _, protocol = await loop.create_connection(
                    lambda: PushProbe(stats, request), host, port
                )
            except OSError as error:
                stats.refused += 1
                stats.error(f"connect: {error.strerror or error}")
                return
            probes.append(protocol)

    started_s = loop.time()
    await asyncio.gather(*(connect() for _ in range(viewers)))
    while stats.joined + stats.refused + stats.dropped < viewers:
        if loop.time() > started_s + join_timeout_s:
            break
        await asyncio.sleep(0.05)
    connect_s = loop.time() - started_s
    await asyncio.sleep(warmup_s)

    lags_s: list[float] = []
    stats.measuring = True
    watch = watch or Watch()
    watched0 = watch.sample()
    own = Watch(os.getpid(), _only_core())
    own0, wall0_s = own.sample(), loop.time()
    while loop.time() < wall0_s + duration_s:
        due = loop.time() + LAG_TICK_S
        await asyncio.sleep(LAG_TICK_S)
        lags_s.append(loop.time() - due)
    stats.measuring = False
    own1, wall1_s = own.sample(), loop.time()
    watched1 = watch.sample()
    for one in probes:
        one.close()

    measured_s = wall1_s - wall0_s
    lags = sorted(lags_s)

    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000.0, 1)

    def lag(q: float) -> float:
        return lags[min(len(lags) - 1, int(q * len(lags)))]

    return ProbeReport(
        viewers=viewers,
        connected=stats.connected,
        joined=stats.joined,
        refused=stats.refused,
        dropped=stats.dropped,
        errors=stats.errors,
        connect_s=round(connect_s, 2),
        measured_s=round(measured_s, 2),
        parts=stats.parts,
        delay_p50_ms=ms(stats.delay_quantile_s(0.5)),
        delay_p99_ms=ms(stats.delay_quantile_s(0.99)),
        delay_max_ms=ms(stats.max_delay_s) if stats.parts else None,
        lag_p50_ms=ms(lag(0.5)),
        lag_p99_ms=ms(lag(0.99)),
        lag_max_ms=ms(lags[-1]),
        probe=own.shares(own0, own1, measured_s),
        watched=watch.shares(watched0, watched1, measured_s),
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m relay.load.push_probe")
    parser.add_argument("url", help="an edge's push stream: http://HOST:PORT/push/STREAM")
    parser.add_argument("--viewers", type=int, required=True)
    parser.add_argument("--duration-s", type=float, default=10.0)
    parser.add_argument("--warmup-s", type=float, default=2.0)
    parser.add_argument("--join-timeout-s", type=float, default=30.0)
    parser.add_argument("--watch-pid", type=int, help="report this process's CPU share (Linux)")
    parser.add_argument("--watch-core", type=int, help="report this core's busy share (Linux)")
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.viewers < 1 or args.duration_s <= 0 or args.warmup_s < 0:
        raise SystemExit("--viewers must be >= 1, --duration-s > 0 and --warmup-s >= 0")
    report = run(
        probe(
            args.url,
            args.viewers,
            args.duration_s,
            warmup_s=args.warmup_s,
            join_timeout_s=args.join_timeout_s,
            watch=Watch(args.watch_pid, args.watch_core),
        )
    )
    print(json.dumps(asdict(report)), flush=True)


if __name__ == "__main__":
    main()
