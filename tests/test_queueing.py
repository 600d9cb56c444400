"""A tier node driven as a queue agrees with the closed forms of sim.analytic.

Poisson arrivals are generated in a SimPy environment and handed to the same RequestQueue and
EgressLink the engine uses; over replications the closed form must lie in the 95 % confidence
interval of the mean response time.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import simpy
from scipy import stats

from sim import analytic
from sim.exact.node import EgressLink, RequestQueue

REPLICATIONS = 30
ARRIVALS = 4000
WARM_UP = 400


def mean_response(
    arrival_per_s: float,
    serve: Callable[[float, float], float],
    service: Callable[[np.random.Generator], float],
    seed: int,
) -> float:
    """Mean time in system of one replication, after a warm-up."""
    env = simpy.Environment()
    rng = np.random.default_rng(seed)
    responses: list[float] = []

    def source() -> simpy.events.ProcessGenerator:
        for _ in range(ARRIVALS):
            yield env.timeout(rng.exponential(1.0 / arrival_per_s))
            responses.append(serve(env.now, service(rng)) - env.now)

    env.process(source())
    env.run()
    return float(np.mean(responses[WARM_UP:]))


def confidence_interval(samples: list[float]) -> tuple[float, float]:
    mean = float(np.mean(samples))
    half = stats.t.ppf(0.975, len(samples) - 1) * stats.sem(samples)
    return mean - half, mean + half


def replicate(
    make: Callable[[], Callable[[float, float], float]],
    arrival_per_s: float,
    service: Callable[[np.random.Generator], float],
) -> tuple[float, float]:
    means = [mean_response(arrival_per_s, make(), service, seed) for seed in range(REPLICATIONS)]
    return confidence_interval(means)


def test_single_worker_matches_mm1() -> None:
    lam, s = 80.0, 0.01  # rho = 0.8
    low, high = replicate(lambda: RequestQueue(1).admit, lam, lambda r: r.exponential(s))
    assert low <= analytic.mm1_mean_response_s(lam, s) <= high


def test_many_workers_match_mmc() -> None:
    lam, s, c = 700.0, 0.01, 8  # rho = 0.875
    low, high = replicate(lambda: RequestQueue(c).admit, lam, lambda r: r.exponential(s))
    assert low <= analytic.mmc_mean_response_s(lam, s, c) <= high


def test_constant_service_matches_md1() -> None:
    lam, s = 85.0, 0.01  # rho = 0.85
    low, high = replicate(lambda: RequestQueue(1).admit, lam, lambda r: s)
    assert low <= analytic.md1_mean_response_s(lam, s) <= high


def test_egress_link_with_equal_objects_matches_md1() -> None:
    # 1 Mbit objects on a 100 Mbit/s link: deterministic 10 ms transmission.
    lam, bits, capacity = 70.0, 1e6, 1e8
    low, high = replicate(lambda: EgressLink(capacity).send, lam, lambda r: bits)
    assert low <= analytic.md1_mean_response_s(lam, bits / capacity) <= high
