"""Real buyers for the sale service: one buy with retries, a crowd of them, a pipelined client.

* `buy`: one buyer on an aiohttp session. A 503 or a lost connection is retried with the same
  idempotency key after a full-jitter backoff (a bounded number of tries), so a retry can only
  replay the buyer's order, never make a second one.
* `run_buyers`: many `buy`s at once (a flash crowd), each on its own connection by default.
* `pipelined_buys`: the same buys over a few keep-alive connections with HTTP/1.1 pipelining,
  parsed with httptools: a client light enough to load the service rather than itself.
* `LoopLag`: how late this event loop's timers fire; a client whose loop lags measures itself.

Every result carries the final HTTP status (0 when no try was answered), the order for a 201,
the tries beyond the first and the time from the first send to the final answer (monotonic).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, cast
from urllib.parse import urlsplit

import aiohttp
import httptools
import numpy as np

RETRY_STATUSES = frozenset({503})
"""Answers that mean "not decided, try again with the same key"."""

NO_ANSWER = 0
"""`BuyResult.status` when no try got an answer."""

_TRANSPORT_ERRORS = (aiohttp.ClientError, ConnectionError, TimeoutError)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded retries with full-jitter exponential backoff."""

    tries_max: int = 5
    """Tries in all, the first included."""
    base_s: float = 0.05
    """Backoff ceiling before the first retry; it doubles with each retry."""
    cap_s: float = 2.0
    """Largest backoff ceiling."""
    timeout_s: float = 10.0
    """One try's limit, from sending to the whole answer."""

    def __post_init__(self) -> None:
        if self.tries_max < 1:
            raise ValueError(f"tries_max must be >= 1, got {self.tries_max}")
        if not 0 <= self.base_s <= self.cap_s:
            raise ValueError(f"need 0 <= base_s <= cap_s, got {self.base_s}, {self.cap_s}")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")

    def backoff_s(self, retry: int, rng: np.random.Generator) -> float:
        """Wait before retry number `retry` (0-based): uniform in [0, min(cap, base * 2^retry))."""
        return float(rng.uniform(0.0, min(self.cap_s, self.base_s * 2.0**retry)))


@dataclass(frozen=True, slots=True)
class BuyResult:
    """What one buyer finally heard."""

    user: str
    key: str
    """The idempotency key every try of this buyer sent."""
    status: int
    """Final HTTP status: 201 ordered, 409 sold out, 429 over the limit, ...; 0 if unanswered."""
    order: dict[str, Any] | None
    """The order body of a 201, else None."""
    response_s: float
    """From the first try's send to the final answer (or the last failure), monotonic clock."""
    retries: int
    """Tries beyond the first."""
    error: str | None = None
    """Why the last try failed (error body or transport error), None for a 201."""

    @property
    def order_id(self) -> int | None:
        return None if self.order is None else int(self.order["order_id"])


def buy_url(sale_url: str, sale_id: str) -> str:
    """The buy endpoint of sale `sale_id` at the service `sale_url`."""
    return f"{sale_url.rstrip('/')}/sales/{sale_id}/buy"


async def buy(
    session: aiohttp.ClientSession,
    sale_url: str,
    sale_id: str,
    user: str,
    key: str,
    *,
    rng: np.random.Generator,
    policy: RetryPolicy = RetryPolicy(),
) -> BuyResult:
    """One buyer: POST the buy, retrying 503s and transport failures with the same key."""
    url = buy_url(sale_url, sale_id)
    payload = {"user": user, "idempotency_key": key}
    timeout = aiohttp.ClientTimeout(total=policy.timeout_s)
    started_s = time.monotonic()
    status, body, error = NO_ANSWER, b"", ""
    for attempt in range(policy.tries_max):
        if attempt:
            await asyncio.sleep(policy.backoff_s(attempt - 1, rng))
        try:
            async with session.post(url, json=payload, timeout=timeout) as response:
                status, body = response.status, await response.read()
        except _TRANSPORT_ERRORS as failure:
            status, error = NO_ANSWER, f"{type(failure).__name__}: {failure}"
            continue
        if status not in RETRY_STATUSES:
            break
    return _result(user, key, status, body, error, time.monotonic() - started_s, attempt)


async def run_buyers(
    sale_url: str,
    sale_id: str,
    buyers: Sequence[tuple[str, str]],
    *,
    rng: np.random.Generator,
    policy: RetryPolicy = RetryPolicy(),
    connections_max: int = 0,
) -> list[BuyResult]:
    """Start every (user, key) buyer at once and return their results in the same order.

    `connections_max` bounds the open connections (0: one per buyer, a true flash crowd).
    """
    connector = aiohttp.TCPConnector(limit=connections_max)
    async with aiohttp.ClientSession(connector=connector) as session:
        return list(
            await asyncio.gather(
                *(
                    buy(session, sale_url, sale_id, user, key, rng=rng, policy=policy)
                    for user, key in buyers
                )
            )
        )


def _result(
    user: str, key: str, status: int, body: bytes, error: str, response_s: float, retries: int
) -> BuyResult:
    if status == 201:
        return BuyResult(user, key, status, json.loads(body), response_s, retries)
    if status != NO_ANSWER:
        error = _error_text(body)
    return BuyResult(user, key, status, None, response_s, retries, error)


def _error_text(body: bytes) -> str:
    try:
        return str(json.loads(body)["error"])
    except (ValueError, KeyError, TypeError):
        return body.decode("utf-8", "replace")


# -- pipelined client ------------------------------------------------------------------------


@dataclass(slots=True)
class _Try:
    """One buyer's request, sent (again) until it gets a final answer."""

    index: int
    user: str
    key: str
    request: bytes
    retries: int = 0
    first_sent_s: float | None = None


@dataclass(slots=True)
class _Run:
    """State shared by the connections of one `pipelined_buys` call."""

    policy: RetryPolicy
    rng: np.random.Generator
    depth: int
    results: list[BuyResult | None]
    pending: deque[_Try] = field(default_factory=deque)
    idle: set[_Pipeline] = field(default_factory=set)
    """Connections that would send more if `pending` had any."""
    unanswered: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def finish(self, attempt: _Try, status: int, body: bytes, error: str) -> None:
        sent_s = attempt.first_sent_s if attempt.first_sent_s is not None else time.monotonic()
        response_s = time.monotonic() - sent_s
        self.results[attempt.index] = _result(
            attempt.user, attempt.key, status, body, error, response_s, attempt.retries
        )
        self.unanswered -= 1
        if self.unanswered == 0:
            self.done.set()

    def failed(self, attempt: _Try, status: int, body: bytes, error: str) -> None:
        """A try got a 503 or no answer: retry it after a backoff, or give up."""
        if attempt.retries + 1 >= self.policy.tries_max:
            self.finish(attempt, status, body, error)
            return
        wait_s = self.policy.backoff_s(attempt.retries, self.rng)
        attempt.retries += 1
        asyncio.get_running_loop().call_later(wait_s, self.requeue, attempt)

    def requeue(self, attempt: _Try) -> None:
        self.pending.append(attempt)
        for pipeline in list(self.idle):
            pipeline.fill()


class _Pipeline(asyncio.Protocol):
    """One keep-alive connection with up to `depth` requests in flight, answered in order."""

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.in_flight: deque[_Try] = deque()
        self.parser = httptools.HttpResponseParser(self)
        self.body: list[bytes] = []
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.fill()

    def fill(self) -> None:
        """Send pending requests until `depth` are in flight."""
        run, transport = self.run, self.transport
        if transport is None or transport.is_closing():
            return
        batch: list[bytes] = []
        now_s = time.monotonic()
        while run.pending and len(self.in_flight) < run.depth:
            attempt = run.pending.popleft()
            if attempt.first_sent_s is None:
                attempt.first_sent_s = now_s
            self.in_flight.append(attempt)
            batch.append(attempt.request)
        if batch:
            transport.write(b"".join(batch))
            self._arm()
        if len(self.in_flight) < run.depth:
            run.idle.add(self)
        else:
            run.idle.discard(self)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            assert self.transport is not None
            self.transport.abort()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        attempt = self.in_flight.popleft()
        status, body = self.parser.get_status_code(), b"".join(self.body)
        self.body = []
        if status in RETRY_STATUSES:
            self.run.failed(attempt, status, body, "")
        else:
            self.run.finish(attempt, status, body, "")
        if not self.parser.should_keep_alive():
            assert self.transport is not None
            self.transport.close()
            return
        self._arm()
        self.fill()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self.run.idle.discard(self)
        error = f"connection lost: {exc}" if exc else "connection closed"
        while self.in_flight:
            self.run.failed(self.in_flight.popleft(), NO_ANSWER, b"", error)
        if not self.lost.done():
            self.lost.set_result(None)

    def _arm(self) -> None:
        """(Re)start the answer timeout while requests are in flight."""
        self._disarm()
        if self.in_flight:
            loop = asyncio.get_running_loop()
            self.timer = loop.call_later(self.run.policy.timeout_s, self._timed_out)

    def _disarm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _timed_out(self) -> None:
        self.timer = None
        if self.transport is not None:
            self.transport.abort()


async def pipelined_buys(
    sale_url: str,
    sale_id: str,
    buyers: Sequence[tuple[str, str]],
    *,
    rng: np.random.Generator,
    policy: RetryPolicy = RetryPolicy(),
    connections: int = 16,
    depth: int = 8,
) -> list[BuyResult]:
    """Send every (user, key) buy over `connections` keep-alive connections, `depth` pipelined
    requests on each; their results in the same order. Retries as `buy` does: a 503 after a
    backoff, and the unanswered requests of a lost connection on a new one.
    """
    if connections < 1 or depth < 1:
        raise ValueError(f"connections and depth must be >= 1, got {connections}, {depth}")
    parts = urlsplit(buy_url(sale_url, sale_id))
    if parts.scheme != "http" or parts.hostname is None:
        raise ValueError(f"sale_url {sale_url!r}: expected http://HOST:PORT")
    host, port = parts.hostname, parts.port or 80
    head = f"POST {parts.path} HTTP/1.1\r\nhost: {parts.netloc}\r\n"
    head += "content-type: application/json\r\ncontent-length: "
    run = _Run(policy, rng, depth, [None] * len(buyers), unanswered=len(buyers))
    for index, (user, key) in enumerate(buyers):
        body = json.dumps({"user": user, "idempotency_key": key}).encode()
        request = b"%b%d\r\n\r\n%b" % (head.encode(), len(body), body)
        run.pending.append(_Try(index, user, key, request))
    if not buyers:
        return []
    keepers = [asyncio.ensure_future(_keep_connected(run, host, port)) for _ in range(connections)]
    try:
        await run.done.wait()
    finally:
        for keeper in keepers:
            keeper.cancel()
        await asyncio.gather(*keepers, return_exceptions=True)
    return [result for result in run.results if result is not None]


async def _keep_connected(run: _Run, host: str, port: int) -> None:
    """Keep one pipelined connection open until the run is done, reconnecting after a backoff.

    A failed connect counts as a failed try for up to `depth` pending requests, so a service
    that stays down ends the run once their tries are spent.
    """
    loop = asyncio.get_running_loop()
    failures = 0
    while not run.done.is_set():
        try:
            _, pipeline = await loop.create_connection(lambda: _Pipeline(run), host, port)
        except OSError as error:
            for _ in range(min(run.depth, len(run.pending))):
                run.failed(run.pending.popleft(), NO_ANSWER, b"", f"connect: {error}")
            await asyncio.sleep(run.policy.backoff_s(failures, run.rng))
            failures += 1
            continue
        failures = 0
        try:
            await pipeline.lost
        finally:
            if pipeline.transport is not None:
                pipeline.transport.close()


# -- honesty of the client -------------------------------------------------------------------


class LoopLag:
    """Samples how late this event loop's timers fire, every `tick_s`, while in the block."""

    def __init__(self, tick_s: float = 0.05) -> None:
        self.tick_s = tick_s
        self.samples_s: list[float] = []
        """One lateness per tick (a few per second: bounded by the block's length)."""
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LoopLag:
        self._task = asyncio.ensure_future(self._watch())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.tick_s
            await asyncio.sleep(self.tick_s)
            self.samples_s.append(loop.time() - due)

    def quantile_s(self, q: float) -> float:
        """The q-quantile of the lateness (0 before any sample)."""
        return float(np.quantile(self.samples_s, q)) if self.samples_s else 0.0
