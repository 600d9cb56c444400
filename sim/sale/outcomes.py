"""Sales, lotteries and chat of one replication: demand from the stream, results for result.json.

Each sale's buyers are the viewers playing when the host announced it; each sees the
announcement after their own replay latency, reacts, and tries to buy. That is how the stream's
latency decides who gets the goods.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from sim.metrics import Histogram
from sim.sale.fast import fifo_done_s, simulate_fast
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
    return demand_of(
        sale,
        user=user,
        send_s=seen_s,
        rtt_s=sale.rtt_ms.sample(rng, n) / 1e3,
        latency_s=np.repeat(buyers, sale.quantity),
        jitter=rng.random((n, max(sale.retries, 1))),
    )


def demand_of(
    sale: Sale,
    *,
    user: np.ndarray,
    send_s: np.ndarray,
    rtt_s: np.ndarray,
    latency_s: np.ndarray,
    jitter: np.ndarray,
) -> SaleDemand:
    """A sale's demand: the scenario's terms and these orders."""
    return SaleDemand(
        at_s=sale.at_s,
        stock=sale.stock,
        per_user_limit=sale.per_user_limit,
        timeout_s=sale.timeout_s,
        retries=sale.retries,
        backoff_s=sale.backoff_s,
        user=user,
        send_s=send_s,
        rtt_s=rtt_s,
        latency_s=latency_s,
        jitter=jitter,
    )


def buyers(demand: SaleDemand, outcome: SaleOutcome) -> tuple[np.ndarray, np.ndarray]:
    """Per buyer: replay latency, and whether the service holds an order for them."""
    n_buyers = int(demand.user.max()) + 1 if demand.orders else 0
    got = np.zeros(n_buyers, dtype=bool)
    np.logical_or.at(got, demand.user, outcome.ordered)
    latency = np.zeros(n_buyers)
    latency[demand.user] = demand.latency_s
    return latency, got


def fairness_of(latency_s: np.ndarray, got: np.ndarray) -> dict[str, Any]:
    """Share of buyers who got an order, by replay-latency decile (fastest first)."""
    n = latency_s.size
    if n == 0:
        return {
            "success_by_latency_decile": [None] * 10,
            "latency_decile_edges_s": [],
            "fastest_slowest_ratio": None,
        }
    edges = np.quantile(latency_s, np.linspace(0.0, 1.0, 11))
    # Rank-based deciles: equal latencies are split evenly, so equal latency means equal odds.
    decile = np.minimum(np.argsort(np.argsort(latency_s, kind="stable")) * 10 // n, 9)
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


def fairness(demand: SaleDemand, outcome: SaleOutcome) -> dict[str, Any]:
    return fairness_of(*buyers(demand, outcome))


def _sold_out_after_s(sale: Sale, outcome: SaleOutcome) -> float | None:
    ordered_at = np.sort(outcome.ordered_at_s[outcome.ordered])
    if outcome.sold < sale.stock or not ordered_at.size:
        return None
    return float(ordered_at[min(sale.stock, ordered_at.size) - 1] - sale.at_s)


def _peak_orders_per_s(outcome: SaleOutcome) -> float:
    ordered_at = outcome.ordered_at_s[outcome.ordered]
    if not ordered_at.size:
        return 0.0
    return float(np.bincount(np.floor(ordered_at - ordered_at.min()).astype(int)).max())


def sale_result(sale: Sale, runs: list[tuple[SaleDemand, SaleOutcome]]) -> dict[str, Any]:
    """One sale over its replications: counts and times averaged, samples pooled."""
    response = Histogram()
    for _, outcome in runs:
        response.record_many(outcome.attempt_response_s)
    decisions = sum(
        (np.bincount(o.attempt_decision, minlength=len(Decision)) for _, o in runs),
        np.zeros(len(Decision), dtype=np.int64),
    )
    per_buyer = [buyers(d, o) for d, o in runs]
    latency_s = np.concatenate([lat for lat, _ in per_buyer])
    got = np.concatenate([g for _, g in per_buyer])
    soldout = [t for _, o in runs if (t := _sold_out_after_s(sale, o)) is not None]
    written = [o.written_s for _, o in runs if o.written_s is not None]

    def mean(values: list[float]) -> float:
        return float(np.mean(values))

    sold = mean([o.sold for _, o in runs])
    n = len(runs)
    return {
        "name": sale.name,
        "backend": sale.backend,
        "price": sale.price,
        "stock": sale.stock,
        "buyers": round(latency_s.size / n),
        "orders": round(mean([d.orders for d, _ in runs])),
        "sold": round(sold),
        "oversold": round(mean([max(0, o.sold - sale.stock) for _, o in runs])),
        "attempts": round(mean([o.attempts for _, o in runs])),
        "retries": round(
            mean([o.attempts - d.orders for d, o in runs]) - decisions[Decision.MOVED] / n
        ),
        "timeouts": round(decisions[Decision.TIMED_OUT] / n),
        # Only when every replication sold out.
        "sold_out_after_s": mean(soldout) if len(soldout) == n else None,
        "peak_orders_per_s": mean([_peak_orders_per_s(o) for _, o in runs]),
        "response_s": response.summary(),
        "gmv": sold * sale.price,
        "written_after_s": mean(written) - sale.at_s if written else None,
        "decisions": {d.name.lower(): round(decisions[d] / n) for d in Decision},
        "fairness": fairness_of(latency_s, got),
    }


def run_sale(
    sale: Sale, latency_s: np.ndarray, rng: np.random.Generator
) -> tuple[SaleDemand, SaleOutcome]:
    demand = build_demand(sale, latency_s, rng)
    return demand, simulate_fast(demand, backend_for(sale))


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
    delivered = np.empty(n)
    delivered[order] = fifo_done_s(at_path_s[order], 1.0 / chat.capacity_per_s, -np.inf)
    x, p = replay.cdf(200)
    latency_s = np.interp(rng.random(n), p, x) if len(x) else np.zeros(n)
    answered = delivered + chat.answer_s.sample(rng, n) + latency_s
    times = Histogram()
    times.record_many(answered - asked_s)
    return {"questions": n, "question_to_answer_s": times.summary()}
