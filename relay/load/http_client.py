"""A lean keep-alive HTTP/1.1 GET client: one connection, one request at a time.

Load generators run thousands of these in one process; aiohttp's client costs several times more
per request than the relay spends answering it, so a crowd on aiohttp measures the client. Here
a response is parsed by httptools straight from the socket's buffer, with no per-request object
beyond the body.
"""

from __future__ import annotations

import asyncio
from typing import cast

import httptools


class HttpConnection(asyncio.Protocol):
    """One kept-alive connection to `host:port`; `get` one path at a time."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._body: list[bytes] = []
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._lost: Exception | None = None

    @classmethod
    async def open(cls, host: str, port: int, timeout_s: float = 5.0) -> HttpConnection:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout_s):
            _, connection = await loop.create_connection(lambda: cls(f"{host}:{port}"), host, port)
        return connection

    async def get(self, path: str, timeout_s: float = 10.0) -> tuple[int, bytes]:
        """(status, body) of `GET path`; ConnectionError when the connection fails or times out."""
        if self._lost is not None or self.transport is None:
            raise ConnectionError(f"connection to {self.host} is closed")
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
        try:
            async with asyncio.timeout(timeout_s):
                return await waiter
        except TimeoutError:
            self.close()
            raise ConnectionError(f"GET {path} timed out after {timeout_s} s") from None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # -- asyncio.Protocol ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._fail(ConnectionError(f"bad response from {self.host}: {error}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError(f"connection to {self.host} lost"))

    # -- httptools callbacks ---------------------------------------------------------------------

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        body = b"".join(self._body)
        self._body = []
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result((self._parser.get_status_code(), body))

    def _fail(self, error: Exception) -> None:
        self._lost = error
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
