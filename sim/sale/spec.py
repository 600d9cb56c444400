"""What a sale model takes and returns; shared by the vectorised model and the SimPy reference.

Semantics both models follow exactly:

- Order i belongs to buyer `user[i]`; its first attempt leaves the buyer at `send_s[i]`; every
  attempt takes half of `rtt_s[i]` to reach the sale service and half to come back.
- The backend decides each arriving attempt at a server time D (see `Backend`); decisions are
  applied to the inventory in decision order, ties in arrival order, by `relay.core.inventory`'s
  rules: a key that already has an order gets that order again (replayed); a buyer at the limit
  gets OVER_LIMIT; no stock left gets SOLD_OUT; otherwise a new order.
- The buyer sees the answer at D + rtt/2. If that is more than `timeout_s` after sending, the
  buyer gives up at send + timeout and, while retries remain, sends again (same idempotency key)
  after `backoff_s * 2**k * jitter[i, k]` (k = retry number from 0). The server still decides
  the abandoned attempt: it may create the order the buyer never heard about.
- Sharded: order i's first attempt goes to shard `i % shards`; an attempt that finds its shard
  dry is answered MOVED and the buyer sends at once (on receiving the answer) to the next shard
  it has not tried; the last untried shard answers SOLD_OUT instead. Moves are not retries; a
  retry goes to the shard of the attempt that timed out.
- naive-read-write: an order counts as created at its first successful attempt.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np


class Decision(enum.IntEnum):
    """What the sale service answered one attempt."""

    ORDERED = 0
    REPLAYED = 1
    SOLD_OUT = 2
    OVER_LIMIT = 3
    MOVED = 4
    TIMED_OUT = 5
    """Client-side: the buyer stopped waiting (the server still decides the attempt)."""


BACKENDS = ("row-lock", "hot-row-batch", "redis-lua", "sharded", "queue-token", "naive-read-write")


@dataclass(frozen=True)
class Backend:
    """How stock is decremented, with its costs.

    - row-lock, redis-lua: one FIFO server, `service_s` per attempt (every attempt takes the lock
      or the single thread, sold out or not).
    - hot-row-batch: one FIFO server committing groups: when free, it takes every attempt that
      has arrived (at most `batch_max`) and decides them all at start + commit_s + n * service_s.
    - sharded: `shards` FIFO servers, `service_s` each, stock split evenly (the first
      stock % shards shards get one more).
    - queue-token: one FIFO admission server, `service_s` per attempt, decides at once; each
      order is then written behind by one FIFO writer taking `commit_s` (not on the answer path).
    - naive-read-write: no lock and no queue: an attempt reads the stock at arrival + service_s
      and writes back (read value - 1) at read + commit_s, where it is decided; it succeeds if it
      read a value > 0. Limits and idempotency are not checked. Oversells under contention.
    """

    kind: str
    service_s: float
    commit_s: float = 0.0
    shards: int = 1
    batch_max: int = 1000


@dataclass(frozen=True)
class SaleDemand:
    """Every order of one sale, before any of them is sent. One row per order."""

    at_s: float
    """When the host announces the sale, in stream (capture) time."""
    stock: int
    per_user_limit: int
    timeout_s: float
    retries: int
    backoff_s: float
    user: np.ndarray
    """Buyer of each order (int)."""
    send_s: np.ndarray
    """When the first attempt leaves the buyer: at_s + replay latency + reaction."""
    rtt_s: np.ndarray
    """Buyer <-> sale service round trip."""
    latency_s: np.ndarray
    """The buyer's replay latency when the announcement played (for fairness)."""
    jitter: np.ndarray
    """Shape (orders, max(retries, 1)): uniform [0, 1) draws for the backoff of each retry."""

    @property
    def orders(self) -> int:
        return int(self.user.size)


@dataclass(frozen=True)
class SaleOutcome:
    """What happened to every attempt and every order."""

    attempt_order: np.ndarray
    """Order index of each attempt, in the order the attempts were sent."""
    attempt_send_s: np.ndarray
    attempt_response_s: np.ndarray
    """Client-perceived response time of each attempt, at most timeout_s."""
    attempt_decision: np.ndarray
    """Decision code of each attempt as the buyer saw it (TIMED_OUT if it gave up)."""
    ordered: np.ndarray
    """Per order: the service holds an order for it (whether or not the buyer heard)."""
    ordered_at_s: np.ndarray
    """Per order: server time the order was created; nan when none."""
    sold: int
    """Items the service handed out (can exceed stock only for naive-read-write)."""
    written_s: float | None = None
    """queue-token: when the write-behind writer stored the last order."""

    @property
    def attempts(self) -> int:
        return int(self.attempt_order.size)
