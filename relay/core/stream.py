"""The live window of one rendition: segments and their parts, as an origin knows them.

Sans-IO in the h11 manner: no sockets and no clock. Every mutating call takes `now` (seconds,
any monotonic origin) and stamps it on what it publishes. Terms follow RFC 8216bis: a Media
Segment is identified by its Media Sequence Number (msn), a Partial Segment by its Part Index
inside its Parent Segment.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

_EPS_S = 1e-9
"""Slack for float sums of part durations (six parts of 1/3 s are not exactly 2 s)."""


@dataclass(frozen=True, slots=True)
class Part:
    """A Partial Segment (RFC 8216bis 4.4.4.9 "EXT-X-PART")."""

    msn: int
    """Media Sequence Number of the Parent Segment."""
    index: int
    """Part Index inside the Parent Segment, from 0."""
    duration_s: float
    independent: bool
    """Starts with an independent frame (INDEPENDENT=YES)."""
    published_s: float
    """`now` when the part was added."""

    @property
    def uri(self) -> str:
        """Relative URI of the part."""
        return f"seg{self.msn}.part{self.index}.m4s"


@dataclass(frozen=True, slots=True)
class Segment:
    """A complete Media Segment (RFC 8216bis 3 "Media Segments")."""

    msn: int
    duration_s: float
    parts: tuple[Part, ...]
    """Its Partial Segments; empty for classic HLS."""
    published_s: float
    """`now` when the segment was completed."""

    @property
    def uri(self) -> str:
        """Relative URI of the segment."""
        return f"seg{self.msn}.m4s"


class LiveStream:
    """The window of recent segments and parts of one live rendition, as an origin knows it.

    With `part_target_s` set the stream is LL-HLS: media arrives as parts (`add_part`) and
    `close_segment` turns the open segment's parts into a segment. Without it the stream is
    classic HLS and media arrives as whole segments (`add_segment`). Only the newest
    `window_segments` complete segments are kept (RFC 8216bis 6.2.2 "Live Playlists").
    """

    __slots__ = (
        "_declared_target_s",
        "_ended",
        "_next_msn",
        "_open",
        "_segments",
        "name",
        "part_target_s",
        "target_duration_s",
        "window_segments",
    )

    def __init__(
        self,
        name: str,
        *,
        target_duration_s: float,
        part_target_s: float | None,
        window_segments: int = 10,
    ) -> None:
        if not target_duration_s > 0:
            raise ValueError(f"target_duration_s must be > 0, got {target_duration_s}")
        if part_target_s is not None and not 0 < part_target_s <= target_duration_s:
            raise ValueError(
                f"part_target_s must be in (0, target_duration_s={target_duration_s}], "
                f"got {part_target_s}"
            )
        if window_segments < 1:
            raise ValueError(f"window_segments must be >= 1, got {window_segments}")
        self.name = name
        self.target_duration_s = target_duration_s
        """Configured segment target; see `declared_target_s` for the playlist's value."""
        self.part_target_s = part_target_s
        """PART-TARGET in seconds; None for classic HLS."""
        self.window_segments = window_segments
        self._segments: list[Segment] = []
        self._open: list[Part] = []
        self._next_msn = 0
        self._ended = False
        self._declared_target_s = _ceil_s(target_duration_s)

    # -- state ---------------------------------------------------------------------------------

    @property
    def ended(self) -> bool:
        """EXT-X-ENDLIST has been published; nothing more will be added."""
        return self._ended

    @property
    def next_msn(self) -> int:
        """Media Sequence Number of the open (incomplete) segment."""
        return self._next_msn

    @property
    def next_part_index(self) -> int:
        """Part Index the next part of the open segment will get."""
        return len(self._open)

    @property
    def first_msn(self) -> int:
        """EXT-X-MEDIA-SEQUENCE: msn of the oldest segment in the window."""
        return self._segments[0].msn if self._segments else self._next_msn

    @property
    def declared_target_s(self) -> int:
        """EXT-X-TARGETDURATION (RFC 8216bis 4.4.3.1): an integer no segment exceeds.

        The configured target rounded up, raised (never lowered) if a longer segment arrives.
        """
        return self._declared_target_s

    def segments(self) -> Sequence[Segment]:
        """Complete segments in the window, oldest first."""
        return tuple(self._segments)

    def open_parts(self) -> Sequence[Part]:
        """Parts of the open segment, in order."""
        return tuple(self._open)

    def has_segment(self, msn: int) -> bool:
        """Segment `msn` is complete (it may since have slid out of the window)."""
        return 0 <= msn < self._next_msn

    def has_part(self, msn: int, index: int) -> bool:
        """Part `index` of segment `msn`, or a later one, has been published.

        RFC 8216bis 6.2.5.2 "Blocking Playlist Reload": an index past the last part of a complete
        segment means part 0 of the next segment. Parts of segments that slid out of the window
        count as present (later media exists). Always False for a classic (part-less) stream.
        """
        if self.part_target_s is None or msn < 0 or index < 0:
            return False
        if msn >= self._next_msn:
            return msn == self._next_msn and index < len(self._open)
        first = self.first_msn
        if msn < first:
            return True
        if index < len(self._segments[msn - first].parts):
            return True
        return msn + 1 < self._next_msn or bool(self._open)

    # -- publishing ----------------------------------------------------------------------------

    def add_part(self, duration_s: float, *, independent: bool, now: float) -> Part:
        """Append a part to the open segment (RFC 8216bis 4.4.4.9: no part exceeds PART-TARGET)."""
        self._check_live()
        if self.part_target_s is None:
            raise ValueError(f"stream {self.name!r} has no parts (classic HLS): use add_segment")
        if not 0 < duration_s <= self.part_target_s + _EPS_S:
            raise ValueError(
                f"part duration_s must be in (0, part_target_s={self.part_target_s}], "
                f"got {duration_s}"
            )
        part = Part(self._next_msn, len(self._open), duration_s, independent, now)
        self._open.append(part)
        return part

    def close_segment(self, now: float) -> Segment:
        """Complete the open segment from its parts; its duration is their sum."""
        self._check_live()
        if self.part_target_s is None:
            raise ValueError(f"stream {self.name!r} has no parts (classic HLS): use add_segment")
        if not self._open:
            raise ValueError(f"stream {self.name!r}: the open segment has no parts to close")
        parts = tuple(self._open)
        self._open.clear()
        return self._append(sum(p.duration_s for p in parts), parts, now)

    def add_segment(self, duration_s: float, *, now: float) -> Segment:
        """Append a whole segment (classic HLS only)."""
        self._check_live()
        if self.part_target_s is not None:
            raise ValueError(f"stream {self.name!r} has parts (LL-HLS): use add_part")
        if not duration_s > 0:
            raise ValueError(f"segment duration_s must be > 0, got {duration_s}")
        return self._append(duration_s, (), now)

    def drop_through(self, msn: int) -> int:
        """Remove complete segments up to and including `msn` from the window (their media was
        deleted upstream); return how many were removed. The open segment is never removed."""
        keep = [segment for segment in self._segments if segment.msn > msn]
        dropped = len(self._segments) - len(keep)
        self._segments = keep
        return dropped

    def end(self, now: float) -> None:
        """Publish EXT-X-ENDLIST, completing the open segment if it has parts. Idempotent."""
        if self._ended:
            return
        if self._open:
            self.close_segment(now)
        self._ended = True

    # -- internals -----------------------------------------------------------------------------

    def _check_live(self) -> None:
        if self._ended:
            raise ValueError(f"stream {self.name!r} has ended")

    def _append(self, duration_s: float, parts: tuple[Part, ...], now: float) -> Segment:
        segment = Segment(self._next_msn, duration_s, parts, now)
        self._segments.append(segment)
        if len(self._segments) > self.window_segments:
            del self._segments[0]
        self._next_msn += 1
        self._declared_target_s = max(self._declared_target_s, _ceil_s(duration_s))
        return segment


def _ceil_s(duration_s: float) -> int:
    """Whole seconds, rounded up, ignoring float noise."""
    return max(1, math.ceil(duration_s - 1e-6))
