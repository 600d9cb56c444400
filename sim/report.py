"""The stdout summary and the Markdown report (with figures) of one run's result.

Both read the result.json document, as built or as loaded back: a measurement that is missing,
None or NaN shows as "n/a". Figures are drawn on matplotlib `Figure` objects with the Agg canvas,
never through pyplot, so no global backend is switched and nothing is left open.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

NA = "n/a"
LATENCY_KINDS = (("replay", "replay latency"), ("join", "join time"))
FIGURES = {
    "replay_latency_cdf.png": "Replay latency and join time, cumulative distribution",
    "viewers.png": "Viewers watching over time",
    "egress.png": "Egress per tier over time, with each tier's capacity dashed",
    "requests.png": "Requests per second per tier over time",
    "rebuffering.png": "Viewer-seconds spent rebuffering per time bin",
    "sale_fairness.png": "Share of buyers who got an order, by replay-latency decile",
}
_DPI = 100
_SIZE_IN = (8.0, 4.5)
_LOG_SPAN = 100.0
"""Plot on a log axis when the largest positive value is this many times the smallest."""


# -- formatting ------------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    """A finite float, or None for missing / None / NaN / infinite / non-numeric values."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _fmt(value: Any, spec: str = ".3f", suffix: str = "") -> str:
    x = _number(value)
    return NA if x is None else f"{x:{spec}}{suffix}"


def _sig(value: Any, digits: int = 3) -> str:
    """About `digits` significant figures, never in exponent notation: 0.00830, 12.2, 25,000."""
    x = _number(value)
    if x is None:
        return NA
    magnitude = math.floor(math.log10(abs(x))) + 1 if x else 1
    return f"{x:,.{max(0, digits - magnitude)}f}"


def _pct(value: Any, digits: int = 2) -> str:
    x = _number(value)
    return NA if x is None else f"{100.0 * x:.{digits}f} %"


def _count(value: Any) -> str:
    x = _number(value)
    return NA if x is None else f"{round(x):,}"


def _get(mapping: Any, *keys: str) -> Any:
    """mapping[k1][k2]..., or None when any level is missing."""
    for key in keys:
        if not isinstance(mapping, Mapping) or key not in mapping:
            return None
        mapping = mapping[key]
    return mapping


def _slos(result: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [s for s in result.get("slo") or [] if isinstance(s, Mapping)]


def _tiers(result: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    tiers = result.get("tiers") or {}
    return [(str(name), t) for name, t in tiers.items() if isinstance(t, Mapping)]


def _sales(result: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [s for s in result.get("sales") or [] if isinstance(s, Mapping)]


def _stats(summary: Any, keys: Sequence[str]) -> list[str]:
    """Histogram summary cells; n/a throughout when it holds no samples."""
    if _get(summary, "count") == 0:
        return [NA] * len(keys)
    return [_fmt(_get(summary, k)) for k in keys]


def verdict_line(result: Mapping[str, Any]) -> str:
    """`verdict: all SLOs met` or `verdict: N SLO(s) missed`."""
    missed = sum(1 for s in _slos(result) if s.get("met") is not True)
    return "verdict: all SLOs met" if missed == 0 else f"verdict: {missed} SLO(s) missed"


def _met(slo: Mapping[str, Any]) -> str:
    return "MET" if slo.get("met") is True else "MISSED"


def _align(rows: Sequence[Sequence[str]]) -> list[str]:
    """Plain-text columns: the first left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


# -- stdout summary --------------------------------------------------------------------------


def _sale_line(sale: Mapping[str, Any]) -> str:
    sold_out = sale.get("sold_out_after_s")
    ended = "stock left" if sold_out is None else f"sold out after {_fmt(sold_out, ',.2f')} s"
    return (
        f"sale {sale.get('name', '?')} ({sale.get('backend', '?')}): "
        f"sold {_count(sale.get('sold'))}/{_count(sale.get('stock'))}, {ended}, "
        f"response p99 {_stats(sale.get('response_s'), ('p99',))[0]} s, "
        f"oversold {_count(sale.get('oversold'))}"
    )


def _interactive_lines(result: Mapping[str, Any]) -> list[str]:
    """One line per sale and per lottery, then the chat line when there is chat."""
    lines = [_sale_line(s) for s in _sales(result)]
    lines += [
        f"lottery {lot.get('name', '?')}: valid entries {_count(lot.get('valid_entries'))}"
        f"/{_count(lot.get('entries'))}, winners {_count(lot.get('winners'))}"
        for lot in _lotteries(result)
    ]
    chat = _chat(result)
    if chat is not None:
        p95 = _stats(chat.get("question_to_answer_s"), ("p95",))[0]
        lines.append(
            f"chat: {_count(chat.get('questions'))} questions, question-to-answer p95 {p95} s"
        )
    return lines


def format_summary(result: Mapping[str, Any]) -> str:
    """The aligned plain-text table printed on stdout after a run; the last line is the verdict."""
    lines = [
        f"livesim {result.get('scenario', '?')}: engine {result.get('engine', '?')}, "
        f"seed {result.get('seed', '?')}, replications {result.get('replications', '?')}, "
        f"{_fmt(result.get('sim_time_s'), '.0f')} s "
        f"{'measured' if result.get('engine') == 'relay' else 'simulated'} in "
        f"{_fmt(result.get('wall_s'), '.1f')} s",
        "",
    ]
    latency = [["latency (s)", "p50", "p95", "p99", "max"]]
    for key, label in LATENCY_KINDS:
        h = _get(result, "latency_s", key)
        latency.append([label, *_stats(h, ("p50", "p95", "p99", "max"))])
    lines += _align(latency)
    viewers = result.get("viewers") or {}
    lines += [
        "",
        f"rebuffer ratio  {_pct(result.get('rebuffer_ratio'), 3)}",
        f"viewers         peak {_count(viewers.get('peak'))}, "
        f"sessions {_count(viewers.get('sessions'))}",
    ]
    tiers = _tiers(result)
    if tiers:
        rows = [["tier", "nodes", "peak egress Gbit/s", "peak util", "peak req/s", "hit ratio"]]
        for name, t in tiers:
            rows.append(
                [
                    name,
                    _count(t.get("nodes")),
                    _sig(t.get("peak_egress_gbps")),
                    _pct(t.get("peak_utilization"), 1),
                    _fmt(t.get("peak_requests_per_s"), ",.0f"),
                    _pct(t.get("hit_ratio"), 1),
                ]
            )
        lines += ["", *_align(rows)]
    interactive = _interactive_lines(result)
    if interactive:
        lines += ["", *interactive]
    slos = _slos(result)
    if slos:
        rows = [["SLO", "target", "value", "verdict"]]
        for s in slos:
            rows.append(
                [
                    str(s.get("name", "?")),
                    _fmt(s.get("target"), ".4g"),
                    _fmt(s.get("value"), ".4g"),
                    _met(s),
                ]
            )
        lines += ["", *_align(rows)]
    lines += ["", verdict_line(result)]
    return "\n".join(lines)


# -- Markdown --------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: str = "") -> list[str]:
    """A Markdown table; `align` gives one of l/r per column (default: first l, rest r)."""
    align = align or "l" + "r" * (len(header) - 1)
    rule = ["---:" if a == "r" else "---" for a in align]
    out = [
        "| " + " | ".join(_cell(h) for h in header) + " |",
        "| " + " | ".join(rule) + " |",
    ]
    out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return out


def _platform(info: Any) -> str:
    if not isinstance(info, Mapping) or not info:
        return NA
    head = f"Python {info.get('python', '?')}"
    if info.get("implementation"):
        head += f" ({info['implementation']})"
    if info.get("system") or info.get("machine"):
        head += f" on {info.get('system', '')} {info.get('machine', '')}".rstrip()
    known = {"python", "implementation", "system", "machine"}
    rest = [f"{k} {v}" for k, v in info.items() if k not in known]
    return ", ".join([head, *rest])


def _provenance(result: Mapping[str, Any]) -> list[str]:
    rows = [
        ["livesim version", result.get("livesim_version", NA)],
        ["engine", result.get("engine", NA)],
        ["seed", result.get("seed", NA)],
        ["replications", result.get("replications", NA)],
        [
            "run time (real)" if result.get("engine") == "relay" else "simulated time",
            _fmt(result.get("sim_time_s"), ",.1f", " s"),
        ],
        ["wall time", _fmt(result.get("wall_s"), ",.2f", " s")],
        ["platform", _platform(result.get("platform"))],
    ]
    return ["## Provenance", "", *_table(["", ""], rows, "ll"), ""]


def _slo_section(result: Mapping[str, Any]) -> list[str]:
    slos = _slos(result)
    out = ["## Service-level objectives", ""]
    if not slos:
        return [*out, "The scenario sets no SLO targets.", ""]
    rows = [
        [
            f"`{s.get('name', '?')}`",
            _fmt(s.get("target"), ".4g"),
            _fmt(s.get("value"), ".4g"),
            "met" if s.get("met") is True else "**missed**",
        ]
        for s in slos
    ]
    out += _table(["SLO", "target", "value", "verdict"], rows, "lrrl")
    return [*out, "", "A value at or below its target meets the objective.", ""]


def _latency_section(result: Mapping[str, Any]) -> list[str]:
    rows = []
    for key, label in LATENCY_KINDS:
        h = _get(result, "latency_s", key)
        stats = _stats(h, ("p50", "p95", "p99", "max", "mean"))
        rows.append([f"{label} (s)", *stats, _count(_get(h, "count"))])
    return [
        "## Latency",
        "",
        "Replay latency runs from capture at the host to playback at the viewer, one sample per "
        "media unit played; join time from a viewer's arrival to the first frame on screen.",
        "",
        *_table(["", "p50", "p95", "p99", "max", "mean", "samples"], rows),
        "",
        _figure("replay_latency_cdf.png"),
        "",
    ]


def _viewers_section(result: Mapping[str, Any]) -> list[str]:
    viewers = result.get("viewers") or {}
    return [
        "## Viewers",
        "",
        f"- peak concurrent viewers: {_count(viewers.get('peak'))}",
        f"- sessions: {_count(viewers.get('sessions'))}",
        f"- rebuffer ratio (stalled over watched-plus-stalled time): "
        f"{_pct(result.get('rebuffer_ratio'), 3)}",
        "",
        _figure("viewers.png"),
        "",
        _figure("rebuffering.png"),
        "",
    ]


def _gigabytes(n_bytes: Any) -> float | None:
    x = _number(n_bytes)
    return None if x is None else x / 1e9


def _tier_section(result: Mapping[str, Any]) -> list[str]:
    rows = [
        [
            name,
            _count(t.get("nodes")),
            _fmt(t.get("capacity_gbps"), ",.1f"),
            _sig(t.get("peak_egress_gbps")),
            _pct(t.get("peak_utilization"), 1),
            _fmt(t.get("peak_requests_per_s"), ",.0f"),
            _pct(t.get("hit_ratio"), 1),
            _sig(_gigabytes(t.get("bytes"))),
            _count(t.get("requests")),
            _count(t.get("fetches")),
        ]
        for name, t in _tiers(result)
    ]
    header = [
        "tier",
        "nodes",
        "capacity Gbit/s",
        "peak egress Gbit/s",
        "peak node utilisation",
        "peak req/s",
        "hit ratio",
        "sent GB",
        "requests",
        "upstream fetches",
    ]
    return [
        "## Tiers",
        "",
        "Tiers are listed from the origin outward; the last one serves the viewers. Peak node "
        "utilisation is the busiest node's egress over its link capacity in its busiest time bin; "
        "the hit ratio counts requests answered without an upstream fetch of their own (cache "
        "hits and waits coalesced onto a fetch in flight).",
        "",
        *_table(header, rows),
        "",
        _figure("egress.png"),
        "",
        _figure("requests.png"),
        "",
    ]


_ECONOMICS = {
    "gmv": "gross merchandise value (GMV)",
    "net_gmv": "GMV net of returns",
    "orders": "orders",
    "delivered_gb": "delivered to viewers (GB)",
    "delivery_cost": "delivery cost",
    "host_commission": "host commission",
    "platform_revenue": "platform revenue",
}
_MONEY = {"gmv", "net_gmv", "delivery_cost", "host_commission", "platform_revenue"}


def _economics_section(result: Mapping[str, Any]) -> list[str]:
    econ = result.get("economics") or {}
    currency = str(econ.get("currency", ""))
    rows = []
    for key, value in econ.items():
        if key == "currency":
            continue
        if key in _MONEY:
            shown = f"{_fmt(value, ',.2f')} {currency}".rstrip()
        elif key == "orders":
            shown = _count(value)
        else:
            shown = _sig(value) if _number(value) is not None else str(value)
        rows.append([_ECONOMICS.get(key, key), shown])
    out = ["## Economics", ""]
    if not rows:
        return [*out, "No economics were computed.", ""]
    return [*out, *_table(["", ""], rows), ""]


def _lotteries(result: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [x for x in result.get("lotteries") or [] if isinstance(x, Mapping)]


def _chat(result: Mapping[str, Any]) -> Mapping[str, Any] | None:
    chat = result.get("chat")
    return chat if isinstance(chat, Mapping) else None


def _seconds(value: Any) -> str:
    return _fmt(value, ",.2f", " s")


def _oversold(sale: Mapping[str, Any]) -> int:
    x = _number(sale.get("oversold"))
    return 0 if x is None else max(0, round(x))


def _stock_left(sale: Mapping[str, Any]) -> str:
    """`not sold out (N left)`, for a sale whose sold_out_after_s is null."""
    stock, sold = _number(sale.get("stock")), _number(sale.get("sold"))
    if stock is None or sold is None:
        return "not sold out"
    return f"not sold out ({_count(max(0.0, stock - sold))} left)"


def _sale_rows(sale: Mapping[str, Any], currency: str) -> list[list[str]]:
    sold_out = sale.get("sold_out_after_s")
    rows = [
        ["backend", f"`{sale.get('backend', '?')}`"],
        ["price", f"{_fmt(sale.get('price'), ',.2f')} {currency}".rstrip()],
        ["stock", _count(sale.get("stock"))],
        ["sold", _count(sale.get("sold"))],
        ["oversold", _count(sale.get("oversold"))],
        ["buyers", _count(sale.get("buyers"))],
        ["orders wanted (buyers x quantity)", _count(sale.get("orders"))],
        ["attempts", _count(sale.get("attempts"))],
        ["retries", _count(sale.get("retries"))],
        ["timeouts", _count(sale.get("timeouts"))],
        [
            "sold out after (from the announcement)",
            _stock_left(sale) if sold_out is None else _seconds(sold_out),
        ],
        ["peak orders/s", _fmt(sale.get("peak_orders_per_s"), ",.0f")],
    ]
    ps = ("p50", "p95", "p99")
    rows += [
        [f"response {p} (s)", v]
        for p, v in zip(ps, _stats(sale.get("response_s"), ps), strict=True)
    ]
    rows.append(["GMV", f"{_fmt(sale.get('gmv'), ',.2f')} {currency}".rstrip()])
    if sale.get("written_after_s") is not None:
        rows.append(["last order durably written after", _seconds(sale.get("written_after_s"))])
    return rows


def _decisions_table(decisions: Any) -> list[str]:
    if not isinstance(decisions, Mapping) or not decisions:
        return []
    header = [str(k).replace("_", " ") for k in decisions]
    return [
        "Answers to attempts (timed out: the buyer stopped waiting):",
        "",
        *_table(header, [[_count(v) for v in decisions.values()]], "r" * len(header)),
        "",
    ]


def _deciles(sale: Mapping[str, Any]) -> tuple[list[float], list[float]]:
    """Success share per replay-latency decile and the 11 decile edges, or ([], []) if unusable."""
    share = _floats(_get(sale, "fairness", "success_by_latency_decile"))
    edges = _floats(_get(sale, "fairness", "latency_decile_edges_s"))
    if not share or len(edges) != len(share) + 1:
        return [], []
    return share, edges


def _ratio_reading(sale: Mapping[str, Any], share: Sequence[float]) -> str:
    ratio = _number(_get(sale, "fairness", "fastest_slowest_ratio"))
    if ratio is not None:
        return (
            f"Buyers in the fastest tenth were {ratio:.1f} x as likely to get one as the "
            "slowest tenth."
        )
    fastest = _number(share[0]) if share else None
    slowest = _number(share[-1]) if share else None
    if slowest == 0.0 and fastest:
        return (
            f"Buyers in the fastest tenth got one {_pct(fastest, 1)} of the time; "
            "the slowest tenth never did (fastest/slowest ratio n/a)."
        )
    return "Fastest/slowest ratio: n/a."


def _fairness_lines(sale: Mapping[str, Any]) -> list[str]:
    share, edges = _deciles(sale)
    if not share:
        return ["No fairness data.", ""]
    ends = {0: "fastest", len(share) - 1: "slowest"}
    rows = []
    for i, s in enumerate(share):
        label = f"{i + 1} ({ends[i]})" if i in ends else str(i + 1)
        span = f"{_fmt(edges[i], '.2f')}-{_fmt(edges[i + 1], '.2f')}"
        rows.append([label, span, _pct(s, 1)])
    table = _table(["decile", "replay latency s", "got an order"], rows, "lrr")
    head = "Share of buyers who got an order, by their replay-latency decile:"
    return [head, "", *table, "", _ratio_reading(sale, share), ""]


def _oversell_warning(sale: Mapping[str, Any]) -> list[str]:
    over = _oversold(sale)
    if over == 0:
        return []
    return [
        f"> **Warning: oversold {over:,} items**: sold {_count(sale.get('sold'))} against a "
        f"stock of {_count(sale.get('stock'))} (backend `{sale.get('backend', '?')}`).",
        "",
    ]


def _sales_section(result: Mapping[str, Any]) -> list[str]:
    sales = _sales(result)
    if not sales:
        return []
    currency = str(_get(result, "economics", "currency") or "")
    out = [
        "## Flash sales",
        "",
        "Response times are what the buyer's client sees, one sample per attempt (retries "
        "included). Fairness splits the buyers into tenths by their replay latency, fastest "
        "first, and gives the share of each tenth that got an order.",
        "",
    ]
    for sale in sales:
        out += [f"### Sale: {sale.get('name', '?')}", ""]
        out += _oversell_warning(sale)
        out += [*_table(["", ""], _sale_rows(sale, currency)), ""]
        out += _decisions_table(sale.get("decisions"))
        out += _fairness_lines(sale)
    return [*out, _figure("sale_fairness.png"), ""]


_BAND_HEADER = ["replay latency", "entries", "valid", "valid share", "winners"]


def _band_row(label: str, entries: Any, valid: Any, winners: Any) -> list[str]:
    e, v = _number(entries), _number(valid)
    share = v / e if e and v is not None else None
    return [label, _count(entries), _count(valid), _pct(share, 1), _count(winners)]


def _lotteries_section(result: Mapping[str, Any]) -> list[str]:
    lotteries = _lotteries(result)
    if not lotteries:
        return []
    out = [
        "## Lotteries",
        "",
        "An entry is valid when it reaches the service within the window after the host calls "
        "the draw (stream time); entries are grouped by the entrant's replay latency.",
        "",
    ]
    for lot in lotteries:
        out += [
            f"### Lottery: {lot.get('name', '?')}",
            "",
            f"Called at {_fmt(lot.get('at_s'), ',.1f', ' s')}, window "
            f"{_fmt(lot.get('window_s'), ',.1f', ' s')}, {_count(lot.get('winners'))} winners.",
            "",
        ]
        rows = [
            _band_row(str(b.get("band", "?")), b.get("entries"), b.get("valid"), b.get("winners"))
            for b in lot.get("by_latency_band") or []
            if isinstance(b, Mapping)
        ]
        rows.append(
            _band_row("total", lot.get("entries"), lot.get("valid_entries"), lot.get("winners"))
        )
        out += [*_table(_BAND_HEADER, rows), ""]
    return out


def _chat_section(result: Mapping[str, Any]) -> list[str]:
    chat = _chat(result)
    if chat is None:
        return []
    h = chat.get("question_to_answer_s")
    row = ["question to answer (s)", *_stats(h, ("p50", "p95", "p99", "max", "mean"))]
    return [
        "## Chat",
        "",
        f"- questions: {_count(chat.get('questions'))}",
        "",
        "question-to-answer time = chat path + host delay + replay latency: from a viewer "
        "sending a question to seeing the host answer it on screen.",
        "",
        *_table(
            ["", "p50", "p95", "p99", "max", "mean", "samples"], [[*row, _count(_get(h, "count"))]]
        ),
        "",
    ]


def _notes_section(result: Mapping[str, Any]) -> list[str]:
    notes = [str(n) for n in result.get("notes") or []]
    if not notes:
        return []
    return ["## Notes", "", *[f"- {n}" for n in notes], ""]


def _figure(name: str) -> str:
    return f"![{FIGURES[name]}]({name})"


def format_markdown(result: Mapping[str, Any]) -> str:
    """report.md: provenance, SLO verdicts, latency, viewers, tiers, economics, then flash sales,
    lotteries and chat when there are any, then notes."""
    name = result.get("scenario", "?")
    description = _get(result, "resolved", "scenario", "description")
    lines = [f"# livesim report: {name}", ""]
    if description:
        lines += [str(description), ""]
    lines += [f"**{verdict_line(result)}**", ""]
    lines += _provenance(result)
    lines += _slo_section(result)
    lines += _latency_section(result)
    lines += _viewers_section(result)
    lines += _tier_section(result)
    lines += _economics_section(result)
    lines += _sales_section(result)
    lines += _lotteries_section(result)
    lines += _chat_section(result)
    lines += _notes_section(result)
    return "\n".join(lines).rstrip() + "\n"


# -- figures ---------------------------------------------------------------------------------


def _floats(values: Any) -> list[float]:
    """A list of floats from a JSON array, None becoming NaN (a gap in the line)."""
    if not isinstance(values, Sequence) or isinstance(values, str):
        return []
    out = []
    for v in values:
        x = _number(v)
        out.append(math.nan if x is None else x)
    return out


def _wide(values: Sequence[float]) -> bool:
    positive = [v for v in values if v > 0 and math.isfinite(v)]
    return bool(positive) and max(positive) > _LOG_SPAN * min(positive)


def _new_figure(title: str, xlabel: str, ylabel: str) -> tuple[Figure, Any]:
    fig = Figure(figsize=_SIZE_IN, dpi=_DPI, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    return fig, ax


def _no_data(ax: Any) -> None:
    ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)


def _save(fig: Figure, path: Path) -> Path:
    # No "Software" stamp: the same result draws byte-identical images on one platform.
    fig.savefig(path, format="png", metadata={"Software": None})
    return path


def _plot_cdf(result: Mapping[str, Any], path: Path) -> Path:
    fig, ax = _new_figure("Latency distribution", "seconds", "fraction of samples <=")
    curves = []
    for key, label in (("replay_s", "replay latency"), ("join_s", "join time")):
        x = _floats(_get(result, "cdf", key, "x"))
        p = _floats(_get(result, "cdf", key, "p"))
        if x and len(x) == len(p):
            curves.append((label, x, p))
    for label, x, p in curves:
        ax.step(x, p, where="post", label=label)
    if curves:
        if _wide([v for _, x, _ in curves for v in x]):
            ax.set_xscale("log")
        ax.set_ylim(0.0, 1.02)
        ax.legend(loc="lower right")
    else:
        _no_data(ax)
    return _save(fig, path)


def _time_axis(result: Mapping[str, Any]) -> list[float]:
    return _floats(_get(result, "series", "t_s"))


def _plot_line(result: Mapping[str, Any], path: Path, key: str, title: str, ylabel: str) -> Path:
    fig, ax = _new_figure(title, "time (s)", ylabel)
    t = _time_axis(result)
    y = _floats(_get(result, "series", key))
    if t and len(y) == len(t):
        ax.step(t, y, where="post")
        ax.set_ylim(bottom=0.0)
    else:
        _no_data(ax)
    return _save(fig, path)


def _plot_tiers(
    result: Mapping[str, Any], path: Path, key: str, title: str, ylabel: str, capacity: bool
) -> Path:
    fig, ax = _new_figure(title, "time (s)", ylabel)
    t = _time_axis(result)
    series = _get(result, "series", key) or {}
    drawn: list[float] = []
    for name, values in series.items():
        y = _floats(values)
        if not t or len(y) != len(t):
            continue
        (line,) = ax.step(t, y, where="post", label=name)
        drawn += y
        cap = _number(_get(result, "tiers", name, "capacity_gbps")) if capacity else None
        if cap is not None:
            ax.axhline(cap, linestyle="--", color=line.get_color(), label=f"{name} capacity")
            drawn.append(cap)
    if drawn:
        if _wide(drawn):
            ax.set_yscale("log")
        else:
            ax.set_ylim(bottom=0.0)
        ax.legend(loc="best")
    else:
        _no_data(ax)
    return _save(fig, path)


def _plot_fairness(result: Mapping[str, Any], path: Path) -> Path:
    fig, ax = _new_figure(
        "Flash-sale success by buyer replay latency",
        "replay latency, decile midpoint (s)",
        "share of buyers who got an order",
    )
    drawn: list[float] = []
    for sale in _sales(result):
        share, edges = _deciles(sale)
        mids = [(lo + hi) / 2.0 for lo, hi in pairwise(edges)]
        if not any(math.isfinite(m) and math.isfinite(y) for m, y in zip(mids, share, strict=True)):
            continue
        ax.plot(
            mids, share, marker="o", label=f"{sale.get('name', '?')} ({sale.get('backend', '?')})"
        )
        drawn += mids
    if drawn:
        if _wide(drawn):
            ax.set_xscale("log")
        ax.set_ylim(-0.02, 1.04)  # room for markers at 0 and 1
        ax.legend(loc="best")
    else:
        _no_data(ax)
    return _save(fig, path)


def write_report(result: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """Write report.md and its figures into out_dir; returns the paths written, report.md first.

    sale_fairness.png is drawn only when the result has sales.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = [
        _plot_cdf(result, out_dir / "replay_latency_cdf.png"),
        _plot_line(result, out_dir / "viewers.png", "viewers", "Viewers watching", "viewers"),
        _plot_tiers(
            result, out_dir / "egress.png", "egress_gbps", "Egress per tier", "Gbit/s", True
        ),
        _plot_tiers(
            result,
            out_dir / "requests.png",
            "requests_per_s",
            "Requests per tier",
            "requests/s",
            False,
        ),
        _plot_line(
            result,
            out_dir / "rebuffering.png",
            "rebuffering_s",
            "Rebuffering",
            "viewer-seconds stalled per bin",
        ),
    ]
    if _sales(result):
        figures.append(_plot_fairness(result, out_dir / "sale_fairness.png"))
    report = out_dir / "report.md"
    report.write_text(format_markdown(result), encoding="utf-8")
    return [report, *figures]
