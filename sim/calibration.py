"""This machine's relay service parameters, and how they replace a scenario's values.

`livesim calibrate` measures a `Calibration` on the real relay (relay/calibrate.py) and saves
it as a small TOML file; `livesim run SCENARIO --calibration FILE` loads it and applies
`calibration_overrides` after the user's ``--set``s, so the simulator predicts the relay on
this machine (loopback, one event loop per server, the SQLite store) rather than the
scenario's production figures.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sim.dists import show_value
from sim.errors import ScenarioError
from sim.scenario import Scenario

FLAG = "--calibration"
"""The key every load error names."""
SALE_BACKEND = "hot-row-batch"
"""The relay's SQLite store decides in memory and commits orders in groups."""
_MEASURED = "measured"


@dataclass(frozen=True)
class Calibration:
    """Service parameters of the real relay on one machine."""

    loopback_rtt_ms: float
    """Median round trip of a tiny request on a kept-alive 127.0.0.1 connection."""
    request_ms: float
    """Relay server CPU per HTTP request (GET of a small cached part at an edge)."""
    ns_per_byte: float
    """Relay server CPU per response-body byte (slope between a large and a small part)."""
    sale_service_ms: float
    """Sale service (SQLite store) CPU per buy attempt, at saturation."""
    sale_commit_ms: float
    """Time to commit one group of orders: a lone buy's latency - rtt - service."""
    measured: dict[str, str] = field(default_factory=dict)
    """Provenance: date (UTC ISO), python, machine, cpus, livesim version."""

    @property
    def egress_gbps(self) -> float:
        """What one single-threaded server can send: 8 bits / ns_per_byte."""
        return 8.0 / self.ns_per_byte


_DOCS: dict[str, str] = {
    "loopback_rtt_ms": "median round trip of a tiny request, kept-alive 127.0.0.1 connection",
    "request_ms": "relay server CPU per HTTP request (small cached part at an edge)",
    "ns_per_byte": "relay server CPU per response-body byte",
    "sale_service_ms": "sale service (SQLite store) CPU per buy, at saturation",
    "sale_commit_ms": "one group commit: a lone buy's latency - rtt - service",
}
"""Each number in the file and the comment written beside it."""
_POSITIVE = ("ns_per_byte", "sale_service_ms")
"""Keys that must be > 0 (the others must be >= 0)."""


def _number(data: dict[str, Any], key: str, where: str) -> float:
    if key not in data:
        raise ScenarioError(FLAG, f"{where}: missing key '{key}'")
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ScenarioError(
            FLAG, f"{where}: {key} must be a finite number; given {show_value(value)}"
        )
    if key in _POSITIVE and value <= 0:
        raise ScenarioError(FLAG, f"{where}: {key} must be > 0; given {show_value(value)}")
    if value < 0:
        raise ScenarioError(FLAG, f"{where}: {key} must be >= 0; given {show_value(value)}")
    return float(value)


def _measured(data: dict[str, Any], where: str) -> dict[str, str]:
    table = data.get(_MEASURED, {})
    if not isinstance(table, dict):
        raise ScenarioError(FLAG, f"{where}: [{_MEASURED}] must be a table")
    for key, value in table.items():
        if isinstance(value, dict | list):
            raise ScenarioError(FLAG, f"{where}: {_MEASURED}.{key} must be a string or a number")
    return {str(key): str(value) for key, value in table.items()}


def parse_calibration(data: dict[str, Any], where: str = "calibration") -> Calibration:
    """Validate raw TOML data into a Calibration; ScenarioError names the bad key."""
    known = {*_DOCS, _MEASURED}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ScenarioError(
            FLAG, f"{where}: unknown key '{unknown[0]}'; the keys are {', '.join(sorted(known))}"
        )
    numbers = {key: _number(data, key, where) for key in _DOCS}
    return Calibration(**numbers, measured=_measured(data, where))


def load_calibration(path: str | Path) -> Calibration:
    """Read a calibration file; ScenarioError("--calibration", reason) if it cannot be used."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError(FLAG, f"no such file: {file}") from None
    except IsADirectoryError:
        raise ScenarioError(FLAG, f"{file} is a directory, not a file") from None
    except OSError as err:
        raise ScenarioError(FLAG, f"cannot read {file}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise ScenarioError(FLAG, f"{file} is not UTF-8 text") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ScenarioError(FLAG, f"{file} is not valid TOML: {err}") from None
    return parse_calibration(data, str(file))


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else json.dumps(key)


def _as_data(calibration: Calibration) -> dict[str, Any]:
    return {
        **{key: getattr(calibration, key) for key in _DOCS},
        _MEASURED: dict(calibration.measured),
    }


def format_calibration(calibration: Calibration) -> str:
    """The file's text: a comment header, the numbers with their meaning, [measured].

    Strings are written with JSON's escapes, which are all valid in TOML basic strings.
    """
    lines = [
        "# livesim calibration: the real relay's service parameters on one machine,",
        "# measured by `livesim calibrate`; apply with `livesim run SCENARIO --calibration FILE`.",
        f"# egress_gbps = 8 / ns_per_byte = {calibration.egress_gbps:.4g} (one server process)",
        "",
    ]
    for key, doc in _DOCS.items():
        lines += [f"# {doc}", f"{key} = {float(getattr(calibration, key))!r}"]
    lines += ["", f"[{_MEASURED}]"]
    lines += [f"{_toml_key(k)} = {json.dumps(v)}" for k, v in calibration.measured.items()]
    return "\n".join(lines) + "\n"


def save_calibration(calibration: Calibration, path: str | Path) -> None:
    """Write the calibration as TOML, atomically (a reader never sees half a file).

    ScenarioError naming the key for a value `load_calibration` would refuse; OSError when
    the file cannot be written.
    """
    parse_calibration(_as_data(calibration))
    file = Path(path)
    handle, staging = tempfile.mkstemp(prefix=f".{file.name}.", dir=file.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as fh:
            fh.write(format_calibration(calibration))
        os.replace(staging, file)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise


def _tier_key(index: int, name: str) -> str:
    """How ``--set`` addresses a tier: by name, or by position for an all-digit name."""
    return str(index) if name.isdigit() else name


def calibration_overrides(calibration: Calibration, scenario: Scenario) -> list[str]:
    """``--set``-style KEY=VALUE strings putting the calibration in place of the scenario's values.

    Every tier gets the loopback rtt, the measured request cost, one worker (a relay server is
    one event loop) and the egress of one server; viewers and hosts get links as fast as that
    egress (loopback has no access link); every sale runs on the relay's store
    (hot-row-batch with the measured service and commit); lotteries and chat get the rtt.
    """
    rtt, egress = calibration.loopback_rtt_ms, calibration.egress_gbps
    items: list[str] = []
    for index, tier in enumerate(scenario.tiers):
        key = f"tier.{_tier_key(index, tier.name)}"
        items += [
            f"{key}.rtt_ms={rtt!r}",
            f"{key}.request_ms={calibration.request_ms!r}",
            f"{key}.workers=1",
            f"{key}.egress_gbps={egress!r}",
        ]
    items += [
        f"audience.last_mile_mbps={egress * 1000.0!r}",
        f"hosts.uplink_mbps={egress * 1000.0!r}",
    ]
    for index in range(len(scenario.sales)):
        items += [
            f"sale.{index}.rtt_ms={rtt!r}",
            f'sale.{index}.backend="{SALE_BACKEND}"',
            f"sale.{index}.service_ms={calibration.sale_service_ms!r}",
            f"sale.{index}.commit_ms={calibration.sale_commit_ms!r}",
        ]
    items += [f"lottery.{index}.rtt_ms={rtt!r}" for index in range(len(scenario.lotteries))]
    if scenario.chat is not None:
        items.append(f"chat.rtt_ms={rtt!r}")
    return items


def format_table(calibration: Calibration) -> str:
    """The measured values, one per line with its unit, for the terminal."""
    rows = [
        ("loopback round trip", f"{calibration.loopback_rtt_ms:.4f} ms"),
        ("relay CPU per request", f"{calibration.request_ms:.4f} ms"),
        ("relay CPU per body byte", f"{calibration.ns_per_byte:.4f} ns"),
        ("egress of one server", f"{calibration.egress_gbps:.1f} Gbit/s"),
        ("sale service per buy", f"{calibration.sale_service_ms:.4f} ms"),
        ("sale group commit", f"{calibration.sale_commit_ms:.4f} ms"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value:>14}" for name, value in rows)


def applied_line(path: str | Path, calibration: Calibration) -> str:
    """The line `livesim run` prints when it applies a calibration file."""
    return (
        f"calibration {path} applied: rtt {calibration.loopback_rtt_ms:.4f} ms, "
        f"request {calibration.request_ms:.4f} ms, egress {calibration.egress_gbps:.1f} Gbit/s "
        "per node, one worker per node, sales on hot-row-batch"
    )
