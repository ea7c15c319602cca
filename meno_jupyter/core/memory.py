"""Reading process, children and system memory, the exact peak, and the effective limit.

On Linux the resident set size is read with one ``pread`` of a ``/proc/self/statm`` file
descriptor kept open (a few microseconds, versus tens for psutil). The exact peak of a block
comes from the kernel's high-water mark: writing ``5`` to ``/proc/self/clear_refs`` resets
``VmHWM`` to the current RSS, so ``VmHWM`` read at the end of the block is the true peak,
including spikes that no sampler would see.
"""

from __future__ import annotations

import os
import resource
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

if TYPE_CHECKING:
    import psutil

PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
MIB = 1024 * 1024
GIB = 1024 * MIB

PressureLevel = Literal["low", "medium", "high"]
DEFAULT_PRESSURE_THRESHOLDS = (0.70, 0.85)

_CGROUP_ROOT = Path("/sys/fs/cgroup")
_pread_in_place: Callable[[int, int], bytes] | None = None
# cgroup v1 reports "no limit" as a huge page-rounded number rather than "max".
_CGROUP_V1_UNLIMITED = 1 << 60


def pread_holding_gil(fd: int, size: int) -> bytes:
    """Read up to ``size`` bytes at offset 0 of ``fd`` without letting go of the GIL.

    ``os.pread`` releases the GIL around the system call; a watching thread that has just
    got the GIL would then wait for the main thread to hand it back (up to the end of its
    current C call) once more per read. Reads of ``/proc`` and cgroup files take
    microseconds, so holding the GIL through them costs less than the hand-over.
    """
    global _pread_in_place
    if _pread_in_place is None:
        _pread_in_place = _make_pread_holding_gil()
    return _pread_in_place(fd, size)


def _make_pread_holding_gil() -> Callable[[int, int], bytes]:
    try:
        import ctypes

        libc = ctypes.PyDLL(None, use_errno=True)  # PyDLL: the call keeps the GIL
        pread = libc.pread
    except (OSError, AttributeError):
        return lambda fd, size: os.pread(fd, size, 0)
    pread.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_long]
    pread.restype = ctypes.c_ssize_t
    buffers = threading.local()

    def read(fd: int, size: int) -> bytes:
        buffer = getattr(buffers, "buffer", None)
        if buffer is None or len(buffer) < size:
            buffer = buffers.buffer = ctypes.create_string_buffer(max(size, 16384))
        count = pread(fd, buffer, size, 0)
        if count < 0:
            error = ctypes.get_errno()
            raise OSError(error, os.strerror(error))
        return buffer.raw[:count]

    return read


class _StatmReader:
    """Resident set size of one process from an open ``/proc/<pid>/statm``."""

    def __init__(self, pid: int | str = "self") -> None:
        self._fd: int | None = None
        try:
            self._fd = os.open(f"/proc/{pid}/statm", os.O_RDONLY)
        except OSError:
            self._fd = None
        self._pid = os.getpid() if pid == "self" else int(pid)
        self._process: psutil.Process | None = None

    @property
    def fast(self) -> bool:
        """Whether the ``/proc`` fast path is in use."""
        return self._fd is not None

    def rss(self) -> int:
        """Return the resident set size in bytes."""
        return self._read(1, "rss")

    def vms(self) -> int:
        """Return the virtual memory size in bytes."""
        return self._read(0, "vms")

    def _read(self, field: int, psutil_name: str) -> int:
        if self._fd is not None:
            # pread does not move a shared offset, so threads may share the descriptor.
            fields = pread_holding_gil(self._fd, 128).split()
            return int(fields[field]) * PAGE_SIZE
        if self._process is None:
            import psutil

            self._process = psutil.Process(self._pid)
        return int(getattr(self._process.memory_info(), psutil_name))

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


_self_reader = _StatmReader()


def read_rss() -> int:
    """Return this process's resident set size in bytes.

    Examples
    --------
    >>> read_rss() > 0
    True
    """
    return _self_reader.rss()


def read_rss_exact() -> int:
    """Return this process's resident set size in bytes, counted page by page.

    The kernel's running RSS counters (what :func:`read_rss` reads) lag a few recent page
    faults behind; ``smaps_rollup`` walks the page tables (about a millisecond per GiB).
    Where it is missing, :func:`read_rss`.
    """
    exact = _smaps_rollup_bytes("self", (b"\nRss:",))
    return read_rss() if exact is None else exact


def read_vms() -> int:
    """Return this process's virtual memory size in bytes."""
    return _self_reader.vms()


def read_uss_pss() -> tuple[int, int | None]:
    """Return (USS, PSS) in bytes; slow (about 1 ms), PSS is None where unsupported."""
    import psutil

    info = psutil.Process().memory_full_info()
    return int(info.uss), (int(info.pss) if hasattr(info, "pss") else None)


def _linux_child_pids(pid: int) -> list[int] | None:
    """Direct children from ``/proc/<pid>/task/*/children``, or None when unavailable."""
    task_dir = f"/proc/{pid}/task"
    try:
        tids = os.listdir(task_dir)
    except OSError:
        return None
    pids: list[int] = []
    for tid in tids:
        try:
            with open(f"{task_dir}/{tid}/children", "rb") as handle:
                pids.extend(int(p) for p in handle.read().split())
        except FileNotFoundError:
            continue  # the thread ended between listdir and open
        except OSError:
            return None
    return pids


def child_pids(pid: int | None = None) -> list[int]:
    """Return the pids of all descendants of ``pid`` (default: this process).

    Uses the kernel's per-thread ``children`` lists on Linux (cheap when there are none) and
    psutil elsewhere.
    """
    root = os.getpid() if pid is None else pid
    if sys.platform.startswith("linux"):
        found: list[int] = []
        frontier = [root]
        while frontier:
            kids = _linux_child_pids(frontier.pop())
            if kids is None:
                break
            found.extend(kids)
            frontier.extend(kids)
        else:
            return found
    import psutil

    try:
        return [child.pid for child in psutil.Process(root).children(recursive=True)]
    except psutil.Error:
        return []


def process_rss(pid: int) -> int:
    """Return the RSS in bytes of another process, 0 if it has gone."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as handle:
            return int(handle.read().split()[1]) * PAGE_SIZE
    except (OSError, IndexError, ValueError):
        import psutil

        try:
            return int(psutil.Process(pid).memory_info().rss)
        except psutil.Error:
            return 0


def process_own_bytes(pid: int) -> int:
    """Return the memory a process has of its own: its private pages (USS), 0 if it has gone.

    A forked child maps its parent's pages until it writes them: its RSS counts a copy of
    the parent it does not really hold. ``smaps_rollup`` (Linux 4.14+) tells private pages
    from shared ones; where it is missing, the RSS.
    """
    own = _smaps_rollup_bytes(pid, (b"\nPrivate_Clean:", b"\nPrivate_Dirty:"))
    return process_rss(pid) if own is None else own


def _smaps_rollup_bytes(pid: int | str, keys: tuple[bytes, ...]) -> int | None:
    """Return the sum of ``keys``' fields of ``/proc/<pid>/smaps_rollup`` in bytes, or None.

    None where the file or a field is missing (before Linux 4.14, a process gone).
    """
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as handle:
            text = handle.read()
    except OSError:
        return None
    total = 0
    for key in keys:
        start = text.find(key)
        if start < 0:
            return None
        total += int(text[start + len(key):text.index(b"kB", start)]) * 1024
    return total


def read_children_rss(pid: int | None = None) -> int:
    """Return the memory of their own of all descendants of ``pid`` (default: this process).

    Each child's private pages (:func:`process_own_bytes`): what it shares with the parent
    it was forked from is the parent's.
    """
    return sum(process_own_bytes(child) for child in child_pids(pid))


def finished_children_own_peak(start_max_rss: int, parent_peak_rss: int) -> int:
    """Return the peak of children waited for since ``start_max_rss`` was read, if theirs.

    A child's ``ru_maxrss`` is the larger of its own peak and the copy of the parent it was
    forked from (a ``subprocess.run(["true"])`` of a 465 MiB kernel reports 465 MiB). Only
    a figure above the parent's own peak is the child's own; otherwise 0 (what the child
    held is then seen by sampling it while it ran).

    Examples
    --------
    >>> finished_children_own_peak(start_max_rss=2**40, parent_peak_rss=0)
    0
    """
    finished = finished_children_max_rss()
    return finished if finished > start_max_rss and finished > parent_peak_rss else 0


_mallinfo2: Callable[[], Any] | bool | None = None


def allocator_free_bytes() -> int | None:
    """Return the bytes glibc's ``malloc`` holds freed and ready for reuse, or None.

    Memory freed by the program but kept by the allocator (its arenas' free chunks) is
    usually still resident: allocations served from it do not raise RSS or its peak. Read
    with ``mallinfo2`` (glibc 2.33+), which walks the free lists: call it per profiled
    block, not per sample. None elsewhere (musl, macOS, older glibc).
    """
    global _mallinfo2
    if _mallinfo2 is None:
        _mallinfo2 = _load_mallinfo2() or False
    if _mallinfo2 is False:
        return None
    assert callable(_mallinfo2)
    return int(_mallinfo2().fordblks)


def _load_mallinfo2() -> Callable[[], Any] | None:
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
            "uordblks", "fordblks", "keepcost")]

    try:
        function = ctypes.CDLL(None).mallinfo2
    except (OSError, AttributeError):
        return None
    function.restype = MallInfo2
    function.argtypes = []
    return cast(Callable[[], Any], function)


def finished_children_max_rss() -> int:
    """Return the largest peak RSS in bytes of any child this process has waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    # Linux reports kilobytes, macOS bytes.
    return int(usage) if sys.platform == "darwin" else int(usage) * 1024


# --------------------------------------------------------------------------- exact peak


def _read_status_field(field: str, pid: int | None = None) -> int | None:
    try:
        with open(f"/proc/{pid or 'self'}/status", "rb") as handle:
            for raw in handle:
                if raw.startswith(field.encode()):
                    return int(raw.split()[1]) * 1024
    except OSError:
        return None
    return None


def read_hwm(pid: int | None = None) -> int | None:
    """Return the RSS high-water mark (``VmHWM``) in bytes of this process (or ``pid``).

    None where unsupported or the process has gone.
    """
    return _read_status_field("VmHWM:", pid)


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    return True


class PeakWatch:
    """Exact peaks of possibly nested or concurrent blocks, from one resettable high-water mark.

    The kernel keeps a single ``VmHWM`` per process (and torch a single CUDA peak). Each reset
    would erase the peak an enclosing block had not read yet, so every reset first folds the
    current mark into all open blocks. A block's peak is then the largest mark seen while it
    was open.

    Parameters
    ----------
    read : callable
        Returns the current high-water mark in bytes, or None when unsupported.
    reset : callable
        Resets the mark to the current usage; returns False when that is not permitted.
    remember_support : bool
        Decide support once (the kernel's mark) or at every block (CUDA, which appears when
        the user imports torch).

    Examples
    --------
    >>> token = PEAK_WATCH.open()
    >>> peak = PEAK_WATCH.close(token)
    >>> peak is None or peak > 0
    True
    """

    def __init__(
        self,
        read: Callable[[], int | None] = read_hwm,
        reset: Callable[[], bool] = _reset_hwm,
        remember_support: bool = True,
    ) -> None:
        self._read = read
        self._remember_support = remember_support
        self._reset = reset
        self._lock = threading.Lock()
        self._open: dict[int, int] = {}
        self._next_token = 0
        self._supported: bool | None = None

    @property
    def supported(self) -> bool:
        """Whether the high-water mark can be read (resets are tried by :meth:`open`)."""
        if self._supported is False and self._remember_support:
            return False
        # Probing only reads: a reset here would erase the peak of blocks already open.
        return self._read() is not None

    def _fold(self) -> None:
        mark = self._read()
        if mark is None:
            return
        for token, seen in self._open.items():
            if mark > seen:
                self._open[token] = mark

    def open(self) -> int | None:
        """Start watching; return a token, or None where the exact peak is unavailable."""
        if not self.supported:
            return None
        with self._lock:
            self._fold()
            if not self._reset():
                self._supported = False
                return None
            self._supported = True
            token = self._next_token
            self._next_token += 1
            self._open[token] = self._read() or 0
            return token

    def peek(self, token: int) -> int | None:
        """Return the block's peak so far without closing it."""
        with self._lock:
            if token not in self._open:
                return None
            self._fold()
            return self._open[token]

    def close(self, token: int | None) -> int | None:
        """Stop watching and return the block's peak RSS in bytes (None without a token)."""
        if token is None:
            return None
        with self._lock:
            if token not in self._open:
                return None
            self._fold()
            return self._open.pop(token)


PEAK_WATCH = PeakWatch()


class RssChange:
    """Mixin for results with ``start_rss``, ``end_rss`` and ``peak_rss`` (bytes)."""

    start_rss: int
    end_rss: int
    peak_rss: int

    @property
    def peak_increase(self) -> int:
        """Peak RSS minus RSS at the start, in bytes: what the code needed on top."""
        return self.peak_rss - self.start_rss

    @property
    def delta(self) -> int:
        """RSS at the end minus RSS at the start, in bytes: what the code left behind."""
        return self.end_rss - self.start_rss


# --------------------------------------------------------------------------- limit, pressure


@dataclass(frozen=True)
class MemoryLimit:
    """The memory a process may use before it is killed, and where that figure comes from.

    Attributes
    ----------
    limit_bytes : int
        ``min(system total, cgroup limit)``.
    source : str
        ``"cgroup v2"``, ``"cgroup v1"`` or ``"system"``.
    available_bytes : int
        What can still be allocated: the smaller of the system's available memory and the
        cgroup's headroom.
    system_total_bytes : int
        Physical memory of the machine.
    """

    limit_bytes: int
    source: str
    available_bytes: int
    system_total_bytes: int

    def to_dict(self) -> dict[str, object]:
        """Return the fields as a plain dict."""
        return asdict(self)

    def pressure(self, used_bytes: int,
                 thresholds: tuple[float, float] = DEFAULT_PRESSURE_THRESHOLDS) -> PressureLevel:
        """Classify ``used_bytes`` against this limit (see :func:`pressure_level`)."""
        return pressure_level(used_bytes, self.limit_bytes, thresholds)


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == "max" or not text:
        return None
    try:
        return int(text)
    except ValueError:
        return None


def _cgroup_paths(proc_cgroup: Path) -> tuple[str | None, str | None]:
    """Return this process's (v2 path, v1 memory path) from ``/proc/self/cgroup``."""
    v2_path: str | None = None
    v1_path: str | None = None
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None, None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":
            v2_path = path
        elif "memory" in controllers.split(","):
            v1_path = path
    return v2_path, v1_path


@dataclass(frozen=True)
class LimitingCgroup:
    """The cgroup whose memory limit binds this process (its own or an ancestor's).

    Attributes
    ----------
    directory : Path
        The cgroup's directory; ``usage_file``, ``stat_file`` and ``events_file`` are in it.
    version : str
        ``"cgroup v2"`` or ``"cgroup v1"``.
    """

    directory: Path
    version: str
    limit_bytes: int

    @property
    def usage_file(self) -> Path:
        """The file with the cgroup's memory usage in bytes."""
        v2 = self.version == "cgroup v2"
        return self.directory / ("memory.current" if v2 else "memory.usage_in_bytes")

    @property
    def stat_file(self) -> Path:
        """The file with the cgroup's memory breakdown (``inactive_file`` among it)."""
        return self.directory / "memory.stat"

    @property
    def file_cache_keys(self) -> tuple[bytes, bytes]:
        """The ``memory.stat`` keys of the page cache (hierarchy included in v1)."""
        if self.version == "cgroup v2":
            return b"active_file", b"inactive_file"
        return b"total_active_file", b"total_inactive_file"


def limiting_cgroup(
    cgroup_root: Path = _CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")
) -> LimitingCgroup | None:
    """Return the cgroup with the tightest memory limit above this process, or None.

    Walks from the process's own cgroup up to the root, since a parent's ``memory.max``
    binds as well.
    """
    v2_path, v1_path = _cgroup_paths(proc_cgroup)
    best: LimitingCgroup | None = None
    if v2_path is not None:
        for directory in cgroup_ancestors(cgroup_root / v2_path.lstrip("/"), cgroup_root):
            limit = _read_int(directory / "memory.max")
            if limit is not None and (best is None or limit < best.limit_bytes):
                best = LimitingCgroup(directory, "cgroup v2", limit)
        if best is not None:
            return best
    for base in (cgroup_root / "memory", cgroup_root):
        for directory in cgroup_ancestors(base / (v1_path or "/").lstrip("/"), base):
            limit = _read_int(directory / "memory.limit_in_bytes")
            if limit is not None and limit < _CGROUP_V1_UNLIMITED and (
                    best is None or limit < best.limit_bytes):
                best = LimitingCgroup(directory, "cgroup v1", limit)
        if best is not None:
            return best
    return None


def cgroup_ancestors(start: Path, top: Path) -> Iterator[Path]:
    """Yield ``start``, then each parent up to ``top`` (or until it leaves ``top``'s tree).

    Examples
    --------
    >>> [p.name for p in cgroup_ancestors(Path("/cg/a/b"), Path("/cg"))]
    ['b', 'a', 'cg']
    """
    current = start
    while True:
        yield current
        if current == top or top not in current.parents:
            return
        current = current.parent


def cgroup_limit(
    cgroup_root: Path = _CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")
) -> tuple[int, int | None, str] | None:
    """Return (limit, usage, version) of the tightest cgroup memory limit above this process.

    Returns None when no limit is set.
    """
    found = limiting_cgroup(cgroup_root, proc_cgroup)
    if found is None:
        return None
    return found.limit_bytes, _read_int(found.usage_file), found.version


def _stat_field(stat: bytes, key: bytes) -> int:
    """Return a ``memory.stat`` value by its key (0 when absent)."""
    name = key + b" "
    if stat.startswith(name):
        start = len(name)
    else:
        start = stat.find(b"\n" + name)
        if start < 0:
            return 0
        start += 1 + len(name)
    return int(stat[start:stat.index(b"\n", start)])


class WorkingSetReader:
    """What the out-of-memory killer cannot reclaim, read fast: (used bytes, limit bytes).

    Under a cgroup limit: the cgroup's usage minus its page cache (active and inactive file
    pages, which the kernel writes back and drops before it kills; tmpfs and shared memory
    stay counted, they sit on the anonymous lists). The kubelet's "working set" keeps the
    active file pages, so writing through a large ``np.memmap`` would look like a runaway
    cell. Every process of the cgroup counts. Without a cgroup limit: the machine's total
    minus ``MemAvailable``. Files are kept open and read with ``pread`` (tens of µs), the
    GIL held (:func:`pread_holding_gil`).
    """

    def __init__(self, cgroup: LimitingCgroup | None = None, *, find: bool = True) -> None:
        self.cgroup = limiting_cgroup() if cgroup is None and find else cgroup
        self.source = "system" if self.cgroup is None else self.cgroup.version
        self._fds: list[int] = []
        self._own_rss = False
        if self.cgroup is not None:
            self._usage = self._open(self.cgroup.usage_file)
            self._stat = self._open(self.cgroup.stat_file)
            self.limit_bytes = self.cgroup.limit_bytes
        else:
            self._meminfo = self._open(Path("/proc/meminfo"))
            self.limit_bytes = self._meminfo_field(b"MemTotal:")
        configured = configured_limit() if find else None
        if configured is not None and configured < self.limit_bytes:
            # A limit given to this server's processes (JupyterHub's $MEM_LIMIT), not a
            # cgroup's: the process's own memory counts, as the server measures it.
            self.limit_bytes, self.source, self._own_rss = configured, MEM_LIMIT_SOURCE, True

    def _open(self, path: Path) -> int:
        fd = os.open(path, os.O_RDONLY)
        self._fds.append(fd)
        return fd

    def _meminfo_field(self, key: bytes) -> int:
        text = pread_holding_gil(self._meminfo, 8192)
        start = text.index(key) + len(key)
        return int(text[start:text.index(b"kB", start)]) * 1024

    def used(self) -> int:
        """Return the bytes that count against :attr:`limit_bytes` now."""
        if self._own_rss:
            return _self_reader.rss()
        if self.cgroup is None:
            return self.limit_bytes - self._meminfo_field(b"MemAvailable:")
        usage = int(pread_holding_gil(self._usage, 64))
        stat = pread_holding_gil(self._stat, 16384)
        cache = sum(_stat_field(stat, key) for key in self.cgroup.file_cache_keys)
        return max(0, usage - cache)

    def close(self) -> None:
        """Close the files."""
        for fd in self._fds:
            os.close(fd)
        self._fds.clear()


MEM_LIMIT_SOURCE = "MEM_LIMIT"


def configured_limit() -> int | None:
    """Return ``$MEM_LIMIT`` in bytes (JupyterHub sets it for the user's server), or None.

    Examples
    --------
    >>> os.environ["MEM_LIMIT"] = "2G"; configured_limit()
    2000000000
    >>> del os.environ["MEM_LIMIT"]; configured_limit() is None
    True
    """
    text = os.environ.get("MEM_LIMIT", "").strip()
    try:
        value = parse_size(text) if text else 0
    except ValueError:
        return None
    return value if value > 0 else None


def effective_limit() -> MemoryLimit:
    """Return the effective memory limit of this process: cgroup-aware.

    Containers, JupyterHub and Kubernetes set a cgroup limit; the kernel is killed there,
    not at the machine's total. ``$MEM_LIMIT`` (JupyterHub's), when it is tighter, is the
    limit: the server's sidebar and the kernel's magics and guard then agree.

    Examples
    --------
    >>> limit = effective_limit()
    >>> limit.limit_bytes <= limit.system_total_bytes
    True
    """
    import psutil

    system = psutil.virtual_memory()
    total, available = int(system.total), int(system.available)
    found = cgroup_limit() if sys.platform.startswith("linux") else None
    result = MemoryLimit(total, "system", available, total)
    if found is not None and found[0] < total:
        limit, usage, source = found
        if usage is not None:
            available = max(0, min(available, limit - usage))
        result = MemoryLimit(limit, source, available, total)
    configured = configured_limit()
    if configured is not None and configured < result.limit_bytes:
        headroom = max(0, min(result.available_bytes, configured - read_rss()))
        result = MemoryLimit(configured, MEM_LIMIT_SOURCE, headroom, total)
    return result


def check_thresholds(thresholds: tuple[float, float]) -> tuple[float, float]:
    """Return ``(medium, high)``; raise ValueError unless 0 < medium < high <= 1."""
    medium, high = thresholds
    if not 0 < medium < high <= 1:
        raise ValueError(f"thresholds must satisfy 0 < medium < high <= 1, got {thresholds}")
    return medium, high


def pressure_level(
    used_bytes: int,
    limit_bytes: int,
    thresholds: tuple[float, float] = DEFAULT_PRESSURE_THRESHOLDS,
) -> PressureLevel:
    """Classify usage against a limit as ``low``, ``medium`` or ``high``.

    Examples
    --------
    >>> pressure_level(80, 100)
    'medium'
    """
    medium, high = check_thresholds(thresholds)
    if limit_bytes <= 0:
        raise ValueError("limit_bytes must be positive")
    share = used_bytes / limit_bytes
    if share >= high:
        return "high"
    if share >= medium:
        return "medium"
    return "low"


def format_bytes(n_bytes: float | None, signed: bool = False) -> str:
    """Format a byte count for people: ``"64.0 MiB"``.

    Examples
    --------
    >>> format_bytes(64 * 1024 * 1024)
    '64.0 MiB'
    """
    if n_bytes is None:
        return "n/a"
    sign = "+" if signed and n_bytes > 0 else ("-" if n_bytes < 0 else "")
    size = abs(float(n_bytes))
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{sign}{size:.0f} {unit}" if unit == "B" else f"{sign}{size:.1f} {unit}"
        size /= 1024
    return f"{sign}{size:.1f} TiB"  # pragma: no cover - loop always returns


_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "kib": 1024,
    "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
    "g": 1000**3, "gb": 1000**3, "gib": 1024**3,
    "t": 1000**4, "tb": 1000**4, "tib": 1024**4,
}


def parse_size(text: str) -> int:
    """Parse a size such as ``"512"``, ``"10MB"`` or ``"1.5 GiB"`` into bytes.

    Examples
    --------
    >>> parse_size("10MiB"), parse_size("1.5 kb")
    (10485760, 1500)
    """
    cleaned = text.strip().lower().replace(" ", "").replace("_", "")
    number = cleaned.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = cleaned[len(number):]
    if unit not in _SIZE_UNITS or not number:
        raise ValueError(f"not a size: {text!r} (try 512, 10MB or 1.5GiB)")
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"not a size: {text!r} (try 512, 10MB or 1.5GiB)") from None
    if not value >= 0:  # negative or NaN
        raise ValueError(f"a size must be 0 or more, got {text!r}")
    return int(value * _SIZE_UNITS[unit])
