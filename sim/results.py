"""Result: the result.json contract, SLO verdicts and provenance."""

from __future__ import annotations

import platform
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import numpy as np

from sim.exact.schedule import unit_layout
from sim.measurements import Measurements, peak_rate, peak_window_s
from sim.scenario import Scenario

_CDF_POINTS = 200


@dataclass(frozen=True)
class SloVerdict:
    name: str
    target: float
    value: float
    met: bool

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "target": self.target, "value": self.value, "met": self.met}


def livesim_version() -> str:
    try:
        return metadata.version("livesim")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def platform_info() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "system": platform.system(),
        "machine": platform.machine(),
        "simpy": metadata.version("simpy"),
        "numpy": np.__version__,
    }


def rebuffer_ratio(m: Measurements) -> float:
    total = m.watched_s + m.stall_s
    return m.stall_s / total if total > 0 else 0.0


def evaluate_slos(
    scenario: Scenario, m: Measurements, sales: list[dict[str, Any]]
) -> list[SloVerdict]:
    """Each SLO target the scenario sets, against the measured value (<= target is met)."""
    slo = scenario.slo
    checks: list[tuple[str, float | None, float | None]] = [
        ("replay_latency_p99_s", slo.replay_latency_p99_s, m.replay.quantile(0.99)),
        ("join_time_p95_s", slo.join_time_p95_s, m.join.quantile(0.95)),
        ("rebuffer_ratio_max", slo.rebuffer_ratio_max, rebuffer_ratio(m)),
    ]
    if sales:
        checks.append(
            (
                "sale_response_p99_s",
                slo.sale_response_p99_s,
                max(s["response_s"]["p99"] for s in sales),
            )
        )
        checks.append(("oversell_max", slo.oversell_max, max(s["oversold"] for s in sales)))
    verdicts = []
    for name, target, value in checks:
        if target is None:
            continue
        if value is None or np.isnan(value):
            # Nothing was measured (no viewer got to play): the target cannot be shown to hold.
            verdicts.append(SloVerdict(name, float(target), float("nan"), False))
            continue
        verdicts.append(SloVerdict(name, float(target), float(value), bool(value <= target)))
    return verdicts


def _tiers(scenario: Scenario, m: Measurements) -> dict[str, dict[str, Any]]:
    window_s = peak_window_s(unit_layout(scenario)[0])
    out = {}
    for t in m.tiers:
        out[t.name] = {
            "nodes": t.nodes,
            "capacity_gbps": t.capacity_gbps,
            "peak_egress_gbps": peak_rate(t.egress_bits, m.bin_s, window_s) / 1e9,
            "peak_utilization": t.peak_node_utilization,
            "peak_requests_per_s": peak_rate(t.requests, m.bin_s, window_s),
            # Offload: requests answered without an upstream fetch of their own (cache hits and
            # requests coalesced onto a fetch already in flight).
            "hit_ratio": 1.0 - t.fetches / t.cache_requests if t.cache_requests else 0.0,
            "bytes": int(t.egress_bits.sum() / 8),
            "requests": int(t.requests.sum()),
            "fetches": t.fetches,
        }
    return out


def _economics(scenario: Scenario, m: Measurements, sales: list[dict[str, Any]]) -> dict[str, Any]:
    econ = scenario.economics
    gmv = float(sum(s.get("gmv", 0.0) for s in sales))
    orders = int(sum(s.get("sold", 0) for s in sales))
    net_gmv = gmv * (1.0 - econ.return_rate)
    # Viewers are served by the last tier: that is what the CDN bills.
    delivered_gb = m.tiers[-1].egress_bits.sum() / 8 / 1e9 if m.tiers else 0.0
    return {
        "currency": econ.currency,
        "gmv": gmv,
        "net_gmv": net_gmv,
        "orders": orders,
        "delivered_gb": float(delivered_gb),
        "delivery_cost": float(delivered_gb * econ.cdn_cost_per_gb),
        "host_commission": net_gmv * econ.host_commission,
        "platform_revenue": net_gmv * econ.platform_take,
    }


def _cdf(m: Measurements) -> dict[str, dict[str, list[float]]]:
    out = {}
    for name, hist in (("replay_s", m.replay), ("join_s", m.join)):
        x, p = hist.cdf(_CDF_POINTS)
        out[name] = {"x": [float(v) for v in x], "p": [float(v) for v in p]}
    return out


def _series(m: Measurements) -> dict[str, Any]:
    n = m.viewers.size
    return {
        "bin_s": m.bin_s,
        "t_s": [round(i * m.bin_s, 6) for i in range(n)],
        "viewers": [float(v) for v in m.viewers],
        "rebuffering_s": [float(v) for v in m.rebuffer_s],
        "egress_gbps": {t.name: [float(v) for v in t.egress_bits / m.bin_s / 1e9] for t in m.tiers},
        "requests_per_s": {t.name: [float(v) for v in t.requests / m.bin_s] for t in m.tiers},
    }


def build_result(
    scenario: Scenario,
    m: Measurements,
    *,
    engine: str,
    seed: int,
    replications: int,
    wall_s: float,
    sales: list[dict[str, Any]] | None = None,
    lotteries: list[dict[str, Any]] | None = None,
    chat: dict[str, Any] | None = None,
    notes: list[str] | None = None,
) -> dict[str, Any]:
    """The result.json document (DESIGN.md contract), with provenance."""
    sales = sales or []
    verdicts = evaluate_slos(scenario, m, sales)
    return {
        "livesim_version": livesim_version(),
        "scenario": scenario.scenario.name,
        "engine": engine,
        "seed": seed,
        "replications": replications,
        "sim_time_s": m.sim_time_s,
        "wall_s": wall_s,
        "platform": platform_info(),
        "resolved": scenario.resolved(),
        "viewers": {"peak": m.peak_viewers, "sessions": m.sessions},
        "latency_s": {"replay": m.replay.summary(), "join": m.join.summary()},
        "rebuffer_ratio": rebuffer_ratio(m),
        "tiers": _tiers(scenario, m),
        "sales": sales,
        "lotteries": lotteries or [],
        "chat": chat,
        "economics": _economics(scenario, m, sales),
        "slo": [v.to_dict() for v in verdicts],
        "ok": all(v.met for v in verdicts),
        "series": _series(m),
        "cdf": _cdf(m),
        "notes": notes or [],
    }
