"""The shared live feed: one thread for every view, stopped with the last one."""

from __future__ import annotations

import time

import pytest

from meno_jupyter.core.live import LiveSample, validate_refresh
from meno_jupyter.core.memory import GIB
from tests.livehelp import FakeMemory, fake_limit, live_threads, wait_until

LIMIT = fake_limit(8, 4)


def test_views_share_one_thread_that_stops_with_the_last() -> None:
    feed = FakeMemory(LIMIT).feed
    a: list[LiveSample] = []
    b: list[LiveSample] = []
    first = feed.subscribe(a.append, 0.1)
    second = feed.subscribe(b.append, 0.2)
    assert feed.wait_for_samples(4)
    assert len(live_threads()) == 1
    first.close()
    assert feed.running and feed.subscribers == 1
    second.close()
    assert not feed.running
    assert not live_threads()
    assert a and b
    assert len(a) >= len(b)  # each view at its own rate


def test_each_view_is_called_at_its_own_interval() -> None:
    feed = FakeMemory(LIMIT).feed
    fast: list[float] = []
    slow: list[float] = []
    s1 = feed.subscribe(lambda s: fast.append(time.monotonic()), 0.1)
    s2 = feed.subscribe(lambda s: slow.append(time.monotonic()), 0.5)
    time.sleep(1.2)
    s1.close()
    s2.close()
    assert 8 <= len(fast) <= 14
    assert 2 <= len(slow) <= 4


def test_samples_carry_pressure_against_the_limit() -> None:
    memory = FakeMemory(LIMIT)
    feed = memory.feed
    memory.rss = int(7.6 * GIB)
    sample = feed.sample()
    assert sample.pressure == "high"
    assert sample.percent == pytest.approx(95.0)
    memory.rss = 1 * GIB
    assert feed.sample().pressure == "low"


def test_history_is_kept_and_filtered_by_time() -> None:
    memory = FakeMemory(LIMIT)
    feed = memory.feed
    sub = feed.subscribe(lambda s: None, 0.1)
    assert feed.wait_for_samples(3)
    middle = time.time()
    memory.rss = 2 * GIB
    assert feed.wait_for_samples(3)
    sub.close()
    times, _values = feed.series()
    later_times, later_values = feed.series(since=middle)
    assert len(times) >= 6 and len(later_times) >= 3
    assert all(t >= middle for t in later_times)
    assert set(later_values) == {2 * GIB}


def test_a_failing_view_neither_kills_the_thread_nor_the_others(
        caplog: pytest.LogCaptureFixture) -> None:
    feed = FakeMemory(LIMIT).feed
    good: list[LiveSample] = []

    def broken(sample: LiveSample) -> None:
        raise RuntimeError("view is gone")

    bad = feed.subscribe(broken, 0.1)
    ok = feed.subscribe(good.append, 0.1)
    # Two views subscribed a moment apart are due at different times and the feed may take a
    # sample for each: wait for deliveries, not for samples.
    assert wait_until(lambda: len(good) >= 3 and bad.failures >= 3)
    bad.close()
    ok.close()
    assert len(good) >= 3
    assert bad.failures >= 3
    assert sum("failed to update" in r.message for r in caplog.records) == 1


def test_resubscribing_after_the_last_close_starts_a_fresh_thread() -> None:
    feed = FakeMemory(LIMIT).feed
    for _ in range(20):
        sub = feed.subscribe(lambda s: None, 0.1)
        sub.close()
        sub.close()  # closing twice is harmless
    assert not feed.running and not live_threads()
    sub = feed.subscribe(lambda s: None, 0.1)
    assert feed.wait_for_samples(2)
    feed.close()
    assert not feed.running


def test_a_view_may_close_itself_from_its_callback() -> None:
    feed = FakeMemory(LIMIT).feed
    calls: list[int] = []

    def once(sample: LiveSample) -> None:
        calls.append(1)
        holder[0].close()

    holder = [feed.subscribe(once, 0.1)]
    deadline = time.monotonic() + 3
    while feed.running and time.monotonic() < deadline:
        time.sleep(0.02)
    assert calls == [1]
    assert not feed.running


@pytest.mark.parametrize("interval", [0.0, 0.05, 61.0, -1.0])
def test_refresh_interval_out_of_range_is_refused(interval: float) -> None:
    with pytest.raises(ValueError, match="refresh interval"):
        validate_refresh(interval)
    with pytest.raises(ValueError, match="refresh interval"):
        FakeMemory(LIMIT).feed.subscribe(lambda s: None, interval)


def test_no_view_is_called_while_a_module_is_half_imported() -> None:
    # A real import in another thread, held open half-way: what plotly met in notebook 05
    # ("partially initialized module 'pandas' has no attribute 'Series'").
    import importlib.abc
    import importlib.util
    import sys
    import threading

    inside, release = threading.Event(), threading.Event()

    class SlowLoader(importlib.abc.Loader):
        def create_module(self, spec: object) -> None:
            return None

        def exec_module(self, module: object) -> None:
            inside.set()
            release.wait(10)

    class Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, name: str, path: object, target: object = None) -> object:
            if name == "meno_slow_module":
                return importlib.util.spec_from_loader(name, SlowLoader())
            return None

    finder = Finder()
    sys.meta_path.insert(0, finder)
    feed = FakeMemory(LIMIT).feed
    calls: list[LiveSample] = []
    importer = threading.Thread(target=importlib.import_module, args=("meno_slow_module",))
    try:
        importer.start()
        assert inside.wait(10)
        subscription = feed.subscribe(calls.append, 0.1)
        assert feed.wait_for_samples(6)
        assert calls == []  # nothing delivered during the import
        release.set()
        importer.join(10)
        assert feed.wait_for_samples(6)
        assert calls  # delivered again once it is done
        subscription.close()
    finally:
        release.set()
        sys.meta_path.remove(finder)
        sys.modules.pop("meno_slow_module", None)
