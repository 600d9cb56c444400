"""Scenario files: good files load with defaults filled in, --set works, bad input is named."""

from __future__ import annotations

import dataclasses
import json
import tomllib
from pathlib import Path
from typing import Any

import pytest

from sim.dists import Constant, Empirical, Exponential, Lognormal, Uniform, Zipf
from sim.errors import ScenarioError
from sim.scenario import (
    BACKEND_DEFAULTS,
    BACKENDS,
    Audience,
    Chat,
    Economics,
    Hosts,
    Lottery,
    Player,
    Sale,
    Scenario,
    Slo,
    Stream,
    apply_overrides,
    load_scenario,
    parse_scenario,
)

FULL = """
[scenario]
name = "singles-day-peak"
description = "the example from the design"
duration_s = 3600
seed = 1111
engine = "auto"

[hosts]
count = 1
popularity = {dist="zipf", s=1.1}
uplink_mbps = 20

[stream]
protocol = "ll-hls"
segment_s = 2.0
part_s = 0.333
bitrates_kbps = [800, 2500, 5000]
encoder_delay_s = 0.2

[[tier]]
name = "origin"
nodes = 2
egress_gbps = 40
[[tier]]
name = "edge"
nodes = 2000
egress_gbps = 10
rtt_ms = {dist="lognormal", median=20, p95=80}
coalescing = true
cache_parts = 600

[audience]
peak_viewers = 10_000_000
profile = "flash-crowd"
ramp_s = 600
watch_s = {dist="exponential", mean=900}
last_mile_mbps = {dist="lognormal", median=25, p95=80}

[[sale]]
name = "lipstick drop"
at_s = 1800
stock = 150000
price = 99.0
buy_fraction = 0.05
reaction_s = {dist="lognormal", median=1.5, p95=6}
backend = "redis-lua"
per_user_limit = 1
quantity = 2
timeout_s = 2.5
retries = 3
backoff_s = 0.25
rtt_ms = {dist="lognormal", median=30, p95=120}
service_ms = 0.01
shards = 16
batch_max = 500

[[lottery]]
name = "red envelope"
at_s = 2400
window_s = 10
winners = 100
enter_fraction = 0.4
reaction_s = {dist="uniform", low=0.5, high=4}
rtt_ms = 40

[chat]
question_rate_per_s = 5
rtt_ms = {dist="lognormal", median=50, p95=200}
capacity_per_s = 100
answer_s = {dist="exponential", mean=20}

[[fault]]
at_s = 1200
kind = "edge-down"
count = 100
duration_s = 300

[economics]
currency = "CNY"
return_rate = 0.3
host_commission = 0.2
platform_take = 0.05
cdn_cost_per_gb = 0.03

[slo]
replay_latency_p99_s = 1.0
join_time_p95_s = 2.0
rebuffer_ratio_max = 0.005
sale_response_p99_s = 1.0
oversell_max = 0
"""

MINIMAL = """
[scenario]
name = "tiny"
duration_s = 60

[[tier]]
name = "edge"
nodes = 1
egress_gbps = 1

[audience]
peak_viewers = 10
"""


def full() -> dict[str, Any]:
    return tomllib.loads(FULL)


def minimal() -> dict[str, Any]:
    return tomllib.loads(MINIMAL)


TWO_A = '{name="a", at_s=1, window_s=1, winners=1}, {name="a", at_s=2, window_s=1, winners=1}'
"""Two [[lottery]] tables with the same name, as a TOML array body."""


def error_of(data: dict[str, Any], overrides: list[str] | None = None) -> str:
    with pytest.raises(ScenarioError) as err:
        parse_scenario(data, overrides or [])
    text = str(err.value)
    assert "\n" not in text
    return text


# --- good files --------------------------------------------------------------------------------


def test_full_example_loads_with_its_values() -> None:
    s = parse_scenario(full())
    assert s.scenario.name == "singles-day-peak"
    assert s.scenario.duration_s == 3600.0
    assert s.scenario.seed == 1111
    assert s.hosts.popularity == Zipf(1.1)
    assert s.stream.bitrates_kbps == (800.0, 2500.0, 5000.0)
    assert [t.name for t in s.tiers] == ["origin", "edge"]
    assert s.tiers[1].rtt_ms == Lognormal(20.0, 80.0)
    assert s.audience.peak_viewers == 10_000_000
    assert s.audience.watch_s == Exponential(900.0)
    assert s.sales[0].name == "lipstick drop"
    assert s.sales[0].stock == 150_000
    assert s.slo.oversell_max == 0
    assert s.edge_tier().name == "edge"


def test_full_example_round_trips_through_resolved() -> None:
    s = parse_scenario(full())
    resolved = s.resolved()
    assert parse_scenario(resolved) == s
    assert parse_scenario(json.loads(json.dumps(resolved))) == s


def test_resolved_has_toml_shape() -> None:
    r = parse_scenario(full()).resolved()
    assert list(r) == [
        "scenario", "hosts", "stream", "tier", "audience", "player", "sale", "lottery", "chat",
        "fault", "economics", "slo",
    ]  # fmt: skip
    assert r["tier"][1]["rtt_ms"] == {"dist": "lognormal", "median": 20.0, "p95": 80.0}
    assert r["tier"][0]["rtt_ms"] == 10.0
    assert r["stream"]["bitrates_kbps"] == [800.0, 2500.0, 5000.0]
    assert r["fault"][0]["tier"] == "edge"
    assert r["sale"][0]["commit_ms"] == 0.0
    assert r["lottery"][0]["rtt_ms"] == 40.0
    assert r["chat"]["answer_s"] == {"dist": "exponential", "mean": 20.0}


def test_minimal_file_gets_every_default() -> None:
    s = parse_scenario(minimal())
    assert s.scenario.description == ""
    assert s.scenario.seed == 0
    assert s.scenario.engine == "auto"
    assert s.hosts == Hosts()
    assert s.hosts.popularity == Zipf(1.1)
    assert s.stream == Stream()
    assert s.stream.protocol == "ll-hls"
    assert s.player == Player()
    assert s.economics == Economics()
    assert s.slo == Slo()
    assert s.sales == ()
    assert s.lotteries == ()
    assert s.chat is None
    assert s.faults == ()
    assert s.audience == Audience(peak_viewers=10)
    tier = s.tiers[0]
    assert (tier.rtt_ms, tier.coalescing, tier.cache_parts, tier.workers) == (
        Constant(10.0), True, 600, 16,
    )  # fmt: skip
    assert tier.request_ms == Constant(0.05)


def test_minimal_file_resolves_to_full_table_set_without_none_slos() -> None:
    s = parse_scenario(minimal())
    r = s.resolved()
    assert r["slo"] == {}
    assert r["lottery"] == []
    assert "chat" not in r
    assert r["player"]["abr_safety"] == 0.8
    assert parse_scenario(r) == s


def test_every_distribution_kind_round_trips() -> None:
    data = minimal()
    data["tier"][0]["rtt_ms"] = {"dist": "uniform", "low": 5, "high": 15}
    data["tier"][0]["request_ms"] = {"dist": "empirical", "values": [0.05, 0.5], "weights": [9, 1]}
    data["audience"]["watch_s"] = 300
    data["hosts"] = {"popularity": {"dist": "zipf", "s": 0}}
    s = parse_scenario(data)
    assert s.tiers[0].rtt_ms == Uniform(5.0, 15.0)
    assert s.tiers[0].request_ms == Empirical((0.05, 0.5), (9.0, 1.0))
    assert s.audience.watch_s == Constant(300.0)
    assert parse_scenario(s.resolved()) == s


def test_scenario_is_frozen_and_hashable() -> None:
    s = parse_scenario(full())
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.scenario.name = "x"  # type: ignore[misc]
    assert hash(s) == hash(parse_scenario(full()))


def test_integral_float_fills_an_int_field() -> None:
    data = minimal()
    data["audience"]["peak_viewers"] = 2e6
    data["tier"][0]["nodes"] = 5.0
    s = parse_scenario(data)
    assert s.audience.peak_viewers == 2_000_000
    assert type(s.audience.peak_viewers) is int
    assert type(s.tiers[0].nodes) is int


def test_underscored_toml_ints_load(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(MINIMAL.replace("peak_viewers = 10", "peak_viewers = 10_000_000"))
    assert load_scenario(path).audience.peak_viewers == 10_000_000
    assert load_scenario(str(path)).audience.peak_viewers == 10_000_000


def test_sale_lottery_and_chat_load_with_their_values() -> None:
    s = parse_scenario(full())
    sale = s.sales[0]
    assert (sale.quantity, sale.timeout_s, sale.retries, sale.backoff_s) == (2, 2.5, 3, 0.25)
    assert sale.rtt_ms == Lognormal(30.0, 120.0)
    assert (sale.service_ms, sale.commit_ms) == (0.01, 0.0)
    assert (sale.shards, sale.batch_max) == (16, 500)
    assert s.lotteries == (
        Lottery(
            name="red envelope",
            at_s=2400.0,
            window_s=10.0,
            winners=100,
            enter_fraction=0.4,
            reaction_s=Uniform(0.5, 4.0),
            rtt_ms=Constant(40.0),
        ),
    )
    assert s.chat == Chat(
        question_rate_per_s=5.0,
        rtt_ms=Lognormal(50.0, 200.0),
        capacity_per_s=100.0,
        answer_s=Exponential(20.0),
    )


def test_sale_lottery_and_chat_defaults() -> None:
    data = minimal()
    data["sale"] = [{"name": "a", "at_s": 5, "stock": 3}]
    data["lottery"] = [{"name": "draw", "at_s": 10, "window_s": 5, "winners": 1}]
    data["chat"] = {}
    s = parse_scenario(data)
    assert s.sales[0] == Sale(name="a", at_s=5.0, stock=3, service_ms=0.00543, commit_ms=0.0)
    sale = s.sales[0]
    assert (sale.quantity, sale.timeout_s, sale.retries, sale.backoff_s) == (1, 3.0, 2, 0.5)
    assert (sale.rtt_ms, sale.shards, sale.batch_max) == (Constant(30.0), 8, 1000)
    lottery = s.lotteries[0]
    assert (lottery.enter_fraction, lottery.reaction_s, lottery.rtt_ms) == (
        0.3, Lognormal(1.5, 6.0), Constant(30.0),
    )  # fmt: skip
    assert s.chat == Chat()
    assert (s.chat.question_rate_per_s, s.chat.capacity_per_s) == (1.0, 200.0)
    assert (s.chat.rtt_ms, s.chat.answer_s) == (Constant(50.0), Lognormal(10.0, 40.0))
    assert parse_scenario(s.resolved()) == s


@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_costs_are_filled_in_from_the_defaults(backend: str) -> None:
    data = minimal()
    data["sale"] = [{"name": "a", "at_s": 5, "stock": 3, "backend": backend}]
    s = parse_scenario(data)
    sale = s.sales[0]
    assert (sale.service_ms, sale.commit_ms) == BACKEND_DEFAULTS[backend]
    assert type(sale.service_ms) is float
    assert type(sale.commit_ms) is float
    written = s.resolved()["sale"][0]
    assert (written["service_ms"], written["commit_ms"]) == BACKEND_DEFAULTS[backend]


def test_given_backend_costs_win_over_the_defaults_even_zero() -> None:
    data = minimal()
    data["sale"] = [
        {"name": "a", "at_s": 5, "stock": 3, "backend": "hot-row-batch", "commit_ms": 0},
        {"name": "b", "at_s": 5, "stock": 3, "backend": "row-lock", "service_ms": 7},
    ]
    a, b = parse_scenario(data).sales
    assert (a.service_ms, a.commit_ms) == (0.04, 0.0)
    assert (b.service_ms, b.commit_ms) == (7.0, 0.0)


def test_every_backend_has_default_costs() -> None:
    assert set(BACKEND_DEFAULTS) == set(BACKENDS)
    assert all(
        service_ms > 0 and commit_ms >= 0 for service_ms, commit_ms in BACKEND_DEFAULTS.values()
    )


def test_backend_defaults_reproduce_the_published_throughputs() -> None:
    """FACTS.md: one hot row a few hundred TPS; hot-row batching 12-31 k TPS; Redis Lua ~184 k/s."""
    row_lock_per_s = 1000.0 / BACKEND_DEFAULTS["row-lock"][0]
    assert 200.0 <= row_lock_per_s <= 900.0
    service_ms, commit_ms = BACKEND_DEFAULTS["hot-row-batch"]
    batch = Sale(name="x", at_s=0.0, stock=1).batch_max
    batch_per_s = 1000.0 * batch / (commit_ms + batch * service_ms)
    assert 12_000.0 <= batch_per_s <= 31_000.0
    for backend in ("redis-lua", "sharded"):
        assert 1000.0 / BACKEND_DEFAULTS[backend][0] == pytest.approx(184_000.0, rel=0.01)


def test_fault_tier_defaults_by_kind() -> None:
    data = full()
    data["fault"] = [
        {"at_s": 10, "kind": "edge-down", "duration_s": 5},
        {"at_s": 10, "kind": "origin-down", "duration_s": 5},
        {"at_s": 10, "kind": "link-degrade", "duration_s": 5, "factor": 0.25},
        {"at_s": 10, "kind": "edge-down", "duration_s": 5, "tier": "origin", "count": 2},
    ]
    faults = parse_scenario(data).faults
    assert [f.tier for f in faults] == ["edge", "origin", "edge", "origin"]
    assert faults[2].factor == 0.25


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_bytes(b"\xef\xbb\xbf" + MINIMAL.encode())
    assert load_scenario(path).scenario.name == "tiny"


# --- overrides ---------------------------------------------------------------------------------


def with_set(*overrides: str) -> Scenario:
    return parse_scenario(full(), list(overrides))


def test_set_peak_viewers_from_float_notation() -> None:
    assert with_set("audience.peak_viewers=2e6").audience.peak_viewers == 2_000_000


def test_set_plain_string_without_quotes() -> None:
    assert with_set("stream.protocol=hls").stream.protocol == "hls"
    assert with_set('stream.protocol="http-flv"').stream.protocol == "http-flv"


def test_set_tier_by_name_changes_only_that_tier() -> None:
    before = parse_scenario(full())
    after = with_set("tier.edge.nodes=500")
    assert after.tiers[1] == dataclasses.replace(before.tiers[1], nodes=500)
    assert after.tiers[0] == before.tiers[0]
    assert dataclasses.replace(after, tiers=before.tiers) == before


def test_set_tier_by_index() -> None:
    assert with_set("tier.0.nodes=7").tiers[0].nodes == 7


def test_set_the_sale_lottery_and_chat_forms() -> None:
    s = with_set(
        "lottery.0.winners=5",
        "lottery.red envelope.window_s=12",
        "chat.capacity_per_s=50",
        "sale.0.backend=row-lock",
        "sale.0.service_ms=5",
        "sale.lipstick drop.retries=0",
    )
    assert (s.lotteries[0].winners, s.lotteries[0].window_s) == (5, 12.0)
    assert s.chat is not None
    assert s.chat.capacity_per_s == 50.0
    assert s.chat.question_rate_per_s == 5.0
    assert (s.sales[0].backend, s.sales[0].service_ms, s.sales[0].retries) == ("row-lock", 5.0, 0)


def test_set_backend_takes_the_new_backends_default_costs() -> None:
    data = minimal()
    data["sale"] = [{"name": "a", "at_s": 5, "stock": 3}]
    sale = parse_scenario(data, ["sale.0.backend=queue-token"]).sales[0]
    assert (sale.service_ms, sale.commit_ms) == BACKEND_DEFAULTS["queue-token"]


def test_set_backend_on_a_resolved_scenario_keeps_the_written_costs() -> None:
    data = minimal()
    data["sale"] = [{"name": "a", "at_s": 5, "stock": 3}]
    resolved = parse_scenario(data).resolved()
    sale = parse_scenario(resolved, ["sale.0.backend=row-lock"]).sales[0]
    assert (sale.service_ms, sale.commit_ms) == BACKEND_DEFAULTS["redis-lua"]


def test_set_chat_into_a_file_without_chat_makes_one_with_defaults() -> None:
    s = parse_scenario(minimal(), ["chat.capacity_per_s=50"])
    assert s.chat == Chat(capacity_per_s=50.0)
    assert parse_scenario(s.resolved()) == s


def test_set_sale_and_fault_by_index() -> None:
    s = with_set("sale.0.stock=10", "fault.0.count=3")
    assert s.sales[0].stock == 10
    assert s.faults[0].count == 3


def test_set_one_parameter_of_a_distribution() -> None:
    assert with_set("audience.watch_s.mean=600").audience.watch_s == Exponential(600.0)


def test_set_a_whole_distribution() -> None:
    s = with_set('audience.watch_s={dist="exponential", mean=60}')
    assert s.audience.watch_s == Exponential(60.0)
    assert with_set("audience.watch_s=45").audience.watch_s == Constant(45.0)


def test_set_keys_absent_from_the_file() -> None:
    data = minimal()
    s = parse_scenario(
        data,
        [
            "player.abr_safety=0.5",
            "audience.watch_s.mean=600",
            "hosts.popularity.s=0",
            "slo.join_time_p95_s=2",
            "tier.edge.rtt_ms=3",
        ],
    )
    assert s.player.abr_safety == 0.5
    assert s.audience.watch_s == Exponential(600.0)
    assert s.hosts.popularity == Zipf(0.0)
    assert s.slo.join_time_p95_s == 2.0
    assert s.tiers[0].rtt_ms == Constant(3.0)


def test_set_applies_in_order_and_later_wins() -> None:
    assert with_set("tier.edge.nodes=5", "tier.edge.nodes=600").tiers[1].nodes == 600


def test_set_a_new_array_of_tables() -> None:
    s = with_set('sale=[{name="a", at_s=5, stock=3}]')
    assert [(x.name, x.stock) for x in s.sales] == [("a", 3)]


def test_apply_overrides_returns_a_new_dict() -> None:
    data = full()
    out = apply_overrides(data, ["tier.edge.nodes=500", "player.abr_safety=0.5"])
    assert out["tier"][1]["nodes"] == 500
    assert data["tier"][1]["nodes"] == 2000
    assert "player" not in data


def test_set_by_name_finds_the_right_element_past_a_broken_one() -> None:
    data = {"tier": ["not a table", {"name": "edge", "nodes": 1}]}
    assert apply_overrides(data, ["tier.edge.nodes=3"])["tier"][1] == {"name": "edge", "nodes": 3}


def test_overridden_values_are_validated_like_the_file() -> None:
    msg = error_of(full(), ["audience.peak_viewers=0"])
    assert msg == "audience.peak_viewers: must be an integer >= 1 and <= 1000000000; given 0"
    assert "stream.part_s" in error_of(full(), ["stream.part_s=5"])


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        (
            "audience.peak_viewrs=2",
            "--set audience.peak_viewrs=2: unknown key 'peak_viewrs' in [audience]; "
            "did you mean 'peak_viewers'?",
        ),
        ("audience.peak_viewers", "--set audience.peak_viewers: expected KEY=VALUE"),
        ("tiers.edge.nodes=1", "unknown table 'tiers'; did you mean 'tier'?"),
        ("tier.9.nodes=1", "no [[tier]] number 9; numbered 0 to 1"),
        ("tier.edgy.nodes=1", "no [[tier]] named 'edgy'"),
        ("tier.edge.nodez=1", "unknown key 'nodez' in [[tier]]; did you mean 'nodes'?"),
        ("fault.first.count=1", "no [[fault]] named 'first'"),
        ("sale.3.stock=1", "no [[sale]] number 3"),
        ("lottery.9.winners=1", "no [[lottery]] number 9; numbered 0 to 0"),
        ("lottery.raffle.winners=1", "no [[lottery]] named 'raffle'"),
        ("lottery.0.winers=1", "unknown key 'winers' in [[lottery]]; did you mean 'winners'?"),
        ("chat.capasity_per_s=1", "did you mean 'capacity_per_s'?"),
        ("chat.answer_s.median=1", "unknown key 'median' in {dist=\"exponential\"}"),
        ("audience.watch_s.meen=1", "unknown key 'meen'"),
        ("audience.peak_viewers.x=1", "audience.peak_viewers is not a table"),
        ("audience..peak_viewers=1", "KEY must be a dotted path"),
        ("=3", "KEY must be a dotted path"),
    ],
)
def test_bad_set_strings_are_one_line_errors(override: str, expected: str) -> None:
    msg = error_of(full(), [override])
    assert msg.startswith(f"--set {override}: ")
    assert expected in msg


def test_set_into_a_constant_distribution_explains_how() -> None:
    msg = error_of(full(), ["audience.watch_s=5", "audience.watch_s.mean=600"])
    assert "audience.watch_s.mean=600" in msg
    assert "set it whole" in msg


# --- bad files ---------------------------------------------------------------------------------


def test_webrtc_is_not_supported_yet() -> None:
    msg = error_of(full(), ["stream.protocol=webrtc"])
    assert msg == "stream.protocol: webrtc is not supported yet; use hls, ll-hls or http-flv"


def test_part_longer_than_segment_names_part_s() -> None:
    msg = error_of(full(), ["stream.part_s=2.5"])
    assert msg == "stream.part_s: must be <= stream.segment_s (2); given 2.5"


@pytest.mark.parametrize(
    ("overrides", "path", "fragment"),
    [
        (["fault.0.tier=edgy"], "fault.0.tier", "did you mean 'edge'?"),
        (["fault.0.count=2001"], "fault.0.count", "must be <= 2000"),
        (["fault.0.at_s=3600"], "fault.0.at_s", "< scenario.duration_s (3600)"),
        (["sale.0.at_s=4000"], "sale.0.at_s", "< scenario.duration_s"),
        (["scenario.duration_s=1000"], "sale.0.at_s", "given 1800"),
        (["tier.origin.name=edge"], "tier.edge.name", "unique"),
        (['sale=[{name="a", at_s=1, stock=1}, {name="a", at_s=2, stock=1}]'], "sale.1.name", "a"),
        (["scenario.name=Singles Day"], "scenario.name", "a-z"),
        (["scenario.engine=fast"], "scenario.engine", "auto, exact, cohort"),
        (["scenario.duration_s=2592001"], "scenario.duration_s", "<= 2592000"),
        (["audience.profile=flashcrowd"], "audience.profile", "did you mean 'flash-crowd'?"),
        (["audience.peak_viewers=true"], "audience.peak_viewers", "given true"),
        (['audience.peak_viewers="10"'], "audience.peak_viewers", 'given "10"'),
        (["audience.peak_viewers=2.5"], "audience.peak_viewers", "integer"),
        (["audience.watch_s=0"], "audience.watch_s", "> 0"),
        (["stream.bitrates_kbps=[800, 800]"], "stream.bitrates_kbps", "ascending"),
        (["stream.bitrates_kbps=[]"], "stream.bitrates_kbps", "non-empty"),
        (["stream.bitrates_kbps=[800, -1]"], "stream.bitrates_kbps.1", "> 0"),
        (["stream.segment_s=61"], "stream.segment_s", "<= 60"),
        (["hosts.count=0"], "hosts.count", ">= 1"),
        (["hosts.popularity=1.1"], "hosts.popularity", "zipf"),
        (["player.abr_safety=0"], "player.abr_safety", "> 0 and <= 1"),
        (["player.part_hold_back_parts=1"], "player.part_hold_back_parts", ">= 2"),
        (["economics.currency=cny"], "economics.currency", "upper-case"),
        (["economics.return_rate=1.5"], "economics.return_rate", "<= 1"),
        (["slo.oversell_max=-1"], "slo.oversell_max", ">= 0"),
        (["sale.0.backend=mysql"], "sale.0.backend", "redis-lua"),
        (["fault.0.kind=edge-up"], "fault.0.kind", "edge-down"),
        (["fault.0.factor=1"], "fault.0.factor", "< 1"),
        (["tier.edge.coalescing=1"], "tier.edge.coalescing", "true or false"),
        (["tier=[]"], "tier", "missing required table [[tier]]"),
        (["sale.0.quantity=0"], "sale.0.quantity", "must be an integer >= 1; given 0"),
        (["sale.0.quantity=1.5"], "sale.0.quantity", "integer"),
        (["sale.0.timeout_s=0"], "sale.0.timeout_s", "must be a number > 0; given 0"),
        (["sale.0.retries=21"], "sale.0.retries", "must be an integer >= 0 and <= 20; given 21"),
        (["sale.0.retries=-1"], "sale.0.retries", ">= 0"),
        (["sale.0.backoff_s=-0.5"], "sale.0.backoff_s", "must be a number >= 0; given -0.5"),
        (["sale.0.rtt_ms=-1"], "sale.0.rtt_ms", ">= 0"),
        (["sale.0.rtt_ms.p95=10"], "sale.0.rtt_ms.p95", "> 30"),
        (["sale.0.service_ms=0"], "sale.0.service_ms", "must be a number > 0; given 0"),
        (["sale.0.service_ms=fast"], "sale.0.service_ms", 'given "fast"'),
        (["sale.0.commit_ms=-1"], "sale.0.commit_ms", "must be a number >= 0; given -1"),
        (["sale.0.shards=0"], "sale.0.shards", ">= 1"),
        (["sale.0.shards=4097"], "sale.0.shards", "<= 4096; given 4097"),
        (["sale.0.batch_max=0"], "sale.0.batch_max", ">= 1"),
        (["sale.0.backend=redis"], "sale.0.backend", "did you mean 'redis-lua'?"),
        (["lottery.0.name="], "lottery.0.name", "1 to 64 printable characters"),
        (["lottery.0.at_s=3600"], "lottery.0.at_s", "< scenario.duration_s (3600); given 3600"),
        (["lottery.0.at_s=-1"], "lottery.0.at_s", ">= 0"),
        (["lottery.0.window_s=0"], "lottery.0.window_s", "must be a number > 0; given 0"),
        (["lottery.0.winners=0"], "lottery.0.winners", "must be an integer >= 1; given 0"),
        (["lottery.0.winners=2.5"], "lottery.0.winners", "integer"),
        (["lottery.0.enter_fraction=1.5"], "lottery.0.enter_fraction", "<= 1"),
        (["lottery.0.reaction_s=-1"], "lottery.0.reaction_s", ">= 0"),
        (["lottery.0.rtt_ms={dist='uniform', low=-1, high=2}"], "lottery.0.rtt_ms.low", ">= 0"),
        ([f"lottery=[{TWO_A}]"], "lottery.1.name", "lottery names must be unique; given 'a' twice"),
        (["lottery=5"], "lottery", "must be an array of tables [[lottery]]"),
        (["chat=5"], "chat", "must be a table [chat]; given 5"),
        (["chat.question_rate_per_s=0"], "chat.question_rate_per_s", "> 0"),
        (["chat.capacity_per_s=-3"], "chat.capacity_per_s", "must be a number > 0; given -3"),
        (["chat.rtt_ms=-5"], "chat.rtt_ms", ">= 0"),
        (["chat.answer_s.mean=0"], "chat.answer_s.mean", "> 0"),
        (["chat.answer_s=slow"], "chat.answer_s", "must be a bare number"),
    ],
)
def test_invalid_values_name_their_key(overrides: list[str], path: str, fragment: str) -> None:
    msg = error_of(full(), overrides)
    assert msg.startswith(f"{path}: ")
    assert fragment in msg


@pytest.mark.parametrize("table", ["scenario", "audience", "tier"])
def test_missing_required_table(table: str) -> None:
    data = full()
    del data[table]
    label = "[[tier]]" if table == "tier" else f"[{table}]"
    assert error_of(data) == f"{table}: missing required table {label}"


@pytest.mark.parametrize("key", ["name", "at_s", "window_s", "winners"])
def test_missing_required_lottery_key(key: str) -> None:
    data = full()
    del data["lottery"][0][key]
    assert error_of(data) == f"lottery.0.{key}: missing required key '{key}' in [[lottery]]"


def test_missing_required_key() -> None:
    data = full()
    del data["tier"][1]["nodes"]
    assert error_of(data) == "tier.edge.nodes: missing required key 'nodes' in [[tier]]"


def test_unknown_table_suggests_the_right_one() -> None:
    data = full()
    data["tiers"] = data.pop("tier")
    assert error_of(data) == "tiers: unknown table 'tiers'; did you mean 'tier'?"


def test_unknown_key_suggests_the_right_one() -> None:
    data = full()
    data["audience"]["peak_viewrs"] = 5
    assert error_of(data) == (
        "audience.peak_viewrs: unknown key 'peak_viewrs' in [audience]; "
        "did you mean 'peak_viewers'?"
    )


def test_unknown_key_without_near_miss_lists_accepted_keys() -> None:
    data = full()
    data["player"] = {"zzz": 1}
    msg = error_of(data)
    assert msg.startswith("player.zzz: unknown key 'zzz' in [player]; accepted: ")
    assert "abr_safety" in msg


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    assert str(err.value) == f"scenario file: no such file: {path}"


def test_toml_syntax_error_gives_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(MINIMAL.replace("nodes = 1", "nodes = "))
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith("scenario file: ")
    assert "line 8, column" in msg
    assert "nodes =" in msg


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(MINIMAL.replace("tiny", "caf\xe9").encode("latin-1"))
    with pytest.raises(ScenarioError, match="not UTF-8"):
        load_scenario(path)


def test_directory_is_not_a_scenario_file(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="is a directory"):
        load_scenario(tmp_path)


def test_overrides_apply_to_loaded_files(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(MINIMAL)
    assert load_scenario(path, ["tier.edge.nodes=3"]).tiers[0].nodes == 3


def test_error_carries_path_and_message_and_is_a_value_error() -> None:
    with pytest.raises(ValueError) as err:
        parse_scenario(full(), ["hosts.count=0"])
    assert isinstance(err.value, ScenarioError)
    assert err.value.path == "hosts.count"
    assert err.value.message == "must be an integer >= 1 and <= 1000000; given 0"


@pytest.mark.parametrize(
    "overrides",
    [
        ['sale.0.name="two\\nlines"'],
        ['audience.profile="flash\\ncrowd"'],
        ['player={"abr\\nsafety" = 1}'],
        ["audience.peak\nviewers=1"],
    ],
)
def test_line_breaks_in_given_text_stay_on_one_line(overrides: list[str]) -> None:
    msg = error_of(full(), overrides)
    assert len(msg.splitlines()) == 1
    assert "\\n" in msg
