"""Sale store on Redis: one Lua script applies `Inventory`'s rules atomically on the server.

The script replays a known idempotency key's order, then checks the buyer's count against the
per-user limit, then the stock, and only then takes the next order id (HINCRBY of the sale's
`sold` field) and records the order: Redis runs it as one step, so any number of sale services
may share the server without overselling. Buys that arrive together go out as one pipeline of
EVALSHA calls, encoded here and sent in one write on a pooled connection (a few pipelines in
flight at once): that is what lets one process reach tens of thousands of buys per second.

An order is confirmed once Redis ran the script, so it survives a crash of the sale service.
Surviving a crash of Redis itself is the server's configuration: `appendonly yes` with
`appendfsync always`.

Each sale is one hash, `livesim:sale:ID`: fields sku, stock, per_user_limit and sold, then
`k:KEY` -> "ORDER_ID:CREATED_S:USER" per order and `u:USER` -> orders held per buyer.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError, ResponseError

from relay.core.inventory import Outcome
from relay.server.store.base import (
    OrderRecord,
    SaleStatus,
    StoreUnavailable,
    UnknownSale,
    check_sale,
)

_BUY_LUA = """
local sale = redis.call('HMGET', KEYS[1], 'stock', 'per_user_limit', 'sold')
if not sale[1] then return '-1' end
local prior = redis.call('HGET', KEYS[1], 'k:' .. ARGV[2])
if prior then return '1:' .. prior end
local held = tonumber(redis.call('HGET', KEYS[1], 'u:' .. ARGV[1]) or 0)
if held >= tonumber(sale[2]) then return '3' end
if tonumber(sale[3]) >= tonumber(sale[1]) then return '2' end
local order_id = redis.call('HINCRBY', KEYS[1], 'sold', 1) - 1
local record = string.format('%d:%s:%s', order_id, ARGV[3], ARGV[1])
redis.call('HSET', KEYS[1], 'k:' .. ARGV[2], record)
redis.call('HINCRBY', KEYS[1], 'u:' .. ARGV[1], 1)
return '0:' .. record
"""
"""KEYS: the sale. ARGV: user, key, now_s. Returns "OUTCOME[:RECORD]", or "-1" for no sale."""

_BUY_SHA = hashlib.sha1(_BUY_LUA.encode()).hexdigest()
_BUY_HEAD = b"*7\r\n$7\r\nEVALSHA\r\n$40\r\n%b\r\n$1\r\n1\r\n" % _BUY_SHA.encode()
_NEXT_SALE = "livesim:sales:next"
_UNKNOWN = -1

_Call = tuple[str, tuple[str, str, str], "asyncio.Future[str]"]


class RedisStore:
    """`SaleStore` on a Redis server; see the module docstring."""

    def __init__(self, url: str, *, pipelines_in_flight: int = 4, batch_max: int = 512) -> None:
        self.url = url
        """Where the server is: redis://HOST:PORT[/DB]."""
        self._pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=pipelines_in_flight + 4, decode_responses=True
        )
        self._redis = aioredis.Redis.from_pool(self._pool)
        self._pipelines_in_flight = pipelines_in_flight
        self._batch_max = batch_max
        self._queue: list[_Call] = []
        self._senders: set[asyncio.Task[None]] = set()
        self._closed = False

    async def create(self, sku: str, stock: int, per_user_limit: int) -> str:
        check_sale(stock, per_user_limit)
        self._check_open()
        with self._unavailable():
            sale_id = str(await self._redis.incr(_NEXT_SALE))
            await self._redis.hset(
                _sale_key(sale_id),
                mapping={"sku": sku, "stock": stock, "per_user_limit": per_user_limit, "sold": 0},
            )
        return sale_id

    async def buy(self, sale_id: str, user: str, key: str) -> tuple[Outcome, OrderRecord | None]:
        self._check_open()
        reply = await self._call(_sale_key(sale_id), (user, key, repr(time.time())))
        code, _, record = reply.partition(":")
        if int(code) == _UNKNOWN:
            raise UnknownSale(sale_id)
        return Outcome(int(code)), _parse_record(sale_id, key, record) if record else None

    async def status(self, sale_id: str) -> SaleStatus | None:
        self._check_open()
        with self._unavailable():
            fields = await self._redis.hmget(
                _sale_key(sale_id), ["sku", "stock", "per_user_limit", "sold"]
            )
        if fields[0] is None:
            return None
        sku, stock, per_user_limit, sold = map(str, fields)
        return SaleStatus(sku, int(stock), int(per_user_limit), int(sold))

    async def orders(self, sale_id: str) -> list[OrderRecord]:
        if await self.status(sale_id) is None:
            raise UnknownSale(sale_id)
        with self._unavailable():
            fields = await self._redis.hgetall(_sale_key(sale_id))
        orders = [
            _parse_record(sale_id, str(name)[2:], str(record))
            for name, record in fields.items()
            if str(name).startswith("k:")
        ]
        return sorted(orders, key=lambda order: order.order_id)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        while self._senders:
            await asyncio.wait(set(self._senders))
        await self._redis.aclose()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailable(f"{self.url}: store is closed")

    @contextmanager
    def _unavailable(self) -> Iterator[None]:
        """Turn a Redis failure into StoreUnavailable."""
        try:
            yield
        except RedisError as error:
            raise StoreUnavailable(f"{self.url}: {error}") from error

    def _call(self, sale: str, args: tuple[str, str, str]) -> asyncio.Future[str]:
        """Queue one run of the buy script; a sender pipelines it with the others queued."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[str] = loop.create_future()
        self._queue.append((sale, args, future))
        if len(self._senders) < self._pipelines_in_flight:
            sender = loop.create_task(self._send_queued())
            self._senders.add(sender)
            sender.add_done_callback(self._senders.discard)
        return future

    async def _send_queued(self) -> None:
        while self._queue:
            batch = self._queue[: self._batch_max]
            del self._queue[: self._batch_max]
            await self._send(batch)

    async def _send(self, batch: Sequence[_Call]) -> None:
        """Run `batch` as one pipeline and hand each caller its reply (or StoreUnavailable)."""
        try:
            replies = await self._pipeline(batch)
            lost = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
            if lost:  # the server restarted or flushed its scripts: load it, run those again
                await self._redis.script_load(_BUY_LUA)
                again = await self._pipeline([batch[i] for i in lost])
                for i, reply in zip(lost, again, strict=True):
                    replies[i] = reply
        except asyncio.CancelledError:
            for _, _, future in batch:
                future.cancel()
            raise
        except Exception as error:  # which scripts ran is unknown; a retry with the key is safe
            _fail(batch, error)
            return
        for call, reply in zip(batch, replies, strict=True):
            if isinstance(reply, Exception):
                _fail([call], reply)
            elif not call[2].done():
                call[2].set_result(reply)

    async def _pipeline(self, batch: Sequence[_Call]) -> list[Any]:
        """Send `batch` in one write on a pooled connection; its replies, errors as values."""
        packed = b"".join([_pack_buy(sale, *args) for sale, args, _ in batch])
        conn = await self._pool.get_connection()
        try:
            await conn.send_packed_command(packed)
            replies: list[Any] = []
            for _ in batch:
                try:
                    replies.append(await conn.read_response())
                except ResponseError as error:
                    replies.append(error)
        except BaseException:
            await conn.disconnect()  # replies may be left unread
            raise
        finally:
            await self._pool.release(conn)
        return replies


def _pack_buy(sale: str, user: str, key: str, now_s: str) -> bytes:
    """EVALSHA of the buy script in the Redis protocol (RESP)."""
    args = [sale.encode(), user.encode(), key.encode(), now_s.encode()]
    return _BUY_HEAD + b"".join([b"$%d\r\n%b\r\n" % (len(arg), arg) for arg in args])


def _fail(batch: Sequence[_Call], error: BaseException) -> None:
    """Fail every caller in `batch` still waiting with StoreUnavailable caused by `error`."""
    for _, _, future in batch:
        if not future.done():
            failure = StoreUnavailable(f"buy not decided: {error}")
            failure.__cause__ = error
            future.set_exception(failure)


def _sale_key(sale_id: str) -> str:
    return f"livesim:sale:{sale_id}"


def _parse_record(sale_id: str, key: str, record: str) -> OrderRecord:
    order_id, created_s, user = record.split(":", 2)
    return OrderRecord(int(order_id), sale_id, user, key, float(created_s))
