"""The scenario's discrete events, started the same way by both engines."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import numpy as np
import simpy

from sim.scenario import Scenario

Process = Generator[simpy.Event, Any, None]


def start_scenario_events(
    env: simpy.Environment,
    scenario: Scenario,
    fault: Callable[[int], Process],
    announce: Callable[[float, list[np.ndarray]], Process],
    sale_audiences: list[np.ndarray],
    lottery_audiences: list[np.ndarray],
) -> None:
    """Start each fault's process and, at every sale and lottery announcement, the engine's
    snapshot of the playing viewers' replay latencies (in scenario order)."""
    for index in range(len(scenario.faults)):
        env.process(fault(index))
    for sale in scenario.sales:
        env.process(announce(sale.at_s, sale_audiences))
    for lottery in scenario.lotteries:
        env.process(announce(lottery.at_s, lottery_audiences))
