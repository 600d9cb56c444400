"""Prometheus metrics of one server, served at /metrics in the text exposition format."""

from __future__ import annotations

from collections.abc import Sized
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from relay.server.http import Request, Response


class ServerMetrics:
    """Requests and bytes by status for every server; each server adds its own on top."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "livesim_requests",
            "HTTP responses sent, by method and status code",
            ["server", "method", "code"],
            registry=self.registry,
        )
        self.bytes_sent = Counter(
            "livesim_bytes_sent",
            "Response body bytes sent (streamed responses as they go)",
            ["server"],
            registry=self.registry,
        ).labels(server)
        self._by_response: dict[tuple[str, int], Any] = {}
        """The requests counter's child per (method, status): `labels()` costs a lookup with
        a lock, which a sale service answering 20,000 requests a second feels."""

    def track_connections(self, connections: Sized) -> None:
        """Export the number of open client connections (viewers polling or pushed, buyers)."""
        self.gauge(
            "livesim_open_connections", "Client connections open now (active viewers and buyers)"
        ).set_function(lambda: len(connections))

    def counter(self, name: str, documentation: str) -> Counter:
        """A counter of this server (labelled with its name)."""
        return Counter(name, documentation, ["server"], registry=self.registry).labels(self.server)

    def gauge(self, name: str, documentation: str) -> Gauge:
        """A gauge of this server (labelled with its name)."""
        return Gauge(name, documentation, ["server"], registry=self.registry).labels(self.server)

    def response(self, request: Request, status: int) -> None:
        """Called by the HTTP layer for every response."""
        key = (request.method, status)
        child = self._by_response.get(key)
        if child is None:
            child = self.requests.labels(self.server, request.method, str(status))
            self._by_response[key] = child
        child.inc()

    def sent(self, nbytes: int) -> None:
        """Called by the HTTP layer for body bytes sent."""
        self.bytes_sent.inc(nbytes)

    def render(self, _request: Request) -> Response:
        return Response(200, generate_latest(self.registry), CONTENT_TYPE_LATEST)
