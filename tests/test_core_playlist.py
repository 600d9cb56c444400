"""Media Playlists rendered from a LiveStream: valid, parseable, and what a player needs."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.core.playlist import check_playlist, parse_playlist, render_playlist
from relay.core.stream import LiveStream, Part


def ll_stream(window_segments: int = 10) -> LiveStream:
    return LiveStream(
        "demo", target_duration_s=2.0, part_target_s=0.5, window_segments=window_segments
    )


def publish(stream: LiveStream, segments: int, parts_per_segment: int = 4) -> None:
    for _ in range(segments):
        for i in range(parts_per_segment):
            stream.add_part(0.5, independent=i == 0, now=0.0)
        stream.close_segment(now=0.0)


def listed_parts(stream: LiveStream) -> list[Part]:
    return [p for s in stream.segments() for p in s.parts] + list(stream.open_parts())


def assert_round_trip(stream: LiveStream, text: str) -> None:
    """What parse_playlist reads back is what the stream holds."""
    parsed = parse_playlist(text)
    assert parsed.target_duration == stream.declared_target_s
    assert parsed.media_sequence == stream.first_msn
    assert parsed.ended == stream.ended
    segments = stream.segments()[parsed.skipped_segments :]
    assert [(s.msn, s.uri) for s in parsed.segments] == [(s.msn, s.uri) for s in segments]
    for got, want in zip(parsed.segments, segments, strict=True):
        assert got.duration_s == pytest.approx(want.duration_s, abs=5e-6)
    tail = listed_parts(stream)[len(listed_parts(stream)) - len(parsed.parts) :]
    assert [(p.msn, p.part_index, p.uri, p.independent) for p in parsed.parts] == [
        (p.msn, p.index, p.uri, p.independent) for p in tail
    ]


# -- LL-HLS ------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    part_target_s=st.floats(0.1, 1.0),
    target_ratio=st.floats(1.0, 8.0),
    segments=st.lists(
        st.lists(st.floats(0.05, 1.0), min_size=1, max_size=8), min_size=1, max_size=8
    ),
)
def test_playlists_of_a_growing_stream_are_valid_and_round_trip(
    part_target_s: float, target_ratio: float, segments: list[list[float]]
) -> None:
    stream = LiveStream(
        "h",
        target_duration_s=part_target_s * target_ratio,
        part_target_s=part_target_s,
        window_segments=4,
    )
    now = 0.0
    for fractions in segments:
        for i, fraction in enumerate(fractions):
            stream.add_part(fraction * part_target_s, independent=i == 0, now=now)
            now += fraction * part_target_s
            text = render_playlist(stream)
            parsed = parse_playlist(text)
            assert check_playlist(parsed) == []
            assert parsed.part_target is not None
            assert all(p.duration_s <= parsed.part_target for p in parsed.parts)
            assert [h.uri for h in parsed.preload_hints] == [
                f"seg{stream.next_msn}.part{stream.next_part_index}.m4s"
            ]
            assert_round_trip(stream, text)
        stream.close_segment(now)
    stream.end(now)
    text = render_playlist(stream)
    assert check_playlist(parse_playlist(text)) == []
    assert_round_trip(stream, text)


def test_ll_playlist_advertises_the_rfc_server_control() -> None:
    stream = LiveStream("p", target_duration_s=2.0, part_target_s=1 / 3)
    stream.add_part(1 / 3, independent=True, now=0.0)
    parsed = parse_playlist(render_playlist(stream))
    control = parsed.server_control
    assert control["CAN-BLOCK-RELOAD"] == "YES"
    assert float(control["PART-HOLD-BACK"]) >= 3 * (1 / 3)
    assert float(control["HOLD-BACK"]) >= 3 * 2
    assert float(control["CAN-SKIP-UNTIL"]) >= 6 * 2
    assert parsed.part_target == 0.33334, "PART-TARGET is rounded up, never down"
    assert parsed.parts[0].duration_s <= parsed.part_target


def test_hold_backs_can_be_raised_but_not_set_below_the_rfc_minimum() -> None:
    stream = ll_stream()
    parsed = parse_playlist(render_playlist(stream, part_hold_back_s=1.0, hold_back_s=8.0))
    assert float(parsed.server_control["PART-HOLD-BACK"]) == 1.0
    assert float(parsed.server_control["HOLD-BACK"]) == 8.0
    render_playlist(stream, part_hold_back_s=1.0)  # exactly 2x PART-TARGET is allowed
    with pytest.raises(ValueError, match="PART-TARGET"):
        render_playlist(stream, part_hold_back_s=0.9)
    with pytest.raises(ValueError, match="3x the target"):
        render_playlist(stream, hold_back_s=5.9)


def test_parts_older_than_three_target_durations_drop_out() -> None:
    stream = ll_stream()
    publish(stream, 10)  # 2 s segments of four 0.5 s parts
    stream.add_part(0.5, independent=True, now=0.0)
    parsed = parse_playlist(render_playlist(stream))
    # From the end: open 0.5 s, segment 9 starts 2.5 s back, 8 at 4.5 s, 7 at 6.5 s > 3 x 2 s.
    assert sorted({p.msn for p in parsed.parts}) == [8, 9, 10]
    assert len(parsed.parts) == 4 + 4 + 1
    assert [s.msn for s in parsed.segments] == list(range(10)), "segments stay listed"
    publish(stream, 1, parts_per_segment=3)  # completes segment 10
    stream.add_part(0.5, independent=True, now=0.0)
    parsed = parse_playlist(render_playlist(stream))
    assert sorted({p.msn for p in parsed.parts}) == [9, 10, 11]


def test_every_listed_part_lies_within_three_target_durations_of_the_end() -> None:
    stream = LiveStream("p", target_duration_s=2.0, part_target_s=1 / 3, window_segments=6)
    for i in range(100):
        stream.add_part(1 / 3, independent=True, now=0.0)
        if i % 6 == 5:
            stream.close_segment(now=0.0)
        text = render_playlist(stream)
        assert_round_trip(stream, text)  # the listed parts are the newest ones, contiguous
        parsed = parse_playlist(text)
        start_before_end_s = 0.0
        for part in reversed(parsed.parts):
            start_before_end_s += part.duration_s
            assert start_before_end_s <= 3 * 2 + 1e-4, part
        if stream.segments():
            last = stream.segments()[-1]
            assert len([p for p in parsed.parts if p.msn == last.msn]) == len(last.parts)


def test_exactly_one_preload_hint_names_the_next_part() -> None:
    stream = ll_stream()
    parsed = parse_playlist(render_playlist(stream))
    assert [(h.type, h.uri) for h in parsed.preload_hints] == [("PART", "seg0.part0.m4s")]
    publish(stream, 2)
    stream.add_part(0.5, independent=True, now=0.0)
    parsed = parse_playlist(render_playlist(stream))
    assert [(h.type, h.uri) for h in parsed.preload_hints] == [("PART", "seg2.part1.m4s")]


def test_ended_stream_has_endlist_and_no_hint() -> None:
    stream = ll_stream()
    publish(stream, 2)
    stream.add_part(0.5, independent=True, now=0.0)
    stream.end(now=0.0)
    text = render_playlist(stream)
    parsed = parse_playlist(text)
    assert parsed.ended
    assert text.rstrip().endswith("#EXT-X-ENDLIST")
    assert parsed.preload_hints == []
    assert [s.msn for s in parsed.segments] == [0, 1, 2]
    assert check_playlist(parsed) == []


def test_window_slides_and_media_sequence_advances() -> None:
    stream = ll_stream(window_segments=5)
    publish(stream, 3)
    assert parse_playlist(render_playlist(stream)).media_sequence == 0
    publish(stream, 4)
    parsed = parse_playlist(render_playlist(stream))
    assert parsed.media_sequence == 2
    assert [s.msn for s in parsed.segments] == [2, 3, 4, 5, 6]


def test_delta_update_skips_segments_beyond_the_skip_boundary() -> None:
    stream = ll_stream(window_segments=10)
    publish(stream, 10)
    stream.add_part(0.5, independent=True, now=0.0)
    text = render_playlist(stream, skip=True)
    parsed = parse_playlist(text)
    # CAN-SKIP-UNTIL is 12 s; segment ends lie 0, 2, ..., 18 s before the last one's end.
    assert parsed.skipped_segments == 3
    assert parsed.version is not None and parsed.version >= 9
    assert [s.msn for s in parsed.segments] == list(range(3, 10))
    assert parsed.media_sequence == 0
    assert check_playlist(parsed) == []
    assert_round_trip(stream, text)


def test_short_playlist_or_ended_stream_is_not_delta_updated() -> None:
    stream = ll_stream()
    publish(stream, 6)
    assert parse_playlist(render_playlist(stream, skip=True)).skipped_segments == 0
    publish(stream, 4)
    stream.end(now=0.0)
    assert parse_playlist(render_playlist(stream, skip=True)).skipped_segments == 0


def test_map_uri_is_listed_for_fmp4() -> None:
    stream = ll_stream()
    parsed = parse_playlist(render_playlist(stream, map_uri="init.mp4"))
    assert parsed.map_uri == "init.mp4"
    assert parsed.version == 6


# -- classic HLS -------------------------------------------------------------------------------


def test_classic_playlist_has_hold_back_of_three_targets_and_no_parts() -> None:
    stream = LiveStream("c", target_duration_s=6.0, part_target_s=None, window_segments=5)
    for i in range(8):
        stream.add_segment(6.0 if i % 2 else 5.5, now=6.0 * i)
    text = render_playlist(stream)
    parsed = parse_playlist(text)
    assert parsed.target_duration == 6
    assert float(parsed.server_control["HOLD-BACK"]) >= 18.0
    assert "CAN-BLOCK-RELOAD" not in parsed.server_control
    assert parsed.part_target is None
    assert parsed.parts == [] and parsed.preload_hints == []
    assert parsed.media_sequence == 3
    assert check_playlist(parsed) == []
    assert_round_trip(stream, text)
    with pytest.raises(ValueError, match="parts"):
        render_playlist(stream, part_hold_back_s=1.0)


def test_classic_target_duration_covers_a_long_segment() -> None:
    stream = LiveStream("c", target_duration_s=6.0, part_target_s=None)
    stream.add_segment(6.4, now=0.0)
    parsed = parse_playlist(render_playlist(stream))
    assert parsed.target_duration == math.ceil(6.4)
    assert check_playlist(parsed) == []


# -- check_playlist on hand-written playlists ----------------------------------------------------

GOOD = """#EXTM3U
#EXT-X-VERSION:6
#EXT-X-TARGETDURATION:2
#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL=12.0,PART-HOLD-BACK=1.0,HOLD-BACK=6.0
#EXT-X-PART-INF:PART-TARGET=0.5
#EXT-X-MEDIA-SEQUENCE:7
#EXT-X-PART:DURATION=0.5,URI="seg7.part0.m4s",INDEPENDENT=YES
#EXT-X-PART:DURATION=0.5,URI="seg7.part1.m4s"
#EXTINF:1.0,
seg7.m4s
#EXT-X-PART:DURATION=0.5,URI="seg8.part0.m4s",INDEPENDENT=YES
#EXT-X-PRELOAD-HINT:TYPE=PART,URI="seg8.part1.m4s"
"""


def test_hand_written_good_playlist_passes_and_parses() -> None:
    parsed = parse_playlist(GOOD)
    assert check_playlist(parsed) == []
    assert [tuple(s) for s in parsed.segments] == [(7, 1.0, "seg7.m4s")]
    assert [(p.msn, p.part_index, p.independent) for p in parsed.parts] == [
        (7, 0, True),
        (7, 1, False),
        (8, 0, True),
    ]


@pytest.mark.parametrize(
    ("old", "new", "complaint"),
    [
        ('DURATION=0.5,URI="seg7.part1', 'DURATION=0.6,URI="seg7.part1', "longer than PART-TARGET"),
        ("PART-HOLD-BACK=1.0", "PART-HOLD-BACK=0.9", "PART-HOLD-BACK"),
        (",PART-HOLD-BACK=1.0", "", "without PART-HOLD-BACK"),
        ("HOLD-BACK=6.0\n", "HOLD-BACK=5.0\n", "HOLD-BACK 5.0 is below 3x"),
        ("CAN-SKIP-UNTIL=12.0", "CAN-SKIP-UNTIL=10.0", "CAN-SKIP-UNTIL"),
        ("#EXTINF:1.0,", "#EXTINF:2.6,", "EXT-X-TARGETDURATION 2"),
        ("#EXT-X-TARGETDURATION:2\n", "", "EXT-X-TARGETDURATION is missing"),
        ("#EXT-X-PART-INF:PART-TARGET=0.5\n", "", "without EXT-X-PART-INF"),
        ("HOLD-BACK=6.0\n", "HOLD-BACK=soon\n", "not a number"),
        (
            '#EXT-X-PRELOAD-HINT:TYPE=PART,URI="seg8.part1.m4s"',
            '#EXT-X-PRELOAD-HINT:TYPE=PART,URI="seg8.part1.m4s"\n'
            '#EXT-X-PRELOAD-HINT:TYPE=PART,URI="seg8.part2.m4s"',
            "TYPE=PART",
        ),
        (
            "CAN-SKIP-UNTIL=12.0,PART-HOLD-BACK=1.0,HOLD-BACK=6.0\n",
            "PART-HOLD-BACK=1.0,HOLD-BACK=6.0\n#EXT-X-SKIP:SKIPPED-SEGMENTS=2\n",
            "EXT-X-SKIP",
        ),
    ],
)
def test_check_playlist_catches_each_broken_rule(old: str, new: str, complaint: str) -> None:
    assert old in GOOD
    problems = check_playlist(parse_playlist(GOOD.replace(old, new)))
    assert len(problems) == 1, problems
    assert complaint in problems[0]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "#EXTM3U"),
        ("#EXT-X-TARGETDURATION:2\n", "#EXTM3U"),
        ("#EXTM3U\nseg0.m4s\n", "without #EXTINF"),
        ("#EXTM3U\n#EXT-X-TARGETDURATION:two\n", "line 2"),
        ('#EXTM3U\n#EXT-X-PART:URI="a.m4s"\n', "line 2"),
    ],
)
def test_parse_playlist_rejects_text_that_is_not_a_playlist(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_playlist(text)
