"""Faults: failed edges push their viewers elsewhere, an origin outage stalls everyone."""

from __future__ import annotations

import numpy as np

from tests.conftest import run

STEADY = ("scenario.duration_s=120", "audience.peak_viewers=400", "tier.edge.nodes=4")


def rebuffer_series(result: dict) -> tuple[np.ndarray, np.ndarray]:
    series = result["series"]
    return np.array(series["t_s"]), np.array(series["rebuffering_s"])


def test_edge_down_viewers_reconnect_and_the_gap_counts_as_rebuffering() -> None:
    calm = run(*STEADY)
    fault = ("fault=[{at_s=60, kind='edge-down', count=2, duration_s=30}]", "player.reconnect_s=2")
    hit = run(*STEADY, *fault)
    assert calm["rebuffer_ratio"] < 1e-4
    assert hit["rebuffer_ratio"] > 10 * max(calm["rebuffer_ratio"], 1e-5)
    t, stalled = rebuffer_series(hit)
    # The stalls sit right after the failure, not before it and not for the rest of the run.
    assert stalled[t < 60].sum() == 0
    assert stalled[(t >= 60) & (t < 70)].sum() > 0.95 * stalled.sum()
    # About half the viewers were on the two failed edges; each stalls for about the
    # reconnect time less what its buffer covers.
    per_viewer = stalled.sum() / (0.5 * 400)
    assert 0.5 < per_viewer < 3.0
    # Viewers kept watching after it: the audience curve does not dip.
    viewers = np.array(hit["series"]["viewers"])
    assert viewers[(t >= 70) & (t < 90)].min() > 0.9 * viewers[(t >= 40) & (t < 60)].mean()


def test_origin_down_stalls_every_viewer_for_the_outage() -> None:
    fault = "fault=[{at_s=60, kind='origin-down', count=1, duration_s=10}]"
    result = run(*STEADY, fault)
    t, stalled = rebuffer_series(result)
    viewers = np.array(result["series"]["viewers"])
    outage_viewer_s = 10 * viewers[(t >= 55) & (t < 60)].mean()
    # Everyone waits for the outage, minus the hold-back buffer they had (about 1 s).
    assert 0.75 * outage_viewer_s < stalled.sum() < 1.05 * outage_viewer_s
    # Players do not skip ahead: the outage is added to their latency for the rest of the run.
    assert result["latency_s"]["replay"]["p95"] > 8.0


def test_link_degrade_congests_the_edges_for_its_duration() -> None:
    tight = ("stream.bitrates_kbps=[2500]", "tier.edge.egress_gbps=0.5")
    calm = run(*STEADY, *tight)
    fault = "fault=[{at_s=60, kind='link-degrade', count=4, duration_s=20, factor=0.2}]"
    hit = run(*STEADY, *tight, fault)
    assert calm["rebuffer_ratio"] < 1e-4
    t, stalled = rebuffer_series(hit)
    assert stalled.sum() > 0
    assert stalled[t < 60].sum() == 0
