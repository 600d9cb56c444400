"""Inventory against a plain model: stock, per-user limits, idempotency, shards sharing maps."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from relay.core.inventory import Inventory, Order, Outcome


class InventoryMachine(RuleBasedStateMachine):
    """Drives one Inventory and a dict model side by side."""

    shards = 1

    def __init__(self) -> None:
        super().__init__()
        self.orders: dict[Hashable, Order] = {}
        self.counts: dict[Hashable, int] = {}
        self.inventories: list[Inventory] = []
        self.limit = 1
        self.model_stock: list[int] = []
        self.model_orders: dict[int, Order] = {}
        self.model_counts: Counter[int] = Counter()
        self.now = 0.0

    @initialize(stocks=st.lists(st.integers(0, 5), min_size=3, max_size=3), limit=st.integers(1, 3))
    def make(self, stocks: list[int], limit: int) -> None:
        self.limit = limit
        self.model_stock = stocks[: self.shards]
        self.inventories = [
            Inventory(stock, limit, orders=self.orders, user_counts=self.counts)
            for stock in self.model_stock
        ]

    @rule(
        user=st.integers(0, 3), key=st.integers(0, 7), shard=st.integers(0, 2), dt=st.floats(0, 1)
    )
    def buy(self, user: int, key: int, shard: int, dt: float) -> None:
        self.now += dt
        shard %= self.shards
        outcome, order = self.inventories[shard].buy(user, key, now=self.now)
        first = self.model_orders.get(key)
        if first is not None:
            assert outcome is Outcome.REPLAYED
            assert order is first
        elif self.model_counts[user] >= self.limit:
            assert (outcome, order) == (Outcome.OVER_LIMIT, None)
        elif self.model_stock[shard] == 0:
            assert (outcome, order) == (Outcome.SOLD_OUT, None)
        else:
            assert outcome is Outcome.ORDERED
            assert order == Order(len(self.model_orders), user, key, self.now)
            self.model_orders[key] = order
            self.model_counts[user] += 1
            self.model_stock[shard] -= 1

    @invariant()
    def stock_adds_up(self) -> None:
        for inventory, stock in zip(self.inventories, self.model_stock, strict=True):
            assert 0 <= inventory.sold <= inventory.initial_stock
            assert inventory.remaining == inventory.initial_stock - inventory.sold == stock
        assert sum(inventory.sold for inventory in self.inventories) == len(self.model_orders)

    @invariant()
    def nobody_over_the_limit(self) -> None:
        held = Counter(order.user for order in self.orders.values())
        assert held == +Counter(self.counts) == self.model_counts
        assert all(count <= self.limit for count in held.values())

    @invariant()
    def one_order_per_key(self) -> None:
        assert sorted(order.order_id for order in self.orders.values()) == list(
            range(len(self.model_orders))
        )
        for key in range(8):
            for inventory in self.inventories:
                assert inventory.order_for(key) is self.model_orders.get(key)


class ShardedInventoryMachine(InventoryMachine):
    """Three shard Inventories sharing the order map and user counts."""

    shards = 3


TestInventory = InventoryMachine.TestCase
TestInventory.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
TestShardedInventory = ShardedInventoryMachine.TestCase
TestShardedInventory.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


def test_ordered_creates_an_order_and_takes_stock() -> None:
    inventory = Inventory(2, 1)
    outcome, order = inventory.buy("ann", "k1", now=3.5)
    assert outcome is Outcome.ORDERED
    assert order == Order(order_id=0, user="ann", key="k1", created_s=3.5)
    assert (inventory.sold, inventory.remaining, inventory.initial_stock) == (1, 1, 2)
    assert inventory.order_for("k1") is order
    assert inventory.order_for("k2") is None


def test_replay_returns_the_same_order_even_when_sold_out_or_at_the_limit() -> None:
    inventory = Inventory(1, 1)
    _, order = inventory.buy("ann", "k1", now=1.0)
    assert inventory.buy("bob", "k2", now=2.0) == (Outcome.SOLD_OUT, None)
    outcome, again = inventory.buy("ann", "k1", now=9.0)
    assert outcome is Outcome.REPLAYED
    assert again is order
    assert again is not None and again.created_s == 1.0
    assert inventory.sold == 1


def test_over_limit_is_checked_before_stock() -> None:
    inventory = Inventory(0, 2, user_counts={"ann": 2})
    assert inventory.buy("ann", "k1", now=0.0) == (Outcome.OVER_LIMIT, None)
    assert inventory.buy("bob", "k2", now=0.0) == (Outcome.SOLD_OUT, None)


def test_limit_counts_orders_per_user() -> None:
    inventory = Inventory(10, 2)
    assert inventory.buy("ann", "k1", now=0.0)[0] is Outcome.ORDERED
    assert inventory.buy("ann", "k2", now=0.0)[0] is Outcome.ORDERED
    assert inventory.buy("ann", "k3", now=0.0) == (Outcome.OVER_LIMIT, None)
    assert inventory.buy("bob", "k3", now=0.0)[0] is Outcome.ORDERED
    assert inventory.sold == 3


def test_shards_share_limits_and_keys_but_not_stock() -> None:
    orders: dict[Hashable, Order] = {}
    counts: dict[Hashable, int] = {}
    left = Inventory(1, 1, orders=orders, user_counts=counts)
    right = Inventory(1, 1, orders=orders, user_counts=counts)
    _, order = left.buy("ann", "k1", now=0.0)
    assert right.buy("ann", "k1", now=1.0) == (Outcome.REPLAYED, order)
    assert right.buy("ann", "k2", now=1.0) == (Outcome.OVER_LIMIT, None)
    assert left.buy("bob", "k3", now=2.0) == (Outcome.SOLD_OUT, None)
    outcome, other = right.buy("bob", "k3", now=3.0)  # the rejected key is evaluated afresh
    assert outcome is Outcome.ORDERED
    assert other is not None and other.order_id == 1
    assert (left.remaining, right.remaining) == (0, 0)


@pytest.mark.parametrize(
    ("stock", "limit", "message"),
    [(-1, 1, "stock must be >= 0, got -1"), (5, 0, "per_user_limit must be >= 1, got 0")],
)
def test_bad_arguments_are_refused(stock: int, limit: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Inventory(stock, limit)


def test_empty_stock_is_allowed() -> None:
    assert Inventory(0, 1).buy("ann", "k1", now=0.0) == (Outcome.SOLD_OUT, None)
