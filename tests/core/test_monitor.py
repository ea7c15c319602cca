from __future__ import annotations

import logging
import time
from collections.abc import Callable

import pytest

from meno_jupyter.core.caches import BoundedCache
from meno_jupyter.core.memory import MIB, MemoryLimit, read_rss
from meno_jupyter.core.monitor import MemoryMonitor
from tests.memhelp import keep


def fixed_limit(total: int) -> Callable[[], MemoryLimit]:
    return lambda: MemoryLimit(total, "cgroup v2", total // 2, total * 4)


def scripted(values: list[int]) -> Callable[[], int]:
    feed = iter(values)
    return lambda: next(feed)


def test_snapshot_baseline_delta_peak() -> None:
    readings = [100, 150, 400, 120]
    monitor = MemoryMonitor(reader=scripted(readings), limit_reader=fixed_limit(1000))
    base = monitor.set_baseline()
    assert base.rss_bytes == 100 and base.percent == pytest.approx(10.0)
    assert base.limit_source == "cgroup v2" and base.vms_bytes > 0
    monitor.take_snapshot("work")
    monitor.take_snapshot("spike")
    assert monitor.delta() == 20
    peak = monitor.peak()
    assert peak is not None and peak.label == "spike" and peak.rss_bytes == 400


def test_history_is_bounded() -> None:
    monitor = MemoryMonitor(history=5, reader=lambda: 10, limit_reader=fixed_limit(100))
    for _ in range(50):
        monitor.take_snapshot()
    assert len(monitor.snapshots()) == 5


def test_count_objects_on_request() -> None:
    monitor = MemoryMonitor()
    assert monitor.snapshot().python_objects is None
    objects = monitor.snapshot(count_objects=True).python_objects
    assert objects is not None and objects > 1000


def test_trend_flags_steady_growth_but_not_noise() -> None:
    growing = [1_000_000_000 + i * 2 * MIB for i in range(20)]
    monitor = MemoryMonitor(reader=scripted(growing), limit_reader=fixed_limit(10**12))
    for _ in growing:
        monitor.take_snapshot()
    trend = monitor.trend(20)
    assert trend.leaking and trend.growth_per_snapshot_bytes == pytest.approx(2 * MIB)
    assert "leak" in str(trend)

    noisy = [1_000_000_000 + (5 * MIB if i % 3 == 0 else -3 * MIB) for i in range(20)]
    monitor = MemoryMonitor(reader=scripted(noisy), limit_reader=fixed_limit(10**12))
    for _ in noisy:
        monitor.take_snapshot()
    assert not monitor.trend(20).leaking


def test_trend_needs_three_snapshots() -> None:
    monitor = MemoryMonitor()
    monitor.take_snapshot()
    with pytest.raises(ValueError, match="at least 3"):
        monitor.trend()


def test_pressure_actions_fire_once_per_crossing() -> None:
    # low, medium, medium, high, high, low, high (limit 100, thresholds 70 % / 85 %)
    readings = [10, 75, 80, 90, 95, 20, 99]
    monitor = MemoryMonitor(reader=scripted(readings), limit_reader=fixed_limit(100))
    fired: list[tuple[str, int]] = []
    monitor.on_pressure("medium", lambda s: fired.append(("medium", s.rss_bytes)))
    monitor.on_pressure("high", lambda s: fired.append(("high", s.rss_bytes)))
    for _ in readings:
        monitor.take_snapshot()
    assert fired == [("medium", 75), ("high", 90), ("medium", 99), ("high", 99)]
    assert monitor.level == "high"


def test_a_failing_action_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    monitor = MemoryMonitor(reader=scripted([10, 95]), limit_reader=fixed_limit(100))
    calls: list[str] = []

    def broken(snapshot: object) -> None:
        raise RuntimeError("boom")

    monitor.on_pressure("high", broken)
    monitor.on_pressure("high", lambda s: calls.append("ran"))
    with caplog.at_level(logging.ERROR, logger="meno_jupyter"):
        monitor.take_snapshot()
        monitor.take_snapshot()
    assert calls == ["ran"] and "pressure action" in caplog.text


def test_builtin_actions_by_name(caplog: pytest.LogCaptureFixture) -> None:
    cache: BoundedCache[int, bytes] = BoundedCache(max_bytes=1000)
    for i in range(10):
        cache[i] = b"x" * 100
    monitor = MemoryMonitor(reader=scripted([10, 95]), limit_reader=fixed_limit(100))
    for name in ("collect", "trim", "shrink_caches", "warn"):
        monitor.on_pressure("high", name)
    with caplog.at_level(logging.WARNING, logger="meno_jupyter"):
        monitor.take_snapshot()
        monitor.take_snapshot()
    assert cache.size_bytes <= 500  # halved by the high-pressure action
    assert "memory pressure high" in caplog.text
    with pytest.raises(ValueError, match="unknown action"):
        monitor.on_pressure("high", "panic")
    with pytest.raises(ValueError, match="level"):
        monitor.on_pressure("low", "warn")  # type: ignore[arg-type]


def test_pressure_for_real_by_allocating_past_a_low_threshold() -> None:
    now = read_rss()
    # A limit that puts the process at 60 % now: 150 MiB more crosses medium (70 %).
    limit = int(now / 0.60)
    monitor = MemoryMonitor(limit_reader=fixed_limit(limit))
    fired: list[float] = []
    monitor.on_pressure("medium", lambda s: fired.append(s.percent))
    monitor.take_snapshot()
    block = keep(max(150, int(0.15 * limit / MIB)))
    monitor.take_snapshot()
    monitor.take_snapshot()
    block.close()
    assert len(fired) == 1 and fired[0] >= 70


def test_background_mode_takes_snapshots_and_stops() -> None:
    with MemoryMonitor(interval=0.01) as monitor:
        time.sleep(0.2)
        assert monitor.running
    assert not monitor.running
    assert len(monitor.snapshots()) >= 5


def test_check_threshold() -> None:
    assert MemoryMonitor(threshold=0.5, reader=lambda: 60,
                         limit_reader=fixed_limit(100)).check_threshold()
    assert not MemoryMonitor(threshold=0.5, reader=lambda: 40,
                             limit_reader=fixed_limit(100)).check_threshold()


@pytest.mark.parametrize("kwargs", [{"threshold": 0}, {"threshold": 1.5}, {"interval": 0},
                                    {"thresholds": (0.9, 0.5)}])
def test_bad_settings(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        MemoryMonitor(**kwargs)  # type: ignore[arg-type]
