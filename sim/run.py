"""A run as one pure call: scenario and seed in, result document out (picklable, no globals)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from sim.cohort.model import run_cohort
from sim.errors import ScenarioError
from sim.exact.model import run_exact
from sim.measurements import merge_replications
from sim.results import build_result
from sim.sale.outcomes import run_chat, run_lottery, run_sale, sale_result
from sim.scenario import Scenario

EXACT_VIEWER_LIMIT = 200_000
"""`engine = "auto"` runs the exact engine up to this many peak viewers, the cohort one above."""

EXACT_VIEWER_MAX = 2_000_000
"""Beyond this the exact engine would take hours: forcing it is refused."""

ENGINES = ("auto", "exact", "cohort")


def resolve_engine(scenario: Scenario, requested: str | None) -> str:
    """The engine a run will use: `auto` picks exact up to EXACT_VIEWER_LIMIT, cohort above."""
    engine = requested or scenario.scenario.engine
    path = "--engine" if requested else "scenario.engine"
    if engine not in ENGINES:
        raise ScenarioError(path, f"must be one of {', '.join(ENGINES)}; given {engine!r}")
    peak = scenario.audience.peak_viewers
    if engine == "auto":
        return "exact" if peak <= EXACT_VIEWER_LIMIT else "cohort"
    if engine == "exact" and peak > EXACT_VIEWER_MAX:
        raise ScenarioError(
            path,
            f"the exact engine runs up to {EXACT_VIEWER_MAX:,} peak viewers (one process each); "
            f"{peak:,} needs the cohort engine (--engine cohort or auto)",
        )
    return engine


def replication_seeds(
    seed: int, replications: int
) -> list[tuple[np.random.SeedSequence, np.random.SeedSequence]]:
    """(engine, sales) seeds of each replication: the i-th child of SeedSequence(seed), split."""
    out = []
    for child in np.random.SeedSequence(seed).spawn(replications):
        engine_seed, sale_seed = child.spawn(2)
        out.append((engine_seed, sale_seed))
    return out


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
    runs, sales, lotteries, chats = [], [], [], []
    for i, (engine_seed, sale_seed) in enumerate(replication_seeds(run_seed, replications)):
        step = None if progress is None else _scaled(progress, i, replications)
        run_engine = run_exact if chosen == "exact" else run_cohort
        m = run_engine(scenario, np.random.default_rng(engine_seed), step)
        sale_rng = np.random.default_rng(sale_seed)
        runs.append(m)
        sales.append(
            [
                run_sale(s, a, sale_rng)
                for s, a in zip(scenario.sales, m.sale_audiences, strict=True)
            ]
        )
        lotteries.append(
            [
                run_lottery(lot, a, sale_rng)
                for lot, a in zip(scenario.lotteries, m.lottery_audiences, strict=True)
            ]
        )
        if scenario.chat is not None:
            chats.append(run_chat(scenario.chat, m.replay, m.sim_time_s, sale_rng))
    sale_results = [
        sale_result(sale, [r[k] for r in sales]) for k, sale in enumerate(scenario.sales)
    ]
    notes = [
        f"sale '{s['name']}' ({s['backend']}) oversold {s['oversold']} items: reads and writes "
        "of the stock raced without a lock"
        for s in sale_results
        if s["oversold"] > 0
    ]
    return build_result(
        scenario,
        merge_replications(runs),
        engine=chosen,
        seed=run_seed,
        replications=replications,
        wall_s=time.perf_counter() - started,
        sales=sale_results,
        lotteries=lotteries[0],
        chat=chats[0] if chats else None,
        notes=notes,
    )


def _scaled(progress: Callable[[float], None], i: int, n: int) -> Callable[[float], None]:
    """Progress of replication i of n, reported as a fraction of the whole run."""

    def step(fraction: float) -> None:
        progress((i + fraction) / n)

    return step
