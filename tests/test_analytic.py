"""The queueing closed forms agree with textbook numbers, with each other and with simulation."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import simpy
from scipy import stats

from sim import analytic

REPLICATIONS = 20
CUSTOMERS = 20_000
WARM_UP = 2_000


def erlang_c_by_sum(servers: int, offered: float) -> float:
    """The textbook formula, summed in log space so that large systems do not overflow."""
    log_terms = [k * math.log(offered) - math.lgamma(k + 1) for k in range(servers)]
    log_wait = (
        servers * math.log(offered)
        - math.lgamma(servers + 1)
        + math.log(servers / (servers - offered))
    )
    top = max([*log_terms, log_wait])
    idle = sum(math.exp(t - top) for t in log_terms)
    wait = math.exp(log_wait - top)
    return wait / (idle + wait)


def test_textbook_values() -> None:
    # Erlang C for 3 servers and 2 erlangs: (8/6 * 3) / (1 + 2 + 2 + 4) = 4/9.
    assert analytic.mmc_erlang_c(3, 2.0) == pytest.approx(4 / 9, rel=1e-12)
    assert analytic.mmc_erlang_c(2, 1.0) == pytest.approx(1 / 3, rel=1e-12)
    # M/M/1 with lambda = 8/s and mu = 10/s: W = 1 / (mu - lambda) = 0.5 s.
    assert analytic.mm1_mean_response_s(8.0, 0.1) == pytest.approx(0.5)
    # M/D/1 at rho = 0.5 with 1 s service: Wq = 0.5 / (2 * 0.5) = 0.5 s.
    assert analytic.md1_mean_wait_s(0.5, 1.0) == pytest.approx(0.5)
    assert analytic.md1_mean_response_s(0.5, 1.0) == pytest.approx(1.5)
    # M/M/2, lambda = 1, s = 1: Wq = C / (c mu - lambda) = (1/3) / 1.
    assert analytic.mmc_mean_wait_s(1.0, 1.0, 2) == pytest.approx(1 / 3)
    assert analytic.mmc_mean_response_s(1.0, 1.0, 2) == pytest.approx(4 / 3)


@pytest.mark.parametrize("servers", [1, 2, 5, 17, 60])
@pytest.mark.parametrize("load", [0.1, 0.5, 0.9, 0.99])
def test_erlang_c_matches_the_summed_formula(servers: int, load: float) -> None:
    offered = load * servers
    assert analytic.mmc_erlang_c(servers, offered) == pytest.approx(
        erlang_c_by_sum(servers, offered), rel=1e-9
    )


def test_erlang_c_is_stable_for_large_systems() -> None:
    value = analytic.mmc_erlang_c(5000, 4900.0)
    assert 0.0 < value < 1.0
    assert value == pytest.approx(erlang_c_by_sum(5000, 4900.0), rel=1e-9)


def test_one_server_reduces_to_mm1() -> None:
    for rho in (0.1, 0.5, 0.95):
        assert analytic.mmc_erlang_c(1, rho) == pytest.approx(rho)
        lam = rho / 0.02
        assert analytic.mmc_mean_response_s(lam, 0.02, 1) == pytest.approx(
            analytic.mm1_mean_response_s(lam, 0.02)
        )


def test_md1_waits_half_as_long_as_mm1() -> None:
    for lam, s in ((10.0, 0.05), (70.0, 0.01), (0.3, 3.0)):
        assert analytic.md1_mean_wait_s(lam, s) == pytest.approx(
            analytic.mm1_mean_wait_s(lam, s) / 2
        )


def test_mg1_with_exponential_moments_equals_mm1() -> None:
    lam, s = 40.0, 0.02
    assert analytic.mg1_mean_wait_s(lam, s, 2 * s * s) == pytest.approx(
        analytic.mm1_mean_wait_s(lam, s)
    )
    assert analytic.mg1_mean_response_s(lam, s, 2 * s * s) == pytest.approx(
        analytic.mm1_mean_response_s(lam, s)
    )


@pytest.mark.parametrize(
    "call",
    [
        lambda: analytic.mm1_mean_response_s(100.0, 0.01),
        lambda: analytic.mm1_mean_response_s(120.0, 0.01),
        lambda: analytic.mmc_erlang_c(4, 4.0),
        lambda: analytic.mmc_mean_wait_s(500.0, 0.01, 4),
        lambda: analytic.md1_mean_wait_s(2.0, 0.5),
        lambda: analytic.mg1_mean_wait_s(2.0, 0.6, 1.0),
    ],
)
def test_an_unstable_queue_is_refused(call: Callable[[], float]) -> None:
    with pytest.raises(ValueError, match="utilisation") as err:
        call()
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("call", "names"),
    [
        (lambda: analytic.mm1_mean_response_s(0.0, 0.01), "arrival_per_s"),
        (lambda: analytic.mm1_mean_response_s(1.0, -0.01), "service_s"),
        (lambda: analytic.md1_mean_response_s(math.nan, 0.01), "arrival_per_s"),
        (lambda: analytic.mmc_erlang_c(0, 0.5), "servers"),
        (lambda: analytic.mmc_mean_wait_s(1.0, 0.1, 2.5), "servers"),  # type: ignore[arg-type]
        (lambda: analytic.mmc_erlang_c(3, math.inf), "offered_erlangs"),
        (lambda: analytic.mg1_mean_wait_s(1.0, 0.1, 0.0), "service_second_moment_s2"),
        (lambda: analytic.mg1_mean_wait_s(1.0, 0.1, 0.005), "service_second_moment_s2"),
    ],
)
def test_bad_inputs_are_refused(call: Callable[[], float], names: str) -> None:
    with pytest.raises(ValueError, match=names) as err:
        call()
    assert "\n" not in str(err.value)


def lindley_mean_wait_s(interarrival_s: np.ndarray, service_s: np.ndarray) -> float:
    """Mean wait of a FIFO single-server queue: W(n) = max(0, W(n-1) + S(n-1) - A(n))."""
    steps = np.concatenate(([0.0], np.cumsum(service_s[:-1] - interarrival_s[1:])))
    waits = steps - np.minimum.accumulate(steps)
    return float(waits[WARM_UP:].mean())


def confidence_interval(samples: list[float]) -> tuple[float, float]:
    mean = float(np.mean(samples))
    half = float(stats.t.ppf(0.975, len(samples) - 1) * stats.sem(samples))
    return mean - half, mean + half


def single_server_interval(
    lam: float, service: Callable[[np.random.Generator, int], np.ndarray]
) -> tuple[float, float]:
    means = []
    for seed in range(REPLICATIONS):
        rng = np.random.default_rng(seed)
        means.append(
            lindley_mean_wait_s(rng.exponential(1 / lam, CUSTOMERS), service(rng, CUSTOMERS))
        )
    return confidence_interval(means)


def test_simulated_mm1_wait_matches() -> None:
    lam, s = 7.0, 0.1
    low, high = single_server_interval(lam, lambda rng, n: rng.exponential(s, n))
    assert low <= analytic.mm1_mean_wait_s(lam, s) <= high


def test_simulated_md1_wait_matches() -> None:
    lam, s = 8.0, 0.1
    low, high = single_server_interval(lam, lambda rng, n: np.full(n, s))
    assert low <= analytic.md1_mean_wait_s(lam, s) <= high


def test_simulated_mg1_wait_matches_pollaczek_khinchine() -> None:
    lam, a, b = 7.5, 0.02, 0.18  # uniform service on [a, b]: mean 0.1 s
    mean_s, second_s2 = (a + b) / 2, (a * a + a * b + b * b) / 3
    low, high = single_server_interval(lam, lambda rng, n: rng.uniform(a, b, n))
    assert low <= analytic.mg1_mean_wait_s(lam, mean_s, second_s2) <= high


def simpy_mmc_mean_wait_s(lam: float, s: float, servers: int, seed: int, customers: int) -> float:
    env = simpy.Environment()
    desk = simpy.Resource(env, capacity=servers)
    rng = np.random.default_rng(seed)
    waits: list[float] = []

    def customer() -> simpy.events.ProcessGenerator:
        arrived = env.now
        with desk.request() as turn:
            yield turn
            waits.append(env.now - arrived)
            yield env.timeout(rng.exponential(s))

    def source() -> simpy.events.ProcessGenerator:
        for _ in range(customers):
            env.process(customer())
            yield env.timeout(rng.exponential(1 / lam))

    env.process(source())
    env.run()
    return float(np.mean(waits[customers // 10 :]))


def test_simulated_mmc_wait_matches_erlang_c() -> None:
    lam, s, servers = 24.0, 0.1, 3  # rho = 0.8
    means = [simpy_mmc_mean_wait_s(lam, s, servers, seed, 5_000) for seed in range(REPLICATIONS)]
    low, high = confidence_interval(means)
    assert low <= analytic.mmc_mean_wait_s(lam, s, servers) <= high
