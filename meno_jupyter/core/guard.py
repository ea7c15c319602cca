"""The memory guard: a runaway cell ends in ``MemoryError``; the process and its data survive.

Two layers, because out-of-memory deaths come two ways:

1. **Growth in steps** (a loop appending chunks, many library calls): a thread reads what
   the out-of-memory decision counts (the cgroup's working set, or the machine's used
   memory) and, when a running cell pushes it past the guard level, raises
   :class:`MemoryGuardError` in the main thread at its next bytecode
   (``PyThreadState_SetAsyncExc``), only while the main thread is inside user code.
2. **One huge allocation** (one C call that asks for more than is left): the process's soft
   ``RLIMIT_DATA`` is kept at "data now + what is left below the limit", so ``malloc`` and
   ``mmap`` fail at once and Python, numpy and pandas raise their own ``MemoryError``
   instead of the kernel's OOM killer ending the process. Linux (4.7+) counts private
   writable mappings there; file-backed maps (``np.memmap``) and ``PROT_NONE``
   reservations do not. Children get the original limit back: at fork for Python
   children, and by ``prlimit`` as soon as the thread sees a new child process.

Nothing of this runs, and nothing is registered, until a guard is started.
"""

from __future__ import annotations

import contextlib
import ctypes
import dis
import json
import os
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from meno_jupyter.core.attribution import CodeLine, code_line, user_frame
from meno_jupyter.core.ledger import (
    LedgerFileError,
    kernel_file_for,
    read_json_file,
    write_json_atomic,
)
from meno_jupyter.core.memory import (
    MIB,
    PAGE_SIZE,
    WorkingSetReader,
    format_bytes,
    pread_holding_gil,
)

DEFAULT_AT = 0.9
# A cell may grow this much even when memory is already past the level when it starts.
GRACE_BYTES = 16 * MIB
# A stop the cell swallowed (a bare ``except:``) is sent again while memory stays over the
# level: at once when it grew GRACE_BYTES more, else after this wait, doubled each time.
REFIRE_BACKOFF_S = 0.25
MAX_REFIRE_BACKOFF_S = 4.0
# Sent to the main thread when it waits in Thread.join, Event.wait, Queue.get (as Ctrl-C
# does): a blocked lock wait sees no asynchronous exception, but a signal interrupts it.
_STOP_SIGNAL = getattr(signal, "SIGRTMIN", 34) + 7
# Sent to the main thread when a cell nears the level and the guard may relieve memory
# (``relief``): the handler runs there, so the cell waits while variables are moved.
_RELIEF_SIGNAL = _STOP_SIGNAL + 1
# Relief is sought this far below the guard level (a share of the limit)...
RELIEF_MARGIN = 0.1
# ...and at least this far below where the allocation limit refuses: a loop of large arrays
# grows by GB/s while the thread waits for a core and the GIL (tens of ms on a busy
# machine), and must be seen past the relief level before it reaches the refusal.
RELIEF_MIN_ROOM_BYTES = 192 * 1024 * 1024
# How long a cell past the level waits for the relief to start before it is stopped.
RELIEF_WAIT_S = 2.0
# Kept free below the limit by the allocation limit: the page cache, the kernel's own
# buffers and the error handling itself need some.
SAFETY_FRACTION = 0.03
MIN_SAFETY_BYTES = 32 * MIB
MIN_INTERVAL_S = 0.002
MAX_INTERVAL_S = 0.05
# The growth a cell is assumed capable of before any was seen (page faults, one core).
CELL_GROWTH_PER_S = 2 * 1024 * MIB
# Every system call made by the thread hands the GIL back and forth with the main thread,
# which costs the main thread far more than the call: few calls, kept-open files.
CHILD_SCAN_S = 1.0
GUARD_SCHEMA_VERSION = 1
GUARD_FILE_MAX_BYTES = 64 * 1024

_pending_message: list[str] = []
# Set when a stop the thread sent has been raised in the main thread (the exception is made
# there, at its next bytecode): only then may a later reading send another.
_delivered = threading.Event()


class MemoryGuardError(MemoryError):
    """The memory guard stopped a cell before the process would have been killed.

    Raised with no arguments by the guard's thread (an asynchronous exception carries no
    message), it takes the message the guard prepared.
    """

    def __init__(self, *args: object) -> None:
        if not args:
            _delivered.set()
            if _pending_message:
                args = (_pending_message[-1],)
            guard = _active
            if guard is not None:  # now that the cell has its stop, so do its threads
                guard._stop_cell_threads()
        super().__init__(*args)


@dataclass(frozen=True)
class GuardStatus:
    """The guard's state and its last reading. Sizes in bytes."""

    on: bool
    at: float
    level_bytes: int
    limit_bytes: int
    used_bytes: int
    source: str
    allocation_limit_bytes: int | None
    stops: int

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a plain dict."""
        return asdict(self)

    def describe(self) -> str:
        """One line for people."""
        if not self.on:
            return "memory guard off (%memguard on to stop runaway cells before a kill)"
        share = self.used_bytes / self.limit_bytes if self.limit_bytes else 0.0
        return (f"memory guard on at {self.at:.0%} of the {format_bytes(self.limit_bytes)} "
                f"limit ({self.source}): stops a cell at {format_bytes(self.level_bytes)}; "
                f"now {format_bytes(self.used_bytes)} ({share:.0%}), {self.stops} stopped")


def parse_level(text: str | float) -> float:
    """Parse a guard level: ``"90%"``, ``"0.9"`` or ``90``; must be in (0, 1).

    Examples
    --------
    >>> parse_level("85%"), parse_level("0.8"), parse_level(95)
    (0.85, 0.8, 0.95)
    """
    raw = str(text).strip()
    try:
        value = float(raw.rstrip("%"))
    except ValueError:
        raise ValueError(f"the guard level must be a share like 90% or 0.9, got {text!r}"
                         ) from None
    if raw.endswith("%") or value > 1:
        value /= 100
    if not 0.1 <= value < 1:
        raise ValueError(f"the guard level must be between 10% and 99%, got {text!r}")
    return round(value, 4)


def _read_data_bytes(fd: int | None = None) -> int:
    """Return the process's data size (what ``RLIMIT_DATA`` counts) from ``statm``."""
    if fd is not None:
        return int(pread_holding_gil(fd, 128).split()[5]) * PAGE_SIZE
    with open("/proc/self/statm", "rb") as handle:
        return int(handle.read().split()[5]) * PAGE_SIZE


def _set_async_exc(thread_id: int, exception: type[BaseException] | None) -> int:
    setter = ctypes.pythonapi.PyThreadState_SetAsyncExc
    setter.argtypes = [ctypes.c_ulong, ctypes.py_object]
    setter.restype = ctypes.c_int
    if exception is None:  # NULL clears a pending exception
        setter.argtypes = [ctypes.c_ulong, ctypes.c_void_p]
        return int(setter(thread_id, None))
    return int(setter(thread_id, exception))


def _restore_limit_in_child() -> None:
    guard = _active
    if guard is not None:
        guard._in_forked_child()


_active: MemoryGuard | None = None
_fork_hook_registered = False


class MemoryGuard:
    """Stop cells that would run the process out of memory; see the module docstring.

    Parameters
    ----------
    at : float
        The share of the limit at which a growing cell is stopped (default 0.9).
    limit_allocations : bool
        Also keep ``RLIMIT_DATA`` at what is left below the limit (the second layer).
    relief : callable, optional
        ``relief(used_bytes, target_bytes)`` frees memory (moves variables to disk) and
        returns what it did; called once per cell, in the main thread (the cell waits),
        when the cell passes ``RELIEF_MARGIN`` below the level (lower in a small limit:
        see :func:`_relief_level`). The cell is stopped only
        if that was not enough.

    Examples
    --------
    >>> guard = MemoryGuard(at=0.9)
    >>> guard.start()
    >>> guard.status().on
    True
    >>> guard.stop()
    """

    def __init__(self, at: float = DEFAULT_AT, *, limit_allocations: bool = True,
                 relief: Callable[[int, int], str | None] | None = None) -> None:
        self.at = parse_level(at)
        self.relief = relief
        self._relief_sent = False
        self._relieving = False
        self._relief_wait_until = 0.0
        self._relief_previous: Any = None
        self.last_relief: str | None = None
        # Where a relief at a cell's start last found nothing to move: not tried again
        # until memory grows past it.
        self._nothing_to_move_at: int | None = None
        self.thread_errors = 0
        self._last_reading = (0, 0.0)
        self._next_child_scan = 0.0
        self.limit_allocations = limit_allocations and sys.platform.startswith("linux")
        self._reader: WorkingSetReader | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._main_id = threading.main_thread().ident or 0
        self._original_limit: tuple[int, int] | None = None
        self._allocation_limit: int | None = None
        self._armed = False
        self._fired = False
        self._start_used = 0
        self._cell_peak = 0
        self._used = 0
        self._stops = 0
        self._seen_children: set[int] = set()
        self._suspended = False
        self._statm: int | None = None
        self._limit_lock = threading.RLock()
        self._thread_starter: Any = None
        self._spawn_wrappers: list[tuple[Any, str, Any]] = []
        self._threads_before: set[int] = set()
        self._next_fire = 0.0
        self._backoff_s = REFIRE_BACKOFF_S
        self._fired_used = 0
        self._signal_previous: Any = None
        self._threads_to_stop: list[int] = []
        self.last_stop: dict[str, Any] | None = None

    # ------------------------------------------------------------------ life

    @property
    def running(self) -> bool:
        """Whether the guard's thread is running."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start watching (a no-op when already on); another guard running is stopped."""
        global _active, _fork_hook_registered
        if self.running:
            return
        if _active is not None and _active is not self:
            _active.stop()
        self._reader = WorkingSetReader()
        self._used = self._reader.used()
        if self.limit_allocations:
            self._statm = os.open("/proc/self/statm", os.O_RDONLY)
            self._original_limit = resource.getrlimit(resource.RLIMIT_DATA)
            self._seen_children = set(_child_pids())
            if not _fork_hook_registered:
                os.register_at_fork(after_in_child=_restore_limit_in_child)
                _fork_hook_registered = True
            self._update_allocation_limit(self._used)
        self._stop.clear()
        _active = self
        self._start_thread()
        if self.limit_allocations:
            self._wrap_thread_start()
            self._wrap_spawns()
        self._install_stop_signal()

    def _start_thread(self) -> None:
        self._thread = threading.Thread(target=self._run, name="meno-guard", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching and give the allocation limit back."""
        global _active
        self._unwrap_thread_start()
        self._unwrap_spawns()
        self._remove_stop_signal()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.cell_finished()
        if self._original_limit is not None:
            resource.setrlimit(resource.RLIMIT_DATA, self._original_limit)
            self._original_limit = None
            self._allocation_limit = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._statm is not None:
            os.close(self._statm)
            self._statm = None
        if _active is self:
            _active = None

    def _in_forked_child(self) -> None:
        # The thread did not survive the fork; the child must not keep the parent's limit.
        if self._original_limit is not None:
            with contextlib.suppress(OSError, ValueError):
                resource.setrlimit(resource.RLIMIT_DATA, self._original_limit)
        self._thread = None
        self._original_limit = None

    # ------------------------------------------------------------------ cells

    def cell_started(self) -> None:
        """Arm the guard for a cell now starting in the main thread."""
        if self._thread is not None and not self._thread.is_alive() and not self._stop.is_set():
            self._start_thread()  # never expected: the thread's loop survives its errors
        with self._lock:
            used = self._reader.used() if self._reader is not None else 0
            self._start_used = self._cell_peak = self._used = used
            self._fired = False
            self._next_fire = 0.0
            self._backoff_s = REFIRE_BACKOFF_S
            self._threads_before = set(sys._current_frames())
            _delivered.clear()
            self._relief_sent = False
            self._relieving = False
            self._relief_wait_until = 0.0
            self.last_relief = None
            self._armed = True
            if self.limit_allocations and self._original_limit is not None:
                self._update_allocation_limit(used)

    def cell_finished(self) -> None:
        """Disarm the guard; a stop not yet delivered is withdrawn."""
        with self._lock:
            was_armed, self._armed = self._armed, False
            if was_armed and self._fired:
                _set_async_exc(self._main_id, None)

    @property
    def cell_peak_bytes(self) -> int:
        """The highest usage the guard saw during the current or last cell."""
        return self._cell_peak

    def status(self) -> GuardStatus:
        """Return the guard's state and a fresh reading."""
        reader = self._reader if self.running else None
        owned = reader is None
        reader = reader or WorkingSetReader()
        try:
            used, limit, source = reader.used(), reader.limit_bytes, reader.source
        finally:
            if owned:
                reader.close()
        return GuardStatus(self.running, self.at, int(limit * self.at), limit, used, source,
                           self._allocation_limit, self._stops)

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        assert self._reader is not None
        reader = self._reader
        self._last_reading = (self._used, time.monotonic())
        self._next_child_scan = 0.0
        interval = MAX_INTERVAL_S
        while not self._stop.wait(interval):
            try:
                used = reader.used()
            except (OSError, ValueError):  # the cgroup went away: keep the last figure
                continue
            try:
                interval = self._watch(used, reader.limit_bytes)
            except Exception:  # a guard that stops watching protects nothing
                self.thread_errors += 1
                interval = MIN_INTERVAL_S

    def _watch(self, used: int, limit: int) -> float:
        """Act on one reading (relieve, stop, move the allocation limit); the next interval."""
        now = time.monotonic()
        last_used, last_time = self._last_reading
        growth_per_s = max(0.0, (used - last_used) / max(now - last_time, 1e-4))
        self._last_reading = (used, now)
        level = int(limit * self.at)
        relief_level = _relief_level(limit, self.at)
        # While a relief may still come, readings pace themselves to its (lower) level:
        # a loop that grows fast must be seen there, before the allocation limit refuses.
        watched = (relief_level if self.relief is not None and not self._relief_sent
                   else level)
        with self._lock:
            self._used = used
            if self._armed:
                self._cell_peak = max(self._cell_peak, used)
                if (self.relief is not None and not self._relief_sent
                        and self._relief_previous is not None and used > relief_level
                        and used > self._start_used + GRACE_BYTES):
                    self._relief_sent = True
                    # No stop until the relief has run (it runs at the main thread's
                    # next line), or this long has passed without it.
                    self._relieving = True
                    self._relief_wait_until = now + RELIEF_WAIT_S
                    signal.pthread_kill(self._main_id, _RELIEF_SIGNAL)
                elif self._relieving and now > self._relief_wait_until > 0:
                    self._relieving = False  # the main thread never got to it
                elif (used > level and not self._relieving
                      and used > self._start_used + GRACE_BYTES
                        and self._may_fire(used, now)):
                    self._fire(used, limit, now)
        if self._original_limit is not None:
            self._update_allocation_limit(used)
            if now >= self._next_child_scan:
                self._release_children()
                self._next_child_scan = now + CHILD_SCAN_S
        return _interval_for(watched - used, limit, growth_per_s, in_cell=self._armed)

    def _may_fire(self, used: int, now: float) -> bool:
        """Whether a stop may be sent now: the first, or again after one was swallowed.

        Again once the wait is over (also when the last was never raised: a signal that
        found the main thread somewhere a stop must not land), or at once when a stop that
        was raised did not end the growth.
        """
        if not self._fired:
            return True
        grew = _delivered.is_set() and used > self._fired_used + GRACE_BYTES
        return grew or now >= self._next_fire

    def _fire(self, used: int, limit: int, now: float) -> None:
        frames = sys._current_frames()
        main = frames.get(self._main_id)
        found = interruptible_user_frame(main)
        waiting = found is None and self._signal_previous is not None and waiting_in_threading(main)
        if found is None and not waiting:  # not safe now: the next reading tries again
            return
        others = self._cell_threads(frames)
        line = (frame_line(main) if found is None
                else code_line(found.f_code.co_filename, found.f_lineno, found.f_code.co_name))
        detail = ""
        if others:
            named = "; ".join(f"`{name}` at {place.label}" for name, place, _ in others)
            detail = (f"Memory grew while the cell waited for the threads it started; "
                      f"stopped too: {named}.")
        self.last_stop = {"used_bytes": used, "limit_bytes": limit, "line": line,
                          "by": "guard", "threads": [name for name, _, _ in others]}
        _pending_message.clear()
        _pending_message.append(stop_message(used, limit, line, detail))
        if not self._fired:
            self._stops += 1
        else:
            self._backoff_s = min(MAX_REFIRE_BACKOFF_S, self._backoff_s * 2)
        self._fired = True
        self._fired_used = used
        self._next_fire = now + self._backoff_s
        _delivered.clear()
        # The threads are stopped once the cell has its own stop (in MemoryGuardError): were
        # they first, the cell's join() could return before its stop arrived.
        self._threads_to_stop = [ident for _, _, ident in others]
        if waiting:
            signal.pthread_kill(self._main_id, _STOP_SIGNAL)
        else:
            _set_async_exc(self._main_id, MemoryGuardError)

    def _stop_cell_threads(self) -> None:
        threads, self._threads_to_stop = self._threads_to_stop, []
        for ident in threads:
            _set_async_exc(ident, MemoryGuardError)

    def _cell_threads(self, frames: dict[int, FrameType]) -> list[tuple[str, CodeLine, int]]:
        """Return (name, line, ident) of threads this cell started that run user code now."""
        own = {self._main_id, threading.get_ident()}
        names = {thread.ident: thread.name for thread in threading.enumerate()}
        found = []
        for ident, frame in frames.items():
            if ident in own or ident in self._threads_before:
                continue
            user = interruptible_user_frame(frame)
            if user is not None:
                place = code_line(user.f_code.co_filename, user.f_lineno, user.f_code.co_name)
                found.append((names.get(ident, f"thread {ident}"), place, ident))
        return found

    def _install_stop_signal(self) -> None:
        """Handle the stop (and relief) signals in the main thread (when nobody else does)."""
        if threading.current_thread() is not threading.main_thread():
            return
        with contextlib.suppress(ValueError, OSError):
            if signal.getsignal(_STOP_SIGNAL) in (signal.SIG_DFL, None):
                self._signal_previous = signal.signal(_STOP_SIGNAL, _on_stop_signal)
            if signal.getsignal(_RELIEF_SIGNAL) in (signal.SIG_DFL, None):
                self._relief_previous = signal.signal(_RELIEF_SIGNAL, _on_relief_signal)

    def _remove_stop_signal(self) -> None:
        with contextlib.suppress(ValueError, OSError):
            if threading.current_thread() is threading.main_thread():
                if self._signal_previous is not None:
                    signal.signal(_STOP_SIGNAL, self._signal_previous)
                if self._relief_previous is not None:
                    signal.signal(_RELIEF_SIGNAL, self._relief_previous)
        self._signal_previous = None
        self._relief_previous = None

    def relieve(self, *, room_for: int = 0) -> str | None:
        """Ask ``relief`` to bring usage back below the relief level; return what it did.

        Run in the main thread (the relief signal's handler, or the error handler after a
        refused allocation), the allocation limit lifted: moving variables needs a little.
        ``room_for``: the size of a refused allocation, which should fit afterwards (lower
        still; nothing is moved for one that could never fit).
        """
        if self.relief is None or self._reader is None:
            return None
        limit = self._reader.limit_bytes
        # A margin below where relief is sought, so that one relief makes room for the cell.
        target = _relief_level(limit, self.at) - int(limit * RELIEF_MARGIN)
        if room_for:
            fits_below = _refusal_at(limit) - room_for - GRACE_BYTES
            if fits_below <= 0:
                return None
            target = min(target, fits_below)
        self._relieving = True  # the cell waits meanwhile: no stop while variables move
        self._relief_wait_until = 0.0
        try:
            with self.original_limit_lifted():
                done: str | None = self.relief(self._reader.used(), target)
        finally:
            self._relieving = False
        if done:
            self.last_relief = done
        return done

    def relieve_at_start(self) -> str | None:
        """Relieve before the cell runs when it starts with too little room to be watched.

        A cell that starts past the relief level, with less than ``RELIEF_MIN_ROOM_BYTES``
        left before the allocation limit refuses, could reach the refusal before the thread
        sees it grow (a loop of large arrays, the thread waiting for a core): the relief
        comes first, in the main thread, as the cell starts. Not tried again, once it found
        nothing to move, until memory has grown past that point.
        """
        if self.relief is None or self._reader is None or not self._armed:
            return None
        limit = self._reader.limit_bytes
        used = self._start_used
        room = _refusal_at(limit) - used
        if used <= _relief_level(limit, self.at) or room >= RELIEF_MIN_ROOM_BYTES:
            return None
        if self._nothing_to_move_at is not None and used <= self._nothing_to_move_at + GRACE_BYTES:
            return None
        done = self.relieve()
        with self._lock:
            self._nothing_to_move_at = None if done else used
            # The cell's growth counts from here: a stop or a relief comes on what it adds.
            self._start_used = min(self._start_used, self._reader.used())
            self._relief_sent = not done  # the thread may look again only if this helped
        return done

    def room_bytes(self) -> int:
        """Return what is left now before the allocation limit refuses."""
        if self._reader is None:
            return 0
        return max(0, _refusal_at(self._reader.limit_bytes) - self._reader.used())

    @contextlib.contextmanager
    def reporting(self) -> Iterator[None]:
        """Lift the allocation limit while a stop is reported (formatting it needs memory).

        The safety margin kept below the limit is what the report uses meanwhile.
        """
        with self.original_limit_lifted():
            yield

    def _update_allocation_limit(self, used: int, extra: int = 0) -> None:
        """Set the soft ``RLIMIT_DATA`` to data now + what is left below the limit (+extra)."""
        if self._suspended or self._reader is None or self._original_limit is None:
            return
        allowance = max(0, _refusal_at(self._reader.limit_bytes) - used)
        soft_original, hard = self._original_limit
        with self._limit_lock:
            soft = _read_data_bytes(self._statm) + allowance + extra
            if soft_original != resource.RLIM_INFINITY:
                soft = min(soft, soft_original)
            if hard != resource.RLIM_INFINITY:
                soft = min(soft, hard)
            if extra or self._allocation_limit is None or (
                    abs(soft - self._allocation_limit) >= MIB):
                with contextlib.suppress(OSError, ValueError):
                    resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))
                    self._allocation_limit = soft

    # A new thread's stack (8 MiB by default) is reserved writable, so it counts against
    # RLIMIT_DATA although almost none of it is ever touched: a burst of thread starts
    # between two polls would fail ("can't start new thread"). Each start made through
    # ``threading`` widens the limit by one stack first.
    _STARTERS = ("_start_new_thread", "_start_joinable_thread")

    def _wrap_thread_start(self) -> None:
        for name in self._STARTERS:
            original = getattr(threading, name, None)
            if original is None or getattr(original, "_meno_guard", False):
                continue

            def start(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
                guard = _active
                if guard is None:
                    return _original(*args, **kwargs)
                with guard._limit_lock:
                    guard._update_allocation_limit(guard._used, extra=_stack_bytes())
                    return _original(*args, **kwargs)

            start._meno_guard = True  # type: ignore[attr-defined]
            self._thread_starter = (name, original)
            setattr(threading, name, start)
            return

    def _unwrap_thread_start(self) -> None:
        if self._thread_starter is not None:
            name, original = self._thread_starter
            setattr(threading, name, original)
            self._thread_starter = None

    # A child made by fork+exec in C (subprocess, multiprocessing's spawn and forkserver,
    # os.posix_spawn, os.system) runs no Python at-fork hook: it would inherit the tight
    # limit until the thread's next scan. The parent's own limit is lifted for the call.
    def _wrap_spawns(self) -> None:
        import _posixsubprocess
        import subprocess

        targets = [(_posixsubprocess, "fork_exec"), (subprocess, "_fork_exec")]
        targets += [(os, name) for name in ("posix_spawn", "posix_spawnp", "system")
                    if hasattr(os, name)]
        for module, name in targets:
            original = getattr(module, name, None)
            if original is None or getattr(original, "_meno_guard", False):
                continue

            def spawn(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
                guard = _active
                if guard is None or guard._original_limit is None:
                    return _original(*args, **kwargs)
                with guard.original_limit_lifted():
                    return _original(*args, **kwargs)

            spawn._meno_guard = True  # type: ignore[attr-defined]
            self._spawn_wrappers.append((module, name, original))
            setattr(module, name, spawn)

    def _unwrap_spawns(self) -> None:
        for module, name, original in reversed(self._spawn_wrappers):
            setattr(module, name, original)
        self._spawn_wrappers.clear()

    @contextlib.contextmanager
    def original_limit_lifted(self) -> Iterator[None]:
        """Give this process its original allocation limit for a moment.

        While a child process starts (it inherits the limit) or a stop is reported; then the
        limit is set again from a fresh reading.
        """
        with self._limit_lock:
            if self._original_limit is None:
                yield
                return
            self._suspended = True
            try:
                with contextlib.suppress(OSError, ValueError):
                    resource.setrlimit(resource.RLIMIT_DATA, self._original_limit)
                self._allocation_limit = None
                yield
            finally:
                self._suspended = False
                if self._reader is not None:
                    self._update_allocation_limit(self._reader.used())

    def _release_children(self) -> None:
        """Give new child processes the original allocation limit (they inherited ours)."""
        assert self._original_limit is not None
        children = set(_child_pids())
        for pid in children - self._seen_children:
            with contextlib.suppress(OSError, ValueError):
                resource.prlimit(pid, resource.RLIMIT_DATA, self._original_limit)
        self._seen_children = children

    def caused(self, error: BaseException, tb: TracebackType | None) -> bool:
        """Tell whether ``error`` is this guard's doing: its stop, or its allocation limit.

        A plain ``MemoryError`` counts only while the allocation limit is in force and when
        it did not come from a ``raise`` statement (a cache of the user's that is "full").
        """
        if isinstance(error, MemoryGuardError):
            return True
        if not isinstance(error, MemoryError) or self._allocation_limit is None:
            return False
        return not _raised_by_statement(tb)

    def note_allocation_failure(self, line: CodeLine | None) -> None:
        """Record a ``MemoryError`` from the allocation limit (the second layer)."""
        self._stops += 1
        limit = self._reader.limit_bytes if self._reader is not None else 0
        self.last_stop = {"used_bytes": max(self._cell_peak, self._used), "limit_bytes": limit,
                          "line": line, "by": "allocation limit"}


def _on_stop_signal(signum: int, frame: FrameType | None) -> None:
    """Raise the guard's stop where the main thread waits (see ``_STOP_SIGNAL``)."""
    guard = _active
    if guard is None or not guard._armed or _delivered.is_set() or not _pending_message:
        return
    if interruptible_user_frame(frame) is None and not waiting_in_threading(frame):
        return  # moved on into code a stop must not break: the next reading sends it again
    raise MemoryGuardError


def _on_relief_signal(signum: int, frame: FrameType | None) -> None:
    """Relieve memory in the main thread, the cell waiting (see ``_RELIEF_SIGNAL``)."""
    guard = _active
    if guard is None or not guard._armed:
        return
    guard.relieve()


# Where the main thread waits for other threads; interrupting it there is what Ctrl-C does.
_WAITS = frozenset({"join", "_wait_for_tstate_lock", "wait", "get", "put", "acquire",
                    "result", "_wait", "wait_for"})


def waiting_in_threading(frame: FrameType | None) -> bool:
    """Tell whether ``frame`` waits in ``threading``/``queue``/``concurrent`` for user code.

    True when every frame from the innermost up to the innermost user frame belongs to one
    of those modules and the innermost is one of their waits.
    """
    if frame is None or frame.f_code.co_name not in _WAITS:
        return False
    found = user_frame(frame)
    if found is None:
        return False
    while frame is not None and frame is not found:
        if _module_root(frame) not in ("threading", "queue", "concurrent"):
            return False
        frame = frame.f_back
    return True


_RAISE_OPCODES = frozenset(dis.opmap[name] for name in ("RAISE_VARARGS", "RERAISE")
                           if name in dis.opmap)


def _raised_by_statement(tb: TracebackType | None) -> bool:
    """Tell whether a traceback ends at a ``raise`` in Python code (not inside a C call)."""
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code.co_code
    return 0 <= tb.tb_lasti < len(code) and code[tb.tb_lasti] in _RAISE_OPCODES


def _stack_bytes() -> int:
    """Return the stack a new thread reserves (threading's setting, else RLIMIT_STACK)."""
    size = threading.stack_size()
    if not size:
        soft = resource.getrlimit(resource.RLIMIT_STACK)[0]
        size = 8 * MIB if soft == resource.RLIM_INFINITY else min(soft, 64 * MIB)
    return size + MIB  # and its guard page, rounded up


def _refusal_at(limit_bytes: int) -> int:
    """Return the usage at which the allocation limit refuses: the limit less its safety."""
    return limit_bytes - max(MIN_SAFETY_BYTES, int(limit_bytes * SAFETY_FRACTION))


def _relief_level(limit_bytes: int, at: float) -> int:
    """Return where a relief is sought: below the level, and room below the refusal.

    ``RELIEF_MARGIN`` below the level, and at least ``RELIEF_MIN_ROOM_BYTES`` below where the
    allocation limit refuses; never under half the limit.

    Examples
    --------
    >>> _relief_level(16 * 1024 * MIB, 0.9) // MIB  # 80 % of 16 GiB
    13107
    >>> _relief_level(640 * MIB, 0.9) // MIB  # 640 - 32 (safety) - 192
    416
    """
    by_share = int(limit_bytes * (at - RELIEF_MARGIN))
    by_room = _refusal_at(limit_bytes) - RELIEF_MIN_ROOM_BYTES
    return max(int(limit_bytes * 0.5), min(by_share, by_room))


def _interval_for(margin_bytes: int, limit_bytes: int, growth_per_s: float = 0.0,
                  *, in_cell: bool = False) -> float:
    """Poll faster as memory nears the level, and as it grows faster: 50 ms to 2 ms.

    The next reading comes before the last rate of growth could use a quarter of the margin
    left. During a cell, the rate is taken as at least ``CELL_GROWTH_PER_S`` (page faults
    run at several GB/s: a loop of 20 MiB arrays uses 60 MiB in 20 ms, before any
    growth was seen).

    Examples
    --------
    >>> _interval_for(600 * MIB, 1000 * MIB)
    0.05
    >>> round(_interval_for(100 * MIB, 1000 * MIB, growth_per_s=2000 * MIB), 4)
    0.0125
    >>> round(_interval_for(60 * MIB, 640 * MIB, in_cell=True), 4)
    0.0073
    """
    share = max(0.0, margin_bytes / limit_bytes) if limit_bytes else 1.0
    interval = share * 0.25
    if in_cell:
        growth_per_s = max(growth_per_s, CELL_GROWTH_PER_S)
    if growth_per_s > 0:
        interval = min(interval, max(0, margin_bytes) / (4 * growth_per_s))
    return min(MAX_INTERVAL_S, max(MIN_INTERVAL_S, interval))


def _child_pids() -> list[int]:
    pids: list[int] = []
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return pids
    for task in tasks:
        with contextlib.suppress(OSError, ValueError):
            pids += map(int, Path(f"/proc/self/task/{task}/children").read_text().split())
    return pids


# Code that an exception at an arbitrary bytecode could leave broken: a module half imported,
# a lock taken and not released, IPython's or the kernel's own state, ours.
_NOT_INTERRUPTIBLE = frozenset({
    "importlib", "frozen_importlib", "frozen_importlib_external", "threading", "queue",
    "logging", "concurrent", "asyncio", "selectors", "multiprocessing", "weakref",
    "weakrefset", "IPython", "ipykernel", "ipywidgets", "comm", "zmq", "tornado",
    "jupyter_client", "traitlets", "meno_jupyter"})


def interruptible_user_frame(frame: FrameType | None) -> FrameType | None:
    """Return the user frame an exception may be raised under now, or ``None``.

    ``None`` when no user code is running (between cells) or when any frame between the
    innermost one and the innermost user frame belongs to code listed in
    ``_NOT_INTERRUPTIBLE`` (import machinery, locks, IPython, the kernel, this package).
    Library code such as numpy or pandas may be interrupted: it sees an ordinary exception.
    """
    found = user_frame(frame)
    while frame is not None and frame is not found:
        if _module_root(frame) in _NOT_INTERRUPTIBLE:
            return None
        frame = frame.f_back
    return found


def _module_root(frame: FrameType) -> str:
    name = frame.f_globals.get("__name__")
    if isinstance(name, str) and name != "__main__":
        return name.partition(".")[0].lstrip("_")
    return frame.f_code.co_filename  # frozen importlib code names itself "<frozen ...>"


def stop_message(used: int, limit: int, line: CodeLine | None, detail: str = "") -> str:
    """Say where and at which figures a cell was stopped (variables are added by the caller).

    Examples
    --------
    >>> stop_message(7 * 2**30, 8 * 2**30, None)
    'meno guard stopped this cell at 7.0 GiB of the 8.0 GiB limit (88 %).'
    """
    where = ""
    if line is not None:
        place = line.label.split(": ", 1)[0]
        where = f", in {place}: `{line.source}`" if line.source else f", in {place}"
    text = (f"meno guard stopped this cell at {format_bytes(used)} of the "
            f"{format_bytes(limit)} limit ({100 * used / limit:.0f} %){where}.")
    if detail:
        text += f" {detail}"
    return text


def frame_line(frame: FrameType | None) -> CodeLine | None:
    """Return the innermost user line of a traceback's or thread's frame, if any."""
    found = user_frame(frame)
    if found is None:
        return None
    return code_line(found.f_code.co_filename, found.f_lineno, found.f_code.co_name)


def guard_path_for(connection_file: str | os.PathLike[str]) -> Path:
    """Return where a kernel says whether its guard is on (``meno-guard-<kernel>.json``)."""
    return kernel_file_for(connection_file, "guard")


def write_guard_file(path: Path, status: GuardStatus) -> None:
    """Write the guard's state for the Jupyter server (atomically)."""
    write_json_atomic(path, json.dumps({
        "schema": GUARD_SCHEMA_VERSION, "pid": os.getpid(), "on": status.on, "at": status.at,
        "stops": status.stops, "limit_bytes": status.limit_bytes, "updated_at": time.time()}))


def read_guard_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a guard file defensively; raise :class:`LedgerFileError` if it is not one."""
    data = read_json_file(path, GUARD_FILE_MAX_BYTES)
    try:
        if not isinstance(data, dict) or data.get("schema") != GUARD_SCHEMA_VERSION:
            raise ValueError(f"not a meno-jupyter guard file (schema {GUARD_SCHEMA_VERSION})")
        for name in ("pid", "stops", "limit_bytes"):
            if type(data.get(name)) is not int:
                raise ValueError(f"{name} must be an integer")
        if type(data.get("on")) is not bool:
            raise ValueError("on must be true or false")
        at = data.get("at")
        if type(at) is not float or not 0 < at < 1:
            raise ValueError("at must be a share between 0 and 1")
    except ValueError as error:
        raise LedgerFileError(f"{path} is not a readable guard file: {error}") from None
    return {name: data[name] for name in ("pid", "on", "at", "stops", "limit_bytes")}


def active_guard() -> MemoryGuard | None:
    """Return the guard running in this process, if any."""
    return _active
