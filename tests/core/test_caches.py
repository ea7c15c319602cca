from __future__ import annotations

import random
import subprocess
import textwrap
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


# ---------------------------------------------------------------------------- hardening

def test_a_changed_header_is_refused_not_misread(tmp_path: Path) -> None:
    cache = CompressedCache(max_bytes=10, codec="none", disk_dir=tmp_path)
    cache["k"] = np.arange(100, dtype=np.float64)
    path = _only_file(tmp_path)
    path.write_bytes(path.read_bytes().replace(b'"<f8"', b'"<i8"', 1))
    reopened = CompressedCache(max_bytes=10, codec="none", disk_dir=tmp_path)
    with pytest.warns(MenoWarning, match="damaged"):
        assert reopened.get("k") is None  # before: int64 garbage


def test_memmap_checks_the_file_before_mapping_it(tmp_path: Path) -> None:
    cache = CompressedCache(max_bytes=10, codec="none", disk_dir=tmp_path)
    cache["m"] = np.arange(1000, dtype=np.float32)
    path = _only_file(tmp_path)
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0x10
    path.write_bytes(bytes(raw))
    with pytest.warns(MenoWarning, match="damaged"), pytest.raises(KeyError):
        cache.memmap("m")
    assert not path.exists()


def test_a_planted_pickle_is_never_unpickled(tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    cache = CompressedCache(max_bytes=10, codec="zstd", disk_dir=cache_dir)
    cache["report"] = {"rows": 3}
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (Path.touch, (str(marker),))  # type: ignore[return-value]

    from meno_jupyter.core.caches import _Codec, encode

    # The attacker can write the directory's files but does not know the secret key.
    blob, _ = encode(Exploit(), _Codec("zstd", None), key=b"guessed" * 4)
    _only_file(cache_dir).write_bytes(blob)
    reopened = CompressedCache(max_bytes=10, codec="zstd", disk_dir=cache_dir)
    with pytest.warns(MenoWarning, match="authentication failed"):
        assert reopened.get("report") is None
    assert not marker.exists()


def test_the_disk_tier_is_private(tmp_path: Path) -> None:
    import os
    import stat

    cache_dir = tmp_path / "new" / "cache"
    CompressedCache(max_bytes=10, disk_dir=cache_dir)
    assert stat.S_IMODE(cache_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((cache_dir / ".meno-cache-key").stat().st_mode) == 0o600
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(PermissionError, match="can be written by other users"):
        CompressedCache(max_bytes=10, disk_dir=shared)
    shared.chmod(0o755)
    CompressedCache(max_bytes=10, disk_dir=shared)  # readable by others is fine
    if os.geteuid() == 0:  # root can give a directory away; others cannot make one
        foreign = tmp_path / "foreign"
        foreign.mkdir(mode=0o700)
        os.chown(foreign, 65534, 65534)
        with pytest.raises(PermissionError, match="belongs to another user"):
            CompressedCache(max_bytes=10, disk_dir=foreign)
    (cache_dir / ".meno-cache-key").chmod(0o644)
    with pytest.raises(PermissionError, match="private key"):
        CompressedCache(max_bytes=10, disk_dir=cache_dir)


def test_a_directory_in_place_of_a_cache_file_is_a_miss(tmp_path: Path) -> None:
    cache = CompressedCache(max_bytes=10, codec="lz4", disk_dir=tmp_path)
    cache["k"] = np.arange(100)
    path = _only_file(tmp_path)
    path.unlink()
    path.mkdir()
    assert cache.get("k", "missing") == "missing"
    assert "k" not in cache


def test_keys_equal_in_memory_are_one_key_on_disk(tmp_path: Path) -> None:
    cache = CompressedCache(max_bytes=10, codec="lz4", disk_dir=tmp_path)
    cache[1] = "one"
    assert cache.get(1.0) == "one" and cache.get(True) == "one"
    cache[(1, "a")] = "tuple"
    assert cache.get((1.0, "a")) == "tuple"
    assert len(list(tmp_path.glob("*.meno"))) == 2
    with pytest.raises(TypeError, match="encodes alike"):
        cache[object()] = 1
    assert cache.stats().puts == 2


def _cache_process(code: str, cache_dir: Path, seed: str = "0") -> subprocess.Popen[str]:
    """A process with a cache on ``cache_dir`` in which any MenoWarning is an error."""
    import os
    import sys

    program = textwrap.dedent("""
        import sys, warnings
        import numpy as np
        from meno_jupyter.core.caches import CompressedCache
        from meno_jupyter.core.errors import MenoWarning
        warnings.simplefilter("error", MenoWarning)
        cache_dir = sys.argv[1]
    """) + textwrap.dedent(code)
    return subprocess.Popen([sys.executable, "-c", program, str(cache_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONHASHSEED": seed})


def _finish(process: subprocess.Popen[str]) -> str:
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    return out.strip()


def test_a_frozenset_key_is_found_after_a_restart(tmp_path: Path) -> None:
    _finish(_cache_process("""
        cache = CompressedCache(max_bytes=10, codec="zstd", disk_dir=cache_dir)
        cache[frozenset({"alpha", "beta", "gamma", "delta"})] = "found"
    """, tmp_path, seed="1"))
    assert _finish(_cache_process("""
        cache = CompressedCache(max_bytes=10, codec="zstd", disk_dir=cache_dir)
        print(cache.get(frozenset({"delta", "gamma", "beta", "alpha"})))
    """, tmp_path, seed="2")) == "found"


def test_two_processes_share_one_bounded_disk_tier(tmp_path: Path) -> None:
    code = """
        import random
        cache = CompressedCache(max_bytes=10, codec="none", disk_dir=cache_dir,
                                disk_max_bytes=200_000)
        for i in range(300):
            cache[i % 60] = np.full(1000, i % 60, dtype=np.float64)
            value = cache.get(random.randrange(60))
            assert value is None or value[0] == value[-1]
        print("ok")
    """
    processes = [_cache_process(code, tmp_path) for _ in range(2)]
    assert [_finish(process) for process in processes] == ["ok", "ok"]  # no "damaged" warning
    total = sum(p.stat().st_size for p in tmp_path.glob("*.meno"))
    assert 0 < total <= 200_000
