"""The latency axis of the cohort engine and the two operations on it.

A cohort's viewers are spread over latency buckets, the same logarithmic buckets a
`sim.metrics.Histogram` uses, so the cohort's replay-latency counts fold into a Histogram without
re-binning. Two things happen to a viewer's replay latency:

* at join it is drawn as `x + Y`: a per-cohort shift `x` plus a `Kernel` of per-viewer variation
  (phase against the part clock, round trips, propagation);
* afterwards it only grows, and only by stalls: the next unit plays at max(play head, arrival), so
  latency becomes max(L, X) where X is the unit's delivery delay. For X independent of L,
  P(max(L, X) <= y) = P(L <= y) P(X <= y): a product of CDFs on the bucket edges.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
from scipy.signal import fftconvolve

from sim.metrics import Histogram

_PHASE_POINTS = 512
"""Resolution of join kernels: points per unit (0.65 ms for 0.333 s parts)."""
_RTT_QUANTILES = np.concatenate(
    [np.linspace(0.0, 0.8, 9), np.linspace(0.8, 0.96, 9)[1:], [0.97, 0.98, 0.99, 0.995, 0.999, 1.0]]
)
"""Slices of the round-trip distribution a join kernel follows through the waits."""


class LatencyGrid:
    """`size` consecutive Histogram buckets starting at or below `lowest_s`."""

    def __init__(self, lowest_s: float, size: int, resolution: Histogram | None = None) -> None:
        h = resolution or Histogram()
        gamma = (1.0 + h.rel_error) / (1.0 - h.rel_error)
        first = max(0, math.floor(math.log(lowest_s / h.min_value) / math.log(gamma)))
        index = np.arange(first, first + size + 1, dtype=float)
        self.edges_s = h.min_value * gamma**index
        """Bucket boundaries, size + 1 of them."""
        self.values_s = np.sqrt(self.edges_s[:-1] * self.edges_s[1:])
        """A value inside each bucket (its geometric middle)."""
        self.size = size


class Kernel:
    """The distribution of a per-viewer delay, held as samples."""

    def __init__(self, samples_s: np.ndarray) -> None:
        self.samples_s = np.sort(np.asarray(samples_s, dtype=float))

    def cdf_at_edges(self, grid: LatencyGrid, shift_s: np.ndarray) -> np.ndarray:
        """P(shift + Y <= edge) for shifts of any shape, bucket edges on a new last axis."""
        y = grid.edges_s - shift_s[..., None]
        below = np.searchsorted(self.samples_s, y.ravel(), side="right")
        return below.reshape(y.shape) / self.samples_s.size


def max_with(
    grid: LatencyGrid, counts: np.ndarray, delay_cdf: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Counts of max(L, X) and the stall each cell suffered in total (viewer-seconds).

    `counts` holds L over the buckets (last axis); `delay_cdf` is P(X <= edge) at the bucket
    edges (last axis size + 1), broadcastable against the counts.
    """
    below = np.cumsum(counts, axis=-1)
    new_below = below * np.broadcast_to(delay_cdf[..., 1:], below.shape)
    new_below[..., -1] = below[..., -1]  # anything later than the grid stays in the last bucket
    new = np.diff(new_below, axis=-1, prepend=0.0)
    stall = (new - counts) @ grid.values_s
    return new, stall


def step_cdf(grid: LatencyGrid, delay_s: np.ndarray) -> np.ndarray:
    """P(X <= edge) for a delay known exactly (one value per cell)."""
    return (grid.edges_s >= delay_s[..., None]).astype(float)


class JoinKernel:
    """A joiner's delay, per rate class, held on a fine time grid: `early part + rest`.

    The early part runs from the joiner's playlist request reaching its edge to the first unit's
    first byte leaving it, measured from the moment the newest unit landed there (the joiner's
    *phase* in the unit clock, uniform over a unit). It depends on the phase and the joiner's
    round trip together:

    * the playlist waits for the end of the burst the newest unit started on the edge (the
      stream's viewers being served in turn); joiners pile up there;
    * the first unit's request, a round trip later, waits behind the next unit's burst if it
      comes during it;
    * misses: the playlist when no one on the edge watches the stream (`cold`), the first unit
      when no one plays its rendition there and no earlier joiner of the same unit fetched it
      (an early joiner is more often first); they cost `cold_s` and one of the edges'
      round trips to their parents (`miss_s`).

    The rest (propagation, the first unit's link time) is independent of both and convolved in.
    With `latency` the part is the replay-latency share (first byte + half a round trip back),
    otherwise the join-time share (connect, waits, request and answer: first byte - phase + two
    round trips).
    """

    def __init__(
        self,
        rest_s: np.ndarray,
        rtt_s: np.ndarray,
        unit_s: float,
        miss_s: np.ndarray,
        cold_s: float,
        *,
        request_rtts: float,
        latency: bool,
    ) -> None:
        rest_s = np.atleast_2d(rest_s)
        self.unit_s = unit_s
        self.step_s = unit_s / _PHASE_POINTS
        miss_pmf = np.bincount(np.round(np.asarray(miss_s) / self.step_s).astype(np.intp))
        self.miss_pmf = miss_pmf / miss_pmf.sum()
        """A unit the edge lacks costs a round trip from its edge to the parent (which has it
        from another edge): the edges' round trips on the grid, from 0."""
        self.cold_s = cold_s
        """A playlist for a stream the edge does not carry: round trips up to the origin."""
        self.request_rtts = request_rtts
        """Round trips between the playlist's answer and the first unit's request (0 for push)."""
        self.latency = latency
        self.phase_s = ((np.arange(_PHASE_POINTS) + 0.5) * self.step_s)[:, None]
        ordered = np.sort(rtt_s)
        cuts = np.round(_RTT_QUANTILES * ordered.size).astype(np.intp)
        self.rtt_s = np.array([ordered[a:b].mean() for a, b in itertools.pairwise(cuts)])[None, :]
        self.rtt_weight = np.diff(_RTT_QUANTILES)[None, :]
        """Each round-trip point stands for a slice of the distribution, finer in the tail."""
        self.rest_low_s = float(rest_s.min())
        index = np.round((rest_s - self.rest_low_s) / self.step_s).astype(np.intp)
        width = int(index.max()) + 1
        self.rest_pmf = (
            np.stack([np.bincount(row, minlength=width) for row in index]) / (rest_s.shape[1])
        )
        """Shape (classes, width): the rest on the grid, from `rest_low_s` on."""

    @property
    def low_s(self) -> float:
        """No joiner is earlier than this (bursts and misses only add)."""
        early = self.phase_s[0, 0] + self.request_rtts * self.rtt_s.min() + 0.5 * self.rtt_s.min()
        if not self.latency:
            early = 2.0 * self.rtt_s.min()
        return self.rest_low_s + float(early)

    def spread(
        self,
        grid: LatencyGrid,
        shift_s: np.ndarray,
        cold: np.ndarray,
        absent: np.ndarray,
        joining: np.ndarray,
        locked_s: np.ndarray,
        busy: np.ndarray,
        burst_s: np.ndarray,
    ) -> np.ndarray:
        """Bucket probabilities (rows, classes, buckets) of shift + early part + rest.

        Per row (an edge group and a stream band): `shift_s` and `absent` (rows, classes): no one
        plays the joiner's first rendition on the edge; `cold`: no one watches the stream there;
        `joining`: joiners per unit on one edge for one stream; `locked_s`: the burst each of the
        stream's units makes on the edge as it lands; `busy`, `burst_s`: the chance a joiner
        meets another stream's burst, and its length (the wait is then uniform over it).
        """
        rows, classes = shift_s.shape
        out = np.empty((rows, classes, grid.edges_s.size - 1))
        for r in range(rows):
            pmf = self._early(float(cold[r]), absent[r], float(joining[r]), float(locked_s[r]))
            pmf = fftconvolve(pmf, self._wait(float(busy[r]), float(burst_s[r]))[None, :], axes=1)
            pmf = fftconvolve(pmf, self.rest_pmf, axes=1)
            # Mass at grid point j sits at rest_low + j * step (+ the cell's shift).
            cdf = np.cumsum(np.maximum(pmf, 0.0), axis=1)
            cdf /= cdf[:, -1:]
            points = self.rest_low_s + np.arange(cdf.shape[1]) * self.step_s
            for k in range(classes):
                at = np.interp(grid.edges_s - shift_s[r, k], points, cdf[k], left=0.0, right=1.0)
                at[0], at[-1] = 0.0, 1.0
                out[r, k] = np.maximum(np.diff(at), 0.0)
        return out

    def _early(
        self, cold: float, absent: np.ndarray, joining: float, locked_s: float
    ) -> np.ndarray:
        """Per class, the early part on the grid, over phases, round trips and misses."""
        phase, rtt, u = self.phase_s, self.rtt_s, self.unit_s
        # The chance a joiner is the first of its unit on the edge (no one fetched it yet).
        first = np.exp(-joining * phase / u)[None, :, :]
        lacks = absent[:, None, None]

        def first_byte(playlist_s: np.ndarray, unit_miss: bool) -> np.ndarray:
            asked = playlist_s + self.request_rtts * rtt
            if unit_miss:
                return asked  # the miss's round trip up is convolved in below
            behind = (asked >= u) & (asked < u + locked_s)
            return np.where(behind, u + locked_s, asked)

        answered = np.maximum(phase, locked_s)
        hits = (
            (first_byte(answered, False), 1.0 - lacks * first - cold * (1.0 - first)),
            (first_byte(answered + self.cold_s, False), cold * (1.0 - first) + 0.0 * lacks),
        )
        misses = (
            (first_byte(answered, True), (lacks - cold) * first),
            (first_byte(answered + self.cold_s, True), cold * first + 0.0 * lacks),
        )
        hit = self._on_grid(hits, absent.size)
        missed = fftconvolve(self._on_grid(misses, absent.size), self.miss_pmf[None, :], axes=1)
        width = max(hit.shape[1], missed.shape[1])
        pmf = np.zeros((absent.size, width))
        pmf[:, : hit.shape[1]] += hit
        pmf[:, : missed.shape[1]] += missed
        return pmf / self.phase_s.size

    def _on_grid(
        self, outcomes: tuple[tuple[np.ndarray, np.ndarray], ...], classes: int
    ) -> np.ndarray:
        """Per class, the weights of (first byte, weight) outcomes binned on the grid."""
        rtt = self.rtt_s
        shape = (classes, self.phase_s.size, rtt.size)
        parts = []
        for at_s, weight in outcomes:
            value = at_s + 0.5 * rtt if self.latency else at_s - self.phase_s + 2.0 * rtt
            index = np.round(np.broadcast_to(value, shape[1:]) / self.step_s).astype(np.intp)
            w = np.maximum(weight, 0.0) * self.rtt_weight
            w = np.broadcast_to(w, shape).reshape(classes, -1)
            parts.append((index.ravel(), w))
        width = max(int(index.max()) for index, _ in parts) + 1
        pmf = np.zeros((classes, width))
        for index, w in parts:
            for k in range(classes):
                pmf[k] += np.bincount(index, weights=w[k], minlength=width)
        return pmf

    def _wait(self, busy: float, burst_s: float) -> np.ndarray:
        """The wait behind another stream's burst: none, or uniform over the burst."""
        n = max(1, round(burst_s / self.step_s))
        wait = np.zeros(n + 1)
        wait[0] = 1.0 - busy
        wait[1:] += busy / n
        return wait
