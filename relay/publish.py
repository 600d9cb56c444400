"""The built-in publisher: a live fMP4 stream to an origin's ingest, no encoder needed.

It sends what an encoder would: an init segment, then one CMAF fragment per part, paced in
real time, each PUT when its last frame is "captured". Each fragment carries a `prft` box with
the wall-clock capture time of its first frame, so a viewer can measure capture-to-receive
delay per part (receive time minus that stamp, on one machine's clock). Samples are H.264
grey pictures padded to the size the bitrate asks for, so players decode them and byte counts
are real.
"""

from __future__ import annotations

import asyncio
import math
import shutil
import time
from dataclasses import dataclass

import aiohttp

from relay.core.fmp4_writer import fragment, grey_picture, init_segment

TIMESCALE = 90_000
WIDTH, HEIGHT = 640, 360


@dataclass(frozen=True)
class PublishConfig:
    ingest: str
    """The origin's ingest URL for the stream (`<origin>/ingest/<stream>/`)."""
    key: str
    part_s: float = 1 / 3
    fps: int = 30
    gop_s: float = 1.0
    """An independent (key) frame starts a part every `gop_s` (rounded to whole parts)."""
    bitrate_kbps: float = 2500.0
    duration_s: float = 0.0
    """0: until cancelled."""


@dataclass
class PublishStats:
    parts: int = 0
    bytes_sent: int = 0
    late_s: float = 0.0
    """Longest delay of a PUT past its part's capture end (publisher or origin too slow)."""


async def publish(config: PublishConfig, stats: PublishStats | None = None) -> PublishStats:
    """Publish until `duration_s` (then end the stream) or until cancelled."""
    stats = stats or PublishStats()
    base = config.ingest.rstrip("/")
    headers = {"Authorization": f"Bearer {config.key}"}
    frames = max(1, round(config.part_s * config.fps))
    frame_ticks = round(TIMESCALE / config.fps)
    part_s = frames * frame_ticks / TIMESCALE
    gop_parts = max(1, round(config.gop_s / part_s))
    frame_bytes = max(16, math.floor(config.bitrate_kbps * 1000 / 8 / config.fps))
    # Consecutive pictures alternate idr_pic_id (H.264 7.4.3), so a part of an odd frame count
    # starts on either one.
    pictures = [grey_picture(WIDTH, HEIGHT, frame_bytes, idr_pic_id=i) for i in (0, 1)]
    total = math.inf if config.duration_s <= 0 else math.ceil(config.duration_s / part_s)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await _put(session, f"{base}/init.mp4", init_segment(TIMESCALE, WIDTH, HEIGHT), headers)
        start_s = time.time()
        n = 0
        while n < total:
            capture_s = start_s + n * part_s
            ready_s = capture_s + part_s
            await asyncio.sleep(max(0.0, ready_s - time.time()))
            data = fragment(
                n + 1,
                n * frames * frame_ticks,
                [frame_ticks] * frames,
                [pictures[(n * frames + i) % 2] for i in range(frames)],
                independent=n % gop_parts == 0,
                capture_s=capture_s,
            )
            stats.late_s = max(stats.late_s, time.time() - ready_s)
            await _put(session, f"{base}/part{n}.m4s", data, headers)
            stats.parts += 1
            stats.bytes_sent += len(data)
            n += 1
        await _put(session, f"{base}/index.m3u8", b"#EXTM3U\n#EXT-X-ENDLIST\n", headers)
    return stats


async def _put(
    session: aiohttp.ClientSession, url: str, data: bytes, headers: dict[str, str]
) -> None:
    async with session.put(url, data=data, headers=headers) as response:
        if response.status >= 300:
            body = (await response.text())[:200]
            raise RuntimeError(f"ingest refused {url}: {response.status} {body}")


def ffmpeg_command(config: PublishConfig, ffmpeg: str = "ffmpeg") -> list[str]:
    """An ffmpeg command publishing a test pattern to the ingest as `publish` would: one CMAF
    fragment (HLS fMP4 "segment") per part, a key frame every `gop_s`, each stamped with a
    `prft` box of the wall clock when ffmpeg wrote it (its capture stamp)."""
    frames = max(1, round(config.part_s * config.fps))
    gop_frames = max(frames, round(config.gop_s / config.part_s) * frames)
    rate = f"{config.bitrate_kbps:g}k"
    command = [
        ffmpeg, "-hide_banner", "-loglevel", "error", "-re",
        "-f", "lavfi", "-i", f"testsrc2=size={WIDTH}x{HEIGHT}:rate={config.fps}",
    ]  # fmt: skip
    if config.duration_s > 0:
        command += ["-t", f"{config.duration_s:g}"]
    command += [
        "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency",
        "-g", str(gop_frames), "-keyint_min", str(gop_frames), "-sc_threshold", "0",
        "-b:v", rate, "-maxrate", rate, "-bufsize", rate,
        "-f", "hls", "-hls_time", f"{frames / config.fps:.6f}", "-hls_segment_type", "fmp4",
        "-hls_list_size", "30", "-hls_flags", "delete_segments",
        "-hls_segment_options", "write_prft=wallclock",
        "-method", "PUT", "-http_persistent", "1",
        "-headers", f"Authorization: Bearer {config.key}\r\n",
        f"{config.ingest.rstrip('/')}/index.m3u8",
    ]  # fmt: skip
    return command


async def publish_with_ffmpeg(config: PublishConfig) -> None:
    """Run `ffmpeg_command` until it ends or this is cancelled (then ffmpeg is stopped)."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise RuntimeError("--publisher ffmpeg needs ffmpeg on PATH")
    process = await asyncio.create_subprocess_exec(
        *ffmpeg_command(config, ffmpeg), stdin=asyncio.subprocess.DEVNULL
    )
    try:
        code = await process.wait()
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 5.0)
            except TimeoutError:
                process.kill()
                await process.wait()
    if code != 0:
        raise RuntimeError(f"ffmpeg exited with code {code}")
