"""A small HTTP/1.1 server on asyncio and httptools, shared by the origin, edges and sale service.

The servers are thin shells: a handler takes a `Request` and returns a `Response` (whole body)
or a `Streamed` one (chunked, written as its chunks come), synchronously when it can answer at
once (a cached part: no task, no await) or as a coroutine when it must wait (a blocked playlist
reload, a fetch from the parent, a sale's commit).

Robustness is built into the connection, not left to handlers:

* request line and headers must arrive within `Limits.header_timeout_s` and fit in
  `Limits.header_bytes` (408 / 431), so a client dribbling its request (slowloris) costs one idle
  socket and is then dropped;
* a body larger than `Limits.body_bytes` gets 413 (before it is read when Content-Length says
  so, as soon as it passes the limit when chunked); a body that stalls for
  `Limits.body_idle_timeout_s` gets 408;
* reading pauses while a request body waits unread (backpressure to the sender);
* a client that stops reading a response is dropped once its unsent data has not drained for
  `Limits.write_timeout_s`: it cannot hold up anyone else, because nothing is shared that waits
  on its socket, and it cannot make the server buffer more than one response beyond
  `Limits.write_buffer_bytes` (the next pipelined request waits until that has drained);
* malformed requests (an encoded '/' or '\\' or a '.' or '..' segment in the path among them) get
  400 and the connection is closed; other connections go on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Protocol, cast
from urllib.parse import parse_qsl, unquote

import httptools

log = logging.getLogger("livesim.relay.http")

LISTEN_BACKLOG = 4096
"""Pending connections the kernel queues: a flash crowd connects all at once (asyncio's
default of 100 makes the rest retry their SYN a second later)."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-connection bounds; the defaults suit media and small JSON bodies."""

    header_bytes: int = 16 * 1024
    body_bytes: int = 8 * 1024 * 1024
    header_timeout_s: float = 10.0
    """From connection (or the end of the previous response) to the end of the headers."""
    body_idle_timeout_s: float = 10.0
    keepalive_timeout_s: float = 60.0
    write_buffer_bytes: int = 1024 * 1024
    """Unsent response data above which writing pauses (and the write timeout starts)."""
    write_timeout_s: float = 10.0
    pipelined_max: int = 16
    """Requests queued on one connection before reading pauses."""


class HttpError(Exception):
    """Raised by a handler to answer with `status` and a one-line JSON error."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Body:
    """A request body as it arrives: read whole (`read`) or chunk by chunk (`chunks`)."""

    __slots__ = ("_buffered", "_chunks", "_done", "_error", "_on_drain", "_ready", "length")

    def __init__(self, on_drain: Callable[[], None]) -> None:
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._done = False
        self._error: BaseException | None = None
        self._ready = asyncio.Event()
        self._on_drain = on_drain
        self.length = 0
        """Bytes received so far."""

    @property
    def buffered(self) -> int:
        """Bytes received and not yet taken by the handler."""
        return self._buffered

    @property
    def complete(self) -> bool:
        return self._done

    def feed(self, chunk: bytes) -> None:
        self._chunks.append(chunk)
        self._buffered += len(chunk)
        self.length += len(chunk)
        self._ready.set()

    def end(self) -> None:
        self._done = True
        self._ready.set()

    def fail(self, error: BaseException) -> None:
        self._error = error
        self._ready.set()

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body's chunks as they arrive; raises ConnectionError if the client goes away."""
        while True:
            while self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                self._on_drain()
                yield chunk
            if self._error is not None:
                raise self._error
            if self._done:
                return
            self._ready.clear()
            await self._ready.wait()

    async def read(self) -> bytes:
        """The whole body."""
        if self._done and self._error is None:
            # Already all here (small bodies usually are): no generator round trips.
            data = b"".join(self._chunks)
            self._chunks.clear()
            self._buffered = 0
            self._on_drain()
            return data
        return b"".join([chunk async for chunk in self.chunks()])


@dataclass(slots=True)
class Request:
    method: str
    path: str
    """Percent-decoded path, without the query."""
    query: dict[str, str]
    headers: dict[str, str]
    """Lower-case names; repeated headers joined with ', '."""
    body: Body
    params: dict[str, str] = field(default_factory=dict)
    """Named groups of the route that matched."""
    peer: str = ""


@dataclass(slots=True)
class Response:
    """A whole response. `data()` caches its encoding, so a cached part is encoded once."""

    status: int
    body: bytes = b""
    content_type: str | None = None
    headers: Sequence[tuple[str, str]] = ()
    _encoded: bytes | None = None

    def data(self) -> bytes:
        if self._encoded is None:
            self._encoded = _head(self.status, self.content_type, self.headers, len(self.body))
            self._encoded += self.body
        return self._encoded


@dataclass(slots=True)
class Streamed:
    """A response sent with chunked encoding as `chunks` yields its pieces."""

    status: int
    chunks: AsyncIterator[bytes]
    content_type: str | None = None
    headers: Sequence[tuple[str, str]] = ()


Reply = Response | Streamed
Handler = Callable[[Request], Reply | Awaitable[Reply]]


class Observer(Protocol):
    """Told of every response and of the body bytes sent (streamed ones as they go)."""

    def response(self, request: Request, status: int) -> None: ...

    def sent(self, nbytes: int) -> None: ...


def json_error(status: int, message: str) -> Response:
    """The JSON error body every server uses: {"error": message}."""
    body = json.dumps({"error": message}).encode()
    return Response(status, body, "application/json")


def _head(
    status: int, content_type: str | None, headers: Sequence[tuple[str, str]], length: int | None
) -> bytes:
    lines = [f"HTTP/1.1 {status} {_reason(status)}"]
    if content_type is not None:
        lines.append(f"content-type: {content_type}")
    lines.extend(f"{name}: {value}" for name, value in headers)
    lines.append("transfer-encoding: chunked" if length is None else f"content-length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


_CLOSE = b"connection: close\r\n"


class Router:
    """Routes by method and a path regex with named groups; the first match wins.

    `names` maps a group name to the pattern its value must match: routes capture whole path
    segments loosely (`{name}` in a pattern stands for `(?P<name>[^/]+)`) and a value outside
    its pattern is a 400 naming it, not a 404.
    """

    def __init__(self, names: dict[str, str] | None = None) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self._names = {name: re.compile(rule) for name, rule in (names or {}).items()}

    def add(self, method: str, pattern: str, handler: Handler) -> None:
        for name in self._names:
            pattern = pattern.replace(f"{{{name}}}", f"(?P<{name}>[^/]+)")
        self._routes.append((method, re.compile(pattern), handler))

    def __call__(self, request: Request) -> Reply | Awaitable[Reply]:
        allowed = False
        for method, pattern, handler in self._routes:
            match = pattern.fullmatch(request.path)
            if match is None:
                continue
            if method != request.method and not (method == "GET" and request.method == "HEAD"):
                allowed = True
                continue
            params = match.groupdict()
            for name, value in params.items():
                rule = self._names.get(name)
                if rule is not None and not rule.fullmatch(value):
                    return json_error(400, f"malformed {name}: {value[:64]!r}")
            request.params = params
            return handler(request)
        if allowed:
            return json_error(405, f"method {request.method} not allowed on {request.path}")
        return json_error(404, f"no such resource: {request.path}")


_BAD_PATH = re.compile(r"(^|/)\.\.?(/|$)|//|\\|[\x00-\x1f\x7f]")
_ENCODED_SEPARATOR = re.compile(rb"%(2f|5c)", re.IGNORECASE)
"""An encoded '/' or '\\': decoded, it would split or join path segments behind the router."""


class Connection(asyncio.Protocol):
    """One client connection: parses requests, runs the handler, writes responses in order."""

    def __init__(
        self,
        handler: Handler,
        limits: Limits,
        on_close: Callable[[], None],
        observe: Observer | None = None,
    ) -> None:
        self.handler = handler
        self.limits = limits
        self._observe = observe
        self._on_close = on_close
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self._url = bytearray()
        self._headers: dict[str, str] = {}
        self._header_bytes = 0
        self._current: Request | None = None
        self._queue: deque[tuple[Request, bool]] = deque()
        self._busy = False
        """A queued request is being handled (until its response is written and drained)."""
        self._responding = False
        """Bytes of the oldest queued request's response have been written."""
        self._in_headers = False
        self._closing = False
        self._paused_reading = False
        self._drained = asyncio.Event()
        self._drained.set()
        self._timer: asyncio.TimerHandle | None = None
        self._flush_timer: asyncio.TimerHandle | None = None
        """After close: checks that unsent data still leaves (see `_abort_if_stuck`)."""
        self._task: asyncio.Task[None] | None = None
        self._peer = ""
        self._keep_alive = True
        self._has_body = False

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.set_write_buffer_limits(high=self.limits.write_buffer_bytes)
        peer = transport.get_extra_info("peername")
        self._peer = f"{peer[0]}:{peer[1]}" if peer else ""
        self._arm(self.limits.header_timeout_s, "request headers")

    def data_received(self, data: bytes) -> None:
        if self._closing:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(400, "protocol upgrades are not supported")
        except httptools.HttpParserError as error:
            # A callback's own HttpError comes back wrapped in the parser's error.
            cause = error.__context__
            if isinstance(cause, HttpError):
                self._fail(cause.status, cause.message)
            else:
                self._fail(400, f"malformed request: {error}")

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        self._disarm()
        if self._flush_timer is not None:
            self._flush_timer.cancel()
        self._drained.set()
        if self._current is not None:
            self._current.body.fail(ConnectionError("client went away"))
        for request, _ in self._queue:
            request.body.fail(ConnectionError("client went away"))
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._on_close()

    def pause_writing(self) -> None:
        self._drained.clear()

    def resume_writing(self) -> None:
        self._drained.set()

    # -- httptools callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = bytearray()
        self._headers = {}
        self._header_bytes = 0
        self._in_headers = True
        if not self._busy:
            self._arm(self.limits.header_timeout_s, "request headers")

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._count_header(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_header(len(name) + len(value))
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self._headers[key] = f"{self._headers[key]}, {text}" if key in self._headers else text

    def on_headers_complete(self) -> None:
        self._in_headers = False
        parsed = httptools.parse_url(bytes(self._url))
        if _ENCODED_SEPARATOR.search(parsed.path):
            raise HttpError(400, "malformed path: encoded '/' or '\\'")
        path = unquote(parsed.path.decode("latin-1"), errors="strict")
        query = dict(parse_qsl(parsed.query.decode("latin-1"))) if parsed.query else {}
        request = Request(
            self.parser.get_method().decode("latin-1"),
            path,
            query,
            self._headers,
            Body(self._body_drained),
            peer=self._peer,
        )
        self._current = request
        self._keep_alive = self.parser.should_keep_alive()
        length = self._headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.limits.body_bytes:
            raise HttpError(413, f"body larger than {self.limits.body_bytes} bytes")
        if _BAD_PATH.search(path):
            raise HttpError(400, "malformed path")
        if self.parser.should_upgrade():
            # Refused before the handler runs (the parser would report it only afterwards).
            raise HttpError(400, "protocol upgrades are not supported")
        chunked = "chunked" in self._headers.get("transfer-encoding", "")
        self._has_body = chunked or (length is not None and length != "0")
        if self._has_body:
            # Handlers may stream the body (ingest): start them with the headers.
            self._enqueue(request)
            self._arm(self.limits.body_idle_timeout_s, "request body")

    def on_body(self, body: bytes) -> None:
        assert self._current is not None
        self._current.body.feed(body)
        if self._current.body.length > self.limits.body_bytes:
            raise HttpError(413, f"body larger than {self.limits.body_bytes} bytes")
        if self._current.body.buffered > 4 * 65536:
            self._pause_reading()
        self._arm(self.limits.body_idle_timeout_s, "request body")

    def on_message_complete(self) -> None:
        request = self._current
        if request is not None:
            request.body.end()
            self._current = None
            if not self._has_body:
                self._enqueue(request)
        if self._busy:
            self._disarm()
        else:
            self._arm(self.limits.keepalive_timeout_s, "next request")

    # -- requests and responses ----------------------------------------------------------------

    def _enqueue(self, request: Request) -> None:
        self._queue.append((request, self._keep_alive))
        if len(self._queue) >= self.limits.pipelined_max:
            self._pause_reading()
        if not self._busy:
            self._next()

    def _next(self) -> None:
        """Start the oldest queued request."""
        if not self._queue or self._closing:
            return
        request, keep_alive = self._queue[0]
        self._busy = True
        try:
            reply = self.handler(request)
        except HttpError as error:
            reply = json_error(error.status, error.message)
        except Exception:
            log.exception("handler failed", extra={"path": request.path})
            reply = json_error(500, "internal error")
        if isinstance(reply, Response):
            self._finish(request, keep_alive, reply)
        else:
            self._task = asyncio.ensure_future(self._run(request, keep_alive, reply))

    async def _run(
        self, request: Request, keep_alive: bool, pending: Reply | Awaitable[Reply]
    ) -> None:
        try:
            reply = pending if isinstance(pending, Response | Streamed) else await pending
        except HttpError as error:
            reply = json_error(error.status, error.message)
        except (ConnectionError, asyncio.CancelledError):
            return
        except Exception:
            log.exception("handler failed", extra={"path": request.path})
            reply = json_error(500, "internal error")
        if isinstance(reply, Streamed):
            await self._stream(request, keep_alive, reply)
        else:
            self._finish(request, keep_alive, reply)

    def _finish(self, request: Request, keep_alive: bool, reply: Response) -> None:
        transport = self.transport
        if transport is None or self._closing:
            return
        close = not keep_alive or not request.body.complete
        data = reply.data()
        sent = len(reply.body)
        if request.method == "HEAD":
            data = data[: len(data) - sent]
            sent = 0
        if self._observe is not None:
            self._observe.response(request, reply.status)
            self._observe.sent(sent)
        self._responding = True
        if close:
            transport.write(_with_close(data))
            self._close()
            return
        transport.write(data)
        if self._drained.is_set():
            self._done()
        else:
            self._task = asyncio.ensure_future(self._done_when_drained())

    async def _done_when_drained(self) -> None:
        if await self._drain():
            self._done()

    async def _drain(self) -> bool:
        """Wait until unsent data falls below the limit; False if the client is gone or dropped."""
        try:
            await asyncio.wait_for(self._drained.wait(), self.limits.write_timeout_s)
        except TimeoutError:
            log.info("dropped a client that stopped reading", extra={"peer": self._peer})
            if self.transport is not None:
                self.transport.abort()
            return False
        return not self._closing

    async def _stream(self, request: Request, keep_alive: bool, reply: Streamed) -> None:
        transport = self.transport
        if transport is None or self._closing:
            return
        close = not keep_alive or not request.body.complete
        head = _head(reply.status, reply.content_type, reply.headers, None)
        transport.write(_with_close(head) if close else head)
        self._responding = True
        observe = self._observe
        if observe is not None:
            observe.response(request, reply.status)
        try:
            async for chunk in reply.chunks:
                if self._closing:
                    return
                if chunk:
                    transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
                    if observe is not None:
                        observe.sent(len(chunk))
                if not self._drained.is_set() and not await self._drain():
                    return
        except (ConnectionError, ValueError) as error:
            # The source broke off (a parent's answer, a relayed stream): no terminating chunk,
            # so the client sees the body as incomplete rather than short.
            log.info("streamed response broke off", extra={"peer": self._peer, "error": str(error)})
            transport.abort()
            return
        finally:
            aclose = getattr(reply.chunks, "aclose", None)
            if aclose is not None:
                await aclose()
        if self._closing:
            return
        transport.write(b"0\r\n\r\n")
        if close:
            self._close()
        elif self._drained.is_set() or await self._drain():
            self._done()

    def _done(self) -> None:
        self._queue.popleft()
        self._busy = False
        self._responding = False
        self._task = None
        if self._paused_reading and len(self._queue) < self.limits.pipelined_max:
            self._resume_reading()
        if self._queue:
            self._next()
        elif self._in_headers:
            # The next request started arriving while this one was handled: its headers get
            # the header timeout from now, not the keep-alive timeout.
            self._arm(self.limits.header_timeout_s, "request headers")
        elif self._current is None:
            self._arm(self.limits.keepalive_timeout_s, "next request")

    # -- flow control, timers, failure ---------------------------------------------------------

    def _count_header(self, n: int) -> None:
        self._header_bytes += n
        if self._header_bytes > self.limits.header_bytes:
            raise HttpError(
                431, f"request line and headers larger than {self.limits.header_bytes} bytes"
            )

    def _body_drained(self) -> None:
        if self._paused_reading and (self._current is None or self._current.body.buffered < 65536):
            self._resume_reading()

    def _pause_reading(self) -> None:
        if not self._paused_reading and self.transport is not None:
            self._paused_reading = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._paused_reading and self.transport is not None and not self._closing:
            self._paused_reading = False
            self.transport.resume_reading()

    def _arm(self, timeout_s: float, waiting_for: str) -> None:
        self._disarm()
        self._timer = asyncio.get_running_loop().call_later(timeout_s, self._timeout, waiting_for)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timeout(self, waiting_for: str) -> None:
        self._timer = None
        if waiting_for == "next request":
            self._close()
        else:
            self._fail(408, f"timed out waiting for the {waiting_for}")

    def _fail(self, status: int, message: str) -> None:
        """Answer a broken request with `status` and close.

        The answer goes out unless a response has begun or an earlier pipelined request is still
        owed one. A handler already started on the broken request (waiting for its body) is
        cancelled when the connection is lost, and can no longer answer.
        """
        if self.transport is None or self._closing:
            return
        owed = [request for request, _ in self._queue]
        if not self._responding and all(request is self._current for request in owed):
            self.transport.write(_with_close(json_error(status, message).data()))
        self._close()

    def _close(self) -> None:
        """Close once unsent data is out; drop the client if it stops taking it."""
        self._closing = True
        self._disarm()
        if self.transport is not None:
            self.transport.close()
            self._abort_if_stuck(self.transport, None)

    def _abort_if_stuck(self, transport: asyncio.Transport, unsent: int | None) -> None:
        """Abort `transport` if none of its unsent data left in the last `write_timeout_s`."""
        left = transport.get_write_buffer_size()
        if left == 0:
            return
        if unsent is not None and left >= unsent:
            log.info("dropped a client that stopped reading", extra={"peer": self._peer})
            transport.abort()
            return
        loop = asyncio.get_running_loop()
        self._flush_timer = loop.call_later(
            self.limits.write_timeout_s, self._abort_if_stuck, transport, left
        )


def _with_close(data: bytes) -> bytes:
    """Insert `connection: close` after the status line."""
    end = data.index(b"\r\n") + 2
    return data[:end] + _CLOSE + data[end:]


@dataclass
class HttpServer:
    """A listening server and its open connections."""

    server: asyncio.Server
    connections: set[Connection]

    @property
    def port(self) -> int:
        return int(self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        self.server.close()
        for connection in list(self.connections):
            connection._close()
        await self.server.wait_closed()


async def serve(
    handler: Handler,
    host: str = "127.0.0.1",
    port: int = 0,
    limits: Limits | None = None,
    observe: Observer | None = None,
    **kw: Any,
) -> HttpServer:
    """Listen on (host, port) (0: a free port) and serve `handler` until closed."""
    limits = limits or Limits()
    connections: set[Connection] = set()

    def factory() -> Connection:
        connection = Connection(handler, limits, lambda: connections.discard(connection), observe)
        connections.add(connection)
        return connection

    kw.setdefault("backlog", LISTEN_BACKLOG)
    server = await asyncio.get_running_loop().create_server(factory, host, port, **kw)
    return HttpServer(server, connections)
