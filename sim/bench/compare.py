"""Predicted against measured: the model's result.json held to the relay's, metric by metric.

Each metric agrees when |predicted - measured| <= max(relative tolerance x |measured|, absolute
floor): the floor keeps timings of a few milliseconds on loopback from failing on noise that no
capacity plan would notice. The replay-latency distributions are compared whole by their
Kolmogorov-Smirnov distance (largest gap between the two CDFs).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

TOLERANCE = 0.20
"""Default relative tolerance of every metric."""
REBUFFER_TOLERANCE = 0.25
"""Rebuffering (the fault's spike) is compared at 25 %."""
KS_MAX = 0.25
"""Largest Kolmogorov-Smirnov distance between the replay-latency CDFs that still agrees."""
SPIKE_WINDOW_S = 10.0

Doc = dict[str, Any]
Getter = tuple[str | int, ...] | Callable[[Doc], float]
"""A metric's path in result.json, or a function of the document."""


@dataclass(frozen=True)
class Metric:
    name: str
    unit: str
    predicted: float | None
    measured: float | None
    tolerance: float
    """Relative."""
    floor: float
    """Absolute, in the metric's unit."""

    @property
    def error(self) -> float | None:
        """(predicted - measured) / measured; None when either is missing or measured is 0."""
        if self.predicted is None or self.measured is None or self.measured == 0:
            return None
        return (self.predicted - self.measured) / abs(self.measured)

    @property
    def ok(self) -> bool:
        if self.predicted is None or self.measured is None:
            return self.predicted is None and self.measured is None
        allowed = max(self.tolerance * abs(self.measured), self.floor)
        return abs(self.predicted - self.measured) <= allowed + 1e-12

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "unit": self.unit,
            "predicted": self.predicted,
            "measured": self.measured,
            "error": self.error,
            "tolerance": self.tolerance,
            "floor": self.floor,
            "ok": self.ok,
        }


def _get(doc: Doc, *path: str | int) -> float | None:
    value: Any = doc
    for key in path:
        try:
            value = value[key]
        except (KeyError, IndexError, TypeError):
            return None
    if value is None:
        return None
    number = float(value)
    return None if math.isnan(number) else number


def rebuffer_spike(doc: Doc) -> float:
    """Highest rebuffering rate (viewer-seconds stalled per second) over any 10 s window."""
    series = doc["series"]
    stalls = np.asarray(series["rebuffering_s"], dtype=float)
    n = max(1, min(stalls.size, round(SPIKE_WINDOW_S / series["bin_s"])))
    if stalls.size == 0:
        return 0.0
    return float(np.convolve(stalls, np.ones(n), mode="valid").max() / (n * series["bin_s"]))


def ks_distance(predicted: Doc, measured: Doc, name: str = "replay_s") -> float:
    """Largest gap between two results' CDFs (each a step function through its points)."""
    a, b = predicted["cdf"][name], measured["cdf"][name]
    if not a["x"] or not b["x"]:
        return 1.0
    grid = np.union1d(a["x"], b["x"])
    return float(np.max(np.abs(_step(a, grid) - _step(b, grid))))


def _step(cdf: dict[str, list[float]], grid: np.ndarray) -> np.ndarray:
    x, p = np.asarray(cdf["x"]), np.asarray(cdf["p"])
    at = np.searchsorted(x, grid, side="right") - 1
    return np.where(at >= 0, p[np.clip(at, 0, None)], 0.0)


def metrics(predicted: Doc, measured: Doc, tolerance: float = TOLERANCE) -> list[Metric]:
    """Every metric both worlds report, with its tolerance."""
    rows: list[Metric] = []

    def add(name: str, unit: str, get: Getter, tol: float, floor: float) -> None:
        rows.append(Metric(name, unit, _value(predicted, get), _value(measured, get), tol, floor))

    for q in ("p50", "p95", "p99"):
        add(f"replay latency {q}", "s", ("latency_s", "replay", q), tolerance, 0.05)
    add("join time p95", "s", ("latency_s", "join", "p95"), tolerance, 0.05)
    add("rebuffer ratio", "", ("rebuffer_ratio",), REBUFFER_TOLERANCE, 0.001)
    add("rebuffering peak (10 s)", "viewer-s/s", rebuffer_spike, REBUFFER_TOLERANCE, 0.5)
    tiers = list(measured["tiers"])
    add(
        "edge requests/s (peak)", "1/s", ("tiers", tiers[-1], "peak_requests_per_s"), tolerance, 5.0
    )
    if len(tiers) > 1:
        add("origin fetches", "", ("tiers", tiers[1], "fetches"), tolerance, 5.0)
    for k, sale in enumerate(measured["sales"]):
        label = sale["name"]
        add(f"{label}: sold out after", "s", ("sales", k, "sold_out_after_s"), tolerance, 0.1)
        add(f"{label}: orders", "", ("sales", k, "sold"), tolerance, 1.0)
        add(f"{label}: response p99", "s", ("sales", k, "response_s", "p99"), tolerance, 0.05)
        add(f"{label}: oversold", "", ("sales", k, "oversold"), 0.0, 0.0)
    return rows


def _value(doc: Doc, get: Getter) -> float | None:
    return get(doc) if callable(get) else _get(doc, *get)


def compare(predicted: Doc, measured: Doc, tolerance: float = TOLERANCE) -> Doc:
    """The comparison document: every metric, the KS distance, and whether all agree."""
    rows = metrics(predicted, measured, tolerance)
    ks = ks_distance(predicted, measured)
    oversold = [m for m in rows if m.name.endswith("oversold")]
    return {
        "scenario": measured["scenario"],
        "metrics": [m.to_dict() for m in rows],
        "ks_replay": ks,
        "ks_max": KS_MAX,
        "ok": all(m.ok for m in rows) and ks <= KS_MAX and all(m.measured == 0 for m in oversold),
    }


def render_table(doc: Doc) -> str:
    """A Markdown table of a comparison."""
    lines = [
        "| metric | predicted | measured | error | tolerance | agrees |",
        "|---|---:|---:|---:|---:|:---:|",
    ]
    for m in doc["metrics"]:
        unit = f" {m['unit']}" if m["unit"] else ""
        error = "" if m["error"] is None else f"{m['error']:+.1%}"
        allowed = f"{m['tolerance']:.0%} or {_num(m['floor'])}{unit}"
        lines.append(
            f"| {m['name']} | {_num(m['predicted'])}{unit} | {_num(m['measured'])}{unit} | "
            f"{error} | {allowed} | {'yes' if m['ok'] else '**no**'} |"
        )
    ks_ok = doc["ks_replay"] <= doc["ks_max"]
    lines.append(
        f"| KS distance, replay latency | | {doc['ks_replay']:.3f} | | <= {doc['ks_max']} | "
        f"{'yes' if ks_ok else '**no**'} |"
    )
    return "\n".join(lines) + "\n"


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0 or abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def plot_latency_cdfs(predicted: Doc, measured: Doc, path: Path) -> None:
    """Both replay-latency CDFs on one figure."""
    fig = Figure(figsize=(6.4, 4.0))
    ax = fig.subplots()
    for doc, label, style in ((predicted, "model", "--"), (measured, "relay", "-")):
        cdf = doc["cdf"]["replay_s"]
        ax.step(cdf["x"], cdf["p"], style, where="post", label=label)
    ax.set_xlabel("replay latency (s)")
    ax.set_ylabel("share of media played")
    _finish(fig, f"{measured['scenario']}: replay latency, model vs relay", path)


def plot_rebuffering(predicted: Doc, measured: Doc, path: Path) -> None:
    """Rebuffering over time in both worlds."""
    fig = Figure(figsize=(6.4, 3.6))
    ax = fig.subplots()
    for doc, label, style in ((predicted, "model", "--"), (measured, "relay", "-")):
        series = doc["series"]
        rate = np.asarray(series["rebuffering_s"], dtype=float) / series["bin_s"]
        ax.plot(series["t_s"], rate, style, label=label)
    faults = measured["resolved"].get("fault", [])
    if faults:  # around the faults, where the stalls are
        start_s = min(f["at_s"] for f in faults)
        end_s = max(f["at_s"] + f["duration_s"] for f in faults)
        ax.set_xlim(max(0.0, start_s - 10.0), end_s + 10.0)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("stalled viewers")
    _finish(fig, f"{measured['scenario']}: rebuffering, model vs relay", path)


def _finish(fig: Figure, title: str, path: Path) -> None:
    ax = fig.axes[0]
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110, metadata={"Software": None})
