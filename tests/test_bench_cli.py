"""`livesim bench` options: a running relay (--urls), ffmpeg as the publisher, refusals, and the
load generator's honesty check."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from relay_support import KEY, relay_up

from relay.load.player import Playback
from relay.up import ready_line
from sim.bench.load import LoadReport
from sim.bench.run import LoadGeneratorBottleneck, check_load
from sim.cli import main

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "scenarios" / "quickstart.toml"
EDGE_FAILURE = ROOT / "scenarios" / "edge-failure.toml"


def test_bench_drives_a_running_relay_published_by_ffmpeg(tmp_path: Path) -> None:
    with relay_up(tmp_path, edges=2) as relay:
        line = tmp_path / "relay.json"
        line.write_text(ready_line(relay.servers, KEY) + "\n")
        out = tmp_path / "bench"
        code = main(
            [
                "bench", str(QUICKSTART), "--urls", str(line), "--publisher", "ffmpeg",
                "--scale", "0.03", "--set", "scenario.duration_s=15", "--out", str(out), "--quiet",
            ]
        )  # fmt: skip
    result = json.loads((out / "result.json").read_text())
    assert code == 0
    assert result["engine"] == "relay"
    assert result["resolved"]["tier"][-1]["nodes"] == 2  # the running relay's edges
    replay = result["latency_s"]["replay"]
    assert replay["count"] > 1000
    assert 0.3 < replay["p50"] < 3.0
    assert result["tiers"]["edge"]["requests"] > 1000


def test_a_running_relay_cannot_take_a_scenario_of_another_shape(tmp_path: Path) -> None:
    line = tmp_path / "relay.json"
    urls = {"origin": "http://127.0.0.1:9", "edges": ["http://127.0.0.1:9"], "sale": "x"}
    line.write_text(json.dumps({**urls, "ingest": "x", "key": "k"}) + "\n")
    code = main(["bench", str(EDGE_FAILURE), "--urls", str(line), "--out", str(tmp_path / "o")])
    assert code == 2
    assert not (tmp_path / "o" / "result.json").exists()


def test_bench_refuses_a_line_that_is_not_relay_ups(tmp_path: Path) -> None:
    line = tmp_path / "relay.json"
    line.write_text('{"origin": "http://127.0.0.1:9"}\n')
    assert main(["bench", str(QUICKSTART), "--urls", str(line)]) == 2


def _report(lag_s: float, cpu_share: float) -> list[LoadReport]:
    report = LoadReport(
        worker=0,
        playback=Playback(1.0, 10),
        lag_s=list(np.full(100, lag_s)),
        cpu_s=cpu_share * 60.0,
        wall_s=60.0,
    )
    return [report]


def test_a_load_generator_that_lagged_or_ran_out_of_cpu_is_not_reported() -> None:
    calm = [0.002] * 100
    fine = check_load(_report(0.02, 0.3), calm)
    assert fine["viewer_processes"][0]["lag_p99_s"] == pytest.approx(0.02)
    with pytest.raises(LoadGeneratorBottleneck, match="lag p99 200 ms"):
        check_load(_report(0.2, 0.3), calm)
    with pytest.raises(LoadGeneratorBottleneck, match="CPU 95%"):
        check_load(_report(0.02, 0.95), calm)
    with pytest.raises(LoadGeneratorBottleneck, match="buyers"):
        check_load(_report(0.02, 0.3), [0.2] * 100)
