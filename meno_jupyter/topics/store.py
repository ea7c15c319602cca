"""Embeddings on disk: one memory-mappable ``.npy``, crash-safe, resumable and checksummed.

A store is a directory::

    meta.json        model, dimension, precision, document count and hash, chunk size
    embeddings.npy   (n_docs, dim) float32, float16 or int8 (np.load(..., mmap_mode="r"))
    scales.npy       int8 only: one float32 scale per row (value = int8 * scale)
    journal.jsonl    one line per finished chunk, with the SHA-256 of its bytes

A chunk is journaled only after its rows are flushed to the file, so a process killed at
any moment loses at most the chunk in flight; reopening the store resumes at the first
chunk not in the journal (a journal line cut short by the kill is cut off before the next
entry is written). The files' space is reserved when the store is made, so a full disk is
an ``OSError`` there, never a crash writing through the memory map. Every chunk read is
checked against its checksum first (once per opened store).
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import math
import os
import shutil
import socket
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

Precision = Literal["float32", "float16", "int8"]
PRECISIONS: tuple[Precision, ...] = ("float32", "float16", "int8")
STORE_VERSION = 1
META_FILE = "meta.json"
DATA_FILE = "embeddings.npy"
SCALES_FILE = "scales.npy"
JOURNAL_FILE = "journal.jsonl"
# The documents a fit reads (text column "text"), written beside the embeddings.
DOCS_FILE = "docs.parquet"
META_MAX_BYTES = 64 * 1024
START_AGAIN = "embed again with overwrite=True to start again"


class StoreError(Exception):
    """A store that cannot be used as asked; the message says why and what to do."""


class StoreMismatchError(StoreError):
    """The store holds other documents, another model or another precision."""


class CorruptStoreError(StoreError):
    """The store's files are truncated or do not match their checksums."""


class StoreSpaceError(StoreError, OSError):
    """The disk has no room for the store (an ``OSError`` with ``errno.ENOSPC`` too)."""


def check_precision(precision: object) -> None:
    """Raise ValueError unless ``precision`` is one the store can keep."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")


@dataclass(frozen=True)
class StoreMeta:
    """What a store holds.

    Attributes
    ----------
    docs_hash : str
        SHA-256 over the documents in order (see :func:`hash_documents`).
    """

    model: str
    dim: int
    precision: Precision
    n_docs: int
    docs_hash: str
    chunk_size: int
    version: int = STORE_VERSION

    def __post_init__(self) -> None:
        check_precision(self.precision)
        if self.n_docs < 1 or self.dim < 1 or self.chunk_size < 1:
            raise ValueError("a store needs at least one document, dimension and chunk row")

    def differences(self, other: StoreMeta) -> list[str]:
        """Return the fields (``version`` aside) in which ``other`` differs."""
        return [name for name in ("model", "precision", "dim", "n_docs", "docs_hash",
                                  "chunk_size")
                if getattr(self, name) != getattr(other, name)]

    @property
    def n_chunks(self) -> int:
        """How many chunks the documents make."""
        return math.ceil(self.n_docs / self.chunk_size)

    def chunk_bounds(self, index: int) -> tuple[int, int]:
        """Return the (start, stop) rows of chunk ``index``."""
        if not 0 <= index < self.n_chunks:
            raise IndexError(f"chunk {index} out of 0..{self.n_chunks - 1}")
        start = index * self.chunk_size
        return start, min(start + self.chunk_size, self.n_docs)


def hash_documents(docs: Iterable[str]) -> tuple[str, int]:
    """Return the SHA-256 of the documents in order (each length-prefixed) and their count.

    Examples
    --------
    >>> hash_documents(["a", "b"])[1]
    2
    >>> hash_documents(["ab"])[0] != hash_documents(["a", "b"])[0]
    True
    """
    digest = hashlib.sha256()
    count = 0
    for doc in docs:
        data = doc.encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
        count += 1
    return digest.hexdigest(), count


def quantize_int8(embeddings: np.ndarray[Any, Any]) -> tuple[np.ndarray[Any, Any],
                                                             np.ndarray[Any, Any]]:
    """Quantize rows to int8 with one symmetric scale per row; return (values, scales).

    Examples
    --------
    >>> q, s = quantize_int8(np.array([[0.5, -1.0, 0.25]], dtype=np.float32))
    >>> q.tolist(), round(float(s[0]) * 127, 6)
    ([[64, -127, 32]], 1.0)
    """
    rows = np.asarray(embeddings, dtype=np.float32)
    scales = np.abs(rows).max(axis=1) / 127.0
    scales[scales == 0] = 1.0
    values = np.clip(np.rint(rows / scales[:, None]), -127, 127).astype(np.int8)
    return values, scales.astype(np.float32)


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as handle:
        json.dump(data, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _array_files(meta: StoreMeta) -> dict[str, tuple[np.dtype[Any], tuple[int, ...]]]:
    """Return the store's array files with their dtype and shape."""
    files: dict[str, tuple[np.dtype[Any], tuple[int, ...]]] = {
        DATA_FILE: (np.dtype(meta.precision), (meta.n_docs, meta.dim))}
    if meta.precision == "int8":
        files[SCALES_FILE] = (np.dtype(np.float32), (meta.n_docs,))
    return files


def _read_regular(path: Path, max_bytes: int | None) -> bytes:
    """Read a regular file without following a link or waiting on a FIFO."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    status = os.fstat(fd)
    if not stat.S_ISREG(status.st_mode) or (max_bytes is not None
                                            and status.st_size > max_bytes):
        os.close(fd)
        if not stat.S_ISREG(status.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        raise OSError(errno.EFBIG, f"{status.st_size:,} bytes, more than {max_bytes:,}")
    with os.fdopen(fd, "rb") as handle:
        return handle.read()


def _read_meta(path: Path) -> StoreMeta:
    """Read ``meta.json``; raise :class:`CorruptStoreError` on anything malformed."""
    try:
        fields = json.loads(_read_regular(path, META_MAX_BYTES).decode("utf-8"))
        if not isinstance(fields, dict):
            raise TypeError("not a JSON object")
        types = {"model": str, "dim": int, "precision": str, "n_docs": int,
                 "docs_hash": str, "chunk_size": int, "version": int}
        wrong = [name for name, kind in types.items()
                 if name in fields and type(fields[name]) is not kind]
        if wrong:
            raise TypeError(f"wrong type for {', '.join(wrong)}")
        meta = StoreMeta(**fields)
    except (OSError, ValueError, TypeError, RecursionError) as error:
        raise CorruptStoreError(f"{path} is damaged ({error}); {START_AGAIN}") from None
    if meta.version != STORE_VERSION:
        raise StoreError(f"{path.parent} was written by store version {meta.version}; "
                         f"this meno-jupyter reads version {STORE_VERSION}")
    return meta


class EmbeddingStore:
    """A directory of embeddings; open with :meth:`open`, :meth:`create` or :meth:`prepare`.

    Examples
    --------
    >>> import tempfile
    >>> meta = StoreMeta("demo", dim=3, precision="int8", n_docs=2, docs_hash="h",
    ...                  chunk_size=1)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     store = EmbeddingStore.create(f"{tmp}/store", meta)
    ...     store.write_chunk(0, np.array([[1.0, 0.0, -0.5]]))
    ...     store.write_chunk(1, np.array([[0.0, 2.0, 0.0]]))
    ...     EmbeddingStore.open(f"{tmp}/store").as_float32().round(2).tolist()
    [[1.0, 0.0, -0.5], [0.0, 2.0, 0.0]]
    """

    def __init__(self, path: Path, meta: StoreMeta, *, verify: bool = True,
                 read_journal: bool = True) -> None:
        self.path = path
        self.meta = meta
        self._verify = verify
        self._verified: set[int] = set()
        self._journal_end: int | None = None  # where a cut-off last line begins
        self._checksums = self._read_journal() if read_journal else {}

    # ------------------------------------------------------------------ opening

    @classmethod
    def create(cls, path: str | os.PathLike[str], meta: StoreMeta) -> EmbeddingStore:
        """Make a new, empty store (the directory must not hold one)."""
        root = Path(path)
        if (root / META_FILE).exists():
            raise StoreError(f"{root} already holds an embedding store; open it, or pass "
                             "overwrite=True to start again")
        root.mkdir(parents=True, exist_ok=True)
        arrays = _array_files(meta)
        made = [root / name for name in arrays]
        try:
            for name, (dtype, shape) in arrays.items():
                np.lib.format.open_memmap(root / name, mode="w+", dtype=dtype,
                                          shape=shape).flush()
            store = cls(root, meta)
            store.reserve_space()
            (root / JOURNAL_FILE).touch()
            _write_json_atomic(root / META_FILE, dataclasses.asdict(meta))  # last: marks it made
        except OSError:
            for made_file in made:  # nothing half-made is left to be mistaken for a store
                made_file.unlink(missing_ok=True)
            raise
        return store

    @classmethod
    def open(cls, path: str | os.PathLike[str], *,
             verify: bool | Literal["lazy"] = "lazy") -> EmbeddingStore:
        """Open an existing store, checking what is read against the checksums.

        ``verify="lazy"`` (the default) checks each finished chunk the first time it is
        read; ``True`` checks every chunk now; ``False`` reads without checking. Damage
        raises :class:`CorruptStoreError` naming the documents.
        """
        root = Path(path)
        meta_path = root / META_FILE
        if not meta_path.exists():
            raise StoreError(f"{root} is not an embedding store (no {META_FILE})")
        meta = _read_meta(meta_path)
        store = cls(root, meta, verify=verify is not False)
        store.check_files()
        if verify is True:
            store.verify()
        return store

    @classmethod
    def for_writing_rows(cls, path: str | os.PathLike[str], meta: StoreMeta) -> EmbeddingStore:
        """Open the store another process prepared, to :meth:`write_rows` into it only.

        Raises :class:`StoreError` when ``path`` does not hold that store here (a Dask
        worker that cannot reach the driver's directory).
        """
        root = Path(path)
        if not (root / META_FILE).exists():
            raise StoreError(f"{root / META_FILE} is not there on {socket.gethostname()}: "
                             "embedding on a cluster needs a directory every worker can "
                             "reach (a shared filesystem)")
        found = _read_meta(root / META_FILE)
        if found.differences(meta):
            raise StoreMismatchError(f"{root} here ({socket.gethostname()}) holds another "
                                     "store than the one being embedded")
        store = cls(root, found, verify=False, read_journal=False)
        store.check_files()
        return store

    @classmethod
    def prepare(cls, path: str | os.PathLike[str], meta: StoreMeta, *,
                overwrite: bool = False) -> EmbeddingStore:
        """Open the store at ``path`` to resume it, or create it.

        Raises :class:`StoreMismatchError` when the store there was made for other
        documents, another model or precision (unless ``overwrite``, which starts again).
        """
        root = Path(path)
        if not (root / META_FILE).exists():
            return cls.create(root, meta)
        if overwrite:
            shutil.rmtree(root)
            return cls.create(root, meta)
        store = cls.open(root)
        store.reserve_space()  # a store made before space was reserved, or copied sparse
        differences = [
            f"{name}: store has {getattr(store.meta, name)!r}, asked for {getattr(meta, name)!r}"
            for name in store.meta.differences(meta)
        ]
        if differences:
            what = "other documents" if any(d.startswith(("docs_hash", "n_docs"))
                                             for d in differences) else "other settings"
            raise StoreMismatchError(
                f"{root} holds embeddings of {what} ({'; '.join(differences)}). "
                "Use another directory, or pass overwrite=True to start again.")
        store.verify()
        return store

    # ------------------------------------------------------------------ state

    def _read_journal(self) -> dict[int, str]:
        path = self.path / JOURNAL_FILE
        try:
            data = _read_regular(path, None)
        except FileNotFoundError:
            return {}
        except OSError as error:
            raise CorruptStoreError(f"{path} cannot be read ({error}); {START_AGAIN}"
                                    ) from None
        complete_end = data.rfind(b"\n") + 1
        if complete_end < len(data):
            # The last line was cut short (a kill, a full disk): its chunk is redone, and
            # the fragment is cut off before the next entry is appended.
            self._journal_end = complete_end
        checksums: dict[int, str] = {}
        for number, line in enumerate(data[:complete_end].splitlines(), start=1):
            if not line.strip():
                continue
            try:
                index, checksum = self._parse_journal_line(line)
            except (ValueError, KeyError, TypeError, IndexError) as error:
                raise CorruptStoreError(
                    f"{path}, line {number}, is damaged ({error}); {START_AGAIN}") from None
            checksums[index] = checksum
        return checksums

    def _parse_journal_line(self, line: bytes) -> tuple[int, str]:
        entry = json.loads(line.decode("utf-8"))
        if not isinstance(entry, dict):
            raise TypeError("an entry must be a JSON object")
        index, checksum = entry["chunk"], entry["sha256"]
        if type(index) is not int or not isinstance(checksum, str):
            raise TypeError("chunk must be an integer and sha256 a string")
        start, stop = self.meta.chunk_bounds(index)
        if (entry.get("start"), entry.get("stop")) != (start, stop):
            raise ValueError(f"chunk {index} should span documents {start}-{stop}")
        if len(checksum) != 64 or any(c not in "0123456789abcdef" for c in checksum):
            raise ValueError("sha256 is not a SHA-256 hex digest")
        return index, checksum

    @property
    def done_chunks(self) -> set[int]:
        """The chunks whose rows are on disk."""
        return set(self._checksums)

    @property
    def done_docs(self) -> int:
        """How many documents are embedded."""
        return sum(stop - start for start, stop in map(self.meta.chunk_bounds, self._checksums))

    @property
    def complete(self) -> bool:
        """Whether every chunk is done."""
        return len(self._checksums) == self.meta.n_chunks

    def pending_chunks(self) -> list[int]:
        """Return the chunks still to embed, in order."""
        return [i for i in range(self.meta.n_chunks) if i not in self._checksums]

    def __repr__(self) -> str:
        meta = self.meta
        return (f"EmbeddingStore({str(self.path)!r}, {meta.n_docs} docs x {meta.dim} "
                f"{meta.precision}, {self.done_docs}/{meta.n_docs} embedded, model "
                f"{meta.model!r})")

    # ------------------------------------------------------------------ files

    def _expected_size(self, name: str, dtype: np.dtype[Any], shape: tuple[int, ...]) -> int:
        with open(self.path / name, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            found_shape, fortran_order, found_dtype = read_header(handle)
            if fortran_order:
                raise ValueError("holds a Fortran-ordered array")
            if tuple(found_shape) != shape or np.dtype(found_dtype) != dtype:
                raise ValueError(f"holds {found_dtype} {tuple(found_shape)}, "
                                 f"expected {dtype} {shape}")
            return handle.tell() + math.prod(shape) * dtype.itemsize

    def check_files(self) -> None:
        """Raise :class:`CorruptStoreError` when a file is missing or truncated."""
        for name, (dtype, shape) in _array_files(self.meta).items():
            path = self.path / name
            if not path.is_file():
                raise CorruptStoreError(f"{path} is missing or not a file: the store cannot "
                                        f"be used; {START_AGAIN}")
            try:
                expected = self._expected_size(name, dtype, shape)
            except Exception as error:  # numpy's header parser raises many kinds (tokenize's too)
                raise CorruptStoreError(f"{path} has a damaged header ({error}); "
                                        f"{START_AGAIN}") from None
            actual = path.stat().st_size
            if actual < expected:
                raise CorruptStoreError(
                    f"{path} is truncated: {actual:,} bytes, expected {expected:,} "
                    f"(a copy cut short or a full disk?); {START_AGAIN}")

    def reserve_space(self) -> None:
        """Allocate every byte of the array files now, so a full disk fails here.

        Writing through a memory map into a file whose space is not allocated crashes the
        process (SIGBUS) when the disk is full; reserving it turns that into an ``OSError``.
        """
        for name in _array_files(self.meta):
            path = self.path / name
            size = path.stat().st_size
            fd = os.open(path, os.O_RDWR)
            try:
                os.posix_fallocate(fd, 0, size)
            except OSError as error:
                if error.errno == errno.ENOSPC:
                    free = shutil.disk_usage(self.path).free
                    raise StoreSpaceError(errno.ENOSPC, (
                        f"no space left on the disk of {self.path} for the embeddings: "
                        f"{name} needs {size:,} bytes, {free:,} are free. Free some space "
                        "or choose another directory; finished chunks are kept")) from None
                if error.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                    raise
                # A file system without fallocate: space is then taken as chunks arrive.
            finally:
                os.close(fd)

    def _map(self, name: str, writable: bool = False) -> np.memmap[Any, Any]:
        # Mapped per use and dropped after it: pages a long-lived mapping has touched count
        # in the RSS, which would then grow with the corpus (488 MiB at 1M float16 rows).
        return np.lib.format.open_memmap(self.path / name, mode="r+" if writable else "r")

    @staticmethod
    def _digest(values: np.ndarray[Any, Any], scales: np.ndarray[Any, Any] | None) -> str:
        digest = hashlib.sha256(np.ascontiguousarray(values).tobytes())
        if scales is not None:
            digest.update(np.ascontiguousarray(scales).tobytes())
        return digest.hexdigest()

    def _chunk_checksum(self, index: int) -> str:
        start, stop = self.meta.chunk_bounds(index)
        scales = self.scales()
        return self._digest(self._map(DATA_FILE)[start:stop],
                            None if scales is None else scales[start:stop])

    # ------------------------------------------------------------------ writing

    def write_chunk(self, index: int, embeddings: np.ndarray[Any, Any]) -> None:
        """Store chunk ``index`` (float rows), flush it, then journal it with its checksum."""
        self._journal(index, self.write_rows(index, embeddings))
        self._verified.add(index)

    def write_rows(self, index: int, embeddings: np.ndarray[Any, Any]) -> str:
        """Write chunk ``index``'s rows into the files and flush them; do not journal them.

        Returns the chunk's checksum, for :meth:`record_chunk`: a Dask worker writes its
        chunk here and the driver journals it once the rows on disk match.
        """
        start, stop = self.meta.chunk_bounds(index)
        rows = np.asarray(embeddings)
        if rows.shape != (stop - start, self.meta.dim):
            raise ValueError(f"chunk {index} needs shape {(stop - start, self.meta.dim)}, "
                             f"got {rows.shape}")
        if not np.isfinite(rows).all():
            raise ValueError(f"chunk {index} holds NaN or infinite values")
        row_scales = None
        if self.meta.precision == "int8":
            values, row_scales = quantize_int8(rows)
            scales = self._map(SCALES_FILE, writable=True)
            scales[start:stop] = row_scales
            scales.flush()
            del scales
        else:
            values = rows.astype(self.meta.precision)
        data = self._map(DATA_FILE, writable=True)
        data[start:stop] = values
        data.flush()  # msync: the rows are in the file before the journal says so
        del data
        return self._digest(values, row_scales)

    def record_chunk(self, index: int, checksum: str) -> None:
        """Journal chunk ``index``, written elsewhere, once its rows on disk match ``checksum``.

        Raises
        ------
        CorruptStoreError
            The rows read back differ (a writer that did not finish, a directory that is
            not the same one for the writer and for this process).
        """
        start, stop = self.meta.chunk_bounds(index)
        if self._chunk_checksum(index) != checksum:
            raise CorruptStoreError(
                f"{self.path}: documents {start}-{stop} on disk do not match what their writer "
                "reported; the chunk is not journaled (is the directory the same for every "
                "worker?)")
        self._journal(index, checksum)
        self._verified.add(index)

    def _journal(self, index: int, checksum: str) -> None:
        start, stop = self.meta.chunk_bounds(index)
        line = json.dumps({"chunk": index, "start": start, "stop": stop, "sha256": checksum})
        with open(self.path / JOURNAL_FILE, "ab") as journal:
            if self._journal_end is not None:  # never append onto a cut-off line
                journal.truncate(self._journal_end)
                self._journal_end = None
            journal.write(line.encode() + b"\n")
            journal.flush()
            os.fsync(journal.fileno())
        self._checksums[index] = checksum

    # ------------------------------------------------------------------ reading

    def verify(self) -> None:
        """Check every finished chunk against its checksum now; raise if any is damaged."""
        self.check_files()
        self._check_chunks(sorted(self._checksums))

    def _check_chunks(self, chunks: Iterable[int]) -> None:
        bad = []
        for index in chunks:
            if index not in self._checksums:
                continue  # not embedded yet: nothing to check
            if self._chunk_checksum(index) == self._checksums[index]:
                self._verified.add(index)
            else:
                bad.append(index)
        if bad:
            spans = ", ".join("{}-{}".format(*self.meta.chunk_bounds(i)) for i in bad[:5])
            raise CorruptStoreError(
                f"{self.path}: {len(bad)} chunk(s) do not match their checksums (documents "
                f"{spans}{'…' if len(bad) > 5 else ''}); the files were changed or damaged. "
                "Embed again with overwrite=True.")

    def _check_rows(self, rows: slice | np.ndarray[Any, Any] | None) -> None:
        """Verify (once) the finished chunks that ``rows`` reads, when verifying."""
        if not self._verify:
            return
        size = self.meta.chunk_size
        if rows is None:
            chunks: Iterable[int] = self._checksums
        elif isinstance(rows, slice):
            start, stop, step = rows.indices(self.meta.n_docs)
            picked = range(start, stop, step)
            chunks = (range(min(picked) // size, max(picked) // size + 1) if picked
                      else range(0))
        else:
            index = np.asarray(rows)
            if index.dtype == bool:
                index = np.flatnonzero(index)
            chunks = np.unique(np.asarray(index, dtype=np.int64) % self.meta.n_docs
                               // size).tolist()
        self._check_chunks(sorted(set(chunks) - self._verified))

    def embeddings(self, *, allow_partial: bool = False) -> np.memmap[Any, Any]:
        """Return the stored array, memory-mapped read-only (int8: see :meth:`as_float32`).

        When the store verifies, every finished chunk is checked first (once).
        """
        if not self.complete and not allow_partial:
            raise StoreError(f"{self.path} is not finished ({self.done_docs} of "
                             f"{self.meta.n_docs} documents): embed again to resume")
        self._check_rows(None)
        return self._map(DATA_FILE)

    def scales(self) -> np.ndarray[Any, Any] | None:
        """Return the int8 row scales (None for float stores)."""
        if self.meta.precision != "int8":
            return None
        return self._map(SCALES_FILE)

    def as_float32(self, rows: slice | np.ndarray[Any, Any] | None = None
                   ) -> np.ndarray[Any, Any]:
        """Return rows (all by default; a slice or row indices) as float32, dequantized."""
        picked = slice(None) if rows is None else rows
        if not self.complete:
            self.embeddings()  # says why it cannot be read
        self._check_rows(picked)
        out = np.asarray(self._map(DATA_FILE)[picked], dtype=np.float32)
        scales = self.scales()
        if scales is not None:
            out *= np.asarray(scales[picked])[:, None]
        return out

    def disk_bytes(self) -> int:
        """Bytes the store takes on disk."""
        return sum(p.stat().st_size for p in self.path.iterdir() if p.is_file())
