"""An edge relay: serves viewers from a bounded cache, pulling from the origin or a parent edge.

* Media (`init.mp4`, parts, segments) go through relay.core's `EdgeCache`: concurrent misses of
  one object make one upstream request, and its bytes are streamed to every waiter as they
  arrive (a preload-hinted part held at the origin reaches all of them the moment it lands).
* Playlists: a request with blocking-reload directives is forwarded (the parent holds it), and
  every viewer asking the same `_HLS_msn`/`_HLS_part` shares that one forwarded request and,
  for `blocking_ttl_s`, its answer; a plain playlist request is served from a copy at most
  `playlist_ttl_s` old.
* Push: the edge keeps one push subscription per stream to its parent and fans its parts out to
  its own push viewers (relay.server.push).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Coroutine
from dataclasses import dataclass
from typing import Any

import aiohttp

from relay.core.cache import EdgeCache
from relay.core.push import PushStreamReader
from relay.server.http import HttpError, Reply, Request, Response, Router, Streamed, json_error
from relay.server.metrics import ServerMetrics
from relay.server.origin import NAMES
from relay.server.push import PushHub

log = logging.getLogger("livesim.relay.edge")

_FORWARDED_QUERY = ("_HLS_msn", "_HLS_part", "_HLS_skip")
_PLAYLISTS_KEPT = 256
"""Cached playlist answers above which expired ones are swept."""


@dataclass(frozen=True)
class EdgeConfig:
    parent: str
    """Base URL of the origin or parent edge (`http://127.0.0.1:PORT`)."""
    name: str = "edge"
    cache_parts: int = 600
    playlist_ttl_s: float = 0.1
    """How long a plain playlist answer is reused."""
    blocking_ttl_s: float = 2.0
    """How long the answer to a blocking reload is reused for the same `_HLS_msn`/`_HLS_part`."""
    upstream_timeout_s: float = 30.0


class _Fetch:
    """One upstream request in flight; its bytes as they arrive, for every waiter."""

    def __init__(self) -> None:
        self.status = 0
        self.content_type: str | None = None
        self.chunks: list[bytes] = []
        self.result: Response | None = None
        """The whole answer, built once when the fetch ends well (for every later waiter)."""
        self.failed = False
        """The parent's answer broke off: the bytes are incomplete."""
        self.changed = asyncio.Event()
        self.started = asyncio.Event()
        self.ended = asyncio.Event()

    def update(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    async def stream(self) -> AsyncIterator[bytes]:
        """The body as it arrives; ConnectionError if the parent's answer breaks off."""
        i = 0
        while True:
            while i < len(self.chunks):
                yield self.chunks[i]
                i += 1
            if self.failed:
                raise ConnectionError("the parent's answer broke off")
            if self.ended.is_set():
                return
            await self.changed.wait()


class Edge:
    def __init__(self, config: EdgeConfig, session: aiohttp.ClientSession) -> None:
        self.config = config
        self.session = session
        self.cache: EdgeCache[tuple[str, str], Response] = EdgeCache(config.cache_parts)
        self._fetches: dict[tuple[str, str], _Fetch] = {}
        self._playlists: dict[tuple[str, str], tuple[float, Response]] = {}
        """(stream, directives) -> (reusable until, answer)."""
        self._playlist_fetches: dict[tuple[str, str], asyncio.Future[Response]] = {}
        self._hubs: dict[str, tuple[PushHub, asyncio.Future[int]]] = {}
        """Per stream: its fan-out and whether the parent's push stream is up (its status)."""
        self._tasks: set[asyncio.Task[None]] = set()
        self.metrics = ServerMetrics(config.name)
        m = self.metrics
        self._hits = m.counter("livesim_cache_hits", "Media requests answered from the cache")
        self._misses = m.counter("livesim_cache_misses", "Media requests not in the cache")
        self._coalesced = m.counter(
            "livesim_coalesced_waits", "Requests that waited for a fetch already in flight"
        )
        self._upstream = m.counter("livesim_upstream_fetches", "Requests sent to the parent")
        self._from_parent = m.counter(
            "livesim_media_from_parent",
            "Parts and segments received from the parent (fetched or pushed)",
        )
        self._viewers = m.gauge("livesim_push_viewers", "Push viewers connected")
        self._push_dropped = m.counter(
            "livesim_push_dropped", "Push viewers cut off for falling too far behind"
        )
        self.router = Router(NAMES)
        add = self.router.add
        add("GET", r"/live/{stream}/{file}", self.media)
        add("GET", r"/push/{stream}", self.push)
        add("GET", r"/metrics", self.metrics.render)
        add("GET", r"/healthz", lambda _r: Response(200, b"ok\n", "text/plain"))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` in the background, keeping a reference until it ends."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- media ---------------------------------------------------------------------------------

    def media(self, request: Request) -> Reply | Awaitable[Reply]:
        stream, file = request.params["stream"], request.params["file"]
        if file.endswith(".m3u8"):
            return self._playlist(request, stream, file)
        key = (stream, file)
        cached = self.cache.lookup(key)
        if cached is not None:
            self._hits.inc()
            return cached
        self._misses.inc()
        if self.cache.begin_fetch(key):
            fetch = _Fetch()
            self._fetches[key] = fetch
            self._spawn(self._fetch(key, fetch))
        else:
            self._coalesced.inc()
            fetch = self._fetches[key]
        return self._answer(fetch)

    async def _answer(self, fetch: _Fetch) -> Reply:
        await fetch.started.wait()
        if fetch.status == 200 and not fetch.ended.is_set():
            return Streamed(200, fetch.stream(), fetch.content_type)
        await fetch.ended.wait()
        if fetch.result is None:
            raise HttpError(502, "the parent's answer broke off")
        return fetch.result

    async def _fetch(self, key: tuple[str, str], fetch: _Fetch) -> None:
        stream, file = key
        url = f"{self.config.parent}/live/{stream}/{file}"
        self._upstream.inc()
        try:
            async with self.session.get(url) as upstream:
                fetch.status = upstream.status
                fetch.content_type = upstream.headers.get("content-type")
                fetch.started.set()
                async for chunk in upstream.content.iter_any():
                    fetch.chunks.append(chunk)
                    fetch.update()
            fetch.result = Response(fetch.status, b"".join(fetch.chunks), fetch.content_type)
            if fetch.status == 200 and file != "init.mp4":
                self._from_parent.inc()
        except (aiohttp.ClientError, TimeoutError) as error:
            if fetch.started.is_set():
                fetch.failed = True
            else:
                fetch.status = 502
                fetch.result = json_error(502, f"parent unreachable: {error}")
                fetch.started.set()
        fetch.ended.set()
        fetch.update()
        del self._fetches[key]
        if fetch.result is not None and fetch.status == 200:
            self.cache.fill(key, fetch.result)
        else:
            self.cache.abort(key)

    # -- playlists -----------------------------------------------------------------------------

    def _playlist(self, request: Request, stream: str, file: str) -> Reply | Awaitable[Reply]:
        query = "&".join(
            f"{name}={request.query[name]}" for name in _FORWARDED_QUERY if name in request.query
        )
        key = (stream, query)
        loop = asyncio.get_running_loop()
        cached = self._playlists.get(key)
        if cached is not None and loop.time() < cached[0]:
            self._hits.inc()
            return cached[1]
        pending = self._playlist_fetches.get(key)
        if pending is None:
            self._misses.inc()
            pending = loop.create_future()
            self._playlist_fetches[key] = pending
            self._spawn(self._fetch_playlist(key, file, pending))
        else:
            self._coalesced.inc()
        return asyncio.shield(pending)

    async def _fetch_playlist(
        self, key: tuple[str, str], file: str, pending: asyncio.Future[Response]
    ) -> None:
        stream, query = key
        url = f"{self.config.parent}/live/{stream}/{file}" + (f"?{query}" if query else "")
        self._upstream.inc()
        try:
            async with self.session.get(url) as upstream:
                body = await upstream.read()
                answer = Response(
                    upstream.status,
                    body,
                    upstream.headers.get("content-type"),
                    (("cache-control", "max-age=0, no-cache"),),
                )
        except (aiohttp.ClientError, TimeoutError) as error:
            answer = json_error(502, f"parent unreachable: {error}")
        del self._playlist_fetches[key]
        if answer.status == 200:
            self._keep_playlist(key, answer, blocking="_HLS_msn" in query)
        pending.set_result(answer)

    def _keep_playlist(self, key: tuple[str, str], answer: Response, *, blocking: bool) -> None:
        """Cache a playlist answer: briefly for a plain request, longer for a blocking one.

        The answer to `_HLS_msn=M&_HLS_part=P` lists that part, so it stays a valid answer to
        the same question: viewers a little behind the others (or a busy client's requests,
        spread over time) then cost no request to the parent.
        """
        now = asyncio.get_running_loop().time()
        ttl_s = self.config.blocking_ttl_s if blocking else self.config.playlist_ttl_s
        playlists = self._playlists
        if len(playlists) >= _PLAYLISTS_KEPT:
            for old in [k for k, (until, _) in playlists.items() if until <= now]:
                del playlists[old]
        playlists[key] = (now + ttl_s, answer)

    # -- push ----------------------------------------------------------------------------------

    def push(self, request: Request) -> Reply | Awaitable[Reply]:
        stream = request.params["stream"]
        entry = self._hubs.get(stream)
        if entry is None:
            hub = PushHub(self._push_dropped.inc)
            ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            self._hubs[stream] = (hub, ready)
            self._spawn(self._relay_push(stream, hub, ready))
        else:
            hub, ready = entry
            if ready.done() and ready.result() == 200:
                return self._push_reply(hub)
        return self._push_when_ready(stream, hub, ready)

    async def _push_when_ready(
        self, stream: str, hub: PushHub, ready: asyncio.Future[int]
    ) -> Reply:
        """Viewers who came before the parent's init segment wait for it (or for its refusal)."""
        status = await asyncio.shield(ready)
        if status != 200:
            raise HttpError(status, f"parent refused push for {stream!r} ({status})")
        return self._push_reply(hub)

    def _push_reply(self, hub: PushHub) -> Reply:
        return Streamed(200, self._counted(hub), "video/mp4", (("cache-control", "no-store"),))

    async def _relay_push(self, stream: str, hub: PushHub, ready: asyncio.Future[int]) -> None:
        """Hold one push subscription to the parent and republish its parts to `hub`."""
        self._upstream.inc()
        try:
            async with self.session.get(
                f"{self.config.parent}/push/{stream}", timeout=aiohttp.ClientTimeout(total=None)
            ) as upstream:
                if upstream.status != 200:
                    ready.set_result(upstream.status)
                    return
                reader = PushStreamReader()
                async for chunk in upstream.content.iter_any():
                    fragments = reader.feed(chunk)
                    if reader.init is not None and not ready.done():
                        hub.init = reader.init
                        ready.set_result(200)
                    for fragment in fragments:
                        hub.publish(fragment.data, independent=fragment.independent)
                        self._from_parent.inc()
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            log.warning("push relay for %s ended: %s", stream, error)
        finally:
            if not ready.done():
                ready.set_result(502)
            hub.end()
            if self._hubs.get(stream, (None,))[0] is hub:
                del self._hubs[stream]

    async def _counted(self, hub: PushHub) -> AsyncIterator[bytes]:
        self._viewers.inc()
        try:
            async for chunk in hub.subscribe():
                yield chunk
        finally:
            self._viewers.dec()
