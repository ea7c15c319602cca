"""Moving a 1 GB frame to disk and back: ``%memspill`` against ``np.save``/``np.load`` and Parquet.

In one process, on one frame of about ``--gb`` GB (four float64 and int64 columns and a
categorical key), each side by side:

- to disk: ``SpillStore.spill`` (files written, synced and dropped from the page cache;
  the frame keeps working from them) against ``np.save`` of its columns and
  ``DataFrame.to_parquet`` (uncompressed), the frame then deleted;
- back: ``--back`` (a copy into memory) against ``np.load`` and ``pd.read_parquet``;
- working on the spilled frame: a ``sum`` of one column and a ``groupby(key).sum()``, cold
  (its pages dropped from the page cache first) and warm (read once already), against the
  same on the frame in memory.

Run ``python bench/spill.py`` (``--gb 0.2`` for a quick look).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def clock(seconds: dict[str, float], key: str) -> Iterator[None]:
    started = time.perf_counter()
    yield
    seconds[key] = time.perf_counter() - started


def drop_cache(paths: list[Path]) -> None:
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def main() -> None:
    import numpy as np
    import pandas as pd

    from meno_jupyter.core.spill import SpillStore

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=1.0)
    args = parser.parse_args()
    rows = int(args.gb * 1e9 / 33)
    rng = np.random.default_rng(0)

    def make() -> pd.DataFrame:
        return pd.DataFrame({"a": rng.random(rows), "b": rng.random(rows),
                             "n": rng.integers(0, 10**6, rows), "m": np.arange(rows),
                             "key": pd.Categorical(rng.integers(0, 100, rows))})

    work = Path(tempfile.mkdtemp(prefix="meno-bench-spill-", dir=os.environ.get("TMPDIR")))
    frame = make()
    size = frame.memory_usage(deep=True).sum()
    print(f"frame of {size / 1e9:.2f} GB, {rows:,} rows, in {work}")
    t: dict[str, float] = {}
    with clock(t, "ram_sum"):
        frame["a"].sum()
    with clock(t, "ram_group"):
        frame.groupby("key", observed=True)["a"].sum()
    columns = {name: frame[name].to_numpy() for name in ("a", "b", "n", "m")}
    with clock(t, "save"):
        for name, values in columns.items():
            np.save(work / f"{name}.npy", values)
    with clock(t, "load"):
        loaded = [np.load(work / f"{name}.npy") for name in columns]
    del columns, loaded
    with clock(t, "parquet_write"):
        frame.to_parquet(work / "f.parquet", compression=None)
    with clock(t, "parquet_read"):
        pd.read_parquet(work / "f.parquet")

    store = SpillStore(work / "spill")
    namespace: dict[str, Any] = {"frame": frame}
    del frame
    gc.collect()
    with clock(t, "spill"):
        report = store.spill(["frame"], namespace)
    spilled = namespace["frame"]
    files = list((work / "spill").iterdir())
    drop_cache(files)
    with clock(t, "cold_sum"):
        spilled["a"].sum()
    drop_cache(files)
    with clock(t, "cold_group"):
        spilled.groupby("key", observed=True)["a"].sum()
    with clock(t, "warm_sum"):
        spilled["a"].sum()
    with clock(t, "warm_group"):
        spilled.groupby("key", observed=True)["a"].sum()
    del spilled
    with clock(t, "back"):
        store.bring_back(["frame"], namespace)
    store.close()
    spill_s, back_s, save_s, load_s = t["spill"], t["back"], t["save"], t["load"]
    parquet_write_s, parquet_read_s = t["parquet_write"], t["parquet_read"]
    in_ram_sum, in_ram_group = t["ram_sum"], t["ram_group"]
    cold_sum, cold_group, warm_sum, warm_group = (t["cold_sum"], t["cold_group"],
                                                  t["warm_sum"], t["warm_group"])

    print(f"\n{'to disk':28} {'s':>7}   {'back':24} {'s':>7}")
    print(f"{'meno %memspill':28} {spill_s:7.2f}   {'meno --back':24} {back_s:7.2f}")
    print(f"{'np.save (4 columns)':28} {save_s:7.2f}   {'np.load':24} {load_s:7.2f}")
    print(f"{'to_parquet (uncompressed)':28} {parquet_write_s:7.2f}   "
          f"{'read_parquet':24} {parquet_read_s:7.2f}")
    print(f"ratios: spill / np.save {spill_s / save_s:.2f}x, spill / to_parquet "
          f"{spill_s / parquet_write_s:.2f}x; back / np.load {back_s / load_s:.2f}x, "
          f"back / read_parquet {back_s / parquet_read_s:.2f}x")
    print(f"memory freed by the spill: {report.moved[0].freed_bytes / 1e9:.2f} GB of "
          f"{size / 1e9:.2f} GB")
    print(f"\n{'on the spilled frame':28} {'in RAM':>8} {'cold':>8} {'warm':>8}  slowdown")
    for label, ram, cold, warm in (("sum of a column", in_ram_sum, cold_sum, warm_sum),
                                   ("groupby(key).sum()", in_ram_group, cold_group,
                                    warm_group)):
        print(f"{label:28} {ram:8.3f} {cold:8.3f} {warm:8.3f}  cold {cold / ram:.1f}x, "
              f"warm {warm / ram:.1f}x")
    for path in sorted(work.rglob("*"), reverse=True):
        if path.is_file():
            path.unlink()
        else:
            path.rmdir()
    work.rmdir()


if __name__ == "__main__":
    main()
