"""One seed gives identical results; a different seed gives different ones."""

from __future__ import annotations

import json
from pathlib import Path

from sim.cli import main

QUICKSTART = Path(__file__).resolve().parent.parent / "scenarios" / "quickstart.toml"
SMALL = ["--set", "audience.peak_viewers=300", "--set", "scenario.duration_s=60", "--quiet"]


def result_without_wall_time(out: Path) -> dict:
    result = json.loads((out / "result.json").read_text())
    del result["wall_s"]
    return result


def test_same_seed_gives_identical_result_json(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["run", str(QUICKSTART), "--out", str(a), *SMALL]) in (0, 1)
    assert main(["run", str(QUICKSTART), "--out", str(b), *SMALL]) in (0, 1)
    assert result_without_wall_time(a) == result_without_wall_time(b)


def test_another_seed_gives_another_result(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    main(["run", str(QUICKSTART), "--out", str(a), *SMALL, "--seed", "1"])
    main(["run", str(QUICKSTART), "--out", str(b), *SMALL, "--seed", "2"])
    ra, rb = result_without_wall_time(a), result_without_wall_time(b)
    assert ra["seed"] == 1 and rb["seed"] == 2
    assert ra["latency_s"] != rb["latency_s"]
