"""LiveStream: the origin's window of segments and parts."""

from __future__ import annotations

from typing import Any

import pytest

from relay.core.stream import LiveStream


def ll_stream(window_segments: int = 3) -> LiveStream:
    return LiveStream(
        "demo", target_duration_s=2.0, part_target_s=0.5, window_segments=window_segments
    )


def publish_segments(stream: LiveStream, count: int, parts: int = 4, now: float = 0.0) -> float:
    for _ in range(count):
        for i in range(parts):
            stream.add_part(0.5, independent=i == 0, now=now)
            now += 0.5
        stream.close_segment(now)
    return now


def test_parts_get_numbered_within_the_open_segment() -> None:
    stream = ll_stream()
    first = stream.add_part(0.5, independent=True, now=1.0)
    second = stream.add_part(0.25, independent=False, now=1.5)
    assert (first.msn, first.index, first.uri) == (0, 0, "seg0.part0.m4s")
    assert (second.msn, second.index, second.published_s) == (0, 1, 1.5)
    assert stream.next_msn == 0
    assert stream.next_part_index == 2
    assert list(stream.open_parts()) == [first, second]


def test_close_segment_sums_its_parts_and_opens_the_next() -> None:
    stream = ll_stream()
    parts = [stream.add_part(d, independent=True, now=0.0) for d in (0.5, 0.5, 0.4)]
    segment = stream.close_segment(now=2.0)
    assert segment.msn == 0
    assert segment.uri == "seg0.m4s"
    assert segment.duration_s == pytest.approx(1.4)
    assert segment.parts == tuple(parts)
    assert segment.published_s == 2.0
    assert (stream.next_msn, stream.next_part_index) == (1, 0)
    assert stream.open_parts() == ()
    assert stream.has_segment(0)
    assert not stream.has_segment(1)


def test_window_slides_and_media_sequence_advances() -> None:
    stream = ll_stream(window_segments=3)
    assert stream.first_msn == 0
    publish_segments(stream, 5)
    assert [s.msn for s in stream.segments()] == [2, 3, 4]
    assert stream.first_msn == 2
    assert stream.has_segment(0), "a segment that slid out was still published"
    assert not stream.has_segment(5)


def test_a_part_longer_than_part_target_is_refused() -> None:
    stream = ll_stream()
    stream.add_part(0.5 + 1e-12, independent=True, now=0.0)  # float noise is tolerated
    with pytest.raises(ValueError, match="part_target_s"):
        stream.add_part(0.51, independent=True, now=0.0)
    with pytest.raises(ValueError, match="duration_s"):
        stream.add_part(0.0, independent=True, now=0.0)


def test_parts_and_whole_segments_do_not_mix() -> None:
    classic = LiveStream("c", target_duration_s=6.0, part_target_s=None)
    with pytest.raises(ValueError, match="add_segment"):
        classic.add_part(0.5, independent=True, now=0.0)
    with pytest.raises(ValueError, match="add_segment"):
        classic.close_segment(now=0.0)
    with pytest.raises(ValueError, match="add_part"):
        ll_stream().add_segment(2.0, now=0.0)


def test_closing_an_empty_segment_is_refused() -> None:
    with pytest.raises(ValueError, match="no parts"):
        ll_stream().close_segment(now=0.0)


def test_end_completes_the_open_segment_and_freezes_the_stream() -> None:
    stream = ll_stream()
    stream.add_part(0.5, independent=True, now=0.0)
    stream.end(now=0.5)
    stream.end(now=0.6)  # idempotent
    assert stream.ended
    assert [s.msn for s in stream.segments()] == [0]
    assert stream.open_parts() == ()
    with pytest.raises(ValueError, match="ended"):
        stream.add_part(0.5, independent=True, now=1.0)


def test_classic_stream_takes_whole_segments() -> None:
    stream = LiveStream("c", target_duration_s=6.0, part_target_s=None, window_segments=2)
    for i in range(3):
        segment = stream.add_segment(6.0, now=6.0 * i)
        assert segment.parts == ()
    assert [s.msn for s in stream.segments()] == [1, 2]
    assert stream.next_msn == 3
    assert not stream.has_part(2, 0), "a classic stream has no parts"


def test_declared_target_rounds_up_and_never_shrinks() -> None:
    stream = LiveStream("c", target_duration_s=1.5, part_target_s=None, window_segments=1)
    assert stream.declared_target_s == 2
    stream.add_segment(3.2, now=0.0)
    assert stream.declared_target_s == 4
    stream.add_segment(1.0, now=1.0)  # the long segment slid out; the target stays
    assert stream.declared_target_s == 4


def test_declared_target_ignores_float_noise_of_summed_parts() -> None:
    stream = LiveStream("p", target_duration_s=2.0, part_target_s=1 / 3)
    for _ in range(6):
        stream.add_part(1 / 3, independent=True, now=0.0)
    stream.close_segment(now=2.0)
    assert stream.declared_target_s == 2


def test_has_part_follows_the_part_past_end_rule() -> None:
    stream = ll_stream(window_segments=2)
    publish_segments(stream, 3)  # segments 0..2 of 4 parts each; open segment 3 is empty
    assert stream.has_part(2, 3)
    assert not stream.has_part(2, 4), "past the end of segment 2 means part 0 of segment 3"
    assert not stream.has_part(2, 99)
    assert stream.has_part(1, 4), "part 0 of segment 2 exists"
    assert stream.has_part(0, 7), "a segment that slid out: later media exists"
    stream.add_part(0.5, independent=True, now=6.0)
    assert stream.has_part(2, 4)
    assert stream.has_part(3, 0)
    assert not stream.has_part(3, 1)
    assert not stream.has_part(4, 0)
    assert not stream.has_part(-1, 0)
    assert not stream.has_part(3, -1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target_duration_s": 0.0, "part_target_s": None}, "target_duration_s"),
        ({"target_duration_s": 2.0, "part_target_s": 0.0}, "part_target_s"),
        ({"target_duration_s": 2.0, "part_target_s": 3.0}, "part_target_s"),
        ({"target_duration_s": 2.0, "part_target_s": 0.5, "window_segments": 0}, "window"),
    ],
)
def test_bad_configuration_is_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LiveStream("bad", **kwargs)


def test_drop_through_removes_complete_segments_up_to_msn_only() -> None:
    stream = LiveStream("s", target_duration_s=2.0, part_target_s=1.0)
    for k in range(3):
        stream.add_part(1.0, independent=True, now=float(k))
        stream.add_part(1.0, independent=False, now=float(k) + 0.5)
        stream.close_segment(now=float(k) + 1)
    stream.add_part(1.0, independent=True, now=10.0)
    assert stream.drop_through(1) == 2
    assert [s.msn for s in stream.segments()] == [2]
    assert stream.first_msn == 2
    assert len(stream.open_parts()) == 1
    assert stream.drop_through(5) == 1
    assert stream.segments() == ()
    assert stream.first_msn == stream.next_msn == 3
