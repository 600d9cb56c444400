"""`livesim bench`: run a (scaled) scenario against the real relay and write the same result.json.

The run's clock starts at a wall-clock instant a few seconds after the publishers, so every
stream already has the history a player starting `hold_back` units behind needs (the simulator's
streams are live before its run starts too). Then, on that clock:

* load processes (`sim.bench.load`) start and end each viewer's session on schedule and send
  each sale's buyers;
* each `edge-down` fault kills its edge processes at `at_s` and starts them again, on the same
  ports, `duration_s` later;
* every server's counters are read once per time bin.

At the end the players' records, the counters and the buyers' answers become `Measurements` and
sale results, and `sim.results.build_result` writes them exactly as it does for the simulator,
with engine "relay". A load process whose event loop lagged, or that used nearly all of a core,
measured itself: the bench then refuses to report (`LoadGeneratorBottleneck`).
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import numpy as np

from relay.load.buyer import LoopLag, RetryPolicy
from relay.load.player import Playback
from relay.load.sessions import RunClock
from relay.publish import PublishConfig, publish, publish_with_ffmpeg
from relay.server.run import run as run_loop
from sim.bench.buyers import BuyerDesk, BuyRecord, SaleEndpoint
from sim.bench.load import (
    BenchError,
    LoadReport,
    LoadShare,
    Outage,
    SaleDemandSpec,
    drive_in_process,
)
from sim.bench.relay import Relay, Scraper, attach_relay, start_relay
from sim.exact.model import draw_replication
from sim.exact.schedule import hold_back_units, unit_layout
from sim.measurements import Measurements, TierMeasurements, viewer_curve
from sim.metrics import Histogram, time_bins
from sim.results import build_result
from sim.run import replication_seeds
from sim.sale.outcomes import demand_of, sale_result
from sim.sale.spec import Decision, SaleDemand, SaleOutcome
from sim.scenario import Sale, Scenario

LAG_P99_MAX_S = 0.1
"""A load process whose timers fired later than this (p99) was too busy to time the relay: its
viewers' arrival times would be late by as much (a tenth of an LL-HLS replay latency). Below it,
the lag is mostly the moment a part lands and every viewer's request is answered at once, which
delays the relay's edges as much as the load process."""
BUYERS_LAG_P99_MAX_S = 0.05
"""The same for the bench process's own loop, which times the buyers."""
CPU_SHARE_MAX = 0.9
"""A load process that used more of its core than this was the bottleneck."""
FPS = 30
RESTART_S = 1.0
"""Allowance for a killed edge's process to listen again: viewers are not routed to it before."""


@dataclass
class Outcome:
    """What a bench run collected."""

    shares: list[LoadShare]
    reports: list[LoadReport]
    scraper: Scraper
    buys: list[list[BuyRecord]]
    """Per sale, every buyer's answer."""
    sold: list[int]
    """Per sale, what the service says it sold."""
    desk_lag_s: list[float]
    """Lateness of the bench process's own loop (the buyers')."""


class LoadGeneratorBottleneck(BenchError):
    """The load generator, not the relay, limited the run; its figures are not reported."""


@dataclass(frozen=True)
class BenchOptions:
    store: str
    """Sale store: sqlite:PATH or redis://HOST:PORT."""
    load_workers: int = 1
    seed: int | None = None
    publisher: str = "builtin"
    """builtin (relay.publish) or ffmpeg (a test pattern through ffmpeg's HLS muxer)."""
    urls: dict[str, Any] | None = None
    """A running relay's JSON line (`livesim relay up`); None: start one here."""


class PublisherFailed(BenchError):
    """A stream's publisher stopped before the run ended."""


def part_s_of(scenario: Scenario) -> float:
    """The publisher's part (push chunk) duration: whole frames, no longer than part_s."""
    unit_s, _ = unit_layout(scenario)
    part_s = unit_s if scenario.stream.protocol != "hls" else scenario.stream.part_s
    return max(1, math.floor(part_s * FPS + 1e-6)) / FPS


def preroll_s(scenario: Scenario) -> float:
    """Stream history before the run starts: what a joining player reaches back for, and more."""
    unit_s, _ = unit_layout(scenario)
    return max(3.0, (hold_back_units(scenario) + 2) * unit_s + scenario.stream.segment_s)


def run_bench(
    scenario: Scenario,
    options: BenchOptions,
    progress: Callable[[float], None] | None = None,
) -> dict[str, Any]:
    """Run `scenario` (already scaled) against a relay started here; the result.json document."""
    started = time.perf_counter()
    seed = scenario.scenario.seed if options.seed is None else options.seed
    if options.urls is not None:
        relay = attach_relay(options.urls)
    else:
        key = secrets.token_urlsafe(16)
        relay = start_relay(scenario, key=key, store=options.store, part_s=part_s_of(scenario))
    try:
        outcome = run_loop(_bench(scenario, relay, options, seed, progress))
    finally:
        relay.stop()
    load = check_load(outcome.reports, outcome.desk_lag_s)
    result = _result(scenario, outcome, seed, time.perf_counter() - started)
    result["load_generator"] = load
    return result


async def _bench(
    scenario: Scenario,
    relay: Relay,
    options: BenchOptions,
    seed: int,
    progress: Callable[[float], None] | None,
) -> Outcome:
    duration_s = scenario.scenario.duration_s
    bin_s, n_bins = time_bins(duration_s)
    scraper = Scraper(relay, n_bins)
    streams = [f"s{i}" for i in range(scenario.hosts.count)]
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        LoopLag() as lag,
    ):
        sale_ids = [await _create_sale(session, relay.sale_url, sale) for sale in scenario.sales]
        publish_one = publish_with_ffmpeg if options.publisher == "ffmpeg" else publish
        publishers = [
            asyncio.ensure_future(publish_one(_publish_config(scenario, relay, name)))
            for name in streams
        ]
        zero_unix = time.time() + preroll_s(scenario)
        shares, desk_seed = _shares(scenario, relay, options, seed, zero_unix, streams)
        desk = BuyerDesk(
            RunClock(zero_unix),
            session,
            [
                SaleEndpoint(relay.sale_url, sale_id, _retry_policy(sale))
                for sale, sale_id in zip(scenario.sales, sale_ids, strict=True)
            ],
            np.random.default_rng(desk_seed),
        )
        drives = [asyncio.ensure_future(drive_in_process(s, desk.hand_over)) for s in shares]
        outages = planned_outages(scenario, len(relay.edges))
        background = [
            asyncio.ensure_future(_fault(relay, scraper, outage, fault.duration_s, zero_unix))
            for outage, fault in zip(outages, scenario.faults, strict=True)
        ]
        scraping = asyncio.ensure_future(
            _scrape(scraper, session, zero_unix, bin_s, n_bins, progress)
        )
        background.append(scraping)
        try:
            driving = asyncio.ensure_future(asyncio.gather(*drives))
            watched: list[asyncio.Future[Any]] = [driving, *publishers]
            await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
            for publisher in publishers:
                if publisher.done():
                    failure = publisher.exception()
                    raise PublisherFailed(f"a publisher stopped before the run ended: {failure}")
            reports = list(await driving)
            await desk.finish()
            await asyncio.wait_for(scraping, bin_s + 10.0)  # the last bin's counters
        finally:
            for task in [*background, *publishers, *drives]:
                task.cancel()
            await asyncio.gather(*background, *publishers, *drives, return_exceptions=True)
        sold = [await _sold(session, relay.sale_url, sale_id) for sale_id in sale_ids]
    return Outcome(shares, reports, scraper, desk.records, sold, lag.samples_s)


def _publish_config(scenario: Scenario, relay: Relay, stream: str) -> PublishConfig:
    part_s = part_s_of(scenario)
    return PublishConfig(
        ingest=f"{relay.origin.url}/ingest/{stream}/",
        key=relay.key,
        part_s=part_s,
        fps=FPS,
        gop_s=part_s,
        bitrate_kbps=min(scenario.stream.bitrates_kbps),
    )


def _retry_policy(sale: Sale) -> RetryPolicy:
    """The scenario's retry rules: `retries` after the first try, full-jitter doubling backoff."""
    return RetryPolicy(
        tries_max=sale.retries + 1,
        base_s=sale.backoff_s,
        cap_s=max(sale.backoff_s, 60.0),
        timeout_s=sale.timeout_s,
    )


def _shares(
    scenario: Scenario,
    relay: Relay,
    options: BenchOptions,
    seed: int,
    zero_unix: float,
    streams: list[str],
) -> tuple[list[LoadShare], np.random.SeedSequence]:
    """Split the audience over the load processes (viewer i to process i mod n); and the seed
    of the buyers' backoff draws."""
    duration_s = scenario.scenario.duration_s
    # The audience the model draws for replication 0 of this seed (common random numbers).
    engine_seed, sale_seed = replication_seeds(seed, 1)[0]
    draws = draw_replication(scenario, np.random.default_rng(engine_seed))
    arrivals = draws.arrivals
    outages = planned_outages(scenario, len(relay.edges))
    desk_seed, *worker_seeds = sale_seed.spawn(1 + options.load_workers)
    unit_s, _ = unit_layout(scenario)
    sales = [
        SaleDemandSpec(
            index=k,
            at_s=sale.at_s,
            buy_fraction=sale.buy_fraction,
            quantity=sale.quantity,
            reaction_s=sale.reaction_s,
        )
        for k, sale in enumerate(scenario.sales)
    ]
    edges = [("127.0.0.1", node.port) for node in relay.edges]
    viewer = np.arange(len(arrivals))
    shares = []
    for w in range(options.load_workers):
        mine = viewer % options.load_workers == w
        shares.append(
            LoadShare(
                worker=w,
                zero_unix=zero_unix,
                duration_s=duration_s,
                protocol=scenario.stream.protocol,
                unit_s=part_s_of(scenario) if scenario.stream.protocol != "hls" else unit_s,
                hold_back=hold_back_units(scenario),
                startup_s=(
                    scenario.player.push_buffer_s if scenario.stream.protocol == "http-flv" else 0.0
                ),
                reconnect_s=scenario.player.reconnect_s,
                edges=edges,
                streams=streams,
                viewer=viewer[mine],
                at_s=arrivals.at_s[mine],
                leave_s=arrivals.leave_s[mine],
                stream=arrivals.stream[mine],
                edge_draw=draws.edge_draws[mine],
                outages=outages,
                sales=sales,
                seed=worker_seeds[w],
            )
        )
    return shares, desk_seed


async def _create_sale(session: aiohttp.ClientSession, sale_url: str, sale: Sale) -> str:
    body = {"sku": sale.name, "stock": sale.stock, "per_user_limit": sale.per_user_limit}
    async with session.post(f"{sale_url}/sales", json=body) as response:
        if response.status != 201:
            raise BenchError(f"the sale service refused sale {sale.name!r}: {response.status}")
        return str((await response.json())["id"])


async def _sold(session: aiohttp.ClientSession, sale_url: str, sale_id: str) -> int:
    async with session.get(f"{sale_url}/sales/{sale_id}") as response:
        return int((await response.json())["sold"])


async def _sleep_until(zero_unix: float, at_s: float) -> None:
    await asyncio.sleep(max(0.0, zero_unix + at_s - time.time()))


def planned_outages(scenario: Scenario, n_edges: int) -> list[Outage]:
    """Each edge-down fault's edges (spread over the tier) and when they are down: from `at_s`
    until they are listening again (restarting a process takes up to RESTART_S)."""
    return [
        Outage(
            fault.at_s,
            fault.at_s + fault.duration_s + RESTART_S,
            tuple(sorted({round(k * n_edges / fault.count) % n_edges for k in range(fault.count)})),
        )
        for fault in scenario.faults
    ]


async def _fault(
    relay: Relay, scraper: Scraper, outage: Outage, down_s: float, zero_unix: float
) -> None:
    """Kill the outage's edges at its start; start them again `down_s` later."""
    edges = [relay.edges[i] for i in outage.edges]
    await _sleep_until(zero_unix, outage.at_s)
    for edge in edges:
        edge.kill()
    await _sleep_until(zero_unix, outage.at_s + down_s)
    for edge in edges:
        await asyncio.to_thread(edge.restart)
        scraper.restarted(edge)


async def _scrape(
    scraper: Scraper,
    session: aiohttp.ClientSession,
    zero_unix: float,
    bin_s: float,
    n_bins: int,
    progress: Callable[[float], None] | None,
) -> None:
    await _sleep_until(zero_unix, 0.0)
    await scraper.scrape(session, None)  # the baseline: what publishing did before the run
    for b in range(n_bins):
        await _sleep_until(zero_unix, (b + 1) * bin_s)
        await scraper.scrape(session, b)
        if progress is not None:
            progress((b + 1) / n_bins)


def check_load(reports: list[LoadReport], buyers_lag_samples_s: list[float]) -> dict[str, Any]:
    """How the load generator fared; LoadGeneratorBottleneck if it limited the run."""
    rows = []
    for report in reports:
        lag_p99_s = _p99(report.lag_s)
        share = report.cpu_s / report.wall_s if report.wall_s > 0 else 0.0
        rows.append({"lag_p99_s": lag_p99_s, "cpu_share": share})
        if lag_p99_s > LAG_P99_MAX_S or share > CPU_SHARE_MAX:
            raise LoadGeneratorBottleneck(
                f"load process {report.worker} was the bottleneck (event-loop lag p99 "
                f"{lag_p99_s * 1e3:.0f} ms, limit {LAG_P99_MAX_S * 1e3:.0f} ms; CPU {share:.0%} "
                f"of a core, limit {CPU_SHARE_MAX:.0%}): its timings would be its own, so none "
                "are reported; lower --scale or add --load-workers"
            )
    buyers_lag_s = _p99(buyers_lag_samples_s)
    if buyers_lag_s > BUYERS_LAG_P99_MAX_S:
        raise LoadGeneratorBottleneck(
            f"the buyers' event loop lagged (p99 {buyers_lag_s * 1e3:.0f} ms, limit "
            f"{BUYERS_LAG_P99_MAX_S * 1e3:.0f} ms): their response times would be its own, so "
            "none are reported; lower --scale"
        )
    return {"viewer_processes": rows, "buyers_lag_p99_s": buyers_lag_s}


def _p99(samples: list[float]) -> float:
    return float(np.quantile(samples, 0.99)) if samples else 0.0


def _result(scenario: Scenario, outcome: Outcome, seed: int, wall_s: float) -> dict[str, Any]:
    shares, reports = outcome.shares, outcome.reports
    duration_s = scenario.scenario.duration_s
    bin_s, n_bins = time_bins(duration_s)
    playback = Playback(bin_s, n_bins)
    for report in reports:
        p = report.playback
        playback.replay_s.extend(p.replay_s)
        playback.join_s.extend(p.join_s)
        playback.stall_s += p.stall_s
        playback.watched_s += p.watched_s
        playback.rebuffer_s = [
            a + b for a, b in zip(playback.rebuffer_s, p.rebuffer_s, strict=True)
        ]
    replay, join = Histogram(), Histogram()
    replay.record_many(np.asarray(playback.replay_s))
    join.record_many(np.asarray(playback.join_s))
    at_s = np.concatenate([share.at_s for share in shares])
    end_s = np.minimum(np.concatenate([share.leave_s for share in shares]), duration_s)
    peak, curve = viewer_curve(at_s, end_s, bin_s, n_bins)
    m = Measurements(
        sim_time_s=duration_s,
        bin_s=bin_s,
        replay=replay,
        join=join,
        stall_s=playback.stall_s,
        watched_s=playback.watched_s,
        rebuffer_s=np.asarray(playback.rebuffer_s),
        peak_viewers=peak,
        sessions=int(at_s.size),
        viewers=curve,
        tiers=_tiers(scenario, outcome.scraper, bin_s),
        sale_audiences=[],
        lottery_audiences=[],
    )
    sales = [
        sale_result(sale, [_sale_run(sale, outcome.buys[k], outcome.sold[k])])
        for k, sale in enumerate(scenario.sales)
    ]
    notes = ["measured on the real relay over loopback"]
    if scenario.lotteries or scenario.chat is not None:
        notes.append("lotteries and chat are not driven against the relay; see the model's run")
    return build_result(
        scenario,
        m,
        engine="relay",
        seed=seed,
        replications=1,
        wall_s=wall_s,
        sales=sales,
        notes=notes,
    )


def _tiers(scenario: Scenario, scraper: Scraper, bin_s: float) -> list[TierMeasurements]:
    out = []
    for t, spec in enumerate(scenario.tiers):
        bits = 8.0 * scraper.tier_sum(t, "bytes_sent")
        upstream = scraper.tier_sum(t, "media_from_parent").sum()
        out.append(
            TierMeasurements(
                name=spec.name,
                nodes=spec.nodes,
                capacity_gbps=spec.egress_gbps * spec.nodes,
                egress_bits=bits,
                fetched_bits=np.zeros_like(bits),
                requests=scraper.tier_sum(t, "requests"),
                peak_node_utilization=8.0
                * scraper.node_max(t, "bytes_sent")
                / (spec.egress_gbps * 1e9 * bin_s),
                cache_requests=int(
                    (scraper.tier_sum(t, "cache_hits") + scraper.tier_sum(t, "cache_misses")).sum()
                ),
                fetches=int(upstream) if t > 0 else 0,
            )
        )
    return out


_DECISIONS = {201: Decision.ORDERED, 409: Decision.SOLD_OUT, 429: Decision.OVER_LIMIT}


def _sale_run(sale: Sale, buys: list[BuyRecord], sold: int) -> tuple[SaleDemand, SaleOutcome]:
    """The buyers' answers in the shape the sale model reports (one attempt per buyer)."""
    buys = sorted(buys, key=lambda b: b.send_s)
    n = len(buys)
    send_s = np.array([b.send_s for b in buys])
    response_s = np.array([b.response_s for b in buys])
    status = np.array([b.status for b in buys], dtype=int)
    ordered = status == 201
    demand = demand_of(
        sale,
        user=np.arange(n),
        send_s=send_s,
        rtt_s=np.zeros(n),
        latency_s=np.array([b.latency_s for b in buys]),
        jitter=np.zeros((n, 1)),
    )
    outcome = SaleOutcome(
        attempt_order=np.arange(n),
        attempt_send_s=send_s,
        attempt_response_s=response_s,
        attempt_decision=np.array(
            [_DECISIONS.get(int(s), Decision.TIMED_OUT) for s in status], dtype=int
        ),
        ordered=ordered,
        ordered_at_s=np.where(ordered, send_s + response_s, np.nan),
        sold=sold,
    )
    return demand, outcome
