from __future__ import annotations

import random
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from meno_jupyter.core.caches import BoundedCache, CompressedCache, WeakValueCache, _split
from meno_jupyter.core.errors import MenoWarning
from meno_jupyter.core.monitor import shrink_caches


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_lru_eviction_order_and_byte_accounting() -> None:
    evicted: list[tuple[str, str]] = []
    cache: BoundedCache[str, np.ndarray] = BoundedCache(
        max_bytes=3000, on_evict=lambda k, v, why: evicted.append((k, why)))
    for key in "abc":
        cache[key] = np.zeros(125)  # 1000 bytes exactly
    assert cache.size_bytes == 3000
    cache.get("a")  # a is now the most recently used
    cache["d"] = np.zeros(125)
    assert cache.keys() == ["c", "a", "d"]
    assert evicted == [("b", "capacity")]
    cache["e"] = np.zeros(250)  # 2000 bytes: evicts c and a
    assert cache.keys() == ["d", "e"] and cache.size_bytes == 3000
    stats = cache.stats()
    assert stats.evictions == 3 and stats.hits == 1


def test_sizes_are_exact_for_frames_and_bytes() -> None:
    cache: BoundedCache[str, object] = BoundedCache(max_bytes=10**9)
    frame = pd.DataFrame({"a": np.arange(1000), "b": ["x"] * 1000})
    cache["frame"] = frame
    assert cache.size_bytes == int(frame.memory_usage(deep=True).sum())
    cache["frame"] = b"1234"  # replacing: the old size is given back
    assert cache.size_bytes == 4


def test_max_items_and_rejected_oversize() -> None:
    cache: BoundedCache[int, bytes] = BoundedCache(max_bytes=100, max_items=2)
    assert not cache.put(1, b"x" * 101)
    cache[2], cache[3], cache[4] = b"a", b"b", b"c"
    assert len(cache) == 2 and cache.stats().rejected == 1


def test_ttl_expiry() -> None:
    clock = Clock()
    cache: BoundedCache[str, int] = BoundedCache(max_items=10, ttl_s=5, clock=clock)
    cache["a"] = 1
    clock.now = 4.9
    assert cache["a"] == 1
    cache["b"] = 2
    clock.now = 5.0
    assert "a" not in cache and cache.get("a") is None
    assert cache.purge_expired() == 0 and cache.stats().expirations == 1
    clock.now = 10.0
    assert cache.purge_expired() == 1 and len(cache) == 0
    with pytest.raises(KeyError):
        cache["b"]


def test_shrink_and_pressure_registry() -> None:
    cache: BoundedCache[int, bytes] = BoundedCache(max_bytes=1000)
    for i in range(10):
        cache[i] = b"x" * 100
    assert cache.shrink(0.5) == 500 and cache.keys() == [5, 6, 7, 8, 9]
    for i in range(10):
        cache[i] = b"x" * 100
    assert shrink_caches(0.3) >= 700 and cache.size_bytes <= 300


def test_threads_hammering_one_cache_lose_and_corrupt_nothing() -> None:
    cache: BoundedCache[int, bytes] = BoundedCache(max_bytes=50_000, max_items=400)
    errors: list[str] = []

    def value_for(key: int) -> bytes:
        return key.to_bytes(4, "little") * (1 + key % 50)

    def hammer(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(5_000):
            key = rng.randrange(1_000)
            if rng.random() < 0.5:
                cache[key] = value_for(key)
            else:
                value = cache.get(key)
                if value is not None and value != value_for(key):
                    errors.append(f"key {key} returned a wrong value")

    threads = [threading.Thread(target=hammer, args=(s,)) for s in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    keys = cache.keys()
    assert cache.size_bytes == sum(len(value_for(k)) for k in keys)
    assert cache.size_bytes <= 50_000 and len(keys) <= 400
    assert all(cache.get(k) == value_for(k) for k in keys)


@pytest.mark.parametrize("codec", ["lz4", "zstd", "none"])
@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.int8])
def test_arrays_round_trip_exactly(codec: str, dtype: type) -> None:
    rng = np.random.default_rng(0)
    array = (rng.standard_normal((300, 64)) * 50).astype(dtype)
    cache = CompressedCache(max_bytes=10**8, codec=codec)
    cache["a"] = array
    back = cache["a"]
    assert back.dtype == array.dtype and back.shape == array.shape
    assert np.array_equal(back, array)


def test_frames_and_objects_round_trip_and_compression_is_counted() -> None:
    cache = CompressedCache(max_bytes=10**8, codec="zstd")
    frame = pd.DataFrame({"a": np.arange(10_000) % 7, "b": ["abc"] * 10_000})
    cache["frame"] = frame
    cache["obj"] = {"nested": [1, 2, 3]}
    pd.testing.assert_frame_equal(cache["frame"], frame)
    assert cache["obj"] == {"nested": [1, 2, 3]}
    stats = cache.stats()
    assert stats.compression_ratio > 5 and stats.bytes_saved > 0
    assert stats.memory_hits == 2 and stats.puts == 2


def test_arrays_are_not_pickled() -> None:
    cache = CompressedCache(max_bytes=10**8, codec="none")
    array = np.arange(10, dtype=np.int64)
    cache["a"] = array
    blob = cache._memory.get("a")
    assert blob is not None
    header, offset = _split(blob)
    assert header["kind"] == "ndarray" and header["dtype"] == "<i8"
    assert blob[offset:] == array.tobytes()  # the raw buffer itself, no pickle around it


def test_spill_to_disk_survives_a_restart(tmp_path: Path) -> None:
    cache = CompressedCache(max_bytes=30_000, codec="lz4", disk_dir=tmp_path)
    rng = np.random.default_rng(1)
    arrays = {i: rng.standard_normal(2_000).astype(np.float32) for i in range(10)}
    for key, array in arrays.items():
        cache[key] = array  # 8 kB each, barely compressible: most spill to disk
    assert cache.stats().disk_items >= 5
    reopened = CompressedCache(max_bytes=30_000, codec="lz4", disk_dir=tmp_path)
    for key, array in arrays.items():
        if key in reopened:
            assert np.array_equal(reopened[key], array)
    assert reopened.stats().disk_hits >= 5


def _only_file(directory: Path) -> Path:
    files = list(directory.glob("*.meno"))
    assert len(files) == 1
    return files[0]


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_disk_entries_are_dropped_with_a_warning(tmp_path: Path, damage: str) -> None:
    cache = CompressedCache(max_bytes=10, codec="zstd", disk_dir=tmp_path)  # all to disk
    cache["k"] = np.arange(5_000, dtype=np.float64)
    path = _only_file(tmp_path)
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    else:
        data[-10] ^= 0xFF
        path.write_bytes(bytes(data))
    reopened = CompressedCache(max_bytes=10, codec="zstd", disk_dir=tmp_path)
    with pytest.warns(MenoWarning, match="damaged"):
        assert reopened.get("k") is None
    assert not path.exists() and reopened.stats().corrupt_dropped == 1


def test_disk_tier_is_bounded(tmp_path: Path) -> None:
    cache = CompressedCache(max_bytes=10, codec="none", disk_dir=tmp_path, disk_max_bytes=50_000)
    for i in range(20):
        cache[i] = np.ones(1_000)  # 8 kB + header each
    assert sum(p.stat().st_size for p in tmp_path.glob("*.meno")) <= 50_000
    assert cache[19] is not None and cache.get(0) is None


def test_uncompressed_arrays_can_be_memory_mapped(tmp_path: Path) -> None:
    cache = CompressedCache(max_bytes=10**6, codec="none", disk_dir=tmp_path)
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    cache["m"] = array
    mapped = cache.memmap("m")
    assert isinstance(mapped, np.memmap) and np.array_equal(mapped, array)
    lz = CompressedCache(max_bytes=10**6, codec="lz4", disk_dir=tmp_path / "lz")
    lz["m"] = array
    with pytest.raises(ValueError, match="codec='none'"):
        lz.memmap("m")


def test_bad_codec() -> None:
    with pytest.raises(ValueError, match="codec"):
        CompressedCache(max_bytes=10, codec="gzip")


def test_weak_value_cache() -> None:
    cache: WeakValueCache[str, np.ndarray] = WeakValueCache()
    array = np.zeros(3)
    cache["a"] = array
    assert cache.get("a") is array
    del array
    assert cache.get("a") is None and len(cache) == 0
    with pytest.raises(TypeError, match="cannot be referenced weakly"):
        cache["list"] = [1, 2]  # type: ignore[assignment]


@pytest.mark.parametrize("array", [np.zeros((0, 4), dtype=np.float32), np.array(3.5),
                                   np.arange(6, dtype=np.float64).reshape(2, 3).T])
def test_edge_shaped_arrays_round_trip(array: np.ndarray) -> None:
    cache = CompressedCache(max_bytes=10**6, codec="zstd")
    cache["a"] = array
    assert cache["a"].shape == array.shape and np.array_equal(cache["a"], array)
