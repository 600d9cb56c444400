"""Edge cache: bounded LRU of immutable objects with coalescing of concurrent misses.

Sans-IO: the caller does the fetching. On a miss it calls `begin_fetch`; True means "fetch it
upstream", False means "a fetch is already on its way, wait for it" (collapsed forwarding, so one
upstream request per object however many viewers ask at once). Then `fill` or `abort`.

This is the simulator's hot path: a hit allocates nothing and stats are plain ints.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class EdgeCache(Generic[K, V]):
    """Bounded LRU cache of immutable objects with coalescing of concurrent misses.

    Values must not be None (None means a miss). With coalescing off several fetches of one key
    may be in flight; each `fill` stores its value and ends one of them.
    """

    __slots__ = (
        "_data",
        "_in_flight",
        "capacity",
        "coalesced",
        "coalescing",
        "evictions",
        "fetches",
        "hits",
        "requests",
    )

    def __init__(self, capacity: int, *, coalescing: bool = True) -> None:
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity}")
        self.capacity = capacity
        """Most objects kept; 0 caches nothing."""
        self.coalescing = coalescing
        self._data: OrderedDict[K, V] = OrderedDict()
        self._in_flight: dict[K, int] = {}
        self.requests = 0
        """Lookups."""
        self.hits = 0
        """Lookups answered from the cache."""
        self.fetches = 0
        """Upstream fetches started (`begin_fetch` returned True)."""
        self.coalesced = 0
        """Misses that waited for a fetch already in flight."""
        self.evictions = 0
        """Objects dropped to stay within capacity."""

    def lookup(self, key: K) -> V | None:
        """Count a request; the cached value (now most recently used) or None on a miss."""
        self.requests += 1
        value = self._data.get(key)
        if value is not None:
            self.hits += 1
            self._data.move_to_end(key)
        return value

    def begin_fetch(self, key: K) -> bool:
        """After a miss: True = fetch upstream now; False = wait for the fetch in flight."""
        in_flight = self._in_flight.get(key, 0)
        if in_flight and self.coalescing:
            self.coalesced += 1
            return False
        self._in_flight[key] = in_flight + 1
        self.fetches += 1
        return True

    def fill(self, key: K, value: V) -> None:
        """A fetch of `key` arrived: store it (evicting least recently used) and end the fetch."""
        self._end_fetch(key)
        data = self._data
        data[key] = value
        data.move_to_end(key)
        while len(data) > self.capacity:
            data.popitem(last=False)
            self.evictions += 1

    def abort(self, key: K) -> None:
        """A fetch of `key` failed: end it, store nothing."""
        self._end_fetch(key)

    def in_flight(self, key: K) -> bool:
        """A fetch of `key` has begun and not yet been filled or aborted."""
        return key in self._in_flight

    def clear(self) -> None:
        """Forget every object and every fetch in flight (a node restart); stats are kept."""
        self._data.clear()
        self._in_flight.clear()

    @property
    def hit_ratio(self) -> float:
        """hits / requests; 0.0 before any request."""
        return self.hits / self.requests if self.requests else 0.0

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def _end_fetch(self, key: K) -> None:
        in_flight = self._in_flight.pop(key, 0)
        if in_flight > 1:
            self._in_flight[key] = in_flight - 1
