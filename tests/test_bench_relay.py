"""`livesim bench --compare` on the real relay: the model must predict what the relay does.

Small versions of two shipped scenarios run in real time on loopback (about a minute each):
a flash sale (replay latency, sold-out time, orders, no oversell) and an edge failure (the
rebuffering spike when edge processes are killed and viewers fail over). Each fails when model
and relay disagree beyond the tolerance; a model with a wrong player must disagree.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sim.bench.compare import compare
from sim.bench.scale import scaled
from sim.calibration import calibration_overrides, load_calibration
from sim.cli import main
from sim.run import run_scenario
from sim.scenario import load_scenario, parse_scenario

ROOT = Path(__file__).resolve().parent.parent
FLASH_SALE = ROOT / "scenarios" / "flash-sale-backends.toml"
EDGE_FAILURE = ROOT / "scenarios" / "edge-failure.toml"
SALE_SETS = ["scenario.duration_s=45", "sale.0.at_s=20", "lottery.0.at_s=30"]
FAULT_SETS = ["scenario.duration_s=60", "fault.0.at_s=20", "fault.0.duration_s=20"]


def _sets(items: list[str]) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def _metric(doc: dict[str, Any], name: str) -> dict[str, Any]:
    return next(m for m in doc["metrics"] if m["name"] == name)


@pytest.fixture(scope="module")
def flash_sale(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small flash sale benched and compared, calibrating the machine first (as users do)."""
    out = tmp_path_factory.mktemp("bench") / "flash-sale"
    args = ["bench", str(FLASH_SALE), "--compare", "--scale", "0.2", "--out", str(out)]
    code = main([*args, *_sets(SALE_SETS), "--quiet"])
    assert code in (0, 1), "the bench could not run (exit 2): see its error above"
    return out


def test_the_model_predicts_the_relays_flash_sale(flash_sale: Path) -> None:
    doc = json.loads((flash_sale / "compare.json").read_text())
    measured = json.loads((flash_sale / "result.json").read_text())
    predicted = json.loads((flash_sale / "model" / "result.json").read_text())
    assert measured["engine"] == "relay" and predicted["engine"] == "exact"
    assert measured["viewers"]["peak"] >= 500
    for name in (
        "replay latency p50",
        "replay latency p95",
        "lipstick drop: sold out after",
        "lipstick drop: orders",
    ):
        metric = _metric(doc, name)
        assert metric["ok"], metric
        assert abs(metric["predicted"] - metric["measured"]) <= 0.2 * metric["measured"]
    assert measured["sales"][0]["oversold"] == 0 and predicted["sales"][0]["oversold"] == 0
    assert measured["sales"][0]["sold"] == measured["sales"][0]["stock"] == 60
    assert doc["ok"], (flash_sale / "compare.md").read_text()
    assert (flash_sale / "compare-latency-cdf.png").stat().st_size > 0
    assert (flash_sale / "calibration.toml").exists()


def test_a_model_with_the_wrong_player_disagrees_with_the_relay(flash_sale: Path) -> None:
    measured = json.loads((flash_sale / "result.json").read_text())
    calibration = load_calibration(flash_sale / "calibration.toml")
    small = scaled(load_scenario(FLASH_SALE, SALE_SETS), 0.2)
    # Players that start six parts behind the live edge instead of three.
    wrong = parse_scenario(
        small.resolved(),
        [*calibration_overrides(calibration, small), "player.part_hold_back_parts=6"],
    )
    doc = compare(run_scenario(wrong, engine="exact"), measured)
    assert not doc["ok"]
    assert not _metric(doc, "replay latency p50")["ok"]


def test_the_model_predicts_the_rebuffering_spike_of_an_edge_failure(
    flash_sale: Path, tmp_path: Path
) -> None:
    out = tmp_path / "edge-failure"
    calibration = flash_sale / "calibration.toml"
    args = ["bench", str(EDGE_FAILURE), "--compare", "--scale", "0.25", "--out", str(out)]
    code = main([*args, "--calibration", str(calibration), *_sets(FAULT_SETS), "--quiet"])
    doc = json.loads((out / "compare.json").read_text())
    measured = json.loads((out / "result.json").read_text())
    spike = _metric(doc, "rebuffering peak (10 s)")
    assert spike["measured"] > 5.0, "killing edges must stall their viewers"
    assert abs(spike["predicted"] - spike["measured"]) <= 0.25 * spike["measured"], spike
    assert _metric(doc, "rebuffer ratio")["ok"]
    assert measured["rebuffer_ratio"] > 0
    assert doc["ok"] and code in (0, 1), (out / "compare.md").read_text()
    assert (out / "compare-rebuffering.png").stat().st_size > 0
