"""Caches that know their size: LRU bounded in bytes, compressed with a disk tier, weak.

Every cache registers with the pressure actions (:func:`meno_jupyter.core.monitor.shrink_caches`),
so that ``high`` memory pressure can shrink them.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
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

_MAGIC = b"MENOCACHE1\n"
_HEADER_LENGTH = struct.Struct("<I")
CODECS = ("lz4", "zstd", "none")


class CorruptEntryError(ValueError):
    """A stored entry failed its checksum or was cut short."""


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


def _checksum(payload: bytes) -> str:
    return hashlib.blake2b(payload, digest_size=16).hexdigest()


def encode(value: object, codec: _Codec) -> tuple[bytes, int]:
    """Serialise a value into a self-describing blob; return (blob, raw size).

    numpy arrays (not of object dtype) are stored as a dtype/shape header and their raw
    buffer, never pickled; everything else is pickled (protocol 5). Before compression the
    bytes of multi-byte numbers are shuffled by significance (blosc's filter): the sign and
    exponent bytes of floats repeat and compress; the mantissa bytes do not.
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
    header.update(codec=codec.name, raw_bytes=len(raw), checksum=_checksum(payload))
    header_bytes = json.dumps(header).encode()
    return _MAGIC + _HEADER_LENGTH.pack(len(header_bytes)) + header_bytes + payload, len(raw)


def _split(blob: bytes | memoryview) -> tuple[dict[str, Any], int]:
    if bytes(blob[: len(_MAGIC)]) != _MAGIC:
        raise CorruptEntryError("not a meno-jupyter cache entry")
    start = len(_MAGIC) + _HEADER_LENGTH.size
    if len(blob) < start:
        raise CorruptEntryError("entry cut short")
    (length,) = _HEADER_LENGTH.unpack(bytes(blob[len(_MAGIC):start]))
    try:
        header = json.loads(bytes(blob[start:start + length]))
    except ValueError:
        raise CorruptEntryError("unreadable entry header") from None
    return header, start + length


def decode(blob: bytes) -> object:
    """Rebuild a value from :func:`encode`'s blob; raise CorruptEntryError if damaged."""
    header, offset = _split(blob)
    payload = blob[offset:]
    if _checksum(payload) != header.get("checksum"):
        raise CorruptEntryError("checksum mismatch (the entry is damaged or cut short)")
    raw = _Codec(header["codec"], None).decompress(payload)
    if header["kind"] == "ndarray":
        import numpy as np

        dtype = np.dtype(header["dtype"])
        if header.get("shuffle"):
            planes = np.frombuffer(raw, dtype=np.uint8).reshape(int(header["shuffle"]), -1)
            return np.ascontiguousarray(planes.T).view(dtype).reshape(header["shape"])
        return np.frombuffer(raw, dtype=dtype).reshape(header["shape"]).copy()
    return pickle.loads(raw)


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
        A directory for the disk tier: entries survive a restart, each with a checksum;
        a damaged file is dropped with a warning, never returned.
    disk_max_bytes : int, optional
        Bytes the disk tier may use (least recently used files go first).

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
        self.disk_dir = Path(disk_dir) if disk_dir is not None else None
        if disk_max_bytes is not None and disk_max_bytes <= 0:
            raise ValueError("disk_max_bytes must be positive")
        self.disk_max_bytes = disk_max_bytes
        self._stats = CompressedStats()
        self._lock = threading.RLock()
        self._memory: BoundedCache[Hashable, bytes] = BoundedCache(
            max_bytes=max_bytes, on_evict=self._spill, sizer=len, register=False)
        self._disk: OrderedDict[str, int] = OrderedDict()
        if self.disk_dir is not None:
            self.disk_dir.mkdir(parents=True, exist_ok=True)
            self._scan_disk()
        if register:
            register_shrinkable(self)

    # ------------------------------------------------------------------ public

    def put(self, key: Hashable, value: object) -> None:
        """Compress and store ``value``."""
        blob, raw = encode(value, self._codec)
        with self._lock:
            self._stats.puts += 1
            self._stats.raw_bytes += raw
            self._stats.stored_bytes += len(blob)
            stored = self._memory.put(key, blob, size=len(blob))
            if not stored and self.disk_dir is not None:
                self._write_disk(key, blob)  # larger than the memory tier: straight to disk

    def __setitem__(self, key: Hashable, value: object) -> None:
        self.put(key, value)

    def get(self, key: Hashable, default: Any = None) -> Any:
        """Return the value for ``key`` from memory, then disk, or ``default``."""
        with self._lock:
            blob = self._memory.get(key)
            if blob is not None:
                self._stats.memory_hits += 1
                return decode(blob)
            blob = self._read_disk(key)
            if blob is None:
                self._stats.misses += 1
                return default
            self._stats.disk_hits += 1
            self._memory.put(key, blob, size=len(blob))
            return decode(blob)

    def __getitem__(self, key: Hashable) -> Any:
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        with self._lock:
            if key in self._memory:
                return True
            return self.disk_dir is not None and self._file_name(key) in self._disk

    def memmap(self, key: Hashable) -> Any:
        """Open an array stored uncompressed on disk (codec "none") as a read-only memmap."""
        if self.disk_dir is None:
            raise ValueError("memmap needs a disk tier (disk_dir)")
        name = self._file_name(key)
        path = self.disk_dir / name
        with self._lock:
            if name not in self._disk:
                blob = self._memory.get(key)
                if blob is None:
                    raise KeyError(key)
                self._write_disk(key, blob)
        with path.open("rb") as handle:
            header, offset = _split(handle.read(64 * 1024))
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
            if self.disk_dir is not None:
                for name in list(self._disk):
                    (self.disk_dir / name).unlink(missing_ok=True)
                self._disk.clear()

    def stats(self) -> CompressedStats:
        """Return the counters (a copy)."""
        with self._lock:
            memory = self._memory.stats()
            copy = CompressedStats(**{k: v for k, v in vars(self._stats).items()})
            copy.memory_items, copy.memory_bytes = memory.items, memory.size_bytes
            copy.disk_items, copy.disk_bytes = len(self._disk), sum(self._disk.values())
            return copy

    # ------------------------------------------------------------------ disk tier

    def _file_name(self, key: object) -> str:
        try:
            raw = pickle.dumps(key, protocol=4)
        except Exception:
            raw = repr(key).encode()
        return hashlib.blake2b(raw, digest_size=20).hexdigest() + ".meno"

    def _scan_disk(self) -> None:
        assert self.disk_dir is not None
        files = sorted(self.disk_dir.glob("*.meno"), key=lambda p: p.stat().st_mtime)
        for path in files:
            self._disk[path.name] = path.stat().st_size

    def _spill(self, key: Hashable, blob: bytes, reason: str) -> None:
        if self.disk_dir is not None and reason in ("capacity", "shrink"):
            self._write_disk(key, blob)

    def _write_disk(self, key: Hashable, blob: bytes) -> None:
        assert self.disk_dir is not None
        if self.disk_max_bytes is not None and len(blob) > self.disk_max_bytes:
            return
        name = self._file_name(key)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=self.disk_dir)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(blob)
            os.replace(tmp, self.disk_dir / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._disk.pop(name, None)
        self._disk[name] = len(blob)
        if self.disk_max_bytes is not None:
            while sum(self._disk.values()) > self.disk_max_bytes and len(self._disk) > 1:
                oldest, _ = self._disk.popitem(last=False)
                (self.disk_dir / oldest).unlink(missing_ok=True)

    def _read_disk(self, key: Hashable) -> bytes | None:
        if self.disk_dir is None:
            return None
        name = self._file_name(key)
        if name not in self._disk:
            return None
        path = self.disk_dir / name
        try:
            blob = path.read_bytes()
            header, offset = _split(blob)
            if _checksum(blob[offset:]) != header.get("checksum"):
                raise CorruptEntryError("checksum mismatch")
        except (OSError, CorruptEntryError) as error:
            warnings.warn(f"dropped a damaged cache file {path.name}: {error}", MenoWarning,
                          stacklevel=3)
            self._stats.corrupt_dropped += 1
            self._disk.pop(name, None)
            path.unlink(missing_ok=True)
            return None
        self._disk.move_to_end(name)
        return blob


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
