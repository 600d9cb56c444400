"""The per-request SimPy sale model: no oversell, queueing theory, backend ordering, fast model."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from sim.analytic import md1_mean_response_s
from sim.sale.fast import simulate_fast
from sim.sale.reference import simulate_reference
from sim.sale.spec import Backend, Decision, SaleDemand, SaleOutcome

HUGE_S = 1e6

BACKENDS = {
    "row-lock": Backend("row-lock", service_s=0.003),  # one hot row: a few hundred TPS
    "hot-row-batch": Backend("hot-row-batch", service_s=5e-5, commit_s=0.003),
    "redis-lua": Backend("redis-lua", service_s=1 / 184_000),
    "sharded": Backend("sharded", service_s=0.003, shards=4),
    "queue-token": Backend("queue-token", service_s=1e-6, commit_s=0.003),
    "naive-read-write": Backend("naive-read-write", service_s=5e-4, commit_s=1e-3),
}
SAFE = [kind for kind in BACKENDS if kind != "naive-read-write"]


def make_demand(
    send_s: np.ndarray,
    *,
    stock: int,
    user: np.ndarray | None = None,
    rtt_s: float | np.ndarray = 0.02,
    per_user_limit: int = 1,
    timeout_s: float = HUGE_S,
    retries: int = 0,
    backoff_s: float = 0.05,
    jitter: np.ndarray | None = None,
) -> SaleDemand:
    n = send_s.size
    return SaleDemand(
        at_s=0.0,
        stock=stock,
        per_user_limit=per_user_limit,
        timeout_s=timeout_s,
        retries=retries,
        backoff_s=backoff_s,
        user=np.arange(n) if user is None else user,
        send_s=send_s,
        rtt_s=np.broadcast_to(np.asarray(rtt_s, dtype=float), (n,)).copy(),
        latency_s=np.zeros(n),
        jitter=np.full((n, max(retries, 1)), 0.5) if jitter is None else jitter,
    )


def random_demand(
    seed: int,
    orders: int,
    span_s: float,
    *,
    stock: int,
    buyers: int | None = None,
    per_user_limit: int = 1,
    timeout_s: float = HUGE_S,
    retries: int = 0,
) -> SaleDemand:
    """Orders sent uniformly over `span_s`, lognormal round trips around 30 ms."""
    rng = np.random.default_rng(seed)
    return make_demand(
        np.sort(rng.uniform(0.0, span_s, orders)),
        stock=stock,
        user=np.arange(orders) if buyers is None else rng.integers(0, buyers, orders),
        rtt_s=rng.lognormal(np.log(0.03), 0.5, orders),
        per_user_limit=per_user_limit,
        timeout_s=timeout_s,
        retries=retries,
        jitter=rng.random((orders, max(retries, 1))),
    )


def per_user_orders(demand: SaleDemand, out: SaleOutcome) -> np.ndarray:
    return np.bincount(demand.user[out.ordered], minlength=int(demand.user.max()) + 1)


def sold_out_after_s(demand: SaleDemand, out: SaleOutcome) -> float:
    """When the order that emptied the stock was created, after the announcement."""
    assert out.sold == demand.stock
    return float(np.nanmax(out.ordered_at_s)) - demand.at_s


# -- exact behaviour on hand-built demands -------------------------------------------------------


def test_row_lock_serves_in_arrival_order_ties_by_order_index() -> None:
    demand = make_demand(np.zeros(3), stock=2, rtt_s=0.02)
    out = simulate_reference(demand, Backend("row-lock", service_s=0.01))
    assert out.attempt_order.tolist() == [0, 1, 2]
    # arrive at 0.01, decided at 0.02, 0.03, 0.04, answers back 0.01 later
    assert out.attempt_response_s == pytest.approx([0.03, 0.04, 0.05])
    assert out.attempt_decision.tolist() == [Decision.ORDERED, Decision.ORDERED, Decision.SOLD_OUT]
    assert out.ordered_at_s[:2] == pytest.approx([0.02, 0.03])
    assert out.sold == 2


def test_hot_row_batch_groups_every_attempt_that_has_arrived() -> None:
    demand = make_demand(np.array([0.0, 0.0, 0.0, 0.002]), stock=10, rtt_s=0.02)
    out = simulate_reference(demand, Backend("hot-row-batch", service_s=0.001, commit_s=0.005))
    # group of 3 taken at 0.01, decided at 0.01 + 0.005 + 3 * 0.001; then the late one alone
    assert out.ordered_at_s == pytest.approx([0.018, 0.018, 0.018, 0.024])
    assert out.attempt_response_s == pytest.approx([0.028, 0.028, 0.028, 0.032])


def test_hot_row_batch_caps_the_group_at_batch_max() -> None:
    demand = make_demand(np.zeros(5), stock=10, rtt_s=0.02)
    backend = Backend("hot-row-batch", service_s=0.001, commit_s=0.005, batch_max=2)
    out = simulate_reference(demand, backend)
    assert out.ordered_at_s == pytest.approx([0.017, 0.017, 0.024, 0.024, 0.030])


def test_abandoned_attempt_still_orders_and_the_retry_replays_it() -> None:
    # two buyers at once; the second waits 10 ms in the queue and its answer comes too late
    demand = make_demand(
        np.zeros(2), stock=5, rtt_s=0.01, timeout_s=0.025, retries=1, backoff_s=0.01
    )
    out = simulate_reference(demand, Backend("row-lock", service_s=0.01))
    assert out.attempt_order.tolist() == [0, 1, 1]
    assert out.attempt_decision.tolist() == [
        Decision.ORDERED,
        Decision.TIMED_OUT,
        Decision.REPLAYED,
    ]
    # decided at 0.015 and 0.025 (seen at 0.03 > 0.025); the retry leaves at 0.025 + 0.01 * 0.5
    assert out.attempt_send_s == pytest.approx([0.0, 0.0, 0.03])
    assert out.attempt_response_s == pytest.approx([0.02, 0.025, 0.02])
    assert out.ordered_at_s == pytest.approx([0.015, 0.025])
    assert out.sold == 2


def test_sharded_moves_to_the_next_shard_then_sells_out() -> None:
    # stock 1 over 2 shards: shard 0 holds it, shard 1 is dry from the start
    demand = make_demand(np.array([0.0, 0.001]), stock=1, rtt_s=0.02)
    out = simulate_reference(demand, Backend("sharded", service_s=0.001, shards=2))
    assert out.attempt_order.tolist() == [0, 1, 1]
    assert out.attempt_decision.tolist() == [Decision.ORDERED, Decision.MOVED, Decision.SOLD_OUT]
    # order 1: decided MOVED at 0.012, answer back at 0.022, re-sent to shard 0 at once
    assert out.attempt_send_s == pytest.approx([0.0, 0.001, 0.022])
    assert out.ordered.tolist() == [True, False]


def test_sharded_moves_are_not_retries_and_keep_limits_across_shards() -> None:
    # one buyer, limit 1, two orders on two shards: the second is over the limit
    demand = make_demand(np.array([0.0, 0.005]), stock=4, user=np.array([7, 7]), retries=0)
    out = simulate_reference(demand, Backend("sharded", service_s=0.001, shards=2))
    assert out.attempt_decision.tolist() == [Decision.ORDERED, Decision.OVER_LIMIT]
    assert out.sold == 1


def test_queue_token_writes_behind_the_answers() -> None:
    demand = make_demand(np.zeros(4), stock=3, rtt_s=0.02)
    out = simulate_reference(demand, Backend("queue-token", service_s=0.001, commit_s=0.01))
    assert out.ordered_at_s[:3] == pytest.approx([0.011, 0.012, 0.013])
    assert out.attempt_response_s == pytest.approx([0.021, 0.022, 0.023, 0.024])
    # one writer, 10 ms per order, starting with the first order
    assert out.written_s == pytest.approx(0.011 + 3 * 0.01)
    assert simulate_reference(demand, BACKENDS["redis-lua"]).written_s is None


def test_same_demand_gives_identical_outcomes() -> None:
    demand = random_demand(3, 400, 0.2, stock=100, buyers=150, timeout_s=0.1, retries=2)
    for backend in BACKENDS.values():
        first, second = simulate_reference(demand, backend), simulate_reference(demand, backend)
        for name in ("attempt_order", "attempt_send_s", "attempt_response_s", "attempt_decision"):
            np.testing.assert_array_equal(getattr(first, name), getattr(second, name))
        np.testing.assert_array_equal(first.ordered_at_s, second.ordered_at_s)


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(ValueError, match=r"backend\.kind must be one of"):
        simulate_reference(make_demand(np.zeros(1), stock=1), Backend("mutex", service_s=0.001))


# -- no oversell ----------------------------------------------------------------------------------


@settings(max_examples=160, deadline=None)
@given(
    kind=st.sampled_from(SAFE),
    model=st.sampled_from([simulate_reference, simulate_fast]),
    stock=st.integers(0, 40),
    buyers=st.integers(1, 15),
    quantity=st.integers(1, 4),
    limit=st.integers(1, 3),
    retries=st.integers(0, 2),
    timeout_s=st.sampled_from([0.005, 0.03, HUGE_S]),
    span_s=st.sampled_from([0.0, 0.01, 0.3]),
    same_rtt=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_no_backend_but_naive_oversells(
    kind: str,
    model: Callable[[SaleDemand, Backend], SaleOutcome],
    stock: int,
    buyers: int,
    quantity: int,
    limit: int,
    retries: int,
    timeout_s: float,
    span_s: float,
    same_rtt: bool,
    seed: int,
) -> None:
    rng = np.random.default_rng(seed)
    user = rng.permutation(np.repeat(np.arange(buyers), quantity))
    demand = make_demand(
        np.sort(rng.uniform(0.0, span_s, user.size)),
        stock=stock,
        user=user,
        rtt_s=0.01 if same_rtt else rng.uniform(0.002, 0.04, user.size),
        per_user_limit=limit,
        timeout_s=timeout_s,
        retries=retries,
        backoff_s=0.01,
        jitter=rng.random((user.size, max(retries, 1))),
    )
    out = model(demand, BACKENDS[kind])
    assert out.sold <= stock
    assert out.sold == int(out.ordered.sum())
    assert per_user_orders(demand, out).max() <= limit
    assert np.all(out.attempt_response_s <= timeout_s)
    told_yes = np.isin(out.attempt_decision, [Decision.ORDERED, Decision.REPLAYED])
    assert out.ordered[out.attempt_order[told_yes]].all()
    # every order is decided; only a MOVED answer nobody heard can leave sharded stock unsold
    if kind != "sharded" or timeout_s == HUGE_S:
        assert out.sold == min(stock, buyers * min(quantity, limit))


def test_naive_read_write_oversells_within_the_read_write_gap() -> None:
    # 100 attempts arrive within 0.5 ms; each reads 0.5 ms later, writes 1 ms after reading
    burst = make_demand(np.linspace(0.0, 0.0005, 100), stock=10)
    out = simulate_reference(burst, BACKENDS["naive-read-write"])
    assert out.sold == 100 > burst.stock  # every read saw the full stock
    assert out.ordered.all()


def test_naive_read_write_is_correct_without_contention() -> None:
    spaced = make_demand(np.arange(100) * 0.01, stock=10)
    out = simulate_reference(spaced, BACKENDS["naive-read-write"])
    assert out.sold == 10
    assert out.ordered.tolist() == [True] * 10 + [False] * 90


# -- queueing theory ------------------------------------------------------------------------------


def test_row_lock_matches_md1_mean_response() -> None:
    arrival_per_s, service_s, rtt_s, warm_up = 200.0, 0.003, 0.01, 100
    backend = Backend("row-lock", service_s=service_s)
    means = []
    for seed in range(30):
        rng = np.random.default_rng(seed)
        send_s = np.cumsum(rng.exponential(1 / arrival_per_s, 1500))
        out = simulate_reference(make_demand(send_s, stock=10**9, rtt_s=rtt_s), backend)
        assert out.sold == send_s.size
        server_side_s = out.attempt_response_s - rtt_s  # decision - arrival
        means.append(float(np.mean(server_side_s[warm_up:])))  # skip the start from empty
    mean_s = float(np.mean(means))
    half_width_s = stats.t.ppf(0.975, len(means) - 1) * np.std(means, ddof=1) / np.sqrt(len(means))
    expected_s = md1_mean_response_s(arrival_per_s, service_s)
    assert abs(mean_s - expected_s) <= half_width_s, (mean_s, expected_s, half_width_s)


# -- backends compared on one demand -------------------------------------------------------------


def test_backends_rank_as_published() -> None:
    demand = random_demand(11, 5000, 0.5, stock=500, timeout_s=5.0)
    outs = {kind: simulate_reference(demand, BACKENDS[kind]) for kind in SAFE}
    sold_out = {kind: sold_out_after_s(demand, out) for kind, out in outs.items()}
    p99 = {kind: float(np.quantile(out.attempt_response_s, 0.99)) for kind, out in outs.items()}
    assert sold_out["row-lock"] > sold_out["hot-row-batch"] > sold_out["redis-lua"]
    assert p99["row-lock"] > p99["hot-row-batch"] > p99["redis-lua"]
    rejection_p50 = {
        kind: float(np.median(out.attempt_response_s[out.attempt_decision == Decision.SOLD_OUT]))
        for kind, out in outs.items()
    }
    fastest = min(rejection_p50, key=rejection_p50.__getitem__)
    assert fastest == "queue-token", rejection_p50
    # its answers do not wait for the write-behind, which ends long after the sell-out
    token = outs["queue-token"]
    assert token.written_s is not None
    assert token.written_s >= sold_out["queue-token"] + 500 * BACKENDS["queue-token"].commit_s / 2


# -- the vectorised model agrees ------------------------------------------------------------------


def assert_fast_matches(demand: SaleDemand, backend: Backend) -> None:
    ref = simulate_reference(demand, backend)
    fast = simulate_fast(demand, backend)
    assert fast.sold == ref.sold
    ks = stats.ks_2samp(ref.attempt_response_s, fast.attempt_response_s, method="asymp")
    assert ks.statistic <= 0.05, ks.statistic
    if ref.sold == demand.stock:
        expected_s = sold_out_after_s(demand, ref)
        assert sold_out_after_s(demand, fast) == pytest.approx(expected_s, rel=0.05)
    if ref.written_s is not None:
        assert fast.written_s == pytest.approx(ref.written_s, rel=0.05)


@pytest.mark.parametrize("kind", list(BACKENDS))
def test_fast_matches_reference_burst(kind: str) -> None:
    demand = random_demand(21, 3000, 1.0, stock=1000)
    assert_fast_matches(demand, BACKENDS[kind])


@pytest.mark.parametrize("kind", list(BACKENDS))
def test_fast_matches_reference_timeouts_and_retries(kind: str) -> None:
    demand = random_demand(
        22, 3000, 2.0, stock=500, buyers=1000, per_user_limit=2, timeout_s=0.3, retries=2
    )
    assert_fast_matches(demand, BACKENDS[kind])


@pytest.mark.parametrize("kind", list(BACKENDS))
def test_fast_matches_reference_sharded_moves(kind: str) -> None:
    # 301 items over 3 shards (101, 100, 100); orders arrive as a flash crowd, so shards run dry
    # at different times and buyers move between them
    rng = np.random.default_rng(23)
    orders = 2000
    demand = make_demand(
        np.sort(rng.lognormal(np.log(1.5), 0.6, orders)),
        stock=301,
        rtt_s=rng.lognormal(np.log(0.03), 0.5, orders),
    )
    backend = Backend("sharded", service_s=0.002, shards=3) if kind == "sharded" else BACKENDS[kind]
    out = simulate_reference(demand, backend)
    if kind == "sharded":
        assert np.any(out.attempt_decision == Decision.MOVED)
    assert_fast_matches(demand, backend)
