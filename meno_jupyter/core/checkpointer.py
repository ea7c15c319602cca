"""The kernel's side of checkpoints: what changed after a cell, and the forked writer.

:class:`Checkpointer` is told when cells start and end. After a cell that changed
variables it forks: the child sees a copy-on-write snapshot of the namespace (consistent,
no locking) and writes what changed (:func:`~meno_jupyter.core.checkpoint.write_checkpoint`)
while the kernel goes on; the kernel pauses only for the fork (9 ms for 1 GB of
variables measured). The child never touches the kernel's sockets or threads, stops
collecting garbage (a collection writes to every object, and each write copies a page), is
the out-of-memory killer's first choice (``oom_score_adj`` 1000), has its own allocation
limit, and ends with ``os._exit``. No writer starts when the kernel's headroom under its
limit is short; the skip is reported.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import json
import os
import resource
import select
import signal
import tempfile
import threading
import time
import types
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from meno_jupyter.core.checkpoint import (
    CELLS_LOG,
    DEFAULT_MAX_BYTES,
    MAX_LOG_BYTES,
    OBJECTS,
    Checkpoint,
    CheckpointError,
    RestoreReport,
    WritePlan,
    open_directory,
    read_log,
    write_checkpoint,
)
from meno_jupyter.core.ledger import write_all
from meno_jupyter.core.memory import MIB, WorkingSetReader, format_bytes
from meno_jupyter.core.namespace import names_in

__all__ = ["Checkpointer"]

# Below this headroom (or this share of the limit) no writer is forked: the pages its
# pickling touches are copied, and the copies count against the same limit.
MIN_HEADROOM_BYTES = 128 * MIB
MIN_HEADROOM_SHARE = 0.05
WRITER_TIMEOUT_S = 600.0
WRITER_ALLOWANCE_BYTES = 256 * MIB
_LOCK_FILE = ".lock"


@dataclass
class _Writer:
    pid: int
    read_fd: int
    started: float
    cell: int


class Checkpointer:
    """Checkpoint a namespace in the background after each cell that changed it.

    Call :meth:`cell_started` and :meth:`cell_finished` around every cell (the magics do).
    A cell that rebinds, creates or deletes a name, or mentions one, leads to a checkpoint;
    one that does neither costs a dictionary walk. While a writer runs, the changes of
    later cells wait for the next one, which starts when the writer ends and no cell runs.
    """

    def __init__(self, directory: Path, *, notebook: str, max_bytes: int = DEFAULT_MAX_BYTES,
                 namespace: Callable[[], dict[str, object]] | None = None,
                 limit_reader: WorkingSetReader | None = None) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.directory = directory
        self.key = open_directory(directory, create=True)
        self.notebook = notebook
        self.max_bytes = max_bytes
        self.session = uuid.uuid4().hex
        self._namespace = namespace
        self._reader = limit_reader
        self._bound: dict[str, int] = {}
        self.made_by: dict[str, int] = {}
        self._candidates: set[str] = set()
        self._saved_ids: dict[str, int] = {}
        self._cell_seconds: dict[int, float] = {}
        self._cell_started: float | None = None
        self._lock = threading.Lock()
        self._writer: _Writer | None = None
        self._watcher: threading.Thread | None = None
        self._pending: int | None = None
        self._running_cell = False
        self._closed = False
        self._idle = threading.Condition(self._lock)
        self.last: Checkpoint | None = None
        self.last_problem: str | None = None
        self.checkpoints = 0

    # -- hooks

    def cell_started(self, cell: int, source: str) -> None:
        """Note a cell's start: in the cells log, and so that no writer forks mid-cell."""
        with self._lock:
            self._running_cell = True
        self._cell_started = time.perf_counter()
        line = json.dumps({"session": self.session, "cell": cell, "at": time.time(),
                           "source": source[:500]}) + "\n"
        with contextlib.suppress(OSError):
            self._append_log(line.encode())

    def _append_log(self, line: bytes) -> None:
        path = self.directory / CELLS_LOG
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            if os.fstat(fd).st_size > MAX_LOG_BYTES:
                os.close(fd)
                fd = -1
                self._trim_log(path)
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW,
                             0o600)
            os.write(fd, line)
        finally:
            if fd >= 0:
                os.close(fd)

    def _trim_log(self, path: Path) -> None:
        entries = read_log(self.directory)[-1000:]
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.directory)
        with os.fdopen(fd, "w") as handle:
            handle.writelines(json.dumps(e) + "\n" for e in entries)
        os.replace(tmp, path)

    def cell_finished(self, namespace: Mapping[str, object], cell: int, source: str) -> bool:
        """Note what the cell changed; start a writer if needed. Return whether one started."""
        if self._cell_started is not None:
            self._cell_seconds[cell] = time.perf_counter() - self._cell_started
            self._cell_started = None
        changed = self._note_changes(namespace, cell, names_in(source))
        with self._lock:
            self._running_cell = False
            if not changed and self._pending is None:
                return False
            self._pending = cell
            if self._writer is not None or self._closed:
                return False
            return self._start_locked(dict(namespace))

    def _note_changes(self, namespace: Mapping[str, object], cell: int,
                      mentioned: set[str]) -> bool:
        """Compare the namespace with the last one seen; return whether anything changed."""
        changed = False
        current: dict[str, int] = {}
        for name, value in namespace.items():
            ident = id(value)
            current[name] = ident
            if self._bound.get(name) != ident:
                self.made_by[name] = cell
                self._candidates.add(name)
                changed = True
            elif name in mentioned and not isinstance(value, types.ModuleType):
                self._candidates.add(name)
                changed = True
        for gone in self._bound.keys() - current.keys():
            self.made_by.pop(gone, None)
            changed = True
        # An alias of a mentioned variable may have been changed through it.
        touched = {current[n] for n in self._candidates if n in current}
        self._candidates.update(n for n, i in current.items() if i in touched)
        self._bound = current
        return changed

    # -- the writer

    def _start_locked(self, namespace: dict[str, object]) -> bool:
        cell = self._pending
        assert cell is not None
        refused = self._headroom_problem()
        if refused:
            self.last_problem = f"no checkpoint after cell [{cell}]: {refused}"
            self._pending = None
            return False
        plan = WritePlan(namespace, cell, dict(self.made_by), set(self._candidates),
                     dict(self._saved_ids), self.last, dict(self._cell_seconds),
                     self.notebook, self.session, self.max_bytes)
        read_fd, write_fd = os.pipe()
        with warnings.catch_warnings():
            # The child runs no thread's code and touches no lock they may hold.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # pragma: no cover - the child; measured through its results
            os.close(read_fd)
            _child(self.directory, self.key, plan, write_fd)
        os.close(write_fd)
        self._writer = _Writer(pid, read_fd, time.time(), cell)
        self._pending = None
        self._candidates.clear()
        self._saved_ids = {n: id(v) for n, v in namespace.items()}
        self._watcher = threading.Thread(target=self._watch, args=(self._writer,),
                                         name="meno-checkpoint-writer", daemon=True)
        self._watcher.start()
        return True

    def _headroom_problem(self) -> str | None:
        reader = self._reader
        if reader is None:
            return None
        try:
            used = reader.used()
        except (OSError, ValueError):
            return None
        headroom = reader.limit_bytes - used
        needed = max(MIN_HEADROOM_BYTES, int(reader.limit_bytes * MIN_HEADROOM_SHARE))
        if headroom >= needed:
            return None
        return (f"only {format_bytes(max(0, headroom))} left under the limit "
                f"({format_bytes(reader.limit_bytes)}); the writer's copies of the pages it "
                f"reads could push the kernel over it (it needs {format_bytes(needed)})")

    def _watch(self, writer: _Writer) -> None:
        chunks = []
        deadline = writer.started + WRITER_TIMEOUT_S
        while True:
            ready, _, _ = select.select([writer.read_fd], [], [], 1.0)
            if ready:
                chunk = os.read(writer.read_fd, 65536)
                if not chunk:
                    break
                chunks.append(chunk)
            elif time.time() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(writer.pid, signal.SIGKILL)
                break
        os.close(writer.read_fd)
        _, status = os.waitpid(writer.pid, 0)
        message = b"".join(chunks).decode("utf-8", "replace")
        self._finish(writer, status, message)

    def _finish(self, writer: _Writer, status: int, message: str) -> None:
        result: Any = None
        with contextlib.suppress(ValueError):
            result = json.loads(message) if message else None
        with self._lock:
            self._writer = None
            finished = None
            if isinstance(result, dict) and "checkpoint" in result:
                with contextlib.suppress(CheckpointError, TypeError):
                    finished = Checkpoint.from_dict(result["checkpoint"])
            if finished is not None:
                self.last = finished
                self.last_problem = None
                self.checkpoints += 1
            else:
                self._saved_ids = {}  # nothing known saved: check everything next time
                if isinstance(result, dict) and "error" in result:
                    problem = str(result["error"])
                elif os.WIFSIGNALED(status):
                    problem = (f"the writer was killed ({signal.Signals(os.WTERMSIG(status)).name}"
                               "; the kernel's memory limit?)")
                else:
                    problem = f"the writer ended without a result (status {status})"
                self.last_problem = f"no checkpoint after cell [{writer.cell}]: {problem}; " \
                    "the previous one is kept"
            if self._pending is not None and not self._running_cell and not self._closed \
                    and self._namespace is not None:
                self._start_locked(dict(self._namespace()))
            self._idle.notify_all()

    def wait(self, timeout: float = 60.0) -> bool:
        """Wait until no writer runs and none waits; return whether that happened."""
        end = time.monotonic() + timeout
        with self._lock:
            while self._writer is not None or (self._pending is not None and
                                               self._namespace is not None
                                               and not self._running_cell):
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def flush(self, namespace: Mapping[str, object], cell: int, timeout: float = 600.0
              ) -> bool:
        """Write the namespace as it is now, inside cell ``cell`` (a magic's); wait for it.

        Return whether the checkpoint is up to date when it returns.
        """
        if not self.wait(timeout):
            return False
        changed = self._note_changes(namespace, cell, set())
        with self._lock:
            if changed:
                self._pending = cell
            if self._pending is not None and self._writer is None and not self._closed:
                self._start_locked(dict(namespace))
        return self.wait(timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Stop starting writers, wait for the one running (killed after ``timeout``).

        The limit reader it was given is closed too.
        """
        with self._lock:
            self._closed = True
            writer = self._writer
        if writer is not None and not self.wait(timeout):
            with contextlib.suppress(ProcessLookupError):
                os.kill(writer.pid, signal.SIGKILL)
            self.wait(5.0)
        if self._reader is not None:  # given to this checkpointer: it goes with it
            self._reader.close()
            self._reader = None

    def adopt(self, report: RestoreReport, namespace: Mapping[str, object]) -> None:
        """Take restored variables as saved already: the next checkpoint does not rewrite them."""
        restored = {r.name for r in report.restored}
        with self._lock:
            if self._writer is not None:
                return
            self.last = replace(report.checkpoint, variables=tuple(
                v for v in report.checkpoint.variables if v.name in restored))
            self._saved_ids = {n: id(namespace[n]) for n in restored if n in namespace}
            for name in restored:
                if name in namespace:
                    self._bound[name] = id(namespace[name])
                    self._candidates.discard(name)

    def status(self) -> str:
        """Say where checkpoints go, the last complete one, and the last problem."""
        lines = [f"checkpoints of {self.notebook} in {self.directory} "
                 f"(size cap {format_bytes(self.max_bytes)})"]
        with self._lock:
            if self._writer is not None:
                lines.append(f"writing the checkpoint after cell [{self._writer.cell}] "
                             f"({time.time() - self._writer.started:.1f} s so far)")
            if self.last is not None:
                lines.append(self.last.to_text())
            else:
                lines.append("no complete checkpoint yet")
            if self.last_problem:
                lines.append(self.last_problem)
        return "\n".join(lines)


def _child(directory: Path, key: bytes, plan: WritePlan, write_fd: int) -> None:  # pragma: no cover
    """Run in the forked writer: write the checkpoint, report, and leave at once."""
    code = 0
    try:
        gc.disable()  # a collection writes to every object: every page would be copied
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        with contextlib.suppress(OSError), open("/proc/self/oom_score_adj", "w") as handle:
            handle.write("1000")
        _limit_own_allocations()
        with _directory_lock(directory) as locked:
            if not locked:
                result: dict[str, Any] = {
                    "error": "another kernel is writing this notebook's checkpoint"}
            else:
                result = {"checkpoint": write_checkpoint(directory, key, plan).to_dict()}
    except OSError as error:
        import errno

        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            text = f"the disk is full ({directory})"
        else:
            text = f"{error.strerror or error} ({error.filename or directory})"
        result = {"error": text}
    except MemoryError:
        result = {"error": "the writer ran out of its memory allowance"}
    except BaseException as error:  # reported, then the child leaves
        result = {"error": f"{type(error).__name__}: {str(error)[:300]}"}
        code = 1
    try:
        write_all(write_fd, memoryview(json.dumps(result).encode()))
    finally:
        os._exit(code)


def _limit_own_allocations() -> None:  # pragma: no cover - runs in the child
    """Let the writer allocate a bounded amount beyond what it inherited."""
    with open("/proc/self/statm", "rb") as handle:
        data_bytes = int(handle.read().split()[5]) * os.sysconf("SC_PAGE_SIZE")
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    allowance = data_bytes + WRITER_ALLOWANCE_BYTES
    if hard != resource.RLIM_INFINITY:
        allowance = min(allowance, hard)
    if soft == resource.RLIM_INFINITY or allowance < soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_DATA, (allowance, hard))


@contextlib.contextmanager
def _directory_lock(directory: Path) -> Iterator[bool]:
    fd = os.open(directory / _LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        leftovers = [*directory.glob(".tmp-*"), *(directory / OBJECTS).glob(".tmp-*")]
        for leftover in leftovers:  # from a writer killed midway
            with contextlib.suppress(OSError):
                leftover.unlink()
        yield True
    finally:
        os.close(fd)
