"""Line attribution on memray: every allocation, native ones included, at a small cost.

:class:`MemrayTraceSession` runs one ``memray.Tracker`` over a block, writing an aggregated
capture (one record per distinct stack: kilobytes, whatever the number of allocations) to a
private temporary file, and then reads, per *user* line (the innermost frame of the user's
own code, as :mod:`meno_jupyter.core.attribution` groups tracemalloc's traces): the bytes
held at the block's traced peak, how many allocations those were, and the bytes still held at
its end. memray sees ``malloc`` and ``mmap`` themselves, so numpy's, pandas' and torch's
buffers are charged to the cell line that called them. memray's pymalloc arenas count as
allocations of up to 1 MiB each (Python objects are not traced one by one; that is what
keeps the cost low).

Only one memray tracker may run per process: :meth:`MemrayTraceSession.start` raises
:class:`TracerBusyError` when another is running (a nested ``--trace``, memray's own magic,
a user's ``memray.Tracker``), and the profiler falls back to tracemalloc. memray is imported
only here, and only when tracing starts.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from meno_jupyter.core.attribution import (
    TracedLine,
    code_line,
    is_package_file,
    is_user_file,
)

NATIVE_FRAMES_SHOWN = 3


class TracerBusyError(RuntimeError):
    """Another memray tracker is running in this process (only one may)."""


def memray_available() -> bool:
    """Tell whether memray can be imported here (Linux and macOS wheels)."""
    try:
        import memray  # noqa: F401
    except ImportError:
        return False
    return True


def _user_frame(stack: list[tuple[str, str, int]]) -> tuple[str, int, str] | None:
    """Return (file, line, function) of the innermost user frame, or None for our own."""
    for function, filename, lineno in stack:
        if is_package_file(filename):
            return None  # meno-jupyter's own bookkeeping
        if is_user_file(filename):
            return filename, lineno, function
    return None


class MemrayTraceSession:
    """memray over one block: per user line, bytes at the traced peak and at the end.

    Parameters
    ----------
    native : bool
        Also capture native (C/C++) frames; the top lines then name the native functions
        that allocated under them.
    keep_path : Path, optional
        Keep the capture file there (``memray flamegraph PATH`` reads it); by default it
        is removed once read.
    """

    name = "memray"

    def __init__(self, native: bool = False, keep_path: Path | None = None) -> None:
        self.native = native
        self.keep_path = keep_path
        self.tracer_bytes = 0
        self.snapshots_skipped = False
        self.capture_bytes = 0
        self.kept_path: Path | None = None
        self._folder: Path | None = None
        self._capture: Path | None = None
        self._tracker: Any = None

    def start(self) -> None:
        """Start memray's tracker; :class:`TracerBusyError` if another one is running."""
        import memray

        self._folder = Path(tempfile.mkdtemp(prefix="meno-trace-"))
        self._capture = self._folder / "capture.bin"
        tracker = memray.Tracker(self._capture, native_traces=self.native,
                                 file_format=memray.FileFormat.AGGREGATED_ALLOCATIONS)
        try:
            _in_helper_thread(tracker.__enter__)
        except RuntimeError as error:
            self._remove_folder()
            raise TracerBusyError(
                "memray is already tracking this process (a --trace block around this one, "
                f"memray's own magic, or a memray.Tracker of yours): {error}") from None
        self._tracker = tracker

    def tick(self) -> None:
        """Nothing to do while the block runs (memray aggregates in the process)."""

    def stop(self, top_n: int) -> tuple[list[TracedLine], int]:
        """Stop tracking; return the top ``top_n`` user lines and the traced peak in bytes."""
        if self._tracker is None:
            return [], 0
        tracker, self._tracker = self._tracker, None
        _in_helper_thread(lambda: tracker.__exit__(None, None, None))
        try:
            return self._read(top_n)
        finally:
            self._keep_or_remove()

    def _read(self, top_n: int) -> tuple[list[TracedLine], int]:
        import memray

        assert self._capture is not None
        self.capture_bytes = self._capture.stat().st_size
        peak: dict[tuple[str, int, str], list[int]] = {}
        native: dict[tuple[str, int, str], list[str]] = {}
        retained: dict[tuple[str, int, str], int] = {}
        with memray.FileReader(self._capture) as reader:
            traced_peak = int(reader.metadata.peak_memory)
            for record in reader.get_high_watermark_allocation_records(merge_threads=True):
                key = _user_frame(record.stack_trace())
                if key is None:
                    continue
                entry = peak.setdefault(key, [0, 0])
                entry[0] += record.size
                entry[1] += record.n_allocations
                if self.native and key not in native:
                    native[key] = _native_frames(record)
            for record in reader.get_leaked_allocation_records(merge_threads=True):
                key = _user_frame(record.stack_trace())
                if key is not None:
                    retained[key] = retained.get(key, 0) + record.size
        lines = [
            TracedLine(code_line(filename, lineno, function),
                       max(size, retained.get((filename, lineno, function), 0)),
                       retained.get((filename, lineno, function), 0), count,
                       tuple(native.get((filename, lineno, function), ())))
            for (filename, lineno, function), (size, count) in peak.items()
        ]
        lines.extend(TracedLine(code_line(*key), size, size, 0)
                     for key, size in retained.items() if key not in peak)
        lines.sort(key=lambda item: (item.peak_bytes, item.retained_bytes), reverse=True)
        return lines[:top_n], traced_peak

    def _keep_or_remove(self) -> None:
        if self.keep_path is not None and self._capture is not None and self._capture.exists():
            with contextlib.suppress(OSError):
                self.keep_path.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(str(self._capture), self.keep_path)
                self.kept_path = self.keep_path
        self._remove_folder()

    def _remove_folder(self) -> None:
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None


def _in_helper_thread(function: Callable[[], object]) -> None:
    """Call ``function`` in a short-lived thread; raise what it raised.

    memray captures the Python stacks of the *other* threads when a tracker starts; started
    from the main thread (inside ``Profiler.__enter__``), it would lose the frames already
    running there (the cell's own), and allocations would show library frames only.
    """
    failures: list[BaseException] = []

    def run() -> None:
        try:
            function()
        except BaseException as error:  # handed to the caller below
            failures.append(error)

    helper = threading.Thread(target=run, name="meno-memray", daemon=True)
    helper.start()
    helper.join()
    if failures:
        raise failures[0]


def _native_frames(record: Any) -> list[str]:
    """Return a few native functions under the user's line, innermost first."""
    try:
        frames = record.hybrid_stack_trace()
    except (NotImplementedError, RuntimeError, ValueError):
        return []
    shown: list[str] = []
    for function, filename, lineno in frames:
        if is_user_file(filename) and not is_package_file(filename):
            break
        if not filename.endswith(".py") and not is_user_file(filename):
            known = filename and filename != "<unknown>"
            shown.append(f"{function} ({Path(filename).name}:{lineno})" if known else function)
        if len(shown) == NATIVE_FRAMES_SHOWN:
            break
    return shown
