"""The cohort engine agrees with the exact engine wherever both can run.

Every shipped scenario, scaled down (tests/agreement_cases.py), and small scenarios drawn by
hypothesis run on both engines with one seed. The engines share the streams' clocks and the
network's round trips for a seed (common random numbers) but draw their audiences
independently, so the bounds leave room for sampling noise at these sizes as well as for the
cohort's approximations.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pytest
from agreement_cases import CASES, SCENARIOS, path_of
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from sim.cohort.model import run_cohort
from sim.exact.model import run_exact
from sim.exact.schedule import unit_layout
from sim.measurements import Measurements, peak_rate, peak_window_s
from sim.metrics import ks_distance
from sim.results import rebuffer_ratio
from sim.sale.outcomes import run_sale, sale_result
from sim.scenario import Scenario, load_scenario

SEED = 3
WARM_UP_S = 10.0
"""Both engines start with empty caches; the first seconds of fetch traffic up the tiers are
a transient the cohort engine gets only in expectation, so peaks are compared after it."""


@cache
def _pair(name: str) -> tuple[Scenario, Measurements, Measurements]:
    scenario = load_scenario(path_of(name), CASES[name])
    exact = run_exact(scenario, np.random.default_rng(SEED))
    cohort = run_cohort(scenario, np.random.default_rng(SEED))
    return scenario, exact, cohort


def _relative(a: float, b: float) -> float:
    return abs(a / b - 1.0)


def _check_latency(exact: Measurements, cohort: Measurements) -> None:
    assert ks_distance(cohort.replay, exact.replay) <= 0.05
    for q in (0.50, 0.99):
        assert _relative(cohort.replay.quantile(q), exact.replay.quantile(q)) <= 0.05, q
    assert _relative(cohort.join.quantile(0.95), exact.join.quantile(0.95)) <= 0.10
    assert abs(rebuffer_ratio(cohort) - rebuffer_ratio(exact)) <= 0.002


def _check_peak_egress(scenario: Scenario, exact: Measurements, cohort: Measurements) -> None:
    window_s = peak_window_s(unit_layout(scenario)[0])
    skip = round(WARM_UP_S / exact.bin_s)
    for e, c in zip(exact.tiers, cohort.tiers, strict=True):
        peak_e = peak_rate(e.egress_bits[skip:], exact.bin_s, window_s)
        peak_c = peak_rate(c.egress_bits[skip:], cohort.bin_s, window_s)
        assert _relative(peak_c, peak_e) <= 0.03, (e.name, peak_c, peak_e)


def test_every_shipped_scenario_has_an_agreement_case() -> None:
    assert {p.stem for p in SCENARIOS.glob("*.toml")} == set(CASES)


@pytest.mark.parametrize("name", list(CASES))
def test_latency_join_and_rebuffering_agree(name: str) -> None:
    _, exact, cohort = _pair(name)
    _check_latency(exact, cohort)


@pytest.mark.parametrize("name", list(CASES))
def test_each_tier_peak_egress_agrees(name: str) -> None:
    scenario, exact, cohort = _pair(name)
    _check_peak_egress(scenario, exact, cohort)


@pytest.mark.parametrize("name", [n for n in CASES if load_scenario(path_of(n)).sales])
def test_flash_sales_agree(name: str) -> None:
    scenario, exact, cohort = _pair(name)
    for k, sale in enumerate(scenario.sales):
        results = [
            sale_result(sale, [run_sale(sale, m.sale_audiences[k], np.random.default_rng(SEED))])
            for m in (exact, cohort)
        ]
        exact_sale, cohort_sale = results
        assert _relative(cohort_sale["sold"], exact_sale["sold"]) <= 0.05
        if exact_sale["sold_out_after_s"] is not None:
            assert cohort_sale["sold_out_after_s"] is not None
            assert (
                _relative(cohort_sale["sold_out_after_s"], exact_sale["sold_out_after_s"]) <= 0.05
            )


@st.composite
def _small_scenarios(draw: st.DrawFn) -> list[str]:
    """quickstart with its protocol, streams, part length and edges drawn (--set overrides).

    Edges carry 300-400 viewers each, at most a fifth of their link, and 1-3 streams: the regime
    docs/cohort.md states the cohort engine is checked in. 11,000-19,000 viewers keep the
    audience's sampling noise well inside the bounds.
    """
    edges = draw(st.integers(36, 48))
    return [
        f"stream.protocol={draw(st.sampled_from(['ll-hls', 'hls', 'http-flv']))}",
        f"stream.part_s={draw(st.sampled_from([0.333, 0.5]))}",
        f"hosts.count={draw(st.sampled_from([1, 2, 3]))}",
        f"tier.1.nodes={edges}",
        f"audience.peak_viewers={edges * draw(st.integers(300, 400))}",
        "scenario.duration_s=120",
        "audience.ramp_s=40",
    ]


@settings(
    max_examples=4,
    derandomize=True,
    deadline=None,
    phases=[Phase.generate],  # each example costs seconds: report it as drawn, unshrunk
    suppress_health_check=[HealthCheck.too_slow],
)
@given(overrides=_small_scenarios())
def test_drawn_small_scenarios_agree(overrides: list[str]) -> None:
    scenario = load_scenario(path_of("quickstart"), overrides)
    exact = run_exact(scenario, np.random.default_rng(SEED))
    cohort = run_cohort(scenario, np.random.default_rng(SEED))
    _check_latency(exact, cohort)
    _check_peak_egress(scenario, exact, cohort)
