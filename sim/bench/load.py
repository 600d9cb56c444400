"""One load-generator process of a bench: its share of the viewers and their buyers.

A share is a slice of the scaled scenario's audience (arrival, departure, stream, first edge per
viewer). The process starts each viewer's session at its arrival and ends it at its departure,
on the run's clock; at each sale's announcement it takes the replay latency of its viewers who
are playing, and `buy_fraction` of them press "buy" that latency plus a reaction time later, as
the simulator's buyers do. It reports what its players saw, every buyer's answer, and how late
its own event loop ran (a generator that lags measures itself, not the relay).
"""

from __future__ import annotations

import asyncio
import pickle
import sys
import time
from asyncio.subprocess import PIPE
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import numpy as np

from relay.load.buyer import LoopLag, RetryPolicy, buy
from relay.load.player import Playback, Player
from relay.load.push_probe import ProbeStats, raise_open_files
from relay.load.sessions import RunClock, Target, hls_session, llhls_session, push_session
from relay.server.run import run
from sim.dists import Dist


@dataclass(frozen=True)
class SaleDrive:
    """What a load process needs to send one sale's buyers."""

    index: int
    at_s: float
    buy_fraction: float
    quantity: int
    reaction_s: Dist
    policy: RetryPolicy
    sale_url: str
    sale_id: str


@dataclass(frozen=True)
class LoadShare:
    worker: int
    zero_unix: float
    """The run's start, wall clock."""
    duration_s: float
    bin_s: float
    n_bins: int
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
    first_edge: np.ndarray
    sales: list[SaleDrive]
    seed: np.random.SeedSequence


@dataclass(frozen=True)
class BuyRecord:
    user: str
    latency_s: float
    """The buyer's replay latency when the announcement played."""
    send_s: float
    """First try sent, run clock."""
    status: int
    response_s: float
    retries: int


@dataclass
class LoadReport:
    worker: int
    playback: Playback
    buys: list[list[BuyRecord]]
    """Per sale."""
    lag_s: list[float]
    """Event-loop lateness samples."""
    cpu_s: float
    """CPU this process used while driving."""
    wall_s: float
    sessions: int
    errors: dict[str, int] = field(default_factory=dict)


def run_share(share: LoadShare) -> LoadReport:
    """Drive one share to the end of the run (blocking; a process's whole job)."""
    raise_open_files(2 * len(share.at_s) + 256)
    report: LoadReport = run(_drive(share))
    return report


async def drive_in_process(share: LoadShare) -> LoadReport:
    """Run `share` in a new `python -m sim.bench.load` process (pickles in and out)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sim.bench.load", stdin=PIPE, stdout=PIPE
    )
    try:
        out, _ = await process.communicate(pickle.dumps(share))
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    if process.returncode != 0:
        raise RuntimeError(f"load process {share.worker} failed (exit code {process.returncode})")
    report: LoadReport = pickle.loads(out)
    return report


_SESSIONS = {"ll-hls": llhls_session, "hls": hls_session}


async def _drive(share: LoadShare) -> LoadReport:
    loop = asyncio.get_running_loop()
    clock = RunClock(share.zero_unix)
    playback = Playback(share.bin_s, share.n_bins)
    watching: dict[int, Player] = {}
    tasks: dict[int, asyncio.Task[None]] = {}
    probe_stats = ProbeStats(measuring=False)
    rng = np.random.default_rng(share.seed)
    buys: list[list[BuyRecord]] = [[] for _ in share.sales]
    cpu0 = time.process_time()
    wall0 = time.monotonic()

    def leave(vid: int) -> None:
        task = tasks.pop(vid, None)
        if task is not None:
            task.cancel()
        player = watching.pop(vid, None)
        if player is not None:
            player.leave(min(clock.now(), share.duration_s))

    async with aiohttp.ClientSession() as session, LoopLag() as lag:
        sale_tasks = [
            asyncio.ensure_future(_sale(sale, watching, clock, rng, session, buys[k]))
            for k, sale in enumerate(share.sales)
        ]
        for i in np.argsort(share.at_s, kind="stable"):
            vid = int(share.viewer[i])
            await asyncio.sleep(max(0.0, float(share.at_s[i]) - clock.now()))
            player = Player(playback, clock.now(), share.startup_s)
            target = Target(
                edges=share.edges,
                stream=share.streams[int(share.stream[i])],
                first_edge=int(share.first_edge[i]),
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
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        for task in sale_tasks:
            task.cancel()
        await asyncio.gather(*sale_tasks, return_exceptions=True)
    return LoadReport(
        worker=share.worker,
        playback=playback,
        buys=buys,
        lag_s=lag.samples_s,
        cpu_s=time.process_time() - cpu0,
        wall_s=time.monotonic() - wall0,
        sessions=len(share.at_s),
        errors=dict(probe_stats.errors),
    )


async def _sale(
    sale: SaleDrive,
    watching: dict[int, Player],
    clock: RunClock,
    rng: np.random.Generator,
    session: aiohttp.ClientSession,
    into: list[BuyRecord],
) -> None:
    """At the announcement, pick this share's buyers; each presses after latency + reaction."""
    await asyncio.sleep(max(0.0, sale.at_s - clock.now()))
    playing = [(vid, p.latency_s) for vid, p in watching.items() if p.latency_s is not None]
    chosen = [entry for entry in playing if rng.random() < sale.buy_fraction]
    reaction_s = sale.reaction_s.sample(rng, len(chosen))
    presses: list[Any] = []
    for (vid, latency_s), react_s in zip(chosen, reaction_s, strict=True):
        assert latency_s is not None
        for q in range(sale.quantity):
            press_s = sale.at_s + latency_s + float(react_s)
            seed = int(rng.integers(2**63))
            presses.append(_press(sale, vid, q, latency_s, press_s, seed, clock, session, into))
    await asyncio.gather(*presses)


async def _press(
    sale: SaleDrive,
    vid: int,
    q: int,
    latency_s: float,
    press_s: float,
    seed: int,
    clock: RunClock,
    session: aiohttp.ClientSession,
    into: list[BuyRecord],
) -> None:
    await asyncio.sleep(max(0.0, press_s - clock.now()))
    user = f"viewer-{vid}"
    send_s = clock.now()
    result = await buy(
        session,
        sale.sale_url,
        sale.sale_id,
        user,
        f"{user}-sale{sale.index}-{q}",
        rng=np.random.default_rng(seed),
        policy=sale.policy,
    )
    into.append(
        BuyRecord(user, latency_s, send_s, result.status, result.response_s, result.retries)
    )


def main() -> None:
    """A load process: a pickled LoadShare on stdin, its pickled LoadReport on stdout."""
    share = pickle.loads(sys.stdin.buffer.read())
    sys.stdout.buffer.write(pickle.dumps(run_share(share)))


if __name__ == "__main__":
    # Through the importable module, so the report pickles as sim.bench.load.LoadReport.
    from sim.bench.load import main as load_main

    load_main()
