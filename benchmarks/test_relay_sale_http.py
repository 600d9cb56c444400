"""Buys per second through HTTP against the sale service process, on SQLite and on Redis.

The service runs on one core and the load client (this process) on the other, so neither
measures the other's work; redis-server shares the client's core. The client sends the buys
over keep-alive connections with HTTP/1.1 pipelining (aiohttp, one request at a time per
connection, tops out near 5,000 requests per second on one core and would measure itself), and
each round records the client's event-loop lag and CPU share, and the service's CPU share: the
side near 100% is the bottleneck. Buys per service CPU-second is what one core would carry with
nothing else on it (on a busy machine the service's core is shared, and its share drops).
Every round sells a fresh sale out (stock: half the buys), and afterwards the 201s, the order
ids and the service's own count are checked for oversell.

`redis-benchmark` runs against the same redis-server in the same session (SET, and the store's
buy script by EVALSHA with the store's pipelining), so the summary gives the ratio of buys per
second to Redis's raw rate on this machine. Targets from the issue: SQLite >= 5,000 buys/s,
Redis >= 20,000 buys/s; they are reported, not asserted (speed depends on the machine).
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import statistics
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import redis
from affinity import on_cpus

from relay.load.buyer import BuyResult, LoopLag, pipelined_buys
from relay.server.run import run
from relay.server.store.redis_store import _BUY_LUA
from relay.up import start_server
from tests.redis_server import RedisServer, start_redis

BUYS = 60_000
"""Buys per round; half of them find stock."""
CONNECTIONS, DEPTH = 256, 4
"""Keep-alive connections of the client, and requests pipelined on each. The service answers
one request of a connection at a time, so its concurrency is the number of connections."""
REDIS_PIPELINE = 16
"""Pipelined requests per redis-benchmark connection for the buy script (the store pipelines)."""
ROUNDS = 3
REDIS_BENCH_N = 100_000
"""Requests per redis-benchmark round (each buy-script request stores an order)."""
TARGETS_PER_S = {"sqlite": 5_000.0, "redis": 20_000.0}
_CPUS = sorted(os.sched_getaffinity(0))
SERVICE_CPUS, CLIENT_CPUS = ({_CPUS[0]}, set(_CPUS[1:])) if len(_CPUS) >= 2 else (None, None)
"""The service's core, and the others for the client and redis-server (None: one core only)."""


@dataclass
class Round:
    """One round of buys: its throughput and who was busy."""

    buys_per_s: float
    client_lag_p99_s: float
    client_cpu_share: float
    service_cpu_share: float


@dataclass
class Summary:
    """Figures for the terminal summary, filled in by the tests of this module."""

    rounds: dict[str, list[Round]]
    redis_rps: dict[str, float]

    @pytest.hookimpl
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.rounds and not self.redis_rps:
            return
        write = terminalreporter.write_line
        terminalreporter.section("sale service over HTTP (median of rounds)")
        set_rps = self.redis_rps.get("SET")
        write(
            f"{'store':<8} {'buys/s':>9} {'target':>8} {'met':>4} {'client lag p99':>15}"
            f" {'client CPU':>11} {'service CPU':>12} {'buys/CPU-s':>11} {'/ redis SET':>12}"
        )
        for store, rounds in self.rounds.items():
            rate = statistics.median(r.buys_per_s for r in rounds)
            target = TARGETS_PER_S[store]
            ratio = f"{rate / set_rps:.2f}x" if set_rps else "-"
            write(
                f"{store:<8} {rate:>9,.0f} {target:>8,.0f} {'yes' if rate >= target else 'no':>4}"
                f" {statistics.median(r.client_lag_p99_s for r in rounds) * 1e3:>12.1f} ms"
                f" {statistics.median(r.client_cpu_share for r in rounds):>10.0%}"
                f" {statistics.median(r.service_cpu_share for r in rounds):>11.0%}"
                f" {statistics.median(r.buys_per_s / r.service_cpu_share for r in rounds):>11,.0f}"
                f" {ratio:>12}"
            )
        for command, rps in self.redis_rps.items():
            write(f"redis-benchmark {command:<34} {rps:>12,.0f} requests/s")


@pytest.fixture(scope="module")
def summary(request: pytest.FixtureRequest) -> Iterator[Summary]:
    found = Summary({}, {})
    request.config.pluginmanager.register(found, "relay-sale-summary")
    yield found


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with on_cpus(CLIENT_CPUS):
        server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@contextmanager
def sale_service(spec: str) -> Iterator[tuple[int, str]]:
    """The sale service process on the service core: (pid, url)."""
    with on_cpus(SERVICE_CPUS):
        process, url = start_server("sale", ["--store", spec, "--log-level", "warning"])
    try:
        yield process.pid, url
    finally:
        process.terminate()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


def cpu_s(pid: int) -> float:
    """User plus system CPU seconds of process `pid` so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _json(url: str, body: dict[str, Any] | None = None) -> Any:
    """GET `url`, or POST `body` to it; the JSON answer (a 200 or 201)."""
    async with aiohttp.ClientSession() as session:
        request = session.post(url, json=body) if body is not None else session.get(url)
        async with request as response:
            assert response.status in (200, 201), await response.text()
            return await response.json()


def bench_store(benchmark: Any, record_rate: Any, summary: Summary, store: str, spec: str) -> None:
    rounds: list[Round] = []
    checked: list[tuple[str, list[BuyResult]]] = []
    buyers = [(f"user{i}", f"key{i}") for i in range(BUYS)]
    with sale_service(spec) as (pid, url), on_cpus(CLIENT_CPUS):

        def new_sale() -> tuple[tuple[str], dict[str, Any]]:
            body = {"sku": "bench", "stock": BUYS // 2, "per_user_limit": 1}
            return (run(_json(f"{url}/sales", body))["id"],), {}

        def one_round(sale: str) -> None:
            async def load() -> None:
                rng = np.random.default_rng(len(rounds))
                service_before_s = cpu_s(pid)
                wall_before_s, client_before_s = time.perf_counter(), time.process_time()
                async with LoopLag() as lag:
                    results = await pipelined_buys(
                        url, sale, buyers, rng=rng, connections=CONNECTIONS, depth=DEPTH
                    )
                wall_s = time.perf_counter() - wall_before_s
                checked.append((sale, results))
                rounds.append(
                    Round(
                        BUYS / wall_s,
                        lag.quantile_s(0.99),
                        (time.process_time() - client_before_s) / wall_s,
                        (cpu_s(pid) - service_before_s) / wall_s,
                    )
                )

            run(load())

        benchmark.pedantic(one_round, setup=new_sale, rounds=ROUNDS, iterations=1)
        for sale, results in checked:  # no oversell, nothing lost
            assert Counter(r.status for r in results) == {201: BUYS // 2, 409: BUYS - BUYS // 2}
            ordered = sorted(r.order_id for r in results if r.order_id is not None)
            assert ordered == list(range(BUYS // 2))
            status = run(_json(f"{url}/sales/{sale}"))
            assert (status["sold"], status["remaining"]) == (BUYS // 2, 0)
    record_rate(f"sale_http_buys_{store}", BUYS, benchmark.stats.stats.median)
    summary.rounds[store] = rounds


def test_sale_http_buys_sqlite(
    benchmark: Any, record_rate: Any, summary: Summary, tmp_path: Path
) -> None:
    bench_store(benchmark, record_rate, summary, "sqlite", f"sqlite:{tmp_path / 'sales.db'}")


def test_sale_http_buys_redis(
    benchmark: Any, record_rate: Any, summary: Summary, redis_server: RedisServer
) -> None:
    bench_store(benchmark, record_rate, summary, "redis", redis_server.url)


def redis_benchmark(server: RedisServer, *command: str) -> float:
    """Requests per second redis-benchmark reports for `command` against `server`."""
    executable = shutil.which("redis-benchmark")
    assert executable is not None, "redis-benchmark is not installed; `make bench` installs it"
    with on_cpus(CLIENT_CPUS):
        out = subprocess.run(
            [executable, "-h", "127.0.0.1", "-p", str(server.port), "--csv", *command],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        ).stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 1, out
    return float(rows[0]["rps"])


@pytest.mark.parametrize(
    "label", ["SET", f"EVALSHA buy script, pipeline {REDIS_PIPELINE}"], ids=["set", "buy-script"]
)
def test_redis_benchmark(
    benchmark: Any, summary: Summary, redis_server: RedisServer, label: str
) -> None:
    """Redis's own rate on the same server: SET, and the store's buy script on a big sale."""
    if label == "SET":
        command = ["-n", str(REDIS_BENCH_N), "-t", "set"]
    else:
        with redis.Redis(host="127.0.0.1", port=redis_server.port) as client:
            sha = client.script_load(_BUY_LUA)
            sale = "livesim:sale:redis-benchmark"  # the store's key layout: one hash per sale
            client.hset(sale, mapping={"sku": "x", "stock": 10**9, "per_user_limit": 1, "sold": 0})
        command = [
            *("-n", str(REDIS_BENCH_N), "-r", str(10**9), "-P", str(REDIS_PIPELINE)),
            *("EVALSHA", sha, "1", sale, "user:__rand_int__", "key:__rand_int__", "0.0"),
        ]
    rates: list[float] = []
    benchmark.pedantic(
        lambda: rates.append(redis_benchmark(redis_server, *command)), rounds=ROUNDS, iterations=1
    )
    summary.redis_rps[label] = statistics.median(rates)
