"""The origin: takes ingest from an encoder and serves LL-HLS, classic HLS and push.

Ingest (RFC 8216bis-style HTTP PUT, as `ffmpeg -f hls -hls_segment_type fmp4 -method PUT`
sends it), every request with `Authorization: Bearer KEY`:

* `PUT /ingest/<stream>/<name>.mp4` — the init segment (creates the stream);
* `PUT /ingest/<stream>/<name>.m4s` — media: each CMAF fragment becomes a part the moment its
  bytes are in, while the upload goes on (chunked uploads are read as they arrive);
* `PUT /ingest/<stream>/<name>.m3u8` — the encoder's own playlist: only its EXT-X-ENDLIST is
  used (it ends the stream);
* `DELETE /ingest/<stream>/<name>` — drops that file's media.

Playback (`/live/<stream>/...`): `index.m3u8` (LL-HLS with parts, preload hints and blocking
reload; classic HLS players read the same playlist's segments), `init.mp4`,
`seg<msn>.part<i>.m4s`, `seg<msn>.m4s`; push: `GET /push/<stream>` (one chunked response of
init + parts as they land). `/metrics` and `/healthz` as on every server.
"""

from __future__ import annotations

import asyncio
import hmac
import re
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass

from prometheus_client import Counter

from relay.core.blocking import BLOCK_TARGETS, Verdict, decide_reload, parse_reload_query
from relay.core.fmp4 import FragmentSplitter, parse_init
from relay.server.channel import Channel
from relay.server.http import HttpError, Reply, Request, Response, Router, Streamed, json_error
from relay.server.metrics import ServerMetrics

NAMES = {"stream": r"[a-z0-9][a-z0-9_-]{0,63}", "file": r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"}
"""What a stream name and a file name may be (anything else in their place is a 400)."""
_PART = re.compile(r"seg(?P<msn>[0-9]{1,9})\.part(?P<index>[0-9]{1,4})\.m4s")
_SEGMENT = re.compile(r"seg(?P<msn>[0-9]{1,9})\.m4s")
_KINDS = ("playlist", "init", "part", "segment")


@dataclass(frozen=True)
class OriginConfig:
    key: str
    """Ingest key (Bearer)."""
    segment_s: float = 2.0
    part_target_s: float = 0.334
    window_segments: int = 10
    max_fragment_bytes: int = 16 * 1024 * 1024


class Origin:
    """Streams by name and the request handlers around them."""

    def __init__(self, config: OriginConfig) -> None:
        self.config = config
        self.channels: dict[str, Channel] = {}
        self.metrics = ServerMetrics("origin")
        self._parts_in = self.metrics.counter("livesim_parts_published", "Parts published")
        self._held = self.metrics.gauge(
            "livesim_held_requests", "Blocking playlist and preload-hint requests being held"
        )
        self._viewers = self.metrics.gauge("livesim_push_viewers", "Push viewers connected")
        self._push_dropped = self.metrics.counter(
            "livesim_push_dropped", "Push viewers cut off for falling too far behind"
        )
        served = Counter(
            "livesim_media_requests",
            "Playback requests answered, by kind (playlist, init, part, segment)",
            ["server", "kind"],
            registry=self.metrics.registry,
        )
        self._served = {kind: served.labels("origin", kind) for kind in _KINDS}
        self.router = Router(NAMES)
        add = self.router.add
        add("PUT", r"/ingest/{stream}/{file}", self.ingest)
        add("DELETE", r"/ingest/{stream}/{file}", self.delete)
        add("GET", r"/live/{stream}/{file}", self.media)
        add("GET", r"/push/{stream}", self.push)
        add("GET", r"/metrics", self.metrics.render)
        add("GET", r"/healthz", lambda _r: Response(200, b"ok\n", "text/plain"))

    # -- ingest --------------------------------------------------------------------------------

    def _authorize(self, request: Request) -> None:
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        ok = scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode(), self.config.key.encode()
        )
        if not ok:
            raise HttpError(401, "ingest needs Authorization: Bearer <key> with the right key")

    async def ingest(self, request: Request) -> Reply:
        self._authorize(request)
        stream, file = request.params["stream"], request.params["file"]
        now = asyncio.get_running_loop().time()
        if file.endswith(".mp4"):
            return await self._ingest_init(request, stream)
        if file.endswith(".m3u8"):
            text = (await request.body.read()).decode("utf-8", "replace")
            channel = self.channels.get(stream)
            if channel is not None and "#EXT-X-ENDLIST" in text:
                channel.end(now)
            return Response(201)
        if not file.endswith(".m4s"):
            raise HttpError(400, f"ingest takes .mp4 (init), .m4s (media) or .m3u8, not {file!r}")
        channel = self.channels.get(stream)
        if channel is None:
            raise HttpError(409, f"stream {stream!r} has no init segment yet: PUT init.mp4 first")
        splitter = FragmentSplitter(
            channel.init_info, max_fragment_bytes=self.config.max_fragment_bytes
        )
        try:
            async for chunk in request.body.chunks():
                for fragment in splitter.feed(chunk):
                    channel.add(fragment, file, asyncio.get_running_loop().time())
                    self._parts_in.inc()
            rest = splitter.close()
        except ValueError as error:
            raise HttpError(400, f"bad media in {file}: {error}") from None
        if rest:
            raise HttpError(400, f"{file} ends inside a box ({len(rest)} bytes left over)")
        return Response(201)

    async def _ingest_init(self, request: Request, stream: str) -> Reply:
        data = await request.body.read()
        try:
            info = parse_init(data)
        except ValueError as error:
            raise HttpError(400, f"bad init segment: {error}") from None
        channel = self.channels.get(stream)
        if channel is not None and channel.init.body == data:
            return Response(201)
        if channel is not None and not channel.live.ended:
            raise HttpError(409, f"stream {stream!r} is live with another init segment")
        self.channels[stream] = Channel(
            stream,
            data,
            info,
            segment_s=self.config.segment_s,
            part_target_s=self.config.part_target_s,
            window_segments=self.config.window_segments,
            on_push_drop=self._push_dropped.inc,
        )
        return Response(201)

    def delete(self, request: Request) -> Reply:
        self._authorize(request)
        channel = self.channels.get(request.params["stream"])
        if channel is None or not channel.delete(request.params["file"]):
            return json_error(404, f"no such ingest file: {request.params['file']}")
        return Response(204)

    # -- playback ------------------------------------------------------------------------------

    def _channel(self, request: Request) -> Channel:
        channel = self.channels.get(request.params["stream"])
        if channel is None:
            raise HttpError(404, f"no such stream: {request.params['stream']}")
        return channel

    def media(self, request: Request) -> Reply | Awaitable[Reply]:
        channel = self._channel(request)
        file = request.params["file"]
        if file == "index.m3u8":
            self._served["playlist"].inc()
            return self._playlist(channel, request)
        if file == "init.mp4":
            self._served["init"].inc()
            return channel.init
        if (match := _PART.fullmatch(file)) is not None:
            self._served["part"].inc()
            key = (int(match["msn"]), int(match["index"]))
            found = channel.parts.get(key)
            if found is not None:
                return found
            if _is_next(channel, *key):
                return self._await_part(channel, key)
            raise HttpError(404, f"no such part: {file}")
        if (match := _SEGMENT.fullmatch(file)) is not None:
            self._served["segment"].inc()
            segment = channel.segments.get(int(match["msn"]))
            if segment is None:
                raise HttpError(404, f"no such segment: {file}")
            return segment
        raise HttpError(404, f"no such file: {file}")

    def _playlist(self, channel: Channel, request: Request) -> Reply | Awaitable[Reply]:
        try:
            msn, part = parse_reload_query(request.query)
        except ValueError as error:
            raise HttpError(400, str(error)) from None
        skip = request.query.get("_HLS_skip") in ("YES", "v2")
        loop = asyncio.get_running_loop()
        decision = decide_reload(channel.live, msn, part, now=loop.time())
        if decision.verdict is Verdict.ANSWER:
            return channel.playlist(skip)
        if decision.verdict is Verdict.BAD_REQUEST:
            raise HttpError(400, decision.reason)
        return self._hold_playlist(channel, msn, part, skip)

    async def _hold_playlist(
        self, channel: Channel, msn: int | None, part: int | None, skip: bool
    ) -> Reply:
        loop = asyncio.get_running_loop()
        since = loop.time()
        self._held.inc()
        try:
            while True:
                limit_s = BLOCK_TARGETS * channel.live.declared_target_s
                await channel.changed(max(0.0, since + limit_s - loop.time()) + 0.001)
                decision = decide_reload(channel.live, msn, part, now=loop.time(), held_since=since)
                if decision.verdict is Verdict.ANSWER:
                    return channel.playlist(skip)
                if decision.verdict is Verdict.BAD_REQUEST:
                    return json_error(400, decision.reason)
                if decision.verdict is Verdict.UNAVAILABLE:
                    return json_error(503, decision.reason)
        finally:
            self._held.dec()

    async def _await_part(self, channel: Channel, key: tuple[int, int]) -> Reply:
        """A preload-hinted part: answer when it lands (or 503 after 3 Target Durations)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BLOCK_TARGETS * channel.live.declared_target_s
        self._held.inc()
        try:
            while (found := channel.parts.get(key)) is None:
                left_s = deadline - loop.time()
                if left_s <= 0 or channel.live.ended or not _is_next(channel, *key):
                    if channel.live.has_part(*key) or channel.live.ended:
                        return json_error(404, f"no such part: seg{key[0]}.part{key[1]}.m4s")
                    return json_error(503, "part not published in time")
                await channel.changed(left_s)
            return found
        finally:
            self._held.dec()

    def push(self, request: Request) -> Reply:
        channel = self._channel(request)
        return Streamed(200, self._counted(channel), "video/mp4", (("cache-control", "no-store"),))

    async def _counted(self, channel: Channel) -> AsyncIterator[bytes]:
        self._viewers.inc()
        try:
            async for chunk in channel.push.subscribe():
                yield chunk
        finally:
            self._viewers.dec()


def _is_next(channel: Channel, msn: int, index: int) -> bool:
    """The part a preload hint names (or the first of the segment after the open one)."""
    live = channel.live
    if live.ended:
        return False
    if msn == live.next_msn:
        return index == live.next_part_index
    return msn == live.next_msn + 1 and index == 0
