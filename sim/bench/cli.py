"""`livesim bench SCENARIO [--scale F] [--compare] ...`: the command's options and its flow.

Writes into `--out` (default reports/<scenario name>-bench/): result.json and the report of the
relay run (engine "relay"); with `--compare` also model/ (the simulator's run of the same scaled
scenario with this machine's calibration), calibration.toml (unless one was given),
compare.json, compare.md and the figures. Exit codes: without --compare, 0 when the relay met
every SLO and 1 when it missed one; with --compare, 0 when model and relay agree on every metric
and 1 when one is outside the tolerance; 2 for bad input or a run that cannot be reported.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sim.errors import ScenarioError

if TYPE_CHECKING:
    from sim.calibration import Calibration
    from sim.scenario import Scenario

EXIT_OK, EXIT_DISAGREE, EXIT_USAGE = 0, 1, 2


def add_arguments(bench: argparse.ArgumentParser) -> None:
    bench.add_argument("scenario", help="scenario file (TOML)")
    bench.add_argument(
        "--scale",
        type=float,
        help="audience, stock and winners multiplied by F in (0, 1] "
        "(default: the largest this machine carries)",
    )
    bench.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a scenario key before scaling (repeatable)",
    )
    bench.add_argument("--seed", type=int, help="override scenario.seed")
    bench.add_argument("--out", help="output directory (default reports/<scenario name>-bench/)")
    bench.add_argument(
        "--urls",
        metavar="FILE",
        help="use a running `livesim relay up` (its JSON line, from FILE or - for stdin) instead "
        "of starting a relay; the scenario must then be origin + edges without faults",
    )
    bench.add_argument(
        "--publisher",
        choices=("builtin", "ffmpeg"),
        default="builtin",
        help="what publishes the streams: the built-in publisher (default) or ffmpeg",
    )
    bench.add_argument(
        "--store",
        help="sale stock: sqlite:PATH (default: a file in the output directory) or redis://HOST:PORT",
    )
    bench.add_argument(
        "--load-workers",
        type=int,
        default=_default_load_workers(os.cpu_count() or 1),
        help="load-generator processes (default: half the cores, at least 2; 1 on one core)",
    )
    bench.add_argument(
        "--compare",
        action="store_true",
        help="also run the model on the same scaled scenario and hold it to the measurement",
    )
    bench.add_argument(
        "--calibration",
        metavar="FILE",
        help="with --compare: this machine's calibration (default: measure it first, ~20 s)",
    )
    bench.add_argument(
        "--tolerance",
        type=float,
        default=0.2,
        help="with --compare: relative tolerance of each metric (default 0.2)",
    )
    bench.add_argument("--quiet", action="store_true", help="no progress bar")


def _default_load_workers(cores: int) -> int:
    return min(cores, max(2, cores // 2))


def run(args: argparse.Namespace) -> int:
    from relay.calibrate import CalibrationError
    from relay.up import StartupError
    from sim.bench.load import BenchError
    from sim.bench.run import BenchOptions, run_bench
    from sim.bench.scale import check_attachable, largest_scale, scaled
    from sim.cli import progress_bar, read_relay_urls, write_outputs
    from sim.report import format_summary
    from sim.scenario import load_scenario

    scenario = load_scenario(args.scenario, args.overrides)
    if args.load_workers < 1:
        raise ScenarioError("--load-workers", f"must be >= 1; given {args.load_workers}")
    if not 0 < args.tolerance < 10:
        raise ScenarioError("--tolerance", f"must be in (0, 10); given {args.tolerance}")
    scale = args.scale
    if scale is None:
        scale = largest_scale(scenario, os.cpu_count() or 1)
        how = "the largest this machine carries"
    else:
        how = "as asked"
    urls = read_relay_urls(args.urls, "--urls") if args.urls else None
    small = scaled(scenario, scale, None if urls is None else len(urls["edges"]))
    if urls is not None:
        check_attachable(small)
    out_dir = Path(args.out) if args.out else Path("reports") / f"{scenario.scenario.name}-bench"
    if out_dir.exists() and not out_dir.is_dir():
        raise ScenarioError("--out", f"{out_dir} exists and is not a directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        calibration = _calibration(args, out_dir) if args.compare else None
    except (CalibrationError, StartupError) as error:
        print(f"livesim bench: error: calibrating: {error}", file=sys.stderr)
        return EXIT_USAGE
    print(
        f"bench: {scenario.scenario.name} at scale {scale:g} ({how}): "
        f"{small.audience.peak_viewers:,} peak viewers of {scenario.audience.peak_viewers:,}, "
        f"{small.tiers[-1].nodes} edges, {small.scenario.duration_s:g} s in real time",
        file=sys.stderr,
        flush=True,
    )
    store = args.store or f"sqlite:{out_dir / 'sale.db'}"
    (out_dir / "sale.db").unlink(missing_ok=True)
    update, close = progress_bar(args.quiet, "relay")
    try:
        measured = run_bench(
            small,
            BenchOptions(
                store=store,
                load_workers=args.load_workers,
                seed=args.seed,
                publisher=args.publisher,
                urls=urls,
            ),
            update,
        )
    except (BenchError, StartupError) as error:
        print(f"livesim bench: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        close()
    measured["bench"] = {"scale": scale, "from_peak_viewers": scenario.audience.peak_viewers}
    write_outputs(measured, out_dir)
    print(format_summary(measured))
    print(f"wrote {out_dir / 'result.json'} and {out_dir / 'report.md'}")
    if calibration is None:
        return EXIT_OK if measured["ok"] else EXIT_DISAGREE
    return _compare(args, small, calibration, measured, out_dir)


def _calibration(args: argparse.Namespace, out_dir: Path) -> Calibration:
    from relay.calibrate import measure
    from sim.calibration import load_calibration, save_calibration

    if args.calibration is not None:
        return load_calibration(args.calibration)
    print("bench: calibrating this machine first (livesim calibrate)", file=sys.stderr, flush=True)
    calibration = measure()
    save_calibration(calibration, out_dir / "calibration.toml")
    return calibration


def _compare(
    args: argparse.Namespace,
    small: Scenario,
    calibration: Calibration,
    measured: dict[str, Any],
    out_dir: Path,
) -> int:
    from sim.bench.compare import compare, plot_latency_cdfs, plot_rebuffering, render_table
    from sim.calibration import calibration_overrides
    from sim.cli import progress_bar, write_outputs
    from sim.run import run_scenario
    from sim.scenario import parse_scenario

    model_scenario = parse_scenario(small.resolved(), calibration_overrides(calibration, small))
    update, close = progress_bar(args.quiet, "model")
    try:
        predicted = run_scenario(model_scenario, engine="exact", seed=args.seed, progress=update)
    finally:
        close()
    write_outputs(predicted, out_dir / "model")
    doc = compare(predicted, measured, args.tolerance)
    table = render_table(doc)
    plot_latency_cdfs(predicted, measured, out_dir / "compare-latency-cdf.png")
    figures = ["compare-latency-cdf.png"]
    if small.faults:
        plot_rebuffering(predicted, measured, out_dir / "compare-rebuffering.png")
        figures.append("compare-rebuffering.png")
    with open(out_dir / "compare.json", "w") as fh:
        json.dump(doc, fh, indent=2)
        fh.write("\n")
    verdict = "agree" if doc["ok"] else "DISAGREE"
    with open(out_dir / "compare.md", "w") as fh:
        fh.write(f"# {doc['scenario']}: model vs relay ({verdict})\n\n{table}\n")
        fh.writelines(f"![{name}]({name})\n" for name in figures)
    print(f"\nmodel vs relay ({verdict}):\n{table}")
    print(f"wrote {out_dir / 'compare.md'}")
    return EXIT_OK if doc["ok"] else EXIT_DISAGREE
