"""One node of a delivery tier: request handling, egress link, cache and upstream fetches.

Request handling and egress are computed arithmetically (no SimPy events): the engine admits work
in nondecreasing time order, so a c-server FIFO queue reduces to a heap of server-free times
(Kiefer-Wolfowitz), and the egress link to a fluid FIFO queue. Only waiting for objects that do
not exist yet takes events, and those are shared by every request for the same object: child
nodes wait on one SimPy event per fetch, viewer sessions are *held* on the fetch (as an LL-HLS
edge holds blocking requests) and answered in place when the object lands.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

import numpy as np
import simpy

from relay.core.cache import EdgeCache

if TYPE_CHECKING:
    from sim.exact.viewer import Session

DOWN = object()
"""Value handed to waiters when the node holding their request fails."""


class RequestQueue:
    """`servers` identical workers taking requests first come, first served."""

    def __init__(self, servers: int) -> None:
        self._free_at = [0.0] * servers

    def admit(self, now: float, service_s: float) -> float:
        """Queue one request arriving at `now`; return when its service ends."""
        free_at = self._free_at
        start = free_at[0]
        if start < now:
            start = now
        done = start + service_s
        heapq.heapreplace(free_at, done)
        return done


class EgressLink:
    """A node's outbound link as a fluid FIFO queue of bits."""

    def __init__(self, capacity_bps: float) -> None:
        self.capacity_bps = capacity_bps
        """Current capacity; a link-degrade fault lowers it for a while."""
        self.free_at = 0.0
        """When the bits queued so far will have left."""

    def send(self, now: float, bits: float) -> float:
        """Queue `bits` at `now`; return when the last of them leaves the node."""
        start = self.free_at if self.free_at > now else now
        self.free_at = start + bits / self.capacity_bps
        return self.free_at


class _Fetch:
    """Who waits for one upstream fetch: child nodes (one event) and held viewer sessions."""

    __slots__ = ("event", "sessions")

    def __init__(self) -> None:
        self.event: simpy.Event | None = None
        self.sessions: list[Session] = []


class Node:
    """A tier node: serves requests for objects it caches, fetching misses from its parent."""

    def __init__(
        self,
        env: simpy.Environment,
        *,
        tier_index: int,
        index: int,
        egress_bps: float,
        workers: int,
        service_s: np.ndarray,
        cache_objects: int,
        coalescing: bool,
        rtt_to_parent_s: float,
        n_bins: int,
        bin_s: float,
        bits_of: Callable[[int], float],
    ) -> None:
        self.env = env
        self.tier_index = tier_index
        self.index = index
        self.alive = True
        self.epoch = 0
        """Bumped at each failure so fetches started before it are dropped."""
        self.queue = RequestQueue(workers)
        self.egress = EgressLink(egress_bps)
        self.nominal_egress_bps = egress_bps
        self._service_s = [float(x) for x in service_s]
        """A cycle of pre-drawn request service times (a draw per request would be slow)."""
        self._service_i = 0
        self.cache: EdgeCache[int, float] = EdgeCache(cache_objects, coalescing=coalescing)
        self.coalescing = coalescing
        self.rtt_to_parent_s = rtt_to_parent_s
        self.chain_s = 0.0
        """One-way propagation from the origin down to this node."""
        self.chain_rtt_s = 0.0
        """Round trips from this node up to the origin (a cold request pays them)."""
        self.parent_of: Callable[[int], Node] | None = None
        """Picks the parent node for an object key; None for the first tier."""
        self.bits_of = bits_of
        """Size of an object in bits, by key."""
        self._fetches: dict[int, _Fetch] = {}
        """Fetches in flight by key, for coalescing."""
        self._open: set[_Fetch] = set()
        """Every fetch in flight, coalesced or not (a failure must release their waiters)."""
        self.bin_s = bin_s
        self.bits_bins = [0.0] * n_bins
        """Bits this node sent, by the bin of the request."""
        self.request_bins = [0] * n_bins
        self.fetched_bins = [0.0] * n_bins
        """Bits that arrived here from the parent tier, by the bin of their arrival."""

    # -- serving -------------------------------------------------------------------------------

    def serve(self, now: float, bits: float, requests: int) -> float:
        """Handle `requests` requests answered with `bits` at `now`; return when bits are out."""
        i = self._service_i
        service = self._service_s
        self._service_i = i + 1 if i + 1 < len(service) else 0
        done = self.queue.admit(now, service[i] * requests)
        b = int(now / self.bin_s)
        if b >= len(self.bits_bins):
            b = len(self.bits_bins) - 1
        self.bits_bins[b] += bits
        self.request_bins[b] += requests
        return self.egress.send(done, bits)

    # -- waiting for objects -------------------------------------------------------------------

    def wait(self, key: int) -> simpy.Event:
        """After a cache miss on `key` (a child node's fetch): fires with its arrival time here."""
        fetch = self._join_fetch(key)
        if fetch.event is None:
            fetch.event = self.env.event()
        return fetch.event

    def hold(self, key: int, session: Session) -> None:
        """After a cache miss on `key` (a viewer): answer `session` in place when it lands."""
        self._join_fetch(key).sessions.append(session)

    def _join_fetch(self, key: int) -> _Fetch:
        if not self.cache.begin_fetch(key):
            return self._fetches[key]
        fetch = _Fetch()
        if self.coalescing:
            self._fetches[key] = fetch
        self._open.add(fetch)
        self.env.process(self._fetch(key, fetch, self.epoch))
        return fetch

    def _fetch(self, key: int, fetch: _Fetch, epoch: int) -> Generator[simpy.Event, Any, None]:
        arrived = yield from self._obtain(key)
        if epoch != self.epoch:
            return
        self._open.discard(fetch)
        self.cache.fill(key, arrived)
        if self.coalescing:
            del self._fetches[key]
        if fetch.event is not None:
            fetch.event.succeed(arrived)
        for session in fetch.sessions:
            session.arrived(arrived)

    def _obtain(self, key: int) -> Generator[simpy.Event, Any, float]:
        """Get `key` from the parent tier; return its arrival time here.

        The bits are counted as fetched on arrival even if this node failed meanwhile: they did
        cross the link.
        """
        env = self.env
        half_rtt = self.rtt_to_parent_s * 0.5
        yield env.timeout(half_rtt)
        assert self.parent_of is not None
        while True:
            parent = self.parent_of(key)
            if parent.alive:
                available = parent.cache.lookup(key)
                if available is None:
                    available = yield parent.wait(key)
                if available is not DOWN:
                    break
            # The parent died: retry on another one after a round trip.
            yield env.timeout(self.rtt_to_parent_s)
        bits = self.bits_of(key)
        sent = parent.serve(env.now, bits, 1)
        yield env.timeout(sent + half_rtt - env.now)
        now = env.now
        b = int(now / self.bin_s)
        if b >= len(self.fetched_bins):
            b = len(self.fetched_bins) - 1
        self.fetched_bins[b] += bits
        return now

    # -- faults --------------------------------------------------------------------------------

    def fail(self) -> None:
        """Stop serving: waiters get DOWN, in-flight fetches are dropped, the cache is lost."""
        self.alive = False
        self.epoch += 1
        fetches, self._open, self._fetches = self._open, set(), {}
        self.cache.clear()
        for fetch in fetches:
            if fetch.event is not None:
                fetch.event.succeed(DOWN)
            for session in fetch.sessions:
                session.wake.succeed(DOWN)

    def recover(self) -> None:
        self.alive = True


class OriginNode(Node):
    """A first-tier node: each part of the streams it ingests is there from its publish time.

    Its cache is the store of the recent window; an object evicted from it is read back at once.
    Origin outages are modelled as delayed publishing (see sim.exact.schedule), so an origin node
    never fails here.
    """

    def __init__(
        self, env: simpy.Environment, publish_s: Callable[[int], float], **kw: Any
    ) -> None:
        super().__init__(env, **kw)
        self._publish_s = publish_s

    def _obtain(self, key: int) -> Generator[simpy.Event, Any, float]:
        published = self._publish_s(key)
        if published > self.env.now:
            yield self.env.timeout(published - self.env.now)
        return published
