"""`livesim relay up`: origin, N edge relays and the sale service, each its own process.

Each server is `python -m relay.server.run ROLE` on a free port; once all are listening this
prints one JSON line on stdout:

    {"origin": URL, "edges": [URL, ...], "sale": URL, "ingest": "<origin>/ingest/{stream}/",
     "key": KEY, "pids": {"origin": PID, "edges": [PID, ...], "sale": PID}}

and serves until SIGINT or SIGTERM, then stops the servers (SIGTERM, then SIGKILL after a grace
period). An edge that dies meanwhile (a fault injected by killing its pid) is reported on
stderr and not restarted; viewers move to another edge.
"""

from __future__ import annotations

import json
import secrets
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import FrameType

STARTUP_TIMEOUT_S = 20.0
STOP_GRACE_S = 5.0


class StartupError(RuntimeError):
    """A server did not come up; the message says which and what it printed."""


@dataclass
class Servers:
    """The running server processes and the URLs they printed."""

    origin: tuple[subprocess.Popen[str], str] | None = None
    edges: list[tuple[subprocess.Popen[str], str]] = field(default_factory=list)
    sale: tuple[subprocess.Popen[str], str] | None = None

    def processes(self) -> list[subprocess.Popen[str]]:
        found = [self.origin, *self.edges, self.sale]
        return [entry[0] for entry in found if entry is not None]

    def stop(self) -> None:
        for process in self.processes():
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + STOP_GRACE_S
        for process in self.processes():
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def start_server(role: str, args: Sequence[str]) -> tuple[subprocess.Popen[str], str]:
    """Start one server process and wait for its ready line; (process, url)."""
    command = [sys.executable, "-m", "relay.server.run", role, *args]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], STARTUP_TIMEOUT_S)
    line = process.stdout.readline() if ready else ""
    if not line.strip():
        process.kill()
        process.wait()
        raise StartupError(f"the {role} server did not start (exit code {process.returncode})")
    return process, json.loads(line)["url"]


def start_all(edges: int, host: str, store: str, key: str) -> Servers:
    """Start every server (the origin first: the edges need its URL)."""
    servers = Servers()
    try:
        servers.origin = start_server("origin", ["--host", host, f"--key={key}"])
        origin_url = servers.origin[1]
        servers.sale = start_server("sale", ["--host", host, "--store", store])
        for i in range(edges):
            args = ["--host", host, "--parent", origin_url, "--name", f"edge-{i}"]
            servers.edges.append(start_server("edge", args))
    except BaseException:
        servers.stop()
        raise
    return servers


def ready_line(servers: Servers, key: str) -> str:
    assert servers.origin is not None and servers.sale is not None
    origin = servers.origin[1]
    return json.dumps(
        {
            "origin": origin,
            "edges": [url for _, url in servers.edges],
            "sale": servers.sale[1],
            "ingest": f"{origin}/ingest/{{stream}}/",
            "key": key,
            "pids": {
                "origin": servers.origin[0].pid,
                "edges": [process.pid for process, _ in servers.edges],
                "sale": servers.sale[0].pid,
            },
        }
    )


def up(edges: int, host: str, store: str, key: str | None) -> int:
    """Run the relay until SIGINT/SIGTERM; exit code 0, or 2 when it cannot start."""
    key = key or secrets.token_urlsafe(24)
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        servers = start_all(edges, host, store, key)
    except StartupError as error:
        print(f"livesim relay: error: {error}", file=sys.stderr)
        return 2
    print(ready_line(servers, key), flush=True)
    reported: set[int] = set()
    while not stop.wait(0.5):
        for process in servers.processes():
            if process.poll() is not None and process.pid not in reported:
                reported.add(process.pid)
                print(
                    f"livesim relay: server pid {process.pid} exited ({process.returncode})",
                    file=sys.stderr,
                )
    servers.stop()
    return 0
