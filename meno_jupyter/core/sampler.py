"""A background thread that samples RSS into a bounded buffer and notes where memory grew."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from meno_jupyter.core.attribution import GrowthLine, code_line, user_frame
from meno_jupyter.core.memory import MIB, read_children_rss, read_rss

DEFAULT_INTERVAL_S = 0.01
MIN_INTERVAL_S = 0.001
MAX_INTERVAL_S = 60.0
DEFAULT_CAPACITY = 20_000


class DecimatingBuffer:
    """A bounded ``(t, value)`` series that halves its resolution instead of growing.

    When full, neighbouring points are merged pairwise, keeping the larger value of each
    pair (so peaks survive), and later points are taken at twice the stride. Hours of
    sampling therefore cost at most ``capacity`` points.

    Examples
    --------
    >>> buffer = DecimatingBuffer(capacity=4)
    >>> for i in range(10):
    ...     buffer.append(float(i), i)
    >>> len(buffer) <= 4
    True
    """

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 2:
            raise ValueError("capacity must be at least 2")
        self.capacity = capacity
        self.stride = 1
        self._times: list[float] = []
        self._values: list[int] = []
        self._pending: tuple[float, int] | None = None
        self._pending_count = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._times) + (1 if self._pending is not None else 0)

    def append(self, t: float, value: int) -> None:
        """Add one sample; with a stride above 1, keep the largest of each stride's samples."""
        with self._lock:
            if self._pending is None or value > self._pending[1]:
                self._pending = (t, value)
            self._pending_count += 1
            if self._pending_count < self.stride:
                return
            self._times.append(self._pending[0])
            self._values.append(self._pending[1])
            self._pending = None
            self._pending_count = 0
            if len(self._times) >= self.capacity:
                self._halve()

    def _halve(self) -> None:
        times, values = self._times, self._values
        merged_t: list[float] = []
        merged_v: list[int] = []
        for i in range(0, len(times) - 1, 2):
            keep = i if values[i] >= values[i + 1] else i + 1
            merged_t.append(times[keep])
            merged_v.append(values[keep])
        if len(times) % 2:
            merged_t.append(times[-1])
            merged_v.append(values[-1])
        self._times, self._values = merged_t, merged_v
        self.stride *= 2

    def series(self) -> tuple[list[float], list[int]]:
        """Return copies of the times and values, the partial stride included."""
        with self._lock:
            times, values = list(self._times), list(self._values)
            if self._pending is not None:
                times.append(self._pending[0])
                values.append(self._pending[1])
        return times, values


@dataclass(slots=True)
class _GrowthTally:
    growth_bytes: int = 0
    events: int = 0
    first_t_s: float = 0.0
    last_t_s: float = 0.0
    function: str = ""


@dataclass
class SamplerState:
    """What a sampler has seen so far (mutable; read it after :meth:`Sampler.stop`)."""

    buffer: DecimatingBuffer
    max_rss: int = 0
    max_rss_t_s: float = 0.0
    children_max_rss: int = 0
    samples: int = 0
    growth: dict[tuple[str, int], _GrowthTally] = field(default_factory=dict)


class Sampler:
    """Sample RSS every ``interval_s`` on a daemon thread.

    Parameters
    ----------
    interval_s : float
        Seconds between samples (default 10 ms).
    capacity : int
        Points kept before the series is decimated.
    growth_threshold_bytes : int
        RSS growth that triggers a look at the watched thread's current user-code line.
    watch_thread_id : int, optional
        Thread whose frames attribute growth (default: the thread that creates the sampler).
    children_every : int
        Sample children's RSS every this many ticks (0 disables).
    tick_hook : callable, optional
        Called on the sampler thread after each sample (tracemalloc snapshots use it).

    Examples
    --------
    >>> with Sampler(interval_s=0.005) as sampler:
    ...     time.sleep(0.05)
    >>> sampler.state.samples > 1
    True
    """

    def __init__(
        self,
        interval_s: float = DEFAULT_INTERVAL_S,
        *,
        capacity: int = DEFAULT_CAPACITY,
        growth_threshold_bytes: int = MIB,
        watch_thread_id: int | None = None,
        children_every: int = 10,
        tick_hook: Callable[[], None] | None = None,
    ) -> None:
        validate_interval(interval_s)
        self.interval_s = interval_s
        self.growth_threshold_bytes = growth_threshold_bytes
        self.watch_thread_id = (
            threading.get_ident() if watch_thread_id is None else watch_thread_id
        )
        self.children_every = children_every
        self.tick_hook = tick_hook
        self.state = SamplerState(DecimatingBuffer(capacity))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0
        self._reference_rss = 0

    @property
    def running(self) -> bool:
        """Whether the sampling thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> Sampler:
        """Take a first sample and start the thread."""
        if self._thread is not None:
            raise RuntimeError("a Sampler can be started once")
        self._t0 = time.perf_counter()
        self._reference_rss = read_rss()
        self._record(0.0, self._reference_rss)
        self._thread = threading.Thread(target=self._run, name="meno-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> SamplerState:
        """Stop the thread, take a last sample, and return the state."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._record(time.perf_counter() - self._t0, read_rss())
        return self.state

    def __enter__(self) -> Sampler:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def elapsed_s(self) -> float:
        """Seconds since the sampler started."""
        return time.perf_counter() - self._t0

    def _record(self, t_s: float, rss: int) -> None:
        state = self.state
        state.buffer.append(t_s, rss)
        state.samples += 1
        if rss > state.max_rss:
            state.max_rss, state.max_rss_t_s = rss, t_s

    def _run(self) -> None:
        tick = 0
        while not self._stop.wait(self.interval_s):
            tick += 1
            t_s = time.perf_counter() - self._t0
            rss = read_rss()
            self._record(t_s, rss)
            if rss - self._reference_rss >= self.growth_threshold_bytes:
                self._attribute(t_s, rss - self._reference_rss)
                self._reference_rss = rss
            elif rss < self._reference_rss:
                self._reference_rss = rss
            if self.children_every and tick % self.children_every == 0:
                children = read_children_rss()
                self.state.children_max_rss = max(self.state.children_max_rss, children)
            if self.tick_hook is not None:
                self.tick_hook()

    def _attribute(self, t_s: float, growth: int) -> None:
        frame = user_frame(sys._current_frames().get(self.watch_thread_id))
        if frame is None:
            return
        key = (frame.f_code.co_filename, frame.f_lineno)
        function = frame.f_code.co_name
        del frame  # never keep another thread's frame alive
        tally = self.state.growth.get(key)
        if tally is None:
            tally = self.state.growth[key] = _GrowthTally(first_t_s=t_s, function=function)
        tally.growth_bytes += growth
        tally.events += 1
        tally.last_t_s = t_s

    def growth_lines(self, top_n: int | None = None) -> list[GrowthLine]:
        """Return the lines that were running while RSS grew, largest growth first."""
        lines = [
            GrowthLine(code_line(f, n, t.function), t.growth_bytes, t.events, t.first_t_s,
                       t.last_t_s)
            for (f, n), t in self.state.growth.items()
        ]
        lines.sort(key=lambda item: item.growth_bytes, reverse=True)
        return lines if top_n is None else lines[:top_n]


def validate_interval(interval_s: float) -> None:
    """Raise ValueError unless ``interval_s`` is a sensible sampling interval."""
    if not MIN_INTERVAL_S <= interval_s <= MAX_INTERVAL_S:
        raise ValueError(
            f"sampling interval must be between {MIN_INTERVAL_S} and {MAX_INTERVAL_S} s, "
            f"got {interval_s}"
        )
