"""The bench's buyers: each press the load processes hand over becomes a buy, sent on time.

Buys leave from the bench's own process, whose event loop carries little else (publishers and
the counters), so a buyer's response time is the sale service's and not a viewer crowd's
bursts. Times are on the run's clock; a buy's response time runs from its first send to its
final answer, retries included (monotonic clock).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp
import numpy as np

from relay.load.buyer import RetryPolicy, buy
from relay.load.sessions import RunClock
from sim.bench.load import Presses


@dataclass(frozen=True)
class SaleEndpoint:
    sale_url: str
    sale_id: str
    policy: RetryPolicy


@dataclass(frozen=True)
class BuyRecord:
    user: str
    latency_s: float
    """The buyer's replay latency when the announcement played."""
    send_s: float
    """First try sent, run clock."""
    status: int
    """Final HTTP status (0: no try was answered)."""
    response_s: float
    retries: int


class BuyerDesk:
    """Sends every handed-over press at its time and keeps the answers, per sale."""

    def __init__(
        self,
        clock: RunClock,
        session: aiohttp.ClientSession,
        sales: list[SaleEndpoint],
        rng: np.random.Generator,
    ) -> None:
        self.clock = clock
        self.session = session
        self.sales = sales
        self.rng = rng
        self.records: list[list[BuyRecord]] = [[] for _ in sales]
        self._tasks: set[asyncio.Task[None]] = set()

    def hand_over(self, message: Presses) -> None:
        for press in message.presses:
            task = asyncio.ensure_future(
                self._buy(message.sale, press.user, press.key, press.latency_s, press.press_s)
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def finish(self) -> None:
        """Wait for the buys still in flight."""
        while self._tasks:
            await asyncio.gather(*self._tasks)

    async def _buy(self, sale: int, user: str, key: str, latency_s: float, press_s: float) -> None:
        endpoint = self.sales[sale]
        await asyncio.sleep(max(0.0, press_s - self.clock.now()))
        send_s = self.clock.now()
        result = await buy(
            self.session,
            endpoint.sale_url,
            endpoint.sale_id,
            user,
            key,
            rng=self.rng,
            policy=endpoint.policy,
        )
        self.records[sale].append(
            BuyRecord(user, latency_s, send_s, result.status, result.response_s, result.retries)
        )
