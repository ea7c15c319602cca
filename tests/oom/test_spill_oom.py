"""A cell that does not fit completes after %memspill, or with %memguard on --spill."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cgrouphelp import (
    MemoryCgroup,
    execute,
    execute_ok,
    require_memory_cgroup,
    start_kernel_in,
    stop_kernel,
)

pytestmark = pytest.mark.kernel

LIMIT = 640 * 2**20
SETUP = """
%load_ext meno_jupyter
import numpy as np, pandas as pd
from meno_jupyter.core.spill import anonymous_rss
raw = np.random.default_rng(0).random(300 * 2**20 // 8)            # 300 MiB
n = 75 * 2**20 // 24
frame = pd.DataFrame({"x": np.arange(n, dtype=np.float64), "k": np.arange(n) % 3,
                      "t": pd.date_range("2026-01-01", periods=n, freq="s")},
                     index=pd.RangeIndex(7, 7 + n, name="row"))      # 75 MiB
expected_sum, expected_k = float(raw.sum()), frame.groupby("k")["x"].sum()
"""
# 340 MiB, in steps (a loop, as most cells that grow do).
BIG_CELL = "parts = [np.ones(20 * 2**20 // 8) for _ in range(17)]\nprint(len(parts))"


@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[tuple[Any, Any, MemoryCgroup]]:
    require_memory_cgroup()
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    with MemoryCgroup(LIMIT) as cgroup:
        manager, client = start_kernel_in(cgroup, env=env)
        try:
            yield manager, client, cgroup
        finally:
            stop_kernel(manager, client)


def ok(kernel: tuple[Any, Any, MemoryCgroup], code: str) -> str:
    return execute_ok(kernel[0], kernel[1], code)


def test_only_the_guard_stops_the_cell_and_a_spill_lets_it_complete(
        kernel: tuple[Any, Any, MemoryCgroup], tmp_path: Path) -> None:
    cgroup = kernel[2]
    ok(kernel, SETUP)
    ok(kernel, "%memguard on")
    reply, text = execute(kernel[0], kernel[1], BIG_CELL, 180)
    assert reply["ename"] == "MemoryGuardError", text
    ok(kernel, "del parts" if "parts" in ok(kernel, "print(dir())") else "pass")
    moved = ok(kernel, "before = anonymous_rss()\n%memspill raw frame\n"
                       "freed = before - anonymous_rss()\n"
                       "print('freed share', round(freed / (375 * 2**20), 2))")
    assert "moved 2 variable(s) to disk" in moved, moved
    share = float(moved.split("freed share")[1].split()[0])
    assert share >= 0.9, moved
    assert ok(kernel, BIG_CELL).strip().endswith("17")
    checks = ok(kernel, """
del parts
print(type(raw).__name__, raw.dtype, float(raw.sum()) == expected_sum)
print(type(frame).__name__, frame.index.name, frame.index[0], dict(frame.dtypes.astype(str)))
print(frame.groupby("k")["x"].sum().equals(expected_k))
frame.loc[7, "x"] = -5.0
frame["y"] = frame["x"] * 2
print(frame["x"].iloc[0], frame["y"].iloc[0], len(frame))
""")
    lines = checks.strip().splitlines()
    assert lines[0] == "ndarray float64 True"
    assert lines[1] == ("DataFrame row 7 {'x': 'float64', 'k': 'int64', "
                        "'t': 'datetime64[us]'}") or "datetime64[ns]" in lines[1], lines[1]
    assert lines[2] == "True" and lines[3] == f"-5.0 -10.0 {75 * 2**20 // 24}"
    status = ok(kernel, "%memstatus --top 0")
    assert "on disk in" in status and "raw" in status
    assert cgroup.oom_kills() == 0


# Leaves the kernel below the relief level (416 MiB of 640): a cell starts with room enough
# for the guard's thread to see it grow.
ROOMY_SETUP = """
%load_ext meno_jupyter
import numpy as np
from meno_jupyter.core.guard import _relief_level
from meno_jupyter.core.memory import WorkingSetReader
raw = np.random.default_rng(0).random(200 * 2**20 // 8)            # 200 MiB
expected_sum = float(raw.sum())
reader = WorkingSetReader()
print("room", reader.used() < _relief_level(reader.limit_bytes, 0.9))
"""
# 400 MiB in steps: past the limit from there unless `raw` goes to disk.
GROWING_CELL = "parts = [np.ones(20 * 2**20 // 8) for _ in range(20)]\nprint(len(parts))"


def test_the_guard_moves_idle_variables_while_a_cell_grows(
        kernel: tuple[Any, Any, MemoryCgroup]) -> None:
    cgroup = kernel[2]
    assert ok(kernel, ROOMY_SETUP).strip().endswith("room True")
    ok(kernel, "%memguard on --spill")
    text = ok(kernel, GROWING_CELL)
    assert "meno guard: moved `raw` 200.0 MiB to disk to let this cell finish (%memspill" in text
    assert text.strip().endswith("20")
    checks = ok(kernel, "del parts\nprint(float(raw.sum()) == expected_sum, type(raw).__name__)")
    assert checks.strip() == "True ndarray"
    listing = ok(kernel, "%memspill --list")
    assert "raw" in listing and "parts" not in listing
    assert cgroup.oom_kills() == 0


def test_a_cell_that_starts_near_the_limit_gets_room_first(
        kernel: tuple[Any, Any, MemoryCgroup]) -> None:
    # Past the relief level, with less room before the refusal than a fast loop needs to be
    # seen: the guard moves idle variables as the cell starts, keeping those it names.
    cgroup = kernel[2]
    ok(kernel, SETUP)
    ok(kernel, "%memguard on --spill")
    text = ok(kernel, "total = float(raw.sum())\nprint(total == expected_sum)")
    assert ("meno guard: moved `frame` 75.0 MiB to disk to let this cell finish (memory was "
            "near the limit as it started;") in text, text
    assert "`raw`" not in text and text.strip().endswith("True")
    listing = ok(kernel, "%memspill --list")
    assert "frame" in listing and "raw" not in listing
    # Nothing more to move for a cell that names raw too: it starts as it is, no message.
    assert ok(kernel, "print(raw[:1].size)").strip() == "1"
    assert cgroup.oom_kills() == 0


def test_a_refused_single_allocation_says_what_was_moved(
        kernel: tuple[Any, Any, MemoryCgroup]) -> None:
    assert ok(kernel, ROOMY_SETUP).strip().endswith("room True")
    ok(kernel, "%memguard on --spill")
    reply, text = execute(kernel[0], kernel[1], "big = np.ones(400 * 2**20 // 8)", 180)
    assert reply["ename"] == "MemoryGuardError", text
    assert "An allocation was refused" in text
    assert "meno guard: moved `raw` 200.0 MiB" in text and "run the cell again" in text
    assert ok(kernel, "big = np.ones(400 * 2**20 // 8)\nprint(big.shape)").strip().endswith(
        f"({400 * 2**20 // 8},)")
    assert kernel[2].oom_kills() == 0


def test_config_turns_the_spilling_guard_on(tmp_path: Path) -> None:
    require_memory_cgroup()
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    with MemoryCgroup(LIMIT) as cgroup:
        manager, client = start_kernel_in(cgroup, env=env, extra_arguments=[
            "--InteractiveShellApp.extensions=meno_jupyter", "--MemGuard.on_load=True",
            "--MemGuard.spill=True"])
        try:
            kernel = (manager, client, cgroup)
            assert "moves idle variables to disk" in ok(kernel, "%memguard status")
            # The data is built unguarded (its temporaries come near the limit), then the
            # guard is on again: with the configured spill.
            ok(kernel, "%memguard off\n" + SETUP + "\n%memguard on")
            text = ok(kernel, BIG_CELL)
            # It starts past the relief level: the guard makes room first.
            assert "meno guard: moved `raw` 300.0 MiB" in text and "as it started" in text
            assert text.strip().endswith("17")
            assert cgroup.oom_kills() == 0
        finally:
            stop_kernel(manager, client)
