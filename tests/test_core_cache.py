"""EdgeCache against a plain model: LRU bound, coalescing, stats."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from relay.core.cache import EdgeCache

KEYS = st.integers(0, 3)


class CacheMachine(RuleBasedStateMachine):
    """Drives an EdgeCache and a list/dict model side by side."""

    def __init__(self) -> None:
        super().__init__()
        self.cache: EdgeCache[int, int] = EdgeCache(1)
        self.coalescing = True
        self.capacity = 1
        self.order: list[int] = []  # least recently used first
        self.values: dict[int, int] = {}
        self.flying: dict[int, int] = {}
        self.requests = self.hits = self.misses = 0
        self.fetches = self.coalesced = self.evictions = 0

    @initialize(capacity=st.integers(0, 3), coalescing=st.booleans())
    def make(self, capacity: int, coalescing: bool) -> None:
        self.cache = EdgeCache(capacity, coalescing=coalescing)
        self.capacity, self.coalescing = capacity, coalescing

    @rule(key=KEYS)
    def lookup(self, key: int) -> None:
        self.requests += 1
        expected = self.values.get(key)
        if expected is None:
            self.misses += 1
        else:
            self.hits += 1
            self.order.remove(key)
            self.order.append(key)
        assert self.cache.lookup(key) == expected

    @rule(key=KEYS)
    def begin_fetch(self, key: int) -> None:
        waits = self.coalescing and self.flying.get(key, 0) > 0
        if waits:
            self.coalesced += 1
        else:
            self.fetches += 1
            self.flying[key] = self.flying.get(key, 0) + 1
        assert self.cache.begin_fetch(key) is not waits

    @rule(key=KEYS, value=st.integers())
    def fill(self, key: int, value: int) -> None:
        self._end(key)
        if key in self.values:
            self.order.remove(key)
        self.values[key] = value
        self.order.append(key)
        while len(self.order) > self.capacity:
            del self.values[self.order.pop(0)]
            self.evictions += 1
        self.cache.fill(key, value)

    @rule(key=KEYS, value=st.integers())
    def request(self, key: int, value: int) -> None:
        """A client's whole path: look up, fetch on a miss unless one is in flight, fill."""
        self.lookup(key)
        if key not in self.values and not (self.coalescing and key in self.flying):
            self.begin_fetch(key)
            self.fill(key, value)

    @rule(key=KEYS)
    def abort(self, key: int) -> None:
        self._end(key)
        self.cache.abort(key)

    @rule()
    def clear(self) -> None:
        self.order.clear()
        self.values.clear()
        self.flying.clear()
        self.cache.clear()

    def _end(self, key: int) -> None:
        if self.flying.get(key, 0) > 1:
            self.flying[key] -= 1
        else:
            self.flying.pop(key, None)

    @invariant()
    def bounded(self) -> None:
        assert len(self.cache) <= self.capacity
        assert len(self.cache) == len(self.values)

    @invariant()
    def same_contents_and_flights(self) -> None:
        for key in range(4):
            assert (key in self.cache) == (key in self.values)
            assert self.cache.in_flight(key) == (key in self.flying)

    @invariant()
    def one_fetch_per_key_when_coalescing(self) -> None:
        if self.coalescing:
            assert all(n == 1 for n in self.flying.values())

    @invariant()
    def stats_agree(self) -> None:
        c = self.cache
        assert (c.requests, c.hits, c.fetches, c.coalesced, c.evictions) == (
            self.requests,
            self.hits,
            self.fetches,
            self.coalesced,
            self.evictions,
        )
        assert c.hits + self.misses == c.requests
        assert c.hit_ratio == (self.hits / self.requests if self.requests else 0.0)


CacheMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestEdgeCache = CacheMachine.TestCase


@pytest.mark.parametrize(("coalescing", "fetches"), [(True, 1), (False, 1000)])
def test_a_thousand_misses_of_one_key(coalescing: bool, fetches: int) -> None:
    cache: EdgeCache[str, bytes] = EdgeCache(10, coalescing=coalescing)
    for _ in range(1000):
        assert cache.lookup("seg7.part2.m4s") is None
        cache.begin_fetch("seg7.part2.m4s")
    assert (cache.fetches, cache.coalesced) == (fetches, 1000 - fetches)
    assert (cache.requests, cache.hits) == (1000, 0)
    cache.fill("seg7.part2.m4s", b"media")
    assert cache.lookup("seg7.part2.m4s") == b"media"
    assert cache.hit_ratio == pytest.approx(1 / 1001)


def test_least_recently_used_object_is_evicted() -> None:
    cache: EdgeCache[str, int] = EdgeCache(2)
    cache.fill("a", 1)
    cache.fill("b", 2)
    assert cache.lookup("a") == 1  # "b" is now the least recently used
    cache.fill("c", 3)
    assert "b" not in cache and "a" in cache and "c" in cache
    assert cache.evictions == 1


def test_without_coalescing_each_fill_stores_and_ends_one_fetch() -> None:
    cache: EdgeCache[str, int] = EdgeCache(4, coalescing=False)
    assert cache.begin_fetch("k") and cache.begin_fetch("k")
    cache.fill("k", 1)
    assert cache.in_flight("k")
    assert cache.lookup("k") == 1
    cache.fill("k", 2)
    assert not cache.in_flight("k")
    assert cache.lookup("k") == 2


def test_aborted_fetch_lets_the_next_miss_fetch_again() -> None:
    cache: EdgeCache[str, int] = EdgeCache(4)
    assert cache.begin_fetch("k")
    assert not cache.begin_fetch("k")
    cache.abort("k")
    assert "k" not in cache
    assert cache.begin_fetch("k")
    assert cache.fetches == 2


def test_membership_and_length_do_not_count_as_requests() -> None:
    cache: EdgeCache[str, int] = EdgeCache(4)
    cache.fill("k", 1)
    assert "k" in cache and len(cache) == 1
    assert cache.requests == 0


def test_negative_capacity_is_refused() -> None:
    with pytest.raises(ValueError, match="capacity"):
        EdgeCache(-1)
