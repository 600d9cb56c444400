"""Sales, lotteries and chat of one replication: demand from the stream, results for result.json.

Each sale's buyers are the viewers playing when the host announced it; each sees the
announcement after their own replay latency, reacts, and tries to buy. That is how the stream's
latency decides who gets the goods.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sim.metrics import Histogram
from sim.sale.fast import simulate_fast
from sim.sale.spec import Backend, Decision, SaleDemand, SaleOutcome
from sim.scenario import Chat, Lottery, Sale

LATENCY_BANDS_S = (0.0, 1.0, 2.0, 5.0, 10.0, 30.0, np.inf)
BAND_NAMES = ("< 1 s", "1-2 s", "2-5 s", "5-10 s", "10-30 s", ">= 30 s")


def backend_for(sale: Sale) -> Backend:
    assert sale.service_ms is not None and sale.commit_ms is not None  # filled in on load
    return Backend(
        kind=sale.backend,
        service_s=sale.service_ms / 1e3,
        commit_s=sale.commit_ms / 1e3,
        shards=sale.shards,
        batch_max=sale.batch_max,
    )


def build_demand(sale: Sale, latency_s: np.ndarray, rng: np.random.Generator) -> SaleDemand:
    """`buy_fraction` of the viewers watching try to buy `quantity` items each."""
    buyers = latency_s[rng.random(latency_s.size) < sale.buy_fraction]
    reaction_s = sale.reaction_s.sample(rng, buyers.size)
    user = np.repeat(np.arange(buyers.size), sale.quantity)
    seen_s = np.repeat(sale.at_s + buyers + reaction_s, sale.quantity)
    n = user.size
    return SaleDemand(
        at_s=sale.at_s,
        stock=sale.stock,
        per_user_limit=sale.per_user_limit,
        timeout_s=sale.timeout_s,
        retries=sale.retries,
        backoff_s=sale.backoff_s,
        user=user,
        send_s=seen_s,
        rtt_s=sale.rtt_ms.sample(rng, n) / 1e3,
        latency_s=np.repeat(buyers, sale.quantity),
        jitter=rng.random((n, max(sale.retries, 1))),
    )


def fairness(demand: SaleDemand, outcome: SaleOutcome) -> dict[str, Any]:
    """Share of buyers who got an order, by replay-latency decile (fastest first)."""
    n_buyers = int(demand.user.max()) + 1 if demand.orders else 0
    got = np.zeros(n_buyers, dtype=bool)
    np.logical_or.at(got, demand.user, outcome.ordered)
    latency = np.zeros(n_buyers)
    latency[demand.user] = demand.latency_s
    if n_buyers == 0:
        return {
            "success_by_latency_decile": [None] * 10,
            "latency_decile_edges_s": [],
            "fastest_slowest_ratio": None,
        }
    edges = np.quantile(latency, np.linspace(0.0, 1.0, 11))
    # Rank-based deciles: equal latencies are split evenly, so equal latency means equal odds.
    decile = np.minimum(np.argsort(np.argsort(latency, kind="stable")) * 10 // n_buyers, 9)
    share: list[float | None] = []
    for d in range(10):
        mine = decile == d
        share.append(float(got[mine].mean()) if mine.any() else None)
    fastest, slowest = share[0], share[-1]
    ratio = fastest / slowest if fastest is not None and slowest else None
    return {
        "success_by_latency_decile": share,
        "latency_decile_edges_s": [float(e) for e in edges],
        "fastest_slowest_ratio": ratio,
    }


def sale_result(sale: Sale, demand: SaleDemand, outcome: SaleOutcome) -> dict[str, Any]:
    response = Histogram()
    response.record_many(outcome.attempt_response_s)
    decisions = np.bincount(outcome.attempt_decision, minlength=len(Decision))
    sold = outcome.sold
    ordered_at = outcome.ordered_at_s[outcome.ordered]
    sold_out_after = None
    if outcome.sold >= sale.stock and ordered_at.size:
        sold_out_after = float(
            np.sort(ordered_at)[min(sale.stock, ordered_at.size) - 1] - sale.at_s
        )
    peak = 0.0
    if ordered_at.size:
        peak = float(np.bincount(np.floor(ordered_at - ordered_at.min()).astype(int)).max())
    return {
        "name": sale.name,
        "backend": sale.backend,
        "price": sale.price,
        "stock": sale.stock,
        "buyers": int(demand.user.max()) + 1 if demand.orders else 0,
        "orders": demand.orders,
        "sold": int(sold),
        "oversold": max(0, int(outcome.sold) - sale.stock),
        "attempts": outcome.attempts,
        "retries": int(outcome.attempts - demand.orders - decisions[Decision.MOVED]),
        "timeouts": int(decisions[Decision.TIMED_OUT]),
        "sold_out_after_s": sold_out_after,
        "peak_orders_per_s": peak,
        "response_s": response.summary(),
        "gmv": float(sold * sale.price),
        "written_after_s": None if outcome.written_s is None else outcome.written_s - sale.at_s,
        "decisions": {d.name.lower(): int(decisions[d]) for d in Decision},
        "fairness": fairness(demand, outcome),
    }


def run_sale(sale: Sale, latency_s: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
    demand = build_demand(sale, latency_s, rng)
    return sale_result(sale, demand, simulate_fast(demand, backend_for(sale)))


def run_lottery(
    lottery: Lottery, latency_s: np.ndarray, rng: np.random.Generator
) -> dict[str, Any]:
    """Entries reach the service at at_s + latency + reaction + rtt/2; valid by at_s + window_s."""
    entrants = latency_s[rng.random(latency_s.size) < lottery.enter_fraction]
    arrive_s = (
        lottery.at_s
        + entrants
        + lottery.reaction_s.sample(rng, entrants.size)
        + 0.5 * lottery.rtt_ms.sample(rng, entrants.size) / 1e3
    )
    valid = arrive_s <= lottery.at_s + lottery.window_s
    valid_idx = np.flatnonzero(valid)
    won = np.zeros(entrants.size, dtype=bool)
    drawn = min(lottery.winners, valid_idx.size)
    won[rng.choice(valid_idx, drawn, replace=False)] = True
    band = np.digitize(entrants, LATENCY_BANDS_S[1:-1])
    rows = [
        {
            "band": name,
            "entries": int((band == b).sum()),
            "valid": int((valid & (band == b)).sum()),
            "winners": int((won & (band == b)).sum()),
        }
        for b, name in enumerate(BAND_NAMES)
    ]
    return {
        "name": lottery.name,
        "at_s": lottery.at_s,
        "window_s": lottery.window_s,
        "winners": drawn,
        "entries": int(entrants.size),
        "valid_entries": int(valid.sum()),
        "by_latency_band": rows,
    }


def run_chat(
    chat: Chat, replay: Histogram, duration_s: float, rng: np.random.Generator
) -> dict[str, Any]:
    """Question-to-answer time = chat path + host delay + the asker's replay latency.

    Questions arrive as a Poisson process and queue FIFO on the chat path; the asker's latency
    is drawn from the run's replay-latency distribution (viewer-time weighted).
    """
    n = int(rng.poisson(chat.question_rate_per_s * duration_s))
    asked_s = np.sort(rng.uniform(0.0, duration_s, n))
    at_path_s = asked_s + 0.5 * chat.rtt_ms.sample(rng, n) / 1e3
    order = np.argsort(at_path_s, kind="stable")
    service_s = 1.0 / chat.capacity_per_s
    k = np.arange(n)
    delivered = np.empty(n)
    delivered[order] = (k + 1) * service_s + np.maximum.accumulate(at_path_s[order] - k * service_s)
    x, p = replay.cdf(200)
    latency_s = np.interp(rng.random(n), p, x) if len(x) else np.zeros(n)
    answered = delivered + chat.answer_s.sample(rng, n) + latency_s
    times = Histogram()
    times.record_many(answered - asked_s)
    return {"questions": n, "question_to_answer_s": times.summary()}


def pool_sale_results(runs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Replications of the same sales: numbers averaged, the first run's detail kept."""
    if len(runs) == 1:
        return runs[0]
    pooled = []
    for same in zip(*runs, strict=True):
        merged = dict(same[0])
        for key in ("sold", "oversold", "attempts", "retries", "timeouts", "buyers", "orders"):
            merged[key] = round(float(np.mean([r[key] for r in same])))
        for key in ("peak_orders_per_s", "gmv"):
            merged[key] = float(np.mean([r[key] for r in same]))
        soldout = [r["sold_out_after_s"] for r in same]
        merged["sold_out_after_s"] = (
            float(np.mean(soldout)) if all(v is not None for v in soldout) else None
        )
        pooled.append(merged)
    return pooled
