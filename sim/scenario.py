"""TOML scenario files -> validated, frozen Scenario; every error names its key path.

The file format is documented key by key in docs/scenarios.md. Overrides (``--set KEY=VALUE``)
edit the raw TOML data before validation, so they are checked exactly like the file.
"""

from __future__ import annotations

import copy
import itertools
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

from sim.dists import (
    DIST_KEYS,
    Constant,
    Dist,
    Empirical,
    Exponential,
    Lognormal,
    Uniform,
    Zipf,
    check_keys,
    close_match,
    did_you_mean,
    format_number,
    parse_dist,
    parse_popularity,
    require_integer,
    require_number,
    show_value,
)
from sim.errors import ScenarioError

NAME_PATTERN = re.compile(r"[a-z0-9-]{1,64}")
"""Scenario and tier names: 1 to 64 of a-z, 0-9 and '-'."""
MAX_DURATION_S = 30 * 86_400.0
"""Longest simulated time: 30 days."""
MAX_HOSTS = 1_000_000
MAX_NODES = 1_000_000
MAX_VIEWERS = 1_000_000_000
ENGINES = ("auto", "exact", "cohort")
PROTOCOLS = ("hls", "ll-hls", "http-flv")
PROFILES = ("steady", "ramp", "flash-crowd", "diurnal")
BACKEND_DEFAULTS: dict[str, tuple[float, float]] = {
    "row-lock": (3.0, 0.0),
    "hot-row-batch": (0.04, 1.0),
    "redis-lua": (0.00543, 0.0),
    "sharded": (0.00543, 0.0),
    "queue-token": (0.002, 3.0),
    "naive-read-write": (1.0, 1.0),
}
"""Stock backend -> (service_ms, commit_ms) used when a [[sale]] leaves them out.

Calibrated to FACTS.md: one hot row a few hundred TPS (row-lock ~333/s); hot-row batching
12-31 k TPS (a 1 ms group commit + 40 us per row: 25 k/s in full batches); one Redis instance
running a Lua check-and-decrement ~184 k ops/s (redis-lua, and each shard of sharded).
"""
BACKENDS = tuple(BACKEND_DEFAULTS)
MAX_RETRIES = 20
MAX_SHARDS = 4096
FAULT_KINDS = ("edge-down", "origin-down", "link-degrade")
_DIST_TYPES = (Constant, Exponential, Lognormal, Uniform, Empirical, Zipf)

# Distribution defaults (frozen, so safe to share between instances).
_POPULARITY = Zipf(1.1)
_RTT_MS = Constant(10.0)
_REQUEST_MS = Constant(0.05)
_WATCH_S = Exponential(900.0)
_LAST_MILE_MBPS = Lognormal(25.0, 80.0)
_REACTION_S = Lognormal(1.5, 6.0)
_SALE_RTT_MS = Constant(30.0)
_CHAT_RTT_MS = Constant(50.0)
_ANSWER_S = Lognormal(10.0, 40.0)


@dataclass(frozen=True, slots=True)
class Meta:
    """[scenario]: what the run is called, how long it lasts and how it is seeded."""

    name: str
    duration_s: float
    description: str = ""
    seed: int = 0
    engine: str = "auto"


@dataclass(frozen=True, slots=True)
class Hosts:
    """[hosts]: the concurrent streams and how the audience spreads over them."""

    count: int = 1
    popularity: Zipf = _POPULARITY
    uplink_mbps: float = 20.0


@dataclass(frozen=True, slots=True)
class Stream:
    """[stream]: delivery protocol, chunking and the bitrate ladder."""

    protocol: str = "ll-hls"
    segment_s: float = 2.0
    part_s: float = 0.333
    bitrates_kbps: tuple[float, ...] = (800.0, 2500.0, 5000.0)
    encoder_delay_s: float = 0.2


@dataclass(frozen=True, slots=True)
class Tier:
    """One [[tier]] of delivery nodes, listed from the origin outward."""

    name: str
    nodes: int
    egress_gbps: float
    rtt_ms: Dist = _RTT_MS
    coalescing: bool = True
    cache_parts: int = 600
    workers: int = 16
    request_ms: Dist = _REQUEST_MS


@dataclass(frozen=True, slots=True)
class Audience:
    """[audience]: how many viewers arrive, when, for how long, on what last mile."""

    peak_viewers: int
    profile: str = "steady"
    ramp_s: float = 60.0
    watch_s: Dist = _WATCH_S
    last_mile_mbps: Dist = _LAST_MILE_MBPS


@dataclass(frozen=True, slots=True)
class Player:
    """[player]: how far behind live players start and how they adapt."""

    hold_back_segments: float = 3.0
    part_hold_back_parts: float = 3.0
    push_buffer_s: float = 0.3
    abr_safety: float = 0.8
    reconnect_s: float = 1.0


@dataclass(frozen=True, slots=True)
class Sale:
    """One [[sale]]: a flash sale announced on stream.

    ``service_ms`` and ``commit_ms`` are filled in from BACKEND_DEFAULTS on load when absent.
    """

    name: str
    at_s: float
    stock: int
    price: float = 0.0
    buy_fraction: float = 0.05
    reaction_s: Dist = _REACTION_S
    backend: str = "redis-lua"
    per_user_limit: int = 1
    quantity: int = 1
    """Items each buyer tries to buy: separate orders, each with its own idempotency key."""
    timeout_s: float = 3.0
    """A buyer stops waiting for an answer after this."""
    retries: int = 2
    """New attempts (same idempotency key) after a timeout."""
    backoff_s: float = 0.5
    """Retry k waits backoff_s * 2**k * U(0, 1) after the timeout (full jitter)."""
    rtt_ms: Dist = _SALE_RTT_MS
    """Buyer <-> sale service round trip."""
    service_ms: float | None = None
    """Per-attempt cost at the stock backend."""
    commit_ms: float | None = None
    """Group commit (hot-row-batch), write-behind per order (queue-token), read-to-write gap
    (naive-read-write)."""
    shards: int = 8
    """Stock shards (sharded only)."""
    batch_max: int = 1000
    """Most attempts in one group commit (hot-row-batch only)."""


@dataclass(frozen=True, slots=True)
class Lottery:
    """One [[lottery]]: a prize draw the host calls on stream."""

    name: str
    at_s: float
    """When the host calls it, in stream time."""
    window_s: float
    """Entries count if they reach the service by at_s + window_s."""
    winners: int
    enter_fraction: float = 0.3
    """Share of the viewers watching at at_s who enter."""
    reaction_s: Dist = _REACTION_S
    rtt_ms: Dist = _SALE_RTT_MS
    """Viewer <-> lottery service round trip."""


@dataclass(frozen=True, slots=True)
class Chat:
    """[chat]: viewers' questions, the chat path and the host's answers on stream."""

    question_rate_per_s: float = 1.0
    """Questions from the whole audience per second (Poisson)."""
    rtt_ms: Dist = _CHAT_RTT_MS
    """Viewer -> chat service round trip (one way is half)."""
    capacity_per_s: float = 200.0
    """Messages the chat path delivers per second (one FIFO queue)."""
    answer_s: Dist = _ANSWER_S
    """The host's delay from seeing a question to answering on stream."""


@dataclass(frozen=True, slots=True)
class Fault:
    """One [[fault]]: nodes or links that fail for a while. ``tier`` is filled in on load."""

    at_s: float
    kind: str
    duration_s: float
    count: int = 1
    tier: str | None = None
    factor: float = 0.5


@dataclass(frozen=True, slots=True)
class Economics:
    """[economics]: money in and out of the session."""

    currency: str = "CNY"
    return_rate: float = 0.3
    host_commission: float = 0.2
    platform_take: float = 0.05
    cdn_cost_per_gb: float = 0.03


@dataclass(frozen=True, slots=True)
class Slo:
    """[slo]: targets the run is judged against; None is not checked."""

    replay_latency_p99_s: float | None = None
    join_time_p95_s: float | None = None
    rebuffer_ratio_max: float | None = None
    sale_response_p99_s: float | None = None
    oversell_max: int | None = None


@dataclass(frozen=True, slots=True)
class Scenario:
    """A whole validated scenario file."""

    scenario: Meta
    hosts: Hosts
    stream: Stream
    tiers: tuple[Tier, ...]
    audience: Audience
    player: Player
    sales: tuple[Sale, ...]
    faults: tuple[Fault, ...]
    economics: Economics
    slo: Slo
    lotteries: tuple[Lottery, ...] = ()
    chat: Chat | None = None
    """None when the file has no [chat] table."""

    def resolved(self) -> dict[str, Any]:
        """The scenario after defaults and overrides, in TOML shape; parses back to itself.

        ``chat`` is left out when the scenario has none.
        """
        chat = {} if self.chat is None else {"chat": _table_spec(self.chat)}
        return {
            "scenario": _table_spec(self.scenario),
            "hosts": _table_spec(self.hosts),
            "stream": _table_spec(self.stream),
            "tier": [_table_spec(t) for t in self.tiers],
            "audience": _table_spec(self.audience),
            "player": _table_spec(self.player),
            "sale": [_table_spec(s) for s in self.sales],
            "lottery": [_table_spec(x) for x in self.lotteries],
            **chat,
            "fault": [_table_spec(f) for f in self.faults],
            "economics": _table_spec(self.economics),
            "slo": _table_spec(self.slo),
        }

    def edge_tier(self) -> Tier:
        """The last tier: the one that serves viewers."""
        return self.tiers[-1]


_TABLES: dict[str, type] = {
    "scenario": Meta,
    "hosts": Hosts,
    "stream": Stream,
    "tier": Tier,
    "audience": Audience,
    "player": Player,
    "sale": Sale,
    "lottery": Lottery,
    "chat": Chat,
    "fault": Fault,
    "economics": Economics,
    "slo": Slo,
}
"""Top-level TOML key -> the dataclass it becomes."""
_ARRAYS = ("tier", "sale", "lottery", "fault")
_REQUIRED = ("scenario", "tier", "audience")


def _spec(value: object) -> object:
    if isinstance(value, _DIST_TYPES):
        return value.to_spec()
    if isinstance(value, tuple):
        return [_spec(v) for v in value]
    return value


def _table_spec(obj: Any) -> dict[str, Any]:
    """A dataclass as its TOML table; None values are left out."""
    values = {f.name: getattr(obj, f.name) for f in fields(obj)}
    return {k: _spec(v) for k, v in values.items() if v is not None}


def _near(given: object, accepted: Sequence[str]) -> str:
    """``"; did you mean 'x'?"`` when a given string is close to an accepted one, else ""."""
    match = close_match(given, accepted) if isinstance(given, str) else None
    return f"; did you mean {match!r}?" if match else ""


def _label(name: str) -> str:
    return f"[[{name}]]" if name in _ARRAYS else f"[{name}]"


class _Table:
    """One TOML table being validated: its data, key path and the dataclass defaults."""

    def __init__(self, data: object, path: str, label: str, cls: type) -> None:
        if not isinstance(data, Mapping):
            raise ScenarioError(path, f"must be a table {label}; given {show_value(data)}")
        names = [f.name for f in fields(cls)]
        check_keys(data, names, path, label)
        self.data: Mapping[str, Any] = data
        self.path = path
        self.label = label
        self.defaults = {f.name: f.default for f in fields(cls) if f.default is not MISSING}

    def key(self, name: str) -> str:
        """The dotted path of one key."""
        return f"{self.path}.{name}"

    def given(self, name: str) -> bool:
        """Whether the key has a value (None counts as absent where None is the default)."""
        if name not in self.data:
            return False
        return not (
            self.data[name] is None and name in self.defaults and self.defaults[name] is None
        )

    def default(self, name: str) -> Any:
        """The default of an absent key, or an error if it is required."""
        if name not in self.defaults:
            raise ScenarioError(self.key(name), f"missing required key '{name}' in {self.label}")
        return self.defaults[name]

    def number(self, name: str, **bounds: Any) -> float:
        """A float key within bounds (see require_number)."""
        if not self.given(name):
            return self.default(name)
        return require_number(self.data[name], self.key(name), **bounds)

    def integer(self, name: str, **bounds: Any) -> int:
        """An int key within bounds; integral floats like 2e6 are accepted."""
        if not self.given(name):
            return self.default(name)
        return require_integer(self.data[name], self.key(name), **bounds)

    def optional_number(self, name: str, **bounds: Any) -> float | None:
        """A float key that may be absent (None)."""
        return self.number(name, **bounds) if self.given(name) else None

    def optional_integer(self, name: str, **bounds: Any) -> int | None:
        """An int key that may be absent (None)."""
        return self.integer(name, **bounds) if self.given(name) else None

    def boolean(self, name: str) -> bool:
        """A true/false key."""
        if not self.given(name):
            return self.default(name)
        value = self.data[name]
        if not isinstance(value, bool):
            raise ScenarioError(self.key(name), f"must be true or false; given {show_value(value)}")
        return value

    def string(
        self,
        name: str,
        *,
        choices: Sequence[str] = (),
        pattern: re.Pattern[str] | None = None,
        accepted: str = "a string",
    ) -> str:
        """A string key, one of ``choices`` or matching ``pattern`` when given."""
        if not self.given(name):
            return self.default(name)
        value = self.data[name]
        if choices:
            if isinstance(value, str) and value in choices:
                return value
            raise ScenarioError(
                self.key(name),
                f"must be one of {', '.join(choices)}; given {show_value(value)}"
                + _near(value, choices),
            )
        if not isinstance(value, str) or (pattern is not None and not pattern.fullmatch(value)):
            raise ScenarioError(self.key(name), f"must be {accepted}; given {show_value(value)}")
        return value

    def dist(self, name: str, *, exclusive: bool = False) -> Dist:
        """A distribution key whose values are >= 0 (> 0 if exclusive)."""
        if not self.given(name):
            return self.default(name)
        return parse_dist(self.data[name], self.key(name), exclusive=exclusive)


def _meta(data: object) -> Meta:
    t = _Table(data, "scenario", "[scenario]", Meta)
    return Meta(
        name=t.string("name", pattern=NAME_PATTERN, accepted="1 to 64 of a-z, 0-9 and '-'"),
        duration_s=t.number("duration_s", minimum=0.0, exclusive_min=True, maximum=MAX_DURATION_S),
        description=t.string("description"),
        seed=t.integer("seed", minimum=0),
        engine=t.string("engine", choices=ENGINES),
    )


def _hosts(data: object) -> Hosts:
    t = _Table(data, "hosts", "[hosts]", Hosts)
    popularity = (
        parse_popularity(t.data["popularity"], t.key("popularity"))
        if t.given("popularity")
        else t.default("popularity")
    )
    return Hosts(
        count=t.integer("count", minimum=1, maximum=MAX_HOSTS),
        popularity=popularity,
        uplink_mbps=t.number("uplink_mbps", minimum=0.0, exclusive_min=True),
    )


def _bitrates(t: _Table) -> tuple[float, ...]:
    if not t.given("bitrates_kbps"):
        return t.default("bitrates_kbps")
    raw = t.data["bitrates_kbps"]
    path = t.key("bitrates_kbps")
    if not isinstance(raw, list | tuple) or not raw:
        raise ScenarioError(
            path, f"must be a non-empty array of numbers > 0; given {show_value(raw)}"
        )
    rates = tuple(
        require_number(v, f"{path}.{i}", minimum=0.0, exclusive_min=True) for i, v in enumerate(raw)
    )
    if any(b <= a for a, b in itertools.pairwise(rates)):
        raise ScenarioError(
            path, f"must be in ascending order with no repeats; given {show_value(raw)}"
        )
    return rates


def _stream(data: object) -> Stream:
    t = _Table(data, "stream", "[stream]", Stream)
    if t.given("protocol") and t.data["protocol"] == "webrtc":
        raise ScenarioError(
            t.key("protocol"), "webrtc is not supported yet; use hls, ll-hls or http-flv"
        )
    segment_s = t.number("segment_s", minimum=0.0, exclusive_min=True, maximum=60.0)
    part_s = t.number("part_s", minimum=0.0, exclusive_min=True)
    if part_s > segment_s:
        raise ScenarioError(
            t.key("part_s"),
            f"must be <= stream.segment_s ({format_number(segment_s)}); "
            f"given {format_number(part_s)}",
        )
    return Stream(
        protocol=t.string("protocol", choices=PROTOCOLS),
        segment_s=segment_s,
        part_s=part_s,
        bitrates_kbps=_bitrates(t),
        encoder_delay_s=t.number("encoder_delay_s", minimum=0.0),
    )


def _element_path(array: str, index: int, element: object) -> str:
    """``tier.edge`` for a tier with a usable name, else ``tier.1`` (both work with --set)."""
    if array == "tier" and isinstance(element, Mapping):
        name = element.get("name")
        if isinstance(name, str) and NAME_PATTERN.fullmatch(name) and not name.isdigit():
            return f"tier.{name}"
    return f"{array}.{index}"


def _array(data: Mapping[str, Any], array: str) -> list[_Table]:
    """The elements of an array of tables, each ready to validate."""
    raw = data.get(array, [])
    label = _label(array)
    if not isinstance(raw, list | tuple):
        raise ScenarioError(array, f"must be an array of tables {label}; given {show_value(raw)}")
    cls = _TABLES[array]
    return [_Table(e, _element_path(array, i, e), label, cls) for i, e in enumerate(raw)]


def _tiers(data: Mapping[str, Any]) -> tuple[Tier, ...]:
    tables = _array(data, "tier")
    if not tables:
        raise ScenarioError("tier", "missing required table [[tier]]; give at least one")
    tiers: list[Tier] = []
    for t in tables:
        tier = Tier(
            name=t.string("name", pattern=NAME_PATTERN, accepted="1 to 64 of a-z, 0-9 and '-'"),
            nodes=t.integer("nodes", minimum=1, maximum=MAX_NODES),
            egress_gbps=t.number("egress_gbps", minimum=0.0, exclusive_min=True),
            rtt_ms=t.dist("rtt_ms"),
            coalescing=t.boolean("coalescing"),
            cache_parts=t.integer("cache_parts", minimum=1),
            workers=t.integer("workers", minimum=1),
            request_ms=t.dist("request_ms"),
        )
        if any(tier.name == other.name for other in tiers):
            raise ScenarioError(
                t.key("name"), f"tier names must be unique; given {tier.name!r} twice"
            )
        tiers.append(tier)
    return tuple(tiers)


def _audience(data: object) -> Audience:
    t = _Table(data, "audience", "[audience]", Audience)
    return Audience(
        peak_viewers=t.integer("peak_viewers", minimum=1, maximum=MAX_VIEWERS),
        profile=t.string("profile", choices=PROFILES),
        ramp_s=t.number("ramp_s", minimum=0.0),
        watch_s=t.dist("watch_s", exclusive=True),
        last_mile_mbps=t.dist("last_mile_mbps", exclusive=True),
    )


def _player(data: object) -> Player:
    t = _Table(data, "player", "[player]", Player)
    return Player(
        hold_back_segments=t.number("hold_back_segments", minimum=1.0),
        part_hold_back_parts=t.number("part_hold_back_parts", minimum=2.0),
        push_buffer_s=t.number("push_buffer_s", minimum=0.0),
        abr_safety=t.number("abr_safety", minimum=0.0, exclusive_min=True, maximum=1.0),
        reconnect_s=t.number("reconnect_s", minimum=0.0),
    )


def _before_end(t: _Table, name: str, duration_s: float) -> float:
    """A time key within the run: 0 <= value < scenario.duration_s."""
    at_s = t.number(name, minimum=0.0)
    if at_s >= duration_s:
        raise ScenarioError(
            t.key(name),
            f"must be < scenario.duration_s ({format_number(duration_s)}); "
            f"given {format_number(at_s)}",
        )
    return at_s


def _display_name(t: _Table) -> str:
    """A sale or lottery name: 1 to 64 printable characters."""
    name = t.string("name")
    if not 1 <= len(name) <= 64 or not name.isprintable():
        raise ScenarioError(
            t.key("name"), f"must be 1 to 64 printable characters; given {show_value(name)}"
        )
    return name


def _unique_name(t: _Table, name: str, taken: Sequence[str], what: str) -> None:
    if name in taken:
        raise ScenarioError(t.key("name"), f"{what} names must be unique; given {name!r} twice")


def _or_default(value: float | None, default: float) -> float:
    return default if value is None else value


def _sales(data: Mapping[str, Any], duration_s: float) -> tuple[Sale, ...]:
    sales: list[Sale] = []
    for t in _array(data, "sale"):
        name = _display_name(t)
        _unique_name(t, name, [s.name for s in sales], "sale")
        backend = t.string("backend", choices=BACKENDS)
        service_ms, commit_ms = BACKEND_DEFAULTS[backend]
        positive = {"minimum": 0.0, "exclusive_min": True}
        sales.append(
            Sale(
                name=name,
                at_s=_before_end(t, "at_s", duration_s),
                stock=t.integer("stock", minimum=0),
                price=t.number("price", minimum=0.0),
                buy_fraction=t.number("buy_fraction", minimum=0.0, maximum=1.0),
                reaction_s=t.dist("reaction_s"),
                backend=backend,
                per_user_limit=t.integer("per_user_limit", minimum=1),
                quantity=t.integer("quantity", minimum=1),
                timeout_s=t.number("timeout_s", **positive),
                retries=t.integer("retries", minimum=0, maximum=MAX_RETRIES),
                backoff_s=t.number("backoff_s", minimum=0.0),
                rtt_ms=t.dist("rtt_ms"),
                service_ms=_or_default(t.optional_number("service_ms", **positive), service_ms),
                commit_ms=_or_default(t.optional_number("commit_ms", minimum=0.0), commit_ms),
                shards=t.integer("shards", minimum=1, maximum=MAX_SHARDS),
                batch_max=t.integer("batch_max", minimum=1),
            )
        )
    return tuple(sales)


def _lotteries(data: Mapping[str, Any], duration_s: float) -> tuple[Lottery, ...]:
    lotteries: list[Lottery] = []
    for t in _array(data, "lottery"):
        name = _display_name(t)
        _unique_name(t, name, [x.name for x in lotteries], "lottery")
        lotteries.append(
            Lottery(
                name=name,
                at_s=_before_end(t, "at_s", duration_s),
                window_s=t.number("window_s", minimum=0.0, exclusive_min=True),
                winners=t.integer("winners", minimum=1),
                enter_fraction=t.number("enter_fraction", minimum=0.0, maximum=1.0),
                reaction_s=t.dist("reaction_s"),
                rtt_ms=t.dist("rtt_ms"),
            )
        )
    return tuple(lotteries)


def _chat(data: object) -> Chat:
    t = _Table(data, "chat", "[chat]", Chat)
    positive = {"minimum": 0.0, "exclusive_min": True}
    return Chat(
        question_rate_per_s=t.number("question_rate_per_s", **positive),
        rtt_ms=t.dist("rtt_ms"),
        capacity_per_s=t.number("capacity_per_s", **positive),
        answer_s=t.dist("answer_s"),
    )


def _fault_tier(t: _Table, kind: str, tiers: tuple[Tier, ...]) -> Tier:
    """The tier a fault hits: the named one, else the origin or the edge by kind."""
    if not t.given("tier"):
        return tiers[0] if kind == "origin-down" else tiers[-1]
    name = t.string("tier")
    names = [tier.name for tier in tiers]
    if name not in names:
        raise ScenarioError(
            t.key("tier"),
            f"no tier named {name!r}; tiers are {', '.join(names)}{_near(name, names)}",
        )
    return tiers[names.index(name)]


def _faults(
    data: Mapping[str, Any], duration_s: float, tiers: tuple[Tier, ...]
) -> tuple[Fault, ...]:
    faults: list[Fault] = []
    for t in _array(data, "fault"):
        kind = t.string("kind", choices=FAULT_KINDS)
        tier = _fault_tier(t, kind, tiers)
        count = t.integer("count", minimum=1)
        if count > tier.nodes:
            raise ScenarioError(
                t.key("count"),
                f"must be <= {tier.nodes} (the nodes of tier {tier.name!r}); given {count}",
            )
        faults.append(
            Fault(
                at_s=_before_end(t, "at_s", duration_s),
                kind=kind,
                duration_s=t.number("duration_s", minimum=0.0, exclusive_min=True),
                count=count,
                tier=tier.name,
                factor=t.number(
                    "factor", minimum=0.0, exclusive_min=True, maximum=1.0, exclusive_max=True
                ),
            )
        )
    return tuple(faults)


def _economics(data: object) -> Economics:
    t = _Table(data, "economics", "[economics]", Economics)
    share = {"minimum": 0.0, "maximum": 1.0}
    return Economics(
        currency=t.string(
            "currency", pattern=re.compile(r"[A-Z]{3}"), accepted="3 upper-case letters (ISO 4217)"
        ),
        return_rate=t.number("return_rate", **share),
        host_commission=t.number("host_commission", **share),
        platform_take=t.number("platform_take", **share),
        cdn_cost_per_gb=t.number("cdn_cost_per_gb", minimum=0.0),
    )


def _slo(data: object) -> Slo:
    t = _Table(data, "slo", "[slo]", Slo)
    positive = {"minimum": 0.0, "exclusive_min": True}
    return Slo(
        replay_latency_p99_s=t.optional_number("replay_latency_p99_s", **positive),
        join_time_p95_s=t.optional_number("join_time_p95_s", **positive),
        rebuffer_ratio_max=t.optional_number("rebuffer_ratio_max", minimum=0.0, maximum=1.0),
        sale_response_p99_s=t.optional_number("sale_response_p99_s", **positive),
        oversell_max=t.optional_integer("oversell_max", minimum=0),
    )


def _validate(data: Mapping[str, Any]) -> Scenario:
    for key in data:
        if key not in _TABLES:
            name = str(key)
            raise ScenarioError(name, f"unknown table {name!r}" + did_you_mean(name, _TABLES))
    for key in _REQUIRED:
        if key not in data:
            raise ScenarioError(key, f"missing required table {_label(key)}")
    meta = _meta(data["scenario"])
    tiers = _tiers(data)
    return Scenario(
        scenario=meta,
        hosts=_hosts(data.get("hosts", {})),
        stream=_stream(data.get("stream", {})),
        tiers=tiers,
        audience=_audience(data["audience"]),
        player=_player(data.get("player", {})),
        sales=_sales(data, meta.duration_s),
        lotteries=_lotteries(data, meta.duration_s),
        chat=_chat(data["chat"]) if "chat" in data else None,
        faults=_faults(data, meta.duration_s, tiers),
        economics=_economics(data.get("economics", {})),
        slo=_slo(data.get("slo", {})),
    )


# --- overrides -------------------------------------------------------------------------------


def _override_value(text: str, where: str) -> object:
    """VALUE as a TOML value, or as a plain string when it is not valid TOML."""
    try:
        parsed = tomllib.loads("v = " + text)
    except tomllib.TOMLDecodeError:
        return text.strip()
    if list(parsed) != ["v"]:
        raise ScenarioError(where, f"VALUE must be a single TOML value; given {text!r}")
    return parsed["v"]


def _select(items: list[Any], token: str, array: str, where: str) -> int:
    """The index of an array-of-tables element addressed by number or by name."""
    label = _label(array)
    if token.isdigit():
        index = int(token)
        if index < len(items):
            return index
        have = f"numbered 0 to {len(items) - 1}" if items else "there are none"
        raise ScenarioError(where, f"no {label} number {index}; {have}")
    names = [e.get("name") if isinstance(e, Mapping) else None for e in items]
    text_names = [n for n in names if isinstance(n, str)]
    if token in text_names:
        return names.index(token)
    by = "name or number" if array != "fault" else "number (faults have no name)"
    raise ScenarioError(
        where,
        f"no {label} named {token!r}; address it by {by}" + did_you_mean(token, text_names),
    )


def _container(data: dict[str, Any], parts: list[str], where: str) -> dict[str, Any]:
    """The table that ``parts`` (table, [element], key) points into, made if absent."""
    head = parts[0]
    if head not in _ARRAYS:
        table = data.setdefault(head, {})
        if not isinstance(table, dict):
            raise ScenarioError(where, f"{_label(head)} is not a table; given {show_value(table)}")
        return table
    items = data.get(head, [])
    if not isinstance(items, list):
        raise ScenarioError(where, f"{head} is not an array of tables; given {show_value(items)}")
    element = items[_select(items, parts[1], head, where)]
    if not isinstance(element, dict):
        raise ScenarioError(
            where, f"that {_label(head)} is not a table; given {show_value(element)}"
        )
    return element


def _set(data: dict[str, Any], item: str) -> None:
    """Apply one KEY=VALUE override to raw TOML data in place."""
    where = f"--set {item}"
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep:
        raise ScenarioError(where, "expected KEY=VALUE, e.g. audience.peak_viewers=2e6")
    parts = key.split(".")
    if not all(parts):
        raise ScenarioError(where, f"KEY must be a dotted path like tier.edge.nodes; given {key!r}")
    value = _override_value(text, where)
    head = parts[0]
    if head not in _TABLES:
        raise ScenarioError(where, f"unknown table {head!r}" + did_you_mean(head, _TABLES))
    depth = 3 if head in _ARRAYS else 2
    if len(parts) < depth:
        if head in _ARRAYS and len(parts) == 2:
            items = data.get(head)
            if not isinstance(items, list):
                raise ScenarioError(where, f"there are no {_label(head)} tables to replace")
            items[_select(items, parts[1], head, where)] = value
        else:
            data[head] = value
        return
    table = _container(data, parts, where)
    field, rest = parts[depth - 1], parts[depth:]
    cls = _TABLES[head]
    defaults = {f.name: f.default for f in fields(cls)}
    if field not in defaults:
        raise ScenarioError(
            where, f"unknown key {field!r} in {_label(head)}" + did_you_mean(field, defaults)
        )
    if not rest:
        table[field] = value
        return
    _set_dist_param(table, ".".join(parts[:depth]), rest, defaults[field], value, where)


def _set_dist_param(
    table: dict[str, Any], key: str, rest: list[str], default: object, value: object, where: str
) -> None:
    """Set one parameter of the distribution at ``key``, starting from its default if absent."""
    field = key.rsplit(".", 1)[-1]
    if not isinstance(default, _DIST_TYPES) or len(rest) != 1:
        raise ScenarioError(where, f"{key} is not a table; set it whole, e.g. --set {key}=VALUE")
    current = table.get(field, default.to_spec())
    if not isinstance(current, Mapping):
        raise ScenarioError(
            where,
            f"{key} is {show_value(current)}, not a distribution table; set it whole, "
            f'e.g. --set {key}={{dist="exponential", mean=60}}',
        )
    param = rest[0]
    kind = current.get("dist")
    accepted = ("dist", *DIST_KEYS[kind]) if isinstance(kind, str) and kind in DIST_KEYS else None
    if accepted is not None and param not in accepted:
        raise ScenarioError(
            where, f'unknown key {param!r} in {{dist="{kind}"}}' + did_you_mean(param, accepted)
        )
    table[field] = {**current, param: value}


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """A copy of raw scenario data with each KEY=VALUE override applied in order."""
    result = copy.deepcopy(dict(data))
    for item in overrides:
        _set(result, item)
    return result


def parse_scenario(data: Mapping[str, Any], overrides: Sequence[str] = ()) -> Scenario:
    """Validate raw TOML data (after overrides) into a Scenario, or raise ScenarioError."""
    if not isinstance(data, Mapping):
        raise ScenarioError("scenario file", f"must be a table of tables; given {show_value(data)}")
    return _validate(apply_overrides(data, overrides) if overrides else data)


def _statement_before(lines: list[str], index: int) -> int | None:
    """The last line before ``index`` that holds something other than a comment."""
    for i in range(min(index, len(lines)) - 1, -1, -1):
        if lines[i].strip() and not lines[i].lstrip().startswith("#"):
            return i
    return None


def _toml_error(path: Path, text: str, err: tomllib.TOMLDecodeError) -> str:
    """The parser's message, with the line it points at.

    An error at the start of a line or at the end of the file is usually caused by the statement
    before it (an unclosed array, say), so that line is shown too.
    """
    lines = text.splitlines()
    found = re.search(r"at line (\d+), column (\d+)", str(err))
    index, column = (int(found[1]) - 1, int(found[2])) if found else (len(lines), 1)
    shown = [index] if index < len(lines) and lines[index].strip() else []
    before = _statement_before(lines, index) if column == 1 else None
    if before is not None:
        shown.insert(0, before)
    reads = "".join(f"; line {i + 1} reads: {_clip(lines[i].strip())}" for i in shown)
    return f"{path} is not valid TOML: {err}{reads}"


def _clip(source: str) -> str:
    return source if len(source) <= 80 else source[:77] + "..."


def load_scenario(path: str | Path, overrides: Sequence[str] = ()) -> Scenario:
    """Read, parse and validate a scenario file, applying ``--set`` overrides first."""
    file = Path(path)
    try:
        raw = file.read_bytes()
    except FileNotFoundError:
        raise ScenarioError("scenario file", f"no such file: {file}") from None
    except IsADirectoryError:
        raise ScenarioError("scenario file", f"{file} is a directory, not a file") from None
    except OSError as err:
        raise ScenarioError("scenario file", f"cannot read {file}: {err.strerror}") from None
    except ValueError as err:
        raise ScenarioError("scenario file", f"cannot read {file}: {err}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ScenarioError(
            "scenario file",
            f"{file} is not UTF-8 text (byte 0x{raw[err.start]:02x} on line {line}); "
            "save it as UTF-8",
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ScenarioError("scenario file", _toml_error(file, text, err)) from None
    return parse_scenario(data, overrides)
