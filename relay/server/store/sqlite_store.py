"""Sale store on SQLite: `Inventory` decides in memory, orders are persisted by group commit.

The event loop decides every buy with `relay.core.inventory.Inventory` (one thread, so no races)
and queues each new order; one writer thread owns the connection and commits the queue in one
transaction (WAL, `synchronous=FULL`), while the orders that arrive meanwhile wait for the next.
A caller hears of its outcome only once everything that outcome saw is committed. If a commit
fails, its orders and all decided after them are undone in memory and their callers get
`StoreUnavailable`, so memory again equals the database.

One process per database file: the connection holds an exclusive lock from open to close, so a
second sale service on the same file fails at open instead of deciding on stale stock. The
schema repeats the rules (one order per key, order ids below the stock, per-user limit) as a
second line of defence.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from relay.core.inventory import Inventory, Order, Outcome
from relay.server.store.base import (
    OrderRecord,
    SaleStatus,
    StoreUnavailable,
    UnknownSale,
    check_sale,
)

_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sales (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sku TEXT NOT NULL,
    stock INTEGER NOT NULL CHECK (stock >= 0),
    per_user_limit INTEGER NOT NULL CHECK (per_user_limit >= 1)
);
CREATE TABLE IF NOT EXISTS orders (
    sale_id INTEGER NOT NULL REFERENCES sales (id),
    order_id INTEGER NOT NULL CHECK (order_id >= 0),
    buyer TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    created_s REAL NOT NULL,
    PRIMARY KEY (sale_id, order_id),
    UNIQUE (sale_id, idempotency_key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS orders_by_buyer ON orders (sale_id, buyer);
CREATE TRIGGER IF NOT EXISTS orders_within_stock BEFORE INSERT ON orders
WHEN NEW.order_id >= (SELECT stock FROM sales WHERE id = NEW.sale_id)
BEGIN SELECT RAISE(ABORT, 'order beyond the stock'); END;
CREATE TRIGGER IF NOT EXISTS orders_within_user_limit BEFORE INSERT ON orders
WHEN (SELECT count(*) FROM orders WHERE sale_id = NEW.sale_id AND buyer = NEW.buyer)
    >= (SELECT per_user_limit FROM sales WHERE id = NEW.sale_id)
BEGIN SELECT RAISE(ABORT, 'order over the per-user limit'); END;
"""

_INSERT_ORDER = (
    "INSERT INTO orders (sale_id, order_id, buyer, idempotency_key, created_s)"
    " VALUES (?, ?, ?, ?, ?)"
)
_SELECT_ORDERS = "SELECT order_id, buyer, idempotency_key, created_s FROM orders WHERE sale_id = ?"

_OrderRow = tuple[int, int, str, str, float]


@dataclass(slots=True, eq=False)
class _Sale:
    """One sale in memory: its Inventory and the maps it decides on."""

    sale_id: str
    sku: str
    inventory: Inventory
    orders: dict[Hashable, Order] = field(default_factory=dict)
    """Key -> order, shared with `inventory` (committed and pending orders)."""
    user_counts: dict[Hashable, int] = field(default_factory=dict)
    """User -> orders held, shared with `inventory`."""
    durable: int = 0
    """Orders committed: exactly order ids 0 .. durable - 1."""

    @classmethod
    def new(cls, sale_id: str, sku: str, stock: int, per_user_limit: int) -> _Sale:
        orders: dict[Hashable, Order] = {}
        user_counts: dict[Hashable, int] = {}
        inventory = Inventory(stock, per_user_limit, orders=orders, user_counts=user_counts)
        return cls(sale_id, sku, inventory, orders, user_counts)

    def restore(self, order: Order) -> None:
        """Add an order read back from the database (in order_id order)."""
        if order.order_id != self.durable:
            raise StoreUnavailable(f"sale {self.sale_id}: order ids are not 0, 1, 2, ...")
        self.orders[order.key] = order
        self.user_counts[order.user] = self.user_counts.get(order.user, 0) + 1
        self.inventory.remaining -= 1
        self.durable += 1

    def undo(self, order: Order) -> None:
        """Forget an order whose commit failed."""
        del self.orders[order.key]
        self.user_counts[order.user] -= 1
        if self.user_counts[order.user] == 0:
            del self.user_counts[order.user]
        self.inventory.remaining += 1

    def row(self, order: Order) -> _OrderRow:
        return (int(self.sale_id), order.order_id, str(order.user), str(order.key), order.created_s)

    def record(self, order: Order | None) -> OrderRecord | None:
        if order is None:
            return None
        return OrderRecord(
            order.order_id, self.sale_id, str(order.user), str(order.key), order.created_s
        )


class _Batch:
    """Orders that go into one transaction, and the callers waiting for it."""

    __slots__ = ("done", "error", "orders")

    def __init__(self) -> None:
        self.orders: list[tuple[_Sale, Order]] = []
        self.done = asyncio.Event()
        """Set once the transaction committed or failed."""
        self.error: BaseException | None = None
        """Why it failed, or None once committed."""


class SqliteStore:
    """`SaleStore` on one SQLite file; see the module docstring."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        """The database file."""
        self._conn = _connect(self.path)
        try:
            self._sales = _load(self._conn)
        except BaseException:
            self._conn.close()
            raise
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sale-store")
        self._open = _Batch()
        self._in_flight: _Batch | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._closed = False

    async def create(self, sku: str, stock: int, per_user_limit: int) -> str:
        check_sale(stock, per_user_limit)
        self._check_open()
        sale_id = await self._run(_insert_sale, sku, stock, per_user_limit)
        self._sales[sale_id] = _Sale.new(sale_id, sku, stock, per_user_limit)
        return sale_id

    async def buy(self, sale_id: str, user: str, key: str) -> tuple[Outcome, OrderRecord | None]:
        sale = self._sale(sale_id)
        while True:
            outcome, order = sale.inventory.buy(user, key, now=time.time())
            batch = self._batch_for(sale, outcome, order)
            if batch is None:
                return outcome, sale.record(order)
            await batch.done.wait()
            if batch.error is None:
                return outcome, sale.record(order)
            if outcome is Outcome.ORDERED:
                raise StoreUnavailable(f"order not stored: {batch.error}") from batch.error
            # What this rejection or replay saw was rolled back: decide again.

    async def status(self, sale_id: str) -> SaleStatus | None:
        self._check_open()
        sale = self._sales.get(sale_id)
        if sale is None:
            return None
        inventory = sale.inventory
        return SaleStatus(sale.sku, inventory.initial_stock, inventory.per_user_limit, sale.durable)

    async def orders(self, sale_id: str) -> list[OrderRecord]:
        sale = self._sale(sale_id)
        rows = await self._run(_select_orders, int(sale.sale_id))
        return [
            OrderRecord(order_id, sale_id, user, key, created_s)
            for order_id, user, key, created_s in rows
        ]

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._flusher is not None:
            await self._flusher
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._writer, self._conn.close)
        self._writer.shutdown()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailable(f"{self.path}: store is closed")

    def _sale(self, sale_id: str) -> _Sale:
        self._check_open()
        sale = self._sales.get(sale_id)
        if sale is None:
            raise UnknownSale(sale_id)
        return sale

    def _batch_for(self, sale: _Sale, outcome: Outcome, order: Order | None) -> _Batch | None:
        """The batch whose commit makes this decision durable, or None if it already is."""
        if outcome is Outcome.ORDERED and order is not None:
            batch = self._open
            batch.orders.append((sale, order))
            if self._flusher is None:
                self._flusher = asyncio.get_running_loop().create_task(self._flush())
            return batch
        if sale.durable < sale.inventory.sold:  # decided on orders still being committed
            return self._open if self._open.orders else self._in_flight
        return None

    async def _flush(self) -> None:
        """Commit batches one after another until none is waiting."""
        loop = asyncio.get_running_loop()
        try:
            while self._open.orders:
                batch = self._in_flight = self._open
                self._open = _Batch()
                rows = [sale.row(order) for sale, order in batch.orders]
                try:
                    await loop.run_in_executor(self._writer, _insert_orders, self._conn, rows)
                except Exception as error:
                    # The orders decided meanwhile saw the failed ones as sold: undo them too.
                    settled = [batch, self._open]
                    self._open = _Batch()
                    for each in settled:
                        each.error = error
                        for sale, order in reversed(each.orders):
                            sale.undo(order)
                else:
                    settled = [batch]
                    for sale, _ in batch.orders:
                        sale.durable += 1
                self._in_flight = None
                for each in settled:
                    each.done.set()
        finally:
            self._flusher = None

    async def _run(self, fn: Callable[..., _T], *args: object) -> _T:
        """Run `fn(connection, *args)` on the writer thread."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._writer, fn, self._conn, *args)
        except sqlite3.Error as error:
            raise StoreUnavailable(f"{self.path}: {error}") from error


def _connect(path: str) -> sqlite3.Connection:
    """Open `path` in WAL mode with full sync, holding its lock until closed; create the schema."""
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=1.0)
    except sqlite3.Error as error:
        raise StoreUnavailable(f"{path}: {error}") from error
    try:
        conn.execute("PRAGMA locking_mode = EXCLUSIVE")  # before WAL: no shared-memory index
        (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
        if mode != "wal":
            raise StoreUnavailable(f"{path}: cannot use a write-ahead log (journal mode {mode})")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} COMMIT;")
    except sqlite3.OperationalError as error:
        conn.close()
        if "locked" in str(error):
            raise StoreUnavailable(f"{path} is in use by another sale service") from error
        raise StoreUnavailable(f"{path}: {error}") from error
    except BaseException:
        conn.close()
        raise
    return conn


def _load(conn: sqlite3.Connection) -> dict[str, _Sale]:
    """Every sale and its orders, rebuilt in memory."""
    sales = {
        str(sale_id): _Sale.new(str(sale_id), sku, stock, limit)
        for sale_id, sku, stock, limit in conn.execute(
            "SELECT id, sku, stock, per_user_limit FROM sales"
        )
    }
    rows = conn.execute(
        "SELECT sale_id, order_id, buyer, idempotency_key, created_s FROM orders"
        " ORDER BY sale_id, order_id"
    )
    for sale_id, order_id, user, key, created_s in rows:
        sales[str(sale_id)].restore(Order(order_id, user, key, created_s))
    return sales


def _insert_sale(conn: sqlite3.Connection, sku: str, stock: int, per_user_limit: int) -> str:
    cursor = conn.execute(
        "INSERT INTO sales (sku, stock, per_user_limit) VALUES (?, ?, ?)",
        (sku, stock, per_user_limit),
    )
    return str(cursor.lastrowid)


def _insert_orders(conn: sqlite3.Connection, rows: list[_OrderRow]) -> None:
    """Insert `rows` in one durable transaction, or none of them."""
    try:
        conn.execute("BEGIN")
        conn.executemany(_INSERT_ORDER, rows)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _select_orders(conn: sqlite3.Connection, sale_id: int) -> list[tuple[int, str, str, float]]:
    return conn.execute(_SELECT_ORDERS + " ORDER BY order_id", (sale_id,)).fetchall()
