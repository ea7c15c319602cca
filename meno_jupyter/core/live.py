"""One background thread that samples memory for every live view (the dashboards).

Each view subscribes with a callback and its own refresh interval; the thread runs at the
fastest interval asked for, keeps a bounded history, and stops when the last view leaves.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from meno_jupyter.core.memory import (
    DEFAULT_PRESSURE_THRESHOLDS,
    MemoryLimit,
    PressureLevel,
    effective_limit,
    pressure_level,
    read_children_rss,
    read_rss,
)
from meno_jupyter.core.sampler import DecimatingBuffer

logger = logging.getLogger("meno_jupyter")

MIN_REFRESH_S = 0.1
MAX_REFRESH_S = 60.0
DEFAULT_HISTORY_POINTS = 8_000
LIMIT_REFRESH_S = 5.0


@dataclass(frozen=True)
class LiveSample:
    """The process's memory at one moment, as a live view shows it.

    Attributes
    ----------
    timestamp : float
        Unix time of the sample.
    children_bytes : int
        RSS of the process's children (worker processes) together.
    """

    timestamp: float
    rss_bytes: int
    children_bytes: int
    limit: MemoryLimit
    pressure: PressureLevel

    @property
    def percent(self) -> float:
        """RSS and children as a percentage of the effective limit."""
        return 100.0 * (self.rss_bytes + self.children_bytes) / self.limit.limit_bytes


def validate_refresh(interval_s: float) -> None:
    """Raise ValueError unless ``interval_s`` is a sensible refresh interval for a view."""
    if not MIN_REFRESH_S <= interval_s <= MAX_REFRESH_S:
        raise ValueError(f"refresh interval must be between {MIN_REFRESH_S} and "
                         f"{MAX_REFRESH_S} s, got {interval_s}")


class Subscription:
    """A live view's place on a :class:`LiveFeed`; :meth:`close` it when the view goes."""

    def __init__(self, feed: LiveFeed, callback: Callable[[LiveSample], object],
                 interval_s: float) -> None:
        self.feed = feed
        self.callback = callback
        self.interval_s = interval_s
        self.next_due = 0.0
        self.failures = 0
        self.closed = False

    def close(self) -> None:
        """Stop calling back; the feed's thread stops with its last subscription."""
        if not self.closed:
            self.closed = True
            self.feed._unsubscribe(self)


class LiveFeed:
    """Sample RSS, children and pressure on one daemon thread for any number of views.

    Parameters
    ----------
    history_points : int
        Points of history kept (older ones are merged pairwise, peaks kept).
    reader, children_reader, limit_reader : callable, optional
        Where the figures come from (default: this process); tests pass fakes.

    Examples
    --------
    >>> feed = LiveFeed()
    >>> seen = []
    >>> subscription = feed.subscribe(seen.append, interval_s=0.1)
    >>> feed.wait_for_samples(2)
    True
    >>> subscription.close()
    >>> feed.running, seen[0].rss_bytes > 0
    (False, True)
    """

    def __init__(
        self,
        *,
        history_points: int = DEFAULT_HISTORY_POINTS,
        thresholds: tuple[float, float] = DEFAULT_PRESSURE_THRESHOLDS,
        reader: Callable[[], int] = read_rss,
        children_reader: Callable[[], int] = read_children_rss,
        limit_reader: Callable[[], MemoryLimit] = effective_limit,
    ) -> None:
        self.thresholds = thresholds
        self._reader = reader
        self._children_reader = children_reader
        self._limit_reader = limit_reader
        self._history = DecimatingBuffer(history_points)
        self._subscriptions: list[Subscription] = []
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()  # one per thread: a new thread never revives an old one
        self._limit: MemoryLimit | None = None
        self._limit_read_at = 0.0
        self.samples = 0
        self.latest: LiveSample | None = None

    @property
    def running(self) -> bool:
        """Whether the sampling thread is alive."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    @property
    def subscribers(self) -> int:
        """How many views are subscribed."""
        with self._lock:
            return len(self._subscriptions)

    def subscribe(self, callback: Callable[[LiveSample], object], interval_s: float = 0.5
                  ) -> Subscription:
        """Call ``callback(sample)`` on the feed's thread every ``interval_s`` seconds."""
        validate_refresh(interval_s)
        subscription = Subscription(self, callback, interval_s)
        with self._lock:
            self._subscriptions.append(subscription)
            if self._thread is None or not self._thread.is_alive():
                self._stop = threading.Event()
                self._thread = threading.Thread(target=self._run, args=(self._stop,),
                                                name="meno-live", daemon=True)
                self._thread.start()
            self._wake.notify_all()
        return subscription

    def _unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            if subscription in self._subscriptions:
                self._subscriptions.remove(subscription)
            last = not self._subscriptions
            thread = self._thread
            if last:
                self._stop.set()
                self._thread = None
            self._wake.notify_all()
        if last and thread is not None and thread is not threading.current_thread():
            thread.join()

    def close(self) -> None:
        """Drop every subscription and stop the thread."""
        with self._lock:
            subscriptions = list(self._subscriptions)
        for subscription in subscriptions:
            subscription.close()

    def series(self, since: float | None = None) -> tuple[list[float], list[int]]:
        """Return the sampled history (Unix times, RSS bytes), from ``since`` if given."""
        times, values = self._history.series()
        if since is None:
            return times, values
        start = next((i for i, t in enumerate(times) if t >= since), len(times))
        return times[start:], values[start:]

    def wait_for_samples(self, count: int, timeout_s: float = 5.0) -> bool:
        """Block until ``count`` more samples were taken; False on timeout (for tests)."""
        target = self.samples + count
        deadline = time.monotonic() + timeout_s
        while self.samples < target:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def sample(self) -> LiveSample:
        """Measure now, without recording it in the history."""
        now = time.time()
        if self._limit is None or now - self._limit_read_at > LIMIT_REFRESH_S:
            self._limit = self._limit_reader()
            self._limit_read_at = now
        rss = self._reader()
        children = self._children_reader()
        level = pressure_level(rss + children, self._limit.limit_bytes, self.thresholds)
        return LiveSample(now, rss, children, self._limit, level)

    def _run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            sample = self.sample()
            self._history.append(sample.timestamp, sample.rss_bytes)
            self.latest = sample
            self.samples += 1
            with self._lock:
                due = [s for s in self._subscriptions if s.next_due <= time.monotonic()]
            if due and import_in_progress():
                # A view must not call into a module that another thread is still importing
                # (plotly asking for a half-imported pandas): deliver at the next wake.
                due = []
            for subscription in due:
                subscription.next_due = time.monotonic() + subscription.interval_s
                self._deliver(subscription, sample)
            with self._lock:
                if stop.is_set() or not self._subscriptions:
                    return
                wait = min(s.next_due for s in self._subscriptions) - time.monotonic()
                self._wake.wait(max(0.0, min(wait, MAX_REFRESH_S)))

    @staticmethod
    def _deliver(subscription: Subscription, sample: LiveSample) -> None:
        if subscription.closed:
            return
        try:
            subscription.callback(sample)
        except Exception:
            subscription.failures += 1
            if subscription.failures == 1:  # say it once, keep the feed alive
                logger.exception("live memory view failed to update")


def import_in_progress() -> bool:
    """Tell whether some thread is importing a module right now (it may be half-made).

    Examples
    --------
    >>> import_in_progress()
    False
    """
    for module in list(sys.modules.values()):
        if getattr(getattr(module, "__spec__", None), "_initializing", False):
            return True
    return False


_SHARED_FEED: LiveFeed | None = None
_SHARED_LOCK = threading.Lock()


def shared_feed() -> LiveFeed:
    """Return the process-wide feed that every dashboard shares."""
    global _SHARED_FEED
    with _SHARED_LOCK:
        if _SHARED_FEED is None:
            _SHARED_FEED = LiveFeed()
        return _SHARED_FEED
