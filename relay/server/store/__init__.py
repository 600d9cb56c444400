"""Durable flash-sale stock for the sale service: SQLite (embedded default) or Redis.

`open_store("sqlite:PATH")` or `open_store("redis://HOST:PORT[/DB]")` gives a `SaleStore`; both
apply `relay.core.inventory.Inventory`'s rules and confirm an order only once it is durable.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from relay.core.inventory import Outcome
from relay.server.store.base import (
    OrderRecord,
    SaleStatus,
    SaleStore,
    StoreUnavailable,
    UnknownSale,
)
from relay.server.store.sqlite_store import SqliteStore

__all__ = [
    "OrderRecord",
    "Outcome",
    "SaleStatus",
    "SaleStore",
    "SqliteStore",
    "StoreUnavailable",
    "UnknownSale",
    "open_store",
]

SPEC_HELP = "sqlite:PATH or redis://HOST:PORT[/DB]"
"""The accepted forms of a store spec, for error messages."""


def open_store(spec: str) -> SaleStore:
    """The store `spec` names; ValueError for a malformed spec, StoreUnavailable if it cannot open.

    Opening SQLite reads every sale into memory (blocking); Redis connects on first use.
    """
    if spec.startswith("sqlite:"):
        path = spec.removeprefix("sqlite:")
        if not path:
            raise ValueError(f"store {spec!r}: the path is missing; expected {SPEC_HELP}")
        return SqliteStore(path)
    if spec.startswith("redis://"):
        _check_redis_url(spec)
        from relay.server.store.redis_store import RedisStore  # only Redis users need redis-py

        return RedisStore(spec)
    raise ValueError(f"store {spec!r}: expected {SPEC_HELP}")


def _check_redis_url(spec: str) -> None:
    parts = urlsplit(spec)
    try:
        port = parts.port
    except ValueError:
        port = None
    db = parts.path.removeprefix("/")
    if not parts.hostname or port is None or (db and not db.isdigit()) or parts.query:
        raise ValueError(f"store {spec!r}: expected {SPEC_HELP}")
