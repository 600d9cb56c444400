"""A real viewer's play head, by the same rules the simulator's viewers follow.

A unit (part, segment or pushed chunk) plays when it has arrived and the one before it has
finished; the first one plays `startup_s` after it arrives. Its replay latency is when it plays
minus when its first frame was captured. Waiting for a unit after the one before has finished is
rebuffering. All times are seconds on the run's clock (0 = the run's start), from a monotonic
clock on the client.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field


@dataclass
class Playback:
    """What a crowd of players saw."""

    bin_s: float
    n_bins: int
    replay_s: array[float] = field(default_factory=lambda: array("d"))
    """Replay latency of every unit played."""
    join_s: array[float] = field(default_factory=lambda: array("d"))
    """Arrival (or failover) to the first unit on screen, per session that started playing."""
    stall_s: float = 0.0
    watched_s: float = 0.0
    """Viewer-seconds from the first unit on screen to leaving."""
    rebuffer_s: list[float] = field(default_factory=list)
    """Rebuffering viewer-seconds per time bin (by when the stall ended)."""

    def __post_init__(self) -> None:
        self.rebuffer_s = [0.0] * self.n_bins

    def stalled(self, until_s: float, stall_s: float) -> None:
        self.stall_s += stall_s
        b = min(max(int(until_s / self.bin_s), 0), self.n_bins - 1)
        self.rebuffer_s[b] += stall_s


class Player:
    """One viewer session's play head."""

    __slots__ = ("arrived_s", "latency_s", "play_end_s", "play_start_s", "playback", "startup_s")

    def __init__(self, playback: Playback, arrived_s: float, startup_s: float = 0.0) -> None:
        self.playback = playback
        self.arrived_s = arrived_s
        self.startup_s = startup_s
        self.play_start_s: float | None = None
        self.play_end_s = 0.0
        self.latency_s: float | None = None
        """Replay latency of the unit played last (None before the first)."""

    def receive(self, received_s: float, capture_s: float, duration_s: float) -> None:
        """A unit captured at `capture_s`, lasting `duration_s`, fully arrived at `received_s`."""
        playback = self.playback
        if self.play_start_s is None:
            play_at = received_s + self.startup_s
            self.play_start_s = play_at
            playback.join_s.append(play_at - self.arrived_s)
        elif received_s > self.play_end_s:
            play_at = received_s
            playback.stalled(received_s, received_s - self.play_end_s)
        else:
            play_at = self.play_end_s
        self.latency_s = play_at - capture_s
        playback.replay_s.append(self.latency_s)
        self.play_end_s = play_at + duration_s

    def leave(self, now_s: float) -> None:
        """The session ends at `now_s`: count the time it watched."""
        if self.play_start_s is not None and now_s > self.play_start_s:
            self.playback.watched_s += now_s - self.play_start_s
