"""One load-generator process of a bench: its share of the viewers.

A share is a slice of the scaled scenario's audience (arrival, departure, stream, first edge per
viewer). The process starts each viewer's session at its arrival and ends it at its departure,
on the run's clock. At each sale's announcement it takes the replay latency of its viewers who
are playing and picks `buy_fraction` of them, each pressing "buy" that latency plus a reaction
time later, as the simulator's buyers do; it sends those presses to the parent process, which
sends the buys from its own, lightly loaded, event loop (`sim.bench.buyers`): a viewer crowd's
bursts would otherwise show up in the buyers' response times. It reports what its players saw
and how late its own event loop ran (a generator that lags measures itself, not the relay).

The parent and a load process talk over the process's stdin and stdout in length-prefixed
pickles: the share in; `Presses` messages, then the `LoadReport`, out.
"""

from __future__ import annotations

import asyncio
import pickle
import sys
import time
from asyncio.subprocess import PIPE
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from relay.load.buyer import LoopLag
from relay.load.player import Playback, Player
from relay.load.push_probe import ProbeStats, raise_open_files
from relay.load.sessions import RunClock, Target, hls_session, llhls_session, push_session
from relay.server.run import run
from sim.dists import Dist
from sim.metrics import time_bins


class BenchError(RuntimeError):
    """A bench run that cannot be reported; the message says why (one line)."""


@dataclass(frozen=True)
class SaleDemandSpec:
    """What a load process needs to pick one sale's buyers."""

    index: int
    at_s: float
    buy_fraction: float
    quantity: int
    reaction_s: Dist


@dataclass(frozen=True)
class Press:
    """One buyer's press of "buy" (one order of `quantity`)."""

    user: str
    key: str
    latency_s: float
    """The buyer's replay latency when the announcement played."""
    press_s: float
    """Run clock: announcement + latency + reaction."""


@dataclass(frozen=True)
class Presses:
    sale: int
    presses: list[Press]


@dataclass(frozen=True)
class Outage:
    """Edges a bench takes down, from `at_s` until `until_s` (run clock)."""

    at_s: float
    until_s: float
    edges: tuple[int, ...]


class EdgeRouter:
    """Sends viewers to live edges as the model's request routing does: edge
    int(draw x live edges) among the edges not in an outage now (all of them if none is live)."""

    def __init__(self, n_edges: int, outages: list[Outage], clock: RunClock) -> None:
        self.n_edges = n_edges
        self.outages = outages
        self.clock = clock

    def pick(self, draw: float) -> int:
        now = self.clock.now()
        down = {e for o in self.outages if o.at_s <= now < o.until_s for e in o.edges}
        live = [e for e in range(self.n_edges) if e not in down] or list(range(self.n_edges))
        return live[int(draw * len(live))]


@dataclass(frozen=True)
class LoadShare:
    worker: int
    zero_unix: float
    """The run's start, wall clock."""
    duration_s: float
    protocol: str
    unit_s: float
    hold_back: int
    startup_s: float
    reconnect_s: float
    edges: list[tuple[str, int]]
    streams: list[str]
    viewer: np.ndarray
    """Viewer ids (global, for user names)."""
    at_s: np.ndarray
    leave_s: np.ndarray
    stream: np.ndarray
    edge_draw: np.ndarray
    """Per viewer: the uniform draw that picks its first edge (the model's draw)."""
    outages: list[Outage]
    sales: list[SaleDemandSpec]
    seed: np.random.SeedSequence


@dataclass
class LoadReport:
    worker: int
    playback: Playback
    lag_s: list[float]
    """Event-loop lateness samples."""
    cpu_s: float
    """CPU this process used while driving."""
    wall_s: float


def run_share(share: LoadShare, send: Callable[[Presses], None]) -> LoadReport:
    """Drive one share to the end of the run (blocking; a process's whole job)."""
    raise_open_files(2 * len(share.at_s) + 256)
    report: LoadReport = run(_drive(share, send))
    return report


async def drive_in_process(share: LoadShare, on_presses: Callable[[Presses], None]) -> LoadReport:
    """Run `share` in a new `python -m sim.bench.load` process; its presses go to `on_presses`."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sim.bench.load", stdin=PIPE, stdout=PIPE
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        process.stdin.write(_frame(share))
        await process.stdin.drain()
        process.stdin.close()
        while True:
            message = await _read_frame(process.stdout)
            if isinstance(message, LoadReport):
                break
            on_presses(message)
        await process.wait()
    except asyncio.IncompleteReadError:
        await process.wait()
        raise BenchError(
            f"load process {share.worker} failed (exit code {process.returncode})"
        ) from None
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return message


def _frame(message: object) -> bytes:
    data = pickle.dumps(message)
    return len(data).to_bytes(8, "big") + data


async def _read_frame(stream: asyncio.StreamReader) -> Any:
    size = int.from_bytes(await stream.readexactly(8), "big")
    return pickle.loads(await stream.readexactly(size))


_SESSIONS = {"ll-hls": llhls_session, "hls": hls_session}


async def _drive(share: LoadShare, send: Callable[[Presses], None]) -> LoadReport:
    loop = asyncio.get_running_loop()
    clock = RunClock(share.zero_unix)
    playback = Playback(*time_bins(share.duration_s))
    watching: dict[int, Player] = {}
    tasks: dict[int, asyncio.Task[None]] = {}
    probe_stats = ProbeStats(measuring=False)
    rng = np.random.default_rng(share.seed)
    router = EdgeRouter(len(share.edges), share.outages, clock)
    ended: list[asyncio.Task[None]] = []

    def leave(vid: int) -> None:
        task = tasks.pop(vid, None)
        if task is not None:
            task.cancel()
            ended.append(task)
        player = watching.pop(vid, None)
        if player is not None:
            player.leave(min(clock.now(), share.duration_s))

    await asyncio.sleep(max(0.0, -clock.now()))  # the run starts
    cpu0 = time.process_time()
    wall0 = time.monotonic()
    async with LoopLag() as lag:
        sale_tasks = [
            asyncio.ensure_future(_pick_buyers(sale, watching, clock, rng, send))
            for sale in share.sales
        ]
        for i in np.argsort(share.at_s, kind="stable"):
            vid = int(share.viewer[i])
            await asyncio.sleep(max(0.0, float(share.at_s[i]) - clock.now()))
            player = Player(playback, clock.now(), share.startup_s)
            target = Target(
                edges=share.edges,
                pick_edge=_picker(router, float(share.edge_draw[i]), rng),
                stream=share.streams[int(share.stream[i])],
                reconnect_s=share.reconnect_s,
                unit_s=share.unit_s,
                hold_back=share.hold_back,
            )
            if share.protocol == "http-flv":
                coro = push_session(target, player, clock, probe_stats)
            else:
                coro = _SESSIONS[share.protocol](target, player, clock)
            watching[vid] = player
            tasks[vid] = asyncio.ensure_future(coro)
            stay_s = min(float(share.leave_s[i]), share.duration_s) - clock.now()
            loop.call_later(max(0.0, stay_s), leave, vid)
        await asyncio.sleep(max(0.0, share.duration_s - clock.now()))
        for vid in list(watching):
            leave(vid)
        await asyncio.gather(*ended, return_exceptions=True)
        for task in sale_tasks:
            task.cancel()
        await asyncio.gather(*sale_tasks, return_exceptions=True)
    return LoadReport(
        worker=share.worker,
        playback=playback,
        lag_s=lag.samples_s,
        cpu_s=time.process_time() - cpu0,
        wall_s=time.monotonic() - wall0,
    )


def _picker(router: EdgeRouter, first_draw: float, rng: np.random.Generator) -> Callable[[], int]:
    """A viewer's edge choices: its own draw first, fresh ones on failover."""
    draws = [first_draw]

    def pick() -> int:
        return router.pick(draws.pop() if draws else float(rng.random()))

    return pick


async def _pick_buyers(
    sale: SaleDemandSpec,
    watching: dict[int, Player],
    clock: RunClock,
    rng: np.random.Generator,
    send: Callable[[Presses], None],
) -> None:
    """At the announcement, pick this share's buyers and send when each will press."""
    await asyncio.sleep(max(0.0, sale.at_s - clock.now()))
    playing = [(vid, p.latency_s) for vid, p in watching.items() if p.latency_s is not None]
    chosen = [entry for entry in playing if rng.random() < sale.buy_fraction]
    reaction_s = sale.reaction_s.sample(rng, len(chosen))
    presses = [
        Press(
            user=f"viewer-{vid}",
            key=f"viewer-{vid}-sale{sale.index}-{q}",
            latency_s=latency_s,
            press_s=sale.at_s + latency_s + float(react_s),
        )
        for (vid, latency_s), react_s in zip(chosen, reaction_s, strict=True)
        if latency_s is not None
        for q in range(sale.quantity)
    ]
    send(Presses(sale.index, presses))


def main() -> None:
    """A load process: a framed LoadShare on stdin; framed Presses, then its LoadReport, out."""
    size = int.from_bytes(sys.stdin.buffer.read(8), "big")
    share = pickle.loads(sys.stdin.buffer.read(size))

    def send(message: object) -> None:
        sys.stdout.buffer.write(_frame(message))
        sys.stdout.buffer.flush()

    send(run_share(share, send))


if __name__ == "__main__":
    # Through the importable module, so what it sends pickles as sim.bench.load's classes.
    from sim.bench.load import main as load_main

    load_main()
