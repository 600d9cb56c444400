"""Calibration: the file, how it replaces a scenario's values, `livesim calibrate` and
`livesim run --calibration`, and the measurements on the real relay servers."""

from __future__ import annotations

import json
import os
import secrets
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from relay.calibrate import measure
from sim.calibration import (
    Calibration,
    calibration_overrides,
    load_calibration,
    save_calibration,
)
from sim.cli import main
from sim.errors import ScenarioError
from sim.scenario import Scenario, parse_scenario

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "scenarios" / "quickstart.toml"
FLASH_SALE = ROOT / "scenarios" / "flash-sale-backends.toml"
CALIBRATION = Calibration(
    loopback_rtt_ms=0.052,
    request_ms=0.0165,
    ns_per_byte=0.08,
    sale_service_ms=0.066,
    sale_commit_ms=0.15,
    measured={"date": "2024-11-11T00:00:00+00:00", "cpus": "2", "note": 'a "quoted" é'},
)


def _saved(tmp_path: Path, calibration: Calibration = CALIBRATION) -> Path:
    path = tmp_path / "calibration.toml"
    save_calibration(calibration, path)
    return path


def test_egress_is_eight_bits_over_the_cost_of_a_byte() -> None:
    assert CALIBRATION.egress_gbps == pytest.approx(100.0)


def test_save_then_load_gives_the_same_calibration(tmp_path: Path) -> None:
    path = _saved(tmp_path)
    assert load_calibration(path) == CALIBRATION
    assert path.read_text().startswith("# ")
    assert [p.name for p in tmp_path.iterdir()] == ["calibration.toml"]  # no staging file left


def _edit(text: str, key: str, line: str | None) -> str:
    """The file's text with the line of `key` replaced by `line` (None: removed)."""
    lines = text.splitlines()
    index = next(i for i, item in enumerate(lines) if item.startswith(f"{key} ="))
    lines[index : index + 1] = [] if line is None else [line]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("key", "line", "named"),
    [
        ("request_ms", None, "missing key 'request_ms'"),
        ("sale_commit_ms", "sale_commit_ms = -0.5", "sale_commit_ms must be >= 0"),
        ("ns_per_byte", "ns_per_byte = 0", "ns_per_byte must be > 0"),
        ("loopback_rtt_ms", 'loopback_rtt_ms = "fast"', "loopback_rtt_ms must be a finite number"),
        ("request_ms", "request_ms = nan", "request_ms must be a finite number"),
        ("request_ms", "request_ms = 0.1\nrequest_s = 0.1", "unknown key 'request_s'"),
        ("request_ms", "request_ms = [", "is not valid TOML"),
    ],
)
def test_a_bad_file_is_refused_naming_the_key(
    tmp_path: Path, key: str, line: str | None, named: str
) -> None:
    path = _saved(tmp_path)
    path.write_text(_edit(path.read_text(), key, line))
    with pytest.raises(ScenarioError) as caught:
        load_calibration(path)
    assert caught.value.path == "--calibration"
    assert named in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="no such file"):
        load_calibration(tmp_path / "absent.toml")


def test_an_invalid_calibration_is_not_saved(tmp_path: Path) -> None:
    bad = Calibration(0.05, 0.01, -1.0, 0.05, 0.1)
    with pytest.raises(ScenarioError, match="ns_per_byte must be > 0"):
        save_calibration(bad, tmp_path / "c.toml")
    assert list(tmp_path.iterdir()) == []


def _expected(base: Scenario, c: Calibration) -> dict[str, Any]:
    """The base scenario's resolved form with the calibrated values put in by hand."""
    resolved = base.resolved()
    for tier in resolved["tier"]:
        tier.update(
            rtt_ms=c.loopback_rtt_ms, request_ms=c.request_ms, workers=1, egress_gbps=c.egress_gbps
        )
    resolved["audience"]["last_mile_mbps"] = c.egress_gbps * 1000
    resolved["hosts"]["uplink_mbps"] = c.egress_gbps * 1000
    for sale in resolved["sale"]:
        sale.update(
            rtt_ms=c.loopback_rtt_ms,
            backend="hot-row-batch",
            service_ms=c.sale_service_ms,
            commit_ms=c.sale_commit_ms,
        )
    for lottery in resolved["lottery"]:
        lottery["rtt_ms"] = c.loopback_rtt_ms
    if "chat" in resolved:
        resolved["chat"]["rtt_ms"] = c.loopback_rtt_ms
    return resolved


@pytest.mark.parametrize("path", [QUICKSTART, FLASH_SALE], ids=lambda p: p.stem)
def test_overrides_put_the_calibration_in_and_change_nothing_else(path: Path) -> None:
    data = tomllib.loads(path.read_text())
    base = parse_scenario(data)
    calibrated = parse_scenario(data, calibration_overrides(CALIBRATION, base))
    assert calibrated.resolved() == _expected(base, CALIBRATION)
    edge = calibrated.edge_tier()
    assert (edge.workers, edge.egress_gbps) == (1, pytest.approx(100.0))
    assert all(sale.backend == "hot-row-batch" for sale in calibrated.sales)


def test_the_flash_sale_scenario_has_every_calibrated_part() -> None:
    base = parse_scenario(tomllib.loads(FLASH_SALE.read_text()))
    assert base.sales and base.lotteries and base.chat is not None
    assert base.sales[0].backend != "hot-row-batch"


def _run(tmp_path: Path, calibration: Path, *extra: str) -> tuple[int, Path]:
    out = tmp_path / "out"
    args = ["--calibration", str(calibration), "--out", str(out), "--quiet"]
    code = main(["run", str(QUICKSTART), *args, "--set", "scenario.duration_s=20", *extra])
    return code, out


def test_run_applies_the_calibration_after_the_sets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _run(tmp_path, _saved(tmp_path), "--set", "tier.edge.rtt_ms=99")
    assert code in (0, 1)
    resolved = json.loads((out / "result.json").read_text())["resolved"]
    assert resolved["scenario"]["duration_s"] == 20
    assert [t["rtt_ms"] for t in resolved["tier"]] == [0.052, 0.052]
    assert [t["workers"] for t in resolved["tier"]] == [1, 1]
    applied = [line for line in capsys.readouterr().out.splitlines() if "applied" in line]
    assert len(applied) == 1 and "calibration.toml" in applied[0] and "0.0520 ms" in applied[0]


@pytest.mark.parametrize("content", [None, "request_ms = -1\n", "not toml ["])
def test_run_with_a_bad_calibration_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None
) -> None:
    path = tmp_path / "bad.toml"
    if content is not None:
        path.write_text(content)
    code, out = _run(tmp_path, path)
    assert code == 2
    assert not out.exists()
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--calibration" in err


def _children() -> set[int]:
    """Pids of this process's live children (from /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == os.getpid():
                found.add(int(entry.name))
    return found


def _recording(servers: set[int], raise_at: str | None = None) -> Callable[[str], None]:
    """A progress callback that records the live children at each step (and may interrupt)."""
    before = _children()

    def progress(line: str) -> None:
        servers.update(_children() - before)
        if raise_at is not None and line.startswith(raise_at):
            raise KeyboardInterrupt

    return progress


def test_measure_on_the_real_servers_and_stop_them() -> None:
    servers: set[int] = set()
    calibration = measure(duration_s=0.5, progress=_recording(servers))
    assert 0 < calibration.loopback_rtt_ms < 5
    assert 0.001 < calibration.request_ms < 5
    assert calibration.ns_per_byte > 0
    assert 0.001 < calibration.sale_service_ms < 20
    assert calibration.sale_commit_ms >= 0
    assert {"date", "python", "machine", "cpus", "livesim_version"} <= calibration.measured.keys()
    assert len(servers) == 3  # origin, edge, sale
    assert not servers & _children()


def test_an_interrupted_measurement_stops_its_servers() -> None:
    servers: set[int] = set()
    with pytest.raises(KeyboardInterrupt):
        measure(duration_s=0.5, progress=_recording(servers, raise_at="loopback"))
    assert len(servers) == 3
    assert not servers & _children()


def test_an_ingest_key_starting_with_a_dash_starts_the_origin(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(secrets, "token_urlsafe", lambda _n: "-looks-like-an-option")
    servers: set[int] = set()
    with pytest.raises(KeyboardInterrupt):  # stop once all three servers are up
        measure(duration_s=0.5, progress=_recording(servers, raise_at="loopback"))
    assert len(servers) == 3


def test_calibrate_writes_a_file_run_can_use(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "machine.toml"
    assert main(["calibrate", "--duration-s", "0.2", "--out", str(out)]) == 0
    shown = capsys.readouterr()
    assert "ms" in shown.out and "Gbit/s" in shown.out and "wrote" in shown.out
    assert "calibrate:" in shown.err
    assert load_calibration(out).ns_per_byte > 0


@pytest.mark.parametrize(
    ("args", "named"),
    [(["--duration-s", "0"], "--duration-s"), (["--out", "{tmp}/absent/c.toml"], "--out")],
)
def test_calibrate_refuses_bad_arguments_before_starting_anything(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], named: str
) -> None:
    before = _children()
    assert main(["calibrate", *(a.format(tmp=tmp_path) for a in args)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and named in err
    assert _children() == before
