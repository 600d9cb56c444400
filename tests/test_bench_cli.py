"""`livesim bench` options: a running relay (--urls), ffmpeg as the publisher, refusals, and the
load generator's honesty check."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from relay_support import KEY, publishing, relay_up

from relay.load.http_client import HttpConnection
from relay.load.player import Playback, Player
from relay.load.sessions import RunClock, Target, hls_session
from relay.server.run import run
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


def test_hls_sessions_poll_once_per_segment_and_play_every_segment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """200 sessions with their own poll phases on one uvloop, as in a load process. (A cadence
    recomputed from the clock at each wake-up polled about 1.5 times per segment here: a
    timer can fire a little before the monotonic clock reaches its time.)"""
    requests: list[str] = []
    real_get = HttpConnection.get

    async def counted(self: HttpConnection, path: str, timeout_s: float = 10.0) -> Any:
        requests.append(path)
        return await real_get(self, path, timeout_s)

    monkeypatch.setattr(HttpConnection, "get", counted)
    sessions = 200
    with relay_up(tmp_path, edges=1) as relay, publishing(relay, "hls"):
        time.sleep(7.0)  # three 2 s segments to start from
        port = int(relay.edges[0].rsplit(":", 1)[1])
        playback = Playback(bin_s=1.0, n_bins=60)

        async def watch() -> None:
            clock = RunClock(time.time())
            target = Target(
                edges=[("127.0.0.1", port)],
                pick_edge=lambda: 0,
                stream="hls",
                reconnect_s=1.0,
                unit_s=2.0,
                hold_back=3,
            )
            tasks = []
            for _ in range(sessions):  # arriving over 2 s, each with its own poll phase
                tasks.append(
                    asyncio.ensure_future(hls_session(target, Player(playback, 0.0), clock))
                )
                await asyncio.sleep(0.01)
            await asyncio.sleep(18.0)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        run(watch())  # on uvloop, as a load process runs
    polls = sum(r.endswith("index.m3u8") for r in requests)
    assert 9.5 * sessions <= polls <= 10.5 * sessions  # one every 2 s for about 20 s
    # The three segments a session starts from, then one new segment per poll.
    assert len(playback.replay_s) == len(requests) - polls >= (3 + 8) * sessions
    assert playback.stall_s == 0.0
