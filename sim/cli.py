"""The `livesim` command. Exit codes: 0 all SLOs met, 1 an SLO missed, 2 bad input or usage."""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from sim.bench import cli as bench_cli
from sim.errors import ScenarioError

if TYPE_CHECKING:
    from sim.scenario import Scenario

EXIT_OK, EXIT_SLO_MISSED, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="livesim", description=__doc__)
    verbs = parser.add_subparsers(dest="verb", required=True, parser_class=_Parser)
    run = verbs.add_parser("run", help="simulate a scenario, write result.json and a report")
    run.add_argument("scenario", help="scenario file (TOML)")
    run.add_argument("--out", help="output directory (default reports/<scenario name>/)")
    run.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a scenario key, e.g. --set audience.peak_viewers=2e6 (repeatable)",
    )
    run.add_argument("--engine", choices=("auto", "exact", "cohort"), help="force an engine")
    run.add_argument("--seed", type=int, help="override scenario.seed")
    run.add_argument("--replications", type=int, default=1, help="independent replications")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_calibration_option(run)
    _calibrate_parser(
        verbs.add_parser("calibrate", help="measure this machine's relay service parameters")
    )
    _relay_parser(
        verbs.add_parser("relay", help="run the real relay (origin, edges, sale) on loopback")
    )
    bench_cli.add_arguments(
        verbs.add_parser(
            "bench",
            help="run a scenario against the real relay on loopback, compare with the model",
        )
    )
    return parser


def _relay_parser(relay: argparse.ArgumentParser) -> None:
    actions = relay.add_subparsers(dest="action", required=True, parser_class=_Parser)
    up = actions.add_parser("up", help="start origin, edges and sale service; print their URLs")
    up.add_argument("--edges", type=int, default=2, help="edge relays (default 2)")
    up.add_argument("--host", default="127.0.0.1", help="address to listen on")
    up.add_argument(
        "--store",
        default="sqlite:livesim-sale.db",
        help="sale stock: sqlite:PATH (default sqlite:livesim-sale.db) or redis://HOST:PORT",
    )
    up.add_argument("--key", help="ingest key (default: a random one, printed)")
    publish = actions.add_parser("publish", help="publish a live test stream to an origin")
    publish.add_argument(
        "--relay",
        default="-",
        metavar="FILE",
        help="the JSON line `relay up` printed, from FILE or - (stdin, the default)",
    )
    publish.add_argument("--ingest", help="ingest URL (instead of --relay), with --key")
    publish.add_argument("--key", help="ingest key (with --ingest)")
    publish.add_argument("--stream", default="demo", help="stream name (default demo)")
    publish.add_argument("--part-s", type=float, default=1 / 3, help="part length (s)")
    publish.add_argument("--gop-s", type=float, default=1.0, help="key frame interval (s)")
    publish.add_argument("--bitrate-kbps", type=float, default=2500.0)
    publish.add_argument("--duration-s", type=float, default=0.0, help="0 = until interrupted")


def _add_calibration_option(run: argparse.ArgumentParser) -> None:
    run.add_argument(
        "--calibration",
        metavar="FILE",
        help="apply this machine's relay parameters (from `livesim calibrate`) after the --sets",
    )


def _calibrate_parser(calibrate: argparse.ArgumentParser) -> None:
    calibrate.add_argument(
        "--out",
        default="calibration.toml",
        metavar="FILE",
        help="where to write the calibration (default calibration.toml)",
    )
    calibrate.add_argument(
        "--duration-s", type=float, default=3.0, help="length of each load (default 3 s)"
    )


def progress_bar(
    quiet: bool, desc: str = "simulating"
) -> tuple[Callable[[float], None] | None, Callable[[], None]]:
    """A progress bar on stderr for runs longer than ~2 s, unless quiet or not a terminal."""
    if quiet or not sys.stderr.isatty():
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(
        total=1000,
        delay=2.0,
        file=sys.stderr,
        leave=False,
        desc=desc,
        bar_format="{l_bar}{bar}| {elapsed}<{remaining}",
    )

    def update(fraction: float) -> None:
        bar.update(round(fraction * 1000) - bar.n)

    return update, bar.close


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: write them as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def write_outputs(result: dict[str, Any], out_dir: Path) -> None:
    """Write result.json and the report into out_dir, all or nothing."""
    from sim.report import write_report

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        with open(staging / "result.json", "w") as fh:
            json.dump(_finite(result), fh, indent=2, allow_nan=False)
            fh.write("\n")
        write_report(result, staging)
        if out_dir.is_dir():
            for new in staging.iterdir():
                os.replace(new, out_dir / new.name)
        else:
            os.replace(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _cmd_run(args: argparse.Namespace) -> int:
    from sim.report import format_summary
    from sim.run import run_scenario
    from sim.scenario import load_scenario

    scenario = _calibrated(load_scenario(args.scenario, args.overrides), args)
    out_dir = Path(args.out) if args.out else Path("reports") / scenario.scenario.name
    if out_dir.exists() and not out_dir.is_dir():
        raise ScenarioError("--out", f"{out_dir} exists and is not a directory")
    update, close = progress_bar(args.quiet)
    try:
        result = run_scenario(
            scenario,
            engine=args.engine,
            seed=args.seed,
            replications=args.replications,
            progress=update,
        )
    finally:
        close()
    write_outputs(result, out_dir)
    print(format_summary(result))
    print(f"wrote {out_dir / 'result.json'} and {out_dir / 'report.md'}")
    return EXIT_OK if result["ok"] else EXIT_SLO_MISSED


def _calibrated(scenario: Scenario, args: argparse.Namespace) -> Scenario:
    """The scenario with `--calibration FILE` applied after the user's --sets (if given)."""
    if args.calibration is None:
        return scenario
    from sim.calibration import applied_line, calibration_overrides, load_calibration
    from sim.scenario import load_scenario

    calibration = load_calibration(args.calibration)
    overrides = [*args.overrides, *calibration_overrides(calibration, scenario)]
    calibrated = load_scenario(args.scenario, overrides)
    print(applied_line(args.calibration, calibration))
    return calibrated


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from relay.calibrate import CalibrationError, measure
    from relay.up import StartupError
    from sim.calibration import format_table, save_calibration

    out = Path(args.out)
    if not (math.isfinite(args.duration_s) and args.duration_s > 0):
        raise ScenarioError("--duration-s", f"must be a number > 0; given {args.duration_s}")
    if out.is_dir():
        raise ScenarioError("--out", f"{out} is a directory, not a file")
    if not out.parent.is_dir():
        raise ScenarioError("--out", f"no such directory: {out.parent}")

    def progress(line: str) -> None:
        print(f"calibrate: {line}", file=sys.stderr, flush=True)

    try:
        calibration = measure(args.duration_s, progress)
        save_calibration(calibration, out)
    except (StartupError, CalibrationError, OSError) as error:
        print(f"livesim calibrate: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    print(format_table(calibration))
    print(f"wrote {out}")
    return EXIT_OK


def _cmd_relay(args: argparse.Namespace) -> int:
    if args.action == "up":
        from relay.up import up

        if args.edges < 1:
            print("livesim relay up: error: --edges must be >= 1", file=sys.stderr)
            return EXIT_USAGE
        return up(args.edges, args.host, args.store, args.key)
    from relay.publish import PublishConfig, publish
    from relay.server.run import run

    if args.ingest:
        if not args.key:
            print("livesim relay publish: error: --ingest needs --key", file=sys.stderr)
            return EXIT_USAGE
        ingest, key = args.ingest, args.key
    else:
        urls = read_relay_urls(args.relay, "--relay")
        ingest, key = urls["ingest"].replace("{stream}", args.stream), urls["key"]
    config = PublishConfig(
        ingest=ingest,
        key=key,
        part_s=args.part_s,
        gop_s=args.gop_s,
        bitrate_kbps=args.bitrate_kbps,
        duration_s=args.duration_s,
    )
    stats = run(publish(config))
    print(json.dumps({"parts": stats.parts, "bytes": stats.bytes_sent, "late_s": stats.late_s}))
    return EXIT_OK


RELAY_READY_WAIT_S = 30.0


def read_relay_urls(source: str, flag: str) -> dict[str, Any]:
    """The JSON line `livesim relay up` printed, from the file `source` or - (stdin)."""
    text = sys.stdin.readline() if source == "-" else _ready_line(Path(source))
    try:
        urls = json.loads(text)
        if not (
            isinstance(urls, dict)
            and all(isinstance(urls.get(k), str) for k in ("origin", "sale", "ingest", "key"))
            and isinstance(urls.get("edges"), list)
        ):
            raise ValueError
    except ValueError:
        raise ScenarioError(flag, "needs the JSON line `livesim relay up` printed") from None
    return urls


def _ready_line(path: Path) -> str:
    """The first line of `path`, waiting for `livesim relay up` to write it (it may still be
    starting when both are launched together); "" if it never comes."""
    deadline = time.monotonic() + RELAY_READY_WAIT_S
    while True:
        try:
            text = path.read_text()
        except FileNotFoundError:
            text = ""
        if "\n" in text or time.monotonic() > deadline:
            return text.partition("\n")[0]
        time.sleep(0.1)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        if args.verb == "relay":
            return _cmd_relay(args)
        if args.verb == "calibrate":
            return _cmd_calibrate(args)
        if args.verb == "bench":
            return bench_cli.run(args)
        return _cmd_run(args)
    except ScenarioError as err:
        print(f"livesim: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("livesim: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
