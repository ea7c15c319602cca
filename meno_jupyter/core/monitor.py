"""``MemoryMonitor``: snapshots, baseline, trend and pressure actions, for scripts and pipelines."""

from __future__ import annotations

import gc
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from meno_jupyter.core.cleanup import trim_allocator
from meno_jupyter.core.leaks import DEFAULT_RSS_FLOOR_BYTES, TrendFit, fit_trend
from meno_jupyter.core.memory import (
    DEFAULT_PRESSURE_THRESHOLDS,
    MemoryLimit,
    PressureLevel,
    check_thresholds,
    effective_limit,
    format_bytes,
    read_rss,
    read_vms,
)

logger = logging.getLogger("meno_jupyter")

LEVEL_ORDER: dict[PressureLevel, int] = {"low": 0, "medium": 1, "high": 2}


@dataclass(frozen=True)
class MemorySnapshot:
    """The process's memory at one moment.

    Attributes
    ----------
    percent : float
        RSS as a percentage of the effective limit.
    python_objects : int or None
        gc-tracked objects, when asked for (it costs a pass over the heap).
    """

    timestamp: float
    label: str | None
    rss_bytes: int
    vms_bytes: int
    percent: float
    available_bytes: int
    limit_bytes: int
    limit_source: str
    pressure: PressureLevel
    python_objects: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a plain dict."""
        return asdict(self)


@dataclass(frozen=True)
class Trend:
    """Growth per snapshot over a window, and whether it looks like a leak."""

    window: int
    fit: TrendFit
    leaking: bool

    @property
    def growth_per_snapshot_bytes(self) -> float:
        """Fitted RSS growth from one snapshot to the next."""
        return self.fit.slope_bytes

    def __str__(self) -> str:
        verdict = "growing steadily (leak?)" if self.leaking else "no steady growth"
        return (f"{format_bytes(self.fit.slope_bytes, signed=True)} per snapshot over "
                f"{self.window} (R² {self.fit.r_squared:.2f}): {verdict}")


class Shrinkable(Protocol):
    """Anything that can give memory back on request (the caches)."""

    def shrink(self, fraction: float = 0.5) -> int:
        """Drop entries down to ``fraction`` of the budget; return the bytes released."""
        ...


_SHRINKABLE: weakref.WeakSet[Any] = weakref.WeakSet()


def register_shrinkable(cache: Shrinkable) -> None:
    """Let pressure actions shrink ``cache`` (held weakly: registering keeps nothing alive)."""
    _SHRINKABLE.add(cache)


def shrink_caches(fraction: float = 0.5) -> int:
    """Shrink every registered cache to ``fraction`` of its budget; return bytes released."""
    return sum(cache.shrink(fraction) for cache in list(_SHRINKABLE))


PressureAction = Callable[["MemorySnapshot"], object]


def action_collect_garbage(snapshot: MemorySnapshot) -> int:
    """Pressure action: a full garbage collection."""
    return gc.collect()


def action_trim_allocator(snapshot: MemorySnapshot) -> bool:
    """Pressure action: glibc ``malloc_trim(0)``."""
    return trim_allocator()[0]


def action_shrink_caches(snapshot: MemorySnapshot) -> int:
    """Pressure action: halve every registered cache."""
    return shrink_caches(0.5)


def action_log_warning(snapshot: MemorySnapshot) -> None:
    """Pressure action: log a warning on the ``meno_jupyter`` logger."""
    logger.warning(
        "memory pressure %s: RSS %s is %.0f%% of the %s limit of %s",
        snapshot.pressure, format_bytes(snapshot.rss_bytes), snapshot.percent,
        snapshot.limit_source, format_bytes(snapshot.limit_bytes),
    )


BUILTIN_ACTIONS: dict[str, PressureAction] = {
    "collect": action_collect_garbage,
    "trim": action_trim_allocator,
    "shrink_caches": action_shrink_caches,
    "warn": action_log_warning,
}


class MemoryMonitor:
    """Watch a process's memory: snapshots, a baseline, a trend, and actions under pressure.

    Parameters
    ----------
    threshold : float
        Share of the effective limit above which :meth:`check_threshold` is True.
    interval : float
        Seconds between snapshots in background mode.
    history : int
        Snapshots kept (older ones are dropped).
    thresholds : tuple of float
        Shares of the limit where pressure turns ``medium`` and ``high``.
    reader : callable, optional
        Returns the RSS in bytes (default: this process); tests pass a fake.
    limit_reader : callable, optional
        Returns the effective :class:`MemoryLimit`.

    Examples
    --------
    >>> monitor = MemoryMonitor()
    >>> monitor.set_baseline().rss_bytes > 0
    True
    >>> isinstance(monitor.delta(), int)
    True
    """

    def __init__(
        self,
        threshold: float = 0.85,
        interval: float = 1.0,
        *,
        history: int = 3_600,
        thresholds: tuple[float, float] = DEFAULT_PRESSURE_THRESHOLDS,
        reader: Callable[[], int] = read_rss,
        limit_reader: Callable[[], MemoryLimit] = effective_limit,
    ) -> None:
        if not 0 < threshold <= 1:
            raise ValueError(f"threshold is a share of the limit in (0, 1], got {threshold}")
        if interval <= 0:
            raise ValueError(f"interval must be positive, got {interval}")
        check_thresholds(thresholds)
        self.threshold = threshold
        self.interval = interval
        self.thresholds = thresholds
        self._reader = reader
        self._limit_reader = limit_reader
        self.history: deque[MemorySnapshot] = deque(maxlen=history)
        self.baseline: MemorySnapshot | None = None
        self._actions: dict[PressureLevel, list[PressureAction]] = {"medium": [], "high": []}
        self._level: PressureLevel = "low"
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ snapshots

    def snapshot(self, label: str | None = None, *, count_objects: bool = False
                 ) -> MemorySnapshot:
        """Measure now (not kept in the history; see :meth:`take_snapshot`)."""
        rss = self._reader()
        limit = self._limit_reader()
        return MemorySnapshot(
            timestamp=time.time(), label=label, rss_bytes=rss, vms_bytes=read_vms(),
            percent=100.0 * rss / limit.limit_bytes, available_bytes=limit.available_bytes,
            limit_bytes=limit.limit_bytes, limit_source=limit.source,
            pressure=limit.pressure(rss, self.thresholds),
            python_objects=len(gc.get_objects()) if count_objects else None,
        )

    def take_snapshot(self, label: str | None = None, *, count_objects: bool = False
                      ) -> MemorySnapshot:
        """Measure now, keep it in the history, and run pressure actions on a crossing."""
        snap = self.snapshot(label, count_objects=count_objects)
        with self._lock:
            self.history.append(snap)
        self._handle_pressure(snap)
        return snap

    def set_baseline(self, label: str | None = "baseline") -> MemorySnapshot:
        """Take the snapshot that :meth:`delta` compares with."""
        self.baseline = self.take_snapshot(label)
        return self.baseline

    def delta(self) -> int:
        """RSS now minus the baseline's, in bytes (the baseline is set if missing)."""
        if self.baseline is None:
            self.set_baseline()
        assert self.baseline is not None
        return self._reader() - self.baseline.rss_bytes

    def peak(self) -> MemorySnapshot | None:
        """Return the snapshot with the largest RSS in the history."""
        with self._lock:
            return max(self.history, key=lambda s: s.rss_bytes, default=None)

    def trend(self, window: int = 20, *, floor_bytes: int = DEFAULT_RSS_FLOOR_BYTES) -> Trend:
        """Fit RSS growth over the last ``window`` snapshots; say whether it looks like a leak.

        The verdict needs growth above ``floor_bytes`` per snapshot, above three standard
        errors and with R² ≥ 0.8: noise, a one-off step or a sawtooth is not a leak.
        """
        with self._lock:
            values = [float(s.rss_bytes) for s in list(self.history)[-window:]]
        if len(values) < 3:
            raise ValueError(f"a trend needs at least 3 snapshots, have {len(values)}")
        fit = fit_trend(values)
        leaking = (fit.slope_bytes >= floor_bytes and fit.slope_bytes > 3 * fit.stderr_bytes
                   and fit.r_squared >= 0.8)
        return Trend(len(values), fit, leaking)

    def check_threshold(self) -> bool:
        """Whether RSS is above ``threshold`` of the effective limit now."""
        limit = self._limit_reader()
        return self._reader() >= self.threshold * limit.limit_bytes

    # ------------------------------------------------------------------ pressure

    def on_pressure(self, level: PressureLevel, action: PressureAction | str) -> None:
        """Call ``action(snapshot)`` each time pressure rises to ``level`` (once per crossing).

        Built-in actions by name: ``"collect"``, ``"trim"``, ``"shrink_caches"``, ``"warn"``.
        """
        if level not in self._actions:
            raise ValueError(f"level must be 'medium' or 'high', got {level!r}")
        if isinstance(action, str):
            if action not in BUILTIN_ACTIONS:
                raise ValueError(f"unknown action {action!r}; built in: "
                                 f"{', '.join(BUILTIN_ACTIONS)}")
            action = BUILTIN_ACTIONS[action]
        self._actions[level].append(action)

    @property
    def level(self) -> PressureLevel:
        """The pressure level at the last snapshot."""
        return self._level

    def _handle_pressure(self, snap: MemorySnapshot) -> None:
        with self._lock:
            previous, self._level = self._level, snap.pressure
        crossed = [lvl for lvl in ("medium", "high")
                   if LEVEL_ORDER[snap.pressure] >= LEVEL_ORDER[lvl] > LEVEL_ORDER[previous]]
        for level in crossed:
            for action in self._actions[level]:  # type: ignore[index]
                try:
                    action(snap)
                except Exception:  # one failing action must not stop the others
                    logger.exception("pressure action %r failed", action)

    # ------------------------------------------------------------------ background

    @property
    def running(self) -> bool:
        """Whether background snapshots are being taken."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> MemoryMonitor:
        """Take a snapshot every ``interval`` seconds on a daemon thread."""
        if self.running:
            return self
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="meno-monitor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop background snapshots."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while True:
            self.take_snapshot()
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> MemoryMonitor:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def snapshots(self) -> list[MemorySnapshot]:
        """Return a copy of the history."""
        with self._lock:
            return list(self.history)


def snapshots_frame(snapshots: Iterable[MemorySnapshot]) -> Any:
    """Return snapshots as a pandas DataFrame."""
    import pandas as pd

    return pd.DataFrame([s.to_dict() for s in snapshots])
