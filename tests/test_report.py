"""The stdout summary and the Markdown report read a result.json the way a user reads them."""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib import image

from sim.metrics import Histogram
from sim.report import format_summary, write_report

FIGURES = ("replay_latency_cdf.png", "viewers.png", "egress.png", "requests.png")
SLO_NAMES = ("replay_latency_p99_s", "join_time_p95_s", "rebuffer_ratio_max")


def make_result() -> dict[str, Any]:
    """A quickstart-like result: 600 s, one origin and four edges, 5,000 viewers at peak."""
    rng = np.random.default_rng(1)
    replay, join = Histogram(), Histogram()
    replay.record_many(rng.lognormal(np.log(0.9), 0.25, 50_000))
    join.record_many(rng.lognormal(np.log(0.6), 0.5, 6_000))
    t = np.arange(600.0)
    viewers = np.minimum(t / 60.0, 1.0) * 4980.0 * np.exp(-t / 3000.0)
    edge_gbps = viewers * 2.5e6 / 1e9
    origin_gbps = np.where(t > 5, 0.0083, 0.0)
    slo: list[dict[str, Any]] = [
        {"name": "replay_latency_p99_s", "target": 2.0, "value": replay.quantile(0.99)},
        {"name": "join_time_p95_s", "target": 2.0, "value": join.quantile(0.95)},
        {"name": "rebuffer_ratio_max", "target": 0.005, "value": 0.0012},
    ]
    for s in slo:
        s["met"] = s["value"] <= s["target"]
    replay_x, replay_p = replay.cdf()
    join_x, join_p = join.cdf()
    return {
        "livesim_version": "0.1.0",
        "scenario": "quickstart",
        "engine": "exact",
        "seed": 7,
        "replications": 1,
        "sim_time_s": 600.0,
        "wall_s": 3.2,
        "platform": {
            "python": "3.11.7",
            "system": "Linux",
            "machine": "x86_64",
            "simpy": "4.1.1",
            "numpy": "2.4.6",
        },
        "resolved": {
            "scenario": {
                "name": "quickstart",
                "description": "One LL-HLS stream, 5,000 viewers in a flash crowd, 4 edges.",
                "duration_s": 600.0,
                "seed": 7,
            },
            "tier": [
                {"name": "origin", "nodes": 1, "egress_gbps": 10.0},
                {"name": "edge", "nodes": 4, "egress_gbps": 10.0},
            ],
        },
        "viewers": {"peak": 4980, "sessions": 6120},
        "latency_s": {"replay": replay.summary(), "join": join.summary()},
        "rebuffer_ratio": 0.0012,
        "tiers": {
            "origin": {
                "nodes": 1,
                "capacity_gbps": 10.0,
                "peak_egress_gbps": 0.0083,
                "peak_utilization": 0.00083,
                "peak_requests_per_s": 36.0,
                "hit_ratio": 0.0,
                "bytes": 618_750_000,
                "requests": 21_000,
                "fetches": 0,
            },
            "edge": {
                "nodes": 4,
                "capacity_gbps": 40.0,
                "peak_egress_gbps": float(edge_gbps.max()),
                "peak_utilization": 0.33,
                "peak_requests_per_s": 30_100.0,
                "hit_ratio": 0.9993,
                "bytes": int(edge_gbps.sum() * 1e9 / 8),
                "requests": 15_400_000,
                "fetches": 21_000,
            },
        },
        "sales": [],
        "economics": {
            "currency": "CNY",
            "gmv": 0.0,
            "net_gmv": 0.0,
            "orders": 0,
            "delivered_gb": 123.4,
            "delivery_cost": 3.7,
            "host_commission": 0.0,
            "platform_revenue": 0.0,
        },
        "slo": slo,
        "ok": all(s["met"] for s in slo),
        "series": {
            "bin_s": 1.0,
            "t_s": t.tolist(),
            "viewers": viewers.tolist(),
            "egress_gbps": {"origin": origin_gbps.tolist(), "edge": edge_gbps.tolist()},
            "requests_per_s": {
                "origin": np.where(t > 5, 36.0, 0.0).tolist(),
                "edge": (viewers * 6.0).tolist(),
            },
            "rebuffering_s": (viewers * 0.001).tolist(),
        },
        "cdf": {"replay_s": {"x": replay_x, "p": replay_p}, "join_s": {"x": join_x, "p": join_p}},
        "notes": ["exact engine: every viewer simulated"],
    }


def missed(result: dict[str, Any]) -> dict[str, Any]:
    """The same result with the replay SLO tightened below what was measured."""
    out = copy.deepcopy(result)
    out["slo"][0]["target"] = 0.5
    out["slo"][0]["met"] = False
    out["ok"] = False
    return out


def as_loaded_json(result: dict[str, Any]) -> dict[str, Any]:
    """What a user gets back from result.json when nothing was measured: NaN written as null."""
    return json.loads(json.dumps(result).replace("NaN", "null"))


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    out = tmp_path_factory.mktemp("report") / "new" / "dir"
    return out, write_report(make_result(), out)


def test_writes_report_and_figures(written: tuple[Path, list[Path]]) -> None:
    out, paths = written
    assert paths[0] == out / "report.md"
    assert {p.name for p in paths} >= {"report.md", *FIGURES}
    assert all(p.parent == out and p.is_file() for p in paths)


@pytest.mark.parametrize("name", FIGURES)
def test_figures_are_real_pictures(written: tuple[Path, list[Path]], name: str) -> None:
    out, _ = written
    path = out / name
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    pixels = image.imread(path)
    assert pixels.shape[0] >= 300 and pixels.shape[1] >= 500
    # Something is drawn: many distinct colours, not a blank canvas.
    colours = np.unique(pixels.reshape(-1, pixels.shape[-1]).round(2), axis=0)
    assert len(colours) > 20


def test_report_links_every_figure(written: tuple[Path, list[Path]]) -> None:
    out, paths = written
    report = (out / "report.md").read_text()
    links = re.findall(r"!\[[^\]]+\]\(([^)]+)\)", report)
    assert set(FIGURES) <= set(links)
    assert all((out / link).is_file() for link in links)
    assert {p.name for p in paths if p.suffix == ".png"} == set(links)


def test_report_has_provenance_and_tables(written: tuple[Path, list[Path]]) -> None:
    out, _ = written
    report = (out / "report.md").read_text()
    assert report.startswith("# ") and "quickstart" in report.splitlines()[0]
    assert "One LL-HLS stream, 5,000 viewers in a flash crowd, 4 edges." in report
    for text in ("0.1.0", "exact", "| seed | 7 |", "| replications | 1 |", "600.0 s", "3.20 s"):
        assert text in report
    assert "Python 3.11.7" in report and "Linux" in report and "numpy 2.4.6" in report
    for name in SLO_NAMES:
        assert re.search(rf"\| `{name}` \| [^|]+ \| [^|]+ \| met \|", report)
    result = make_result()
    replay = result["latency_s"]["replay"]
    row = next(line for line in report.splitlines() if line.startswith("| replay latency"))
    assert f"{replay['p99']:.3f}" in row and f"{replay['p50']:.3f}" in row
    assert "| join time (s) |" in report
    assert "0.120 %" in report  # rebuffer ratio
    assert "4,980" in report and "6,120" in report
    assert re.search(r"\| origin \| 1 \| 10\.0 \|", report)
    assert re.search(r"\| edge \| 4 \| 40\.0 \|", report)
    assert "99.9 %" in report  # edge hit ratio
    assert "3.70 CNY" in report
    assert "No flash sales" in report
    assert "- exact engine: every viewer simulated" in report
    assert "**verdict: all SLOs met**" in report


def test_report_shows_a_missed_slo_and_sales(tmp_path: Path) -> None:
    result = missed(make_result())
    result["sales"] = [
        {
            "name": "lipstick drop",
            "stock": 15_000,
            "sold": 15_000,
            "oversold": 0,
            "attempts": 80_000,
            "sold_out_after_s": 4.2,
            "peak_orders_per_s": 9_000.0,
            "response_s": {"p50": 0.05, "p95": 0.3, "p99": 0.8, "max": 1.2, "mean": 0.1},
            "fairness": {"gini": 0.12},
        }
    ]
    write_report(result, tmp_path)
    report = (tmp_path / "report.md").read_text()
    assert re.search(r"\| `replay_latency_p99_s` \| 0\.5 \| [^|]+ \| \*\*missed\*\* \|", report)
    assert "**verdict: 1 SLO(s) missed**" in report
    assert re.search(r"\| lipstick drop \| 15,000 \| 15,000 \| 0 \| 80,000 \|", report)
    assert "No flash sales" not in report


def test_same_result_draws_the_same_files(tmp_path: Path) -> None:
    result = make_result()
    first = {p.name: p.read_bytes() for p in write_report(result, tmp_path / "a")}
    second = {p.name: p.read_bytes() for p in write_report(result, tmp_path / "b")}
    assert first == second


def test_a_run_that_measured_nothing_still_reports(tmp_path: Path) -> None:
    result = make_result()
    empty = Histogram().summary()
    result["latency_s"] = {"replay": empty, "join": empty}
    result["slo"][0]["value"] = math.nan
    result["slo"][0]["met"] = False
    result["cdf"] = {"replay_s": {"x": [], "p": []}, "join_s": {"x": [], "p": []}}
    result["series"] = {"bin_s": 1.0, "t_s": [], "viewers": [], "egress_gbps": {}}
    loaded = as_loaded_json(result)
    paths = write_report(loaded, tmp_path)
    assert {p.name for p in paths} >= {"report.md", *FIGURES}
    report = (tmp_path / "report.md").read_text()
    assert re.search(r"\| `replay_latency_p99_s` \| 2 \| n/a \| \*\*missed\*\* \|", report)
    assert "| replay latency (s) | n/a | n/a | n/a | n/a | n/a | 0 |" in report
    summary = format_summary(loaded)
    assert re.search(r"replay latency\s+n/a\s+n/a\s+n/a\s+n/a", summary)
    assert re.search(r"replay_latency_p99_s\s+2\s+n/a\s+MISSED", summary)
    assert summary.splitlines()[-1] == "verdict: 1 SLO(s) missed"


def test_summary_lists_every_slo_and_ends_with_the_verdict() -> None:
    result = make_result()
    summary = format_summary(result)
    lines = summary.splitlines()
    assert lines[-1] == "verdict: all SLOs met"
    for s in result["slo"]:
        line = next(x for x in lines if x.startswith(s["name"]))
        assert line.endswith("MET")
        assert f"{s['target']:.4g}" in line and f"{s['value']:.4g}" in line
    replay = result["latency_s"]["replay"]
    line = next(x for x in lines if x.startswith("replay latency"))
    assert [f"{replay[p]:.3f}" for p in ("p50", "p95", "p99")] == line.split()[2:5]
    join_line = next(x for x in lines if x.startswith("join time"))
    assert f"{result['latency_s']['join']['p95']:.3f}" in join_line
    assert "0.120 %" in summary
    assert "4,980" in summary
    edge = next(x for x in lines if x.startswith("edge "))
    assert "99.9 %" in edge and "33.0 %" in edge

    failed = format_summary(missed(result)).splitlines()
    assert failed[-1] == "verdict: 1 SLO(s) missed"
    assert next(x for x in failed if x.startswith("replay_latency_p99_s")).endswith("MISSED")


def test_summary_columns_are_aligned() -> None:
    lines = format_summary(make_result()).splitlines()
    header = next(i for i, x in enumerate(lines) if x.startswith("SLO "))
    block = lines[header : header + 1 + len(SLO_NAMES)]
    # Right-aligned columns end at the same place on every row.
    for column in ("target", "value", "verdict"):
        end = block[0].index(column) + len(column)
        for row in block[1:]:
            assert row[end - 1] != " " and (end == len(row) or row[end] == " ")
