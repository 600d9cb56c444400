"""Sale inventory: stock, per-user limits and idempotency keys as a pure decision.

No I/O and no clock: the caller passes the time of each decision and applies decisions in the
order it chooses (the sale service as it handles requests, the SimPy reference in decision-time
order). The shards of one sale share the `orders` and `user_counts` maps, so limits and
idempotency hold across shards while each shard keeps its own stock.
"""

from __future__ import annotations

import enum
from collections.abc import Hashable
from dataclasses import dataclass


class Outcome(enum.IntEnum):
    """What one `buy` decided."""

    ORDERED = 0
    """A new order was created (201)."""
    REPLAYED = 1
    """The key already had an order: that order again (201, same body)."""
    SOLD_OUT = 2
    """No stock left here (409)."""
    OVER_LIMIT = 3
    """The buyer already holds `per_user_limit` orders (429)."""


@dataclass(frozen=True, slots=True)
class Order:
    """One order, created once per idempotency key."""

    order_id: int
    """0, 1, 2, ... per order map (so unique across the shards sharing it)."""
    user: Hashable
    key: Hashable
    """The idempotency key that created it."""
    created_s: float
    """The `now` of the `buy` that created it."""


class Inventory:
    """Stock of one sale (or one shard): per-user limits, idempotency keys. No I/O, no clock."""

    __slots__ = ("_orders", "_user_counts", "initial_stock", "per_user_limit", "remaining")

    def __init__(
        self,
        stock: int,
        per_user_limit: int,
        *,
        orders: dict[Hashable, Order] | None = None,
        user_counts: dict[Hashable, int] | None = None,
    ) -> None:
        if stock < 0:
            raise ValueError(f"stock must be >= 0, got {stock}")
        if per_user_limit < 1:
            raise ValueError(f"per_user_limit must be >= 1, got {per_user_limit}")
        self.initial_stock = stock
        """Items this inventory started with."""
        self.per_user_limit = per_user_limit
        """Most orders one buyer may hold (across every shard sharing `user_counts`)."""
        self.remaining = stock
        """Items not yet sold here."""
        self._orders: dict[Hashable, Order] = {} if orders is None else orders
        self._user_counts: dict[Hashable, int] = {} if user_counts is None else user_counts

    @property
    def sold(self) -> int:
        """Items sold from this inventory's own stock."""
        return self.initial_stock - self.remaining

    def buy(self, user: Hashable, key: Hashable, *, now: float) -> tuple[Outcome, Order | None]:
        """Decide one attempt; only ORDERED changes state, so a rejected key may try again."""
        order = self._orders.get(key)
        if order is not None:
            return Outcome.REPLAYED, order
        held = self._user_counts.get(user, 0)
        if held >= self.per_user_limit:
            return Outcome.OVER_LIMIT, None
        if self.remaining == 0:
            return Outcome.SOLD_OUT, None
        order = Order(order_id=len(self._orders), user=user, key=key, created_s=now)
        self._orders[key] = order
        self._user_counts[user] = held + 1
        self.remaining -= 1
        return Outcome.ORDERED, order

    def order_for(self, key: Hashable) -> Order | None:
        """The order `key` created (in any shard sharing the order map), or None."""
        return self._orders.get(key)
