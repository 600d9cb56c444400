"""Collects medians across the benchmarks of one session and prints their ratios."""

from __future__ import annotations

from typing import Any

import pytest

RATES: dict[str, float] = {}
"""Throughput (units per wall second, from the benchmark's median) by benchmark name."""

SCALING: dict[str, dict[str, float]] = {}
"""Per scaling run: engine wall time, peak RSS and what it simulated, by label."""


@pytest.fixture
def record_rate() -> Any:
    def record(name: str, units: float, median_s: float) -> None:
        RATES[name] = units / median_s

    return record


@pytest.fixture
def record_scaling() -> Any:
    def record(label: str, figures: dict[str, float]) -> None:
        SCALING[label] = figures

    return record


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if SCALING:
        _scaling_summary(terminalreporter)
    if not RATES:
        return
    terminalreporter.section("throughput (median round)")
    for name, rate in sorted(RATES.items()):
        terminalreporter.write_line(f"{name:<40} {rate:>14,.0f} /s")
    if "exact_engine" in RATES and "minimal_simpy_loop" in RATES:
        ratio = RATES["exact_engine"] / RATES["minimal_simpy_loop"]
        terminalreporter.write_line(
            f"exact engine / minimal SimPy loop: {ratio:.2f}x (target >= 0.5x)"
        )
    if "sale_fast_attempts" in RATES and "sale_reference_attempts" in RATES:
        ratio = RATES["sale_fast_attempts"] / RATES["sale_reference_attempts"]
        terminalreporter.write_line(f"vectorised sale model / SimPy reference: {ratio:.0f}x")
    if "cohort_engine" in RATES and "exact_engine_viewer_parts" in RATES:
        ratio = RATES["cohort_engine"] / RATES["exact_engine_viewer_parts"]
        terminalreporter.write_line(
            f"cohort engine / exact engine (viewer-parts): {ratio:,.0f}x (target >= 1000x)"
        )


def _scaling_summary(terminalreporter: Any) -> None:
    terminalreporter.section("cohort engine scaling (one run each, fresh interpreter)")
    terminalreporter.write_line(
        f"{'run':<32} {'peak viewers':>13} {'engine wall':>12} {'peak RSS':>10} {'run RSS':>10}"
    )
    for label, f in SCALING.items():
        terminalreporter.write_line(
            f"{label:<32} {f['peak_viewers']:>13,.0f} {f['wall_s']:>10.2f} s"
            f" {f['peak_rss_mib']:>6.0f} MiB {f['run_rss_mib']:>6.0f} MiB"
        )
