"""One live stream at the origin: its part window (relay.core), its media bytes, its waiters.

Every CMAF fragment that arrives becomes an LL-HLS part at once. A segment closes at an
independent part once the open one has reached the segment target (or when the next part would
push it past the declared Target Duration), so segments start with key frames whenever the
encoder provides them. Media bytes are kept for the segments in the playlist window plus a
couple more, so requests already on their way still find them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from relay.core.fmp4 import Fragment, InitInfo
from relay.core.playlist import render_playlist
from relay.core.stream import LiveStream, Part
from relay.server.http import Response
from relay.server.push import PushHub

MEDIA_TYPE = "video/mp4"
PLAYLIST_TYPE = "application/vnd.apple.mpegurl"
_KEEP_EXTRA_SEGMENTS = 2
_EPS_S = 1e-6


class Channel:
    """Media and state of one stream; every mutation wakes the requests waiting on it."""

    def __init__(
        self,
        name: str,
        init: bytes,
        init_info: InitInfo,
        *,
        segment_s: float,
        part_target_s: float,
        window_segments: int,
        on_push_drop: Callable[[], None],
    ) -> None:
        self.name = name
        self.live = LiveStream(
            name,
            target_duration_s=segment_s,
            part_target_s=part_target_s,
            window_segments=window_segments,
        )
        self.segment_s = segment_s
        self.init_info = init_info
        self.init = Response(200, init, MEDIA_TYPE)
        self.parts: dict[tuple[int, int], Response] = {}
        self.segments: dict[int, Response] = {}
        self.files: dict[str, list[tuple[int, int]]] = {}
        """Ingest file name -> the parts it carried (for DELETE)."""
        self.push = PushHub(on_push_drop)
        self.push.init = init
        self._playlists: dict[bool, Response] = {}
        self._changed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # -- publishing ----------------------------------------------------------------------------

    def add(self, fragment: Fragment, file: str, now: float) -> Part:
        """Publish one fragment as the next part (closing the open segment first if due)."""
        live = self.live
        open_s = sum(p.duration_s for p in live.open_parts())
        due = fragment.independent and open_s >= self.segment_s - _EPS_S
        overflow = open_s + fragment.duration_s > live.declared_target_s + _EPS_S
        if live.open_parts() and (due or overflow):
            self._close_segment(now)
        part = live.add_part(fragment.duration_s, independent=fragment.independent, now=now)
        self.parts[(part.msn, part.index)] = Response(200, fragment.data, MEDIA_TYPE)
        self.files.setdefault(file, []).append((part.msn, part.index))
        self.push.publish(fragment.data, independent=fragment.independent)
        self._changed_now()
        return part

    def end(self, now: float) -> None:
        """EXT-X-ENDLIST: the encoder said the stream is over."""
        if self.live.ended:
            return
        if self.live.open_parts():
            self._close_segment(now)
        self.live.end(now)
        self.push.end()
        self._changed_now()

    def delete(self, file: str) -> bool:
        """Drop the media of an ingest file (the encoder deleted it); False if unknown.

        A complete segment that loses any part leaves the playlist with all segments before
        it, so nothing listed is missing (encoders delete oldest first).
        """
        keys = self.files.pop(file, None)
        if keys is None:
            return False
        for key in keys:
            self.parts.pop(key, None)
            self.segments.pop(key[0], None)
        complete = [msn for msn, _ in keys if msn < self.live.next_msn]
        if complete:
            self.live.drop_through(max(complete))
        self._changed_now()
        return True

    # -- reading -------------------------------------------------------------------------------

    def playlist(self, skip: bool) -> Response:
        """The current Media Playlist (rendered once per change)."""
        cached = self._playlists.get(skip)
        if cached is None:
            text = render_playlist(self.live, skip=skip, map_uri="init.mp4")
            cached = Response(
                200, text.encode(), PLAYLIST_TYPE, (("cache-control", "max-age=0, no-cache"),)
            )
            self._playlists[skip] = cached
        return cached

    async def changed(self, timeout_s: float) -> None:
        """Wait until the stream changes or `timeout_s` passes."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._changed), timeout_s)

    # -- internals -----------------------------------------------------------------------------

    def _close_segment(self, now: float) -> None:
        segment = self.live.close_segment(now)
        body = b"".join(
            self.parts[(segment.msn, p.index)].body
            for p in segment.parts
            if (segment.msn, p.index) in self.parts
        )
        self.segments[segment.msn] = Response(200, body, MEDIA_TYPE)
        self._evict()

    def _evict(self) -> None:
        oldest = self.live.first_msn - _KEEP_EXTRA_SEGMENTS
        for msn in [m for m in self.segments if m < oldest]:
            del self.segments[msn]
        for key in [k for k in self.parts if k[0] < oldest]:
            del self.parts[key]
        for file in [f for f, keys in self.files.items() if keys and keys[-1][0] < oldest]:
            del self.files[file]

    def _changed_now(self) -> None:
        self._playlists.clear()
        self._changed.set_result(None)
        self._changed = asyncio.get_running_loop().create_future()
