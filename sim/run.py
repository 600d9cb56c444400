"""A run as one pure call: scenario and seed in, result document out (picklable, no globals)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from sim.errors import ScenarioError
from sim.exact.model import run_exact
from sim.measurements import merge_replications
from sim.results import build_result
from sim.scenario import Scenario

EXACT_VIEWER_LIMIT = 200_000
"""`engine = "auto"` runs the exact engine up to this many peak viewers."""

ENGINES = ("auto", "exact", "cohort")


def resolve_engine(scenario: Scenario, requested: str | None) -> str:
    """The engine a run will use; ScenarioError when none can run it."""
    engine = requested or scenario.scenario.engine
    path = "--engine" if requested else "scenario.engine"
    if engine not in ENGINES:
        raise ScenarioError(path, f"must be one of {', '.join(ENGINES)}; given {engine!r}")
    if engine == "cohort":
        raise ScenarioError(
            path, "the cohort engine is not available in this version; use exact or auto"
        )
    peak = scenario.audience.peak_viewers
    if engine == "auto" and peak > EXACT_VIEWER_LIMIT:
        raise ScenarioError(
            "audience.peak_viewers",
            f"{peak:,} viewers need the cohort engine, which this version does not have; "
            f"engine=auto runs the exact engine up to {EXACT_VIEWER_LIMIT:,} "
            "(force it with --engine exact, or scale down with --set audience.peak_viewers=N)",
        )
    return "exact"


def run_scenario(
    scenario: Scenario,
    *,
    engine: str | None = None,
    seed: int | None = None,
    replications: int = 1,
    progress: Callable[[float], None] | None = None,
) -> dict[str, Any]:
    """Run `replications` independent replications and return the result.json document.

    Replication i draws from the i-th child of SeedSequence(seed), so replications are
    independent streams and any one of them can be re-run on its own.
    """
    if replications < 1:
        raise ScenarioError("--replications", f"must be an integer >= 1; given {replications}")
    chosen = resolve_engine(scenario, engine)
    run_seed = scenario.scenario.seed if seed is None else seed
    if run_seed < 0:
        raise ScenarioError("--seed", f"must be an integer >= 0; given {run_seed}")
    started = time.perf_counter()
    children = np.random.SeedSequence(run_seed).spawn(replications)
    runs = []
    for i, child in enumerate(children):
        step = None if progress is None else _scaled(progress, i, replications)
        runs.append(run_exact(scenario, np.random.default_rng(child), step))
    notes = []
    if scenario.sales:
        notes.append(
            f"{len(scenario.sales)} [[sale]] table(s) validated but not simulated: "
            "flash-sale contention is not modelled by this version"
        )
    return build_result(
        scenario,
        merge_replications(runs),
        engine=chosen,
        seed=run_seed,
        replications=replications,
        wall_s=time.perf_counter() - started,
        notes=notes,
    )


def _scaled(progress: Callable[[float], None], i: int, n: int) -> Callable[[float], None]:
    """Progress of replication i of n, reported as a fraction of the whole run."""

    def step(fraction: float) -> None:
        progress((i + fraction) / n)

    return step
