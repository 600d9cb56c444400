"""The sale service as users meet it: a real process on 127.0.0.1, real buyers over HTTP.

Each test runs on SQLite and on a private redis-server (a missing redis-server is an error,
not a skip). Store-level behaviour is in test_sale_store.py; these go through HTTP and processes.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import redis
from redis_server import RedisServer
from relay_support import arun

from relay.load.buyer import NO_ANSWER, BuyResult, RetryPolicy, buy, pipelined_buys, run_buyers
from relay.server.store import OrderRecord, open_store
from relay.up import start_server

FDS_NEEDED = 8192
"""Open files the test process and the service each need: 2,000 buyers connect at once."""


@pytest.fixture(scope="module", autouse=True)
def enough_open_files() -> Iterator[None]:
    """Raise this process's open-file limit (inherited by the service) for the flash crowds."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = FDS_NEEDED if hard == resource.RLIM_INFINITY else min(hard, FDS_NEEDED)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@contextmanager
def sale_service(spec: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`python -m relay.server.run sale --store SPEC`: (process, url), stopped on exit."""
    process, url = start_server("sale", ["--store", spec, "--log-level", "warning"])
    try:
        yield process, url
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


async def post(url: str, body: Any, *, raw: bytes | None = None) -> tuple[int, Any]:
    """POST `body` as JSON (or `raw` bytes); (status, decoded JSON answer)."""
    data = raw if raw is not None else json.dumps(body).encode()
    headers = {"content-type": "application/json"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=data, headers=headers) as response,
    ):
        return response.status, json.loads(await response.read())


async def get(url: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, json.loads(await response.read())


def create_sale(url: str, stock: int, per_user_limit: int) -> str:
    sale = {"sku": "lipstick", "stock": stock, "per_user_limit": per_user_limit}
    status, body = arun(post(f"{url}/sales", sale))
    assert status == 201, body
    return str(body["id"])


def sold(url: str, sale: str) -> int:
    status, body = arun(get(f"{url}/sales/{sale}"))
    assert status == 200, body
    return int(body["sold"])


def stored_orders(spec: str, sale: str) -> list[OrderRecord]:
    """The sale's orders read straight from the store (no service may hold a SQLite file)."""

    async def read() -> list[OrderRecord]:
        store = open_store(spec)
        try:
            return await store.orders(sale)
        finally:
            await store.close()

    return arun(read())


def test_2000_concurrent_buyers_get_exactly_the_stock(spec: str) -> None:
    """800 users try once and 400 try three times (distinct keys), limit 2, all at once."""
    stock, limit = 500, 2
    users = [f"single{i}" for i in range(800)] + [f"triple{i}" for i in range(400)] * 3
    rng = np.random.default_rng(11)
    order = rng.permutation(len(users))
    buyers = [(users[i], f"key{n}") for n, i in enumerate(order)]
    assert len(buyers) == 2000
    with sale_service(spec) as (_, url):
        sale = create_sale(url, stock, limit)
        results = arun(run_buyers(url, sale, buyers, rng=rng))
        assert sold(url, sale) == stock

    statuses = Counter(result.status for result in results)
    assert set(statuses) <= {201, 409, 429}, statuses
    ordered = [result for result in results if result.status == 201]
    assert len(ordered) == stock
    assert sorted(result.order_id or 0 for result in ordered) == list(range(stock))
    assert all(result.retries == 0 for result in results)
    for result in ordered:
        assert result.order is not None
        assert (result.order["user"], result.order["idempotency_key"]) == (result.user, result.key)
        assert result.order["sale"] == sale
    stored = {order.key: order.order_id for order in stored_orders(spec, sale)}
    assert stored == {result.key: result.order_id for result in ordered}
    held = Counter(result.user for result in ordered)
    assert max(held.values()) == limit  # some triple-try users got two
    assert statuses[429] > 0
    assert all(held[result.user] == limit for result in results if result.status == 429)
    assert statuses[409] == len(buyers) - stock - statuses[429]
    print(f"{spec.split(':')[0]}: {dict(statuses)}")


def test_the_same_key_twice_returns_the_same_order(spec: str) -> None:
    with sale_service(spec) as (_, url):
        sale = create_sale(url, 3, 1)
        buy_url = f"{url}/sales/{sale}/buy"
        first = arun(post(buy_url, {"user": "ann", "idempotency_key": "ann-1"}))
        again = arun(post(buy_url, {"user": "ann", "idempotency_key": "ann-1"}))
        assert first[0] == again[0] == 201
        assert first[1] == again[1]
        assert first[1]["user"] == "ann" and first[1]["idempotency_key"] == "ann-1"

        async def together() -> list[BuyResult]:
            rng = np.random.default_rng(2)
            async with aiohttp.ClientSession() as session:
                return await asyncio.gather(
                    *(buy(session, url, sale, "bob", "bob-1", rng=rng) for _ in range(20))
                )

        repeats = arun(together())
        assert {result.status for result in repeats} == {201}
        assert len({json.dumps(result.order, sort_keys=True) for result in repeats}) == 1
        assert sold(url, sale) == 2
        assert arun(post(buy_url, {"user": "ann", "idempotency_key": "ann-2"}))[0] == 429


@pytest.mark.parametrize("store_kind", ["sqlite", "redis"])
def test_confirmed_orders_survive_kill_9_mid_burst(
    store_kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Kill the service with buys in flight; restart it on the same store; buyers retry."""
    if store_kind == "sqlite":
        spec = f"sqlite:{tmp_path / 'sales.db'}"
    else:
        spec = request.getfixturevalue("redis_server").url
    stock, kill_after = 1500, 400
    buyers = [(f"user{i}", f"key{i}") for i in range(3000)]
    once = RetryPolicy(tries_max=1, timeout_s=5.0)
    rng = np.random.default_rng(3)

    with sale_service(spec) as (process, url):
        sale = create_sale(url, stock, 1)

        async def burst() -> list[BuyResult]:
            """Every buyer at once over 200 connections; kill -9 at the 400th confirmation."""
            confirmed = 0
            connector = aiohttp.TCPConnector(limit=200)
            async with aiohttp.ClientSession(connector=connector) as session:

                async def buyer(user: str, key: str) -> BuyResult:
                    nonlocal confirmed
                    result = await buy(session, url, sale, user, key, rng=rng, policy=once)
                    confirmed += result.status == 201
                    if confirmed == kill_after and process.poll() is None:
                        os.kill(process.pid, signal.SIGKILL)
                    return result

                return await asyncio.gather(*(buyer(user, key) for user, key in buyers))

        results = arun(burst())
        assert process.wait(10) == -signal.SIGKILL

    by_status = Counter(result.status for result in results)
    assert set(by_status) <= {201, NO_ANSWER}, by_status
    assert kill_after <= by_status[201] < stock
    assert by_status[NO_ANSWER] > 0
    confirmed = {result.key: result.order_id for result in results if result.status == 201}

    # After the crash: every confirmed order is stored, with its id; ids are 0..n-1, keys unique.
    orders = stored_orders(spec, sale)
    assert [order.order_id for order in orders] == list(range(len(orders)))
    assert len({order.key for order in orders}) == len(orders) <= stock
    stored = {order.key: order.order_id for order in orders}
    assert all(stored.get(key) == order_id for key, order_id in confirmed.items())
    print(f"{store_kind}: {len(confirmed)} confirmed, {len(orders)} stored at the kill")

    # The buyers that heard nothing retry with their key, and some that did hear once more.
    unanswered = [(r.user, r.key) for r in results if r.status == NO_ANSWER]
    again = unanswered + [(r.user, r.key) for r in results if r.status == 201][:100]
    with sale_service(spec) as (_, url):
        retried = arun(run_buyers(url, sale, again, rng=rng, connections_max=200))
        assert sold(url, sale) == stock

    assert {result.status for result in retried} <= {201, 409}
    for result in retried:
        if result.key in stored:  # decided before the kill: the same order again
            assert (result.status, result.order_id) == (201, stored[result.key])
        elif result.status == 201:
            assert result.order_id is not None and result.order_id >= len(orders)
    final = stored_orders(spec, sale)
    assert [order.order_id for order in final] == list(range(stock))
    assert len({order.key for order in final}) == stock
    assert len({order.user for order in final}) == stock
    assert final[: len(orders)] == orders
    answered = {result.key: result.order_id for result in [*results, *retried] if result.order}
    assert answered == {
        order.key: order.order_id for order in final if order.key in answered
    }  # nobody was told of an order the store does not have


BAD_CREATES: list[tuple[Any, str]] = [
    ({"stock": 5, "per_user_limit": 1}, "sku"),
    ({"sku": 7, "stock": 5, "per_user_limit": 1}, "sku"),
    ({"sku": "", "stock": 5, "per_user_limit": 1}, "sku"),
    ({"sku": "x", "per_user_limit": 1}, "stock"),
    ({"sku": "x", "stock": "5", "per_user_limit": 1}, "stock"),
    ({"sku": "x", "stock": -1, "per_user_limit": 1}, "stock"),
    ({"sku": "x", "stock": 2.5, "per_user_limit": 1}, "stock"),
    ({"sku": "x", "stock": 2**63, "per_user_limit": 1}, "stock"),  # more than the stores hold
    ({"sku": "\ud800", "stock": 5, "per_user_limit": 1}, "sku"),  # a lone surrogate
    ({"sku": "x", "stock": 5}, "per_user_limit"),
    ({"sku": "x", "stock": 5, "per_user_limit": True}, "per_user_limit"),
    ({"sku": "x", "stock": 5, "per_user_limit": 0}, "per_user_limit"),
    ({"sku": "x", "stock": 5, "per_user_limit": 2**64}, "per_user_limit"),
    ([1, 2], "body"),
]
BAD_BUYS: list[tuple[Any, str]] = [
    ({"idempotency_key": "k"}, "user"),
    ({"user": 1, "idempotency_key": "k"}, "user"),
    ({"user": "u" * 129, "idempotency_key": "k"}, "user"),
    ({"user": "ann"}, "idempotency_key"),
    ({"user": "ann", "idempotency_key": None}, "idempotency_key"),
    ({"user": "ann", "idempotency_key": ["k"]}, "idempotency_key"),
    ({"user": "\udc00", "idempotency_key": "k"}, "user"),
    ({"user": "ann", "idempotency_key": "k\ud800"}, "idempotency_key"),
    ("ann", "body"),
]
NOT_JSON = [b"{not json", b"", b"\xff\xfe", b'{"user": "ann",', b"[" * 8000]


def test_bad_requests_get_4xx_naming_the_field_and_the_service_stays_up(spec: str) -> None:
    with sale_service(spec) as (process, url):
        sale = create_sale(url, 1, 1)
        buy_url = f"{url}/sales/{sale}/buy"
        for raw in NOT_JSON:
            for target in (f"{url}/sales", buy_url):
                status, body = arun(post(target, None, raw=raw))
                assert status == 400 and body["error"].startswith("body:"), (target, raw, body)
        for payload, field in BAD_CREATES:
            status, body = arun(post(f"{url}/sales", payload))
            assert status == 400 and body["error"].startswith(f"{field}:"), (payload, body)
        for payload, field in BAD_BUYS:
            status, body = arun(post(buy_url, payload))
            assert status == 400 and body["error"].startswith(f"{field}:"), (payload, body)
        good = {"user": "ann", "idempotency_key": "a1"}
        for missing in ("999999", "no-such-sale"):
            status, body = arun(post(f"{url}/sales/{missing}/buy", good))
            assert status == 404 and missing in body["error"], body
            assert arun(get(f"{url}/sales/{missing}"))[0] == 404
        assert sold(url, sale) == 0
        status, order = arun(post(buy_url, good))
        assert status == 201 and order["order_id"] == 0
        assert arun(post(buy_url, {"user": "bob", "idempotency_key": "b1"}))[0] == 409
        assert sold(url, sale) == 1
        assert process.poll() is None


@contextmanager
def redis_out_of_memory(server: RedisServer) -> Iterator[redis.Redis]:
    """Redis refuses writes (maxmemory 1 byte) until the block ends or `maxmemory` is reset."""
    with redis.Redis(host="127.0.0.1", port=server.port) as client:
        client.config_set("maxmemory", 1)
        try:
            yield client
        finally:
            client.config_set("maxmemory", 0)


RETRY_503 = RetryPolicy(tries_max=12, base_s=0.05, cap_s=0.2)


def test_buyers_retry_503s_with_their_key_until_the_store_is_back(
    redis_server: RedisServer,
) -> None:
    """Redis refuses writes for 0.4 s: buys get 503 and are retried; each key orders once."""
    buyers = [(f"user{i}", f"key{i}") for i in range(200)]
    rng = np.random.default_rng(4)
    with sale_service(redis_server.url) as (_, url):
        sale = create_sale(url, 150, 1)

        async def during_outage(client: redis.Redis) -> tuple[list[BuyResult], list[BuyResult]]:
            async def heal() -> None:
                await asyncio.sleep(0.4)
                client.config_set("maxmemory", 0)

            crowd, pipelined, _ = await asyncio.gather(
                run_buyers(url, sale, buyers[:100], rng=rng, policy=RETRY_503),
                pipelined_buys(url, sale, buyers[100:], rng=rng, policy=RETRY_503, depth=4),
                heal(),
            )
            return crowd, pipelined

        with redis_out_of_memory(redis_server) as client:
            new_sale = {"sku": "x", "stock": 1, "per_user_limit": 1}
            status, body = arun(post(f"{url}/sales", new_sale))
            assert status == 503 and "store unavailable" in body["error"]
            crowd, pipelined = arun(during_outage(client))
        assert sold(url, sale) == 150

    results = crowd + pipelined
    assert [(r.user, r.key) for r in results] == buyers  # in the order given
    assert Counter(r.status for r in results) == {201: 150, 409: 50}
    assert all(r.retries >= 1 for r in results)  # every first try met the outage
    assert sorted(r.order_id or 0 for r in results if r.status == 201) == list(range(150))
    orders = {order.key: order.order_id for order in stored_orders(redis_server.url, sale)}
    assert orders == {r.key: r.order_id for r in results if r.status == 201}


def test_buyers_give_up_after_their_tries(redis_server: RedisServer) -> None:
    """A store that stays down gives 503s, a service that is gone no answer: tries are bounded."""
    buyers = [(f"user{i}", f"key{i}") for i in range(20)]
    three = RetryPolicy(tries_max=3, base_s=0.01, cap_s=0.02)
    rng = np.random.default_rng(5)
    with sale_service(redis_server.url) as (_, url):
        sale = create_sale(url, 10, 1)
        with redis_out_of_memory(redis_server):
            refused = arun(run_buyers(url, sale, buyers, rng=rng, policy=three))
            refused += arun(pipelined_buys(url, sale, buyers, rng=rng, policy=three, depth=4))
    for result in refused:
        assert (result.status, result.retries, result.order) == (503, 2, None)
        assert result.error is not None and "store unavailable" in result.error
    gone = arun(run_buyers(url, sale, buyers, rng=rng, policy=three))
    gone += arun(pipelined_buys(url, sale, buyers, rng=rng, policy=three, connections=2))
    for result in gone:
        assert (result.status, result.retries, result.order) == (NO_ANSWER, 2, None)
        assert result.error
    assert stored_orders(redis_server.url, sale) == []
