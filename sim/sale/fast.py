"""Vectorised flash-sale model: millions of attempts in numpy, same semantics as the reference.

Attempts are processed in chunks of arrival time no wider than the buyers' timeout. A retry
leaves at least one timeout after the attempt it repeats, so it always lands in a later chunk:
the chunks can be decided in order, each with numpy, carrying the backend's state (when each
server is next free, the group commit being formed, the writes in flight) and the inventory's.
See `sim.sale.spec` for the semantics and `sim.sale.reference` for the per-request model this
one must agree with.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import numpy as np

from sim.sale.spec import Backend, Decision, SaleDemand, SaleOutcome

_MOVE_CHUNK_S = 0.05
"""Sharded: chunk width, and the most a move to another shard can be delayed by chunking."""


@dataclass
class _Attempts:
    """A batch of attempts in flight (parallel arrays)."""

    order: np.ndarray
    send_s: np.ndarray
    arrive_s: np.ndarray
    retry: np.ndarray
    """How many retries came before this attempt."""
    shard: np.ndarray

    def take(self, mask: np.ndarray) -> _Attempts:
        return _Attempts(*(a[mask] for a in self.arrays()))

    def arrays(self) -> tuple[np.ndarray, ...]:
        return (self.order, self.send_s, self.arrive_s, self.retry, self.shard)

    @staticmethod
    def concat(parts: list[_Attempts]) -> _Attempts:
        columns = zip(*(p.arrays() for p in parts), strict=True)
        return _Attempts(*(np.concatenate(cols) for cols in columns))


@dataclass
class _State:
    """What carries from one chunk to the next."""

    free_s: np.ndarray
    """When each server (shard) is next free."""
    remaining: np.ndarray
    """Stock left per shard (naive-read-write: the last value written)."""
    ordered: np.ndarray
    ordered_at_s: np.ndarray
    user_orders: dict[int, int] = field(default_factory=dict)
    moves: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    writes: list[tuple[float, int, int]] = field(default_factory=list)
    """naive-read-write: (time, sequence, value) of writes not yet applied."""
    sold: int = 0


def simulate_fast(demand: SaleDemand, backend: Backend) -> SaleOutcome:
    """Decide every attempt of a sale; see sim.sale.spec for the rules."""
    n = demand.orders
    shards = backend.shards if backend.kind == "sharded" else 1
    per_shard = np.full(shards, demand.stock // shards, dtype=np.int64)
    per_shard[: demand.stock % shards] += 1
    state = _State(
        free_s=np.full(shards, -np.inf),
        remaining=per_shard,
        ordered=np.zeros(n, dtype=bool),
        ordered_at_s=np.full(n, np.nan),
        moves=np.zeros(n, dtype=np.int64),
    )
    if backend.kind == "naive-read-write":
        state.remaining = np.array([demand.stock], dtype=np.int64)
    order = np.arange(n)
    pending = [
        _Attempts(
            order=order,
            send_s=demand.send_s.astype(float),
            arrive_s=demand.send_s + 0.5 * demand.rtt_s,
            retry=np.zeros(n, dtype=np.int64),
            shard=order % shards,
        )
    ]
    width = demand.timeout_s
    if backend.kind == "sharded":
        width = min(width, _MOVE_CHUNK_S)
    if n == 0:
        pending = []
    seen: list[tuple[np.ndarray, ...]] = []
    limits_bind = _limits_can_bind(demand)
    while pending:
        waiting = _Attempts.concat(pending)
        start = float(waiting.arrive_s.min())
        chunk_end = start + width
        if backend.kind == "hot-row-batch" and state.free_s[0] >= chunk_end:
            # The group commit is busy past the chunk: form its next group from the attempts
            # known by then (exact unless that backlog exceeds the buyers' timeout).
            chunk_end = float(state.free_s[0]) + 1e-9
        in_chunk = waiting.arrive_s < chunk_end
        chunk = waiting.take(in_chunk)
        pending = [waiting.take(~in_chunk)] if not in_chunk.all() else []
        sort = np.lexsort((chunk.order, chunk.arrive_s))
        chunk = chunk.take(sort)
        decided_s, deferred = _decide_times(backend, chunk, state, chunk_end)
        if deferred is not None:
            pending.append(chunk.take(deferred))
            chunk = chunk.take(~deferred)
            decided_s = decided_s[~deferred]
        if chunk.order.size == 0:
            continue
        codes = _apply_inventory(demand, backend, chunk, decided_s, state, limits_bind, shards)
        answered_s = decided_s + 0.5 * demand.rtt_s[chunk.order]
        waited_s = answered_s - chunk.send_s
        timed_out = waited_s > demand.timeout_s
        seen.append(
            (
                chunk.order,
                chunk.send_s,
                np.minimum(waited_s, demand.timeout_s),
                np.where(timed_out, int(Decision.TIMED_OUT), codes),
            )
        )
        again = timed_out & (chunk.retry < demand.retries)
        if again.any():
            retry = chunk.retry[again]
            jitter = demand.jitter[chunk.order[again], retry]
            send = chunk.send_s[again] + demand.timeout_s + demand.backoff_s * 2.0**retry * jitter
            pending.append(
                _Attempts(
                    order=chunk.order[again],
                    send_s=send,
                    arrive_s=send + 0.5 * demand.rtt_s[chunk.order[again]],
                    retry=retry + 1,
                    shard=chunk.shard[again],
                )
            )
        move = (codes == Decision.MOVED) & ~timed_out
        if move.any():
            moved = chunk.order[move]
            state.moves[moved] += 1
            send = answered_s[move]
            arrive = np.maximum(send + 0.5 * demand.rtt_s[moved], chunk_end)
            pending.append(
                _Attempts(
                    order=moved,
                    send_s=send,
                    arrive_s=arrive,
                    retry=chunk.retry[move],
                    shard=(chunk.shard[move] + 1) % shards,
                )
            )
    return _outcome(demand, backend, seen, state)


def _limits_can_bind(demand: SaleDemand) -> bool:
    """Whether some buyer has more orders than the per-user limit allows."""
    if demand.orders == 0:
        return False
    return int(np.bincount(demand.user).max()) > demand.per_user_limit


# -- backends: when is each attempt decided ---------------------------------------------------


def fifo_done_s(arrive_s: np.ndarray, service_s: float, free_s: float) -> np.ndarray:
    """When each of time-ordered arrivals leaves one FIFO server with constant service s,
    free from `free_s`: d_n = max(d_{n-1}, a_n) + s, in closed form."""
    k = np.arange(arrive_s.size)
    ahead = np.maximum.accumulate(arrive_s - k * service_s)
    return (k + 1) * service_s + np.maximum(ahead, free_s)


def _decide_times(
    backend: Backend, chunk: _Attempts, state: _State, chunk_end_s: float
) -> tuple[np.ndarray, np.ndarray | None]:
    """Server decision time of each attempt; and those deferred to the next chunk, if any."""
    kind = backend.kind
    a = chunk.arrive_s
    if kind in ("row-lock", "redis-lua", "queue-token"):
        decided = fifo_done_s(a, backend.service_s, state.free_s[0])
        state.free_s[0] = decided[-1]
        return decided, None
    if kind == "sharded":
        decided = np.empty_like(a)
        for shard in np.unique(chunk.shard):
            mine = chunk.shard == shard
            decided[mine] = fifo_done_s(a[mine], backend.service_s, state.free_s[shard])
            state.free_s[shard] = decided[mine][-1]
        return decided, None
    if kind == "hot-row-batch":
        return _group_commits(backend, a, state, chunk_end_s)
    if kind == "naive-read-write":
        return a + backend.service_s + backend.commit_s, None
    raise ValueError(f"unknown backend {kind!r}")


def _group_commits(
    backend: Backend, a: np.ndarray, state: _State, chunk_end_s: float
) -> tuple[np.ndarray, np.ndarray | None]:
    """Group commit: when free, take every attempt that has arrived (up to batch_max)."""
    decided = np.full(a.size, np.nan)
    free = float(state.free_s[0])
    i = 0
    while i < a.size:
        start = max(free, float(a[i]))
        if start >= chunk_end_s:
            break  # later arrivals may still join this group: decide it with the next chunk
        j = min(int(np.searchsorted(a, start, side="right")), i + backend.batch_max)
        free = start + backend.commit_s + (j - i) * backend.service_s
        decided[i:j] = free
        i = j
    state.free_s[0] = free
    deferred = np.isnan(decided)
    return decided, deferred if deferred.any() else None


# -- inventory --------------------------------------------------------------------------------


def _apply_inventory(
    demand: SaleDemand,
    backend: Backend,
    chunk: _Attempts,
    decided_s: np.ndarray,
    state: _State,
    limits_bind: bool,
    shards: int,
) -> np.ndarray:
    """Decision codes, applying attempts in decision order (ties: arrival order)."""
    by_decision = np.argsort(decided_s, kind="stable")
    codes = np.empty(decided_s.size, dtype=np.int64)
    if backend.kind == "naive-read-write":
        codes[by_decision] = _naive(backend, chunk.take(by_decision), decided_s[by_decision], state)
    elif limits_bind:
        codes[by_decision] = _inventory_loop(
            demand, chunk.take(by_decision), decided_s[by_decision], state, shards
        )
    else:
        codes[by_decision] = _inventory_vectorised(
            chunk.take(by_decision), decided_s[by_decision], state, shards
        )
    return codes


def _rank_within(groups: np.ndarray) -> np.ndarray:
    """0, 1, 2, ... counting separately within each group value, in the given order."""
    if groups.size == 0:
        return groups.copy()
    sort = np.argsort(groups, kind="stable")
    sorted_groups = groups[sort]
    starts = np.flatnonzero(np.r_[True, sorted_groups[1:] != sorted_groups[:-1]])
    lengths = np.diff(np.r_[starts, sorted_groups.size])
    rank_sorted = np.arange(groups.size) - np.repeat(starts, lengths)
    rank = np.empty_like(rank_sorted)
    rank[sort] = rank_sorted
    return rank


def _inventory_vectorised(
    chunk: _Attempts, decided_s: np.ndarray, state: _State, shards: int
) -> np.ndarray:
    """No buyer can reach the limit: a new key succeeds while its shard has stock."""
    codes = np.full(chunk.order.size, int(Decision.REPLAYED), dtype=np.int64)
    new = ~state.ordered[chunk.order]
    idx = np.flatnonzero(new)
    shard = chunk.shard[idx]
    rank = _rank_within(shard)
    got = rank < state.remaining[shard]
    winners = idx[got]
    codes[winners] = Decision.ORDERED
    state.ordered[chunk.order[winners]] = True
    state.ordered_at_s[chunk.order[winners]] = decided_s[winners]
    taken = np.bincount(shard[got], minlength=shards)
    state.remaining -= taken
    state.sold += int(taken.sum())
    losers = idx[~got]
    if shards > 1:
        out_of_shards = state.moves[chunk.order[losers]] >= shards - 1
        codes[losers] = np.where(out_of_shards, int(Decision.SOLD_OUT), int(Decision.MOVED))
    else:
        codes[losers] = Decision.SOLD_OUT
    return codes


def _inventory_loop(
    demand: SaleDemand, chunk: _Attempts, decided_s: np.ndarray, state: _State, shards: int
) -> np.ndarray:
    """Buyers with more orders than the limit: apply the rules one attempt at a time."""
    codes = np.empty(chunk.order.size, dtype=np.int64)
    users = demand.user
    held = state.user_orders
    limit = demand.per_user_limit
    for j, (o, h) in enumerate(zip(chunk.order.tolist(), chunk.shard.tolist(), strict=True)):
        if state.ordered[o]:
            codes[j] = Decision.REPLAYED
            continue
        user = int(users[o])
        if held.get(user, 0) >= limit:
            codes[j] = Decision.OVER_LIMIT
        elif state.remaining[h] <= 0:
            codes[j] = Decision.MOVED if state.moves[o] < shards - 1 else Decision.SOLD_OUT
        else:
            state.remaining[h] -= 1
            state.sold += 1
            held[user] = held.get(user, 0) + 1
            state.ordered[o] = True
            state.ordered_at_s[o] = decided_s[j]
            codes[j] = Decision.ORDERED
    return codes


def _naive(backend: Backend, chunk: _Attempts, decided_s: np.ndarray, state: _State) -> np.ndarray:
    """Read, then write back the value read minus one, with no lock: lost updates oversell."""
    codes = np.empty(chunk.order.size, dtype=np.int64)
    writes = state.writes
    value = int(state.remaining[0])
    sequence = state.sold
    arrivals = zip(chunk.order.tolist(), chunk.arrive_s.tolist(), strict=True)
    for j, (o, arrive) in enumerate(arrivals):
        read_s = arrive + backend.service_s
        while writes and writes[0][0] <= read_s:
            value = heapq.heappop(writes)[2]
        if value > 0:
            sequence += 1
            heapq.heappush(writes, (read_s + backend.commit_s, sequence, value - 1))
            state.sold += 1
            if not state.ordered[o]:
                state.ordered[o] = True
                state.ordered_at_s[o] = decided_s[j]
            codes[j] = Decision.ORDERED
        else:
            codes[j] = Decision.SOLD_OUT
    state.remaining[0] = value
    return codes


# -- outcome ----------------------------------------------------------------------------------


def _outcome(
    demand: SaleDemand, backend: Backend, seen: list[tuple[np.ndarray, ...]], state: _State
) -> SaleOutcome:
    if seen:
        order, send, response, decision = (np.concatenate(c) for c in zip(*seen, strict=True))
    else:
        order = send = response = decision = np.zeros(0)
    sort = np.lexsort((order, send))
    written = None
    if backend.kind == "queue-token" and state.sold:
        created = np.sort(state.ordered_at_s[state.ordered])
        written = float(fifo_done_s(created, backend.commit_s, -np.inf)[-1])
    return SaleOutcome(
        attempt_order=order[sort].astype(np.int64),
        attempt_send_s=send[sort],
        attempt_response_s=response[sort],
        attempt_decision=decision[sort].astype(np.int64),
        ordered=state.ordered,
        ordered_at_s=state.ordered_at_s,
        sold=state.sold,
        written_s=written,
    )
