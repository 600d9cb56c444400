"""Viewer arrivals: who joins when, how long they stay, which stream they watch.

The audience profile fixes a target concurrency curve c(t). Arrivals are a non-homogeneous
Poisson process with rate lambda(t) = max(0, c'(t) + c(t) / E[watch]) which, for exponential watch
times, keeps the expected number of viewers on c(t). Everything is drawn vectorised from the
run's generator, so the exact engine and a later cohort engine see the same audience law.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.scenario import Audience, Hosts

_GRID_POINTS = 20_000


@dataclass(frozen=True)
class Arrivals:
    """One row per viewer session, sorted by arrival time."""

    at_s: np.ndarray
    """Arrival time of each session."""
    leave_s: np.ndarray
    """Departure time (arrival + watch time), not clipped to the run's end."""
    stream: np.ndarray
    """Index of the host stream the viewer watches (0 = most popular)."""

    def __len__(self) -> int:
        return int(self.at_s.size)


def target_concurrency(audience: Audience, duration_s: float, t_s: np.ndarray) -> np.ndarray:
    """Viewers the profile aims to have watching at each time in `t_s`."""
    n = float(audience.peak_viewers)
    ramp_s = max(audience.ramp_s, 1e-9)
    if audience.profile == "steady":
        return np.full_like(t_s, n, dtype=float)
    if audience.profile == "ramp":
        return n * np.clip(t_s / ramp_s, 0.0, 1.0)
    if audience.profile == "flash-crowd":
        return n * (1.0 - np.exp(-4.0 * t_s / ramp_s))
    if audience.profile == "diurnal":
        return n * (0.6 - 0.4 * np.cos(2.0 * np.pi * t_s / duration_s))
    raise ValueError(f"unknown audience profile {audience.profile!r}")


def _arrival_law(audience: Audience, duration_s: float) -> tuple[np.ndarray, np.ndarray, float]:
    """(time grid, expected flow arrivals up to each grid point, viewers present at t=0).

    Viewers present at t=0 are joined spread uniformly over the first ramp_s seconds.
    """
    grid = np.linspace(0.0, duration_s, _GRID_POINTS + 1)
    level = target_concurrency(audience, duration_s, grid)
    mean_watch_s = audience.watch_s.mean()
    rate = np.maximum(0.0, np.gradient(level, grid) + level / mean_watch_s)
    cumulative = np.concatenate(([0.0], np.cumsum(0.5 * (rate[1:] + rate[:-1]) * np.diff(grid))))
    return grid, cumulative, float(level[0])


def expected_arrivals(audience: Audience, duration_s: float, edges_s: np.ndarray) -> np.ndarray:
    """Expected sessions arriving in each interval [edges_s[i], edges_s[i+1]).

    The same law `draw_arrivals` samples from, for engines that draw counts per time step.
    """
    grid, cumulative, initial = _arrival_law(audience, duration_s)
    flow = np.interp(edges_s, grid, cumulative)
    spread_s = min(audience.ramp_s, duration_s)
    if spread_s > 0:
        present = initial * np.clip(edges_s / spread_s, 0.0, 1.0)
    else:
        present = np.where(edges_s > 0, initial, 0.0)
    return np.diff(flow + present)


def draw_arrivals(
    audience: Audience, hosts: Hosts, duration_s: float, rng: np.random.Generator
) -> Arrivals:
    """Draw every viewer session of the run."""
    grid, cumulative, initial = _arrival_law(audience, duration_s)
    total = cumulative[-1]
    n_flow = int(rng.poisson(total)) if total > 0 else 0
    flow_at = np.interp(rng.uniform(0.0, total, n_flow), cumulative, grid)
    n_initial = round(initial)
    initial_at = rng.uniform(0.0, min(audience.ramp_s, duration_s), n_initial)
    at_s = np.sort(np.concatenate((initial_at, flow_at)))
    watch_s = audience.watch_s.sample(rng, at_s.size)
    weights = hosts.popularity.weights(hosts.count)
    stream = rng.choice(hosts.count, size=at_s.size, p=weights)
    return Arrivals(at_s=at_s, leave_s=at_s + np.maximum(watch_s, 1e-3), stream=stream)
