"""Fragmented MP4: splitting uploads into CMAF fragments, and the synthetic writer."""

from __future__ import annotations

import contextlib
import shutil
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.core.fmp4 import (
    SAMPLE_IS_NON_SYNC,
    Fragment,
    FragmentSplitter,
    InitInfo,
    first_capture_s,
    iter_boxes,
    parse_init,
)
from relay.core.fmp4_writer import WRITER_TRACK_ID, fragment, grey_picture, init_segment

TIMESCALE = 90_000
WIDTH, HEIGHT = 160, 120
INIT = init_segment(TIMESCALE, WIDTH, HEIGHT)
INFO = parse_init(INIT)
T0_S = 1_700_000_000.123456
SYNC = 0x0200_0000
NON_SYNC = 0x0100_0000 | SAMPLE_IS_NON_SYNC


def box(kind: str, *parts: bytes) -> bytes:
    body = b"".join(parts)
    return struct.pack(">I4s", 8 + len(body), kind.encode("latin-1")) + body


def full(kind: str, version: int, flags: int, *parts: bytes) -> bytes:
    return box(kind, struct.pack(">I", version << 24 | flags), *parts)


Facts = tuple[int, int, bool, int, float]
"""(sequence, ticks, independent, base decode time, capture time) of a written fragment."""


def written(count: int, samples_per_fragment: int = 3) -> tuple[bytes, list[Facts]]:
    """A stream of `count` writer fragments, some with styp/free before them, and their facts."""
    stream = b""
    facts: list[Facts] = []
    decode_time = 0
    for i in range(count):
        durations = [3000 + 7 * j + i for j in range(samples_per_fragment)]
        pictures = [
            grey_picture(WIDTH, HEIGHT, 100 + 50 * j, idr_pic_id=(i * samples_per_fragment + j) % 2)
            for j in range(samples_per_fragment)
        ]
        capture_s = T0_S + i / 3
        prefix = box("styp", b"msdh", bytes(4), b"msdhmsix") if i % 2 else b""
        prefix += box("free", bytes(i)) if i % 3 == 1 else b""
        stream += prefix + fragment(
            i + 1, decode_time, durations, pictures, independent=i % 3 == 0, capture_s=capture_s
        )
        facts.append((i + 1, sum(durations), i % 3 == 0, decode_time, capture_s))
        decode_time += sum(durations)
    return stream, facts


STREAM, FACTS = written(6)


def split(data: bytes, cuts: list[int], init: InitInfo = INFO) -> list[Fragment]:
    splitter = FragmentSplitter(init)
    done: list[Fragment] = []
    for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True):
        done += splitter.feed(data[start:end])
    assert splitter.close() == b""
    return done


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not on PATH; `make test` installs it")
    return path


# --- writer -> parser round trip ---------------------------------------------------------------


def test_parse_init_reads_the_writers_video_track() -> None:
    assert [b.type for b in iter_boxes(INIT)] == ["ftyp", "moov"]
    (track,) = INFO.tracks
    assert (track.track_id, track.timescale, track.handler) == (WRITER_TRACK_ID, TIMESCALE, "vide")
    assert INFO.main_track_id == WRITER_TRACK_ID


def test_written_fragments_parse_back_exactly() -> None:
    fragments = split(STREAM, [])
    assert b"".join(f.data for f in fragments) == STREAM
    assert len(fragments) == len(FACTS)
    for got, (sequence, ticks, independent, decode_time, capture_s) in zip(
        fragments, FACTS, strict=True
    ):
        assert got.sequence == sequence
        assert got.track_id == WRITER_TRACK_ID
        assert got.duration_s == ticks / TIMESCALE
        assert got.independent is independent
        assert got.base_decode_time == {WRITER_TRACK_ID: decode_time}
        assert got.capture_s is not None
        assert abs(got.capture_s - capture_s) < 1e-6


def test_boxes_before_a_moof_belong_to_its_fragment() -> None:
    fragments = split(STREAM, [])
    assert [b.type for b in iter_boxes(fragments[0].data)] == ["prft", "moof", "mdat"]
    assert [b.type for b in iter_boxes(fragments[1].data)] == [
        "styp",
        "free",
        "prft",
        "moof",
        "mdat",
    ]


def test_each_fragment_comes_out_with_the_byte_that_completes_its_mdat() -> None:
    ends = []
    total = 0
    for f in split(STREAM, []):
        total += len(f.data)
        ends.append(total)
    splitter = FragmentSplitter(INFO)
    for i in range(len(STREAM)):
        out = splitter.feed(STREAM[i : i + 1])
        assert len(out) == (1 if i + 1 in ends else 0)
    assert splitter.close() == b""


@settings(max_examples=150)
@given(st.lists(st.integers(0, len(STREAM)), max_size=40))
def test_any_chunking_gives_the_same_fragments(cuts: list[int]) -> None:
    assert split(STREAM, sorted(cuts)) == split(STREAM, [])


@given(
    st.floats(0, 4_233_462_143, allow_nan=False)
    | st.sampled_from([0.0, 2_085_978_495.999_999, 2_085_978_496.0, 2_085_978_496.5])
)
def test_capture_time_round_trips_within_a_microsecond(capture_s: float) -> None:
    data = fragment(
        1, 0, [3000], [grey_picture(WIDTH, HEIGHT)], independent=True, capture_s=capture_s
    )
    (got,) = split(data, [])
    assert got.capture_s is not None
    assert abs(got.capture_s - capture_s) < 1e-6
    # Read straight from the bytes too, as a viewer does with a part or a segment.
    found = first_capture_s(data + data)
    assert found is not None and abs(found - capture_s) < 1e-6


def test_media_without_a_prft_has_no_capture_time() -> None:
    data = fragment(1, 0, [3000], [grey_picture(WIDTH, HEIGHT)], independent=True, capture_s=1.0)
    assert data[4:8] == b"prft"
    without = data[int.from_bytes(data[:4], "big") :]  # moof + mdat
    assert first_capture_s(without) is None


def test_truncated_upload_leaves_its_tail_for_close() -> None:
    splitter = FragmentSplitter(INFO)
    done = splitter.feed(STREAM[:-1])
    assert len(done) == len(FACTS) - 1
    tail = splitter.close()
    assert tail == STREAM[sum(len(f.data) for f in done) : -1]
    assert splitter.close() == b""


# --- what the parser reads from fragments it did not write ------------------------------------

AUDIO, VIDEO = 2, 1


def trak(track_id: int, timescale: int, handler: str, version: int) -> bytes:
    if version == 1:
        tkhd = full("tkhd", 1, 3, struct.pack(">QQI", 0, 0, track_id), bytes(80))
        mdhd = full("mdhd", 1, 0, struct.pack(">QQIQ", 0, 0, timescale, 0), bytes(4))
    else:
        tkhd = full("tkhd", 0, 3, struct.pack(">III", 0, 0, track_id), bytes(68))
        mdhd = full("mdhd", 0, 0, struct.pack(">IIII", 0, 0, timescale, 0), bytes(4))
    hdlr = full("hdlr", 0, 0, struct.pack(">I4s12x", 0, handler.encode()), b"\0")
    return box("trak", tkhd, box("mdia", mdhd, hdlr))


def trex(track_id: int, duration: int, flags: int) -> bytes:
    return full("trex", 0, 0, struct.pack(">5I", track_id, 1, duration, 0, flags))


MUXED = parse_init(
    box("ftyp", b"iso6", bytes(4))
    + box(
        "moov",
        trak(AUDIO, 48_000, "soun", version=1),
        trak(VIDEO, TIMESCALE, "vide", version=0),
        box("mvex", trex(AUDIO, 1024, 0), trex(VIDEO, 3000, NON_SYNC)),
    )
)


def traf(track_id: int, *truns: bytes, tfhd_flags: int = 0x20000, tfhd: bytes = b"") -> bytes:
    return box(
        "traf",
        full("tfhd", 0, tfhd_flags, struct.pack(">I", track_id), tfhd),
        full("tfdt", 0, 0, struct.pack(">I", 1000 * track_id)),
        *truns,
    )


def trun(flags: int, count: int, *fields: int, first: int | None = None) -> bytes:
    head = struct.pack(">I", count) + (b"" if first is None else struct.pack(">I", first))
    return full("trun", 0, flags, head, struct.pack(f">{len(fields)}I", *fields))


def media(*trafs: bytes, before: bytes = b"") -> bytes:
    moof = box("moof", full("mfhd", 0, 0, struct.pack(">I", 7)), *trafs)
    return before + moof + box("mdat", bytes(10))


def prft(track_id: int, unix_s: int) -> bytes:
    ntp = (unix_s + 2_208_988_800) << 32
    return full("prft", 0, 0, struct.pack(">IQI", track_id, ntp, 0))


def test_parse_init_reads_every_track_and_its_trex_defaults() -> None:
    audio, video = MUXED.tracks
    assert (audio.track_id, audio.timescale, audio.handler) == (AUDIO, 48_000, "soun")
    assert (audio.default_sample_duration, audio.default_sample_flags) == (1024, 0)
    assert (video.track_id, video.timescale, video.handler) == (VIDEO, TIMESCALE, "vide")
    assert (video.default_sample_duration, video.default_sample_flags) == (3000, NON_SYNC)
    assert MUXED.main_track_id == VIDEO
    assert MUXED.track(AUDIO) is audio


@pytest.mark.parametrize(
    ("video_traf", "ticks", "independent"),
    [
        pytest.param(traf(VIDEO, trun(0x200, 3, 5, 6, 7)), 9000, False, id="trex-defaults"),
        pytest.param(
            traf(VIDEO, trun(0x204, 3, 5, 6, 7, first=SYNC)), 9000, True, id="first-sample-flags"
        ),
        pytest.param(
            traf(VIDEO, trun(0x0, 4), tfhd_flags=0x20028, tfhd=struct.pack(">II", 1500, SYNC)),
            6000,
            True,
            id="tfhd-defaults",
        ),
        pytest.param(
            traf(VIDEO, trun(0x500, 2, 1000, SYNC, 2000, NON_SYNC)), 3000, True, id="sample-flags"
        ),
        pytest.param(
            traf(VIDEO, trun(0x500, 2, 1000, NON_SYNC, 2000, SYNC)), 3000, False, id="not-first"
        ),
        pytest.param(
            traf(VIDEO, trun(0xB01, 2, 99, 1000, 5, 0, 2000, 6, 0)),  # ffmpeg's layout
            3000,
            False,
            id="durations-sizes-cts",
        ),
        pytest.param(
            traf(VIDEO, trun(0x104, 1, 1000, first=SYNC), trun(0x100, 2, 2000, 4000)),
            7000,
            True,
            id="two-truns",
        ),
        pytest.param(traf(VIDEO, trun(0x4, 0, first=SYNC)), 0, False, id="no-samples"),
    ],
)
def test_fragment_facts_follow_trun_tfhd_and_trex(
    video_traf: bytes, ticks: int, independent: bool
) -> None:
    audio_traf = traf(AUDIO, trun(0x100, 2, 1024, 1024))
    (got,) = split(media(audio_traf, video_traf), [], MUXED)
    assert got.track_id == VIDEO
    assert got.duration_s == ticks / TIMESCALE
    assert got.independent is independent
    assert got.base_decode_time == {AUDIO: 2000, VIDEO: 1000}
    assert got.sequence == 7


def test_a_moof_without_the_video_track_describes_its_first_track() -> None:
    (got,) = split(media(traf(AUDIO, trun(0x0, 3))), [], MUXED)
    assert (got.track_id, got.duration_s, got.independent) == (AUDIO, 3 * 1024 / 48_000, True)


def test_capture_time_comes_from_the_described_tracks_prft() -> None:
    video = traf(VIDEO, trun(0x0, 1))
    (got,) = split(media(video, before=prft(AUDIO, 1_000) + prft(VIDEO, 2_000)), [], MUXED)
    assert got.capture_s == 2_000.0
    (got,) = split(media(video, before=prft(AUDIO, 1_000) + prft(3, 3_000)), [], MUXED)
    assert got.capture_s == 1_000.0
    (got,) = split(media(video), [], MUXED)
    assert got.capture_s is None


def test_iter_boxes_reads_largesize_size_zero_and_uuid() -> None:
    large = struct.pack(">I4sQ", 1, b"mdat", 16 + 3) + b"abc"
    uuid = box("uuid", bytes(16), b"xy")
    to_end = struct.pack(">I4s", 0, b"mdat") + b"rest"
    boxes = list(iter_boxes(large + uuid + to_end))
    assert [(b.type, b.start, b.size, b.header_size) for b in boxes] == [
        ("mdat", 0, 19, 16),
        ("uuid", 19, 26, 24),
        ("mdat", 45, 12, 8),
    ]
    assert boxes[1].body_start == 43
    assert boxes[2].end == len(large + uuid + to_end)


def test_splitter_reads_a_largesize_mdat() -> None:
    moof = media(traf(VIDEO, trun(0x0, 1))).removesuffix(box("mdat", bytes(10)))
    data = moof + struct.pack(">I4sQ", 1, b"mdat", 16 + 10) + bytes(10)
    (got,) = split(data, [9, len(moof) + 12])
    assert got.data == data


# --- malformed input: one-line ValueErrors -----------------------------------------------------

MOOF_WITHOUT_TRAF = box("moof", full("mfhd", 0, 0, bytes(4))) + box("mdat", b"")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00\x00\x00\x04moof", "smaller than its header"),
        (b"\x00\x00\x00\x10\x00\x01\x02\x03" + bytes(8), "not an ISO-BMFF box"),
        (b"GET /live/x HTTP/1.1\r\n\r\n", "over the limit"),
        (MOOF_WITHOUT_TRAF, "moof box has no traf box"),
        (media(traf(9, trun(0x0, 1))), "unknown track 9"),
        (box("mdat", b"x"), "has no moof before it"),
        (box("moof", box("traf")) + box("mdat"), "moof box has no mfhd box"),
        (media(box("traf", full("tfhd", 0, 0, b"\x00"))), "tfhd box is truncated"),
        (media(traf(VIDEO, trun(0x100, 1000, 1))), "trun box is truncated: 1000 samples"),
        (media(traf(VIDEO, box("trun", b"\x00\x00\x00"))), "trun box is truncated"),
        (media(box("traf", b"\x00\x00\x00\x20tfhd")), "truncated tfhd box"),
        (box("moof") + box("moof"), "moof box has no mfhd box"),
        (struct.pack(">I4s", 0, b"mdat"), "size 0"),
        (INIT, "moov box at byte 28: an init segment, not media"),
        (
            media(traf(VIDEO, trun(0, 1))).removesuffix(box("mdat", bytes(10)))
            + media(traf(VIDEO, trun(0, 1))),
            "follows a moof, not an mdat",
        ),
    ],
    ids=lambda value: value if isinstance(value, str) else "data",
)
def test_malformed_media_is_a_one_line_value_error(data: bytes, message: str) -> None:
    splitter = FragmentSplitter(MUXED, max_box_bytes=1 << 20)
    with pytest.raises(ValueError, match=message) as error:
        splitter.feed(data)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (INIT[:-1], "truncated moov box at byte 28"),
        (INIT[:30], "truncated box header at byte 28"),
        (INIT[:4], "truncated box header at byte 0"),
        (box("ftyp", b"iso6"), "init segment has no moov box"),
        (box("moov", box("mvhd")), "moov box has no trak box"),
        (box("moov", box("trak", box("mdia"))), "trak box has no tkhd box"),
        (box("moov", box("trak", full("tkhd", 0, 0, bytes(4)))), "tkhd box is truncated"),
        (
            box("moov", trak(1, 0, "vide", 0)),
            "mdhd box has timescale 0",
        ),
        (
            box("moov", trak(1, 90_000, "vide", 0), trak(1, 90_000, "vide", 1)),
            "two trak boxes for track 1",
        ),
        (
            box("moov", trak(1, 90_000, "vide", 0), box("mvex", trex(5, 0, 0))),
            "trex box names unknown track 5",
        ),
    ],
    ids=lambda value: value if isinstance(value, str) else "data",
)
def test_malformed_init_is_a_one_line_value_error(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message) as error:
        parse_init(data)
    assert "\n" not in str(error.value)


def test_unknown_track_lookup_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown track 3: the init segment has track\(s\) 2, 1"):
        MUXED.track(3)


@settings(max_examples=300)
@given(st.binary(max_size=300), st.integers(1, 64))
def test_random_bytes_raise_only_value_errors(data: bytes, chunk: int) -> None:
    splitter = FragmentSplitter(MUXED, max_box_bytes=4096)
    try:
        for i in range(0, len(data), chunk):
            splitter.feed(data[i : i + chunk])
        splitter.close()
    except ValueError:
        pass
    for parse in (parse_init, lambda d: list(iter_boxes(d))):
        with contextlib.suppress(ValueError):
            parse(data)


@settings(max_examples=300)
@given(st.lists(st.tuples(st.integers(0, len(STREAM) - 1), st.integers(0, 255)), max_size=8))
def test_corrupted_fragments_raise_only_value_errors(edits: list[tuple[int, int]]) -> None:
    data = bytearray(STREAM)
    for at, value in edits:
        data[at] = value
    splitter = FragmentSplitter(INFO, max_box_bytes=1 << 16)
    try:
        for i in range(0, len(data), 97):
            splitter.feed(data[i : i + 97])
        splitter.close()
    except ValueError:
        pass


@settings(max_examples=100)
@given(st.binary(min_size=1, max_size=200).map(lambda junk: INIT[:-200] + junk))
def test_corrupted_init_raises_only_value_errors(data: bytes) -> None:
    with contextlib.suppress(ValueError):
        parse_init(data)


# --- bounded memory ----------------------------------------------------------------------------


def test_a_box_over_the_limit_is_refused_from_its_header_alone() -> None:
    splitter = FragmentSplitter(INFO, max_box_bytes=1000)
    with pytest.raises(
        ValueError, match="mdat box at byte 0 is 1001 bytes, over the limit of 1000"
    ):
        splitter.feed(struct.pack(">I4s", 1001, b"mdat"))
    splitter = FragmentSplitter(INFO, max_box_bytes=1000)
    with pytest.raises(ValueError, match="over the limit of 1000"):
        splitter.feed(struct.pack(">I4sQ", 1, b"mdat", 1 << 40))


def test_a_fragment_over_the_limit_is_refused_however_small_its_boxes() -> None:
    splitter = FragmentSplitter(INFO, max_box_bytes=1000, max_fragment_bytes=2500)
    free = box("free", bytes(992))
    splitter.feed(free * 2)
    with pytest.raises(ValueError, match="fragment at byte 0 exceeds the limit of 2500 bytes"):
        splitter.feed(free[:8])


def test_fragments_up_to_the_limits_pass() -> None:
    largest_box = max(b.size for b in iter_boxes(STREAM))
    largest_fragment = max(len(f.data) for f in split(STREAM, []))
    splitter = FragmentSplitter(
        INFO, max_box_bytes=largest_box, max_fragment_bytes=largest_fragment
    )
    assert len(splitter.feed(STREAM)) == len(FACTS)


# --- writer arguments and the pictures it carries ----------------------------------------------


def test_grey_picture_pads_to_the_asked_size() -> None:
    bare = grey_picture(WIDTH, HEIGHT)
    assert len(grey_picture(WIDTH, HEIGHT, 1000)) == 1000
    assert len(grey_picture(WIDTH, HEIGHT, len(bare) + 6)) == len(bare) + 6
    assert len(grey_picture(WIDTH, HEIGHT, len(bare) + 1)) == len(bare) + 6
    assert grey_picture(WIDTH, HEIGHT, 1) == bare
    assert grey_picture(WIDTH, HEIGHT, idr_pic_id=1) != bare


def test_sizes_give_opaque_samples_of_those_sizes() -> None:
    picture = grey_picture(WIDTH, HEIGHT)
    data = fragment(1, 0, [3000, 3000, 3000], [6, 500, picture], independent=True, capture_s=T0_S)
    (got,) = split(data, [])
    assert got.duration_s == 9000 / TIMESCALE
    mdat = next(b for b in iter_boxes(data) if b.type == "mdat")
    body = data[mdat.body_start : mdat.end]
    assert len(body) == 6 + 500 + len(picture)
    assert body.endswith(picture)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: init_segment(0, 160, 120), "timescale must be in"),
        (lambda: init_segment(90_000, 161, 120), "must be even"),
        (lambda: init_segment(90_000, 8192, 8192), "over 36864 macroblocks"),
        (lambda: grey_picture(0, 120), "width must be in"),
        (lambda: fragment(1, 0, [], [], independent=True, capture_s=T0_S), "at least one"),
        (lambda: fragment(1, 0, [1, 2], [b"x"], independent=True, capture_s=T0_S), "one sample"),
        (lambda: fragment(-1, 0, [1], [b"x"], independent=True, capture_s=T0_S), "sequence"),
        (lambda: fragment(1, -5, [1], [b"x"], independent=True, capture_s=T0_S), "base_decode"),
        (lambda: fragment(1, 0, [1 << 32], [b"x"], independent=True, capture_s=T0_S), "duration"),
        (lambda: fragment(1, 0, [1], [b"x"], independent=True, capture_s=-1e10), "capture_s"),
        (lambda: fragment(1, 0, [1], [5], independent=True, capture_s=T0_S), "sample size"),
    ],
)
def test_writer_rejects_what_it_cannot_write(call: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def test_ffmpeg_decodes_every_written_picture(tmp_path: Path) -> None:
    ffprobe = tool("ffprobe")
    path = tmp_path / "written.mp4"
    path.write_bytes(INIT + STREAM)
    probe = subprocess.run(
        [ffprobe, "-v", "error", "-count_frames", "-show_format", "-show_streams", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stderr == ""
    fields = dict(line.split("=", 1) for line in probe.stdout.splitlines() if "=" in line)
    assert (fields["codec_name"], fields["width"], fields["height"]) == ("h264", "160", "120")
    assert int(fields["nb_read_frames"]) == 3 * len(FACTS)
    assert float(fields["duration"]) == pytest.approx(sum(f[1] for f in FACTS) / TIMESCALE)


# --- ffmpeg's own fMP4 HLS output --------------------------------------------------------------


def test_splitter_reads_ffmpeg_hls_fmp4_segments(tmp_path: Path) -> None:
    ffmpeg = tool("ffmpeg")
    subprocess.run(
        [
            ffmpeg, "-nostdin", "-v", "error", "-f", "lavfi",
            "-i", "testsrc2=size=160x120:rate=30", "-t", "2",
            "-c:v", "libx264", "-g", "10",
            "-f", "hls", "-hls_segment_type", "fmp4", "-hls_time", "0.333",
            "-hls_playlist_type", "vod", str(tmp_path / "index.m3u8"),
        ],
        check=True,
        timeout=60,
    )  # fmt: skip
    init = parse_init((tmp_path / "init.mp4").read_bytes())
    segments = sorted(tmp_path.glob("index*.m4s"), key=lambda p: int(p.stem[5:]))
    assert len(segments) >= 3
    splitter = FragmentSplitter(init)
    fragments: list[Fragment] = []
    for segment in segments:
        data = segment.read_bytes()
        for i in range(0, len(data), 1000):
            fragments += splitter.feed(data[i : i + 1000])
        assert splitter.close() == b""
    timescale = init.track(init.main_track_id).timescale
    assert sum(f.duration_s for f in fragments) == pytest.approx(2.0, abs=1 / 30)
    assert fragments[0].independent
    assert all(f.capture_s is None for f in fragments)
    decode_times = [f.base_decode_time[init.main_track_id] for f in fragments]
    assert decode_times[0] == 0
    for before, after, f in zip(decode_times, decode_times[1:], fragments, strict=False):
        assert after - before == round(f.duration_s * timescale)
