"""Reading a push stream (init segment, then CMAF fragments, one byte stream), sans-IO.

An edge relaying its parent's push stream and a push viewer both read the same bytes: the init
segment (ftyp + moov) first, then fragments as they arrive, cut at arbitrary chunk boundaries.
"""

from __future__ import annotations

from relay.core.fmp4 import BytesLike, Fragment, FragmentSplitter, iter_boxes, parse_init

INIT_MAX_BYTES = 1024 * 1024
"""An init segment larger than this is refused (the stream is not what it claims)."""


class PushStreamReader:
    """Feed chunks of a push response; get its init segment and its fragments as they complete."""

    def __init__(self) -> None:
        self.init: bytes | None = None
        self._pending = bytearray()
        self._splitter: FragmentSplitter | None = None

    def feed(self, chunk: BytesLike) -> list[Fragment]:
        """The fragments `chunk` completes (ValueError for a stream that is not fMP4)."""
        if self._splitter is not None:
            return self._splitter.feed(chunk)
        self._pending += chunk
        end = _init_end(self._pending)
        if end is None:
            return []
        self.init = bytes(self._pending[:end])
        self._splitter = FragmentSplitter(parse_init(self.init))
        rest = bytes(self._pending[end:])
        self._pending.clear()
        return self._splitter.feed(rest)


def _init_end(data: bytearray) -> int | None:
    """Where the moov ends, once it has arrived; None before."""
    boxes = iter_boxes(data)
    while True:
        try:
            box = next(boxes)
        except StopIteration:
            return None
        except ValueError:  # the last box has not fully arrived (or these are not boxes)
            if len(data) > INIT_MAX_BYTES:
                raise ValueError(f"no init segment in the first {INIT_MAX_BYTES} bytes") from None
            return None
        if box.type == "moov":
            return box.end
        if box.type in ("moof", "mdat"):
            raise ValueError("the push stream does not start with an init segment")
