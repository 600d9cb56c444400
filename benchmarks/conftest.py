"""Collects medians across the benchmarks of one session and prints their ratios."""

from __future__ import annotations

from typing import Any

import pytest

RATES: dict[str, float] = {}
"""Throughput (units per wall second, from the benchmark's median) by benchmark name."""


@pytest.fixture
def record_rate() -> Any:
    def record(name: str, units: float, median_s: float) -> None:
        RATES[name] = units / median_s

    return record


def pytest_terminal_summary(terminalreporter: Any) -> None:
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
