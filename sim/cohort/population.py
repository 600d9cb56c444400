"""How the cohort engine groups viewers, streams and edges.

Viewers are told apart only by what changes their delivery: their access-rate class (which sets
link time and the rendition ABR settles on), the popularity band of the stream they watch (how
many viewers share one stream on one edge, hence coalescing, bursts and cold caches) and the
group of edges they sit on (edges hit by the same faults behave alike). Everything else about a
viewer (round trip, phase against the part clock) is a per-viewer spread carried by kernels.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from sim.scenario import Scenario

_RATE_SAMPLES = 65_536


@dataclass(frozen=True)
class RateClasses:
    """Viewers split into classes by access rate."""

    rate_bps: np.ndarray
    """A representative rate per class (the class's median)."""
    share: np.ndarray
    """Share of viewers in each class."""
    samples_bps: np.ndarray
    """Shape (classes, n): rates drawn within each class, for per-viewer spread."""


def rate_classes(
    scenario: Scenario, n_classes: int, rng: np.random.Generator, thresholds_bps: np.ndarray
) -> RateClasses:
    """`n_classes` equally likely classes, also cut at `thresholds_bps` (where players switch
    renditions) so that every viewer of a class settles on the same rendition."""
    rates = np.sort(scenario.audience.last_mile_mbps.sample(rng, _RATE_SAMPLES) * 1e6)
    cuts = np.linspace(0, rates.size, n_classes + 1).round().astype(np.intp)
    at_thresholds = np.searchsorted(rates, thresholds_bps)
    cuts = np.unique(np.concatenate((cuts, at_thresholds)))
    cuts = cuts[(cuts >= 0) & (cuts <= rates.size)]
    slices = [rates[a:b] for a, b in pairwise(cuts) if b > a]
    per_class = 2048
    samples = np.stack([rng.choice(part, per_class) for part in slices])
    return RateClasses(
        rate_bps=np.array([np.median(part) for part in slices]),
        share=np.array([part.size for part in slices], dtype=float) / rates.size,
        samples_bps=samples,
    )


@dataclass(frozen=True)
class StreamBands:
    """Streams grouped by popularity rank (and by which origin outages hit them)."""

    streams: np.ndarray
    """Streams in each band."""
    share: np.ndarray
    """Share of the audience watching a stream of each band."""
    origin_down: np.ndarray
    """Shape (bands, faults): whether the band's streams sit on an origin node of each
    origin-down fault (a band is split so that this is all or nothing)."""
    band_of: np.ndarray
    """The band of each stream."""


def stream_bands(scenario: Scenario, max_bands: int) -> StreamBands:
    """Geometric rank bands (1, 2, 3-4, 5-9, ...) so a Zipf head keeps its own bands."""
    n = scenario.hosts.count
    weights = scenario.hosts.popularity.weights(n)
    bounds = np.unique(np.round(np.geomspace(1, n, max_bands)).astype(int))
    band_of = np.searchsorted(bounds, np.arange(1, n + 1), side="left")
    origin_nodes = scenario.tiers[0].nodes
    outages = [f for f in scenario.faults if f.kind == "origin-down"]
    hit = np.array([np.arange(n) % origin_nodes < f.count for f in outages], dtype=bool).reshape(
        len(outages), n
    )
    # One band per distinct (rank band, outage signature).
    signature = np.concatenate((band_of[None, :], hit.astype(int)), axis=0)
    keys, inverse = np.unique(signature, axis=1, return_inverse=True)
    inverse = inverse.ravel()
    return StreamBands(
        streams=np.bincount(inverse, minlength=keys.shape[1]).astype(float),
        share=np.bincount(inverse, weights=weights, minlength=keys.shape[1]),
        origin_down=keys[1:, :].T.astype(bool),
        band_of=inverse,
    )


@dataclass(frozen=True)
class EdgeGroups:
    """Edges grouped by the faults that hit them."""

    nodes: np.ndarray
    """Edges in each group."""
    faults: np.ndarray
    """Shape (groups, faults): whether each fault of the scenario hits the group."""


def edge_groups(scenario: Scenario, rng: np.random.Generator) -> EdgeGroups:
    """Draw which edges each edge-tier fault hits (like the exact engine) and group them."""
    edge = scenario.tiers[-1]
    hit = np.zeros((len(scenario.faults), edge.nodes), dtype=bool)
    for i, fault in enumerate(scenario.faults):
        if fault.kind != "origin-down" and fault.tier == edge.name:
            hit[i, rng.choice(edge.nodes, fault.count, replace=False)] = True
    keys, inverse = np.unique(hit, axis=1, return_inverse=True)
    return EdgeGroups(
        nodes=np.bincount(inverse.ravel(), minlength=keys.shape[1]).astype(float),
        faults=keys.T.astype(bool),
    )
