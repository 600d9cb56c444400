"""Sale stores on real SQLite files and a real redis-server: no oversell, idempotency, durable."""

from __future__ import annotations

import asyncio
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import closing
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest
import redis
from redis_server import RedisServer

from relay.server.store import (
    OrderRecord,
    Outcome,
    SaleStore,
    StoreUnavailable,
    UnknownSale,
    open_store,
)

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[1]


def with_store(spec: str, body: Callable[[SaleStore], Awaitable[T]]) -> T:
    """Open the store, run `body` on it in a fresh event loop, close it."""

    async def main() -> T:
        store = open_store(spec)
        try:
            return await body(store)
        finally:
            await store.close()

    return asyncio.run(main())


def test_concurrent_buyers_never_oversell(spec: str) -> None:
    """2,000 buys at once by 600 users (limit 2, distinct keys) for 500 items, beside a second
    sale of 100 items that the same users buy with the same keys."""
    users = np.random.default_rng(5).integers(0, 600, size=2000)
    attempts = [(sale, f"u{user}", f"k{i}") for i, user in enumerate(users) for sale in "ab"]

    async def body(store: SaleStore) -> None:
        sales = {
            "a": await store.create("lipstick", 500, 2),
            "b": await store.create("kohl", 100, 2),
        }
        results = await asyncio.gather(
            *(store.buy(sales[sale], user, key) for sale, user, key in attempts)
        )
        for name, stock in (("a", 500), ("b", 100)):
            mine = [(a[1], *r) for a, r in zip(attempts, results, strict=True) if a[0] == name]
            assert Counter(outcome for _, outcome, _ in mine).keys() == {
                Outcome.ORDERED,
                Outcome.SOLD_OUT,
                Outcome.OVER_LIMIT,
            }
            ordered = [o for _, outcome, o in mine if o is not None and outcome is Outcome.ORDERED]
            stored = await store.orders(sales[name])
            assert stored == sorted(ordered, key=lambda order: order.order_id)
            assert [order.order_id for order in stored] == list(range(stock))
            assert len({order.key for order in stored}) == stock
            held = Counter(order.user for order in stored)
            assert max(held.values()) <= 2
            assert all(
                held[user] == 2 for user, outcome, _ in mine if outcome is Outcome.OVER_LIMIT
            )
            status = await store.status(sales[name])
            assert status is not None
            assert (status.stock, status.sold, status.remaining) == (stock, stock, 0)

    with_store(spec, body)


def test_concurrent_repeats_of_one_key_make_one_order(spec: str) -> None:
    async def body(store: SaleStore) -> None:
        sale = await store.create("perfume", 10, 1)
        results = await asyncio.gather(*(store.buy(sale, "ann", "once") for _ in range(50)))
        outcomes = Counter(outcome for outcome, _ in results)
        assert outcomes == {Outcome.ORDERED: 1, Outcome.REPLAYED: 49}
        assert len({order for _, order in results}) == 1
        assert len(await store.orders(sale)) == 1

    with_store(spec, body)


def test_replay_limit_and_sold_out_in_inventory_order(spec: str) -> None:
    async def body(store: SaleStore) -> None:
        sale = await store.create("lipstick", 2, 1)
        first = await store.buy(sale, "ann", "a1")
        assert first[0] is Outcome.ORDERED and first[1] is not None
        assert first[1].order_id == 0 and first[1].user == "ann" and first[1].key == "a1"
        assert await store.buy(sale, "ann", "a1") == (Outcome.REPLAYED, first[1])
        assert await store.buy(sale, "ann", "a2") == (Outcome.OVER_LIMIT, None)
        bob = await store.buy(sale, "bob", "b1")
        assert bob[0] is Outcome.ORDERED and bob[1] is not None and bob[1].order_id == 1
        assert await store.buy(sale, "cat", "c1") == (Outcome.SOLD_OUT, None)
        assert await store.buy(sale, "cat", "c1") == (Outcome.SOLD_OUT, None)  # not remembered
        assert await store.buy(sale, "ann", "a3") == (Outcome.OVER_LIMIT, None)  # limit first
        # A known key replays its order whoever sends it, even after the sale sold out.
        assert await store.buy(sale, "dan", "a1") == (Outcome.REPLAYED, first[1])
        status = await store.status(sale)
        assert status is not None and (status.sku, status.sold, status.remaining) == (
            "lipstick",
            2,
            0,
        )

    with_store(spec, body)


def test_unknown_sales_and_bad_sales(spec: str) -> None:
    async def body(store: SaleStore) -> None:
        for sale in ("999999", "nope"):
            with pytest.raises(UnknownSale):
                await store.buy(sale, "ann", "k")
            with pytest.raises(UnknownSale):
                await store.orders(sale)
            assert await store.status(sale) is None
        with pytest.raises(ValueError, match="stock"):
            await store.create("x", -1, 1)
        with pytest.raises(ValueError, match="per_user_limit"):
            await store.create("x", 1, 0)
        empty = await store.create("x", 0, 1)
        assert await store.buy(empty, "ann", "k") == (Outcome.SOLD_OUT, None)

    with_store(spec, body)


def test_sales_and_orders_survive_close_and_reopen(spec: str) -> None:
    async def first(store: SaleStore) -> tuple[str, list[OrderRecord]]:
        sale = await store.create("lipstick", 5, 1)
        await asyncio.gather(*(store.buy(sale, f"u{i}", f"k{i}") for i in range(3)))
        return sale, await store.orders(sale)

    sale, before = with_store(spec, first)

    async def second(store: SaleStore) -> None:
        assert await store.orders(sale) == before
        status = await store.status(sale)
        assert status is not None and (status.stock, status.sold) == (5, 3)
        for order in before:
            assert await store.buy(sale, order.user, order.key) == (Outcome.REPLAYED, order)
        assert await store.buy(sale, "u0", "fresh") == (Outcome.OVER_LIMIT, None)
        outcome, new = await store.buy(sale, "u9", "k9")
        assert outcome is Outcome.ORDERED and new is not None and new.order_id == 3
        assert await store.create("other", 1, 1) != sale

    with_store(spec, second)


# 64 buyers in a loop, each printing its confirmed order: commits are always in flight.
CHILD = """
import asyncio, itertools, sys
from relay.server.store import open_store

async def main(spec, sale):
    store = open_store(spec)
    numbers = itertools.count()
    async def buyer():
        for n in numbers:
            outcome, order = await store.buy(sale, f"user{n}", f"key{n}")
            print(order.key, order.order_id, outcome.name, flush=True)
    await asyncio.gather(*(buyer() for _ in range(64)))

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def test_confirmed_orders_survive_kill_9(spec: str, tmp_path: Path) -> None:
    stock = 2000  # more than the child buys before it is killed after 1,000 confirmations
    sale = with_store(spec, lambda store: store.create("lipstick", stock, 1))
    stderr = tmp_path / "child.err"
    with stderr.open("wb") as err:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, spec, sale],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
    watchdog = threading.Timer(30, child.kill)
    watchdog.start()
    printed: dict[str, int] = {}
    assert child.stdout is not None
    for line in child.stdout:
        key, order_id, outcome = line.split()
        assert outcome == "ORDERED"
        printed[key] = int(order_id)
        if len(printed) == 1000:
            child.send_signal(signal.SIGKILL)
            break
    watchdog.cancel()
    child.wait()
    child.stdout.close()
    assert len(printed) == 1000, stderr.read_text()
    assert child.returncode == -signal.SIGKILL

    async def after(store: SaleStore) -> None:
        orders = await store.orders(sale)
        by_key = {order.key: order.order_id for order in orders}
        assert len(by_key) == len(orders) <= stock
        assert [order.order_id for order in orders] == list(range(len(orders)))
        assert all(by_key.get(key) == order_id for key, order_id in printed.items())
        status = await store.status(sale)
        assert status is not None and status.sold == len(orders)
        # Committed but never printed: the buyer retries its key and gets the same order.
        for order in orders:
            assert await store.buy(sale, order.user, order.key) == (Outcome.REPLAYED, order)

    with_store(spec, after)


def test_open_store_rejects_malformed_specs() -> None:
    for spec in (
        "postgres://127.0.0.1:5432",
        "sqlite:",
        "redis://127.0.0.1",
        "redis://127.0.0.1:x",
        "redis://:6379",
        "redis://127.0.0.1:6379/zero",
        "/tmp/sales.db",
    ):
        with pytest.raises(ValueError, match="expected sqlite:PATH or redis://HOST:PORT"):
            open_store(spec)


def test_unreachable_stores_are_unavailable(tmp_path: Path) -> None:
    with pytest.raises(StoreUnavailable, match="missing"):
        open_store(f"sqlite:{tmp_path / 'missing' / 'sales.db'}")

    async def body(store: SaleStore) -> None:
        with pytest.raises(StoreUnavailable):
            await store.create("lipstick", 1, 1)
        with pytest.raises(StoreUnavailable):
            await store.buy("1", "ann", "a1")

    with socket.socket() as unused:  # bound, not listening: connections are refused
        unused.bind(("127.0.0.1", 0))
        with_store(f"redis://127.0.0.1:{unused.getsockname()[1]}", body)


def test_redis_reloads_a_flushed_script(redis_server: RedisServer) -> None:
    async def body(store: SaleStore) -> None:
        sale = await store.create("lipstick", 10, 5)
        assert (await store.buy(sale, "ann", "a1"))[0] is Outcome.ORDERED
        with redis.Redis(host="127.0.0.1", port=redis_server.port) as client:
            client.script_flush()
        results = await asyncio.gather(*(store.buy(sale, "ann", f"a{i}") for i in range(1, 6)))
        assert [outcome for outcome, _ in results] == [Outcome.REPLAYED] + [Outcome.ORDERED] * 4

    with_store(redis_server.url, body)


def test_sqlite_refuses_a_second_service_on_the_same_file(tmp_path: Path) -> None:
    async def body(store: SaleStore) -> None:
        with pytest.raises(StoreUnavailable, match="in use"):
            open_store(f"sqlite:{tmp_path / 'sales.db'}")

    with_store(f"sqlite:{tmp_path / 'sales.db'}", body)


def test_sqlite_schema_rejects_oversell_duplicates_and_limit(tmp_path: Path) -> None:
    path = tmp_path / "sales.db"
    sale = with_store(f"sqlite:{path}", lambda store: store.create("lipstick", 2, 1))
    insert = "INSERT INTO orders VALUES (?, ?, ?, ?, 0.0)"
    with closing(sqlite3.connect(path)) as db:
        db.execute(insert, (sale, 0, "ann", "a"))
        for row, reason in (
            ((sale, 1, "bob", "a"), "UNIQUE"),
            ((sale, 0, "bob", "b"), "UNIQUE"),
            ((sale, 2, "bob", "b"), "beyond the stock"),
            ((sale, 1, "ann", "b"), "per-user limit"),
            ((sale, -1, "bob", "b"), "CHECK"),
        ):
            with pytest.raises(sqlite3.IntegrityError, match=reason):
                db.execute(insert, row)


# Fails the transaction of any order by "mallory", slowly (about 0.1 s of work first), so that
# buys decided meanwhile join the next transaction, which saw mallory's batch as sold.
POISON = """
CREATE TRIGGER poison BEFORE INSERT ON orders WHEN NEW.buyer = 'mallory'
BEGIN
    SELECT RAISE(ABORT, 'injected failure') FROM (
        WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000000)
        SELECT max(i) FROM n
    );
END;
"""


def test_sqlite_failed_commit_confirms_nothing_and_rolls_back(tmp_path: Path) -> None:
    path = tmp_path / "sales.db"
    sale = with_store(f"sqlite:{path}", lambda store: store.create("lipstick", 100, 1))
    with closing(sqlite3.connect(path)) as db:
        db.executescript(POISON)

    async def body(store: SaleStore) -> None:
        users = [f"u{i}" for i in range(20)]
        first = asyncio.gather(
            *(store.buy(sale, user, f"k-{user}") for user in [*users[:10], "mallory"]),
            return_exceptions=True,
        )
        await asyncio.sleep(0.02)  # the poisoned commit is in flight now
        later = asyncio.gather(
            *(store.buy(sale, user, f"k-{user}") for user in users[10:]),
            store.buy(sale, "u0", "k-u0"),  # a replay of a key whose commit will fail
            return_exceptions=True,
        )
        *fresh, replay = await later
        assert all(isinstance(result, StoreUnavailable) for result in await first)
        assert all(isinstance(result, StoreUnavailable) for result in fresh)
        assert isinstance(replay, tuple) and replay[0] is Outcome.ORDERED  # decided again
        assert await store.orders(sale) == [replay[1]]
        status = await store.status(sale)
        assert status is not None and status.sold == 1
        # Every key that failed may retry; memory agrees with the database.
        retried = await asyncio.gather(*(store.buy(sale, user, f"k-{user}") for user in users))
        assert [outcome for outcome, _ in retried] == [Outcome.REPLAYED] + [Outcome.ORDERED] * 19
        orders = await store.orders(sale)
        assert [order.order_id for order in orders] == list(range(20))
        with pytest.raises(StoreUnavailable):
            await store.buy(sale, "mallory", "k-mallory")
        assert (await store.buy(sale, "zed", "k-zed"))[1] is not None

    with_store(f"sqlite:{path}", body)
    restored = with_store(f"sqlite:{path}", lambda store: store.orders(sale))
    assert [order.order_id for order in restored] == list(range(21))
