"""`livesim run` end to end, as a user runs it: the result.json contract, report, exit codes."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from sim.cli import main

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "scenarios" / "quickstart.toml"

CONTRACT_KEYS = {
    "livesim_version",
    "scenario",
    "engine",
    "seed",
    "replications",
    "sim_time_s",
    "wall_s",
    "platform",
    "resolved",
    "viewers",
    "latency_s",
    "rebuffer_ratio",
    "tiers",
    "sales",
    "economics",
    "slo",
    "ok",
}
H_KEYS = {"p50", "p95", "p99", "max", "mean"}
TIER_KEYS = {"peak_egress_gbps", "peak_utilization", "peak_requests_per_s", "hit_ratio"}


@pytest.fixture(scope="module")
def quickstart_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path, str]:
    out = tmp_path_factory.mktemp("quickstart") / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "sim.cli", "run", str(QUICKSTART), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, out, proc.stdout


def test_result_json_has_every_contract_key(quickstart_run: tuple[int, Path, str]) -> None:
    _, out, _ = quickstart_run
    result = json.loads((out / "result.json").read_text())
    assert CONTRACT_KEYS <= result.keys()
    assert result["scenario"] == "quickstart"
    assert result["engine"] == "exact"
    assert result["viewers"]["peak"] > 2000
    assert result["viewers"]["sessions"] >= result["viewers"]["peak"]
    for kind in ("replay", "join"):
        assert H_KEYS <= result["latency_s"][kind].keys()
    assert set(result["tiers"]) == {"origin", "edge"}
    for tier in result["tiers"].values():
        assert TIER_KEYS <= tier.keys()
    assert {"gmv", "net_gmv", "delivery_cost"} <= result["economics"].keys()
    assert result["economics"]["delivery_cost"] > 0
    assert result["resolved"]["audience"]["peak_viewers"] == 3000
    assert {"python", "system", "machine"} <= result["platform"].keys()
    for slo in result["slo"]:
        assert {"name", "target", "value", "met"} <= slo.keys()
    assert result["ok"] == all(s["met"] for s in result["slo"])


def test_exit_code_reflects_the_slos(quickstart_run: tuple[int, Path, str]) -> None:
    code, out, _ = quickstart_run
    result = json.loads((out / "result.json").read_text())
    assert code == (0 if result["ok"] else 1)


def test_report_and_figures_are_written(quickstart_run: tuple[int, Path, str]) -> None:
    _, out, _ = quickstart_run
    report = (out / "report.md").read_text()
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) >= 3
    for png in pngs:
        assert png.read_bytes().startswith(b"\x89PNG")
        assert png.name in report


def test_summary_is_printed(quickstart_run: tuple[int, Path, str]) -> None:
    code, _, stdout = quickstart_run
    assert "replay" in stdout
    assert ("all SLOs met" in stdout) == (code == 0)


def test_a_missed_slo_exits_1(tmp_path: Path) -> None:
    out = tmp_path / "out"
    code = main(
        [
            "run",
            str(QUICKSTART),
            "--out",
            str(out),
            "--quiet",
            "--set",
            "audience.peak_viewers=200",
            "--set",
            "scenario.duration_s=30",
            "--set",
            "slo.replay_latency_p99_s=0.1",
        ]
    )
    assert code == 1
    result = json.loads((out / "result.json").read_text())
    verdict = {s["name"]: s["met"] for s in result["slo"]}
    assert verdict["replay_latency_p99_s"] is False


def test_webrtc_is_refused_clearly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code = main(["run", str(QUICKSTART), "--out", str(out), "--set", "stream.protocol=webrtc"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "not supported yet" in err and "stream.protocol" in err
    assert len(err.splitlines()) == 1
    assert not out.exists()


def test_forcing_the_exact_engine_on_millions_of_viewers_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "run",
            str(QUICKSTART),
            "--out",
            str(tmp_path / "o"),
            "--engine",
            "exact",
            "--set",
            "audience.peak_viewers=10_000_000",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "--engine" in err and "cohort" in err
    assert not (tmp_path / "o").exists()


def test_auto_runs_the_cohort_engine_above_the_exact_limit(tmp_path: Path) -> None:
    out = tmp_path / "o"
    code = main(
        [
            "run",
            str(QUICKSTART),
            "--out",
            str(out),
            "--set",
            "audience.peak_viewers=1_000_000",
            "--set",
            "tier.1.nodes=1200",
            "--set",
            "scenario.duration_s=60",
        ]
    )
    result = json.loads((out / "result.json").read_text())
    assert code in (0, 1)
    assert result["engine"] == "cohort"
    assert result["viewers"]["peak"] == pytest.approx(1_000_000 * (1 - math.exp(-4)), rel=0.01)
