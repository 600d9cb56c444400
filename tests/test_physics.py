"""Latency physics the engine must respect (constant RTT, no congestion unless stated)."""

from __future__ import annotations

from tests.conftest import run


def replay_p50(*overrides: str) -> float:
    return float(run(*overrides)["latency_s"]["replay"]["p50"])


def test_classic_hls_latency_sits_in_the_hold_back_band() -> None:
    # HOLD-BACK >= 3 target durations: 6 s segments mean 18-30 s (RFC 8216bis, FACTS.md).
    p50 = replay_p50("stream.protocol=hls", "stream.segment_s=6", "scenario.duration_s=180")
    assert 3 * 6.0 <= p50 <= 30.0


def test_ll_hls_with_third_of_a_second_parts_is_under_two_and_a_half_seconds() -> None:
    p50 = replay_p50()
    assert p50 < 2.5
    # and it cannot beat its own hold-back: 3 parts plus the part being captured.
    assert p50 >= 3 * 0.333


def test_push_delivery_is_faster_than_ll_hls() -> None:
    push = replay_p50("stream.protocol=http-flv")
    ll_hls = replay_p50()
    assert push < ll_hls


def test_adding_rtt_adds_at_least_that_much_latency() -> None:
    near = replay_p50("tier.edge.rtt_ms=20")
    far = replay_p50("tier.edge.rtt_ms=320")
    assert far - near >= 0.300


def test_hls_latency_grows_with_segment_length() -> None:
    short = replay_p50("stream.protocol=hls", "stream.segment_s=2", "scenario.duration_s=120")
    long = replay_p50("stream.protocol=hls", "stream.segment_s=6", "scenario.duration_s=120")
    assert long > short + 3 * (6 - 2) * 0.8


def test_a_weak_host_uplink_stalls_the_stream_for_everyone() -> None:
    healthy = run("hosts.uplink_mbps=20")
    # The top rendition (2.5 Mbit/s) no longer fits the uplink: publishing falls behind.
    starved = run("hosts.uplink_mbps=2")
    assert starved["rebuffer_ratio"] > 0.05
    assert starved["latency_s"]["replay"]["p99"] > healthy["latency_s"]["replay"]["p99"] + 5.0
