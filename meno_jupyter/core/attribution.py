"""Which line of user code holds or made the memory: frame inspection and tracemalloc.

Two attributions with different costs:

* the sampler notes the user-code line the watched thread is on whenever RSS grows by a
  threshold (``sys._current_frames``): near-free, and it sees native allocations (numpy,
  pandas, torch) that tracemalloc cannot. It names the line running *when the growth is
  seen*: an allocation that takes longer than the interval is caught in the act, while a
  quick one may be blamed on the line after it;
* :class:`TraceSession` runs :mod:`tracemalloc` over a block: exact Python allocation sizes
  per line, at the price tracemalloc charges for every allocation.
"""

from __future__ import annotations

import linecache
import os
import sys
import sysconfig
import time
import tracemalloc
from dataclasses import asdict, dataclass
from functools import lru_cache
from types import FrameType

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def is_package_file(filename: str) -> bool:
    """Tell whether ``filename`` is meno-jupyter's own code (its bookkeeping, never blamed)."""
    return filename.startswith(_PACKAGE_DIR + os.sep)


@lru_cache(maxsize=1)
def _library_prefixes() -> tuple[str, ...]:
    names = ("stdlib", "platstdlib", "purelib", "platlib")
    paths = {sysconfig.get_paths()[name] for name in names}
    paths.add(_PACKAGE_DIR)
    # Installed packages outside the prefix (user site, editable installs of libraries).
    paths.update(p for p in sys.path if "site-packages" in p or "dist-packages" in p)
    return tuple(sorted({os.path.abspath(p) + os.sep for p in paths if p}))


_COMPILED_SOURCES = (".pyx", ".pxd", ".pxi")


@lru_cache(maxsize=4096)
def is_user_file(filename: str) -> bool:
    """Tell whether code in ``filename`` is the user's (a cell or their own module).

    Notebook cells (``<ipython-input-…>`` in IPython, a temporary ``.py`` in ipykernel) and
    files outside the interpreter's and site-packages' directories count as user code.

    Examples
    --------
    >>> is_user_file("<ipython-input-3-abc>")
    True
    >>> is_user_file(os.__file__)
    False
    >>> is_user_file("pandas/_libs/join.pyx")
    False
    """
    if filename.startswith("<"):
        return filename.startswith(("<ipython-input-", "<stdin>", "<cell"))
    if not os.path.isabs(filename) and (filename.endswith(_COMPILED_SOURCES)
                                         or not os.path.exists(filename)):
        return False  # Cython records its sources relative ("join.pyx"): a library's
    return not os.path.abspath(filename).startswith(_library_prefixes())


@dataclass(frozen=True)
class CodeLine:
    """One source line: where it is and what it says."""

    filename: str
    lineno: int
    function: str
    source: str

    @property
    def label(self) -> str:
        """A short label, ``"line 3: x = np.ones(…)"``."""
        where = f"line {self.lineno}"
        if not is_cell_file(self.filename):
            where = f"{os.path.basename(self.filename)}:{self.lineno}"
        return f"{where}: {self.source}" if self.source else where


def is_cell_file(filename: str) -> bool:
    """Tell whether ``filename`` names a notebook or IPython cell."""
    return filename.startswith("<ipython-input-") or "/ipykernel_" in filename


def code_line(filename: str, lineno: int, function: str = "") -> CodeLine:
    """Return the :class:`CodeLine` for a location, reading its text from linecache."""
    source = linecache.getline(filename, lineno).strip()
    return CodeLine(filename, lineno, function, source[:120])


def user_frame(frame: FrameType | None) -> FrameType | None:
    """Return the innermost frame of user code in the stack ending at ``frame``."""
    while frame is not None:
        if is_user_file(frame.f_code.co_filename):
            return frame
        frame = frame.f_back
    return None


@dataclass(frozen=True)
class GrowthLine:
    """A line that was running while RSS grew: total growth seen there, how often, when.

    ``first_t_s`` and ``last_t_s`` are the first and last samples that saw it grow (seconds
    from the block's start).
    """

    line: CodeLine
    growth_bytes: int
    events: int
    first_t_s: float
    last_t_s: float = 0.0

    def to_dict(self) -> dict[str, object]:
        """Return the fields as a plain dict."""
        return asdict(self)


@dataclass(frozen=True)
class TracedLine:
    """A line's traced allocations (memray or tracemalloc).

    Attributes
    ----------
    peak_bytes : int
        Held by the line at the largest traced moment seen during the block.
    retained_bytes : int
        Still held at the end of the block (allocated during it).
    count : int
        Allocations: held at the traced peak (memray; pymalloc arenas count once each) or
        blocks still held at the end (tracemalloc).
    native_frames : tuple of str
        With memray's native traces: the C/C++ functions under the line that allocated.
    """

    line: CodeLine
    peak_bytes: int
    retained_bytes: int
    count: int
    native_frames: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, object]:
        """Return the fields as a plain dict."""
        return asdict(self)


TRACE_FRAMES = 16
_Key = tuple[str, int]


def _user_key(frames: tuple[tuple[str, int], ...]) -> _Key | None:
    """Return the innermost user frame of a raw traceback (most recent frame first)."""
    for filename, lineno in frames:
        if is_package_file(filename):
            return None  # meno-jupyter's own bookkeeping
        if is_user_file(filename):
            return (filename, lineno)
    return None


def _by_line(snapshot: tracemalloc.Snapshot) -> dict[_Key, tuple[int, int]]:
    """Group a snapshot's sizes by the innermost *user* frame of each allocation.

    ``np.ones`` or ``pd.read_csv`` allocate inside library code; the line to blame is the
    user's line that called them, so traces are kept :data:`TRACE_FRAMES` deep. Allocations
    made by meno-jupyter itself (reached before any user frame) are left out.

    tracemalloc's own grouping builds objects for every trace (seconds for a million); the
    raw traces share one tuple per distinct traceback, so each is resolved once here.
    """
    raw = getattr(snapshot.traces, "_traces", None)
    if raw is None:  # another implementation: the public, slower path
        raw = [(t.domain, t.size, tuple((f.filename, f.lineno) for f in reversed(t.traceback)))
               for t in snapshot.traces]
    resolved: dict[int, _Key | None] = {}
    sizes: dict[_Key, list[int]] = {}
    for trace in raw:
        frames = trace[2]
        marker = id(frames)
        if marker in resolved:
            key = resolved[marker]
        else:
            key = resolved[marker] = _user_key(frames)
        if key is None:
            continue
        entry = sizes.get(key)
        if entry is None:
            sizes[key] = [trace[1], 1]
        else:
            entry[0] += trace[1]
            entry[1] += 1
    return {key: (size, count) for key, (size, count) in sizes.items()}


class TraceSession:
    """Tracemalloc over one block: per user line, the size at the traced peak and at the end.

    The tracer's own peak is tracked cheaply (:func:`tracemalloc.get_traced_memory`). A
    snapshot copies every live trace into Python objects, so snapshots at new highs are
    taken only while few blocks are traced (``max_snapshot_tracer_bytes`` of tracemalloc's
    own memory) and while they have cost under a tenth of the block's time; past that, the
    per-line peak is the end snapshot's figure.
    """

    name = "tracemalloc"

    def __init__(
        self, min_snapshot_bytes: int = 1 << 20, max_snapshot_tracer_bytes: int = 16 << 20
    ) -> None:
        self._min_snapshot_bytes = min_snapshot_bytes
        self._max_snapshot_tracer_bytes = max_snapshot_tracer_bytes
        self._started_here = False
        # Raw snapshots: grouping them while tracing would trace the grouping itself.
        self._start: tracemalloc.Snapshot | None = None
        self._peak_snapshot: tracemalloc.Snapshot | None = None
        self._peak_traced = 0
        self._next_snapshot_at = 0
        self._t0 = 0.0
        self._snapshot_s = 0.0
        self.tracer_bytes = 0
        self.snapshots_skipped = False

    def start(self) -> None:
        """Start tracing (if not already) and record the starting allocations."""
        if not tracemalloc.is_tracing():
            tracemalloc.start(TRACE_FRAMES)
            self._started_here = True
        else:
            self._start = tracemalloc.take_snapshot()
        tracemalloc.reset_peak()
        current, _ = tracemalloc.get_traced_memory()
        self._next_snapshot_at = current + self._min_snapshot_bytes
        self._t0 = time.perf_counter()

    def tick(self) -> None:
        """Take a snapshot if traced memory reached a new high (runs on the sampler thread)."""
        if not tracemalloc.is_tracing():
            return
        current, _ = tracemalloc.get_traced_memory()
        if current < self._next_snapshot_at or current <= self._peak_traced:
            return
        tracer = tracemalloc.get_tracemalloc_memory()
        self.tracer_bytes = max(self.tracer_bytes, tracer)
        elapsed = time.perf_counter() - self._t0
        if tracer > self._max_snapshot_tracer_bytes or self._snapshot_s > 0.1 * elapsed:
            self.snapshots_skipped = True
            return
        started = time.perf_counter()
        self._peak_snapshot = tracemalloc.take_snapshot()
        self._snapshot_s += time.perf_counter() - started
        self._peak_traced = current
        self._next_snapshot_at = max(2 * current, current + self._min_snapshot_bytes)

    def stop(self, top_n: int) -> tuple[list[TracedLine], int]:
        """Stop tracing; return the top ``top_n`` user lines and the tracer's peak in bytes."""
        if not tracemalloc.is_tracing():
            return [], 0
        _, traced_peak = tracemalloc.get_traced_memory()
        self.tracer_bytes = max(self.tracer_bytes, tracemalloc.get_tracemalloc_memory())
        end_snapshot = tracemalloc.take_snapshot()
        if self._started_here:
            tracemalloc.stop()
        end = _by_line(end_snapshot)
        del end_snapshot
        start = _by_line(self._start) if self._start is not None else {}
        peak = _by_line(self._peak_snapshot) if self._peak_snapshot is not None else {}
        self._start = self._peak_snapshot = None
        keys = set(end) | set(peak)
        lines: list[TracedLine] = []
        for key in keys:
            end_size, end_count = end.get(key, (0, 0))
            start_size, start_count = start.get(key, (0, 0))
            retained = max(0, end_size - start_size)
            at_peak = max(peak.get(key, (0, 0))[0] - start_size, retained)
            if at_peak <= 0:
                continue
            lines.append(
                TracedLine(code_line(*key), at_peak, retained, max(0, end_count - start_count))
            )
        lines.sort(key=lambda item: (item.peak_bytes, item.retained_bytes), reverse=True)
        return lines[:top_n], int(traced_peak)
