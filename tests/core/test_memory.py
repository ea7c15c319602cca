from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from meno_jupyter.core import memory
from meno_jupyter.core.memory import (
    MIB,
    PEAK_WATCH,
    PeakWatch,
    cgroup_limit,
    child_pids,
    effective_limit,
    format_bytes,
    pressure_level,
    read_children_rss,
    read_hwm,
    read_rss,
)
from tests.memhelp import keep, spike

LINUX = sys.platform.startswith("linux")


def test_read_rss_agrees_with_psutil() -> None:
    ours = read_rss()
    theirs = psutil.Process().memory_info().rss
    assert abs(ours - theirs) < 8 * MIB


def test_read_rss_sees_an_allocation() -> None:
    before = read_rss()
    block = keep(50)
    assert read_rss() - before >= 49 * MIB
    block.close()


@pytest.mark.skipif(not LINUX, reason="the kernel high-water mark is Linux's")
def test_exact_peak_catches_a_spike_between_samples() -> None:
    token = PEAK_WATCH.open()
    assert token is not None
    start = read_rss()
    spike(64)
    peak = PEAK_WATCH.close(token)
    assert peak is not None
    assert 63 * MIB <= peak - start <= 66 * MIB


@pytest.mark.skipif(not LINUX, reason="the kernel high-water mark is Linux's")
def test_nested_blocks_each_get_their_own_exact_peak() -> None:
    outer = PEAK_WATCH.open()
    outer_start = read_rss()
    spike(96)
    inner = PEAK_WATCH.open()
    inner_start = read_rss()
    spike(32)
    inner_peak = PEAK_WATCH.close(inner)
    outer_peak = PEAK_WATCH.close(outer)
    assert inner_peak is not None and outer_peak is not None
    # The inner reset must not erase the outer block's larger, earlier spike.
    assert outer_peak - outer_start >= 95 * MIB
    assert 31 * MIB <= inner_peak - inner_start <= 34 * MIB


def test_peak_watch_without_support_returns_none() -> None:
    watch = PeakWatch(read=lambda: None, reset=lambda: False)
    assert not watch.supported
    assert watch.open() is None
    assert watch.close(None) is None


def test_peak_watch_folds_marks_from_a_fake_counter() -> None:
    mark = {"value": 10}

    def reset() -> bool:
        mark["value"] = 10
        return True

    watch = PeakWatch(read=lambda: mark["value"], reset=reset)
    outer = watch.open()
    mark["value"] = 500  # the outer block's spike
    inner = watch.open()  # resets the counter, but folds 500 into the outer block first
    mark["value"] = 70
    assert watch.close(inner) == 70
    assert watch.close(outer) == 500


@pytest.mark.skipif(not LINUX, reason="VmHWM is Linux's")
def test_read_hwm_is_at_least_rss() -> None:
    hwm = read_hwm()
    assert hwm is not None and hwm >= read_rss() - MIB


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_takes_the_tightest_limit_up_the_tree(tmp_path: Path) -> None:
    proc = tmp_path / "proc_cgroup"
    proc.write_text("0::/user.slice/kernel.scope\n")
    root = tmp_path / "cg"
    _write(root / "user.slice/kernel.scope/memory.max", "max\n")
    _write(root / "user.slice/kernel.scope/memory.current", "1000\n")
    _write(root / "user.slice/memory.max", "4294967296\n")
    _write(root / "user.slice/memory.current", "2147483648\n")
    assert cgroup_limit(root, proc) == (4294967296, 2147483648, "cgroup v2")


def test_cgroup_v2_without_limit_is_none(tmp_path: Path) -> None:
    proc = tmp_path / "proc_cgroup"
    proc.write_text("0::/\n")
    _write(tmp_path / "cg/memory.max", "max\n")
    assert cgroup_limit(tmp_path / "cg", proc) is None


def test_cgroup_v1_limit_and_unlimited(tmp_path: Path) -> None:
    proc = tmp_path / "proc_cgroup"
    proc.write_text("12:cpu,cpuacct:/x\n11:memory:/docker/abc\n")
    root = tmp_path / "cg"
    _write(root / "memory/docker/abc/memory.limit_in_bytes", str(2 * 1024**3))
    _write(root / "memory/docker/abc/memory.usage_in_bytes", str(1024**3))
    assert cgroup_limit(root, proc) == (2 * 1024**3, 1024**3, "cgroup v1")
    _write(root / "memory/docker/abc/memory.limit_in_bytes", "9223372036854771712")
    _write(root / "memory/memory.limit_in_bytes", "9223372036854771712")
    assert cgroup_limit(root, proc) is None


def test_effective_limit_never_exceeds_the_machine() -> None:
    limit = effective_limit()
    assert 0 < limit.limit_bytes <= psutil.virtual_memory().total
    assert limit.source in {"system", "cgroup v1", "cgroup v2"}
    assert 0 <= limit.available_bytes <= limit.system_total_bytes


def test_effective_limit_uses_a_cgroup_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(memory, "cgroup_limit", lambda: (512 * MIB, 500 * MIB, "cgroup v2"))
    limit = effective_limit()
    assert limit.limit_bytes == 512 * MIB
    assert limit.source == "cgroup v2"
    assert limit.available_bytes == 12 * MIB


@pytest.mark.parametrize(
    ("used", "expected"), [(0, "low"), (69, "low"), (70, "medium"), (85, "high"), (120, "high")]
)
def test_pressure_levels(used: int, expected: str) -> None:
    assert pressure_level(used, 100) == expected


def test_pressure_thresholds_are_configurable_and_checked() -> None:
    assert pressure_level(50, 100, (0.4, 0.6)) == "medium"
    with pytest.raises(ValueError, match="thresholds"):
        pressure_level(50, 100, (0.9, 0.5))
    with pytest.raises(ValueError, match="positive"):
        pressure_level(50, 0)


def test_children_rss_counts_a_child_process() -> None:
    code = (
        "import numpy as np, time; a = np.ones(200 * 2**20 // 8); "
        "print('ready', flush=True); time.sleep(30)"
    )
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        assert child.pid in child_pids()
        assert read_children_rss() >= 190 * MIB
    finally:
        child.kill()
        child.wait()
    deadline = time.monotonic() + 5
    while child.pid in child_pids() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert child.pid not in child_pids()


@pytest.mark.parametrize(
    ("value", "text"),
    [(0, "0 B"), (1023, "1023 B"), (64 * MIB, "64.0 MiB"), (-3 * MIB, "-3.0 MiB"),
     (3 * 1024 * MIB, "3.0 GiB"), (None, "n/a")],
)
def test_format_bytes(value: int | None, text: str) -> None:
    assert format_bytes(value) == text


def test_format_bytes_signed() -> None:
    assert format_bytes(MIB, signed=True) == "+1.0 MiB"


def test_cluster_history_keeps_polls_bounded_and_stops_on_a_broken_client() -> None:
    from meno_jupyter.core.cluster import ClusterHistory, WorkerStatus

    history = ClusterHistory(client=None, capacity=3)
    for second in range(5):
        history.add(float(second), (WorkerStatus("tcp://a:1", 10 + second, 0, 0, None),
                                    WorkerStatus("tcp://b:2", 100, 0, 0, None)))
    assert history.totals() == ([2.0, 3.0, 4.0], [112, 113, 114])
    assert history.per_worker()["tcp://a:1"] == ([2.0, 3.0, 4.0], [12, 13, 14])
    broken = ClusterHistory(client=object())  # no scheduler_info: as a closed client fails
    assert broken.poll(1.0) == () and "stopped answering" in (broken.error or "")
    assert broken.poll(5.0) == ()  # asked once, not again
