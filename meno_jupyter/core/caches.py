"""Caches that know their size: LRU bounded in bytes, compressed with a disk tier, weak.

Every cache registers with the pressure actions (:func:`meno_jupyter.core.monitor.shrink_caches`),
so that ``high`` memory pressure can shrink them.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import math
import numbers
import os
import pickle
import stat
import struct
import tempfile
import threading
import time
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from meno_jupyter.core.errors import MenoWarning
from meno_jupyter.core.monitor import register_shrinkable
from meno_jupyter.core.namespace import deep_sizeof

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
EvictCallback = Callable[[Any, Any, str], object]
_MISSING = object()


def value_size(value: object) -> int:
    """Bytes a value takes: exact for numpy, pandas and bytes; a bounded estimate otherwise."""
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    return deep_sizeof(value)[0]


@dataclass(frozen=True)
class CacheStats:
    """A cache's counters at one moment."""

    hits: int
    misses: int
    evictions: int
    expirations: int
    rejected: int
    items: int
    size_bytes: int
    max_bytes: int | None
    max_items: int | None

    @property
    def hit_rate(self) -> float:
        """Hits over lookups (0 before any lookup)."""
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0


@dataclass
class _Entry(Generic[V]):
    value: V
    size: int
    expires_at: float | None


class BoundedCache(Generic[K, V]):
    """A thread-safe LRU cache bounded by bytes and/or items, with optional TTL.

    Parameters
    ----------
    max_bytes, max_items : int, optional
        Limits; the least recently used entries go first. A value larger than ``max_bytes``
        is not stored (counted as rejected).
    ttl_s : float, optional
        Entries expire this long after they were stored.
    on_evict : callable, optional
        ``on_evict(key, value, reason)`` with reason ``"capacity"``, ``"expired"``,
        ``"shrink"`` or ``"replaced"``; called outside the cache's lock.
    sizer : callable, optional
        Bytes of a value (default: exact for numpy/pandas/bytes, estimated otherwise).

    Examples
    --------
    >>> cache = BoundedCache(max_items=2)
    >>> cache["a"], cache["b"], cache["c"] = 1, 2, 3
    >>> list(cache.keys()), cache.get("a")
    (['b', 'c'], None)
    """

    def __init__(
        self,
        max_bytes: int | None = None,
        max_items: int | None = None,
        *,
        ttl_s: float | None = None,
        on_evict: EvictCallback | None = None,
        sizer: Callable[[Any], int] = value_size,
        clock: Callable[[], float] = time.monotonic,
        register: bool = True,
    ) -> None:
        if max_bytes is None and max_items is None:
            raise ValueError("give max_bytes, max_items or both")
        if (max_bytes is not None and max_bytes <= 0) or (max_items is not None and max_items <= 0):
            raise ValueError("max_bytes and max_items must be positive")
        if ttl_s is not None and ttl_s <= 0:
            raise ValueError(f"ttl_s must be positive, got {ttl_s}")
        self.max_bytes = max_bytes
        self.max_items = max_items
        self.ttl_s = ttl_s
        self.on_evict = on_evict
        self._sizer = sizer
        self._clock = clock
        self._data: OrderedDict[K, _Entry[V]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.RLock()
        self._hits = self._misses = self._evictions = self._expirations = self._rejected = 0
        if register:
            register_shrinkable(self)

    # ------------------------------------------------------------------ reading

    def get(self, key: K, default: Any = None) -> Any:
        """Return the value for ``key`` (and mark it recently used), or ``default``."""
        evicted: list[tuple[K, V, str]] = []
        with self._lock:
            entry = self._data.get(key)
            if entry is not None and self._expired(entry):
                self._drop(key, "expired", evicted)
                entry = None
            if entry is None:
                self._misses += 1
                value: Any = default
            else:
                self._data.move_to_end(key)
                self._hits += 1
                value = entry.value
        self._notify(evicted)
        return value

    def __getitem__(self, key: K) -> V:
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value  # type: ignore[no-any-return]

    def __contains__(self, key: object) -> bool:
        with self._lock:
            entry = self._data.get(key)  # type: ignore[arg-type]
            return entry is not None and not self._expired(entry)

    def __len__(self) -> int:
        return len(self._data)

    def keys(self) -> list[K]:
        """Keys from least to most recently used."""
        with self._lock:
            return list(self._data)

    def __iter__(self) -> Iterator[K]:
        return iter(self.keys())

    @property
    def size_bytes(self) -> int:
        """Bytes held now."""
        return self._bytes

    # ------------------------------------------------------------------ writing

    def put(self, key: K, value: V, *, size: int | None = None) -> bool:
        """Store ``value``; return False if it alone exceeds ``max_bytes`` (not stored)."""
        nbytes = self._sizer(value) if size is None else size
        evicted: list[tuple[K, V, str]] = []
        with self._lock:
            if key in self._data:
                self._drop(key, "replaced", evicted)
            if self.max_bytes is not None and nbytes > self.max_bytes:
                self._rejected += 1
                stored = False
            else:
                expires = None if self.ttl_s is None else self._clock() + self.ttl_s
                self._data[key] = _Entry(value, nbytes, expires)
                self._bytes += nbytes
                self._enforce(evicted)
                stored = True
        self._notify(evicted)
        return stored

    def __setitem__(self, key: K, value: V) -> None:
        self.put(key, value)

    def pop(self, key: K, default: Any = None) -> Any:
        """Remove ``key`` and return its value (no eviction callback), or ``default``."""
        with self._lock:
            entry = self._data.pop(key, None)
            if entry is None:
                return default
            self._bytes -= entry.size
            return entry.value

    def clear(self) -> None:
        """Remove everything (no eviction callbacks)."""
        with self._lock:
            self._data.clear()
            self._bytes = 0

    def shrink(self, fraction: float = 0.5) -> int:
        """Evict the least recently used down to ``fraction`` of the limits; return bytes freed."""
        if not 0 <= fraction <= 1:
            raise ValueError(f"fraction must be in [0, 1], got {fraction}")
        evicted: list[tuple[K, V, str]] = []
        with self._lock:
            before = self._bytes
            byte_goal = None if self.max_bytes is None else self.max_bytes * fraction
            item_goal = None if self.max_items is None else self.max_items * fraction
            while self._data and (
                (byte_goal is not None and self._bytes > byte_goal)
                or (item_goal is not None and len(self._data) > item_goal)
            ):
                self._drop(next(iter(self._data)), "shrink", evicted)
            freed = before - self._bytes
        self._notify(evicted)
        return freed

    def purge_expired(self) -> int:
        """Drop every expired entry now; return how many."""
        evicted: list[tuple[K, V, str]] = []
        with self._lock:
            for key in [k for k, e in self._data.items() if self._expired(e)]:
                self._drop(key, "expired", evicted)
        self._notify(evicted)
        return len(evicted)

    def stats(self) -> CacheStats:
        """Return the counters."""
        with self._lock:
            return CacheStats(self._hits, self._misses, self._evictions, self._expirations,
                              self._rejected, len(self._data), self._bytes, self.max_bytes,
                              self.max_items)

    # ------------------------------------------------------------------ internals

    def _expired(self, entry: _Entry[V]) -> bool:
        return entry.expires_at is not None and self._clock() >= entry.expires_at

    def _drop(self, key: K, reason: str, evicted: list[tuple[K, V, str]]) -> None:
        entry = self._data.pop(key)
        self._bytes -= entry.size
        if reason == "expired":
            self._expirations += 1
        elif reason in ("capacity", "shrink"):
            self._evictions += 1
        evicted.append((key, entry.value, reason))

    def _enforce(self, evicted: list[tuple[K, V, str]]) -> None:
        while self._data and (
            (self.max_bytes is not None and self._bytes > self.max_bytes)
            or (self.max_items is not None and len(self._data) > self.max_items)
        ):
            self._drop(next(iter(self._data)), "capacity", evicted)

    def _notify(self, evicted: list[tuple[K, V, str]]) -> None:
        if self.on_evict is None:
            return
        for key, value, reason in evicted:
            self.on_evict(key, value, reason)


# ---------------------------------------------------------------------------- compression

_MAGIC = b"MENOCACHE2\n"
_HEADER_LENGTH = struct.Struct("<I")
_MAC_BYTES = 16
_KEY_BYTES = 32
_MAX_HEADER_BYTES = 64 * 1024
KEY_FILE = ".meno-cache-key"
CODECS = ("lz4", "zstd", "none")


class CorruptEntryError(ValueError):
    """A stored entry failed its authentication check or was cut short."""


class _Codec:
    def __init__(self, name: str, level: int | None) -> None:
        if name not in CODECS:
            raise ValueError(f"codec must be one of {', '.join(CODECS)}, got {name!r}")
        self.name = name
        self.level = level
        self._local = threading.local()

    def compress(self, data: bytes) -> bytes:
        if self.name == "lz4":
            import lz4.frame

            return bytes(lz4.frame.compress(data, compression_level=self.level or 0))
        if self.name == "zstd":
            return bytes(self._zstd()[0].compress(data))
        return data

    def decompress(self, data: bytes) -> bytes:
        if self.name == "lz4":
            import lz4.frame

            return bytes(lz4.frame.decompress(data))
        if self.name == "zstd":
            return bytes(self._zstd()[1].decompress(data))
        return data

    def _zstd(self) -> tuple[Any, Any]:
        # zstandard's contexts are not thread-safe: one pair per thread.
        pair = getattr(self._local, "zstd", None)
        if pair is None:
            import zstandard

            pair = (zstandard.ZstdCompressor(level=self.level or 3), zstandard.ZstdDecompressor())
            self._local.zstd = pair
        return pair


def _new_mac(key: bytes) -> Any:
    return hashlib.blake2b(digest_size=_MAC_BYTES, key=key)


def encode(value: object, codec: _Codec, key: bytes = b"") -> tuple[bytes, int]:
    """Serialise a value into a self-describing, authenticated blob; return (blob, raw size).

    numpy arrays (not of object dtype) are stored as a dtype/shape header and their raw
    buffer, never pickled; everything else is pickled (protocol 5). Before compression the
    bytes of multi-byte numbers are shuffled by significance (blosc's filter): the sign and
    exponent bytes of floats repeat and compress; the mantissa bytes do not. A keyed
    BLAKE2b code over the header and the payload follows the header: with a secret ``key``
    nobody without it can make an entry that :func:`decode` accepts.
    """
    header: dict[str, Any]
    array_like: Any = value
    if type(value).__module__ == "numpy" and type(value).__name__ == "ndarray" and \
            array_like.dtype.kind != "O":
        import numpy as np

        # (np.ascontiguousarray would turn a 0-d array into a 1-d one.)
        array = array_like if array_like.flags.c_contiguous else array_like.copy(order="C")
        header = {"kind": "ndarray", "dtype": array.dtype.str, "shape": list(array.shape)}
        if codec.name != "none" and array.itemsize > 1 and array.size:
            as_bytes = np.frombuffer(array.tobytes(), dtype=np.uint8)  # 0-d arrays too
            raw = np.ascontiguousarray(as_bytes.reshape(-1, array.itemsize).T).tobytes()
            header["shuffle"] = array.itemsize
        else:
            raw = array.tobytes()
    else:
        raw = pickle.dumps(value, protocol=5)
        header = {"kind": "pickle"}
    payload = codec.compress(raw)
    header.update(codec=codec.name, raw_bytes=len(raw), payload_bytes=len(payload))
    head = _MAGIC + _HEADER_LENGTH.pack(len(json.dumps(header))) + json.dumps(header).encode()
    mac = _new_mac(key)
    mac.update(head)
    mac.update(payload)
    return head + mac.digest() + payload, len(raw)


def _split(blob: bytes | memoryview) -> tuple[dict[str, Any], int]:
    """Return an entry's header and where its payload starts (nothing is checked but form)."""
    if bytes(blob[: len(_MAGIC)]) != _MAGIC:
        raise CorruptEntryError("not a meno-jupyter cache entry (of this version)")
    start = len(_MAGIC) + _HEADER_LENGTH.size
    if len(blob) < start:
        raise CorruptEntryError("entry cut short")
    (length,) = _HEADER_LENGTH.unpack(bytes(blob[len(_MAGIC):start]))
    if length > _MAX_HEADER_BYTES or len(blob) < start + length + _MAC_BYTES:
        raise CorruptEntryError("entry cut short or its header is damaged")
    try:
        header = json.loads(bytes(blob[start:start + length]))
    except (ValueError, RecursionError):
        raise CorruptEntryError("unreadable entry header") from None
    if not isinstance(header, dict):
        raise CorruptEntryError("unreadable entry header")
    return header, start + length + _MAC_BYTES


def _authenticate(blob: bytes, key: bytes) -> tuple[dict[str, Any], bytes]:
    header, offset = _split(blob)
    mac = _new_mac(key)
    mac.update(blob[: offset - _MAC_BYTES])
    mac.update(blob[offset:])
    if not hmac.compare_digest(mac.digest(), blob[offset - _MAC_BYTES:offset]):
        raise CorruptEntryError("authentication failed (the entry is damaged, cut short, or "
                                "was not written by this cache)")
    return header, blob[offset:]


def decode(blob: bytes, key: bytes = b"") -> object:
    """Rebuild a value from :func:`encode`'s blob; raise CorruptEntryError if damaged.

    Nothing is unpickled before the header and payload pass the keyed check.
    """
    header, payload = _authenticate(blob, key)
    raw = _Codec(header["codec"], None).decompress(payload)
    if header["kind"] == "ndarray":
        import numpy as np

        dtype = np.dtype(header["dtype"])
        if header.get("shuffle"):
            planes = np.frombuffer(raw, dtype=np.uint8).reshape(int(header["shuffle"]), -1)
            return np.ascontiguousarray(planes.T).view(dtype).reshape(header["shape"])
        return np.frombuffer(raw, dtype=dtype).reshape(header["shape"]).copy()
    return pickle.loads(raw)


def stable_key_bytes(key: object) -> bytes:
    """Encode a cache key the same way in every process, equal keys alike.

    Keys equal in a dict are encoded alike (``1``, ``1.0`` and ``True``); sets are
    sorted, so hash randomisation does not change the result. Supported: str, bytes,
    numbers, None, and tuples or frozensets of them.

    Examples
    --------
    >>> stable_key_bytes(1) == stable_key_bytes(1.0) == stable_key_bytes(True)
    True
    >>> stable_key_bytes(frozenset({"b", "a"})) == stable_key_bytes(frozenset({"a", "b"}))
    True
    """
    if key is None:
        return b"n"
    if isinstance(key, str):
        return b"s" + str(len(key)).encode() + b":" + key.encode("utf-8", "surrogatepass")
    if isinstance(key, bytes):
        return b"b" + str(len(key)).encode() + b":" + key
    if isinstance(key, numbers.Complex):
        if isinstance(key, numbers.Real) or key.imag == 0:
            return _real_key_bytes(key.real)
        return b"c" + _real_key_bytes(key.real) + b"," + _real_key_bytes(key.imag)
    if isinstance(key, tuple):
        parts = [stable_key_bytes(item) for item in key]
    elif isinstance(key, frozenset):
        parts = sorted(stable_key_bytes(item) for item in key)
    else:
        raise TypeError(
            f"a cache with a disk tier needs keys that every process encodes alike (str, "
            f"bytes, numbers, None, tuples or frozensets of them); got {type(key).__name__}")
    tag = b"t" if isinstance(key, tuple) else b"z"
    return tag + str(len(parts)).encode() + b"(" + b"".join(
        str(len(part)).encode() + b":" + part for part in parts) + b")"


def _real_key_bytes(real: Any) -> bytes:
    """Encode a real number exactly, as a ratio, so that 1, 1.0 and True agree."""
    if isinstance(real, numbers.Rational):
        return f"r{real.numerator}/{real.denominator}".encode()
    as_float = float(real)
    if not math.isfinite(as_float):
        return f"f{as_float}".encode()
    numerator, denominator = as_float.as_integer_ratio()
    return f"r{numerator}/{denominator}".encode()


def private_directory(path: Path) -> Path:
    """Create ``path`` with mode 0700, or check that only this user can write to it.

    Raises PermissionError for a directory owned by another user or writable by the group
    or others: whoever can write there could plant entries.
    """
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    status = path.stat()
    if not stat.S_ISDIR(status.st_mode):
        raise NotADirectoryError(f"disk_dir {path} is not a directory")
    if status.st_uid != os.geteuid():
        raise PermissionError(
            f"disk_dir {path} belongs to another user (uid {status.st_uid}): a cache reads "
            "only from a directory of its own; choose one you own with mode 0700")
    if status.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise PermissionError(
            f"disk_dir {path} can be written by other users (mode "
            f"{stat.S_IMODE(status.st_mode):o}): they could plant entries; use a private "
            f"directory (chmod 700 {path})")
    return path


def cache_key(directory: Path) -> bytes:
    """Return the directory's secret key (made once, mode 0600, by whichever process is first)."""
    path = directory / KEY_FILE
    for _ in range(3):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            fd_new, tmp = tempfile.mkstemp(prefix=".tmp-key-", dir=directory)  # mode 0600
            try:
                with os.fdopen(fd_new, "wb") as handle:
                    handle.write(os.urandom(_KEY_BYTES))
                    handle.flush()
                    os.fsync(handle.fileno())
                with contextlib.suppress(FileExistsError):  # another process was first
                    os.link(tmp, path)
            finally:
                os.unlink(tmp)
            continue
        with os.fdopen(fd, "rb") as handle:
            status = os.fstat(handle.fileno())
            key = handle.read(_KEY_BYTES + 1)
        if (not stat.S_ISREG(status.st_mode) or status.st_uid != os.geteuid()
                or status.st_mode & 0o077 or len(key) != _KEY_BYTES):
            raise PermissionError(
                f"{path} is not this cache's private key (a regular file of {_KEY_BYTES} "
                "bytes, yours, mode 0600); remove it to start the cache again")
        return key
    raise OSError(f"could not create the cache key {path}")


@dataclass
class CompressedStats:
    """A compressed cache's counters."""

    memory_hits: int = 0
    disk_hits: int = 0
    misses: int = 0
    puts: int = 0
    raw_bytes: int = 0
    stored_bytes: int = 0
    corrupt_dropped: int = 0
    memory_items: int = 0
    memory_bytes: int = 0
    disk_items: int = 0
    disk_bytes: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def compression_ratio(self) -> float:
        """Raw bytes over stored bytes, over every put (1.0 before any)."""
        return self.raw_bytes / self.stored_bytes if self.stored_bytes else 1.0

    @property
    def bytes_saved(self) -> int:
        """Raw bytes minus stored bytes, over every put."""
        return self.raw_bytes - self.stored_bytes


class CompressedCache:
    """A cache that stores values compressed in memory, spilling to an optional disk tier.

    Parameters
    ----------
    max_bytes : int
        Compressed bytes kept in memory (least recently used go first, to disk if any).
    codec : {"lz4", "zstd", "none"}
        lz4 is fast, zstd smaller; "none" keeps numpy buffers raw (memory-mappable on disk).
    disk_dir : path, optional
        A directory for the disk tier: entries survive a restart and can be shared by
        processes of the same user. Keys must then be str, bytes, numbers, None or
        tuples/frozensets of them (file names come from a stable encoding of the key).
    disk_max_bytes : int, optional
        Bytes the disk tier may use, counted over the files of every process sharing it
        (least recently used files go first).

    Notes
    -----
    Trust model: entries other than plain arrays are pickled, and unpickling runs code.
    So ``disk_dir`` must belong to this user and not be writable by the group or others
    (it is created with mode 0700, and anything else is refused), and every entry carries
    a keyed BLAKE2b code made with a secret key kept in the directory (``.meno-cache-key``,
    mode 0600). An entry that fails the check, damaged or planted, is dropped with a
    warning and never unpickled. Whoever can read the key can forge entries: do not share
    the directory with anyone you would not let run code as you.

    Examples
    --------
    >>> import numpy as np
    >>> cache = CompressedCache(max_bytes=10_000_000, codec="lz4")
    >>> cache.put("zeros", np.zeros(1_000_000, dtype=np.float32))
    >>> cache.get("zeros").shape, cache.stats().compression_ratio > 10
    ((1000000,), True)
    """

    def __init__(
        self,
        max_bytes: int,
        codec: str = "lz4",
        *,
        level: int | None = None,
        disk_dir: str | os.PathLike[str] | None = None,
        disk_max_bytes: int | None = None,
        register: bool = True,
    ) -> None:
        self._codec = _Codec(codec, level)
        if disk_max_bytes is not None and disk_max_bytes <= 0:
            raise ValueError("disk_max_bytes must be positive")
        self.disk_dir = None if disk_dir is None else private_directory(Path(disk_dir))
        self._key = os.urandom(_KEY_BYTES) if self.disk_dir is None else cache_key(
            self.disk_dir)
        self.disk_max_bytes = disk_max_bytes
        self._stats = CompressedStats()
        self._lock = threading.RLock()
        self._memory: BoundedCache[Hashable, bytes] = BoundedCache(
            max_bytes=max_bytes, on_evict=self._spill, sizer=len, register=False)
        if register:
            register_shrinkable(self)

    # ------------------------------------------------------------------ public

    def put(self, key: Hashable, value: object) -> None:
        """Compress and store ``value``."""
        name = self._file_name(key)  # a key the disk tier cannot name is refused first
        blob, raw = encode(value, self._codec, self._key)
        with self._lock:
            self._stats.puts += 1
            self._stats.raw_bytes += raw
            self._stats.stored_bytes += len(blob)
            stored = self._memory.put(key, blob, size=len(blob))
            if not stored and name is not None:
                self._write_disk(name, blob)  # larger than the memory tier: straight to disk

    def __setitem__(self, key: Hashable, value: object) -> None:
        self.put(key, value)

    def get(self, key: Hashable, default: Any = None) -> Any:
        """Return the value for ``key`` from memory, then disk, or ``default``."""
        name = self._file_name(key)
        with self._lock:
            blob = self._memory.get(key)
            if blob is not None:
                self._stats.memory_hits += 1
                return decode(blob, self._key)
            blob = None if name is None else self._read_disk(name)
            if blob is None:
                self._stats.misses += 1
                return default
            self._stats.disk_hits += 1
            self._memory.put(key, blob, size=len(blob))
            return decode(blob, self._key)

    def __getitem__(self, key: Hashable) -> Any:
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        with self._lock:
            if key in self._memory:
                return True
            if self.disk_dir is None:
                return False
            name = self._file_name(key)
            return name is not None and _regular_file_size(self.disk_dir / name) is not None

    def memmap(self, key: Hashable) -> Any:
        """Open an array stored uncompressed on disk (codec "none") as a read-only memmap.

        The file is checked (header and data, with the cache's key) before it is mapped;
        a later change to the file shows through the map unchecked.
        """
        if self.disk_dir is None:
            raise ValueError("memmap needs a disk tier (disk_dir)")
        name = self._file_name(key)
        assert name is not None
        path = self.disk_dir / name
        with self._lock:
            if _regular_file_size(path) is None:
                blob = self._memory.get(key)
                if blob is None:
                    raise KeyError(key)
                self._write_disk(name, blob)
        try:
            header, offset = self._check_file(path)
        except FileNotFoundError:
            raise KeyError(key) from None
        except (OSError, CorruptEntryError) as error:
            self._drop_damaged(path, error)
            raise KeyError(key) from None
        if header.get("kind") != "ndarray" or header.get("codec") != "none":
            raise ValueError("only arrays stored with codec='none' can be memory-mapped")
        import numpy as np

        return np.memmap(path, dtype=np.dtype(header["dtype"]), mode="r", offset=offset,
                         shape=tuple(header["shape"]))

    def shrink(self, fraction: float = 0.5) -> int:
        """Shrink the memory tier (spilling to disk, if any); return the bytes freed."""
        return self._memory.shrink(fraction)

    def clear(self) -> None:
        """Empty both tiers (disk files are deleted)."""
        with self._lock:
            self._memory.clear()
            for path, _, _ in self._disk_files():
                path.unlink(missing_ok=True)

    def stats(self) -> CompressedStats:
        """Return the counters (a copy)."""
        with self._lock:
            memory = self._memory.stats()
            copy = CompressedStats(**{k: v for k, v in vars(self._stats).items()})
            copy.memory_items, copy.memory_bytes = memory.items, memory.size_bytes
            files = self._disk_files()
            copy.disk_items, copy.disk_bytes = len(files), sum(size for _, size, _ in files)
            return copy

    # ------------------------------------------------------------------ disk tier
    # The directory is the index: processes sharing it see each other's files, and least
    # recently used means oldest modification time (a read touches its file).

    def _file_name(self, key: object) -> str | None:
        if self.disk_dir is None:
            return None
        return hashlib.blake2b(stable_key_bytes(key), digest_size=20).hexdigest() + ".meno"

    def _disk_files(self) -> list[tuple[Path, int, float]]:
        if self.disk_dir is None:
            return []
        found = []
        with os.scandir(self.disk_dir) as entries:
            for entry in entries:
                if not entry.name.endswith(".meno"):
                    continue
                try:
                    status = entry.stat(follow_symlinks=False)
                except FileNotFoundError:  # removed by another process meanwhile
                    continue
                if stat.S_ISREG(status.st_mode):
                    found.append((Path(entry.path), status.st_size, status.st_mtime))
        return found

    def _spill(self, key: Hashable, blob: bytes, reason: str) -> None:
        name = self._file_name(key)
        if name is not None and reason in ("capacity", "shrink"):
            self._write_disk(name, blob)

    def _write_disk(self, name: str, blob: bytes) -> None:
        assert self.disk_dir is not None
        if self.disk_max_bytes is not None and len(blob) > self.disk_max_bytes:
            return
        target = self.disk_dir / name
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.disk_dir)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(blob)
            os.replace(tmp, target)
        except OSError as error:  # a full disk, a directory in the way: the entry stays out
            Path(tmp).unlink(missing_ok=True)
            warnings.warn(f"could not write the cache file {name}: {error}", MenoWarning,
                          stacklevel=4)
            return
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        if self.disk_max_bytes is not None:
            self._enforce_disk_bound(keep=target)

    def _enforce_disk_bound(self, keep: Path) -> None:
        assert self.disk_max_bytes is not None
        files = sorted(self._disk_files(), key=lambda item: item[2])
        total = sum(size for _, size, _ in files)
        for path, size, _ in files:
            if total <= self.disk_max_bytes:
                break
            if path == keep:
                continue
            path.unlink(missing_ok=True)
            total -= size

    def _check_file(self, path: Path) -> tuple[dict[str, Any], int]:
        """Authenticate a file by streaming it; return its header and payload offset."""
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise FileNotFoundError(path)
        with os.fdopen(fd, "rb") as handle:
            head = handle.read(len(_MAGIC) + _HEADER_LENGTH.size + _MAX_HEADER_BYTES
                               + _MAC_BYTES)
            header, offset = _split(head)
            mac = _new_mac(self._key)
            mac.update(head[: offset - _MAC_BYTES])
            mac.update(head[offset:])
            while block := handle.read(1 << 20):
                mac.update(block)
        if not hmac.compare_digest(mac.digest(), head[offset - _MAC_BYTES:offset]):
            raise CorruptEntryError("authentication failed")
        return header, offset

    def _read_disk(self, name: str) -> bytes | None:
        assert self.disk_dir is not None
        path = self.disk_dir / name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except (FileNotFoundError, IsADirectoryError):
            return None  # never stored, or evicted by another process: a miss
        except OSError as error:  # a link in its place (ELOOP), unreadable
            self._drop_damaged(path, error)
            return None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return None  # a directory or FIFO in its place: a miss, left alone
        with os.fdopen(fd, "rb") as handle:
            blob = handle.read()
        try:
            _authenticate(blob, self._key)
        except CorruptEntryError as error:
            self._drop_damaged(path, error)
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # recently used, for every process's eviction
        return blob

    def _drop_damaged(self, path: Path, error: Exception) -> None:
        warnings.warn(f"dropped a damaged cache file {path.name}: {error}", MenoWarning,
                      stacklevel=4)
        self._stats.corrupt_dropped += 1
        with contextlib.suppress(OSError):
            if not path.is_dir():
                path.unlink(missing_ok=True)


def _regular_file_size(path: Path) -> int | None:
    try:
        status = path.lstat()
    except FileNotFoundError:
        return None
    return status.st_size if stat.S_ISREG(status.st_mode) else None


class WeakValueCache(Generic[K, V]):
    """A cache whose entries vanish once nothing else references their values.

    Examples
    --------
    >>> import numpy as np
    >>> cache = WeakValueCache()
    >>> array = np.zeros(10)
    >>> cache["a"] = array
    >>> cache.get("a") is array
    True
    >>> del array
    >>> cache.get("a") is None
    True
    """

    def __init__(self) -> None:
        self._data: weakref.WeakValueDictionary[K, Any] = weakref.WeakValueDictionary()
        self.hits = 0
        self.misses = 0

    def put(self, key: K, value: V) -> None:
        """Store a weak reference to ``value``."""
        try:
            self._data[key] = value
        except TypeError:
            raise TypeError(
                f"{type(value).__name__} objects cannot be referenced weakly (lists, dicts, "
                "ints and strings cannot); use BoundedCache for them"
            ) from None

    def __setitem__(self, key: K, value: V) -> None:
        self.put(key, value)

    def get(self, key: K, default: Any = None) -> Any:
        """Return the value if it is still alive, else ``default``."""
        value = self._data.get(key)
        if value is None:
            self.misses += 1
            return default
        self.hits += 1
        return value

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data
