"""The lean push client reads what the edge sends: joins, part boundaries and capture stamps."""

from __future__ import annotations

import time

import pytest

from relay.core.fmp4_writer import fragment, grey_picture, init_segment
from relay.load.push_probe import ProbeStats, PushProbe

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: video/mp4\r\ntransfer-encoding: chunked\r\n\r\n"


def push_response(subscribed_s: float, offsets_s: list[float]) -> bytes:
    """A push response: init, then one part captured at each offset from `subscribed_s`."""
    pictures = [grey_picture(64, 64, 3000, idr_pic_id=i) for i in (0, 1)]
    parts = [
        fragment(n + 1, n * 3000, [3000] * 3, [pictures[i % 2] for i in range(3)],
                 independent=n == 0, capture_s=subscribed_s + offset_s)
        for n, offset_s in enumerate(offsets_s)
    ]  # fmt: skip
    chunks = [init_segment(90_000, 64, 64), *parts]
    body = b"".join(b"%x;x=1\r\n" % len(c) + c + b"\r\n" for c in chunks)
    return HEAD + body + b"0\r\n\r\n"


def feed(probe: PushProbe, data: bytes, read_bytes: int) -> None:
    """Hand `data` to the probe as reads of at most `read_bytes`, as the event loop would."""
    buffer = probe.stats.buffer
    for at in range(0, len(data), read_bytes):
        piece = data[at : at + read_bytes]
        buffer[: len(piece)] = piece
        probe.buffer_updated(len(piece))


@pytest.mark.parametrize("read_bytes", [1, 2, 7, 100, 4096, 1 << 20])
def test_counts_parts_and_delays_whatever_the_read_sizes(read_bytes: int) -> None:
    stats = ProbeStats(measuring=True)
    probe = PushProbe(stats, b"")
    probe.subscribed_s = time.time() - 1.0
    # One catch-up part captured before the subscription, then three live ones.
    feed(probe, push_response(probe.subscribed_s, [-5.0, 0.2, 0.3, 0.4]), read_bytes)
    assert (stats.connected, stats.joined, stats.parts) == (1, 1, 3)
    fed_s = time.time() - probe.subscribed_s - 1.0
    assert 0.6 <= stats.delay_quantile_s(0.0) <= stats.max_delay_s <= 0.8 + fed_s
    assert stats.errors == {"stream ended": 1}  # the 0-size chunk ends the viewer's stream


def test_parts_before_measuring_are_not_counted() -> None:
    stats = ProbeStats()
    probe = PushProbe(stats, b"")
    probe.subscribed_s = time.time() - 1.0
    feed(probe, push_response(probe.subscribed_s, [0.2, 0.3]), 4096)
    assert stats.joined == 1 and stats.parts == 0 and stats.delay_quantile_s(0.5) is None


def test_a_refusal_counts_as_refused_not_joined() -> None:
    stats = ProbeStats(measuring=True)
    refusal = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 2\r\n\r\n{}"
    feed(PushProbe(stats, b""), refusal, 64)
    assert (stats.refused, stats.connected, stats.joined) == (1, 0, 0)
    assert stats.errors == {"answered 503": 1}


def test_a_broken_stream_drops_the_viewer() -> None:
    stats = ProbeStats(measuring=True)
    bad_box = b"\x00\x00\x00\x04moof"  # a size smaller than its own header
    feed(PushProbe(stats, b""), HEAD + b"8\r\n" + bad_box + b"\r\n", 64)
    assert stats.dropped == 1 and stats.joined == 0
