"""What every sale store offers: the `SaleStore` protocol, its records and its errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from relay.core.inventory import Outcome


class UnknownSale(LookupError):
    """No sale has this id (the HTTP layer answers 404)."""


class StoreUnavailable(RuntimeError):
    """The store could not make a decision durable; nothing was confirmed (the HTTP layer: 503).

    A buy that raised this may be retried with the same idempotency key: if its order was stored
    after all, the retry replays it.
    """


@dataclass(frozen=True, slots=True)
class OrderRecord:
    """One confirmed order, as stored."""

    order_id: int
    """0, 1, 2, ... within its sale, in the order the orders were decided."""
    sale_id: str
    user: str
    key: str
    """The idempotency key that created it."""
    created_s: float
    """Wall-clock time (Unix seconds) of the decision."""


@dataclass(frozen=True, slots=True)
class SaleStatus:
    """A sale's durable state."""

    sku: str
    stock: int
    """Items the sale started with."""
    per_user_limit: int
    sold: int
    """Confirmed orders (each one item)."""

    @property
    def remaining(self) -> int:
        """Items not yet sold."""
        return self.stock - self.sold


class SaleStore(Protocol):
    """Durable flash-sale stock: the decisions of `relay.core.inventory.Inventory`, persisted.

    `buy` returns only once its outcome is durable: an ORDERED or REPLAYED order survives a crash
    of the process, and a rejection was decided on durable state only.
    """

    async def create(self, sku: str, stock: int, per_user_limit: int) -> str:
        """Create a sale and return its id; ValueError on a negative stock or a limit below 1."""
        ...

    async def buy(self, sale_id: str, user: str, key: str) -> tuple[Outcome, OrderRecord | None]:
        """One attempt: replay of `key`'s order, else OVER_LIMIT, else SOLD_OUT, else ORDERED.

        Raises UnknownSale, or StoreUnavailable if the outcome could not be made durable.
        """
        ...

    async def status(self, sale_id: str) -> SaleStatus | None:
        """The sale's durable state, or None for an unknown sale."""
        ...

    async def orders(self, sale_id: str) -> list[OrderRecord]:
        """Every confirmed order of the sale by order_id (for tests and audits); UnknownSale."""
        ...

    async def close(self) -> None:
        """Wait for buys in flight, then release the database. Safe to call twice."""
        ...


def check_sale(stock: int, per_user_limit: int) -> None:
    """Raise ValueError unless `stock` >= 0 and `per_user_limit` >= 1."""
    if stock < 0:
        raise ValueError(f"stock must be >= 0, got {stock}")
    if per_user_limit < 1:
        raise ValueError(f"per_user_limit must be >= 1, got {per_user_limit}")
