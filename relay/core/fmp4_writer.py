"""Fragmented MP4 (CMAF): write synthetic init segments and fragments of grey H.264 video.

Sans-IO: arguments in, bytes out; no sockets and no clock. Box layouts follow ISO/IEC 14496-12
(ISO-BMFF); the section numbers below refer to it. The built-in publisher writes its stream with
`init_segment` and `fragment`; `relay.core.fmp4` reads it back. Out-of-range arguments raise
ValueError with one line.
"""

from __future__ import annotations

import functools
import math
import re
import struct
from collections.abc import Sequence

from relay.core.fmp4 import (
    NTP_ERA_S,
    NTP_UNIX_OFFSET_S,
    SAMPLE_IS_NON_SYNC,
    TFHD_DEFAULT_FLAGS,
    TRUN_DATA_OFFSET,
    TRUN_DURATION,
    TRUN_FIRST_SAMPLE_FLAGS,
    TRUN_SIZE,
    BytesLike,
)

WRITER_TRACK_ID = 1
"""Track ID of the single video track that `init_segment` and `fragment` write."""
_UNIX_MIN_S = (1 << 31) - NTP_UNIX_OFFSET_S
"""First Unix second an NTP timestamp can carry (1968-01-20, RFC 4330 section 3)."""
_UNIX_END_S = (1 << 31) + NTP_ERA_S - NTP_UNIX_OFFSET_S
"""End of the NTP era-1 range (2104-02-26, RFC 4330 section 3)."""
# tfhd flag (8.8.7.1) that only the writer sets
TFHD_DEFAULT_BASE_IS_MOOF = 0x20000
# Sample flags the writer sets: sample_depends_on 2 (an I frame), or 1 and non-sync.
_SYNC_SAMPLE_FLAGS = 0x0200_0000
_NON_SYNC_SAMPLE_FLAGS = 0x0100_0000 | SAMPLE_IS_NON_SYNC
_MIN_FILLER_BYTES = 6
"""Smallest filler-data NAL unit with its length: 4-byte length, header, rbsp trailing byte."""
_EMULATED_START_CODE = re.compile(b"\x00\x00(?=[\x00-\x03])")
"""Two zero bytes that need an emulation_prevention_three_byte (ITU-T H.264 7.4.1)."""
_MAX_MACROBLOCKS = 36_864
"""MaxFS of H.264 level 5.1, the level `init_segment` declares."""


def init_segment(timescale: int, width: int, height: int) -> bytes:
    """ftyp + moov of one H.264 video track (`WRITER_TRACK_ID`) for `fragment` to follow."""
    _check_range("timescale", timescale, 1, 1 << 32)
    _check_picture_size(width, height)
    matrix = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x4000_0000)
    mvhd = _full_box(
        b"mvhd", 0, 0, struct.pack(">5IH10x", 0, 0, 1000, 0, 0x10000, 0x100), matrix,
        bytes(24), struct.pack(">I", WRITER_TRACK_ID + 1),
    )  # fmt: skip
    tkhd = _full_box(
        b"tkhd", 0, 0x3, struct.pack(">5I8x4H", 0, 0, WRITER_TRACK_ID, 0, 0, 0, 0, 0, 0), matrix,
        struct.pack(">2I", width << 16, height << 16),
    )  # fmt: skip
    undetermined_language = 0x55C4  # 'und', ISO 639-2/T packed in three 5-bit letters
    mdhd = _full_box(
        b"mdhd", 0, 0, struct.pack(">4I2H", 0, 0, timescale, 0, undetermined_language, 0)
    )
    hdlr = _full_box(b"hdlr", 0, 0, struct.pack(">I4s12x", 0, b"vide"), b"VideoHandler\0")
    dinf = _box(b"dinf", _full_box(b"dref", 0, 0, struct.pack(">I", 1), _full_box(b"url ", 0, 1)))
    stbl = _box(
        b"stbl",
        _full_box(b"stsd", 0, 0, struct.pack(">I", 1), _avc1(width, height)),
        _full_box(b"stts", 0, 0, bytes(4)),
        _full_box(b"stsc", 0, 0, bytes(4)),
        _full_box(b"stsz", 0, 0, bytes(8)),
        _full_box(b"stco", 0, 0, bytes(4)),
    )
    minf = _box(b"minf", _full_box(b"vmhd", 0, 1, bytes(8)), dinf, stbl)
    trex = _full_box(b"trex", 0, 0, struct.pack(">5I", WRITER_TRACK_ID, 1, 0, 0, 0))
    moov = _box(
        b"moov",
        mvhd,
        _box(b"trak", tkhd, _box(b"mdia", mdhd, hdlr, minf)),
        _box(b"mvex", trex),
    )
    return _box(b"ftyp", b"iso6", bytes(4), b"iso6cmfcmp41") + moov


def fragment(
    sequence: int,
    base_decode_time: int,
    sample_durations: Sequence[int],
    samples: Sequence[int | BytesLike],
    *,
    independent: bool,
    capture_s: float,
) -> bytes:
    """prft + moof(mfhd, traf(tfhd, tfdt, trun)) + mdat of `WRITER_TRACK_ID`.

    Sample i lasts `sample_durations[i]` ticks of the init's timescale. `samples[i]` is its
    bytes (H.264 with 4-byte NAL lengths: `grey_picture` gives pictures any decoder shows), or
    a size in bytes (at least 6) for an opaque sample of filler data, which decoders skip with
    a complaint. The first sample is flagged a sync sample if `independent`, the others are
    not. The prft stamps `capture_s` (Unix time) on `base_decode_time`.
    """
    count = len(sample_durations)
    if count == 0 or len(samples) != count:
        raise ValueError(
            f"need one sample per duration and at least one, got {count} duration(s) and "
            f"{len(samples)} sample(s)"
        )
    _check_range("sequence", sequence, 0, 1 << 32)
    _check_range("base_decode_time", base_decode_time, 0, 1 << 64)
    for duration in sample_durations:
        _check_range("sample duration", duration, 0, 1 << 32)
    chunks: list[bytes] = []
    for sample in samples:
        if isinstance(sample, int):
            _check_range("sample size", sample, _MIN_FILLER_BYTES, 1 << 32)
            chunks.append(_filler_nal(sample))
        else:
            chunks.append(bytes(sample))
            _check_range("sample size", len(chunks[-1]), 0, 1 << 32)
    body = b"".join(chunks)
    prft = _full_box(
        b"prft",
        1,
        0,
        struct.pack(">IQQ", WRITER_TRACK_ID, _unix_to_ntp(capture_s), base_decode_time),
    )
    first_flags = _SYNC_SAMPLE_FLAGS if independent else _NON_SYNC_SAMPLE_FLAGS
    sizes = (len(chunk) for chunk in chunks)
    pairs = zip(sample_durations, sizes, strict=True)
    table = struct.pack(f">{2 * count}I", *(value for pair in pairs for value in pair))

    def moof(data_offset: int) -> bytes:
        trun_flags = TRUN_DATA_OFFSET | TRUN_FIRST_SAMPLE_FLAGS | TRUN_DURATION | TRUN_SIZE
        tfhd_flags = TFHD_DEFAULT_BASE_IS_MOOF | TFHD_DEFAULT_FLAGS
        tfhd = struct.pack(">2I", WRITER_TRACK_ID, _NON_SYNC_SAMPLE_FLAGS)
        trun = struct.pack(">IiI", count, data_offset, first_flags) + table
        traf = _box(
            b"traf",
            _full_box(b"tfhd", 0, tfhd_flags, tfhd),
            _full_box(b"tfdt", 1, 0, struct.pack(">Q", base_decode_time)),
            _full_box(b"trun", 0, trun_flags, trun),
        )
        return _box(b"moof", _full_box(b"mfhd", 0, 0, struct.pack(">I", sequence)), traf)

    mdat = _box(b"mdat", body)
    moof_size = len(moof(0))
    return prft + moof(moof_size + len(mdat) - len(body)) + mdat


def grey_picture(width: int, height: int, min_bytes: int = 0, *, idr_pic_id: int = 0) -> bytes:
    """One sample for `fragment`: a mid-grey H.264 IDR picture, padded to at least `min_bytes`.

    Any decoder shows it, so players and ffmpeg read the publisher's stream without errors.
    Padding is a filler-data NAL unit, which is at least 6 bytes, so the result is exactly
    `min_bytes` long unless that is under 6 bytes above the bare picture (then up to 5 more);
    it is never shorter than the bare picture (1 byte per 16x16 macroblock, plus a few).
    Consecutive pictures must differ in `idr_pic_id` (alternate 0 and 1). Width and height
    must be those given to `init_segment`.
    """
    _check_picture_size(width, height)
    _check_range("idr_pic_id", idr_pic_id, 0, 1 << 16)
    picture = _grey_idr(width, height, idr_pic_id)
    pad = min_bytes - len(picture)
    if pad <= 0:
        return picture
    return picture + _filler_nal(max(pad, _MIN_FILLER_BYTES))


def _unix_to_ntp(unix_s: float) -> int:
    """64-bit NTP timestamp of a Unix time, the inverse of `ntp_to_unix`."""
    if not _UNIX_MIN_S <= unix_s < _UNIX_END_S:
        raise ValueError(
            f"capture_s must be a Unix time in [{_UNIX_MIN_S}, {_UNIX_END_S}), got {unix_s}"
        )
    whole = math.floor(unix_s)
    fraction = round((unix_s - whole) * NTP_ERA_S)
    return (((whole + NTP_UNIX_OFFSET_S) % NTP_ERA_S) << 32) + fraction


def _box(kind: bytes, *parts: bytes) -> bytes:
    body = b"".join(parts)
    if len(body) + 8 <= 0xFFFF_FFFF:
        return struct.pack(">I4s", len(body) + 8, kind) + body
    return struct.pack(">I4sQ", 1, kind, len(body) + 16) + body


def _full_box(kind: bytes, version: int, flags: int, *parts: bytes) -> bytes:
    return _box(kind, struct.pack(">I", version << 24 | flags), *parts)


def _check_range(name: str, value: int, low: int, end: int) -> None:
    if not low <= value < end:
        raise ValueError(f"{name} must be in [{low}, {end}), got {value}")


def _check_picture_size(width: int, height: int) -> None:
    _check_range("width", width, 2, 8193)
    _check_range("height", height, 2, 8193)
    if width % 2 or height % 2:
        raise ValueError(f"width and height must be even, got {width}x{height}")
    if math.ceil(width / 16) * math.ceil(height / 16) > _MAX_MACROBLOCKS:
        raise ValueError(f"{width}x{height} is over {_MAX_MACROBLOCKS} macroblocks (level 5.1)")


def _filler_nal(size: int) -> bytes:
    """One length-prefixed H.264 filler-data NAL unit (type 12) of `size` bytes in all."""
    return struct.pack(">IB", size - 4, 0x0C) + b"\xff" * (size - 6) + b"\x80"


def _avc1(width: int, height: int) -> bytes:
    """AVC sample entry (ISO/IEC 14496-15 5.4.2) with an avcC of one SPS and one PPS."""
    sps, pps = _sps(width, height), _pps()
    avcc = _box(
        b"avcC",
        bytes([1, sps[1], sps[2], sps[3], 0xFF, 0xE1]),  # 4-byte NAL lengths, one SPS
        struct.pack(">H", len(sps)), sps, b"\x01", struct.pack(">H", len(pps)), pps,
    )  # fmt: skip
    compressor = bytes(32)
    return _box(
        b"avc1",
        bytes(6), struct.pack(">H16x2H3I", 1, width, height, 0x480000, 0x480000, 0),
        struct.pack(">H", 1), compressor, struct.pack(">Hh", 0x18, -1), avcc,
    )  # fmt: skip


class _Bits:
    """MSB-first bit writer with Exp-Golomb codes (ITU-T H.264 9.1)."""

    __slots__ = ("_bits",)

    def __init__(self) -> None:
        self._bits: list[str] = []
        """Runs of '0' and '1'."""

    def u(self, count: int, value: int) -> None:
        self._bits.append(format(value, f"0{count}b"))

    def ue(self, value: int) -> None:
        code = value + 1
        self.u(2 * code.bit_length() - 1, code)

    def extend(self, other: _Bits, times: int) -> None:
        """Append `other`'s bits `times` over."""
        self._bits.append("".join(other._bits) * times)

    def rbsp(self) -> bytes:
        """The bits with rbsp_trailing_bits, with emulation prevention bytes inserted (7.4.1)."""
        bits = "".join(self._bits) + "1"
        bits += "0" * (-len(bits) % 8)
        raw = int(bits, 2).to_bytes(len(bits) // 8, "big")
        return _EMULATED_START_CODE.sub(b"\x00\x00\x03", raw)


def _sps(width: int, height: int) -> bytes:
    """Constrained Baseline, level 5.1 sequence parameter set for a width x height picture."""
    mbs_wide, mbs_high = math.ceil(width / 16), math.ceil(height / 16)
    bits = _Bits()
    bits.u(8, 66)  # profile_idc: Baseline
    bits.u(8, 0xC0)  # constraint_set0 and set1: Constrained Baseline
    bits.u(8, 51)  # level_idc
    bits.ue(0)  # seq_parameter_set_id
    bits.ue(0)  # log2_max_frame_num_minus4
    bits.ue(2)  # pic_order_cnt_type
    bits.ue(1)  # max_num_ref_frames
    bits.u(1, 0)  # gaps_in_frame_num_value_allowed_flag
    bits.ue(mbs_wide - 1)
    bits.ue(mbs_high - 1)
    bits.u(1, 1)  # frame_mbs_only_flag
    bits.u(1, 1)  # direct_8x8_inference_flag
    crop_right, crop_bottom = (16 * mbs_wide - width) // 2, (16 * mbs_high - height) // 2
    bits.u(1, 1 if crop_right or crop_bottom else 0)
    if crop_right or crop_bottom:
        for offset in (0, crop_right, 0, crop_bottom):  # left, right, top, bottom in 2-pixel units
            bits.ue(offset)
    bits.u(1, 0)  # vui_parameters_present_flag
    return b"\x67" + bits.rbsp()


@functools.lru_cache(maxsize=8)
def _grey_idr(width: int, height: int, idr_pic_id: int) -> bytes:
    """A length-prefixed IDR slice NAL unit of a mid-grey picture for `_sps` and `_pps`.

    Every macroblock is I_16x16 with DC prediction and no residual; with no neighbours the
    prediction is 128, so the whole picture is grey (ITU-T H.264 7.3.4, 7.3.5, 8.3.3).
    """
    bits = _Bits()
    bits.ue(0)  # first_mb_in_slice
    bits.ue(7)  # slice_type: I, all slices of the picture
    bits.ue(0)  # pic_parameter_set_id
    bits.u(4, 0)  # frame_num (log2_max_frame_num = 4)
    bits.ue(idr_pic_id)
    bits.u(2, 0)  # no_output_of_prior_pics_flag, long_term_reference_flag
    bits.ue(0)  # slice_qp_delta, se(0)
    bits.ue(1)  # disable_deblocking_filter_idc: off
    macroblock = _Bits()
    macroblock.ue(3)  # mb_type I_16x16_2_0_0: DC prediction, no coded luma or chroma
    macroblock.ue(0)  # intra_chroma_pred_mode: DC
    macroblock.ue(0)  # mb_qp_delta, se(0)
    macroblock.u(1, 1)  # coeff_token of the Intra16x16 DC block: no coefficients (nC = 0)
    bits.extend(macroblock, math.ceil(width / 16) * math.ceil(height / 16))
    nal = b"\x65" + bits.rbsp()
    return struct.pack(">I", len(nal)) + nal


def _pps() -> bytes:
    """Picture parameter set for `_sps`: CAVLC, one slice group, deblocking control present."""
    bits = _Bits()
    for value in (0, 0):  # pic_parameter_set_id, seq_parameter_set_id
        bits.ue(value)
    bits.u(2, 0)  # entropy_coding_mode_flag, bottom_field_pic_order_in_frame_present_flag
    for value in (0, 0, 0):  # num_slice_groups_minus1, num_ref_idx_l0/l1_default_active_minus1
        bits.ue(value)
    bits.u(3, 0)  # weighted_pred_flag, weighted_bipred_idc
    for value in (0, 0, 0):  # pic_init_qp_minus26, pic_init_qs_minus26, chroma_qp_index_offset
        bits.ue(value)  # se(0) is ue(0)
    bits.u(3, 0b100)  # deblocking_filter_control_present, constrained_intra_pred, redundant_pic_cnt
    return b"\x68" + bits.rbsp()
