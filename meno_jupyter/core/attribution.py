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
import tracemalloc
from dataclasses import asdict, dataclass
from functools import lru_cache
from types import FrameType

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@lru_cache(maxsize=1)
def _library_prefixes() -> tuple[str, ...]:
    names = ("stdlib", "platstdlib", "purelib", "platlib")
    paths = {sysconfig.get_paths()[name] for name in names}
    paths.add(_PACKAGE_DIR)
    # Installed packages outside the prefix (user site, editable installs of libraries).
    paths.update(p for p in sys.path if "site-packages" in p or "dist-packages" in p)
    return tuple(sorted({os.path.abspath(p) + os.sep for p in paths if p}))


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
    """
    if filename.startswith("<"):
        return filename.startswith(("<ipython-input-", "<stdin>", "<cell"))
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
    """A line that was running while RSS grew: total growth seen there and how often."""

    line: CodeLine
    growth_bytes: int
    events: int
    first_t_s: float

    def to_dict(self) -> dict[str, object]:
        """Return the fields as a plain dict."""
        return asdict(self)


@dataclass(frozen=True)
class TracedLine:
    """A line's Python allocations from tracemalloc.

    Attributes
    ----------
    peak_bytes : int
        Held by the line at the largest traced moment seen during the block.
    retained_bytes : int
        Still held at the end of the block (allocated during it).
    count : int
        Number of blocks still held at the end.
    """

    line: CodeLine
    peak_bytes: int
    retained_bytes: int
    count: int

    def to_dict(self) -> dict[str, object]:
        """Return the fields as a plain dict."""
        return asdict(self)


def _by_line(snapshot: tracemalloc.Snapshot) -> dict[tuple[str, int], tuple[int, int]]:
    stats = snapshot.statistics("lineno")
    result: dict[tuple[str, int], tuple[int, int]] = {}
    for stat in stats:
        frame = stat.traceback[0]
        if is_user_file(frame.filename):
            result[(frame.filename, frame.lineno)] = (stat.size, stat.count)
    return result


class TraceSession:
    """Tracemalloc over one block: per user line, the size at the traced peak and at the end.

    The tracer's own peak is tracked cheaply (:func:`tracemalloc.get_traced_memory`); a
    snapshot is taken only when traced memory has doubled since the last one, so a block
    costs a handful of snapshots at most.
    """

    def __init__(self, min_snapshot_bytes: int = 1 << 20) -> None:
        self._min_snapshot_bytes = min_snapshot_bytes
        self._started_here = False
        self._start: dict[tuple[str, int], tuple[int, int]] = {}
        self._peak_snapshot: dict[tuple[str, int], tuple[int, int]] = {}
        self._peak_traced = 0
        self._next_snapshot_at = 0

    def start(self) -> None:
        """Start tracing (if not already) and record the starting allocations."""
        if not tracemalloc.is_tracing():
            tracemalloc.start(1)
            self._started_here = True
        else:
            self._start = _by_line(tracemalloc.take_snapshot())
        tracemalloc.reset_peak()
        current, _ = tracemalloc.get_traced_memory()
        self._next_snapshot_at = current + self._min_snapshot_bytes

    def tick(self) -> None:
        """Take a snapshot if traced memory reached a new high (runs on the sampler thread)."""
        if not tracemalloc.is_tracing():
            return
        current, _ = tracemalloc.get_traced_memory()
        if current >= self._next_snapshot_at and current > self._peak_traced:
            self._peak_snapshot = _by_line(tracemalloc.take_snapshot())
            self._peak_traced = current
            self._next_snapshot_at = max(2 * current, current + self._min_snapshot_bytes)

    def stop(self, top_n: int) -> tuple[list[TracedLine], int]:
        """Stop tracing; return the top ``top_n`` user lines and the tracer's peak in bytes."""
        if not tracemalloc.is_tracing():
            return [], 0
        _, traced_peak = tracemalloc.get_traced_memory()
        end = _by_line(tracemalloc.take_snapshot())
        if self._started_here:
            tracemalloc.stop()
        keys = set(end) | set(self._peak_snapshot)
        lines: list[TracedLine] = []
        for key in keys:
            end_size, end_count = end.get(key, (0, 0))
            start_size, start_count = self._start.get(key, (0, 0))
            retained = max(0, end_size - start_size)
            peak = max(self._peak_snapshot.get(key, (0, 0))[0] - start_size, retained)
            if peak <= 0:
                continue
            lines.append(
                TracedLine(code_line(*key), peak, retained, max(0, end_count - start_count))
            )
        lines.sort(key=lambda item: (item.peak_bytes, item.retained_bytes), reverse=True)
        return lines[:top_n], int(traced_peak)
