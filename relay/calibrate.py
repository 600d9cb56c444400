"""`livesim calibrate`: measure this machine's relay service parameters on loopback.

`measure` starts an origin, one edge and the sale service (SQLite in a temporary directory) as
processes on 127.0.0.1, and reads each server's CPU time (utime + stime of every thread, from
/proc/<pid>/stat) around a load:

* loopback round trip: the median of sequential `GET /healthz` on one kept-alive connection;
* request cost: a small cached part (~1 kB) requested from the edge for `duration_s` over
  several keep-alive connections, each with one request in flight: edge CPU / requests;
* byte cost: the same with a large part (~300 kB): the extra CPU per request over the small
  part, divided by the extra body bytes;
* sale service: pipelined buys (`relay.load.buyer.pipelined_buys`) for about `duration_s`:
  sale CPU / buys; then sequential single buys: median latency - round trip - service is the
  time one group commit takes (SQLite, `synchronous=FULL`, on the temporary directory's disk).

Every process started is stopped before `measure` returns or raises (also on Ctrl-C).
Linux only (it reads /proc).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import platform
import re
import secrets
import socket
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httptools
import numpy as np

from relay.core.fmp4_writer import fragment, init_segment
from relay.load.buyer import BuyResult, pipelined_buys
from relay.server.run import run
from relay.up import Servers, start_server
from sim.calibration import Calibration
from sim.results import livesim_version

HOST = "127.0.0.1"
STREAM = "calibration"
RTT_REQUESTS = 200
RTT_WARMUP_REQUESTS = 20
SINGLE_BUYS = 50
PROBE_BUYS = 2_000
"""Buys before the measured ones: they warm the service and give the rate to size the run."""
SMALL_PART_BYTES = 1_000
LARGE_PART_BYTES = 300_000
PART_FRAMES = 10
TIMESCALE = 90_000
FRAME_TICKS = 3_000
"""10 frames of 1/30 s: a 1/3 s part, within the origin's PART-TARGET."""
GET_CONNECTIONS = 8
GET_DEPTH = 1
"""GETs in flight per connection: one, as a viewer has. Deeper pipelines make the server buffer
large answers beyond the socket's buffer, which costs more per byte than viewers cause (on a
2-core machine, depth 8 measured ~2x the per-byte cost of depth 1); the small part's cost is the
same either way."""
BUY_CONNECTIONS = 64
BUY_DEPTH = 8
"""512 buys in flight keep the service ~90 % busy on a 2-core machine (128 in flight left it ~70 %
busy and ~50 % dearer per buy: smaller groups carry each commit's CPU)."""
SALE_STOCK = 10**15
"""More than any run can sell: every buy makes an order."""
DRAIN_TIMEOUT_S = 30.0
CONNECTION_TIMEOUT_S = 30.0
_PART_URI = re.compile(r'^#EXT-X-PART:.*URI="([^"]+)"', re.MULTILINE)


class CalibrationError(RuntimeError):
    """A server answered something a measurement cannot use; the message says what."""


def cpu_s(pid: int) -> float:
    """CPU time (user + system, all threads) process `pid` has used, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as fh:
        text = fh.read()
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) ": state is field 3
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15, in clock ticks
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


# -- a blocking client for sequential requests -------------------------------------------------


class _Answer:
    """httptools callbacks collecting one response."""

    def __init__(self) -> None:
        self.body: list[bytes] = []
        self.complete = False

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        self.complete = True


class _Connection:
    """One kept-alive HTTP/1.1 connection, one request at a time."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.hostname != HOST or parts.port is None:
            raise ValueError(f"expected http://{HOST}:PORT, got {url!r}")
        self.netloc = parts.netloc
        self.sock = socket.create_connection((HOST, parts.port), timeout=CONNECTION_TIMEOUT_S)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, bytes]:
        """Send one request and read its whole answer: (status, body)."""
        lines = [f"{method} {path} HTTP/1.1", f"host: {self.netloc}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        if body or method in ("POST", "PUT"):
            lines.append(f"content-length: {len(body)}")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        answer = _Answer()
        parser = httptools.HttpResponseParser(answer)
        while not answer.complete:
            data = self.sock.recv(1 << 16)
            if not data:
                raise CalibrationError(f"{method} {path}: the server closed the connection")
            parser.feed_data(data)
        return parser.get_status_code(), b"".join(answer.body)

    def expect(
        self,
        status: int,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> bytes:
        """`request`, raising CalibrationError unless the answer has `status`; its body."""
        got, answer = self.request(method, path, body, headers)
        if got != status:
            raise CalibrationError(
                f"{method} {path}: expected {status}, got {got} {answer[:200]!r}"
            )
        return answer

    def close(self) -> None:
        self.sock.close()


# -- a pipelined GET load ----------------------------------------------------------------------


@dataclass
class _Load:
    """One GET load shared by its connections."""

    request: bytes
    depth: int
    sending: bool = True
    responses: int = 0
    body_bytes: int = 0
    bad: str | None = None
    """The first unexpected answer or lost connection."""


class _GetPipeline(asyncio.Protocol):
    """One keep-alive connection repeating a GET with up to `depth` in flight."""

    def __init__(self, load: _Load) -> None:
        self.load = load
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.in_flight = 0
        self.drained: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def fill(self) -> None:
        """Top the pipeline up to `depth` requests in one write."""
        count = self.load.depth - self.in_flight
        if self.transport is not None and count > 0:
            self.transport.write(self.load.request * count)
            self.in_flight += count

    def stop(self) -> None:
        if self.in_flight == 0 and not self.drained.done():
            self.drained.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_body(self, body: bytes) -> None:
        self.load.body_bytes += len(body)

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        if status != 200 and self.load.bad is None:
            self.load.bad = f"status {status}"
        self.in_flight -= 1
        self.load.responses += 1
        if self.load.sending:
            if self.in_flight <= self.load.depth // 2:
                self.fill()
        else:
            self.stop()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.drained.done():
            self.load.bad = self.load.bad or f"connection lost: {exc}"
            self.drained.set_result(None)


@dataclass(frozen=True)
class _Measured:
    requests: int
    body_bytes: int
    cpu_s: float


async def _drive_gets(url: str, path: str, pid: int, duration_s: float) -> _Measured:
    """GET `path` at `url` for `duration_s` (GET_CONNECTIONS connections, GET_DEPTH requests in
    flight on each); what server `pid` did and the CPU it used."""
    parts = urlsplit(url)
    assert parts.port is not None
    load = _Load(f"GET {path} HTTP/1.1\r\nhost: {parts.netloc}\r\n\r\n".encode(), GET_DEPTH)
    loop = asyncio.get_running_loop()
    pipelines: list[_GetPipeline] = []
    try:
        for _ in range(GET_CONNECTIONS):
            _, pipeline = await loop.create_connection(lambda: _GetPipeline(load), HOST, parts.port)
            pipelines.append(pipeline)
        before_s = cpu_s(pid)
        for pipeline in pipelines:
            pipeline.fill()
        await asyncio.sleep(duration_s)
        load.sending = False
        for pipeline in pipelines:
            pipeline.stop()
        await asyncio.wait_for(asyncio.gather(*(p.drained for p in pipelines)), DRAIN_TIMEOUT_S)
        used_s = cpu_s(pid) - before_s
    finally:
        for pipeline in pipelines:
            if pipeline.transport is not None:
                pipeline.transport.close()
    if load.bad is not None:
        raise CalibrationError(f"GET {path}: {load.bad}")
    return _Measured(load.responses, load.body_bytes, used_s)


# -- the measurements --------------------------------------------------------------------------


@dataclass
class _Context:
    """The servers of one calibration and how to report progress."""

    servers: Servers
    say: Callable[[str], None]
    key: str = field(default_factory=lambda: secrets.token_urlsafe(24))

    def url(self, role: str) -> tuple[str, int]:
        """(url, pid) of the origin, the (first) edge or the sale service."""
        entry = {
            "origin": self.servers.origin,
            "edge": self.servers.edges[0] if self.servers.edges else None,
            "sale": self.servers.sale,
        }[role]
        assert entry is not None
        return entry[1], entry[0].pid


def _start(context: _Context, store: str) -> None:
    common = ["--host", HOST, "--log-level", "warning"]
    servers = context.servers
    # "--key=KEY" in one argument: a random key may start with "-"
    servers.origin = start_server("origin", [*common, f"--key={context.key}"])
    servers.edges.append(start_server("edge", [*common, "--parent", servers.origin[1]]))
    servers.sale = start_server("sale", [*common, "--store", store])


def _round_trip_ms(context: _Context) -> float:
    url, _ = context.url("edge")
    context.say(f"loopback round trip: {RTT_REQUESTS} sequential GET /healthz")
    with closing(_Connection(url)) as connection:
        for _ in range(RTT_WARMUP_REQUESTS):
            connection.expect(200, "GET", "/healthz")
        times_s = []
        for _ in range(RTT_REQUESTS):
            start_s = time.monotonic()
            connection.expect(200, "GET", "/healthz")
            times_s.append(time.monotonic() - start_s)
    return statistics.median(times_s) * 1e3


def _part(sequence: int, sample_bytes: int, *, independent: bool) -> bytes:
    return fragment(
        sequence,
        (sequence - 1) * PART_FRAMES * FRAME_TICKS,
        [FRAME_TICKS] * PART_FRAMES,
        [max(6, sample_bytes // PART_FRAMES)] * PART_FRAMES,
        independent=independent,
        capture_s=time.time(),
    )


def _publish(context: _Context) -> list[tuple[str, int]]:
    """Put an init segment, a small and a large part into the origin; [(edge path, size)]."""
    origin, _ = context.url("origin")
    edge, _ = context.url("edge")
    small = _part(1, SMALL_PART_BYTES, independent=True)
    large = _part(2, LARGE_PART_BYTES, independent=False)
    context.say(f"publishing a {len(small):,}-byte and a {len(large):,}-byte part")
    auth = {"authorization": f"Bearer {context.key}"}
    ingest = f"/ingest/{STREAM}"
    with closing(_Connection(origin)) as connection:
        connection.expect(201, "PUT", f"{ingest}/init.mp4", init_segment(TIMESCALE, 640, 360), auth)
        for name, body in (("small.m4s", small), ("large.m4s", large)):
            connection.expect(201, "PUT", f"{ingest}/{name}", body, auth)
    with closing(_Connection(edge)) as connection:
        playlist = connection.expect(200, "GET", f"/live/{STREAM}/index.m3u8").decode()
        uris = _PART_URI.findall(playlist)
        if len(uris) != 2:
            raise CalibrationError(f"expected 2 parts in the edge's playlist, got {playlist!r}")
        objects = [
            (f"/live/{STREAM}/{uri}", len(body))
            for uri, body in zip(uris, (small, large), strict=True)
        ]
        for path, size in objects:  # the first GET fills the edge's cache, the second hits it
            for _ in range(2):
                if len(connection.expect(200, "GET", path)) != size:
                    raise CalibrationError(f"GET {path}: not the {size} bytes published")
    return objects


def _edge_load(context: _Context, path: str, size: int, duration_s: float) -> _Measured:
    url, pid = context.url("edge")
    context.say(f"edge: GET a {size:,}-byte cached part for {duration_s:g} s")
    measured = run(_drive_gets(url, path, pid, duration_s))
    if measured.requests == 0 or measured.body_bytes != measured.requests * size:
        raise CalibrationError(f"GET {path}: {measured.requests} answers, wrong body bytes")
    return measured


def _edge_costs(context: _Context, duration_s: float) -> tuple[float, float]:
    """(request_ms, ns_per_byte) of the edge serving cached parts.

    A byte cost too small to show in the CPU clock's ticks is given as one tick over the large
    part's run (the most it can be), so it stays > 0.
    """
    (small_path, small_bytes), (large_path, large_bytes) = _publish(context)
    small = _edge_load(context, small_path, small_bytes, duration_s)
    large = _edge_load(context, large_path, large_bytes, duration_s)
    extra_bytes = large_bytes - small_bytes
    slope_s = (large.cpu_s / large.requests - small.cpu_s / small.requests) / extra_bytes
    tick_s = 1.0 / os.sysconf("SC_CLK_TCK")
    return small.cpu_s / small.requests * 1e3, max(slope_s, tick_s / large.body_bytes) * 1e9


def _buyers(tag: str, count: int) -> list[tuple[str, str]]:
    return [(f"{tag}-user-{i}", f"{tag}-key-{i}") for i in range(count)]


def _sale_costs(context: _Context, duration_s: float, rtt_ms: float) -> tuple[float, float]:
    """(sale_service_ms, sale_commit_ms) of the sale service on SQLite."""
    url, pid = context.url("sale")
    rng = np.random.default_rng(0)  # only for retry backoff; no retries are expected
    with closing(_Connection(url)) as connection:
        body = b'{"sku": "calibration", "stock": %d, "per_user_limit": 1}' % SALE_STOCK
        sale_id = _json_id(connection.expect(201, "POST", "/sales", body))
    start_s = time.monotonic()
    _check_orders(run(_buys(url, sale_id, _buyers("probe", PROBE_BUYS), rng)))
    rate_per_s = PROBE_BUYS / (time.monotonic() - start_s)
    count = max(PROBE_BUYS, round(rate_per_s * duration_s))
    context.say(f"sale: {count:,} pipelined buys (about {duration_s:g} s)")
    before_s = cpu_s(pid)
    _check_orders(run(_buys(url, sale_id, _buyers("load", count), rng)))
    service_ms = (cpu_s(pid) - before_s) / count * 1e3
    context.say(f"sale: {SINGLE_BUYS} sequential single buys")
    with closing(_Connection(url)) as connection:
        times_s = []
        for user, key in _buyers("single", SINGLE_BUYS):
            body = b'{"user": "%s", "idempotency_key": "%s"}' % (user.encode(), key.encode())
            start_s = time.monotonic()
            connection.expect(201, "POST", f"/sales/{sale_id}/buy", body)
            times_s.append(time.monotonic() - start_s)
    commit_ms = max(0.0, statistics.median(times_s) * 1e3 - rtt_ms - service_ms)
    return service_ms, commit_ms


async def _buys(
    url: str, sale_id: str, buyers: list[tuple[str, str]], rng: np.random.Generator
) -> list[BuyResult]:
    return await pipelined_buys(
        url, sale_id, buyers, rng=rng, connections=BUY_CONNECTIONS, depth=BUY_DEPTH
    )


def _check_orders(results: list[BuyResult]) -> None:
    bad = [r for r in results if r.status != 201]
    if bad:
        raise CalibrationError(f"{len(bad)} buys not ordered, e.g. {bad[0].status} {bad[0].error}")


def _json_id(body: bytes) -> str:
    try:
        return str(json.loads(body)["id"])
    except (ValueError, KeyError, TypeError):
        raise CalibrationError(f"POST /sales: no id in {body[:200]!r}") from None


def provenance(duration_s: float) -> dict[str, str]:
    """Where and when a calibration was measured."""
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "system": platform.platform(),
        "cpus": str(os.cpu_count()),
        "livesim_version": livesim_version(),
        "duration_s": f"{duration_s:g}",
    }


def measure(duration_s: float = 3.0, progress: Callable[[str], None] | None = None) -> Calibration:
    """Measure this machine's relay service parameters (see the module docstring).

    `duration_s` is the length of each load (edge small part, edge large part, sale buys);
    `progress` gets one line per step. Raises relay.up.StartupError when a server does not
    start and CalibrationError when one answers something unexpected.
    """
    if not (math.isfinite(duration_s) and duration_s > 0):
        raise ValueError(f"duration_s must be > 0, got {duration_s}")
    context = _Context(Servers(), progress or (lambda _line: None))
    with tempfile.TemporaryDirectory(prefix="livesim-calibrate-") as tmp:
        try:
            context.say(f"starting an origin, an edge and the sale service on {HOST}")
            _start(context, f"sqlite:{os.path.join(tmp, 'sale.db')}")
            rtt_ms = _round_trip_ms(context)
            request_ms, ns_per_byte = _edge_costs(context, duration_s)
            service_ms, commit_ms = _sale_costs(context, duration_s, rtt_ms)
        finally:
            _stop(context.servers)
    return Calibration(
        loopback_rtt_ms=rtt_ms,
        request_ms=request_ms,
        ns_per_byte=ns_per_byte,
        sale_service_ms=service_ms,
        sale_commit_ms=commit_ms,
        measured=provenance(duration_s),
    )


def _stop(servers: Servers) -> None:
    """Stop every server started (SIGTERM, then SIGKILL) and close their pipes."""
    try:
        servers.stop()
    finally:
        for process in servers.processes():
            if process.poll() is None:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()
