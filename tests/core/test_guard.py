"""The guard's pure parts in this process: levels, the allocation limit, children, stop."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import pytest

from meno_jupyter.core.guard import (
    CHILD_SCAN_S,
    MemoryGuard,
    MemoryGuardError,
    active_guard,
    interruptible_user_frame,
    parse_level,
    stop_message,
)
from meno_jupyter.core.memory import GIB, WorkingSetReader

LINUX = sys.platform.startswith("linux")


@pytest.mark.parametrize(("text", "level"), [("90%", 0.9), ("0.75", 0.75), (80, 0.8),
                                              ("99%", 0.99), (" 50 % ".replace(" ", ""), 0.5)])
def test_levels(text: object, level: float) -> None:
    assert parse_level(text) == level  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["5%", "100%", "1.0", "abc", "", "-3"])
def test_bad_levels(text: str) -> None:
    with pytest.raises(ValueError, match="guard level"):
        parse_level(text)


def test_the_message_names_figures_and_line() -> None:
    from meno_jupyter.core.attribution import CodeLine

    line = CodeLine("<ipython-input-3-x>", 3, "<module>", "m = a.merge(b)")
    text = stop_message(int(7.2 * GIB), 8 * GIB, line)
    assert text == ("meno guard stopped this cell at 7.2 GiB of the 8.0 GiB limit (90 %), "
                    "in line 3: `m = a.merge(b)`.")
    assert issubclass(MemoryGuardError, MemoryError)


def test_the_working_set_is_read_against_the_limit() -> None:
    reader = WorkingSetReader()
    try:
        used = reader.used()
        assert 0 < used < reader.limit_bytes
    finally:
        reader.close()


def in_a_child(name: str) -> None:
    """Run ``name()`` of this module in a fresh interpreter.

    The guard changes process-wide state (RLIMIT_DATA, and with it how malloc grows the
    heap): the test process itself must not carry that into later tests.
    """
    done = subprocess.run(
        [sys.executable, "-c", f"from tests.core.test_guard import {name}; {name}()"],
        capture_output=True, text=True, timeout=120, check=False,
        cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.skipif(not LINUX, reason="RLIMIT_DATA and /proc are Linux's")
def test_on_and_off_leave_nothing_behind() -> None:
    in_a_child("on_and_off_leave_nothing_behind")


@pytest.mark.skipif(not LINUX, reason="RLIMIT_DATA is Linux's")
def test_an_allocation_larger_than_what_is_left_fails_at_once() -> None:
    in_a_child("an_allocation_larger_than_what_is_left_fails_at_once")


@pytest.mark.skipif(not LINUX, reason="RLIMIT_DATA and fork are Linux's here")
def test_children_get_the_original_limit_back() -> None:
    in_a_child("children_get_the_original_limit_back")


def on_and_off_leave_nothing_behind() -> None:
    before = resource.getrlimit(resource.RLIMIT_DATA)
    guard = MemoryGuard(0.9)
    guard.start()
    try:
        assert active_guard() is guard
        assert "meno-guard" in [t.name for t in threading.enumerate()]
        soft, _ = resource.getrlimit(resource.RLIMIT_DATA)
        assert soft != before[0] and soft > 0
        status = guard.status()
        assert status.on and status.level_bytes == int(status.limit_bytes * 0.9)
    finally:
        guard.stop()
    assert resource.getrlimit(resource.RLIMIT_DATA) == before
    assert "meno-guard" not in [t.name for t in threading.enumerate()]
    assert active_guard() is None and not guard.status().on


def an_allocation_larger_than_what_is_left_fails_at_once() -> None:
    guard = MemoryGuard(0.9)
    guard.start()
    try:
        too_big = guard.status().limit_bytes * 2 // 8
        started = time.monotonic()
        with pytest.raises(MemoryError):
            np.ones(too_big)
        assert time.monotonic() - started < 1
        assert np.ones(1000).sum() == 1000  # ordinary allocations still work
    finally:
        guard.stop()


def children_get_the_original_limit_back() -> None:
    original = resource.getrlimit(resource.RLIMIT_DATA)
    guard = MemoryGuard(0.9)
    guard.start()
    try:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # a forked Python child: restored at once by the fork hook
            os.write(write, repr(resource.getrlimit(resource.RLIMIT_DATA)).encode())
            os._exit(0)
        os.waitpid(pid, 0)
        assert os.read(read, 200).decode() == repr(original)
        code = textwrap.dedent(f"""
            import resource, time
            time.sleep({4 * CHILD_SCAN_S})
            print(resource.getrlimit(resource.RLIMIT_DATA))
        """)
        # An exec'd child inherits the limit; the guard's thread gives it the original.
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True, timeout=60)
        assert done.stdout.strip() == repr(original)
    finally:
        guard.stop()


@pytest.mark.skipif(not LINUX, reason="RLIMIT_DATA and posix_spawn are Linux's here")
def test_every_child_starts_with_the_original_limit() -> None:
    in_a_child("every_child_starts_with_the_original_limit")


def every_child_starts_with_the_original_limit() -> None:
    import multiprocessing

    original = resource.getrlimit(resource.RLIMIT_DATA)
    probe = "import resource; print(resource.getrlimit(resource.RLIMIT_DATA))"
    guard = MemoryGuard(0.9)
    guard.start()
    try:
        tight = resource.getrlimit(resource.RLIMIT_DATA)
        assert tight != original
        # At once, before the thread's scan of children could have reached them.
        seen = {"subprocess": subprocess.run([sys.executable, "-c", probe], capture_output=True,
                                             text=True, check=True).stdout.strip()}
        read, write = os.pipe()
        pid = os.posix_spawn(sys.executable, [sys.executable, "-c", probe], os.environ,
                             file_actions=[(os.POSIX_SPAWN_DUP2, write, 1)])
        os.close(write)
        os.waitpid(pid, 0)
        seen["posix_spawn"] = os.read(read, 200).decode().strip()
        os.close(read)
        queue = multiprocessing.get_context("spawn").SimpleQueue()
        child = multiprocessing.get_context("spawn").Process(target=_put_limit, args=(queue,))
        child.start()
        seen["multiprocessing spawn"] = queue.get()
        child.join()
        assert seen == dict.fromkeys(seen, repr(original)), seen
        assert resource.getrlimit(resource.RLIMIT_DATA) != original  # ours is back
    finally:
        guard.stop()


def _put_limit(queue: Any) -> None:
    queue.put(repr(resource.getrlimit(resource.RLIMIT_DATA)))


def test_a_guard_error_without_arguments_takes_the_prepared_message() -> None:
    from meno_jupyter.core import guard as guard_module

    guard_module._pending_message[:] = ["prepared"]
    try:
        assert str(MemoryGuardError()) == "prepared"
        assert str(MemoryGuardError("given")) == "given"
    finally:
        guard_module._pending_message.clear()


def _stack_of_a_thread_blocked_in(call: Any) -> tuple[FrameType | None, FrameType]:
    """Run ``call`` in a thread from a user function: (the thread's frame now, that function's)."""
    entered = threading.Event()
    frames: list[FrameType] = []

    def user_function() -> None:
        frames.append(sys._getframe())
        entered.set()
        call()

    thread = threading.Thread(target=user_function, daemon=True)
    thread.start()
    entered.wait(5)
    time.sleep(0.2)  # now inside ``call``
    current = sys._current_frames().get(thread.ident or 0)
    return current, frames[0]


def test_the_guard_interrupts_user_code_and_the_libraries_it_calls() -> None:
    # Inside subprocess's Python code (waiting on the child): an ordinary library, safe.
    current, user = _stack_of_a_thread_blocked_in(
        lambda: subprocess.run([sys.executable, "-c", "import time; time.sleep(0.6)"], check=True))
    assert current is not None and current.f_globals["__name__"] == "subprocess"
    found = interruptible_user_frame(current)
    assert found is not None and found.f_back is user  # the lambda, called by user_function


def test_the_guard_never_interrupts_locks_imports_or_the_kernel() -> None:
    release = threading.Event()
    current, user = _stack_of_a_thread_blocked_in(lambda: release.wait(5))
    try:
        assert current is not None and current.f_globals["__name__"] == "threading"
        assert interruptible_user_frame(current) is None  # a lock could be left taken
        assert interruptible_user_frame(user) is user  # the user frame alone is fine
        assert interruptible_user_frame(None) is None
    finally:
        release.set()


def test_the_thread_survives_its_errors_and_a_dead_one_is_started_again() -> None:
    guard = MemoryGuard(at=0.9, limit_allocations=False)
    failures = []

    def failing_watch(used: int, limit: int) -> float:
        failures.append(used)
        raise MemoryError("no room for the thread's own reading")

    guard._watch = failing_watch  # type: ignore[method-assign]
    guard.start()
    try:
        deadline = time.monotonic() + 5
        while len(failures) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(failures) >= 3 and guard.thread_errors >= 3 and guard.running
        del guard._watch  # the real one again: readings go on
        used_before = guard._used = 0
        deadline = time.monotonic() + 5
        while guard._used == used_before and time.monotonic() < deadline:
            time.sleep(0.01)
        assert guard._used > 0
        # A thread that ended anyway is started again as the next cell starts.
        dead = threading.Thread(target=lambda: None)
        dead.start()
        dead.join()
        guard._thread = dead
        guard.cell_started()
        assert guard.running and guard._thread is not dead
        guard.cell_finished()
    finally:
        guard.stop()
    assert not guard.running
