"""The `livesim` command. Exit codes: 0 all SLOs met, 1 an SLO missed, 2 bad input or usage."""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from sim.errors import ScenarioError

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
    return parser


def _progress(quiet: bool) -> tuple[Callable[[float], None] | None, Callable[[], None]]:
    """A progress bar on stderr for runs longer than ~2 s, unless quiet or not a terminal."""
    if quiet or not sys.stderr.isatty():
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(
        total=1000,
        delay=2.0,
        file=sys.stderr,
        leave=False,
        desc="simulating",
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

    scenario = load_scenario(args.scenario, args.overrides)
    out_dir = Path(args.out) if args.out else Path("reports") / scenario.scenario.name
    if out_dir.exists() and not out_dir.is_dir():
        raise ScenarioError("--out", f"{out_dir} exists and is not a directory")
    update, close = _progress(args.quiet)
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


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        return _cmd_run(args)
    except ScenarioError as err:
        print(f"livesim: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("livesim: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
