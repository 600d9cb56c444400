"""Sans-IO protocol and cache logic. No sockets, no clocks: time is passed in."""

from relay.core.blocking import Decision, Verdict, decide_reload, parse_reload_query
from relay.core.cache import EdgeCache
from relay.core.inventory import Inventory, Order, Outcome
from relay.core.playlist import ParsedPlaylist, check_playlist, parse_playlist, render_playlist
from relay.core.stream import LiveStream, Part, Segment

__all__ = [
    "Decision",
    "EdgeCache",
    "Inventory",
    "LiveStream",
    "Order",
    "Outcome",
    "ParsedPlaylist",
    "Part",
    "Segment",
    "Verdict",
    "check_playlist",
    "decide_reload",
    "parse_playlist",
    "parse_reload_query",
    "render_playlist",
]
