"""One node of a delivery tier: request handling, egress link, cache and upstream fetches.

Request handling and egress are computed arithmetically (no SimPy events): the engine admits work
in nondecreasing time order, so a c-server FIFO queue reduces to a heap of server-free times
(Kiefer-Wolfowitz), and the egress link to a fluid FIFO queue. Only waiting for objects that do
not exist yet needs events, and those are shared by every request for the same object.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

import numpy as np
import simpy

from relay.core.cache import EdgeCache

DOWN = object()
"""Value an object event succeeds with when the node holding it fails."""


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


class ServiceTimes:
    """A cycle of pre-drawn request service times (drawing one per request would be slow)."""

    def __init__(self, samples_s: np.ndarray) -> None:
        self._samples = [float(x) for x in samples_s]
        self._i = 0

    def next(self) -> float:
        i = self._i
        self._i = i + 1 if i + 1 < len(self._samples) else 0
        return self._samples[i]


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
        service: ServiceTimes,
        cache_objects: int,
        coalescing: bool,
        rtt_to_parent_s: float,
        n_bins: int,
        bin_s: float,
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
        self.service = service
        self.cache: EdgeCache[int, float] = EdgeCache(cache_objects, coalescing=coalescing)
        self.coalescing = coalescing
        self.rtt_to_parent_s = rtt_to_parent_s
        self.chain_s = 0.0
        """One-way propagation from the origin down to this node."""
        self.chain_rtt_s = 0.0
        """Round trips from this node up to the origin (a cold request pays them)."""
        self.parent_of: Callable[[int], Node] | None = None
        """Picks the parent node for an object key; None for the first tier."""
        self.bits_of: Callable[[int], float] = lambda key: 0.0
        """Size of an object in bits, by key."""
        self._pending: dict[int, simpy.Event] = {}
        self.bin_s = bin_s
        self.bits_bins = [0.0] * n_bins
        self.request_bins = [0] * n_bins
        self.bits_total = 0.0

    # -- serving -------------------------------------------------------------------------------

    def serve(self, now: float, bits: float, requests: int) -> float:
        """Handle `requests` requests answered with `bits` at `now`; return when the bits are out."""
        done = self.queue.admit(now, self.service.next() * requests)
        b = int(now / self.bin_s)
        if b >= len(self.bits_bins):
            b = len(self.bits_bins) - 1
        self.bits_bins[b] += bits
        self.request_bins[b] += requests
        self.bits_total += bits
        return self.egress.send(done, bits)

    # -- objects -------------------------------------------------------------------------------

    def wait(self, key: int) -> simpy.Event:
        """After a cache miss on `key`: the event that fires with its arrival time here."""
        if not self.cache.begin_fetch(key):
            return self._pending[key]
        event = self.env.event()
        if self.coalescing:
            self._pending[key] = event
        self.env.process(self._fetch(key, event, self.epoch))
        return event

    def _fetch(self, key: int, event: simpy.Event, epoch: int) -> Any:
        half_rtt = self.rtt_to_parent_s * 0.5
        yield self.env.timeout(half_rtt)
        while True:
            assert self.parent_of is not None
            parent = self.parent_of(key)
            if parent.alive:
                available = parent.cache.lookup(key)
                if available is None:
                    available = yield parent.wait(key)
                if available is not DOWN:
                    break
            # The parent died: retry on another one after a round trip.
            yield self.env.timeout(self.rtt_to_parent_s)
        sent = parent.serve(self.env.now, self.bits_of(key), 1)
        yield self.env.timeout(sent + half_rtt - self.env.now)
        if epoch != self.epoch:
            return
        arrived = self.env.now
        self.cache.fill(key, arrived)
        if self.coalescing:
            del self._pending[key]
        event.succeed(arrived)

    # -- faults --------------------------------------------------------------------------------

    def fail(self) -> None:
        """Stop serving: waiters get DOWN, in-flight fetches are dropped, the cache is lost."""
        self.alive = False
        self.epoch += 1
        pending, self._pending = self._pending, {}
        for key, event in pending.items():
            self.cache.abort(key)
            event.succeed(DOWN)
        self.cache.clear()

    def recover(self) -> None:
        self.alive = True


class OriginNode(Node):
    """A first-tier node: holds every part of the streams it ingests from their publish time."""

    def __init__(self, env: simpy.Environment, publish_s: Callable[[int], float], **kw: Any) -> None:
        super().__init__(env, **kw)
        self._publish_s = publish_s

    def wait(self, key: int) -> simpy.Event:
        if not self.cache.begin_fetch(key):
            return self._pending[key]
        published = self._publish_s(key)
        event = self.env.timeout(max(0.0, published - self.env.now), value=published)
        self._pending[key] = event
        event.callbacks.append(lambda _e: self._published(key, published))
        return event

    def _published(self, key: int, published: float) -> None:
        self.cache.fill(key, published)
        self._pending.pop(key, None)
