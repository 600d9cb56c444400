"""What an engine hands back from one replication, before it becomes a Result.

Engine-neutral on purpose: the exact engine fills it today, the cohort engine and the real relay
later, and `sim.results` turns any of them into result.json.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sim.metrics import Histogram


@dataclass
class TierMeasurements:
    name: str
    nodes: int
    capacity_gbps: float
    """Egress capacity of the whole tier."""
    egress_bits: np.ndarray
    """Bits sent by the tier per time bin."""
    fetched_bits: np.ndarray
    """Bits arriving at the tier's nodes from the parent tier per time bin (by arrival time);
    all zeros for the first tier, which gets its media from the hosts."""
    requests: np.ndarray
    """Requests handled by the tier per time bin."""
    peak_node_utilization: float
    """Busiest node-bin: bits sent over what its link could send in the bin."""
    cache_requests: int
    fetches: int
    """Upstream fetches the tier's nodes started."""


@dataclass
class Measurements:
    sim_time_s: float
    bin_s: float
    replay: Histogram
    """Capture at the host to playback at the viewer, one sample per media unit played."""
    join: Histogram
    """Arrival to first frame on screen, one sample per session that started playing."""
    stall_s: float
    """Viewer-seconds spent rebuffering after playback started."""
    watched_s: float
    """Viewer-seconds from first frame to leaving (or the end of the run)."""
    rebuffer_s: np.ndarray
    """Rebuffering viewer-seconds per time bin."""
    peak_viewers: int
    sessions: int
    viewers: np.ndarray
    """Viewers watching at the start of each time bin."""
    tiers: list[TierMeasurements]
    sale_audiences: list[np.ndarray]
    """Per [[sale]]: replay latency of each viewer playing when the host announced it."""
    lottery_audiences: list[np.ndarray]
    """Per [[lottery]]: the same, when the host called it."""


def viewer_curve(
    at_s: np.ndarray, end_s: np.ndarray, bin_s: float, n_bins: int
) -> tuple[int, np.ndarray]:
    """(peak concurrent viewers, viewers at each bin start) from session intervals."""
    starts = np.sort(at_s)
    ends = np.sort(end_s)
    t = np.arange(n_bins) * bin_s
    curve = np.searchsorted(starts, t, side="right") - np.searchsorted(ends, t, side="right")
    # The level only rises at arrivals: the peak is the maximum just after one of them.
    after_arrival = np.arange(1, starts.size + 1) - np.searchsorted(ends, starts, side="right")
    peak = int(after_arrival.max(initial=0))
    return peak, curve.astype(float)


def merge_replications(runs: list[Measurements]) -> Measurements:
    """Pool replications: histograms and totals add up, curves and peaks are averaged."""
    first = runs[0]
    if len(runs) == 1:
        return first
    replay, join = Histogram(), Histogram()
    for m in runs:
        replay.merge(m.replay)
        join.merge(m.join)
    n = len(runs)
    tiers = []
    for i, t in enumerate(first.tiers):
        same = [m.tiers[i] for m in runs]
        tiers.append(
            TierMeasurements(
                name=t.name,
                nodes=t.nodes,
                capacity_gbps=t.capacity_gbps,
                egress_bits=sum((s.egress_bits for s in same), np.zeros_like(t.egress_bits)) / n,
                fetched_bits=sum((s.fetched_bits for s in same), np.zeros_like(t.fetched_bits)) / n,
                requests=sum((s.requests for s in same), np.zeros_like(t.requests)) / n,
                peak_node_utilization=float(np.mean([s.peak_node_utilization for s in same])),
                cache_requests=sum(s.cache_requests for s in same),
                fetches=sum(s.fetches for s in same),
            )
        )
    return Measurements(
        sim_time_s=first.sim_time_s,
        bin_s=first.bin_s,
        replay=replay,
        join=join,
        stall_s=sum(m.stall_s for m in runs),
        watched_s=sum(m.watched_s for m in runs),
        rebuffer_s=sum((m.rebuffer_s for m in runs), np.zeros_like(first.rebuffer_s)) / n,
        peak_viewers=round(np.mean([m.peak_viewers for m in runs])),
        sessions=round(np.mean([m.sessions for m in runs])),
        viewers=sum((m.viewers for m in runs), np.zeros_like(first.viewers)) / n,
        tiers=tiers,
        sale_audiences=first.sale_audiences,
        lottery_audiences=first.lottery_audiences,
    )


PEAK_WINDOW_S = 10.0
PEAK_WINDOW_UNITS = 10
"""Peak rates are taken over windows of 10 s or 10 media units, whichever is longer: capacity
is planned on sustained load, and a window of many units does not depend on where within a
unit an engine places a transfer."""


def peak_window_s(unit_s: float) -> float:
    return max(PEAK_WINDOW_S, PEAK_WINDOW_UNITS * unit_s)


def peak_rate(per_bin: np.ndarray, bin_s: float, window_s: float) -> float:
    """Highest rate (amount per second) averaged over `window_s` (at least one bin)."""
    if per_bin.size == 0:
        return 0.0
    n = max(1, min(per_bin.size, round(window_s / bin_s)))
    sums = np.convolve(per_bin, np.ones(n), mode="valid")
    return float(sums.max() / (n * bin_s))
