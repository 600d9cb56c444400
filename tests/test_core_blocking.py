"""Blocking Playlist Reload decisions (RFC 8216bis 6.2.5.2)."""

from __future__ import annotations

import pytest

from relay.core.blocking import (
    Verdict,
    advance_part_limit,
    decide_reload,
    parse_reload_query,
)
from relay.core.stream import LiveStream

A, H, B, U = Verdict.ANSWER, Verdict.HOLD, Verdict.BAD_REQUEST, Verdict.UNAVAILABLE


def live(open_parts: int = 2) -> LiveStream:
    """Target 2 s, PART-TARGET 0.5 s (Advance Part Limit 6 parts), segments 0-4 of 4 parts."""
    stream = LiveStream("b", target_duration_s=2.0, part_target_s=0.5, window_segments=3)
    for _ in range(5):
        for i in range(4):
            stream.add_part(0.5, independent=i == 0, now=0.0)
        stream.close_segment(now=0.0)
    for _ in range(open_parts):
        stream.add_part(0.5, independent=False, now=0.0)
    return stream


@pytest.mark.parametrize(
    ("msn", "part", "expected"),
    [
        (None, None, A),  # no directives: a plain reload
        (None, 1, B),  # _HLS_part without _HLS_msn
        (-1, None, B),
        (3, -1, B),
        (4, None, A),  # the newest complete segment
        (0, None, A),  # slid out of the window: later segments exist
        (5, None, H),  # the open segment
        (7, None, H),  # two past the open segment
        (8, None, B),  # more than two past
        (5, 1, A),  # published part of the open segment
        (5, 2, H),  # the hinted next part
        (5, 7, H),  # 6 parts past the last published one: at the limit
        (5, 8, B),  # 7 parts past: beyond the Advance Part Limit
        (6, 5, H),  # a later segment: at least 6 parts ahead
        (6, 6, B),
        (4, 3, A),
        (4, 4, A),  # past the end of segment 4 = part 0 of segment 5, published
        (4, 40, A),
        (2, 9, A),
    ],
)
def test_live_stream_table(msn: int | None, part: int | None, expected: Verdict) -> None:
    decision = decide_reload(live(), msn, part, now=0.0)
    assert decision.verdict is expected
    assert bool(decision.reason) == (expected is B)


def test_part_past_the_end_waits_for_part_zero_of_the_next_segment() -> None:
    stream = live(open_parts=0)
    assert decide_reload(stream, 4, 3, now=0.0).verdict is A
    assert decide_reload(stream, 4, 4, now=0.0).verdict is H
    assert decide_reload(stream, 4, 9, now=0.0).verdict is H
    stream.add_part(0.5, independent=True, now=0.1)
    assert decide_reload(stream, 4, 4, now=0.1).verdict is A


def test_held_request_is_answered_when_its_part_is_published() -> None:
    stream = live()
    held_since = 10.0
    assert decide_reload(stream, 5, 2, now=10.0, held_since=held_since).verdict is H
    stream.add_part(0.5, independent=False, now=10.4)
    assert decide_reload(stream, 5, 2, now=10.4, held_since=held_since).verdict is A


def test_held_request_is_answered_when_its_segment_completes() -> None:
    stream = live()
    assert decide_reload(stream, 5, None, now=0.0, held_since=0.0).verdict is H
    stream.add_part(0.5, independent=False, now=0.5)
    assert decide_reload(stream, 5, None, now=0.5, held_since=0.0).verdict is H
    stream.close_segment(now=0.6)
    assert decide_reload(stream, 5, None, now=0.6, held_since=0.0).verdict is A


@pytest.mark.parametrize(("waited_s", "expected"), [(0.0, H), (5.999, H), (6.0, U), (60.0, U)])
def test_unavailable_after_three_target_durations(waited_s: float, expected: Verdict) -> None:
    decision = decide_reload(live(), 7, None, now=100.0 + waited_s, held_since=100.0)
    assert decision.verdict is expected
    assert bool(decision.reason) == (expected is U)


def test_no_held_since_means_a_fresh_request_that_may_hold() -> None:
    assert decide_reload(live(), 7, None, now=1e9).verdict is H


@pytest.mark.parametrize(
    ("msn", "part", "expected"),
    [(None, None, A), (9999, None, A), (5, 9999, A), (3, 0, A), (None, 3, B), (-1, None, B)],
)
def test_ended_stream_ignores_the_directives(
    msn: int | None, part: int | None, expected: Verdict
) -> None:
    stream = live()
    stream.end(now=0.0)
    assert decide_reload(stream, msn, part, now=0.0, held_since=-100.0).verdict is expected


def test_classic_stream_blocks_on_segments_only() -> None:
    stream = LiveStream("c", target_duration_s=6.0, part_target_s=None)
    stream.add_segment(6.0, now=0.0)
    assert decide_reload(stream, 0, None, now=0.0).verdict is A
    assert decide_reload(stream, 1, None, now=0.0).verdict is H
    assert decide_reload(stream, 1, 0, now=0.0).verdict is B
    assert decide_reload(stream, 1, None, now=17.9, held_since=0.0).verdict is H
    assert decide_reload(stream, 1, None, now=18.0, held_since=0.0).verdict is U


@pytest.mark.parametrize(
    ("part_target_s", "limit"), [(0.2, 15.0), (0.5, 6.0), (1.0, 3.0), (2.0, 3.0)]
)
def test_advance_part_limit(part_target_s: float, limit: float) -> None:
    assert advance_part_limit(part_target_s) == pytest.approx(limit)


def test_advance_part_limit_with_one_second_parts() -> None:
    stream = LiveStream("s", target_duration_s=4.0, part_target_s=1.0)
    stream.add_part(1.0, independent=True, now=0.0)
    assert decide_reload(stream, 0, 3, now=0.0).verdict is H
    assert decide_reload(stream, 0, 4, now=0.0).verdict is B


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({}, (None, None)),
        ({"_HLS_msn": "12"}, (12, None)),
        ({"_HLS_msn": "12", "_HLS_part": "3"}, (12, 3)),
        ({"_HLS_part": "3"}, (None, 3)),
        ({"_HLS_msn": "-1"}, (-1, None)),
        ({"_HLS_skip": "YES", "other": "x"}, (None, None)),
    ],
)
def test_parse_reload_query(query: dict[str, str], expected: tuple[int | None, int | None]) -> None:
    assert parse_reload_query(query) == expected


@pytest.mark.parametrize("raw", ["", "abc", "1.5", "0x10", " 1", "1e3", "9" * 40])
@pytest.mark.parametrize("name", ["_HLS_msn", "_HLS_part"])
def test_parse_reload_query_rejects_non_integers(name: str, raw: str) -> None:
    query = {"_HLS_msn": "1", name: raw}
    with pytest.raises(ValueError, match=name) as info:
        parse_reload_query(query)
    assert "\n" not in str(info.value)


def test_parsed_negative_value_becomes_bad_request() -> None:
    msn, part = parse_reload_query({"_HLS_msn": "-3"})
    assert decide_reload(live(), msn, part, now=0.0).verdict is B
