"""Ingest from a real encoder and the LL-HLS rules the relay answers by, on 127.0.0.1.

ffmpeg and ffprobe are required (`make test` installs them); a missing one fails the test.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from relay_support import KEY, Relay, arun, relay_up, wait_for_parts

from relay.core.fmp4_writer import fragment, grey_picture, init_segment
from relay.core.playlist import check_playlist, parse_playlist
from relay.server.edge import EdgeConfig
from relay.server.http import Router, Streamed, serve
from relay.server.origin import OriginConfig
from relay.server.run import start_edge, start_origin


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not on PATH; `make test` installs it")
    return path


def _ffmpeg_publish(relay: Relay, stream: str, seconds: float) -> subprocess.Popen[bytes]:
    """ffmpeg sending a test pattern as fMP4 HLS by HTTP PUT, one 1/3 s fragment per file."""
    command = [
        _tool("ffmpeg"), "-hide_banner", "-loglevel", "error", "-re",
        "-f", "lavfi", "-i", f"testsrc2=size=320x240:rate=30:duration={seconds}",
        "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
        "-g", "10", "-keyint_min", "10", "-sc_threshold", "0",
        "-f", "hls", "-hls_time", "0.333", "-hls_segment_type", "fmp4", "-hls_list_size", "30",
        "-hls_flags", "delete_segments", "-method", "PUT", "-http_persistent", "1",
        "-headers", f"Authorization: Bearer {KEY}",
        f"{relay.origin}/ingest/{stream}/index.m3u8",
    ]  # fmt: skip
    return subprocess.Popen(command, stderr=subprocess.PIPE)


async def _text(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


def test_ffmpeg_publishes_and_ffprobe_reads_it_back_from_an_edge(tmp_path: Path) -> None:
    with relay_up(tmp_path, edges=1) as relay:
        encoder = _ffmpeg_publish(relay, "ff", 8.0)
        try:
            wait_for_parts(relay.edges[0], "ff", 9)
            playlist_url = f"{relay.edges[0]}/live/ff/index.m3u8"
            status, text = arun(_text(playlist_url))
            assert status == 200
            parsed = parse_playlist(text)
            assert check_playlist(parsed) == []
            assert parsed.map_uri == "init.mp4"
            assert parsed.part_target is not None
            assert all(p.duration_s <= parsed.part_target for p in parsed.parts)
            assert all(p.independent for p in parsed.parts)  # one key frame per 1/3 s fragment
            probe = subprocess.run(
                [_tool("ffprobe"), "-v", "error", "-show_streams", "-of", "json", playlist_url],
                capture_output=True,
                timeout=30,
                check=True,
            )
            streams = json.loads(probe.stdout)["streams"]
            assert [(s["codec_name"], s["width"], s["height"]) for s in streams] == [
                ("h264", 320, 240)
            ]
            _, stderr = encoder.communicate(timeout=30)
            assert encoder.returncode == 0, stderr.decode()
        finally:
            if encoder.poll() is None:
                encoder.kill()
                encoder.wait()
        # The encoder's last playlist carries EXT-X-ENDLIST: the relay ends the stream.
        status, text = arun(_text(f"{relay.edges[0]}/live/ff/index.m3u8"))
        assert "#EXT-X-ENDLIST" in text
        assert check_playlist(parse_playlist(text)) == []


async def _put(session: aiohttp.ClientSession, url: str, data: bytes) -> int:
    headers = {"Authorization": f"Bearer {KEY}"}
    async with session.put(url, data=data, headers=headers) as response:
        return response.status


def _part(n: int) -> bytes:
    picture = grey_picture(64, 64, 200)
    return fragment(
        n + 1, n * 3000, [3000] * 10, [picture] * 10, independent=n % 3 == 0, capture_s=time.time()
    )


def test_blocking_reload_answers_holds_and_refuses_as_the_rfc_says() -> None:
    async def scenario() -> None:
        origin = await start_origin(OriginConfig(key=KEY, segment_s=1.0))
        edge = await start_edge(EdgeConfig(parent=origin.url))
        ingest = f"{origin.url}/ingest/s"
        live = f"{edge.url}/live/s/index.m3u8"
        try:
            async with aiohttp.ClientSession() as session:
                assert (
                    await _put(session, f"{ingest}/init.mp4", init_segment(90_000, 64, 64)) == 201
                )
                for n in range(4):
                    assert await _put(session, f"{ingest}/p{n}.m4s", _part(n)) == 201

                async def get(url: str) -> tuple[int, float]:
                    started = time.monotonic()
                    async with session.get(url) as response:
                        await response.read()
                        return response.status, time.monotonic() - started

                # Parts 0-2 close segment 0 (1 s); part 3 opens segment 1.
                assert (await get(f"{live}?_HLS_msn=1&_HLS_part=0"))[0] == 200
                assert (await get(f"{live}?_HLS_part=1"))[0] == 400  # part without msn
                assert (await get(f"{live}?_HLS_msn=9"))[0] == 400  # more than 2 segments ahead
                assert (await get(f"{live}?_HLS_msn=1&_HLS_part=x"))[0] == 400
                # A request for the next part is held until it is published.
                held = asyncio.ensure_future(get(f"{live}?_HLS_msn=1&_HLS_part=1"))
                await asyncio.sleep(0.3)
                assert not held.done()
                assert await _put(session, f"{ingest}/p4.m4s", _part(4)) == 201
                status, waited_s = await held
                assert status == 200 and 0.3 <= waited_s < 1.0
                # Nothing more is published: after 3 target durations (3 s) the answer is 503.
                status, waited_s = await get(f"{live}?_HLS_msn=1&_HLS_part=2")
                assert status == 503 and 2.9 <= waited_s < 4.0
                # The preload-hinted part is held the same way and 503s the same way.
                status, waited_s = await get(f"{edge.url}/live/s/seg1.part2.m4s")
                assert status == 503
                # DELETE honoured: segment 0's first file is gone, so segment 0 leaves the playlist.
                async with session.delete(
                    f"{ingest}/p0.m4s", headers={"Authorization": f"Bearer {KEY}"}
                ) as response:
                    assert response.status == 204
                async with session.get(f"{origin.url}/live/s/seg0.part0.m4s") as response:
                    assert response.status == 404
                async with session.get(f"{origin.url}/live/s/index.m3u8") as response:
                    text = await response.text()
                assert "seg0." not in text
                assert check_playlist(parse_playlist(text)) == []
        finally:
            await edge.close()
            await origin.close()

    arun(scenario())


def test_relay_up_prints_its_urls_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    # As the README runs them: `relay up > relay.json &`, then at once `publish --relay
    # relay.json`, which waits for the line to be written.
    line = tmp_path / "relay.json"
    command = [
        sys.executable, "-m", "sim.cli", "relay", "up", "--edges", "2",
        "--store", f"sqlite:{tmp_path / 'sale.db'}",
    ]  # fmt: skip
    with line.open("w") as out:
        up = subprocess.Popen(command, stdout=out, stderr=subprocess.DEVNULL)
    try:
        publish_command = [
            sys.executable, "-m", "sim.cli", "relay", "publish", "--relay", str(line),
            "--duration-s", "1.5",
        ]  # fmt: skip
        publish = subprocess.run(
            publish_command, capture_output=True, text=True, timeout=60, check=False
        )
        assert publish.returncode == 0, publish.stderr
        assert json.loads(publish.stdout)["parts"] == 5
        urls = json.loads(line.read_text())
        assert set(urls) >= {"origin", "edges", "sale", "ingest", "key"}
        assert len(urls["edges"]) == 2 and len(urls["key"]) >= 16
        assert urls["ingest"] == urls["origin"] + "/ingest/{stream}/"
        for edge in urls["edges"]:
            status, text = arun(_text(f"{edge}/live/demo/index.m3u8"))
            assert status == 200 and "#EXT-X-ENDLIST" in text
        up.send_signal(signal.SIGTERM)
        assert up.wait(15) == 0
        children = [urls["pids"]["origin"], urls["pids"]["sale"], *urls["pids"]["edges"]]
        assert all(not Path(f"/proc/{pid}").exists() for pid in children)
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()


def test_an_edge_behind_an_edge_relays_parts_playlists_and_push() -> None:
    async def scenario() -> None:
        origin = await start_origin(OriginConfig(key=KEY, segment_s=1.0))
        parent = await start_edge(EdgeConfig(parent=origin.url, name="parent"))
        child = await start_edge(EdgeConfig(parent=parent.url, name="child"))
        ingest = f"{origin.url}/ingest/s"
        try:
            async with aiohttp.ClientSession() as session:
                assert (
                    await _put(session, f"{ingest}/init.mp4", init_segment(90_000, 64, 64)) == 201
                )
                parts = [_part(n) for n in range(4)]
                for n, data in enumerate(parts):
                    assert await _put(session, f"{ingest}/p{n}.m4s", data) == 201
                async with session.get(f"{child.url}/live/s/seg0.part1.m4s") as response:
                    assert response.status == 200
                    assert await response.read() == parts[1]
                held = asyncio.ensure_future(
                    session.get(f"{child.url}/live/s/index.m3u8?_HLS_msn=1&_HLS_part=1")
                )
                push = await session.get(f"{child.url}/push/s")
                assert push.status == 200
                await asyncio.sleep(0.2)
                assert not held.done()
                assert await _put(session, f"{ingest}/p4.m4s", _part(4)) == 201
                reply = await held
                assert reply.status == 200
                assert 'URI="seg1.part1.m4s"' in await reply.text()
                reply.release()
                # The push viewer gets the init segment, the catch-up part and the new part.
                received = b""
                while received.count(b"moof") < 2:
                    received += await asyncio.wait_for(push.content.readany(), 5.0)
                push.release()
                async with session.get(f"{child.url}/metrics") as response:
                    metrics = await response.text()
                assert "livesim_upstream_fetches_total" in metrics
                assert "livesim_open_connections" in metrics
        finally:
            await child.close()
            await parent.close()
            await origin.close()

    arun(scenario())


def test_an_edge_never_passes_a_parents_broken_answer_off_as_complete() -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield b"x" * 1000
        await asyncio.sleep(0.05)
        raise ConnectionError("the encoder went away")

    router = Router()
    router.add("GET", r"/live/s/seg0.part0.m4s", lambda _r: Streamed(200, broken(), "video/mp4"))

    async def scenario() -> None:
        parent = await serve(router)
        edge = await start_edge(EdgeConfig(parent=f"http://127.0.0.1:{parent.port}"))
        try:
            async with aiohttp.ClientSession() as session:

                async def fetch() -> bytes:
                    async with session.get(f"{edge.url}/live/s/seg0.part0.m4s") as response:
                        assert response.status == 200
                        return await response.read()

                outcomes = await asyncio.gather(fetch(), fetch(), return_exceptions=True)
                assert all(isinstance(o, aiohttp.ClientPayloadError) for o in outcomes), outcomes
                # Nothing broken was cached: the next request goes to the parent again.
                with pytest.raises(aiohttp.ClientPayloadError):
                    await fetch()
        finally:
            await edge.close()
            await parent.close()

    arun(scenario())
