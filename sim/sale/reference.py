"""Per-request SimPy reference model of the sale backends: small scale, exact.

One process per order plays the buyer (send, wait for the answer or the timeout, retry, move to
the next shard); the backend is SimPy processes following `Backend`; every decision but
naive-read-write's is made by `relay.core.inventory`. At each instant, events run in three
phases: arrivals and service completions, then the decisions due (in arrival order, ties by
order index), then whatever must see them (a server taking its next attempts, a naive read, a
buyer whose deadline came). No randomness beyond the demand's arrays. See `sim.sale.spec` for
the semantics, which the vectorised `sim.sale.fast` follows too.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Generator, Hashable
from dataclasses import dataclass

import numpy as np
import simpy
from simpy.events import EventPriority

from relay.core.inventory import Inventory, Order, Outcome
from sim.sale.spec import BACKENDS, Backend, Decision, SaleDemand, SaleOutcome

_DECIDE = EventPriority(2)
"""After every arrival and service completion due at the same instant."""
_AFTER_DECIDE = EventPriority(3)
"""After the decisions due at the same instant."""

_DECISIONS = {
    Outcome.ORDERED: Decision.ORDERED,
    Outcome.REPLAYED: Decision.REPLAYED,
    Outcome.SOLD_OUT: Decision.SOLD_OUT,
    Outcome.OVER_LIMIT: Decision.OVER_LIMIT,
}

_Process = Generator[simpy.Event, object, None]


class _Later(simpy.Event):
    """Fires at the current instant, after the events of higher priority due now."""

    def __init__(self, env: simpy.Environment, priority: EventPriority) -> None:
        super().__init__(env)
        self._ok = True
        self._value = None
        env.schedule(self, priority)


@dataclass(eq=False)
class _Attempt:
    """One attempt as the sale service sees it."""

    order: int
    user: int
    arrival_s: float
    shard: int
    last_shard: bool
    """No shard left untried: a dry shard answers SOLD_OUT, not MOVED."""
    answered: simpy.Event
    """Succeeds when the service decides the attempt."""
    decision: Decision = Decision.TIMED_OUT
    decided_s: float = math.nan
    read_stock: int = 0
    """naive-read-write: the stock value this attempt read."""


_Queued = tuple[float, int, int, _Attempt]
"""(arrival_s, order, sequence, attempt): arrival order, ties by order index."""


class _Ledger:
    """Applies the decisions due at each instant in arrival order, ties by order index."""

    def __init__(self, env: simpy.Environment, apply: Callable[[_Attempt, float], Decision]):
        self._env = env
        self._apply = apply
        self._due: list[_Queued] = []
        self._sequence = itertools.count()
        self._flush_pending = False

    def decide(self, attempt: _Attempt) -> None:
        """`attempt` is decided now; applied once every decision due now is known."""
        heapq.heappush(self._due, (attempt.arrival_s, attempt.order, next(self._sequence), attempt))
        if not self._flush_pending:
            self._flush_pending = True
            _Later(self._env, _DECIDE).callbacks.append(self._flush)

    def _flush(self, _event: simpy.Event) -> None:
        self._flush_pending = False
        now_s = self._env.now
        while self._due:
            attempt = heapq.heappop(self._due)[-1]
            attempt.decision = self._apply(attempt, now_s)
            attempt.decided_s = now_s
            attempt.answered.succeed()


class _Server:
    """One FIFO server: when free, takes up to `batch_max` attempts that have arrived and
    decides them all after commit_s + n * service_s (a plain FIFO server: batch_max = 1)."""

    def __init__(
        self,
        env: simpy.Environment,
        ledger: _Ledger,
        service_s: float,
        *,
        commit_s: float = 0.0,
        batch_max: int = 1,
    ) -> None:
        self._env = env
        self._ledger = ledger
        self._service_s = service_s
        self._commit_s = commit_s
        self._batch_max = batch_max
        self._queue: list[_Queued] = []
        self._sequence = itertools.count()
        self._wake: simpy.Event | None = None
        env.process(self._run())

    def submit(self, attempt: _Attempt) -> None:
        """An attempt arrives now."""
        heapq.heappush(
            self._queue, (attempt.arrival_s, attempt.order, next(self._sequence), attempt)
        )
        if self._wake is not None:
            self._wake.succeed()
            self._wake = None

    def _run(self) -> _Process:
        env = self._env
        while True:
            if not self._queue:
                self._wake = env.event()
                yield self._wake
            yield _Later(env, _AFTER_DECIDE)  # every attempt arriving now is queued
            size = min(self._batch_max, len(self._queue))
            group = [heapq.heappop(self._queue)[-1] for _ in range(size)]
            yield env.timeout(self._commit_s + size * self._service_s)
            for attempt in group:
                self._ledger.decide(attempt)


class _Book:
    """The inventory of every shard, sharing orders and user counts."""

    def __init__(self, demand: SaleDemand, shards: int) -> None:
        self.orders: dict[Hashable, Order] = {}
        counts: dict[Hashable, int] = {}
        stock = [demand.stock // shards + (k < demand.stock % shards) for k in range(shards)]
        self.shards = [
            Inventory(s, demand.per_user_limit, orders=self.orders, user_counts=counts)
            for s in stock
        ]

    def apply(self, attempt: _Attempt, now_s: float) -> Decision:
        outcome, _ = self.shards[attempt.shard].buy(attempt.user, attempt.order, now=now_s)
        if outcome is Outcome.SOLD_OUT and not attempt.last_shard:
            return Decision.MOVED
        return _DECISIONS[outcome]

    @property
    def sold(self) -> int:
        return sum(shard.sold for shard in self.shards)


class _Writer:
    """queue-token: writes each order behind the answer, one at a time, `commit_s` each."""

    def __init__(self, env: simpy.Environment, commit_s: float) -> None:
        self._env = env
        self._commit_s = commit_s
        self._store: simpy.Store = simpy.Store(env)
        self.written_s: float | None = None
        """When the last order was stored."""
        env.process(self._run())

    def put(self, order: Order) -> None:
        self._store.put(order)

    def _run(self) -> _Process:
        while True:
            yield self._store.get()
            yield self._env.timeout(self._commit_s)
            self.written_s = self._env.now


class _Naive:
    """naive-read-write: read at arrival + service_s, write back at read + commit_s, no lock."""

    def __init__(self, env: simpy.Environment, backend: Backend, stock: int) -> None:
        self._env = env
        self._read_s = backend.service_s
        self._commit_s = backend.commit_s
        self.stock = stock
        """The value last written: last writer wins."""
        self.sold = 0
        self.first_order_s: dict[Hashable, float] = {}
        """Per order index: when its first successful write landed."""
        self.ledger = _Ledger(env, self.apply)

    def submit(self, attempt: _Attempt) -> None:
        self._env.process(self._read_then_write(attempt))

    def _read_then_write(self, attempt: _Attempt) -> _Process:
        yield self._env.timeout(self._read_s)
        yield _Later(self._env, _AFTER_DECIDE)  # sees the writes landing at this instant
        attempt.read_stock = self.stock
        yield self._env.timeout(self._commit_s)
        self.ledger.decide(attempt)

    def apply(self, attempt: _Attempt, now_s: float) -> Decision:
        if attempt.read_stock <= 0:
            return Decision.SOLD_OUT
        self.stock = attempt.read_stock - 1
        self.sold += 1
        self.first_order_s.setdefault(attempt.order, now_s)
        return Decision.ORDERED


def _check(backend: Backend) -> None:
    if backend.kind not in BACKENDS:
        raise ValueError(f"backend.kind must be one of {', '.join(BACKENDS)}, got {backend.kind!r}")
    for name in ("service_s", "commit_s"):
        value = getattr(backend, name)
        if not (value >= 0.0 and math.isfinite(value)):
            raise ValueError(f"backend.{name} must be a finite number >= 0, got {value!r}")
    if backend.shards < 1 or backend.batch_max < 1:
        raise ValueError("backend.shards and backend.batch_max must be >= 1")


class _Sale:
    """The buyers of one sale and the backend they talk to."""

    def __init__(self, demand: SaleDemand, backend: Backend) -> None:
        self.demand = demand
        self.env = simpy.Environment(initial_time=float(demand.send_s.min(initial=0.0)))
        self.shards = backend.shards if backend.kind == "sharded" else 1
        self.naive: _Naive | None = None
        self.book: _Book | None = None
        self.writer: _Writer | None = None
        self.submit = self._build(backend)
        self.records: list[tuple[int, float, float, Decision]] = []
        """(order, send_s, response_s, decision) of each attempt, as the buyer saw it."""

    def _build(self, backend: Backend) -> Callable[[_Attempt], None]:
        env, kind = self.env, backend.kind
        if kind == "naive-read-write":
            self.naive = _Naive(env, backend, self.demand.stock)
            return self.naive.submit
        book = self.book = _Book(self.demand, self.shards)
        apply = book.apply
        if kind == "queue-token":
            writer = self.writer = _Writer(env, backend.commit_s)

            def apply(attempt: _Attempt, now_s: float) -> Decision:
                decision = book.apply(attempt, now_s)
                if decision is Decision.ORDERED:
                    writer.put(book.orders[attempt.order])
                return decision

        ledger = _Ledger(env, apply)
        if kind == "hot-row-batch":
            server = _Server(
                env,
                ledger,
                backend.service_s,
                commit_s=backend.commit_s,
                batch_max=backend.batch_max,
            )
            return server.submit
        servers = [_Server(env, ledger, backend.service_s) for _ in range(self.shards)]
        return lambda attempt: servers[attempt.shard].submit(attempt)

    def buyer(self, i: int) -> _Process:
        """Order i: send, wait, retry after a timeout, move on MOVED."""
        env, demand = self.env, self.demand
        half_rtt_s = 0.5 * float(demand.rtt_s[i])
        timeout_s = demand.timeout_s
        send_s = float(demand.send_s[i])
        shard = i % self.shards
        moves = retries = 0
        while True:
            arrival_s = send_s + half_rtt_s
            yield env.timeout(max(arrival_s - env.now, 0.0))
            attempt = _Attempt(
                order=i,
                user=int(demand.user[i]),
                arrival_s=arrival_s,
                shard=shard,
                last_shard=moves == self.shards - 1,
                answered=env.event(),
            )
            self.submit(attempt)
            yield attempt.answered | env.timeout(max(send_s + timeout_s - env.now, 0.0))
            if not attempt.answered.triggered:
                yield _Later(env, _AFTER_DECIDE)  # a decision due at this very instant
            response_s = attempt.decided_s + half_rtt_s - send_s
            if attempt.answered.triggered and response_s <= timeout_s:
                self.records.append((i, send_s, response_s, attempt.decision))
                if attempt.decision is not Decision.MOVED:
                    return
                moves += 1
                shard = (shard + 1) % self.shards
                send_s = attempt.decided_s + half_rtt_s
                continue
            self.records.append((i, send_s, timeout_s, Decision.TIMED_OUT))
            if retries == demand.retries:
                return
            backoff_s = demand.backoff_s * 2.0**retries * float(demand.jitter[i, retries])
            send_s = send_s + timeout_s + backoff_s
            retries += 1

    def outcome(self) -> SaleOutcome:
        if self.naive is not None:
            sold, created = self.naive.sold, self.naive.first_order_s
        else:
            assert self.book is not None
            sold = self.book.sold
            created = {order.key: order.created_s for order in self.book.orders.values()}
        index = np.fromiter(created.keys(), dtype=np.int64, count=len(created))
        ordered = np.zeros(self.demand.orders, dtype=bool)
        ordered[index] = True
        ordered_at_s = np.full(self.demand.orders, np.nan)
        ordered_at_s[index] = np.fromiter(created.values(), dtype=float, count=len(created))
        records = self.records
        order = np.array([r[0] for r in records], dtype=np.int64)
        send_s = np.array([r[1] for r in records], dtype=float)
        sort = np.lexsort((order, send_s))
        return SaleOutcome(
            attempt_order=order[sort],
            attempt_send_s=send_s[sort],
            attempt_response_s=np.array([r[2] for r in records], dtype=float)[sort],
            attempt_decision=np.array([r[3] for r in records], dtype=np.int64)[sort],
            ordered=ordered,
            ordered_at_s=ordered_at_s,
            sold=sold,
            written_s=None if self.writer is None else self.writer.written_s,
        )


def simulate_reference(demand: SaleDemand, backend: Backend) -> SaleOutcome:
    """Run every order of `demand` against `backend`, one SimPy process per order."""
    _check(backend)
    sale = _Sale(demand, backend)
    for i in range(demand.orders):
        sale.env.process(sale.buyer(i))
    sale.env.run()
    return sale.outcome()
