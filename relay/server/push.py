"""Push delivery: one long-lived chunked response per viewer carrying fMP4 parts as they land.

A subscriber gets the init segment, then the parts since the newest independent one (so its
decoder can start at once), then every new part. Publishing never waits for a subscriber: each
has its own bounded queue, and one that falls `queue_parts` behind (it stopped reading, or its
link is too slow for the stream) is cut off rather than allowed to hold anyone up.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

_END = b""
"""Queued to end a subscriber's response (parts are never empty)."""


class _Subscriber:
    __slots__ = ("dropped", "queue")

    def __init__(self, queue_parts: int) -> None:
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(queue_parts)
        self.dropped = False


class PushHub:
    """Fan-out of one stream's parts to push viewers."""

    def __init__(self, on_drop: Callable[[], None], queue_parts: int = 64) -> None:
        self.queue_parts = queue_parts
        self.init: bytes | None = None
        self._since_independent: list[bytes] = []
        self._subscribers: set[_Subscriber] = set()
        self._on_drop = on_drop
        """Called for each subscriber cut off for falling behind."""

    @property
    def viewers(self) -> int:
        return len(self._subscribers)

    def publish(self, part: bytes, *, independent: bool) -> None:
        """Send a part to every subscriber (never blocks)."""
        if independent:
            self._since_independent = []
        self._since_independent.append(part)
        for subscriber in list(self._subscribers):
            try:
                subscriber.queue.put_nowait(part)
            except asyncio.QueueFull:
                self._drop(subscriber)

    def end(self) -> None:
        """The stream ended: every subscriber's response finishes after what it has queued."""
        for subscriber in list(self._subscribers):
            try:
                subscriber.queue.put_nowait(_END)
            except asyncio.QueueFull:
                self._drop(subscriber)

    async def subscribe(self) -> AsyncIterator[bytes]:
        """The byte stream of one push viewer (init, catch-up parts, then live parts)."""
        subscriber = _Subscriber(self.queue_parts)
        self._subscribers.add(subscriber)
        try:
            if self.init is not None:
                yield self.init
            for part in list(self._since_independent):
                yield part
            while not subscriber.dropped:
                part = await subscriber.queue.get()
                if not part:
                    return
                yield part
        finally:
            self._subscribers.discard(subscriber)

    def _drop(self, subscriber: _Subscriber) -> None:
        subscriber.dropped = True
        self._subscribers.discard(subscriber)
        self._on_drop()
        # Wake its reader so its response ends now.
        while not subscriber.queue.empty():
            subscriber.queue.get_nowait()
        subscriber.queue.put_nowait(_END)
