"""Blocking Playlist Reload (RFC 8216bis 6.2.5.2) as a pure decision.

A server asks `decide_reload` when a playlist request arrives and again whenever the stream
changes or a timer fires; it answers, keeps holding, or fails the request as told. The caller
keeps `held_since` (when it started holding) and always sends the whole playlist on ANSWER.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass

from relay.core.stream import LiveStream

MSN_AHEAD_MAX = 2
"""An `_HLS_msn` more than this many segments past the open one is refused at once."""
BLOCK_TARGETS = 3.0
"""A request still blocked after this many Target Durations gets 503."""


class Verdict(enum.Enum):
    """What to do with a playlist request now."""

    ANSWER = "answer"
    """Send the playlist (200)."""
    HOLD = "hold"
    """Keep the request; decide again when the stream changes or time passes."""
    BAD_REQUEST = "bad_request"
    """400: malformed or too far ahead."""
    UNAVAILABLE = "unavailable"
    """503: blocked for longer than 3 Target Durations."""


@dataclass(frozen=True, slots=True)
class Decision:
    """A verdict and, for 400 and 503, a one-line reason."""

    verdict: Verdict
    reason: str = ""


_ANSWER = Decision(Verdict.ANSWER)
_HOLD = Decision(Verdict.HOLD)


def advance_part_limit(part_target_s: float) -> float:
    """RFC 8216bis 6.2.5.2 Advance Part Limit: 3 / PART-TARGET below 1 s, else 3 (in parts)."""
    return 3.0 / part_target_s if part_target_s < 1.0 else 3.0


def decide_reload(
    stream: LiveStream,
    msn: int | None,
    part: int | None,
    *,
    now: float,
    held_since: float | None = None,
) -> Decision:
    """Decide a playlist request carrying `_HLS_msn=msn` and `_HLS_part=part` (None = absent).

    Rules (RFC 8216bis 6.2.5.2), in order: no directives -> ANSWER; a negative value, or
    `_HLS_part` without `_HLS_msn` -> BAD_REQUEST; EXT-X-ENDLIST published -> ANSWER (directives
    ignored); `_HLS_part` on a stream without parts -> BAD_REQUEST; msn more than 2 past the open
    segment, or the part more than the Advance Part Limit past the last published part ->
    BAD_REQUEST; the segment (or the part, with an index past a segment's last part meaning part 0
    of the next) exists -> ANSWER; held for less than 3 Target Durations -> HOLD; else
    UNAVAILABLE.

    How far ahead a part is: for the open segment, its index minus the last published index;
    for a later segment (whose part count is not known yet), its index plus one, a lower bound.
    """
    if msn is None and part is None:
        return _ANSWER
    if (msn is not None and msn < 0) or (part is not None and part < 0):
        return Decision(Verdict.BAD_REQUEST, "_HLS_msn and _HLS_part must not be negative")
    if msn is None:
        return Decision(Verdict.BAD_REQUEST, "_HLS_part needs _HLS_msn")
    if stream.ended:
        return _ANSWER
    next_msn = stream.next_msn
    if msn > next_msn + MSN_AHEAD_MAX:
        return Decision(
            Verdict.BAD_REQUEST,
            f"_HLS_msn={msn} is more than {MSN_AHEAD_MAX} segments past the live edge ({next_msn})",
        )
    if part is None:
        met = stream.has_segment(msn)
    else:
        part_target_s = stream.part_target_s
        if part_target_s is None:
            return Decision(Verdict.BAD_REQUEST, "_HLS_part on a stream without parts")
        if msn == next_msn:
            parts_ahead = part - (stream.next_part_index - 1)
        else:
            parts_ahead = part + 1 if msn > next_msn else 0
        if parts_ahead > advance_part_limit(part_target_s):
            return Decision(
                Verdict.BAD_REQUEST,
                f"_HLS_part={part} of segment {msn} is past the advance part limit",
            )
        met = stream.has_part(msn, part)
    if met:
        return _ANSWER
    if held_since is None or now - held_since < BLOCK_TARGETS * stream.declared_target_s:
        return _HOLD
    return Decision(
        Verdict.UNAVAILABLE,
        f"not available after {BLOCK_TARGETS:g} target durations ({now - held_since:.3f}s)",
    )


_DECIMAL = re.compile(r"-?[0-9]{1,18}")


def parse_reload_query(query: Mapping[str, str]) -> tuple[int | None, int | None]:
    """(`_HLS_msn`, `_HLS_part`) from a query string's parameters; None where absent.

    ValueError with a one-line message for a value that is not a decimal integer.
    """
    return _directive(query, "_HLS_msn"), _directive(query, "_HLS_part")


def _directive(query: Mapping[str, str], name: str) -> int | None:
    raw = query.get(name)
    if raw is None:
        return None
    if not _DECIMAL.fullmatch(raw):
        raise ValueError(f"{name} must be a decimal integer, got {raw!r}")
    return int(raw)
