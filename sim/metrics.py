"""Bounded-memory measurements: log-bucketed histograms, binned time series and gauges.

A run records one latency sample per viewer per media part, so samples never go into lists that
grow with the run: a `Histogram` keeps counts in logarithmic buckets (relative error bounded by
`rel_error`), and `TimeSeries` / `Gauge` keep one number per fixed time bin.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

_FLUSH_AT = 4096
"""Buffered samples before they are folded into the bucket counts."""

_NICE_STEPS = (1.0, 2.0, 5.0)


class Histogram:
    """Log-bucketed histogram (HDR-style): bounded memory, relative error <= rel_error.

    Bucket i >= 0 holds values in [min_value * gamma**i, min_value * gamma**(i+1)) with
    gamma = (1 + e) / (1 - e); its representative value is within e of anything in it. Values
    below `min_value` go to a zero bucket. Count, mean, min and max are exact; quantiles
    interpolate between neighbouring order statistics like numpy's default method, each one known
    within `rel_error`.
    """

    def __init__(self, rel_error: float = 0.01, min_value: float = 1e-6) -> None:
        if not 0.0 < rel_error < 1.0:
            raise ValueError(f"rel_error must be in (0, 1), got {rel_error}")
        if not (min_value > 0.0 and math.isfinite(min_value)):
            raise ValueError(f"min_value must be a positive number, got {min_value}")
        self.rel_error = rel_error
        """Bound on the relative error of every quantile."""
        self.min_value = min_value
        """Smallest value resolved; anything below counts in the zero bucket."""
        self._gamma = (1.0 + rel_error) / (1.0 - rel_error)
        self._log_gamma = math.log(self._gamma)
        self._log_min = math.log(min_value)
        self._counts = np.zeros(0)
        self._zero = 0.0
        self._weight = 0.0
        self._sum = 0.0
        self._min = math.inf
        self._max = -math.inf
        self._buffer: list[float] = []

    # -- recording -----------------------------------------------------------------------------

    def record(self, value: float) -> None:
        """Add one sample (seconds, >= 0). Cheap: buffered, folded in by numpy in batches."""
        buffer = self._buffer
        buffer.append(value)
        if len(buffer) >= _FLUSH_AT:
            self._flush()

    def record_many(self, values: ArrayLike, weights: ArrayLike | None = None) -> None:
        """Add many samples at once, each with a weight (a count; 1 when weights is None)."""
        v = np.asarray(values, dtype=float).ravel()
        if weights is None:
            w = np.ones_like(v)
        else:
            w = np.broadcast_to(np.asarray(weights, dtype=float), v.shape).ravel()
            if not np.all(np.isfinite(w) & (w >= 0.0)):
                raise ValueError("histogram weights must be finite and >= 0")
        self._add(v, w)

    def merge(self, other: Histogram) -> None:
        """Add every sample of `other` into this histogram (same rel_error and min_value)."""
        if other.rel_error != self.rel_error or other.min_value != self.min_value:
            raise ValueError(
                f"cannot merge histograms with different resolution: rel_error "
                f"{other.rel_error} vs {self.rel_error}, min_value {other.min_value} vs "
                f"{self.min_value}"
            )
        self._flush()
        other._flush()
        self._grow(other._counts.size)
        self._counts[: other._counts.size] += other._counts
        self._zero += other._zero
        self._weight += other._weight
        self._sum += other._sum
        self._min = min(self._min, other._min)
        self._max = max(self._max, other._max)

    def _flush(self) -> None:
        if self._buffer:
            v = np.array(self._buffer, dtype=float)
            self._buffer.clear()
            self._add(v, np.ones_like(v))

    def _add(self, v: np.ndarray, w: np.ndarray) -> None:
        if not np.all(np.isfinite(v) & (v >= 0.0)):
            bad = v[~(np.isfinite(v) & (v >= 0.0))][0]
            raise ValueError(f"histogram values must be finite and >= 0, got {bad}")
        kept = w > 0.0
        if not kept.all():
            v, w = v[kept], w[kept]
        if v.size == 0:
            return
        self._weight += float(w.sum())
        self._sum += float(np.dot(v, w))
        self._min = min(self._min, float(v.min()))
        self._max = max(self._max, float(v.max()))
        small = v < self.min_value
        if small.any():
            self._zero += float(w[small].sum())
            v, w = v[~small], w[~small]
        if v.size == 0:
            return
        index = np.floor((np.log(v) - self._log_min) / self._log_gamma).astype(np.intp)
        np.maximum(index, 0, out=index)
        counts = np.bincount(index, weights=w)
        self._grow(counts.size)
        self._counts[: counts.size] += counts

    def _grow(self, size: int) -> None:
        if size > self._counts.size:
            grown = np.zeros(size)
            grown[: self._counts.size] = self._counts
            self._counts = grown

    # -- reading -------------------------------------------------------------------------------

    @property
    def count(self) -> float:
        """Total weight recorded (the number of samples when unweighted)."""
        self._flush()
        return self._weight

    @property
    def mean(self) -> float:
        """Exact weighted mean; nan when empty."""
        self._flush()
        return self._sum / self._weight if self._weight > 0.0 else math.nan

    @property
    def min(self) -> float:
        """Exact smallest sample; nan when empty."""
        self._flush()
        return self._min if self._weight > 0.0 else math.nan

    @property
    def max(self) -> float:
        """Exact largest sample; nan when empty."""
        self._flush()
        return self._max if self._weight > 0.0 else math.nan

    @property
    def bucket_count(self) -> int:
        """Buckets allocated: the memory the histogram holds, whatever the number of samples."""
        self._flush()
        return int(self._counts.size) + 1

    def _table(self) -> tuple[np.ndarray, np.ndarray]:
        """(representative value, count) of every non-empty bucket, ascending."""
        self._flush()
        nonzero = np.flatnonzero(self._counts)
        low = np.exp(self._log_min + nonzero * self._log_gamma)
        values = np.concatenate(([0.0], 2.0 * low * self._gamma / (1.0 + self._gamma)))
        counts = np.concatenate(([self._zero], self._counts[nonzero]))
        if self._zero == 0.0:
            values, counts = values[1:], counts[1:]
        return np.clip(values, self._min, self._max), counts

    def quantile(self, q: float) -> float:
        """Value at quantile q in [0, 1], within rel_error of numpy's; nan when empty."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile must be in [0, 1], got {q}")
        values, counts = self._table()
        if values.size == 0:
            return math.nan
        cumulative = np.cumsum(counts)
        rank = q * max(self._weight - 1.0, 0.0)
        below = math.floor(rank)
        last = values.size - 1
        lo = min(int(np.searchsorted(cumulative, below, side="right")), last)
        hi = min(int(np.searchsorted(cumulative, below + 1, side="right")), last)
        fraction = rank - below
        return float(values[lo] + fraction * (values[hi] - values[lo]))

    def summary(self) -> dict[str, float]:
        """{"p50","p95","p99","max","mean","count"}; all 0.0 when empty."""
        if self.count == 0.0:
            return {"p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0, "mean": 0.0, "count": 0.0}
        return {
            "p50": self.quantile(0.50),
            "p95": self.quantile(0.95),
            "p99": self.quantile(0.99),
            "max": self.max,
            "mean": self.mean,
            "count": self.count,
        }

    def cdf(self, points: int = 200) -> tuple[list[float], list[float]]:
        """At most `points` (value, fraction of samples <= value) pairs, ascending, for plotting."""
        if points < 2:
            raise ValueError(f"points must be >= 2, got {points}")
        values, counts = self._table()
        if values.size == 0:
            return [], []
        fractions = np.cumsum(counts) / self._weight
        if values.size > points:
            keep = np.unique(np.linspace(0, values.size - 1, points).round().astype(np.intp))
            values, fractions = values[keep], fractions[keep]
        return [float(x) for x in values], [float(p) for p in fractions]


def time_bins(duration_s: float) -> tuple[float, int]:
    """(bin width, number of bins) of a run's time series."""
    bin_s = choose_bin_s(duration_s)
    return bin_s, max(1, math.ceil(duration_s / bin_s))


def choose_bin_s(duration_s: float, max_bins: int = 2000) -> float:
    """The smallest "nice" bin (1, 2, 5, 10, 20, ... s) that splits duration_s into <= max_bins."""
    if not (duration_s > 0.0 and math.isfinite(duration_s)):
        raise ValueError(f"duration_s must be a positive number, got {duration_s}")
    if max_bins < 1:
        raise ValueError(f"max_bins must be >= 1, got {max_bins}")
    decade = 1.0
    while True:
        for step in _NICE_STEPS:
            bin_s = step * decade
            if math.ceil(duration_s / bin_s) <= max_bins:
                return bin_s
        decade *= 10.0


def _bins(duration_s: float, bin_s: float) -> int:
    if not (duration_s > 0.0 and math.isfinite(duration_s)):
        raise ValueError(f"duration_s must be a positive number, got {duration_s}")
    if not (bin_s > 0.0 and math.isfinite(bin_s)):
        raise ValueError(f"bin_s must be a positive number, got {bin_s}")
    return max(1, math.ceil(duration_s / bin_s))


class TimeSeries:
    """Sum of a quantity per fixed time bin over [0, duration_s).

    Amounts at or after duration_s count in the last bin, so the total is always kept.
    """

    def __init__(self, duration_s: float, bin_s: float) -> None:
        n = _bins(duration_s, bin_s)
        self.duration_s = duration_s
        self.bin_s = bin_s
        """Width of every bin."""
        self.t_s = np.arange(n) * bin_s
        """Start of each bin."""
        self._points = [0.0] * n
        self._spans = np.zeros(n)
        self._last = n - 1

    def add(self, t_s: float, amount: float) -> None:
        """Add `amount` to the bin holding instant t_s (>= 0)."""
        if t_s < 0.0:
            raise ValueError(f"time must be >= 0, got {t_s}")
        i = int(t_s / self.bin_s)
        self._points[i if i < self._last else self._last] += amount

    def add_span(self, start_s: float, end_s: float, amount: float) -> None:
        """Spread `amount` uniformly over [start_s, end_s); a zero-length span acts like add."""
        if start_s < 0.0 or end_s < start_s:
            raise ValueError(f"span must satisfy 0 <= start <= end, got [{start_s}, {end_s})")
        if end_s == start_s:
            self.add(start_s, amount)
            return
        first = min(int(start_s / self.bin_s), self._last)
        last = min(int(end_s / self.bin_s), self._last)
        edges = np.arange(first, last + 2) * self.bin_s
        edges[-1] = math.inf  # the last bin touched takes everything up to the end of the span
        covered = np.clip((edges - start_s) / (end_s - start_s), 0.0, 1.0)
        self._spans[first : last + 1] += amount * np.diff(covered)

    @property
    def values(self) -> np.ndarray:
        """Sum per bin."""
        return np.asarray(self._points) + self._spans

    def rate(self) -> np.ndarray:
        """Sum per bin divided by the bin width (amount per second)."""
        return self.values / self.bin_s


class Gauge:
    """A level that changes at instants (e.g. viewers watching): per-bin max and time-weighted mean.

    The level starts at 0 at t = 0; time is counted over [0, duration_s) only.
    """

    def __init__(self, duration_s: float, bin_s: float) -> None:
        n = _bins(duration_s, bin_s)
        self.duration_s = duration_s
        self.bin_s = bin_s
        """Width of every bin."""
        self.t_s = np.arange(n) * bin_s
        """Start of each bin."""
        self.level = 0.0
        """Current level."""
        self.peak = 0.0
        """Highest level reached so far."""
        self.integral = 0.0
        """Level-seconds accumulated up to the last change (or finish)."""
        self.bin_max = np.zeros(n)
        """Highest level seen in each bin (0 for bins not reached yet)."""
        self._bin_integral = np.zeros(n)
        self._width = np.minimum(bin_s, duration_s - self.t_s)
        self._now = 0.0
        self._last = n - 1

    def change(self, t_s: float, delta: float) -> None:
        """At instant t_s (never before the previous one) the level moves by delta."""
        self._advance(t_s)
        self.level += delta
        if self.level > self.peak:
            self.peak = self.level
        i = min(int(self._now / self.bin_s), self._last)
        if self.level > self.bin_max[i]:
            self.bin_max[i] = self.level

    def finish(self, t_s: float) -> None:
        """Close the interval held since the last change, up to t_s."""
        self._advance(t_s)

    def _advance(self, t_s: float) -> None:
        if t_s < self._now:
            raise ValueError(f"gauge changes must come in time order: {t_s} after {self._now}")
        end = min(t_s, self.duration_s)
        start = self._now
        self._now = max(start, end)
        if end <= start:
            return
        level = self.level
        self.integral += level * (end - start)
        first = min(int(start / self.bin_s), self._last)
        last = min(int(end / self.bin_s), self._last)
        if end == self.t_s[last] and last > first:
            last -= 1  # [start, end) does not reach into the bin that starts at end
        if first == last:
            self._bin_integral[first] += level * (end - start)
            if level > self.bin_max[first]:
                self.bin_max[first] = level
            return
        lows = np.maximum(self.t_s[first : last + 1], start)
        highs = np.minimum(self.t_s[first : last + 1] + self.bin_s, end)
        self._bin_integral[first : last + 1] += level * (highs - lows)
        np.maximum(self.bin_max[first : last + 1], level, out=self.bin_max[first : last + 1])

    @property
    def bin_mean(self) -> np.ndarray:
        """Time-weighted mean level per bin (call finish first: time not reached counts as 0)."""
        return self._bin_integral / self._width


def ks_distance(a: Histogram, b: Histogram) -> float:
    """Largest gap between the CDFs of two histograms of the same resolution (0 to 1).

    Compared at bucket boundaries, so it is the two-sample Kolmogorov-Smirnov statistic of the
    bucketed samples; an empty histogram is at distance 1 from a non-empty one.
    """
    if a.rel_error != b.rel_error or a.min_value != b.min_value:
        raise ValueError("ks_distance needs histograms of the same resolution")
    if a.count == 0.0 or b.count == 0.0:
        return 0.0 if a.count == b.count else 1.0
    size = max(a._counts.size, b._counts.size)
    cdfs = []
    for h in (a, b):
        counts = np.zeros(size + 1)
        counts[0] = h._zero
        counts[1 : h._counts.size + 1] = h._counts
        cdfs.append(np.cumsum(counts) / h._weight)
    return float(np.abs(cdfs[0] - cdfs[1]).max())
