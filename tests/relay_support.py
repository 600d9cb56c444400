"""Real relay servers and a publisher as processes on 127.0.0.1, for the relay tests."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

from relay.server.run import run
from relay.up import Servers, start_all

T = TypeVar("T")
KEY = "test-ingest-key"


@dataclass
class Relay:
    servers: Servers

    @property
    def origin(self) -> str:
        assert self.servers.origin is not None
        return self.servers.origin[1]

    @property
    def edges(self) -> list[str]:
        return [url for _, url in self.servers.edges]

    @property
    def sale(self) -> str:
        assert self.servers.sale is not None
        return self.servers.sale[1]

    def ingest(self, stream: str) -> str:
        return f"{self.origin}/ingest/{stream}/"


@contextmanager
def relay_up(tmp: Path, edges: int = 2, store: str | None = None) -> Iterator[Relay]:
    """`livesim relay up`'s servers, stopped (SIGTERM, then SIGKILL) on exit."""
    servers = start_all(edges, "127.0.0.1", store or f"sqlite:{tmp / 'sale.db'}", KEY)
    try:
        yield Relay(servers)
    finally:
        servers.stop()


@contextmanager
def publishing(
    relay: Relay, stream: str, *, bitrate_kbps: float = 800.0, duration_s: float = 600.0
) -> Iterator[None]:
    """`livesim relay publish` of `stream` in its own process, until the block ends.

    800 kbit/s is the lowest rendition of the shipped scenarios: 1,000 viewers of it are all the
    bytes one asyncio client process on a shared core can take in without becoming the bottleneck.
    """
    command = [
        sys.executable, "-m", "sim.cli", "relay", "publish", "--ingest", relay.ingest(stream),
        "--key", KEY, "--duration-s", str(duration_s), "--bitrate-kbps", str(bitrate_kbps),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    try:
        wait_for_parts(relay.edges[0], stream, 2)
        yield
    finally:
        process.terminate()
        process.wait(10)


def wait_for_parts(edge: str, stream: str, parts: int, timeout_s: float = 20.0) -> None:
    """Block until the stream's playlist at `edge` lists `parts` parts."""

    async def listed() -> int:
        url = f"{edge}/live/{stream}/index.m3u8"
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            text = await response.text()
            return text.count("#EXT-X-PART:") if response.status == 200 else 0

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if arun(listed()) >= parts:
            return
        time.sleep(0.2)
    raise TimeoutError(f"{stream} did not reach {parts} parts at {edge} in {timeout_s} s")


def arun(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion on a fresh event loop (uvloop where installed)."""
    result: T = run(coroutine)
    return result


LAG_TICK_S = 0.05


async def crowd(
    viewer: Callable[[aiohttp.ClientSession, int], Coroutine[Any, Any, None]],
    count: int,
    duration_s: float,
) -> list[float]:
    """Run `viewer(session, i)` for i in range(count) for `duration_s`, then cancel them all.

    Returns the client's event-loop lag, sampled every 50 ms: how late a timer fired. A client
    whose loop lags is measuring itself, not the servers.
    """
    lags: list[float] = []

    async def watch_lag() -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + LAG_TICK_S
            await asyncio.sleep(LAG_TICK_S)
            lags.append(loop.time() - due)

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = [asyncio.ensure_future(viewer(session, i)) for i in range(count)]
        tasks.append(asyncio.ensure_future(watch_lag()))
        await asyncio.sleep(duration_s)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return lags
