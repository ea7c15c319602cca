"""Compression ratio and put/get throughput of CompressedCache: lz4 against zstd, one run.

Data: embedding-like matrices (20,000 x 384, unit-norm rows of a low-rank signal plus noise,
as sentence embeddings are) at float32 and float16, and a pickled DataFrame of mixed columns
(ints, floats, repeated strings). Prints MB/s on the raw size and the compression ratio.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np
import pandas as pd

from meno_jupyter.core.caches import CompressedCache

MB = 1e6


def embeddings(dtype: type, n: int = 20_000, dim: int = 384) -> np.ndarray:
    rng = np.random.default_rng(0)
    basis = rng.standard_normal((48, dim))
    matrix = rng.standard_normal((n, 48)) @ basis + 0.3 * rng.standard_normal((n, dim))
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix.astype(dtype)


def frame(n: int = 300_000) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    return pd.DataFrame({
        "id": np.arange(n),
        "store": rng.integers(0, 500, n),
        "amount": rng.gamma(2.0, 10.0, n).round(2),
        "city": rng.choice(["Lyon", "Paris", "Nantes", "Lille", "Nice"], n),
        "flag": rng.random(n) < 0.1,
    })


def timed(action: Callable[[], object], repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    datasets: dict[str, tuple[object, int]] = {}
    for dtype in (np.float32, np.float16):
        matrix = embeddings(dtype)
        datasets[f"embeddings {np.dtype(dtype).name} {matrix.shape}"] = (matrix, matrix.nbytes)
    table = frame()
    datasets[f"DataFrame {table.shape}"] = (table, int(table.memory_usage(deep=True).sum()))
    print(f"{'data':36} {'codec':5} {'raw MB':>8} {'ratio':>6} {'saved MB':>9} "
          f"{'put MB/s':>9} {'get MB/s':>9}")
    for name, (value, raw) in datasets.items():
        for codec in ("lz4", "zstd"):
            cache = CompressedCache(max_bytes=10**10, codec=codec, register=False)
            put_s = timed(lambda: cache.put("k", value))  # noqa: B023 - run at once
            get_s = timed(lambda: cache.get("k"))  # noqa: B023
            stats = cache.stats()
            ratio = stats.compression_ratio
            print(f"{name:36} {codec:5} {raw / MB:8.1f} {ratio:6.2f} "
                  f"{stats.bytes_saved / stats.puts / MB:9.1f} {raw / MB / put_s:9.0f} "
                  f"{raw / MB / get_s:9.0f}")


if __name__ == "__main__":
    main()
