"""The relay a bench runs against: its server processes, faults made real, counters scraped.

`start_relay` starts the scaled scenario's delivery tree on loopback, each node its own
`python -m relay.server.run` process: the origin, one edge per middle tier chained behind it, and
the edges behind the last of those, plus the sale service. `Scraper` reads every server's
`/metrics` once per time bin and keeps the per-bin increase of its counters.
"""

from __future__ import annotations

import asyncio
import subprocess
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from relay.up import start_server
from sim.scenario import Scenario

COUNTERS = ("requests", "bytes_sent", "media_from_parent", "cache_hits", "cache_misses")
"""Per node and bin: responses, body bytes, parts and segments received from the parent
(fetched or pushed), cache hits and misses."""


@dataclass
class Node:
    """One server process of the delivery tree."""

    tier: int
    index: int
    args: list[str]
    """Its `relay.server.run` arguments (a restart reuses them, and its port)."""
    process: subprocess.Popen[str] | None
    """None for a server this bench did not start (`attach_relay`)."""
    url: str

    @property
    def port(self) -> int:
        port = urlsplit(self.url).port
        assert port is not None
        return port

    def kill(self) -> None:
        assert self.process is not None, "only a server the bench started is killed"
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()

    def restart(self) -> None:
        """Start it again on the same port (after `kill`)."""
        role = "origin" if self.tier == 0 else "edge"
        self.process, self.url = start_server(role, [*self.args, "--port", str(self.port)])


@dataclass
class Relay:
    tiers: list[list[Node]] = field(default_factory=list)
    sale: subprocess.Popen[str] | None = None
    sale_url: str = ""
    key: str = ""

    @property
    def edges(self) -> list[Node]:
        return self.tiers[-1]

    @property
    def origin(self) -> Node:
        return self.tiers[0][0]

    def nodes(self) -> list[Node]:
        return [node for tier in self.tiers for node in tier]

    def stop(self) -> None:
        """Stop every process this relay started (SIGTERM, then SIGKILL after 5 s)."""
        processes = [node.process for node in self.nodes() if node.process is not None]
        if self.sale is not None:
            processes.append(self.sale)
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.wait(5.0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def start_relay(scenario: Scenario, *, key: str, store: str, part_s: float) -> Relay:
    """Start the scenario's tree (origin, chained middle tiers, edges) and the sale service."""
    relay = Relay(key=key)
    stream = scenario.stream
    try:
        origin_args = [
            f"--key={key}",  # one argument: a key may begin with "-"
            "--segment-s", str(stream.segment_s),
            "--part-target-s", str(part_s),
            "--log-level", "warning",
        ]  # fmt: skip
        process, url = start_server("origin", origin_args)
        relay.tiers.append([Node(0, 0, origin_args, process, url)])
        for t, tier in enumerate(scenario.tiers[1:], start=1):
            parent = relay.tiers[t - 1][0].url
            nodes = []
            for i in range(tier.nodes):
                args = [
                    "--parent", parent,
                    "--name", f"{tier.name}-{i}",
                    "--cache-parts", str(tier.cache_parts),
                    "--log-level", "warning",
                ]  # fmt: skip
                process, url = start_server("edge", args)
                nodes.append(Node(t, i, args, process, url))
            relay.tiers.append(nodes)
        relay.sale, relay.sale_url = start_server(
            "sale", ["--store", store, "--log-level", "warning"]
        )
    except BaseException:
        relay.stop()
        raise
    return relay


def attach_relay(urls: dict[str, Any]) -> Relay:
    """A relay started elsewhere (`livesim relay up`), from the JSON line it printed."""
    try:
        origin, edges, sale, key = urls["origin"], urls["edges"], urls["sale"], urls["key"]
        tiers = [[Node(0, 0, [], None, str(origin))]]
        tiers.append([Node(1, i, [], None, str(url)) for i, url in enumerate(edges)])
    except (KeyError, TypeError) as error:
        raise ValueError(f"not the line `livesim relay up` prints (missing {error})") from None
    if not edges:
        raise ValueError("the relay has no edges")
    return Relay(tiers=tiers, sale_url=str(sale), key=str(key))


def parse_counters(text: str) -> dict[str, float]:
    """The counters of one `/metrics` page (summed over labels) that a bench keeps."""
    found = dict.fromkeys(COUNTERS, 0.0)
    for family in text_string_to_metric_families(text):
        name = family.name.removeprefix("livesim_")
        if family.type == "counter" and name in found:
            found[name] = sum(s.value for s in family.samples if s.name.endswith("_total"))
    return found


class Scraper:
    """Per node, per bin: how much each counter grew (a restarted node counts from zero)."""

    def __init__(self, relay: Relay, n_bins: int) -> None:
        self.relay = relay
        self.n_bins = n_bins
        self.bins = {
            (n.tier, n.index): {c: np.zeros(n_bins) for c in COUNTERS} for n in relay.nodes()
        }
        self._last = {key: dict.fromkeys(COUNTERS, 0.0) for key in self.bins}

    async def scrape(self, session: aiohttp.ClientSession, into_bin: int | None) -> None:
        """Read every live node now and add what grew since the last read to `into_bin`
        (None: only note the counters, as the baseline)."""
        reads = [self._read(session, node) for node in self.relay.nodes()]
        for node, counters in zip(self.relay.nodes(), await asyncio.gather(*reads), strict=True):
            if counters is None:
                continue
            key = (node.tier, node.index)
            last = self._last[key]
            for name, value in counters.items():
                grown = value - last[name] if value >= last[name] else value
                if name == "requests":
                    grown = max(0.0, grown - 1.0)  # the previous scrape's own request
                if into_bin is not None:
                    self.bins[key][name][min(into_bin, self.n_bins - 1)] += grown
                last[name] = value

    def restarted(self, node: Node) -> None:
        """`node` was started again: its counters begin from zero."""
        self._last[(node.tier, node.index)] = dict.fromkeys(COUNTERS, 0.0)

    async def _read(self, session: aiohttp.ClientSession, node: Node) -> dict[str, float] | None:
        if node.process is not None and node.process.poll() is not None:
            return None
        try:
            async with session.get(f"{node.url}/metrics") as response:
                return parse_counters(await response.text())
        except (aiohttp.ClientError, OSError, TimeoutError):
            return None

    def tier_sum(self, tier: int, counter: str) -> np.ndarray:
        """Per bin, summed over the tier's nodes."""
        found = [bins[counter] for (t, _), bins in self.bins.items() if t == tier]
        return np.sum(found, axis=0)

    def node_max(self, tier: int, counter: str) -> float:
        """The busiest node-bin of the tier."""
        found = [bins[counter].max() for (t, _), bins in self.bins.items() if t == tier]
        return float(max(found, default=0.0))
