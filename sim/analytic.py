"""Closed forms of classic queues, used to validate the engines.

Arrivals are Poisson at `arrival_per_s`; `service_s` is the mean service time of one server.
"Wait" is the time in the queue before service starts; "response" is wait plus service.
Every function raises ValueError with a one-line message when an input is not a positive
finite number or the queue is unstable (utilisation >= 1).
"""

from __future__ import annotations

import math
import operator


def _positive(name: str, value: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not (number > 0.0 and math.isfinite(number)):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return number


def _servers(servers: int) -> int:
    try:
        count = -1 if isinstance(servers, bool) else operator.index(servers)
    except TypeError:
        count = -1
    if count < 1:
        raise ValueError(f"servers must be an integer >= 1, got {servers!r}")
    return count


def _stable(utilisation: float) -> float:
    if utilisation >= 1.0:
        raise ValueError(f"utilisation {utilisation:.4g} >= 1: the queue grows without bound")
    return utilisation


def mm1_mean_wait_s(arrival_per_s: float, service_s: float) -> float:
    """M/M/1 mean time in queue: rho * s / (1 - rho)."""
    s = _positive("service_s", service_s)
    rho = _stable(_positive("arrival_per_s", arrival_per_s) * s)
    return rho * s / (1.0 - rho)


def mm1_mean_response_s(arrival_per_s: float, service_s: float) -> float:
    """M/M/1 mean time in system: s / (1 - rho)."""
    return mm1_mean_wait_s(arrival_per_s, service_s) + service_s


def erlang_b(servers: int, offered_erlangs: float) -> float:
    """Erlang B blocking probability, by the recursion B(k) = a B(k-1) / (k + a B(k-1))."""
    c = _servers(servers)
    a = _positive("offered_erlangs", offered_erlangs)
    b = 1.0
    for k in range(1, c + 1):
        b = a * b / (k + a * b)
    return b


def mmc_erlang_c(servers: int, offered_erlangs: float) -> float:
    """Erlang C: probability that an arrival to an M/M/c queue has to wait."""
    c = _servers(servers)
    a = _positive("offered_erlangs", offered_erlangs)
    _stable(a / c)
    b = erlang_b(c, a)
    return c * b / (c - a * (1.0 - b))


def mmc_mean_wait_s(arrival_per_s: float, service_s: float, servers: int) -> float:
    """M/M/c mean time in queue: C(c, a) * s / (c - a), with a = arrival rate x s."""
    c = _servers(servers)
    s = _positive("service_s", service_s)
    a = _positive("arrival_per_s", arrival_per_s) * s
    return mmc_erlang_c(c, a) * s / (c - a)


def mmc_mean_response_s(arrival_per_s: float, service_s: float, servers: int) -> float:
    """M/M/c mean time in system."""
    return mmc_mean_wait_s(arrival_per_s, service_s, servers) + service_s


def mg1_mean_wait_s(
    arrival_per_s: float, service_mean_s: float, service_second_moment_s2: float
) -> float:
    """M/G/1 mean time in queue (Pollaczek-Khinchine): lambda E[S^2] / (2 (1 - rho))."""
    lam = _positive("arrival_per_s", arrival_per_s)
    s = _positive("service_mean_s", service_mean_s)
    s2 = _positive("service_second_moment_s2", service_second_moment_s2)
    if s2 < s * s * (1.0 - 1e-12):
        raise ValueError(
            f"service_second_moment_s2 {s2:.6g} is below service_mean_s squared {s * s:.6g}"
        )
    rho = _stable(lam * s)
    return lam * s2 / (2.0 * (1.0 - rho))


def mg1_mean_response_s(
    arrival_per_s: float, service_mean_s: float, service_second_moment_s2: float
) -> float:
    """M/G/1 mean time in system."""
    wait_s = mg1_mean_wait_s(arrival_per_s, service_mean_s, service_second_moment_s2)
    return wait_s + service_mean_s


def md1_mean_wait_s(arrival_per_s: float, service_s: float) -> float:
    """M/D/1 mean time in queue: rho * s / (2 (1 - rho)), half the M/M/1 wait."""
    s = _positive("service_s", service_s)
    return mg1_mean_wait_s(arrival_per_s, s, s * s)


def md1_mean_response_s(arrival_per_s: float, service_s: float) -> float:
    """M/D/1 mean time in system."""
    return md1_mean_wait_s(arrival_per_s, service_s) + service_s
