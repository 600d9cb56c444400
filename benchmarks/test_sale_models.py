"""Attempts decided per wall second: the vectorised sale model against the SimPy reference.

A flash sale on one redis-lua backend: buyers press within a few seconds of the announcement,
ten times the stock. The vectorised model takes a 4-million-order burst; the per-request SimPy
reference, which it must agree with, a 20,000-order one.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sim.sale.fast import simulate_fast
from sim.sale.reference import simulate_reference
from sim.sale.spec import Backend, SaleDemand

REDIS_LUA = Backend("redis-lua", service_s=1 / 184_000)


def burst(orders: int, seed: int = 9) -> SaleDemand:
    rng = np.random.default_rng(seed)
    latency_s = rng.lognormal(np.log(1.5), 0.4, orders)
    return SaleDemand(
        at_s=0.0,
        stock=orders // 10,
        per_user_limit=1,
        timeout_s=3.0,
        retries=2,
        backoff_s=0.5,
        user=np.arange(orders),
        send_s=latency_s + rng.lognormal(np.log(1.5), 0.8, orders),
        rtt_s=np.full(orders, 0.03),
        latency_s=latency_s,
        jitter=rng.random((orders, 2)),
    )


def test_vectorised_sale_model_4m_orders(benchmark: Any, record_rate: Any) -> None:
    demand = burst(4_000_000)
    outcome = benchmark.pedantic(simulate_fast, (demand, REDIS_LUA), rounds=3, iterations=1)
    assert outcome.sold == demand.stock
    record_rate("sale_fast_attempts", outcome.attempts, benchmark.stats.stats.median)


def test_reference_sale_model_20k_orders(benchmark: Any, record_rate: Any) -> None:
    demand = burst(20_000)
    outcome = benchmark.pedantic(simulate_reference, (demand, REDIS_LUA), rounds=3, iterations=1)
    assert outcome.sold == demand.stock
    record_rate("sale_reference_attempts", outcome.attempts, benchmark.stats.stats.median)
