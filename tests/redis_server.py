"""A private redis-server for tests and benchmarks: loopback only, a free port, its own directory.

It runs with no snapshots and an append-only file synced on every write, the setting under
which confirmed orders survive a crash of Redis too.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"


@dataclass
class RedisServer:
    """A running redis-server process."""

    process: subprocess.Popen[bytes]
    port: int
    directory: Path

    @property
    def url(self) -> str:
        """The store spec for it."""
        return f"redis://{HOST}:{self.port}"

    def stop(self) -> None:
        """Shut it down (SIGTERM, then SIGKILL after 10 s)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_redis(directory: Path, *, timeout_s: float = 10.0) -> RedisServer:
    """Start redis-server in `directory` on a free loopback port; return once it answers PING."""
    executable = shutil.which("redis-server")
    if executable is None:
        raise RuntimeError("redis-server is not installed; `make test` installs it")
    log = directory / "redis.log"
    for _ in range(3):  # another process may take the free port before redis-server binds it
        port = _free_port()
        process = subprocess.Popen(
            [
                *(executable, "--bind", HOST, "--port", str(port), "--dir", str(directory)),
                *("--save", "", "--appendonly", "yes", "--appendfsync", "always"),
                *("--logfile", str(log)),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        server = RedisServer(process, port, directory)
        if _answers_ping(server, time.monotonic() + timeout_s):
            return server
        server.stop()
    raise RuntimeError(f"redis-server did not answer PING on {HOST}; see {log}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _answers_ping(server: RedisServer, deadline: float) -> bool:
    """True once the server answers PING; False if it exits or the deadline passes."""
    while time.monotonic() < deadline and server.process.poll() is None:
        try:
            with socket.create_connection((HOST, server.port), timeout=1.0) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(64).startswith(b"+PONG"):
                    return True
        except OSError:
            pass
        time.sleep(0.02)
    return False
