"""The sale service: DESIGN.md's JSON API over a durable store (relay.server.store).

* `POST /sales {"sku", "stock", "per_user_limit"}` -> 201 `{"id"}`;
* `POST /sales/<id>/buy {"user", "idempotency_key"}` -> 201 order (the same order again for a
  repeated key), 409 sold out, 429 over the user's limit, 404 unknown sale, 503 when the store
  could not make the outcome durable (retry with the same key);
* `GET /sales/<id>` -> `{"sku", "stock", "sold", "remaining", "per_user_limit"}`;
* 503 for any of them when the store cannot be reached;
* any malformed body -> 400 naming the field.

A 201 is sent only after the order is durable, so a confirmed order survives `kill -9`.
"""

from __future__ import annotations

import json
from typing import Any

from relay.core.inventory import Outcome
from relay.server.http import HttpError, Request, Response, Router
from relay.server.metrics import ServerMetrics
from relay.server.store import SaleStore
from relay.server.store.base import OrderRecord, StoreUnavailable, UnknownSale

NAMES = {"sale": r"[A-Za-z0-9_-]{1,64}"}
"""What a sale id may be (anything else in its place is a 400)."""
_NAME_MAX = 128
_INT_MAX = 2**63 - 1
"""The largest integer both stores hold (SQLite INTEGER, Redis HINCRBY: 64-bit signed)."""
_JSON = "application/json"
_OUTCOME_STATUS = {
    Outcome.ORDERED: 201,
    Outcome.REPLAYED: 201,
    Outcome.SOLD_OUT: 409,
    Outcome.OVER_LIMIT: 429,
}


class SaleService:
    def __init__(self, store: SaleStore) -> None:
        self.store = store
        self.metrics = ServerMetrics("sale")
        self._orders = self.metrics.counter("livesim_orders", "Orders confirmed (new, not replays)")
        self._rejected = self.metrics.counter(
            "livesim_buys_rejected", "Buys refused: sold out or over the user's limit"
        )
        self.router = Router(NAMES)
        self.router.add("POST", r"/sales", self.create)
        self.router.add("POST", r"/sales/{sale}/buy", self.buy)
        self.router.add("GET", r"/sales/{sale}", self.status)
        self.router.add("GET", r"/metrics", self.metrics.render)
        self.router.add("GET", r"/healthz", lambda _r: Response(200, b"ok\n", "text/plain"))

    async def create(self, request: Request) -> Response:
        body = await _json_object(request)
        sku = _text(body, "sku")
        stock = _integer(body, "stock", 0)
        limit = _integer(body, "per_user_limit", 1)
        try:
            sale_id = await self.store.create(sku, stock, limit)
        except StoreUnavailable as error:
            raise HttpError(503, f"store unavailable, retry: {error}") from None
        return _reply(201, {"id": sale_id})

    async def buy(self, request: Request) -> Response:
        body = await _json_object(request)
        user = _text(body, "user")
        key = _text(body, "idempotency_key")
        try:
            outcome, order = await self.store.buy(request.params["sale"], user, key)
        except UnknownSale:
            raise HttpError(404, f"no such sale: {request.params['sale']}") from None
        except StoreUnavailable as error:
            raise HttpError(503, f"store unavailable, retry with the same key: {error}") from None
        if outcome is Outcome.ORDERED:
            self._orders.inc()
        if order is None:
            self._rejected.inc()
            reason = "sold out" if outcome is Outcome.SOLD_OUT else "over the per-user limit"
            return _reply(_OUTCOME_STATUS[outcome], {"error": reason})
        return _reply(_OUTCOME_STATUS[outcome], _order(order))

    async def status(self, request: Request) -> Response:
        try:
            status = await self.store.status(request.params["sale"])
        except StoreUnavailable as error:
            raise HttpError(503, f"store unavailable, retry: {error}") from None
        if status is None:
            raise HttpError(404, f"no such sale: {request.params['sale']}")
        return _reply(
            200,
            {
                "sku": status.sku,
                "stock": status.stock,
                "sold": status.sold,
                "remaining": status.remaining,
                "per_user_limit": status.per_user_limit,
            },
        )

    async def close(self) -> None:
        await self.store.close()


def _order(order: OrderRecord) -> dict[str, Any]:
    return {
        "order_id": order.order_id,
        "sale": order.sale_id,
        "user": order.user,
        "idempotency_key": order.key,
        "created_s": order.created_s,
    }


def _reply(status: int, body: dict[str, Any]) -> Response:
    return Response(status, json.dumps(body).encode(), _JSON)


async def _json_object(request: Request) -> dict[str, Any]:
    raw = await request.body.read()
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise HttpError(400, "body: not valid JSON") from None
    except RecursionError:
        raise HttpError(400, "body: JSON nested too deeply") from None
    if not isinstance(body, dict):
        raise HttpError(400, "body: expected a JSON object")
    return body


def _text(body: dict[str, Any], field: str) -> str:
    value = body.get(field)
    if not isinstance(value, str) or not 0 < len(value) <= _NAME_MAX or not _encodable(value):
        raise HttpError(400, f"{field}: expected a Unicode string of 1-{_NAME_MAX} characters")
    return value


def _encodable(value: str) -> bool:
    """False for a string with a lone surrogate (JSON allows it, UTF-8 and the stores do not)."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _integer(body: dict[str, Any], field: str, minimum: int) -> int:
    value = body.get(field)
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= _INT_MAX:
        raise HttpError(400, f"{field}: expected an integer from {minimum} to {_INT_MAX}")
    return value
