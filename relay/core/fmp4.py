"""Fragmented MP4 (CMAF): read init segments and split uploads into fragments.

Sans-IO: bytes in, facts out; no sockets and no clock. Box layouts follow ISO/IEC 14496-12
(ISO-BMFF); the section numbers below refer to it. The origin feeds each upload's chunks to a
`FragmentSplitter` and publishes every fragment (moof + mdat) as an LL-HLS part the moment it is
complete. Malformed input raises ValueError with one line, which a server turns into a 400.
`relay.core.fmp4_writer` writes synthetic streams in this format.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

NTP_UNIX_OFFSET_S = 2_208_988_800
"""Seconds from the NTP epoch (1900-01-01) to the Unix epoch (1970-01-01)."""
SAMPLE_IS_NON_SYNC = 0x10000
"""sample_is_non_sync_sample bit of the sample flags (8.8.3.1)."""
DEFAULT_MAX_BOX_BYTES = 16 * 1024 * 1024
"""Largest box a `FragmentSplitter` accepts unless told otherwise."""
_BYTE_TYPE_CHARS = frozenset(range(0x20, 0x7F)) | {0xA9}
"""BytesLike allowed in a box type: printable ASCII, and '©' of the iTunes metadata boxes."""
NTP_ERA_S = 1 << 32

# tfhd flags (8.8.7.1)
TFHD_BASE_DATA_OFFSET = 0x1
TFHD_SAMPLE_DESCRIPTION_INDEX = 0x2
TFHD_DEFAULT_DURATION = 0x8
TFHD_DEFAULT_SIZE = 0x10
TFHD_DEFAULT_FLAGS = 0x20
# trun flags (8.8.8.1)
TRUN_DATA_OFFSET = 0x1
TRUN_FIRST_SAMPLE_FLAGS = 0x4
TRUN_DURATION = 0x100
TRUN_SIZE = 0x200
TRUN_FLAGS = 0x400
TRUN_CTS_OFFSET = 0x800

BytesLike = bytes | bytearray | memoryview


@dataclass(frozen=True, slots=True)
class Box:
    """Where one box lies in a buffer (4.2)."""

    type: str
    """Four-character type, such as 'moof'."""
    start: int
    """Offset of its first byte."""
    size: int
    """BytesLike including the header; a size-0 box ("to the end") is resolved to what remains."""
    header_size: int
    """8, 16 with a 64-bit largesize, plus 16 for a 'uuid' usertype."""

    @property
    def body_start(self) -> int:
        """Offset of the first byte after the header."""
        return self.start + self.header_size

    @property
    def end(self) -> int:
        """Offset just past the box."""
        return self.start + self.size


@dataclass(frozen=True, slots=True)
class TrackInfo:
    """What fragment parsing needs of one track of an init segment."""

    track_id: int
    timescale: int
    """Ticks per second of the track's media time (mdhd)."""
    handler: str
    """Handler type (hdlr): 'vide', 'soun', ..."""
    default_sample_duration: int = 0
    """From trex; 0 without one."""
    default_sample_flags: int = 0
    """From trex; 0 (a sync sample) without one."""


@dataclass(frozen=True, slots=True)
class InitInfo:
    """The tracks of an init segment (ftyp + moov), in moov order."""

    tracks: tuple[TrackInfo, ...]

    def track(self, track_id: int) -> TrackInfo:
        """The track with this ID; ValueError if the init segment has none."""
        for track in self.tracks:
            if track.track_id == track_id:
                return track
        known = ", ".join(str(t.track_id) for t in self.tracks)
        raise ValueError(f"unknown track {track_id}: the init segment has track(s) {known}")

    @property
    def main_track_id(self) -> int:
        """The first video track, else the first track: the one fragment facts describe."""
        for track in self.tracks:
            if track.handler == "vide":
                return track.track_id
        return self.tracks[0].track_id


@dataclass(frozen=True, slots=True)
class Fragment:
    """One CMAF fragment (moof + mdat) and the boxes that came before it."""

    data: bytes
    """Every byte since the previous fragment's end: styp, sidx, prft, ..., moof, mdat."""
    sequence: int
    """sequence_number of the mfhd."""
    track_id: int
    """The track described below: the init's main track if the moof has it, else its first."""
    duration_s: float
    """Sum of that track's sample durations over its timescale."""
    independent: bool
    """That track's first sample is a sync sample (starts with an independent frame)."""
    base_decode_time: dict[int, int]
    """baseMediaDecodeTime (tfdt) of each track that has one, in its timescale."""
    capture_s: float | None
    """Unix time from a prft before the moof (that track's, else the first); None without."""


def iter_boxes(data: BytesLike, offset: int = 0, end: int | None = None) -> Iterator[Box]:
    """The boxes lying one after another from `offset` to `end` (default: the end of `data`).

    ValueError when a box is truncated, its size is smaller than its header or its type is not
    four printable characters. A size-0 box extends to `end`.
    """
    end = len(data) if end is None else end
    while offset < end:
        head = _read_header(data, offset, end)
        if head is None:
            raise ValueError(f"truncated box header at byte {offset}")
        kind, size, header = head
        if size == 0:
            size = end - offset
            if size < header:
                raise ValueError(f"truncated {kind} box header at byte {offset}")
        if offset + size > end:
            raise ValueError(
                f"truncated {kind} box at byte {offset}: {size} bytes declared, "
                f"{end - offset} present"
            )
        yield Box(kind, offset, size, header)
        offset += size


def parse_init(data: BytesLike) -> InitInfo:
    """Track IDs, timescales, handlers and trex defaults of an init segment (ftyp + moov)."""
    moov = next((b for b in iter_boxes(data) if b.type == "moov"), None)
    if moov is None:
        raise ValueError("init segment has no moov box")
    traks = _children(data, moov, "trak")
    if not traks:
        raise ValueError("moov box has no trak box")
    timescales: dict[int, int] = {}
    handlers: dict[int, str] = {}
    for trak in traks:
        track_id = _track_id(data, _require(data, trak, "tkhd"))
        if track_id in timescales:
            raise ValueError(f"moov box has two trak boxes for track {track_id}")
        mdia = _require(data, trak, "mdia")
        timescales[track_id] = _timescale(data, _require(data, mdia, "mdhd"))
        hdlr = _Fields(data, _require(data, mdia, "hdlr"))
        hdlr.full_header()
        _, handler = hdlr.take(">I4s")
        handlers[track_id] = handler.decode("latin-1")
    defaults: dict[int, tuple[int, int]] = {}
    mvex = _child(data, moov, "mvex")
    for trex in [] if mvex is None else _children(data, mvex, "trex"):
        fields = _Fields(data, trex)
        fields.full_header()
        track_id, _, duration, _, flags = fields.take(">5I")
        if track_id not in timescales:
            raise ValueError(f"trex box names unknown track {track_id}")
        defaults[track_id] = (duration, flags)
    return InitInfo(
        tuple(
            TrackInfo(track_id, timescale, handlers[track_id], *defaults.get(track_id, (0, 0)))
            for track_id, timescale in timescales.items()
        )
    )


class FragmentSplitter:
    """Cuts a stream of media boxes, fed in arbitrary chunks, into CMAF fragments.

    A fragment ends with the mdat that follows a moof; it is returned by the `feed` call that
    completes that mdat. Memory stays bounded: a box larger than `max_box_bytes`, or a fragment
    larger than `max_fragment_bytes` (default twice `max_box_bytes`), is refused as soon as its
    header shows it, as is anything that is not a box. After a ValueError the splitter is
    spent (fragments the failing `feed` call had completed are lost with it): the upload is bad.
    """

    __slots__ = (
        "_buf",
        "_consumed",
        "_moof",
        "_pos",
        "_prfts",
        "init",
        "max_box_bytes",
        "max_fragment_bytes",
    )

    def __init__(
        self,
        init: InitInfo,
        *,
        max_box_bytes: int = DEFAULT_MAX_BOX_BYTES,
        max_fragment_bytes: int | None = None,
    ) -> None:
        if max_box_bytes < 16:
            raise ValueError(f"max_box_bytes must be >= 16, got {max_box_bytes}")
        self.init = init
        self.max_box_bytes = max_box_bytes
        self.max_fragment_bytes = (
            2 * max_box_bytes if max_fragment_bytes is None else max_fragment_bytes
        )
        """Most bytes held for one fragment, boxes before its moof included."""
        self._buf = bytearray()
        """BytesLike of the fragment being assembled."""
        self._pos = 0
        """Offset in `_buf` of the next box header."""
        self._consumed = 0
        """Stream offset of `_buf[0]`, for error messages."""
        self._moof: tuple[int, list[_TrackRun]] | None = None
        """Sequence number and runs of the current fragment's moof, once it is complete."""
        self._prfts: list[tuple[int, float]] = []
        """(reference track, capture time) of each prft of the current fragment."""

    def feed(self, chunk: BytesLike) -> list[Fragment]:
        """Take the next bytes of the stream; the fragments they complete, in order."""
        self._buf += chunk
        done: list[Fragment] = []
        while (box := self._next_box()) is not None:
            if box.type == "moof":
                if self._moof is not None:
                    raise ValueError(
                        f"moof box at byte {self._at(box)} follows a moof, not an mdat"
                    )
                self._moof = _parse_moof(self._buf, box, self.init)
            elif box.type == "mdat":
                done.append(self._finish(box))
            elif box.type == "prft":
                self._prfts.append(_parse_prft(self._buf, box))
            elif box.type == "moov":
                raise ValueError(
                    f"moov box at byte {self._at(box)}: an init segment, not media; "
                    "upload it on its own"
                )
        return done

    def close(self) -> bytes:
        """The bytes that did not complete a fragment (empty after a whole upload); resets."""
        rest = bytes(self._buf)
        self._consumed += len(self._buf)
        self._buf.clear()
        self._pos = 0
        self._moof = None
        self._prfts.clear()
        return rest

    def _next_box(self) -> Box | None:
        """The next box if all of it has arrived, else None; checks the limits on its header."""
        head = _read_header(self._buf, self._pos, len(self._buf), self._consumed)
        if head is None:
            return None
        kind, size, header = head
        at = self._consumed + self._pos
        if size == 0:
            raise ValueError(f"{kind} box at byte {at} has size 0 (to end of file): not splittable")
        if size > self.max_box_bytes:
            raise ValueError(
                f"{kind} box at byte {at} is {size} bytes, over the limit of {self.max_box_bytes}"
            )
        end = self._pos + size
        if end > self.max_fragment_bytes:
            raise ValueError(
                f"fragment at byte {self._consumed} exceeds the limit of "
                f"{self.max_fragment_bytes} bytes"
            )
        if end > len(self._buf):
            return None
        box = Box(kind, self._pos, size, header)
        self._pos = end
        return box

    def _finish(self, mdat: Box) -> Fragment:
        if self._moof is None:
            raise ValueError(f"mdat box at byte {self._at(mdat)} has no moof before it")
        sequence, runs = self._moof
        fragment = _fragment(bytes(self._buf[: mdat.end]), sequence, runs, self._prfts, self.init)
        del self._buf[: mdat.end]
        self._consumed += mdat.end
        self._pos = 0
        self._moof = None
        self._prfts = []
        return fragment

    def _at(self, box: Box) -> int:
        return self._consumed + box.start


@dataclass(frozen=True, slots=True)
class _TrackRun:
    """What one traf says about its track."""

    track_id: int
    base_decode_time: int | None
    duration: int
    """Sum of its sample durations, in the track's timescale."""
    first_flags: int | None
    """Sample flags of its first sample; None without samples."""


class _Fields:
    """Reads a box body's big-endian fields in order; reading past the box is a ValueError."""

    __slots__ = ("_data", "_end", "_pos", "_type")

    def __init__(self, data: BytesLike, box: Box) -> None:
        self._data = data
        self._type = box.type
        self._pos = box.body_start
        self._end = box.end

    def take(self, fmt: str) -> tuple[Any, ...]:
        """Unpack `fmt` (struct format, big-endian) at the current position and move past it."""
        size = struct.calcsize(fmt)
        if self._pos + size > self._end:
            raise ValueError(f"{self._type} box is truncated ({self._end - self._pos} bytes left)")
        values = struct.unpack_from(fmt, self._data, self._pos)
        self._pos += size
        return values

    def u32(self) -> int:
        return self.take(">I")[0]

    def full_header(self) -> tuple[int, int]:
        """(version, flags) of a FullBox (4.2)."""
        word = self.u32()
        return word >> 24, word & 0xFF_FFFF

    def skip(self, size: int) -> None:
        self.take(f">{size}x")

    @property
    def remaining(self) -> int:
        return self._end - self._pos


def _read_header(
    data: BytesLike, offset: int, end: int, base: int = 0
) -> tuple[str, int, int] | None:
    """(type, size, header size) of the box at `offset`; None if its header is not all there.

    Size 0 (to the end) is returned as 0. ValueError for a bad type or a size below the header;
    its message gives the offset plus `base`.
    """
    if end - offset < 8:
        return None
    size, raw = struct.unpack_from(">I4s", data, offset)
    if not all(byte in _BYTE_TYPE_CHARS for byte in raw):
        raise ValueError(f"not an ISO-BMFF box at byte {base + offset}: type {bytes(raw)!r}")
    kind = raw.decode("latin-1")
    header = 8
    if size == 1:
        if end - offset < 16:
            return None
        (size,) = struct.unpack_from(">Q", data, offset + 8)
        header = 16
    if kind == "uuid":
        header += 16
        if end - offset < header:
            return None
    if size != 0 and size < header:
        raise ValueError(
            f"{kind} box at byte {base + offset}: size {size} is smaller than its header"
        )
    return kind, size, header


def _children(data: BytesLike, parent: Box, kind: str) -> list[Box]:
    return [box for box in iter_boxes(data, parent.body_start, parent.end) if box.type == kind]


def _child(data: BytesLike, parent: Box, kind: str) -> Box | None:
    found = _children(data, parent, kind)
    return found[0] if found else None


def _require(data: BytesLike, parent: Box, kind: str) -> Box:
    box = _child(data, parent, kind)
    if box is None:
        raise ValueError(f"{parent.type} box has no {kind} box")
    return box


def _track_id(data: BytesLike, tkhd: Box) -> int:
    fields = _Fields(data, tkhd)
    version, _ = fields.full_header()
    fields.skip(16 if version == 1 else 8)
    return fields.u32()


def _timescale(data: BytesLike, mdhd: Box) -> int:
    fields = _Fields(data, mdhd)
    version, _ = fields.full_header()
    fields.skip(16 if version == 1 else 8)
    timescale = fields.u32()
    if timescale == 0:
        raise ValueError("mdhd box has timescale 0")
    return timescale


def _parse_moof(data: BytesLike, moof: Box, init: InitInfo) -> tuple[int, list[_TrackRun]]:
    """Sequence number and one `_TrackRun` per traf of a moof (8.8.4)."""
    mfhd = _Fields(data, _require(data, moof, "mfhd"))
    mfhd.full_header()
    sequence = mfhd.u32()
    trafs = _children(data, moof, "traf")
    if not trafs:
        raise ValueError("moof box has no traf box")
    return sequence, [_parse_traf(data, traf, init) for traf in trafs]


def _parse_traf(data: BytesLike, traf: Box, init: InitInfo) -> _TrackRun:
    tfhd = _Fields(data, _require(data, traf, "tfhd"))
    _, flags = tfhd.full_header()
    track = init.track(tfhd.u32())
    if flags & TFHD_BASE_DATA_OFFSET:
        tfhd.skip(8)
    if flags & TFHD_SAMPLE_DESCRIPTION_INDEX:
        tfhd.skip(4)
    default_duration = (
        tfhd.u32() if flags & TFHD_DEFAULT_DURATION else track.default_sample_duration
    )
    if flags & TFHD_DEFAULT_SIZE:
        tfhd.skip(4)
    default_flags = tfhd.u32() if flags & TFHD_DEFAULT_FLAGS else track.default_sample_flags
    base_decode_time = None
    tfdt_box = _child(data, traf, "tfdt")
    if tfdt_box is not None:
        tfdt = _Fields(data, tfdt_box)
        version, _ = tfdt.full_header()
        (base_decode_time,) = tfdt.take(">Q" if version == 1 else ">I")
    duration = 0
    first_flags: int | None = None
    for trun_box in _children(data, traf, "trun"):
        trun = _Fields(data, trun_box)
        _, flags = trun.full_header()
        count = trun.u32()
        if flags & TRUN_DATA_OFFSET:
            trun.skip(4)
        first = trun.u32() if flags & TRUN_FIRST_SAMPLE_FLAGS else None
        present = [f for f in (TRUN_DURATION, TRUN_SIZE, TRUN_FLAGS, TRUN_CTS_OFFSET) if flags & f]
        width = len(present)
        if count * width * 4 > trun.remaining:
            raise ValueError(f"trun box is truncated: {count} samples declared")
        values = trun.take(f">{count * width}I") if width else ()
        if flags & TRUN_DURATION:
            duration += sum(values[present.index(TRUN_DURATION) :: width])
        else:
            duration += count * default_duration
        if first_flags is None and count:
            if first is not None:
                first_flags = first
            elif flags & TRUN_FLAGS:
                first_flags = values[present.index(TRUN_FLAGS)]
            else:
                first_flags = default_flags
    return _TrackRun(track.track_id, base_decode_time, duration, first_flags)


def _parse_prft(data: BytesLike, prft: Box) -> tuple[int, float]:
    """(reference track, capture time as Unix seconds) of a ProducerReferenceTimeBox (8.16.5)."""
    fields = _Fields(data, prft)
    version, _ = fields.full_header()
    track_id, ntp = fields.take(">IQ")
    fields.skip(8 if version == 1 else 4)  # media_time
    return track_id, ntp_to_unix(ntp)


def _fragment(
    data: bytes,
    sequence: int,
    runs: list[_TrackRun],
    prfts: list[tuple[int, float]],
    init: InitInfo,
) -> Fragment:
    track_ids = [run.track_id for run in runs]
    track_id = init.main_track_id if init.main_track_id in track_ids else track_ids[0]
    own = [run for run in runs if run.track_id == track_id]
    first_flags = next((run.first_flags for run in own if run.first_flags is not None), None)
    base_decode_time: dict[int, int] = {}
    for run in runs:
        if run.base_decode_time is not None:
            base_decode_time.setdefault(run.track_id, run.base_decode_time)
    capture = [at for ref, at in prfts if ref == track_id] or [at for _, at in prfts]
    return Fragment(
        data=data,
        sequence=sequence,
        track_id=track_id,
        duration_s=sum(run.duration for run in own) / init.track(track_id).timescale,
        independent=first_flags is not None and not first_flags & SAMPLE_IS_NON_SYNC,
        base_decode_time=base_decode_time,
        capture_s=capture[0] if capture else None,
    )


def first_capture_s(data: BytesLike) -> float | None:
    """Unix capture time of the first prft before the first moof of a part or segment; None
    when there is none."""
    for box in iter_boxes(data):
        if box.type == "prft":
            return _parse_prft(data, box)[1]
        if box.type == "moof":
            return None
    return None


def ntp_to_unix(ntp: int) -> float:
    """Unix seconds of a 64-bit NTP timestamp; seconds below 2**31 are era 1 (RFC 4330 3)."""
    seconds, fraction = divmod(ntp, NTP_ERA_S)
    if seconds < 1 << 31:
        seconds += NTP_ERA_S
    return (seconds - NTP_UNIX_OFFSET_S) + fraction / NTP_ERA_S
