"""Histograms, time series and gauges hold what a run measures, in bounded memory."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim.metrics import Gauge, Histogram, TimeSeries, choose_bin_s

QUANTILES = (0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0)
FLOAT_SLACK = 1e-9
"""Rounding at bucket boundaries may cost a hair more than rel_error."""


def draw(kind: str, size: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "lognormal":
        return rng.lognormal(mean=0.0, sigma=1.5, size=size)
    if kind == "exponential":
        return rng.exponential(0.8, size=size)
    return rng.uniform(0.2, 3.0, size=size)


def assert_close_quantiles(h: Histogram, samples: np.ndarray) -> None:
    for q in QUANTILES:
        exact = float(np.quantile(samples, q))
        assert abs(h.quantile(q) - exact) <= (h.rel_error + FLOAT_SLACK) * exact, q


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    size=st.integers(1, 20_000),
    kind=st.sampled_from(["lognormal", "exponential", "uniform"]),
)
def test_quantiles_within_one_percent_of_numpy(seed: int, size: int, kind: str) -> None:
    samples = draw(kind, size, np.random.default_rng(seed))
    h = Histogram(rel_error=0.01)
    for x in samples:
        h.record(float(x))
    assert_close_quantiles(h, samples)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), size=st.integers(2, 5_000))
def test_a_coarser_histogram_keeps_its_own_bound(seed: int, size: int) -> None:
    samples = draw("lognormal", size, np.random.default_rng(seed))
    h = Histogram(rel_error=0.05)
    h.record_many(samples)
    assert_close_quantiles(h, samples)


def test_count_mean_min_max_are_exact() -> None:
    samples = np.random.default_rng(3).exponential(1.0, 10_001)
    h = Histogram()
    for x in samples:
        h.record(float(x))
    assert h.count == samples.size
    assert h.mean == pytest.approx(samples.mean(), rel=1e-12)
    assert h.min == samples.min()
    assert h.max == samples.max()
    summary = h.summary()
    assert set(summary) == {"p50", "p95", "p99", "max", "mean", "count"}
    assert summary["max"] == samples.max()
    assert summary["count"] == samples.size
    assert summary["p99"] == pytest.approx(np.quantile(samples, 0.99), rel=0.01)


def test_weighted_record_many_equals_repeated_record() -> None:
    rng = np.random.default_rng(11)
    values = rng.lognormal(0.0, 1.0, 300)
    weights = rng.integers(0, 20, 300)
    weighted = Histogram()
    weighted.record_many(values, weights)
    repeated = Histogram()
    for v, w in zip(values, weights, strict=True):
        for _ in range(w):
            repeated.record(float(v))
    assert weighted.count == repeated.count == weights.sum()
    assert weighted.mean == pytest.approx(repeated.mean, rel=1e-12)
    assert weighted.max == repeated.max
    assert weighted.min == repeated.min
    for q in QUANTILES:
        assert weighted.quantile(q) == pytest.approx(repeated.quantile(q), rel=1e-12)
    assert weighted.cdf() == repeated.cdf()


def test_merge_equals_recording_everything_in_one() -> None:
    rng = np.random.default_rng(5)
    parts = [rng.lognormal(0.0, 1.0, n) for n in (1000, 7, 25_000)]
    parts.append(np.zeros(30))  # zero bucket
    merged = Histogram()
    for part in parts:
        h = Histogram()
        for x in part:
            h.record(float(x))
        merged.merge(h)
    whole = Histogram()
    whole.record_many(np.concatenate(parts))
    assert merged.count == whole.count
    assert merged.mean == pytest.approx(whole.mean, rel=1e-12)
    assert (merged.min, merged.max) == (whole.min, whole.max)
    for q in QUANTILES:
        assert merged.quantile(q) == pytest.approx(whole.quantile(q), rel=1e-12)


def test_merge_refuses_a_different_resolution() -> None:
    with pytest.raises(ValueError, match="rel_error"):
        Histogram(rel_error=0.01).merge(Histogram(rel_error=0.02))


def test_memory_stays_bounded_after_a_million_records() -> None:
    rng = np.random.default_rng(2)
    # Nine decades of values, from microseconds to a quarter hour.
    samples = 10.0 ** rng.uniform(-6.0, 3.0, 1_000_000)
    h = Histogram()
    record = h.record
    for x in samples.tolist():
        record(x)
    assert h.count == 1_000_000
    assert h.bucket_count < 1200
    before = h.bucket_count
    h.record_many(samples)
    assert h.bucket_count == before
    assert len(pickle.dumps(h)) < 64_000


def test_empty_histogram() -> None:
    h = Histogram()
    assert h.count == 0
    assert math.isnan(h.quantile(0.5))
    assert math.isnan(h.mean) and math.isnan(h.max) and math.isnan(h.min)
    assert h.summary() == {"p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0, "mean": 0.0, "count": 0}
    assert h.cdf() == ([], [])


def test_values_below_min_value_are_counted_as_zero() -> None:
    h = Histogram(min_value=1e-3)
    h.record_many([0.0] * 10 + [1e-4] * 10 + [2.0] * 10)
    assert h.count == 30
    assert h.quantile(0.0) == 0.0
    assert h.quantile(0.5) < 1e-3
    assert h.quantile(1.0) == 2.0


def test_bad_input_is_refused() -> None:
    h = Histogram()
    for bad in (-1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="finite and >= 0"):
            h.record_many([1.0, bad])
    h.record(-0.5)
    with pytest.raises(ValueError, match=r"-0\.5"):
        _ = h.count
    with pytest.raises(ValueError, match="weights"):
        Histogram().record_many([1.0], [-1.0])
    with pytest.raises(ValueError, match="quantile"):
        Histogram().quantile(1.5)
    with pytest.raises(ValueError):
        Histogram(rel_error=0.0)


def test_cdf_brackets_the_empirical_distribution() -> None:
    samples = np.sort(np.random.default_rng(8).lognormal(0.0, 2.0, 50_000))
    h = Histogram()
    h.record_many(samples)
    xs, ps = h.cdf(points=200)
    assert 2 <= len(xs) <= 200
    assert xs == sorted(xs) and ps == sorted(ps)
    assert ps[-1] == 1.0 and xs[-1] == samples[-1]
    e = h.rel_error
    for x, p in zip(xs, ps, strict=True):
        at_most = np.searchsorted(samples, x * (1 + FLOAT_SLACK), side="right") / samples.size
        slightly_above = np.searchsorted(samples, x / (1 - e) * (1 + FLOAT_SLACK), side="right")
        assert at_most <= p + 1e-12
        assert p <= slightly_above / samples.size + 1e-12


@pytest.mark.parametrize(
    ("duration_s", "expected"),
    [(0.5, 1.0), (180, 1.0), (2000, 1.0), (2001, 2.0), (3600, 2.0), (7200, 5.0), (86_400, 50.0)],
)
def test_choose_bin_s_is_the_smallest_nice_bin(duration_s: float, expected: float) -> None:
    assert choose_bin_s(duration_s) == expected
    assert math.ceil(duration_s / expected) <= 2000


def test_choose_bin_s_honours_max_bins() -> None:
    assert choose_bin_s(600, max_bins=10) == 100.0
    assert choose_bin_s(600, max_bins=600) == 1.0
    with pytest.raises(ValueError):
        choose_bin_s(0.0)


def test_time_series_sums_per_bin() -> None:
    ts = TimeSeries(duration_s=10.0, bin_s=2.0)
    assert ts.t_s.tolist() == [0.0, 2.0, 4.0, 6.0, 8.0]
    ts.add(0.0, 1.0)
    ts.add(1.99, 2.0)
    ts.add(2.0, 4.0)
    ts.add(10.0, 8.0)  # at the end: clipped into the last bin
    ts.add(55.0, 16.0)
    assert ts.values.tolist() == [3.0, 4.0, 0.0, 0.0, 24.0]
    assert ts.rate().tolist() == [1.5, 2.0, 0.0, 0.0, 12.0]
    with pytest.raises(ValueError):
        ts.add(-1.0, 1.0)


def test_time_series_spreads_a_span_uniformly() -> None:
    ts = TimeSeries(duration_s=10.0, bin_s=2.0)
    ts.add_span(1.0, 5.0, 8.0)  # 2 per second: 1 s in bin 0, 2 s in bin 1, 1 s in bin 2
    assert ts.values == pytest.approx([2.0, 4.0, 2.0, 0.0, 0.0])
    ts.add_span(9.0, 13.0, 4.0)  # runs past the end: the rest lands in the last bin
    assert ts.values == pytest.approx([2.0, 4.0, 2.0, 0.0, 4.0])
    ts.add_span(3.0, 3.0, 1.0)  # zero length: like add
    assert ts.values == pytest.approx([2.0, 5.0, 2.0, 0.0, 4.0])
    with pytest.raises(ValueError):
        ts.add_span(4.0, 3.0, 1.0)


def test_time_series_keeps_the_total() -> None:
    rng = np.random.default_rng(4)
    ts = TimeSeries(duration_s=100.0, bin_s=5.0)
    starts = rng.uniform(0, 120, 500)
    ends = starts + rng.exponential(10.0, 500)
    amounts = rng.uniform(0, 3, 500)
    for s, e, a in zip(starts, ends, amounts, strict=True):
        ts.add_span(float(s), float(e), float(a))
        ts.add(float(s), float(a))
    assert ts.values.sum() == pytest.approx(2 * amounts.sum(), rel=1e-12)


def sessions(rng: np.random.Generator, n: int) -> list[tuple[float, float]]:
    """(time, +1/-1) viewer arrivals and departures, in time order."""
    arrive = rng.uniform(0.0, 90.0, n)
    leave = arrive + rng.exponential(20.0, n)
    events = [(float(t), 1.0) for t in arrive] + [(float(t), -1.0) for t in leave]
    return sorted(events)


def test_gauge_integral_peak_and_bins_match_a_brute_force() -> None:
    duration_s, bin_s = 100.0, 7.0  # the last bin is 2 s wide
    events = sessions(np.random.default_rng(9), 200)
    g = Gauge(duration_s, bin_s)
    for t, d in events:
        g.change(t, d)
    g.finish(duration_s)

    times = np.array([0.0] + [t for t, _ in events])
    levels = np.concatenate(([0.0], np.cumsum([d for _, d in events])))
    held_until = np.minimum(np.append(times[1:], duration_s), duration_s)
    held_from = np.minimum(times, duration_s)
    assert g.integral == pytest.approx(float(np.sum(levels * (held_until - held_from))))
    assert g.peak == levels.max()
    assert g.level == levels[-1]

    starts = np.arange(0.0, duration_s, bin_s)
    widths = np.minimum(bin_s, duration_s - starts)
    expect_max = np.zeros(starts.size)
    expect_mean = np.zeros(starts.size)
    for i, (b0, w) in enumerate(zip(starts, widths, strict=True)):
        overlap = np.clip(np.minimum(held_until, b0 + w) - np.maximum(held_from, b0), 0.0, None)
        present = (overlap > 0) | ((held_from >= b0) & (held_from < b0 + w))
        expect_max[i] = levels[present].max(initial=0.0)
        expect_mean[i] = np.sum(levels * overlap) / w
    assert g.bin_max.tolist() == expect_max.tolist()
    assert g.bin_mean == pytest.approx(expect_mean)
    assert float(np.sum(g.bin_mean * widths)) == pytest.approx(g.integral)


def test_gauge_counts_a_level_reached_only_for_an_instant() -> None:
    g = Gauge(duration_s=10.0, bin_s=1.0)
    g.change(3.5, 5.0)
    g.change(3.5, -5.0)
    g.change(4.0, 2.0)
    g.finish(20.0)  # past the end: time is counted up to duration_s only
    assert g.peak == 5.0
    assert g.bin_max.tolist() == [0, 0, 0, 5, 2, 2, 2, 2, 2, 2]
    assert g.integral == pytest.approx(2.0 * 6.0)
    assert g.bin_mean.tolist() == pytest.approx([0, 0, 0, 0, 2, 2, 2, 2, 2, 2])


def test_gauge_refuses_time_going_backwards() -> None:
    g = Gauge(duration_s=10.0, bin_s=1.0)
    g.change(5.0, 1.0)
    with pytest.raises(ValueError, match="time order"):
        g.change(4.0, 1.0)
