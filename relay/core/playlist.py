"""Media Playlists: render a LiveStream, parse one back, check one against the protocol rules.

Rendering follows RFC 8216bis: 4.4.3 "Media Playlist Tags", 4.4.4.9 "EXT-X-PART", 4.4.5.2
"EXT-X-SKIP", 4.4.5.3 "EXT-X-PRELOAD-HINT", 6.2.2 "Live Playlists" and 6.2.5.1 "Playlist Delta
Updates". Durations are printed with 5 decimals; PART-TARGET and the hold-backs are rounded up so
the printed limits are never tighter than the real ones.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from relay.core.stream import LiveStream, Segment

_QUANTUM_S = 1e-5
"""Resolution of printed durations."""
_EPS_S = 1e-9
PART_HOLD_BACK_MIN_PARTS = 2.0
"""RFC 8216bis 4.4.3.8: PART-HOLD-BACK >= 2x PART-TARGET (3x recommended, the default here)."""
HOLD_BACK_MIN_TARGETS = 3.0
"""RFC 8216bis 4.4.3.8: HOLD-BACK >= 3x the Target Duration."""
CAN_SKIP_UNTIL_MIN_TARGETS = 6.0
"""RFC 8216bis 4.4.3.8: the Skip Boundary is at least 6x the Target Duration."""
PART_LISTED_TARGETS = 3.0
"""RFC 8216bis 6.2.2: EXT-X-PART tags go once more than 3 Target Durations from the end."""


# -- rendering ---------------------------------------------------------------------------------


def render_playlist(
    stream: LiveStream,
    *,
    part_hold_back_s: float | None = None,
    hold_back_s: float | None = None,
    skip: bool = False,
    map_uri: str | None = None,
) -> str:
    """The Media Playlist of `stream` as text (lines end with a newline).

    Hold-backs default to 3x PART-TARGET and 3x the Target Duration; smaller values than the RFC
    minimums raise ValueError. `skip=True` answers `_HLS_skip=YES` with a Playlist Delta Update
    when segments lie beyond the Skip Boundary (ignored for classic HLS and once ended).
    `map_uri` adds EXT-X-MAP for fMP4 media.
    """
    target_s = stream.declared_target_s
    part_target_s = stream.part_target_s
    hold_back_s = _checked_hold_back(hold_back_s, target_s)
    segments = stream.segments()
    lines = ["#EXTM3U", "(version)", f"#EXT-X-TARGETDURATION:{target_s}"]
    if part_target_s is None:
        if part_hold_back_s is not None:
            raise ValueError("part_hold_back_s needs a stream with parts (LL-HLS)")
        lines.append(f"#EXT-X-SERVER-CONTROL:HOLD-BACK={_fmt_up(hold_back_s)}")
        skipped = 0
    else:
        part_hold_back_s = _checked_part_hold_back(part_hold_back_s, part_target_s)
        skip_until_s = CAN_SKIP_UNTIL_MIN_TARGETS * target_s
        lines.append(
            "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES"
            f",CAN-SKIP-UNTIL={_fmt_up(skip_until_s)}"
            f",PART-HOLD-BACK={_fmt_up(part_hold_back_s)}"
            f",HOLD-BACK={_fmt_up(hold_back_s)}"
        )
        lines.append(f"#EXT-X-PART-INF:PART-TARGET={_fmt_up(part_target_s)}")
        skipped = _skippable(segments, skip_until_s) if skip and not stream.ended else 0
    lines.append(f"#EXT-X-MEDIA-SEQUENCE:{stream.first_msn}")
    if map_uri is not None:
        lines.append(f'#EXT-X-MAP:URI="{map_uri}"')
    if skipped:
        lines.append(f"#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}")
    # RFC 8216bis 8 "Protocol Version Compatibility": the lowest version the tags need.
    lines[1] = f"#EXT-X-VERSION:{9 if skipped else 6 if map_uri is not None else 3}"
    first_listed = _first_segment_with_parts(stream, target_s)
    for position in range(skipped, len(segments)):
        segment = segments[position]
        if position >= first_listed:
            lines.extend(_part_line(p.duration_s, p.uri, p.independent) for p in segment.parts)
        lines.append(f"#EXTINF:{_fmt(segment.duration_s)},")
        lines.append(segment.uri)
    if part_target_s is not None:
        lines.extend(_part_line(p.duration_s, p.uri, p.independent) for p in stream.open_parts())
        if not stream.ended:
            hint_uri = f"seg{stream.next_msn}.part{stream.next_part_index}.m4s"
            lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{hint_uri}"')
    if stream.ended:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def _checked_hold_back(hold_back_s: float | None, target_s: int) -> float:
    minimum_s = HOLD_BACK_MIN_TARGETS * target_s
    if hold_back_s is None:
        return minimum_s
    if hold_back_s < minimum_s - _EPS_S:
        raise ValueError(
            f"hold_back_s must be >= 3x the target duration ({minimum_s}), got {hold_back_s}"
        )
    return hold_back_s


def _checked_part_hold_back(part_hold_back_s: float | None, part_target_s: float) -> float:
    if part_hold_back_s is None:
        return 3.0 * part_target_s
    minimum_s = PART_HOLD_BACK_MIN_PARTS * part_target_s
    if part_hold_back_s < minimum_s - _EPS_S:
        raise ValueError(
            f"part_hold_back_s must be >= 2x PART-TARGET ({minimum_s}), got {part_hold_back_s}"
        )
    return part_hold_back_s


def _skippable(segments: Sequence[Segment], skip_until_s: float) -> int:
    """Leading segments wholly further than the Skip Boundary from the last segment's end."""
    distance_s = 0.0
    keep = 0
    for segment in reversed(segments):
        if distance_s > skip_until_s + _EPS_S:
            break
        keep += 1
        distance_s += segment.duration_s
    return len(segments) - keep


def _first_segment_with_parts(stream: LiveStream, target_s: int) -> int:
    """Position of the oldest complete segment whose parts are still listed.

    A segment keeps its EXT-X-PART tags while its start is within 3 Target Durations of the end
    of the playlist, so no listed part is further than that (RFC 8216bis 6.2.2).
    """
    segments = stream.segments()
    limit_s = PART_LISTED_TARGETS * target_s + _EPS_S
    distance_s = sum(p.duration_s for p in stream.open_parts())
    position = len(segments)
    while position > 0:
        distance_s += segments[position - 1].duration_s
        if distance_s > limit_s:
            break
        position -= 1
    return position


def _part_line(duration_s: float, uri: str, independent: bool) -> str:
    flag = ",INDEPENDENT=YES" if independent else ""
    return f'#EXT-X-PART:DURATION={_fmt(duration_s)},URI="{uri}"{flag}'


def _fmt(duration_s: float) -> str:
    return f"{duration_s:.5f}"


def _fmt_up(duration_s: float) -> str:
    """Rounded up to the printed resolution, ignoring float noise."""
    return f"{math.ceil(duration_s / _QUANTUM_S - 1e-6) * _QUANTUM_S:.5f}"


# -- parsing -----------------------------------------------------------------------------------


class PlaylistSegment(NamedTuple):
    """A Media Segment line as listed."""

    msn: int
    duration_s: float
    uri: str


class PlaylistPart(NamedTuple):
    """An EXT-X-PART tag; `part_index` counts the tags listed for its Parent Segment."""

    msn: int
    part_index: int
    duration_s: float
    uri: str
    independent: bool


class PreloadHint(NamedTuple):
    """An EXT-X-PRELOAD-HINT tag."""

    type: str
    uri: str


@dataclass(slots=True)
class ParsedPlaylist:
    """What a Media Playlist says, in seconds where it is a duration."""

    target_duration: int | None = None
    """EXT-X-TARGETDURATION; None when missing."""
    part_target: float | None = None
    """PART-TARGET of EXT-X-PART-INF; None for classic HLS."""
    media_sequence: int = 0
    server_control: dict[str, str] = field(default_factory=dict)
    """Attributes of EXT-X-SERVER-CONTROL, values as written."""
    segments: list[PlaylistSegment] = field(default_factory=list)
    parts: list[PlaylistPart] = field(default_factory=list)
    preload_hints: list[PreloadHint] = field(default_factory=list)
    ended: bool = False
    version: int | None = None
    skipped_segments: int = 0
    """SKIPPED-SEGMENTS of EXT-X-SKIP (a Playlist Delta Update); 0 for a full playlist."""
    map_uri: str | None = None


_ATTRIBUTE = re.compile(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)')


def parse_playlist(text: str) -> ParsedPlaylist:
    """Read a Media Playlist; ValueError naming the line for text that is not one.

    Tags this module does not use are skipped. Segment msns count from EXT-X-MEDIA-SEQUENCE
    plus any skipped segments; parts after the last segment belong to the next msn.
    """
    lines = text.splitlines()
    if not lines or lines[0].strip() != "#EXTM3U":
        raise ValueError("line 1: a playlist starts with #EXTM3U")
    parsed = ParsedPlaylist()
    msn: int | None = None
    part_index = 0
    extinf_s: float | None = None
    for number, raw in enumerate(lines[1:], start=2):
        line = raw.strip()
        if not line:
            continue
        if not line.startswith("#"):
            if extinf_s is None:
                raise ValueError(f"line {number}: segment URI {line!r} without #EXTINF")
            msn = parsed.media_sequence + parsed.skipped_segments if msn is None else msn
            parsed.segments.append(PlaylistSegment(msn, extinf_s, line))
            msn, part_index, extinf_s = msn + 1, 0, None
            continue
        tag, _, value = line.partition(":")
        try:
            if tag == "#EXTINF":
                extinf_s = float(value.split(",", 1)[0])
            elif tag == "#EXT-X-PART":
                attrs = _attributes(value)
                msn = parsed.media_sequence + parsed.skipped_segments if msn is None else msn
                parsed.parts.append(
                    PlaylistPart(
                        msn,
                        part_index,
                        float(attrs["DURATION"]),
                        attrs["URI"],
                        attrs.get("INDEPENDENT") == "YES",
                    )
                )
                part_index += 1
            elif tag == "#EXT-X-TARGETDURATION":
                parsed.target_duration = int(value)
            elif tag == "#EXT-X-MEDIA-SEQUENCE":
                parsed.media_sequence = int(value)
            elif tag == "#EXT-X-VERSION":
                parsed.version = int(value)
            elif tag == "#EXT-X-SERVER-CONTROL":
                parsed.server_control = _attributes(value)
            elif tag == "#EXT-X-PART-INF":
                parsed.part_target = float(_attributes(value)["PART-TARGET"])
            elif tag == "#EXT-X-MAP":
                parsed.map_uri = _attributes(value)["URI"]
            elif tag == "#EXT-X-SKIP":
                parsed.skipped_segments = int(_attributes(value)["SKIPPED-SEGMENTS"])
            elif tag == "#EXT-X-PRELOAD-HINT":
                attrs = _attributes(value)
                parsed.preload_hints.append(PreloadHint(attrs["TYPE"], attrs["URI"]))
            elif tag == "#EXT-X-ENDLIST":
                parsed.ended = True
        except (ValueError, KeyError) as exc:
            raise ValueError(f"line {number}: cannot read {line!r} ({exc})") from None
    return parsed


def _attributes(value: str) -> dict[str, str]:
    """An attribute list (RFC 8216bis 4.2), quotes removed from quoted strings."""
    return {name: v.strip('"') for name, v in _ATTRIBUTE.findall(value)}


# -- checking ----------------------------------------------------------------------------------


def check_playlist(parsed: ParsedPlaylist) -> list[str]:
    """Violations of the RFC 8216bis rules a player relies on; an empty list means valid.

    Hold-backs are compared with the slack of their 5-decimal printing.
    """
    problems: list[str] = []
    target = parsed.target_duration
    if target is None:
        problems.append("EXT-X-TARGETDURATION is missing (RFC 8216bis 4.4.3.1)")
    else:
        problems += [
            f"segment {s.msn} lasts {s.duration_s}s, rounding above "
            f"EXT-X-TARGETDURATION {target} (RFC 8216bis 4.4.3.1)"
            for s in parsed.segments
            if math.floor(s.duration_s + 0.5) > target
        ]
    control = parsed.server_control
    hold_back_s = _number(control, "HOLD-BACK", problems)
    if target is not None and hold_back_s is not None and hold_back_s < 3 * target:
        problems.append(f"HOLD-BACK {hold_back_s} is below 3x the target duration {target}")
    skip_until_s = _number(control, "CAN-SKIP-UNTIL", problems)
    if target is not None and skip_until_s is not None and skip_until_s < 6 * target:
        problems.append(f"CAN-SKIP-UNTIL {skip_until_s} is below 6x the target duration {target}")
    if parsed.skipped_segments and skip_until_s is None:
        problems.append("EXT-X-SKIP in a playlist that does not advertise CAN-SKIP-UNTIL")
    problems += _check_parts(parsed, _number(control, "PART-HOLD-BACK", problems))
    types = [hint.type for hint in parsed.preload_hints]
    problems += [
        f"{types.count(t)} EXT-X-PRELOAD-HINT tags of TYPE={t}; at most one is allowed"
        for t in sorted(set(types))
        if types.count(t) > 1
    ]
    return problems


def _check_parts(parsed: ParsedPlaylist, part_hold_back_s: float | None) -> list[str]:
    part_target_s = parsed.part_target
    if part_target_s is None:
        return ["EXT-X-PART without EXT-X-PART-INF"] if parsed.parts else []
    problems = [
        f"part {p.uri} lasts {p.duration_s}s, longer than PART-TARGET {part_target_s}"
        for p in parsed.parts
        if p.duration_s > part_target_s
    ]
    if part_hold_back_s is None:
        problems.append("EXT-X-PART-INF without PART-HOLD-BACK in EXT-X-SERVER-CONTROL")
    elif part_hold_back_s < PART_HOLD_BACK_MIN_PARTS * (part_target_s - _QUANTUM_S):
        problems.append(
            f"PART-HOLD-BACK {part_hold_back_s} is below 2x PART-TARGET {part_target_s}"
        )
    return problems


def _number(control: dict[str, str], name: str, problems: list[str]) -> float | None:
    """A numeric EXT-X-SERVER-CONTROL attribute, or None (noting it if it is not a number)."""
    raw = control.get(name)
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        problems.append(f"{name}={raw!r} in EXT-X-SERVER-CONTROL is not a number")
        return None
