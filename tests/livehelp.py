"""A live feed whose RSS and limit the test sets, and the feed threads that are running."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from meno_jupyter.core.live import LiveFeed
from meno_jupyter.core.memory import GIB, MemoryLimit


def fake_limit(limit_gib: float, available_gib: float) -> MemoryLimit:
    """A limit as the core reports one, on a 16 GiB machine."""
    return MemoryLimit(limit_bytes=int(limit_gib * GIB), available_bytes=int(available_gib * GIB),
                       source="test", system_total_bytes=16 * GIB)


def live_threads() -> list[threading.Thread]:
    """The feed threads alive now."""
    return [t for t in threading.enumerate() if t.name == "meno-live" and t.is_alive()]


class FakeMemory:
    """A feed whose RSS the test sets (1 GiB to start), against a fixed limit."""

    def __init__(self, limit: MemoryLimit) -> None:
        self.rss = 1 * GIB
        self.feed = LiveFeed(reader=lambda: self.rss, children_reader=lambda: 0,
                             limit_reader=lambda: limit)


def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    """Poll ``condition`` until it holds; False when ``timeout_s`` passes first."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
