"""Pinning benchmark processes to cores, so a server and its load generator do not share one."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def on_cpus(cpus: set[int] | None) -> Iterator[None]:
    """Run this thread (and the processes it starts) on `cpus` inside the block (None: anywhere)."""
    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)
