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


def response(p50: float, p99: float) -> dict[str, float]:
    return {"p50": p50, "p95": (p50 + p99) / 2, "p99": p99, "max": 2 * p99, "mean": p50, "count": 9}


def interactive(result: dict[str, Any]) -> dict[str, Any]:
    """The result with two flash sales, a lottery and chat, as the lead's result.json has them.

    The naive sale oversold; the queue-token one kept stock and its slowest tenth never bought.
    """
    out = copy.deepcopy(result)
    naive = {
        "name": "lipstick drop",
        "backend": "naive-read-write",
        "price": 99.0,
        "stock": 15_000,
        "buyers": 65_000,
        "orders": 65_000,
        "sold": 15_123,
        "oversold": 123,
        "attempts": 81_234,
        "retries": 16_234,
        "timeouts": 17_000,
        "sold_out_after_s": 4.2,
        "peak_orders_per_s": 9_800.0,
        "response_s": response(0.05, 0.8),
        "gmv": 1_497_177.0,
        "written_after_s": None,
        "decisions": {
            "ordered": 15_123,
            "replayed": 0,
            "sold_out": 49_877,
            "over_limit": 0,
            "moved": 0,
            "timed_out": 17_000,
        },
        "fairness": {
            "success_by_latency_decile": [0.64, 0.55, 0.45, 0.35, 0.3, 0.25, 0.22, 0.2, 0.2, 0.2],
            "latency_decile_edges_s": [0.4, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0, 1.1, 1.3, 2.5],
            "fastest_slowest_ratio": 3.2,
        },
    }
    queued = {
        **copy.deepcopy(naive),
        "name": "eyeshadow",
        "backend": "queue-token",
        "stock": 80_000,
        "sold": 61_000,
        "oversold": 0,
        "sold_out_after_s": None,
        "response_s": response(0.02, 0.3),
        "written_after_s": 45.0,
        "fairness": {
            "success_by_latency_decile": [1.0, 0.98, math.nan, 0.9, 0.85, 0.8, 0.7, 0.5, 0.2, 0.0],
            "latency_decile_edges_s": [0.3, 0.5, 0.6, 0.7, 0.9, 1.2, 1.6, 2.2, 3.0, 4.5, 9.0],
            "fastest_slowest_ratio": None,
        },
    }
    bands = ["< 1 s", "1-2 s", "2-5 s", "5-10 s", "10-30 s", ">= 30 s"]
    entries = [40_000, 30_000, 12_000, 5_000, 2_500, 500]
    valid = [39_000, 27_000, 5_000, 0, 0, 0]
    winners = [55, 38, 7, 0, 0, 0]
    out["sales"] = [naive, queued]
    out["lotteries"] = [
        {
            "name": "lucky draw",
            "at_s": 600.0,
            "window_s": 10.0,
            "winners": 100,
            "entries": sum(entries),
            "valid_entries": sum(valid),
            "by_latency_band": [
                {"band": b, "entries": e, "valid": v, "winners": w}
                for b, e, v, w in zip(bands, entries, valid, winners, strict=True)
            ],
        }
    ]
    out["chat"] = {"questions": 1_800, "question_to_answer_s": response(14.0, 61.5)}
    return as_loaded_json(out)


@pytest.fixture(scope="module")
def busy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("busy")
    write_report(interactive(make_result()), out)
    return out, (out / "report.md").read_text()


def section(report: str, title: str) -> str:
    """The text of one `## title` section, up to the next `## ` heading."""
    start = report.index(f"## {title}\n")
    end = report.find("\n## ", start + 1)
    return report[start : None if end < 0 else end]


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
    for title in ("Flash sales", "Lotteries", "Chat"):
        assert f"## {title}" not in report
    assert not (out / "sale_fairness.png").exists()
    assert "- exact engine: every viewer simulated" in report
    assert "**verdict: all SLOs met**" in report


def test_report_shows_a_missed_slo(tmp_path: Path) -> None:
    write_report(missed(make_result()), tmp_path)
    report = (tmp_path / "report.md").read_text()
    assert re.search(r"\| `replay_latency_p99_s` \| 0\.5 \| [^|]+ \| \*\*missed\*\* \|", report)
    assert "**verdict: 1 SLO(s) missed**" in report


def test_sections_follow_the_economics_in_order(busy: tuple[Path, str]) -> None:
    _, report = busy
    heads = [line for line in report.splitlines() if line.startswith("## ")]
    assert heads[-4:] == ["## Flash sales", "## Lotteries", "## Chat", "## Notes"]
    assert heads.index("## Economics") < heads.index("## Flash sales")


def test_each_sale_has_its_table(busy: tuple[Path, str]) -> None:
    _, report = busy
    sales = section(report, "Flash sales")
    lipstick, eyeshadow = sales.split("### Sale: ")[1:]
    assert lipstick.startswith("lipstick drop")
    for row in (
        "| backend | `naive-read-write` |",
        "| stock | 15,000 |",
        "| sold | 15,123 |",
        "| oversold | 123 |",
        "| buyers | 65,000 |",
        "| attempts | 81,234 |",
        "| retries | 16,234 |",
        "| timeouts | 17,000 |",
        "| sold out after (from the announcement) | 4.20 s |",
        "| peak orders/s | 9,800 |",
        "| response p50 (s) | 0.050 |",
        "| response p95 (s) | 0.425 |",
        "| response p99 (s) | 0.800 |",
        "| GMV | 1,497,177.00 CNY |",
        "| ordered | replayed | sold out | over limit | moved | timed out |",
        "| 15,123 | 0 | 49,877 | 0 | 0 | 17,000 |",
    ):
        assert row in lipstick, row
    assert "durably written" not in lipstick
    assert eyeshadow.startswith("eyeshadow")
    assert "| sold out after (from the announcement) | not sold out (19,000 left) |" in eyeshadow
    assert "| last order durably written after | 45.00 s |" in eyeshadow
    assert "| response p99 (s) | 0.300 |" in eyeshadow


def test_fairness_by_latency_decile(busy: tuple[Path, str]) -> None:
    _, report = busy
    lipstick, eyeshadow = section(report, "Flash sales").split("### Sale: ")[1:]
    assert "| 1 (fastest) | 0.40-0.60 | 64.0 % |" in lipstick
    assert "| 10 (slowest) | 1.30-2.50 | 20.0 % |" in lipstick
    assert len(re.findall(r"^\| \d+( \(\w+\))? \| [\d.]+-[\d.]+ \| ", lipstick, re.M)) == 10
    assert (
        "buyers in the fastest tenth were 3.2 x as likely to get one as the slowest tenth"
        in lipstick.lower()
    )
    # A decile no buyer fell in (NaN, null in JSON) and a slowest tenth that never bought.
    assert "| 3 | 0.60-0.70 | n/a |" in eyeshadow
    assert "| 10 (slowest) | 4.50-9.00 | 0.0 % |" in eyeshadow
    assert "as likely" not in eyeshadow
    assert "the slowest tenth never did" in eyeshadow


def test_oversell_warning_only_when_oversold(tmp_path: Path) -> None:
    result = interactive(make_result())
    write_report(result, tmp_path / "over")
    report = (tmp_path / "over" / "report.md").read_text()
    warnings = [line for line in report.splitlines() if "Warning" in line]
    assert len(warnings) == 1
    assert "oversold 123 items" in warnings[0] and "naive-read-write" in warnings[0]
    assert warnings[0] in section(report, "Flash sales").split("### Sale: ")[1]

    result["sales"][0]["sold"], result["sales"][0]["oversold"] = 15_000, 0
    write_report(result, tmp_path / "exact")
    assert "Warning" not in (tmp_path / "exact" / "report.md").read_text()


def test_fairness_figure_is_linked_and_drawn(busy: tuple[Path, str]) -> None:
    out, report = busy
    assert "(sale_fairness.png)" in section(report, "Flash sales")
    links = re.findall(r"!\[[^\]]+\]\(([^)]+)\)", report)
    assert {p.name for p in out.glob("*.png")} == set(links)
    path = out / "sale_fairness.png"
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    pixels = image.imread(path)
    assert pixels.shape[0] >= 300 and pixels.shape[1] >= 500
    colours = np.unique(pixels.reshape(-1, pixels.shape[-1]).round(2), axis=0)
    assert len(colours) > 20


def test_lottery_table_by_latency_band(busy: tuple[Path, str]) -> None:
    _, report = busy
    lotteries = section(report, "Lotteries")
    assert "### Lottery: lucky draw" in lotteries
    assert "| replay latency | entries | valid | valid share | winners |" in lotteries
    assert "| < 1 s | 40,000 | 39,000 | 97.5 % | 55 |" in lotteries
    assert "| 5-10 s | 5,000 | 0 | 0.0 % | 0 |" in lotteries
    assert "| >= 30 s | 500 | 0 | 0.0 % | 0 |" in lotteries
    assert "| total | 90,000 | 71,000 | 78.9 % | 100 |" in lotteries


def test_chat_section(busy: tuple[Path, str]) -> None:
    _, report = busy
    chat = section(report, "Chat")
    assert "questions: 1,800" in chat
    assert "question-to-answer time = chat path + host delay + replay latency" in chat
    assert "| question to answer (s) | 14.000 | 37.750 | 61.500 |" in chat


def test_summary_has_a_line_per_sale_and_lottery_and_chat() -> None:
    lines = format_summary(interactive(make_result())).splitlines()
    assert (
        "sale lipstick drop (naive-read-write): sold 15,123/15,000, sold out after 4.20 s, "
        "response p99 0.800 s, oversold 123"
    ) in lines
    assert (
        "sale eyeshadow (queue-token): sold 61,000/80,000, stock left, "
        "response p99 0.300 s, oversold 0"
    ) in lines
    assert "lottery lucky draw: valid entries 71,000/90,000, winners 100" in lines
    assert "chat: 1,800 questions, question-to-answer p95 37.750 s" in lines
    assert lines[-1] == "verdict: all SLOs met"


def test_summary_without_sales_lotteries_or_chat() -> None:
    result = make_result()
    result["lotteries"], result["chat"] = [], None
    summary = format_summary(result)
    assert not re.search(r"^(sale|lottery|chat)\b", summary, re.M)


def test_same_result_draws_the_same_files(tmp_path: Path) -> None:
    result = interactive(make_result())
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
