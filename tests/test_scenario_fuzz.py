"""Broken scenarios, one random mutation of a valid one each: always one clear line, never a crash.

Every case must raise ScenarioError (no other exception), its text must be a single line, and it
must name the offending key. The CLI variant checks the same through `livesim run`: exit code 2,
one line on stderr, no traceback and no output directory.
"""

from __future__ import annotations

import copy
import json
import math
import tomllib
from collections.abc import Iterator
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.dists import DIST_KEYS
from sim.errors import ScenarioError
from sim.scenario import (
    Audience,
    Chat,
    Economics,
    Fault,
    Hosts,
    Lottery,
    Meta,
    Player,
    Sale,
    Slo,
    Stream,
    Tier,
    load_scenario,
    parse_scenario,
)

BASE_TOML = """\
[scenario]
name = "fuzz-base"
description = "valid base for mutation"
duration_s = 600
seed = 7
engine = "exact"

[hosts]
count = 3
popularity = {dist = "zipf", s = 1.1}
uplink_mbps = 20

[stream]
protocol = "ll-hls"
segment_s = 2.0
part_s = 0.5
bitrates_kbps = [800, 2500, 5000]
encoder_delay_s = 0.2

[[tier]]
name = "origin"
nodes = 2
egress_gbps = 40
rtt_ms = 2
request_ms = {dist = "uniform", low = 0.01, high = 0.1}

[[tier]]
name = "edge"
nodes = 20
egress_gbps = 10
rtt_ms = {dist = "lognormal", median = 20, p95 = 80}
coalescing = true
cache_parts = 600
workers = 16

[audience]
peak_viewers = 5000
profile = "flash-crowd"
ramp_s = 60
watch_s = {dist = "exponential", mean = 300}
last_mile_mbps = {dist = "empirical", values = [5, 25, 100], weights = [1, 2, 1]}

[player]
hold_back_segments = 3
part_hold_back_parts = 3
push_buffer_s = 0.3
abr_safety = 0.8
reconnect_s = 1.0

[[sale]]
name = "lipstick drop"
at_s = 300
stock = 1500
price = 99.0
buy_fraction = 0.05
reaction_s = {dist = "lognormal", median = 1.5, p95 = 6}
backend = "redis-lua"
per_user_limit = 1
quantity = 2
timeout_s = 3.0
retries = 2
backoff_s = 0.5
rtt_ms = {dist = "uniform", low = 10, high = 50}
service_ms = 0.00543
commit_ms = 0
shards = 8
batch_max = 1000

[[lottery]]
name = "red envelope"
at_s = 400
window_s = 10
winners = 50
enter_fraction = 0.3
reaction_s = {dist = "lognormal", median = 1.5, p95 = 6}
rtt_ms = 30

[chat]
question_rate_per_s = 2
rtt_ms = {dist = "empirical", values = [20, 50, 200]}
capacity_per_s = 200
answer_s = {dist = "exponential", mean = 20}

[[fault]]
at_s = 200
kind = "edge-down"
count = 3
duration_s = 60

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

BASE: dict[str, Any] = tomllib.loads(BASE_TOML)
TABLES: dict[str, type] = {
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
Path_ = tuple[str | int, ...]


def test_base_is_valid() -> None:
    parse_scenario(BASE)


# --- where things live in the base ---------------------------------------------------------------


def _nodes(value: Any, path: Path_) -> Iterator[tuple[Path_, Any]]:
    """Every value below the root with its path (dict keys and list indices)."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield (*path, k), v
            yield from _nodes(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield (*path, i), v
            yield from _nodes(v, (*path, i))


NODES = list(_nodes(BASE, ()))


def _key_name(path: Path_) -> str:
    """The last named key on a path: what the error must mention."""
    return next(str(p) for p in reversed(path) if isinstance(p, str))


def _accepted(table_path: Path_, table: dict[str, Any]) -> set[str]:
    """The keys a table at this path accepts."""
    if not table_path:
        return set(TABLES)
    if "dist" in table:
        return {"dist", *DIST_KEYS[table["dist"]]}
    return {f.name for f in fields(TABLES[str(table_path[0])])}


def _required(table_path: Path_, table: dict[str, Any]) -> set[str]:
    if not table_path:
        return {"scenario", "tier", "audience"}
    if "dist" in table:
        return {"dist", *DIST_KEYS[table["dist"]]} - {"weights"}
    cls = TABLES[str(table_path[0])]
    return {f.name for f in fields(cls) if f.default is MISSING}


TABLE_NODES: list[tuple[Path_, dict[str, Any]]] = [((), BASE)] + [
    (p, v) for p, v in NODES if isinstance(v, dict)
]
REQUIRED = [(*p, k) for p, t in TABLE_NODES for k in sorted(_required(p, t)) if k in t]


def _get(data: Any, path: Path_) -> Any:
    for p in path:
        data = data[p]
    return data


def _mutated(path: Path_, value: Any = None, *, delete: bool = False) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    parent = _get(data, path[:-1])
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return data


# --- mutations: each draws (data, overrides, key the error must name) ---------------------------

Case = tuple[dict[str, Any], list[str], str]


def _wrong_for(value: Any) -> list[Any]:
    """Replacements of a different, unacceptable type."""
    if isinstance(value, bool):
        return ["yes", 1, 0.5, [True], {"x": True}]
    if isinstance(value, int | float):
        return ["12", "abc", True, False, [1], {"x": 1}]
    if isinstance(value, str):
        return [1, 2.5, True, ["a"], {"x": "a"}]
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return ["abc", True, 5, {"x": 1}]
    if isinstance(value, list):
        return ["abc", 800, True, {"x": 1}]
    return ["abc", True, [1, 2]]


@st.composite
def wrong_type(draw: st.DrawFn) -> Case:
    path, value = draw(st.sampled_from(NODES))
    replacement = draw(st.sampled_from(_wrong_for(value)))
    return _mutated(path, replacement), [], _key_name(path)


# (path, zero allowed, upper bound or None, upper bound is exclusive)
BOUNDED: list[tuple[Path_, bool, float | None, bool]] = [
    (("scenario", "duration_s"), False, 30 * 86_400.0, False),
    (("scenario", "seed"), True, None, False),
    (("hosts", "count"), False, 1_000_000, False),
    (("hosts", "uplink_mbps"), False, None, False),
    (("hosts", "popularity", "s"), True, None, False),
    (("stream", "segment_s"), False, 60.0, False),
    (("stream", "part_s"), False, None, False),
    (("stream", "encoder_delay_s"), True, None, False),
    (("stream", "bitrates_kbps", 0), False, None, False),
    (("tier", 0, "nodes"), False, 1_000_000, False),
    (("tier", 1, "nodes"), False, 1_000_000, False),
    (("tier", 1, "egress_gbps"), False, None, False),
    (("tier", 0, "rtt_ms"), True, None, False),
    (("tier", 0, "request_ms", "low"), True, None, False),
    (("tier", 1, "rtt_ms", "median"), False, None, False),
    (("tier", 1, "cache_parts"), False, None, False),
    (("tier", 1, "workers"), False, None, False),
    (("audience", "peak_viewers"), False, 1_000_000_000, False),
    (("audience", "ramp_s"), True, None, False),
    (("audience", "watch_s", "mean"), False, None, False),
    (("audience", "last_mile_mbps", "values", 0), False, None, False),
    (("player", "hold_back_segments"), False, None, False),
    (("player", "push_buffer_s"), True, None, False),
    (("player", "abr_safety"), False, 1.0, False),
    (("player", "reconnect_s"), True, None, False),
    (("sale", 0, "at_s"), True, 600.0, True),
    (("sale", 0, "stock"), True, None, False),
    (("sale", 0, "price"), True, None, False),
    (("sale", 0, "buy_fraction"), True, 1.0, False),
    (("sale", 0, "per_user_limit"), False, None, False),
    (("sale", 0, "quantity"), False, None, False),
    (("sale", 0, "timeout_s"), False, None, False),
    (("sale", 0, "retries"), True, 20, False),
    (("sale", 0, "backoff_s"), True, None, False),
    (("sale", 0, "rtt_ms", "low"), True, None, False),
    (("sale", 0, "service_ms"), False, None, False),
    (("sale", 0, "commit_ms"), True, None, False),
    (("sale", 0, "shards"), False, 4096, False),
    (("sale", 0, "batch_max"), False, None, False),
    (("lottery", 0, "at_s"), True, 600.0, True),
    (("lottery", 0, "window_s"), False, None, False),
    (("lottery", 0, "winners"), False, None, False),
    (("lottery", 0, "enter_fraction"), True, 1.0, False),
    (("lottery", 0, "reaction_s", "median"), False, None, False),
    (("lottery", 0, "rtt_ms"), True, None, False),
    (("chat", "question_rate_per_s"), False, None, False),
    (("chat", "rtt_ms", "values", 1), True, None, False),
    (("chat", "capacity_per_s"), False, None, False),
    (("chat", "answer_s", "mean"), False, None, False),
    (("fault", 0, "at_s"), True, 600.0, True),
    (("fault", 0, "count"), False, 20, False),
    (("fault", 0, "duration_s"), False, None, False),
    (("economics", "return_rate"), True, 1.0, False),
    (("economics", "cdn_cost_per_gb"), True, None, False),
    (("slo", "replay_latency_p99_s"), False, None, False),
    (("slo", "rebuffer_ratio_max"), True, 1.0, False),
    (("slo", "oversell_max"), True, None, False),
]


@st.composite
def out_of_range(draw: st.DrawFn) -> Case:
    """Zero or negative where not allowed, NaN or infinity, or above the upper bound."""
    path, zero_ok, upper, upper_open = draw(st.sampled_from(BOUNDED))
    too_low = st.one_of(
        st.integers(max_value=-1 if zero_ok else 0),
        st.floats(allow_nan=True).filter(lambda x: not (x >= 0 if zero_ok else x > 0)),
    )
    choices = [too_low, st.sampled_from([math.nan, math.inf])]
    if upper is not None:
        choices.append(
            st.floats(min_value=upper, exclude_min=not upper_open, allow_infinity=False)
            | st.integers(min_value=math.floor(upper) + (0 if upper_open else 1))
        )
    value = draw(st.one_of(choices))
    return _mutated(path, value), [], _key_name(path)


@st.composite
def part_longer_than_segment(draw: st.DrawFn) -> Case:
    segment_s = draw(st.floats(min_value=0.01, max_value=60.0))
    part_s = draw(st.floats(min_value=segment_s, exclude_min=True, max_value=1e6))
    data = copy.deepcopy(BASE)
    data["stream"].update(segment_s=segment_s, part_s=part_s)
    return data, [], "part_s"


@st.composite
def deleted_required(draw: st.DrawFn) -> Case:
    path = draw(st.sampled_from(REQUIRED))
    return _mutated(path, delete=True), [], _key_name(path)


def _near_misses(word: str) -> list[str]:
    drops = [word[:i] + word[i + 1 :] for i in range(len(word))]
    swaps = [word[:i] + word[i + 1] + word[i] + word[i + 2 :] for i in range(len(word) - 1)]
    doubles = [word[:i] + word[i] + word[i:] for i in range(len(word))]
    return [w for w in drops + swaps + doubles + [word.upper(), word + "s"] if w and w != word]


@st.composite
def unknown_key(draw: st.DrawFn) -> Case:
    table_path, table = draw(st.sampled_from(TABLE_NODES))
    accepted = _accepted(table_path, table)
    near = [w for k in table for w in _near_misses(k)]
    random = st.text("abcdefghijklmnopqrstuvwxyz_-0123456789", min_size=1, max_size=12)
    key = draw(st.sampled_from(near) | random if near else random)
    if key in accepted:
        key += "x"
    data = copy.deepcopy(BASE)
    _get(data, table_path)[key] = draw(st.sampled_from([1, "a", True]))
    return data, [], key


ALL_KEYS = {f.name for cls in TABLES.values() for f in fields(cls)} | {
    k for keys in DIST_KEYS.values() for k in keys
}
OVERRIDE_PATHS = [
    "scenario.duration_s",
    "hosts.count",
    "stream.part_s",
    "tier.edge.nodes",
    "tier.0.egress_gbps",
    "audience.peak_viewers",
    "audience.watch_s.mean",
    "sale.0.stock",
    "sale.0.retries",
    "sale.0.service_ms",
    "lottery.0.winners",
    "lottery.red envelope.window_s",
    "chat.capacity_per_s",
    "fault.0.count",
    "slo.oversell_max",
]


@st.composite
def bad_set(draw: st.DrawFn) -> Case:
    key = draw(st.sampled_from(OVERRIDE_PATHS))
    parts = key.split(".")
    kind = draw(st.integers(0, 6))
    if kind == 0:  # no '='
        return copy.deepcopy(BASE), [key], key
    if kind == 1:  # misspelt last component
        wrong = draw(st.sampled_from([w for w in _near_misses(parts[-1]) if w not in ALL_KEYS]))
        return copy.deepcopy(BASE), [".".join([*parts[:-1], wrong]) + "=1"], wrong
    if kind == 2:  # misspelt table
        wrong = draw(st.sampled_from([w for w in _near_misses(parts[0]) if w not in TABLES]))
        return copy.deepcopy(BASE), [".".join([wrong, *parts[1:]]) + "=1"], wrong
    if kind == 3:  # missing array element
        element = draw(st.sampled_from(["7", "99", "edgy", "nope"]))
        array = draw(st.sampled_from(["tier", "sale", "lottery", "fault"]))
        return copy.deepcopy(BASE), [f"{array}.{element}.count=1"], element
    if kind == 4:  # wrong type of value
        value = draw(st.sampled_from(["abc", "true", "[1, 2]", "{x = 1}", '"12"']))
        return copy.deepcopy(BASE), [f"{key}={value}"], parts[-1]
    if kind == 5:  # path below a number
        return copy.deepcopy(BASE), [f"{key}.deeper=1"], parts[-1]
    garbage = draw(st.text("abcdefghijklmnopqrstuvwxyz._ ", min_size=1, max_size=20))
    if garbage.split(".")[0].strip() in TABLES:
        garbage = "q" + garbage
    return copy.deepcopy(BASE), [f"{garbage}=1"], garbage


DATA_MUTATIONS = st.one_of(
    wrong_type(), out_of_range(), part_longer_than_segment(), deleted_required(), unknown_key()
)
ALL_MUTATIONS = DATA_MUTATIONS | bad_set()


def _assert_one_line_naming(text: str, key: str) -> None:
    assert text.strip(), "empty message"
    assert len(text.splitlines()) == 1, text
    assert key in text, f"{key!r} not in {text!r}"


@settings(max_examples=1000, deadline=None)
@given(case=ALL_MUTATIONS)
def test_mutated_scenario_is_rejected_with_one_line_naming_the_key(case: Case) -> None:
    data, overrides, key = case
    with pytest.raises(ScenarioError) as err:
        parse_scenario(data, overrides)
    _assert_one_line_naming(str(err.value), key)


# --- broken TOML text ----------------------------------------------------------------------------

KEY_LINES = [(i, line) for i, line in enumerate(BASE_TOML.splitlines()) if " = " in line]


@st.composite
def broken_toml(draw: st.DrawFn) -> tuple[str, str]:
    """The base text with one key/value line broken; returns (text, key on that line)."""
    index, line = draw(st.sampled_from(KEY_LINES))
    key = line.split(" = ")[0]
    how = draw(st.sampled_from(["no value", "no equals", "duplicate", "junk after", "open"]))
    broken = {
        "no value": [f"{key} ="],
        "no equals": [line.replace(" = ", " ", 1)],
        "duplicate": [line, line],
        "junk after": [line + " junk"],
        "open": [f"{key} = [1, 2"],
    }[how]
    lines = BASE_TOML.splitlines()
    return "\n".join([*lines[:index], *broken, *lines[index + 1 :]]) + "\n", key


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=broken_toml())
def test_broken_toml_is_rejected_with_one_line_naming_the_key(
    case: tuple[str, str], tmp_path: Path
) -> None:
    text, key = case
    path = tmp_path / "broken.toml"
    path.write_text(text)
    with pytest.raises(ScenarioError) as err:
        load_scenario(path)
    _assert_one_line_naming(str(err.value), key)
    assert "line" in str(err.value)


# --- the same through the command line -----------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"


def _toml_key(key: str) -> str:
    bare = key and all(c.isascii() and (c.isalnum() or c in "_-") for c in key)
    return key if bare else json.dumps(key)


def to_toml(data: dict[str, Any]) -> str:
    """A small TOML writer for the test data: scalars first, then tables, then arrays of tables."""
    scalars, tables, arrays = [], [], []
    for k, v in data.items():
        if isinstance(v, dict):
            body = "".join(f"{_toml_key(a)} = {_toml_value(b)}\n" for a, b in v.items())
            tables.append(f"[{_toml_key(k)}]\n{body}")
        elif isinstance(v, list) and v and all(isinstance(e, dict) for e in v):
            for e in v:
                body = "".join(f"{_toml_key(a)} = {_toml_value(b)}\n" for a, b in e.items())
                arrays.append(f"[[{_toml_key(k)}]]\n{body}")
        else:
            scalars.append(f"{_toml_key(k)} = {_toml_value(v)}\n")
    return "".join(scalars) + "\n".join(tables + arrays)


def test_toml_writer_round_trips_the_base() -> None:
    assert tomllib.loads(to_toml(BASE)) == BASE


@st.composite
def cli_case(draw: st.DrawFn) -> tuple[str, list[str], str]:
    """(TOML text, --set strings, key the error must name)."""
    if draw(st.booleans()):
        text, key = draw(broken_toml())
        return text, [], key
    data, overrides, key = draw(ALL_MUTATIONS)
    return to_toml(data), overrides, key


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=cli_case())
def test_cli_rejects_broken_scenarios_with_exit_2_and_one_line(
    case: tuple[str, list[str], str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sim.cli import main

    text, overrides, key = case
    path = tmp_path / "broken.toml"
    path.write_text(text)
    out = tmp_path / "out"
    args = ["run", str(path), "--out", str(out), "--quiet"]
    for item in overrides:
        args += ["--set", item]
    capsys.readouterr()
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    _assert_one_line_naming(err.strip(), key)
    assert "Traceback" not in err
    assert not out.exists()


# --- anything at all: a Scenario or a ScenarioError, never another exception --------------------

JSON_LIKE = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from(["exponential", "lognormal", "zipf", "edge", "hls"]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(["dist", "mean", "s", "name", "x", "values"]), inner)
    ),
    max_leaves=8,
)


@settings(max_examples=500, deadline=None)
@given(node=st.sampled_from(NODES), value=JSON_LIKE)
def test_any_value_anywhere_is_accepted_or_a_one_line_error(
    node: tuple[Path_, Any], value: Any
) -> None:
    try:
        parse_scenario(_mutated(node[0], value))
    except ScenarioError as err:
        assert len(str(err).splitlines()) == 1


@settings(max_examples=500, deadline=None)
@given(
    override=st.sampled_from(OVERRIDE_PATHS).flatmap(
        lambda k: st.tuples(st.just(k), st.text(max_size=12))
    )
    | st.tuples(st.text(max_size=20), st.text(max_size=12))
)
def test_any_set_string_is_accepted_or_a_one_line_error(override: tuple[str, str]) -> None:
    key, value = override
    try:
        parse_scenario(BASE, [f"{key}={value}"])
    except ScenarioError as err:
        assert len(str(err).splitlines()) == 1
