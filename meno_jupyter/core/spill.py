"""Moving idle variables to disk: same name, type, dtypes and values, data in a file mapping.

A spilled numpy array is an ordinary ``ndarray`` whose memory is a shared mapping of a
``.npy`` file; a spilled DataFrame or Series keeps its index and column labels and has each
column rebuilt on such an array (no copy: pandas keeps the arrays it is given), Arrow
columns (pandas 3 ``str``) on a memory-mapped Arrow IPC file. The kernel can then drop the
pages from RAM and read them back page by page; writing to the variable writes to the file.
Anonymous memory (what the out-of-memory killer cannot reclaim) falls by the variable's
size once nothing else holds the old object.

Before anything changes, every part is checked (its dtype can live in a file, nothing but
the namespace holds the object) and its space on disk is reserved (``posix_fallocate``):
a full disk is an ``OSError`` and the variable stays as it was, never a SIGBUS later.
"""

from __future__ import annotations

import contextlib
import gc
import os
import re
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from meno_jupyter.core.caches import private_directory
from meno_jupyter.core.cleanup import give_back_freed_memory
from meno_jupyter.core.ledger import write_all
from meno_jupyter.core.memory import MIB, format_bytes
from meno_jupyter.core.namespace import deep_sizeof
from meno_jupyter.core.rendering import RendersAsTable, html_table, text_table

__all__ = ["SpillError", "SpillReport", "SpillStore", "anonymous_rss", "default_spill_dir"]

_WRITE_CHUNK = 64 * MIB
# Numbers, booleans, dates and durations: what a file holds byte for byte.
_FILE_KINDS = "biufcmM"


class SpillError(ValueError):
    """A variable that cannot be moved to disk (the message says why); nothing changed."""


def anonymous_rss() -> int:
    """Return this process's anonymous resident memory (``RssAnon``) in bytes."""
    with open("/proc/self/status", "rb") as handle:
        for line in handle:
            if line.startswith(b"RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0


def default_spill_dir() -> Path:
    """Return this process's own spill directory under the user's cache directory."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "meno-jupyter" / "spill" / f"kernel-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _is_memory_filesystem(path: Path) -> bool:
    """Tell whether ``path`` lies on a tmpfs/ramfs (its files are memory)."""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return False
    best, kind = "", ""
    resolved = str(path.resolve())
    for line in mounts:
        parts = line.split()
        if len(parts) >= 3 and (resolved == parts[1] or resolved.startswith(
                parts[1].rstrip("/") + "/")) and len(parts[1]) >= len(best):
            best, kind = parts[1], parts[2]
    return kind in ("tmpfs", "ramfs")


# --------------------------------------------------------------------------- files


@dataclass
class _Files:
    """The files one variable's parts went to (removed together)."""

    directory: Path
    paths: list[Path] = field(default_factory=list)

    def new(self, suffix: str) -> Path:
        path = self.directory / f"{uuid.uuid4().hex}{suffix}"
        self.paths.append(path)
        return path

    @property
    def size_bytes(self) -> int:
        total = 0
        for path in self.paths:
            with contextlib.suppress(OSError):
                total += path.stat().st_size
        return total

    def remove(self) -> None:
        for path in self.paths:
            with contextlib.suppress(OSError):
                path.unlink()
        self.paths.clear()


def _reserve(fd: int, size: int) -> None:
    """Reserve ``size`` bytes for a file; ENOSPC becomes a clear OSError."""
    if size <= 0:
        return
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as error:
        raise OSError(error.errno, f"no room on the disk for {format_bytes(size)} "
                                   f"({error.strerror})") from None


def _write_array(array: Any, files: _Files) -> Any:
    """Write an array to a ``.npy`` file (space reserved first); return it mapped."""
    import numpy as np

    if array.dtype.kind not in _FILE_KINDS:
        raise SpillError(f"an array of dtype {array.dtype}: only numbers, booleans, dates "
                         "and durations can live in a file")
    fortran = bool(array.flags.f_contiguous and not array.flags.c_contiguous)
    path = files.new(".npy")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(os.dup(fd), "wb") as header:
            np.lib.format.write_array_header_2_0(header, {
                "descr": np.lib.format.dtype_to_descr(array.dtype),
                "fortran_order": fortran, "shape": array.shape})
        offset = os.lseek(fd, 0, os.SEEK_END)
        _reserve(fd, offset + array.nbytes)
        ordered = array.T if fortran else array
        if ordered.flags.c_contiguous:
            data = memoryview(np.ascontiguousarray(ordered).reshape(-1).view(np.uint8))  # type: ignore[arg-type]
            for start in range(0, len(data), _WRITE_CHUNK):
                write_all(fd, data[start:start + _WRITE_CHUNK])
        else:  # a strided view: written a slab of rows at a time, never copied whole
            rows = max(1, _WRITE_CHUNK // max(1, ordered[0].nbytes if len(ordered) else 1))
            for start in range(0, len(ordered), rows):
                slab = np.ascontiguousarray(ordered[start:start + rows])
                write_all(fd, memoryview(slab.reshape(-1).view(np.uint8)))  # type: ignore[arg-type]
        os.fdatasync(fd)
        # Written and on disk: the page cache may drop it (the cgroup counts it until then).
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    mapped = np.load(path, mmap_mode="r+")
    return mapped.view(np.ndarray)  # an ordinary ndarray whose base is the mapping


def _write_arrow(chunked: Any, files: _Files) -> Any:
    """Write an Arrow (chunked) array to an IPC file; return it memory-mapped."""
    import pyarrow as pa

    table = pa.table({"values": chunked})
    path = files.new(".arrow")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "r+b") as handle:
        _reserve(handle.fileno(), table.nbytes + 64 * 1024)  # data, padding and footer
        with pa.ipc.new_file(pa.PythonFile(handle, mode="w"), table.schema) as writer:
            writer.write_table(table)
        handle.flush()
        handle.truncate(handle.tell())  # the footer must end the file
        os.fdatasync(handle.fileno())
        os.posix_fadvise(handle.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    source = pa.memory_map(str(path), "r")
    return pa.ipc.open_file(source).read_all().column("values")


# --------------------------------------------------------------------------- values


def _spill_extension(array: Any, files: _Files) -> Any:
    """Return a pandas array of the same type and dtype, its data in files."""
    import numpy as np
    from pandas.core.arrays._mixins import NDArrayBackedExtensionArray
    from pandas.core.arrays.masked import BaseMaskedArray

    masked: Any = array  # pandas' own array types: their backing data is private

    if isinstance(array, NDArrayBackedExtensionArray):  # numpy, dates, categoricals
        backing = array._ndarray
        if backing.dtype.kind not in _FILE_KINDS:
            raise SpillError(f"a column of {array.dtype} holds Python objects: they cannot "
                             "live in a file (%optimize_df may turn it into categories or "
                             "Arrow strings first)")
        return masked._from_backing_data(_write_array(backing, files))
    if isinstance(array, BaseMaskedArray):  # Int64, Float64, boolean
        return type(masked)(_write_array(masked._data, files),
                            _write_array(masked._mask, files))
    pa_array = getattr(array, "_pa_array", None)
    if pa_array is not None:  # Arrow-backed: pandas 3 str, string[pyarrow], ...[pyarrow]
        mapped = _write_arrow(pa_array, files)
        try:
            rebuilt = type(array)(mapped, dtype=array.dtype)
        except TypeError:  # pandas 2: the type alone says the dtype
            rebuilt = type(array)(mapped)
        if rebuilt.dtype != array.dtype:
            raise SpillError(f"a column of {array.dtype} would come back as {rebuilt.dtype}")
        return rebuilt
    if isinstance(array, np.ndarray):
        return _write_array(array, files)
    raise SpillError(f"a column of {array.dtype} ({type(array).__name__}) cannot live in a "
                     "file")


def _spill_value(value: Any, files: _Files) -> Any:
    """Return ``value`` (which :func:`_check` passed) rebuilt on files, labels kept."""
    return _rebuild(value, lambda array: _write_array(array, files),
                    lambda column: _spill_extension(column, files), _refuse)


def _rebuild(value: Any, array: Callable[[Any], Any], column: Callable[[Any], Any],
             other: Callable[[Any], Any]) -> Any:
    """Return ``value`` with each numpy array and pandas column replaced, the rest kept.

    The same containers (dicts, lists, tuples), index, labels, names and attrs; what is
    none of these goes to ``other``.
    """
    import numpy as np

    if isinstance(value, np.ndarray):
        return array(value)
    if (type(value).__module__ or "").startswith("pandas"):
        import pandas as pd

        if isinstance(value, pd.DataFrame):
            columns = {i: column(value.iloc[:, i].array) for i in range(value.shape[1])}
            frame = pd.DataFrame(columns, index=value.index, copy=False)
            frame.columns = value.columns
            frame.attrs = dict(value.attrs)
            return frame
        if isinstance(value, pd.Series):
            series = pd.Series(column(value.array), index=value.index, name=value.name,
                               copy=False)
            series.attrs = dict(value.attrs)
            return series
    if type(value) is dict:
        return {k: _rebuild(v, array, column, other) for k, v in value.items()}
    if type(value) in (list, tuple):
        return type(value)(_rebuild(item, array, column, other) for item in value)
    return other(value)


def _check(value: Any) -> None:
    """Raise SpillError, without writing anything, if ``value`` cannot move to disk."""
    import numpy as np

    if isinstance(value, np.ndarray):
        if type(value) is not np.ndarray:
            raise SpillError(f"a {type(value).__name__} (a subclass of ndarray) would come "
                             "back as a plain ndarray")
        _check_dtype(value.dtype)
        return
    if (type(value).__module__ or "").startswith("pandas"):
        import pandas as pd

        if isinstance(value, pd.DataFrame):
            for i in range(value.shape[1]):
                _check_column(value.iloc[:, i].array)
            return
        if isinstance(value, pd.Series):
            _check_column(value.array)
            return
    if type(value) is dict:
        for item in value.values():
            _check(item)
        return
    if type(value) in (list, tuple):
        for item in value:
            _check(item)
        return
    _refuse(value)


def _check_dtype(dtype: Any) -> None:
    if dtype.kind not in _FILE_KINDS:
        raise SpillError(f"an array of dtype {dtype}: only numbers, booleans, dates and "
                         "durations can live in a file")


def _check_column(array: Any) -> None:
    import numpy as np
    from pandas.core.arrays._mixins import NDArrayBackedExtensionArray
    from pandas.core.arrays.masked import BaseMaskedArray

    if isinstance(array, NDArrayBackedExtensionArray):
        if array._ndarray.dtype.kind not in _FILE_KINDS:
            raise SpillError(f"a column of {array.dtype} holds Python objects: they cannot "
                             "live in a file (%optimize_df may turn it into categories or "
                             "Arrow strings first)")
    elif isinstance(array, np.ndarray):
        _check_dtype(array.dtype)
    elif not isinstance(array, BaseMaskedArray) and getattr(array, "_pa_array", None) is None:
        raise SpillError(f"a column of {array.dtype} ({type(array).__name__}) cannot live "
                         "in a file")


def _refuse(value: object) -> Any:
    raise SpillError(f"a value of type {type(value).__name__}: only numpy arrays, pandas "
                     "DataFrames and Series (numeric, bool, dates, categoricals, Arrow "
                     "strings) and lists, tuples and dicts of them can be moved to disk")


def _view_held_elsewhere(value: Any) -> str | None:
    """Say so when ``value`` views memory that something else keeps alive."""
    import numpy as np

    if isinstance(value, np.ndarray):
        base = value.base
        # numpy points a view at the array owning the memory; that array is held by the
        # view's ``.base``, by ``base`` here and by getrefcount's argument.
        if isinstance(base, np.ndarray) and sys.getrefcount(base) > 3:
            return ("it is a view of another array that something else holds (spill that "
                    "array, or make this one a copy first)")
        return None
    items: Any = value.values() if type(value) is dict else value \
        if type(value) in (list, tuple) else ()
    for item in items:
        found = _view_held_elsewhere(item)
        if found:
            return found
    return None


def _references(value: object) -> int:
    return sys.getrefcount(value)


def _holders(name: str, namespace: Mapping[str, object], out: Mapping[Any, object] | None
             ) -> list[str]:
    """Name what holds ``namespace[name]`` besides that name: Out, other names, anything."""
    value = namespace[name]
    held = [f"`{other}`" for other, item in namespace.items() if item is value and other != name]
    outputs = [key for key, item in (out or {}).items() if item is value]
    held += [f"Out[{key}]" for key in outputs]
    # One reference from the namespace, the rest from this frame: as for a probe held once.
    probe = {"probe": object()}
    unexplained = (_references(namespace[name]) - _references(probe["probe"])
                   - (len(held) - len(outputs)) - len(outputs) - 1)
    if unexplained > 0:
        held.append("something else (a list, a dict, a closure or a view of it)")
    return held


# --------------------------------------------------------------------------- the store


@dataclass(frozen=True)
class SpilledVariable:
    """A variable whose data lives in files."""

    name: str
    type_name: str
    ram_bytes_before: int
    disk_bytes: int
    freed_bytes: int
    spilled_at: float
    seconds: float


@dataclass(frozen=True)
class SpillReport(RendersAsTable):
    """What ``%memspill`` moved (or brought back), and what anonymous memory it freed."""

    moved: tuple[SpilledVariable, ...]
    directory: str
    back: bool = False

    def to_text(self) -> str:  # noqa: D102 - RendersAsTable
        if self.back:
            return self._headline()
        return self._headline() + "\n" + text_table(self._headers(), self._rows())

    def to_html(self) -> str:  # noqa: D102 - RendersAsTable
        if self.back:
            import html

            return f"<p>{html.escape(self._headline())}</p>"
        return html_table(self._headers(), self._rows(), caption=self._headline())

    def _headline(self) -> str:
        if self.back:
            names = ", ".join(f"`{v.name}`" for v in self.moved)
            return f"brought {names} back into memory; their files are removed"
        freed = sum(v.freed_bytes for v in self.moved)
        return (f"moved {len(self.moved)} variable(s) to disk in {self.directory}: "
                f"{format_bytes(freed)} of memory freed")

    @staticmethod
    def _headers() -> tuple[str, ...]:
        return ("name", "type", "in memory before", "on disk", "freed", "time")

    def _rows(self) -> list[list[object]]:
        return [[v.name, v.type_name, format_bytes(v.ram_bytes_before),
                 format_bytes(v.disk_bytes), format_bytes(v.freed_bytes), f"{v.seconds:.2f} s"]
                for v in self.moved]


@dataclass
class _Entry:
    variable: SpilledVariable
    value_id: int
    files: _Files


class SpillStore:
    """Move variables of a namespace to files, keep track of them, and bring them back.

    Files live in a private directory (mode 0700; one others can write is refused; one on a
    tmpfs is refused, its files being memory) and are removed when the variable is deleted,
    rebound or brought back (:meth:`forget_gone`), and by :meth:`close`.
    """

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or default_spill_dir()
        self._owned = directory is None
        self._entries: dict[str, _Entry] = {}

    def _ready(self) -> Path:
        try:
            private_directory(self.directory)
        except (PermissionError, NotADirectoryError) as error:
            raise SpillError(str(error).replace("disk_dir", "spill directory")) from None
        except OSError as error:
            raise SpillError(f"cannot use {self.directory} for spill files: "
                             f"{error.strerror}") from None
        if not os.access(self.directory, os.W_OK):
            raise SpillError(f"cannot write to {self.directory} (a read-only disk?)")
        if _is_memory_filesystem(self.directory):
            raise SpillError(f"{self.directory} is on a tmpfs: its files are memory, so "
                             "moving variables there frees nothing; choose a directory on "
                             "disk (--dir)")
        return self.directory

    def spill(self, names: list[str], namespace: MutableMapping[str, Any],
              out: Mapping[Any, object] | None = None) -> SpillReport:
        """Move the variables ``names`` to disk, rebinding each name to its file-backed twin.

        Every variable is checked and written before any name is rebound: a name that
        cannot be moved raises SpillError, a full disk OSError, and then nothing changed.
        """
        names = list(dict.fromkeys(names))  # a name given twice moves once
        missing = [n for n in names if n not in namespace]
        if missing:
            raise SpillError(f"no variable named {', '.join(missing)}")
        for name in names:
            _check(namespace[name])
            if name in self._entries and self._entries[name].value_id == id(namespace[name]):
                raise SpillError(f"`{name}` is on disk already (%memspill --back {name} "
                                 "brings it back)")
            held = _holders(name, namespace, out)
            if held:
                raise SpillError(f"`{name}` is also held by {', '.join(held)}: moving it "
                                 f"would free nothing (%memclean frees the output cache; "
                                 f"del the other names)")
            reason = _view_held_elsewhere(namespace[name])
            if reason:
                raise SpillError(f"`{name}`: {reason}")
        directory = self._ready()
        # Every variable is written before any name is rebound: all move, or none does.
        twins: list[tuple[str, Any, _Files, int, float]] = []
        written: list[_Files] = []
        try:
            for name in names:
                started = time.perf_counter()
                files = _Files(directory)
                written.append(files)
                before_bytes = deep_sizeof(namespace[name], time_budget_s=0.5)[0]
                twins.append((name, _spill_value(namespace[name], files), files,
                              before_bytes, started))
        except BaseException:
            for files in written:
                files.remove()
            raise
        moved = []
        for name, twin, files, before_bytes, started in twins:
            anon_before = anonymous_rss()
            namespace[name] = twin
            gc.collect()
            give_back_freed_memory()
            # What left anonymous memory, up to the variable's own size (trimming the
            # allocator may give back other freed memory at the same time).
            freed = min(before_bytes, max(0, anon_before - anonymous_rss()))
            variable = SpilledVariable(name, type(twin).__name__, before_bytes,
                                       files.size_bytes, freed, time.time(),
                                       time.perf_counter() - started)
            self._entries[name] = _Entry(variable, id(twin), files)
            moved.append(variable)
        return SpillReport(tuple(moved), str(directory))

    def bring_back(self, names: list[str], namespace: MutableMapping[str, Any]) -> SpillReport:
        """Copy spilled variables back into memory and remove their files."""
        self.forget_gone(namespace)
        unknown = [n for n in names if n not in self._entries]
        if unknown:
            raise SpillError(f"not on disk: {', '.join(unknown)} (%memspill --list)")
        back = []
        for name in names:
            entry = self._entries.pop(name)
            namespace[name] = _to_memory(namespace[name])
            gc.collect()
            entry.files.remove()
            back.append(entry.variable)
        return SpillReport(tuple(back), str(self.directory), back=True)

    def forget_gone(self, namespace: Mapping[str, object]) -> list[str]:
        """Remove the files of spilled variables deleted or rebound since; return their names."""
        gone = [name for name, entry in self._entries.items()
                if name not in namespace or id(namespace[name]) != entry.value_id]
        for name in gone:
            self._entries.pop(name).files.remove()
        return gone

    def listing(self, namespace: Mapping[str, object]) -> list[SpilledVariable]:
        """Return the variables on disk now."""
        self.forget_gone(namespace)
        return [entry.variable for entry in self._entries.values()]

    def spilled_names(self) -> set[str]:
        """Return the names on disk now."""
        return set(self._entries)

    def close(self) -> None:
        """Remove every spill file (and the directory when it is this store's own)."""
        for entry in self._entries.values():
            entry.files.remove()
        self._entries.clear()
        if self._owned:
            shutil.rmtree(self.directory, ignore_errors=True)


def _to_memory(value: Any) -> Any:
    """Return a copy of a spilled value held in ordinary memory."""
    import numpy as np

    return _rebuild(value, lambda array: np.array(array, copy=True), _array_to_memory,
                    lambda kept: kept)


def _array_to_memory(array: Any) -> Any:
    pa_array = getattr(array, "_pa_array", None)
    if pa_array is not None:
        import pyarrow as pa

        table = pa.table({"values": pa_array})
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        copied = pa.ipc.open_stream(sink.getvalue()).read_all().column("values")
        return type(array)(copied)
    return array.copy()


_SMAPS_HEADER = re.compile(r"^[0-9a-f]+-[0-9a-f]+ ")


def resident_file_bytes(paths: list[Path]) -> int:
    """Return how much of these files' mappings is in RAM now (``Rss`` in ``smaps``)."""
    wanted = {str(p) for p in paths}
    total, current = 0, False
    try:
        with open("/proc/self/smaps", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if _SMAPS_HEADER.match(line):
                    parts = line.rstrip("\n").split(maxsplit=5)
                    current = len(parts) == 6 and parts[5] in wanted
                elif current and line.startswith("Rss:"):
                    total += int(line.split()[1]) * 1024
    except OSError:
        return 0
    return total
