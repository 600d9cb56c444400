"""Every shipped scenario scaled down so the exact engine runs it in seconds: the cases on which
the cohort engine must agree with the exact one (tests/test_cohort_agreement.py)."""

from __future__ import annotations

from pathlib import Path

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"

CASES: dict[str, list[str]] = {
    "quickstart": ["audience.peak_viewers=10000", "tier.1.nodes=40"],
    "hls-classic": ["audience.peak_viewers=10000", "tier.1.nodes=20"],
    "push-flv": ["audience.peak_viewers=8000", "tier.1.nodes=16", "scenario.duration_s=120"],
    "edge-failure": ["audience.peak_viewers=10000", "tier.2.nodes=40", "fault.0.count=10"],
    "flash-sale-backends": ["audience.peak_viewers=10000", "tier.1.nodes=40"],
    "kardashian-launch": [
        "audience.peak_viewers=13000",
        "tier.2.nodes=6",
        "scenario.duration_s=180",
        "audience.ramp_s=60",
        "sale.0.at_s=120",
        "sale.0.stock=150",
    ],
    "li-jiaqi-eyeshadow": [
        "audience.peak_viewers=13000",
        "tier.2.nodes=6",
        "scenario.duration_s=180",
        "audience.ramp_s=60",
        "sale.0.at_s=120",
        "sale.0.stock=60",
    ],
    "singles-day-peak": [
        "audience.peak_viewers=10000",
        "hosts.count=20",
        "tier.2.nodes=20",
        "scenario.duration_s=120",
        "audience.ramp_s=40",
        "sale.0.at_s=80",
        "sale.0.stock=100",
        "fault.0.at_s=60",
        "fault.0.count=2",
        "fault.0.duration_s=20",
    ],
}
"""Scenario name -> the --set overrides that scale it down (viewers per edge kept roughly)."""


def path_of(name: str) -> Path:
    return SCENARIOS / f"{name}.toml"
