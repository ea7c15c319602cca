"""Checkpoint files: a notebook's variables on disk, authenticated, and bringing them back.

A variable is pickled (protocol 5) straight to its file, its large buffers (numpy arrays,
pandas blocks, Arrow buffers) out of band: nothing builds a whole pickle in memory. Files
are content-addressed: a variable whose content did not change is not written again. Every
file is authenticated as the caches' disk tier authenticates its entries (a secret key per
directory, keyed BLAKE2b; :func:`~meno_jupyter.core.caches.cache_key`): the code covers
the SHA-256 of each 64 MiB segment, so reading back verifies segments in parallel and
nothing is unpickled before it passes. A checkpoint is complete or absent: its objects land
first, then its manifest replaces the previous one in one rename, then unused objects go.

Functions defined in the notebook are saved by value (their code) and come back bound to
the namespace they are restored into; modules come back as imports. The kernel's side (what
changed, the forked writer) is :mod:`meno_jupyter.core.checkpointer`.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import json
import marshal
import os
import pickle
import re
import stat
import struct
import sys
import tempfile
import threading
import time
import types
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from meno_jupyter.core.caches import CorruptEntryError, cache_key, private_directory
from meno_jupyter.core.ledger import (
    LedgerFileError,
    kernel_file_for,
    read_json_file,
    write_all,
    write_json_atomic,
)
from meno_jupyter.core.memory import GIB, MIB, format_bytes, parse_size
from meno_jupyter.core.rendering import RendersAsTable, html_table, text_table

__all__ = [
    "DEFAULT_MAX_BYTES",
    "Checkpoint",
    "CheckpointError",
    "RestoreReport",
    "checkpoint_directory",
    "notebook_identity",
    "read_checkpoint",
    "restore",
]

FORMAT_VERSION = 1
SEGMENT_BYTES = 64 * MIB
DEFAULT_MAX_BYTES = 8 * GIB
# One manifest per kernel session (a new kernel never replaces a dead one's); the newest
# few sessions' are kept, and the objects they name.
MANIFEST_PATTERN = re.compile(r"checkpoint-([0-9a-f]{32})\.meno")
KEPT_SESSIONS = 3
CELLS_LOG = "cells.log"
OBJECTS = "objects"
_OBJECT_SUFFIX = ".var"
_OBJECT_MAGIC = b"MENOVAR1"
_MANIFEST_MAGIC = b"MENOCKP1"
_LENGTH = struct.Struct("<I")
_MAC_BYTES = 16
_MAX_TRAILER_BYTES = 64 * MIB
MAX_LOG_BYTES = 1 * MIB
_IMMUTABLE = (int, float, complex, str, bytes, bool, type(None), range)


class CheckpointError(Exception):
    """A checkpoint directory or file that cannot be used (the message says why)."""


# --------------------------------------------------------------------------- where


def notebook_identity(environ: Mapping[str, str], namespace: Mapping[str, object],
                      cwd: str) -> str:
    """Return what names the notebook: its path when the front end tells, else ``cwd``.

    Jupyter's server sets ``JPY_SESSION_NAME`` for the kernels it starts; VS Code puts
    ``__vsc_ipynb_file__`` in the namespace.

    Examples
    --------
    >>> notebook_identity({"JPY_SESSION_NAME": "/home/a/n.ipynb"}, {}, "/tmp")
    '/home/a/n.ipynb'
    >>> notebook_identity({}, {}, "/tmp")
    '/tmp'
    """
    for found in (environ.get("JPY_SESSION_NAME"), namespace.get("__vsc_ipynb_file__")):
        if isinstance(found, str) and found.strip():
            return found
    return cwd


def jupyter_data_dir() -> Path:
    """Return Jupyter's data directory (``~/.local/share/jupyter`` without Jupyter)."""
    try:
        from jupyter_core.paths import jupyter_data_dir
    except ImportError:  # terminal IPython without Jupyter installed
        return Path.home() / ".local" / "share" / "jupyter"
    return Path(jupyter_data_dir())


def checkpoint_directory(notebook: str, base: Path | None = None) -> Path:
    """Return the directory that keeps ``notebook``'s checkpoints (under Jupyter's data dir).

    Examples
    --------
    >>> checkpoint_directory("/w/My Analysis.ipynb", Path("/d")).name[:12]
    'My_Analysis-'
    """
    return (base or jupyter_data_dir() / "meno-jupyter" / "checkpoints") / notebook_slug(notebook)


def notebook_slug(notebook: str) -> str:
    """Return a file name for a notebook: its readable stem and a digest of its identity.

    Examples
    --------
    >>> notebook_slug("/w/My Analysis.ipynb")[:12]
    'My_Analysis-'
    """
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(notebook).stem or "notebook")[:40]
    digest = hashlib.sha256(notebook.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{stem}-{digest}"


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class SavedVariable:
    """A variable a checkpoint holds."""

    name: str
    type_name: str
    size_bytes: int
    made_by: int | None
    saved_after: int
    saved_at: float
    object_name: str = ""  # the file under objects/; empty for an import
    module: str = ""  # for an import: the module's name


@dataclass(frozen=True)
class SkippedVariable:
    """A variable a checkpoint does not hold, and why."""

    name: str
    type_name: str
    reason: str
    made_by: int | None


@dataclass(frozen=True)
class Checkpoint(RendersAsTable):
    """A complete checkpoint: what it holds and what it left out."""

    directory: str
    notebook: str
    session: str
    cell: int
    taken_at: float
    variables: tuple[SavedVariable, ...]
    skipped: tuple[SkippedVariable, ...]
    written_bytes: int = 0
    duration_s: float = 0.0
    python: str = field(default_factory=lambda: "{}.{}".format(*sys.version_info[:2]))

    @property
    def size_bytes(self) -> int:
        """Return the bytes of all variables the checkpoint holds."""
        return sum(v.size_bytes for v in self.variables)

    def to_dict(self) -> dict[str, Any]:
        """Return the checkpoint as plain data (its manifest)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Checkpoint:
        """Rebuild a checkpoint from :meth:`to_dict`; raise CheckpointError if malformed."""
        try:
            variables = tuple(SavedVariable(**v) for v in data["variables"])
            skipped = tuple(SkippedVariable(**v) for v in data["skipped"])
            fields = {k: data[k] for k in ("directory", "notebook", "session", "cell",
                                           "taken_at", "written_bytes", "duration_s",
                                           "python")}
            checkpoint = cls(variables=variables, skipped=skipped, **fields)
        except (KeyError, TypeError) as error:
            raise CheckpointError(f"the checkpoint's manifest is malformed ({error})") from None
        for variable in checkpoint.variables:
            if not re.fullmatch(r"[0-9a-f]{64}" + re.escape(_OBJECT_SUFFIX) + "|",
                                variable.object_name):
                raise CheckpointError("the checkpoint's manifest names an odd file")
        return checkpoint

    def when(self) -> str:
        """Return "after cell [N] at 14:02:11"."""
        return f"after cell [{self.cell}] at {_clock(self.taken_at)}"

    def describe(self) -> str:
        """Say in one line what the checkpoint holds."""
        left = f"; {len(self.skipped)} left out" if self.skipped else ""
        return (f"last checkpoint {self.when()}: {len(self.variables)} variables, "
                f"{format_bytes(self.size_bytes)}{left}")

    def _rows(self) -> list[list[object]]:
        rows: list[list[object]] = [
            [v.name, v.type_name, format_bytes(v.size_bytes), _cell(v.made_by), "saved"]
            for v in self.variables]
        rows += [[s.name, s.type_name, "", _cell(s.made_by), s.reason] for s in self.skipped]
        return rows

    def to_text(self) -> str:  # noqa: D102 - RendersAsTable
        headers = ("name", "type", "size", "made by", "")
        return self.describe() + "\n" + text_table(headers, self._rows())

    def to_html(self) -> str:  # noqa: D102 - RendersAsTable
        headers = ("name", "type", "size", "made by", "")
        return html_table(headers, self._rows(), caption=self.describe())


def _clock(when: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(when))


def type_name(value: object) -> str:
    """Return the name a report gives a value's type ("class" for a class)."""
    return "class" if isinstance(value, type) else type(value).__name__


def _cell(number: int | None) -> str:
    return "" if number is None else f"[{number}]"


# --------------------------------------------------------------------------- sealed files


def _mac(key: bytes, magic: bytes, body: bytes) -> bytes:
    mac = hashlib.blake2b(digest_size=_MAC_BYTES, key=key)
    mac.update(magic)
    mac.update(body)
    return mac.digest()


def _seal(body: bytes, key: bytes, magic: bytes) -> bytes:
    """Return ``body`` followed by its length, its keyed code and ``magic``."""
    return body + _LENGTH.pack(len(body)) + _mac(key, magic, body) + magic


def _read_sealed(fd: int, size: int, key: bytes, magic: bytes) -> tuple[bytes, int]:
    """Return the authenticated body at the end of an open file and where it starts.

    Raise CorruptEntryError for a file of another kind, cut short, or failing the check.
    """
    end = len(magic) + _MAC_BYTES + _LENGTH.size
    tail = os.pread(fd, end, max(0, size - end)) if size >= end else b""
    if len(tail) < end or tail[-len(magic):] != magic:
        raise CorruptEntryError("not a meno-jupyter checkpoint file (of this version)")
    (length,) = _LENGTH.unpack(tail[:_LENGTH.size])
    if length > min(size - end, _MAX_TRAILER_BYTES):
        raise CorruptEntryError("the file is cut short or its trailer is damaged")
    start = size - end - length
    body = os.pread(fd, length, start)
    if len(body) != length or not hmac.compare_digest(
            _mac(key, magic, body), tail[_LENGTH.size:_LENGTH.size + _MAC_BYTES]):
        raise CorruptEntryError("authentication failed (the file is damaged, cut short, or "
                                "was not written for this checkpoint directory)")
    return body, start


def _open_regular(path: Path) -> tuple[int, int]:
    """Open a regular file for reading (no link, no FIFO); return (fd, size)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    status = os.fstat(fd)
    if not stat.S_ISREG(status.st_mode):
        os.close(fd)
        raise CorruptEntryError(f"{path.name} is not a regular file")
    return fd, status.st_size


# --------------------------------------------------------------------------- one variable


class _Sink:
    """Take a pickle stream and its buffers: hash them per segment, and write them if asked.

    Each part (the pickle stream, then each buffer) gets one SHA-256 per 64 MiB segment
    (an empty part one of nothing).
    """

    def __init__(self, fd: int | None) -> None:
        self.fd = fd
        self.parts: list[int] = []
        self.digests: list[list[str]] = []
        self._part_length = 0
        self._part_digests: list[str] = []
        self._in_segment = 0
        self._hash = hashlib.sha256()

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):
            take = min(len(view) - done, SEGMENT_BYTES - self._in_segment)
            piece = view[done:done + take]
            self._hash.update(piece)
            if self.fd is not None:
                write_all(self.fd, piece)
            done += take
            self._in_segment += take
            self._part_length += take
            if self._in_segment == SEGMENT_BYTES:
                self._end_segment()
        return len(view)

    def _end_segment(self) -> None:
        self._part_digests.append(self._hash.hexdigest())
        self._hash = hashlib.sha256()
        self._in_segment = 0

    def end_part(self) -> None:
        if self._in_segment or not self._part_digests:
            self._end_segment()
        self.parts.append(self._part_length)
        self.digests.append(self._part_digests)
        self._part_length = 0
        self._part_digests = []

    def content_digest(self) -> str:
        return _content_name(self.parts, self.digests)


def _content_name(parts: list[int], digests: list[list[str]]) -> str:
    summary = json.dumps({"parts": parts, "digests": digests}).encode()
    return hashlib.sha256(summary).hexdigest()


# Set while variables are rebuilt: functions saved by value get these globals.
_restore_globals = threading.local()


def _rebuild_function(  # noqa: PLR0917 - pickle calls it with positional arguments
        code: bytes, name: str, qualname: str, defaults: Any, kwdefaults: Any,
        closure: tuple[Any, ...] | None, attributes: dict[str, Any] | None,
) -> types.FunctionType:
    namespace = getattr(_restore_globals, "namespace", None)
    if namespace is None:
        namespace = {"__builtins__": __builtins__}
    cells = None if closure is None else tuple(types.CellType(v) for v in closure)
    function = types.FunctionType(marshal.loads(code), namespace, name, defaults, cells)
    function.__qualname__ = qualname
    function.__kwdefaults__ = kwdefaults
    if attributes:
        function.__dict__.update(attributes)
    return function


class _Pickler(pickle.Pickler):
    """Protocol 5, large buffers out of band; the notebook's own functions by value."""

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is types.FunctionType and obj.__module__ == "__main__":
            closure = None if obj.__closure__ is None else tuple(
                c.cell_contents for c in obj.__closure__)
            return _rebuild_function, (marshal.dumps(obj.__code__), obj.__name__,
                                       obj.__qualname__, obj.__defaults__, obj.__kwdefaults__,
                                       closure, dict(obj.__dict__) or None)
        return NotImplemented


def _dump(value: object, sink: _Sink) -> None:
    buffers: list[pickle.PickleBuffer] = []
    _Pickler(sink, protocol=5, buffer_callback=buffers.append).dump(value)
    sink.end_part()
    for buffer in buffers:
        with buffer.raw() as raw:
            sink.write(raw)
        sink.end_part()


def content_digest(value: object) -> tuple[str, int]:
    """Return the digest of a value's pickled content and its size (nothing written)."""
    sink = _Sink(None)
    _dump(value, sink)
    return sink.content_digest(), sum(sink.parts)


def _write_object(value: object, objects: Path, key: bytes) -> tuple[str, int, int]:
    """Write a value to ``objects``; return (file name, its size, bytes newly written)."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=objects)  # mode 0600
    try:
        sink = _Sink(fd)
        _dump(value, sink)
        trailer = json.dumps({"version": FORMAT_VERSION, "parts": sink.parts,
                              "digests": sink.digests}).encode()
        write_all(fd, memoryview(_seal(trailer, key, _OBJECT_MAGIC)))
        os.fsync(fd)
        os.close(fd)
        fd = -1
        name = sink.content_digest() + _OBJECT_SUFFIX
        target = objects / name
        size = sum(sink.parts)
        if target.exists():  # the same content, written before
            return name, size, 0
        os.rename(tmp, target)
        tmp = ""
        return name, size, os.stat(target).st_size
    finally:
        if fd >= 0:
            os.close(fd)
        if tmp:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _read_object(path: Path, key: bytes, expected: str, threads: int = 4) -> object:
    """Read, verify and rebuild one variable; raise CorruptEntryError if refused.

    Segments are read one after another and each is hashed in a thread while the next is
    read; nothing is unpickled before all of them and the trailer pass.
    """
    fd, size = _open_regular(path)
    try:
        body, payload_end = _read_sealed(fd, size, key, _OBJECT_MAGIC)
        try:
            trailer = json.loads(body)
            parts, digests = trailer["parts"], trailer["digests"]
        except (ValueError, KeyError, TypeError):
            raise CorruptEntryError(f"{path.name}: unreadable trailer") from None
        if not (isinstance(parts, list) and isinstance(digests, list) and parts
                and len(parts) == len(digests)
                and all(type(p) is int and p >= 0 for p in parts)
                and all(isinstance(d, list) and len(d) == max(1, -(-p // SEGMENT_BYTES))
                        for p, d in zip(parts, digests, strict=True))
                and sum(parts) == payload_end):
            raise CorruptEntryError(f"{path.name}: malformed trailer")
        if _content_name(parts, digests) + _OBJECT_SUFFIX != expected:
            raise CorruptEntryError(f"{path.name} does not hold the variable the manifest names")
        data = bytearray(payload_end)
        view = memoryview(data)
        checks = []
        with ThreadPoolExecutor(max_workers=threads) as pool:
            offset = 0
            for length, part_digests in zip(parts, digests, strict=True):
                for index, wanted in enumerate(part_digests):
                    start = offset + index * SEGMENT_BYTES
                    piece = view[start:min(offset + length, start + SEGMENT_BYTES)]
                    done = 0
                    while done < len(piece):
                        got = os.preadv(fd, [piece[done:]], start + done)
                        if got <= 0:
                            raise CorruptEntryError(f"{path.name} is cut short")
                        done += got
                    checks.append((pool.submit(_sha256_hex, piece), str(wanted)))
                offset += length
            damaged = [1 for future, wanted in checks
                       if not hmac.compare_digest(future.result(), wanted)]
        if damaged:
            raise CorruptEntryError(f"{path.name} is damaged ({len(damaged)} segment(s) do "
                                    "not match their digest)")
    finally:
        os.close(fd)
    starts = [sum(parts[:i]) for i in range(len(parts))]
    buffers = [view[s:s + n] for s, n in zip(starts[1:], parts[1:], strict=True)]
    return pickle.loads(view[: parts[0]], buffers=buffers)


def _sha256_hex(data: memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- what is saved


def _unsavable(value: object) -> str | None:
    """Return why ``value`` cannot be saved, or None to try."""
    kind = type(value)
    if isinstance(value, types.GeneratorType | types.AsyncGeneratorType | types.CoroutineType):
        return f"a {kind.__name__}: where it stopped cannot be saved"
    if isinstance(value, io.IOBase):
        return "an open file: open it again"
    module = kind.__module__ or ""
    if module == "socket" or module.startswith(("zmq", "asyncio", "threading", "sqlite3")):
        return f"a {kind.__name__} ({module}): a connection or a thread cannot be saved"
    if module.startswith("torch") and getattr(value, "is_cuda", False):
        return "a CUDA tensor: GPU memory is not saved"
    if isinstance(value, type) and value.__module__ == "__main__":
        return "a class defined in the notebook: run its cell again"
    return None


def _why_not(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}"
    return f"cannot be saved ({text[:200]})"


def _immutable(value: object) -> bool:
    if isinstance(value, _IMMUTABLE):
        return True
    if isinstance(value, tuple | frozenset):
        return all(_immutable(item) for item in value)
    return False


@dataclass
class WritePlan:
    """What the parent hands the writer: the snapshot and what it knows of it."""

    namespace: dict[str, object]
    cell: int
    made_by: dict[str, int]
    candidates: set[str]
    saved_ids: dict[str, int]
    previous: Checkpoint | None
    cell_seconds: dict[int, float]
    notebook: str
    session: str
    max_bytes: int


def write_checkpoint(directory: Path, key: bytes, plan: WritePlan) -> Checkpoint:
    """Write a complete checkpoint of ``plan.namespace`` into ``directory``.

    Variables not among ``plan.candidates`` whose object is the one saved before are kept
    as they are; the others are hashed and written only if their content changed. When the
    total would pass ``plan.max_bytes``, variables whose cell was quickest to run again
    are left out first.
    """
    started = time.time()
    objects = directory / OBJECTS
    objects.mkdir(mode=0o700, exist_ok=True)
    previous = {v.name: v for v in plan.previous.variables} if plan.previous else {}
    saved: list[SavedVariable] = []
    skipped: list[SkippedVariable] = []
    written = 0
    total = 0

    def keep(name: str, value: object, size: int, object_name: str, reuse: bool) -> None:
        nonlocal total
        total += size
        old = previous.get(name)
        saved.append(SavedVariable(
            name, type_name(value), size, plan.made_by.get(name),
            old.saved_after if reuse and old else plan.cell,
            old.saved_at if reuse and old else started, object_name))

    # Kept first (they cost nothing), then new content, cheapest cells to re-run last.
    order = sorted(plan.namespace, key=lambda n: (
        n in plan.candidates or plan.saved_ids.get(n) != id(plan.namespace[n]),
        -plan.cell_seconds.get(plan.made_by.get(n, -1), 0.0)))
    for name in order:
        value = plan.namespace[name]
        made_by = plan.made_by.get(name)
        if isinstance(value, types.ModuleType):
            old = previous.get(name)
            reuse = old is not None and old.module == value.__name__
            saved.append(SavedVariable(name, "module", 0, made_by,
                                       old.saved_after if old and reuse else plan.cell,
                                       old.saved_at if old and reuse else started,
                                       module=value.__name__))
            continue
        reason = _unsavable(value)
        if reason is not None:
            skipped.append(SkippedVariable(name, type_name(value), reason, made_by))
            continue
        old = previous.get(name)
        same_object = plan.saved_ids.get(name) == id(value) and old is not None
        try:
            if same_object and old and (name not in plan.candidates or _immutable(value)):
                keep(name, value, old.size_bytes, old.object_name, reuse=True)
                continue
            if same_object and old:
                digest, size = content_digest(value)
                if digest + _OBJECT_SUFFIX == old.object_name:
                    keep(name, value, size, old.object_name, reuse=True)
                    continue
            object_name, size, new_bytes = _write_object(value, objects, key)
        except OSError:
            raise
        except Exception as error:  # any pickling failure is reported
            skipped.append(SkippedVariable(name, type_name(value), _why_not(error),
                                           made_by))
            continue
        if total + size > plan.max_bytes:
            seconds = plan.cell_seconds.get(made_by or -1)
            again = (f"; cell [{made_by}] made it in {seconds:.1f} s: run it again"
                     if made_by is not None and seconds is not None else "")
            skipped.append(SkippedVariable(
                name, type_name(value),
                f"left out: {format_bytes(size)} would pass the checkpoint's size cap "
                f"({format_bytes(plan.max_bytes)}){again}", made_by))
            if new_bytes:
                with contextlib.suppress(OSError):
                    (objects / object_name).unlink()
            continue
        written += new_bytes
        keep(name, value, size, object_name, reuse=False)
    saved.sort(key=lambda v: v.name)
    skipped.sort(key=lambda v: v.name)
    checkpoint = Checkpoint(str(directory), plan.notebook, plan.session, plan.cell, started,
                            tuple(saved), tuple(skipped), written, time.time() - started)
    _write_manifest(directory, key, checkpoint)
    _prune(directory, key)
    return checkpoint


def manifest_path(directory: Path, session: str) -> Path:
    """Return where a kernel session's checkpoint manifest lives."""
    return directory / f"checkpoint-{session}.meno"


def _manifests(directory: Path) -> list[Path]:
    """Return the manifests in ``directory``, newest first (regular files only)."""
    found = []
    for path in directory.iterdir():
        if MANIFEST_PATTERN.fullmatch(path.name):
            with contextlib.suppress(OSError):
                status = path.lstat()
                if stat.S_ISREG(status.st_mode):
                    found.append((status.st_mtime_ns, path))
    return [path for _, path in sorted(found, reverse=True)]


def _write_manifest(directory: Path, key: bytes, checkpoint: Checkpoint) -> None:
    body = json.dumps(checkpoint.to_dict()).encode()
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        write_all(fd, memoryview(_seal(body, key, _MANIFEST_MAGIC)))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.rename(tmp, manifest_path(directory, checkpoint.session))
    except OSError:
        os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # the rename itself lasts once the directory is synced
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def _prune(directory: Path, key: bytes) -> None:
    """Keep the newest sessions' manifests and the objects they name; remove the rest."""
    manifests = _manifests(directory)
    for old in manifests[KEPT_SESSIONS:]:
        with contextlib.suppress(OSError):
            old.unlink()
    keep: set[str] = set()
    for path in manifests[:KEPT_SESSIONS]:
        try:
            keep |= {v.object_name for v in _read_manifest(directory, path, key).variables}
        except CheckpointError:
            return  # unreadable: what it names is unknown, so nothing is removed
    for path in (directory / OBJECTS).iterdir():
        if path.name not in keep and not path.name.startswith(".tmp-"):
            with contextlib.suppress(OSError):
                path.unlink()


def open_directory(directory: Path, create: bool) -> bytes:
    """Check the directory is private (creating it if asked) and return its key."""
    if not create and not directory.is_dir():
        raise CheckpointError(f"no checkpoint in {directory}")
    try:
        private_directory(directory)
        return cache_key(directory)
    except (PermissionError, NotADirectoryError) as error:
        raise CheckpointError(str(error).replace("disk_dir", "checkpoint directory")) from None


def read_checkpoint(directory: Path, *, session: str | None = None,
                    avoid: str | None = None) -> Checkpoint:
    """Return a complete checkpoint in ``directory``; raise CheckpointError.

    That of kernel ``session``, or else the newest, another kernel's than ``avoid`` when
    there is one (the running kernel's own is taken last: after a death, the new kernel
    looks for the dead one's).
    """
    key = open_directory(directory, create=False)
    if session is not None:
        path = manifest_path(directory, session)
    else:
        found = _manifests(directory)
        if not found:
            raise CheckpointError(f"no complete checkpoint in {directory}")
        own = None if avoid is None else manifest_path(directory, avoid)
        path = next((p for p in found if p != own), found[0])
    return _read_manifest(directory, path, key)


def _read_manifest(directory: Path, path: Path, key: bytes) -> Checkpoint:
    try:
        fd, size = _open_regular(path)
    except FileNotFoundError:
        raise CheckpointError(f"no complete checkpoint in {directory}") from None
    except CorruptEntryError as error:
        raise CheckpointError(f"the checkpoint in {directory} was refused: {error}") from None
    except OSError as error:
        raise CheckpointError(f"cannot read {path}: {error.strerror}") from None
    try:
        body, _ = _read_sealed(fd, size, key, _MANIFEST_MAGIC)
        data = json.loads(body)
    except CorruptEntryError as error:
        raise CheckpointError(f"the checkpoint in {directory} was refused: {error}") from None
    except ValueError:
        raise CheckpointError(f"the checkpoint in {directory} is malformed") from None
    finally:
        os.close(fd)
    if not isinstance(data, dict):
        raise CheckpointError(f"the checkpoint in {directory} is malformed")
    checkpoint = Checkpoint.from_dict(data)
    if path.name != manifest_path(directory, checkpoint.session).name:
        raise CheckpointError(f"the checkpoint in {directory} was refused: {path.name} "
                              "holds another kernel's manifest")
    return checkpoint


# --------------------------------------------------------------------------- restoring


@dataclass(frozen=True)
class RestoredVariable:
    """A variable brought back."""

    name: str
    type_name: str
    size_bytes: int
    saved_after: int
    saved_at: float


@dataclass(frozen=True)
class LaterCell:
    """A cell the dead kernel started after the checkpoint (its effects are not in it)."""

    cell: int
    started_at: float
    source: str


@dataclass(frozen=True)
class RestoreReport(RendersAsTable):
    """What ``%memrestore`` brought back, what it could not, and what ran after."""

    checkpoint: Checkpoint
    restored: tuple[RestoredVariable, ...]
    missing: tuple[SkippedVariable, ...]
    later_cells: tuple[LaterCell, ...]
    listed_only: bool = False
    seconds: float = 0.0

    def _headline(self) -> str:
        cp = self.checkpoint
        if self.listed_only:
            return (f"checkpoint of {cp.notebook} {cp.when()}: {len(cp.variables)} variables, "
                    f"{format_bytes(cp.size_bytes)} (nothing restored: --list)")
        return (f"restored {len(self.restored)} variables "
                f"({format_bytes(sum(r.size_bytes for r in self.restored))}) in "
                f"{self.seconds:.1f} s from the checkpoint {cp.when()}")

    def _rows(self) -> list[list[object]]:
        rows: list[list[object]] = []
        if self.listed_only:
            rows += [[v.name, v.type_name, format_bytes(v.size_bytes),
                      f"as after cell [{v.saved_after}] at {_clock(v.saved_at)}"]
                     for v in self.checkpoint.variables]
        for r in self.restored:
            rows.append([r.name, r.type_name, format_bytes(r.size_bytes),
                         f"as after cell [{r.saved_after}] at {_clock(r.saved_at)}"])
        for m in self.missing:
            made = f" (made by cell [{m.made_by}]: run it again)" if m.made_by is not None \
                else ""
            rows.append([m.name, m.type_name, "", f"not restored: {m.reason}{made}"])
        return rows

    def _later(self) -> list[str]:
        return [f"[{c.cell}] {c.source.splitlines()[0][:80] if c.source.strip() else ''}"
                for c in self.later_cells]

    def to_text(self) -> str:  # noqa: D102 - RendersAsTable
        parts = [self._headline(), text_table(("name", "type", "size", ""), self._rows())]
        if self.later_cells:
            parts.append(_LATER_CELLS)
            parts += [f"  {line}" for line in self._later()]
        return "\n".join(parts)

    def to_html(self) -> str:  # noqa: D102 - RendersAsTable
        import html

        later = ""
        if self.later_cells:
            items = "".join(f"<li><code>{html.escape(line)}</code></li>"
                            for line in self._later())
            later = f"<p>{html.escape(_LATER_CELLS)}</p><ul>{items}</ul>"
        return html_table(("name", "type", "size", ""), self._rows(),
                          caption=self._headline()) + later


_LATER_CELLS = "Cells run after the checkpoint (their effects are not in it):"


def restore(directory: Path, namespace: dict[str, Any], *, only: Iterable[str] | None = None,
            list_only: bool = False, avoid: str | None = None) -> RestoreReport:
    """Bring the variables of ``directory``'s last complete checkpoint into ``namespace``.

    Every file is verified before anything is unpickled; a variable whose file is refused
    or cannot be rebuilt is reported, never half restored. Raise CheckpointError when
    there is no usable checkpoint. The newest checkpoint is used, another kernel's than
    ``avoid`` (the running kernel's own) when there is one.
    """
    started = time.perf_counter()
    checkpoint = read_checkpoint(directory, avoid=avoid)
    key = cache_key(directory)
    wanted = None if only is None else set(only)
    if wanted is not None:
        known = {v.name for v in checkpoint.variables} | {s.name for s in checkpoint.skipped}
        unknown = sorted(wanted - known)
        if unknown:
            raise CheckpointError(f"the checkpoint has no variable named {', '.join(unknown)}"
                                  f" (it holds: {', '.join(sorted(known)) or 'nothing'})")
    restored: list[RestoredVariable] = []
    missing = [s for s in checkpoint.skipped if wanted is None or s.name in wanted]
    later = tuple(_later_cells(directory, checkpoint))
    if not list_only:
        _restore_globals.namespace = namespace
        try:
            for variable in checkpoint.variables:
                if wanted is not None and variable.name not in wanted:
                    continue
                try:
                    value = _load_variable(directory, key, variable)
                except (CorruptEntryError, OSError) as error:
                    missing.append(SkippedVariable(variable.name, variable.type_name,
                                                   f"its file was refused: {error}",
                                                   variable.made_by))
                    continue
                except Exception as error:  # a class gone, a version changed
                    missing.append(SkippedVariable(variable.name, variable.type_name,
                                                   f"could not be rebuilt ({type(error).__name__}"
                                                   f": {str(error)[:200]})", variable.made_by))
                    continue
                namespace[variable.name] = value
                restored.append(RestoredVariable(variable.name, variable.type_name,
                                                 variable.size_bytes, variable.saved_after,
                                                 variable.saved_at))
        finally:
            del _restore_globals.namespace
    return RestoreReport(checkpoint, tuple(restored), tuple(missing), later, list_only,
                         time.perf_counter() - started)


def _load_variable(directory: Path, key: bytes, variable: SavedVariable) -> object:
    if variable.module:
        import importlib

        return importlib.import_module(variable.module)
    return _read_object(directory / OBJECTS / variable.object_name, key, variable.object_name)


def _later_cells(directory: Path, checkpoint: Checkpoint) -> Iterator[LaterCell]:
    """Yield the cells the checkpoint's kernel started after it (from the cells log)."""
    for entry in read_log(directory):
        if entry.get("session") == checkpoint.session and isinstance(entry.get("cell"), int) \
                and entry["cell"] > checkpoint.cell:
            yield LaterCell(entry["cell"], float(entry.get("at", 0.0)),
                            str(entry.get("source", ""))[:500])


def read_log(directory: Path) -> list[dict[str, Any]]:
    try:
        fd = os.open(directory / CELLS_LOG, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return []
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            return []
        text = handle.read(2 * MAX_LOG_BYTES).decode("utf-8", "replace")
    entries = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            entry = json.loads(line)
            if isinstance(entry, dict):
                entries.append(entry)
    return entries


# --------------------------------------------------------------------------- for the server

POINTER_SCHEMA_VERSION = 1
_POINTER_MAX_BYTES = 64 * 1024


def pointer_path_for(connection_file: str | os.PathLike[str]) -> Path:
    """Return where a kernel says where it keeps checkpoints (``meno-checkpoint-<k>.json``)."""
    return kernel_file_for(connection_file, "checkpoint")


def write_pointer(path: Path, directory: Path, session: str) -> None:
    """Tell the Jupyter server (atomically) where this kernel keeps its checkpoints."""
    write_json_atomic(path, json.dumps({"schema": POINTER_SCHEMA_VERSION, "pid": os.getpid(),
                                        "directory": str(directory), "session": session}))


def checkpoint_of_kernel(connection_file: str | os.PathLike[str]) -> Checkpoint | None:
    """Return the last complete checkpoint of a (dead) kernel, or None if it has none.

    What the pointer names is read as any checkpoint is: a directory of the user's own,
    authenticated; anything else is no checkpoint.
    """
    try:
        data = read_json_file(pointer_path_for(connection_file), _POINTER_MAX_BYTES)
    except LedgerFileError:
        return None
    if not isinstance(data, dict) or data.get("schema") != POINTER_SCHEMA_VERSION \
            or not isinstance(data.get("directory"), str) \
            or not MANIFEST_PATTERN.fullmatch(f"checkpoint-{data.get('session')}.meno"):
        return None
    try:
        return read_checkpoint(Path(data["directory"]), session=data["session"])
    except (CheckpointError, OSError):
        return None


def parse_max_size(text: str) -> int:
    """Return a size cap in bytes from "8G", "500M" or a number; raise ValueError."""
    size = parse_size(text)
    if size <= 0:
        raise ValueError(f"the size cap must be positive, got {text!r}")
    return size
