"""Run one relay server (origin, edge or sale service) in this process.

`python -m relay.server.run ROLE [options]` listens on a free port (or `--port`) and, once it
accepts connections, prints one JSON line `{"role", "url", "pid"}` on stdout; it serves until
SIGINT or SIGTERM, then closes its listener and connections. Logs are JSON lines on stderr.
`livesim relay up` starts several of these; tests start them in-process with `start_*`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

from relay.server.edge import Edge, EdgeConfig
from relay.server.http import HttpServer, Limits, serve
from relay.server.origin import Origin, OriginConfig
from relay.server.sale import SaleService
from relay.server.store import open_store

SALE_BODY_BYTES = 16 * 1024


@dataclass
class Running:
    """A server started in this event loop: its listener, its app, and how to stop both."""

    http: HttpServer
    app: Any
    host: str
    session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.http.port}"

    async def close(self) -> None:
        await self.http.close()
        close = getattr(self.app, "close", None)
        if close is not None:
            await close()
        if self.session is not None:
            await self.session.close()


async def start_origin(
    config: OriginConfig, host: str = "127.0.0.1", port: int = 0, limits: Limits | None = None
) -> Running:
    origin = Origin(config)
    http = await serve(origin.router, host, port, limits or Limits(), origin.metrics)
    origin.metrics.track_connections(http.connections)
    return Running(http, origin, host)


async def start_edge(
    config: EdgeConfig, host: str = "127.0.0.1", port: int = 0, limits: Limits | None = None
) -> Running:
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=256, force_close=False),
        timeout=aiohttp.ClientTimeout(total=config.upstream_timeout_s),
    )
    edge = Edge(config, session)
    http = await serve(edge.router, host, port, limits or Limits(), edge.metrics)
    edge.metrics.track_connections(http.connections)
    return Running(http, edge, host, session)


async def start_sale(
    store: str, host: str = "127.0.0.1", port: int = 0, limits: Limits | None = None
) -> Running:
    """The sale service on the store `store` names (`sqlite:PATH` or `redis://HOST:PORT`)."""
    service = SaleService(open_store(store))
    limits = limits or Limits(body_bytes=SALE_BODY_BYTES)
    http = await serve(service.router, host, port, limits, service.metrics)
    service.metrics.track_connections(http.connections)
    return Running(http, service, host)


class JsonLogFormatter(logging.Formatter):
    """One JSON object per log line: time, level, logger, message and any extra fields."""

    _STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in self._STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m relay.server.run")
    parser.add_argument("role", choices=("origin", "edge", "sale"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--key", help="origin: ingest key (Bearer)")
    parser.add_argument("--segment-s", type=float, default=2.0)
    parser.add_argument("--part-target-s", type=float, default=0.334)
    parser.add_argument("--parent", help="edge: base URL of the origin or a parent edge")
    parser.add_argument("--name", default="edge", help="edge: name in metrics and logs")
    parser.add_argument("--cache-parts", type=int, default=600)
    parser.add_argument("--store", default="sqlite:sale.db", help="sale: sqlite:PATH or redis://")
    return parser


async def _start(args: argparse.Namespace) -> Running:
    if args.role == "origin":
        if not args.key:
            raise SystemExit("origin needs --key")
        config = OriginConfig(
            key=args.key, segment_s=args.segment_s, part_target_s=args.part_target_s
        )
        return await start_origin(config, args.host, args.port)
    if args.role == "edge":
        if not args.parent:
            raise SystemExit("edge needs --parent URL")
        edge = EdgeConfig(
            parent=args.parent.rstrip("/"), name=args.name, cache_parts=args.cache_parts
        )
        return await start_edge(edge, args.host, args.port)
    return await start_sale(args.store, args.host, args.port)


async def _main(args: argparse.Namespace) -> None:
    running = await _start(args)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(json.dumps({"role": args.role, "url": running.url, "pid": os.getpid()}), flush=True)
    logging.getLogger("livesim.relay").info(
        "listening", extra={"role": args.role, "url": running.url, "started": time.time()}
    )
    await stop.wait()
    await running.close()


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    configure_logging(args.log_level)
    run(_main(args))


def run(main_coroutine: Any) -> Any:
    """Run a coroutine on uvloop where it is installed, else on the default loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main_coroutine)
    return uvloop.run(main_coroutine)


if __name__ == "__main__":
    main()
