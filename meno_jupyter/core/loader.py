"""Reading files chunk by chunk into optimized frames: peak ≈ the result plus one chunk.

CSV is read as text and parsed only where parsing loses nothing: integers without leading
zeros or signs (so ``"02134"`` stays text), plain decimal numbers, ``True``/``False``. Each chunk
is then optimized (:func:`optimize_dataframe`), and at the end the chunks' dtypes are
unified by exact widening (uint8 + int16 → int16, int + float → float64, categories
united); a column whose chunks disagree in kind falls back to Arrow text.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from meno_jupyter.core.dataframe import nullable_dtype, optimize_dataframe
from meno_jupyter.core.errors import check_count
from meno_jupyter.core.memory import format_bytes

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_CHUNKSIZE = 100_000
FORMATS = {".csv": "csv", ".tsv": "csv", ".txt": "csv", ".parquet": "parquet", ".pq": "parquet",
           ".feather": "feather", ".arrow": "feather", ".xlsx": "excel", ".xls": "excel"}
_INTEGER = re.compile(r"-?(0|[1-9][0-9]*)")
_DECIMAL = re.compile(r"-?(0|[1-9][0-9]*)?(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_LEADING_ZERO = re.compile(r"-?0[0-9]+(\.[0-9]*)?")


def _format_of(path: Path, fmt: str | None) -> str:
    if fmt is not None:
        if fmt not in set(FORMATS.values()):
            raise ValueError(f"format must be one of {sorted(set(FORMATS.values()))}, got {fmt}")
        return fmt
    try:
        return FORMATS[path.suffix.lower()]
    except KeyError:
        raise ValueError(f"cannot tell the format of {path.name}: pass format='csv', "
                         "'parquet', 'feather' or 'excel'") from None


# pandas' default missing-value strings, so that reading matches pd.read_csv.
NA_STRINGS = ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan",
              "1.#IND", "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan",
              "null"]


def parse_text_array(array: Any) -> Any:
    """Parse an Arrow string array into numbers or booleans only where no value changes.

    Integers must be written without leading zeros or signs (``"02134"`` stays text),
    decimals plainly; ``True``/``False`` become booleans. Checks and casts run in Arrow.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    present = len(array) - array.null_count
    if not present:
        return array

    def every(pattern: str) -> bool:
        matched = pc.match_substring_regex(array, pattern)
        return bool(pc.sum(matched).as_py() == present)

    if every(f"^{_INTEGER.pattern}$"):
        try:
            return pc.cast(array, pa.int64())
        except pa.ArrowInvalid:  # beyond int64
            pass
    if every(f"^{_DECIMAL.pattern}$") and not pc.any(
            pc.match_substring_regex(array, f"^{_LEADING_ZERO.pattern}$")).as_py() and \
            not pc.any(pc.is_in(array, pa.array(["", "-", "."]))).as_py():
        return pc.cast(array, pa.float64())
    if bool(pc.sum(pc.is_in(array, pa.array(["True", "False"]))).as_py() == present):
        return pc.equal(array, "True")
    return array


def parse_text_column(series: pd.Series) -> pd.Series:
    """Parse a text column into numbers or booleans only where no value changes.

    Examples
    --------
    >>> import pandas as pd
    >>> parse_text_column(pd.Series(["1", "20", None])).dtype
    Int64Dtype()
    >>> parse_text_column(pd.Series(["02134", "10001"])).tolist()
    ['02134', '10001']
    """
    import pyarrow as pa

    values = series.astype(object).where(series.notna(), None).tolist()
    if any(v is not None and not isinstance(v, str) for v in values):
        values = [v if v is None else str(v) for v in values]
    array = pa.array(values, type=pa.string())
    parsed = parse_text_array(array)
    if parsed is array:
        return series
    return _arrow_to_pandas(parsed, series.index)


def _arrow_to_pandas(array: Any, index: Any) -> pd.Series:
    import pandas as pd
    import pyarrow as pa

    out: pd.Series
    if pa.types.is_integer(array.type) and array.null_count:
        out = pd.Series(pd.array(array.to_pylist(), dtype="Int64"), index=index)
    elif pa.types.is_boolean(array.type) and array.null_count:
        out = pd.Series(pd.array(array.to_pylist(), dtype="boolean"), index=index)
    else:
        out = pd.Series(array.to_numpy(zero_copy_only=False), index=index)
    return out


def _csv_batches(path: Path, chunksize: int, columns: list[str] | None, sep: str
                 ) -> Iterator[tuple[pd.DataFrame, float]]:
    """Stream a CSV through Arrow's reader, every column as text, then parse losslessly."""
    import csv

    import pyarrow as pa
    import pyarrow.csv as pacsv

    with path.open(newline="") as handle:
        header = next(csv.reader(handle, delimiter=sep), [])
    if not header:
        return
    wanted = columns or header
    missing = [c for c in wanted if c not in header]
    if missing:
        raise ValueError(f"no such column(s) in {path.name}: {', '.join(missing)}")
    size = max(path.stat().st_size, 1)
    # A plain file stream: given a path, Arrow may map the whole file, and mapped pages
    # count as resident memory.
    stream = pa.OSFile(str(path), "r")
    reader = pacsv.open_csv(
        stream,
        # No threads: the threaded reader reads ahead and holds blocks, raising the peak.
        read_options=pacsv.ReadOptions(block_size=max(1 << 20, chunksize * 64), use_threads=False),
        parse_options=pacsv.ParseOptions(delimiter=sep),
        convert_options=pacsv.ConvertOptions(
            column_types={c: pa.string() for c in header}, include_columns=wanted,
            strings_can_be_null=True, null_values=NA_STRINGS),
    )
    pending: list[Any] = []
    rows = 0
    read_bytes = 0
    for batch in reader:
        pending.append(batch)
        rows += batch.num_rows
        read_bytes += batch.nbytes
        while rows >= chunksize:
            table = pa.Table.from_batches(pending)
            head, rest = table.slice(0, chunksize), table.slice(chunksize)
            yield _parse_table(head), min(1.0, read_bytes / size)
            pending = rest.to_batches()
            rows = rest.num_rows
    if rows:
        yield _parse_table(pa.Table.from_batches(pending)), 1.0
    stream.close()


def _parse_table(table: Any) -> pd.DataFrame:
    import pandas as pd

    index = pd.RangeIndex(table.num_rows)
    data = {}
    for name, column in zip(table.column_names, table.columns, strict=True):
        array = column.combine_chunks()
        parsed = parse_text_array(array)
        if parsed is array:  # text stays in Arrow: compact, and no Python object per value
            data[name] = pd.Series(pd.arrays.ArrowExtensionArray(array), index=index)
        else:
            data[name] = _arrow_to_pandas(parsed, index)
    frame: pd.DataFrame = pd.DataFrame(data, index=index)
    return frame


def _raw_chunks(path: Path, fmt: str, chunksize: int, columns: list[str] | None,
                read_kwargs: dict[str, Any]) -> Iterator[tuple[pd.DataFrame, float]]:
    """Yield (chunk, share of the file read so far)."""
    import pandas as pd

    if fmt == "csv":
        sep = read_kwargs.pop("sep", "\t" if path.suffix.lower() == ".tsv" else ",")
        if read_kwargs:
            raise TypeError(f"unsupported CSV options: {', '.join(read_kwargs)} (sep only)")
        yield from _csv_batches(path, chunksize, columns, sep)
        return
    if fmt == "parquet":
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(path)
        total = max(parquet.metadata.num_rows, 1)
        done = 0
        for batch in parquet.iter_batches(batch_size=chunksize, columns=columns):
            done += batch.num_rows
            yield batch.to_pandas(), done / total
        return
    if fmt == "feather":
        from pyarrow import feather

        table = feather.read_table(path, columns=columns, memory_map=True)
        total = max(table.num_rows, 1)
        done = 0
        for batch in table.to_batches(max_chunksize=chunksize):
            done += batch.num_rows
            yield batch.to_pandas(), done / total
        return
    try:
        frame = pd.read_excel(path, usecols=columns, dtype=object, **read_kwargs)
    except ImportError as error:
        raise ImportError(f"reading Excel needs openpyxl: pip install openpyxl ({error})") from None
    frame = frame.apply(parse_text_column)
    rows = max(len(frame), 1)
    for start in range(0, rows, chunksize):
        yield frame.iloc[start:start + chunksize], min(1.0, (start + chunksize) / rows)


def _common_dtype(dtypes: list[Any]) -> Any | None:
    """Return the dtype every chunk widens to exactly, or None when kinds disagree.

    Text columns never come here: :func:`_text_dtype` decides them on the whole column.
    """
    import pandas as pd

    if all(str(d) == str(dtypes[0]) for d in dtypes):
        return dtypes[0]
    numeric = []
    nullable = False
    for given in dtypes:
        dtype = given.subtype if isinstance(given, pd.SparseDtype) else given
        if isinstance(dtype, pd.api.extensions.ExtensionDtype):
            numpy_dtype = getattr(dtype, "numpy_dtype", None)
            if numpy_dtype is None or numpy_dtype.kind not in "iufb":
                return None
            nullable = True
            numeric.append(numpy_dtype)
        elif isinstance(dtype, np.dtype) and dtype.kind in "iufb":
            numeric.append(dtype)
        else:
            return None
    widest = np.result_type(*numeric)
    if widest.kind == "f" and any(d.kind in "iu" and d.itemsize >= 4 for d in numeric):
        widest = np.dtype(np.float64)  # int32/int64 are not all exact in float32
    if nullable and widest.kind in "iub":
        return nullable_dtype(widest)
    return widest


def _is_text(dtype: Any) -> bool:
    import pandas as pd

    return isinstance(dtype, pd.CategoricalDtype) or bool(pd.api.types.is_string_dtype(dtype))


def _text_dtype(columns: list[pd.Series]) -> Any:
    """Return a category of the chunks' values when they are few, else Arrow strings."""
    import pandas as pd
    import pyarrow as pa

    values: set[Any] = set()
    rows = 0
    for series in columns:
        rows += len(series)
        values.update(series.dropna().unique().tolist())
    if len(values) <= 0.5 * max(rows, 1):
        return pd.CategoricalDtype(pd.Index(sorted(values, key=str)))
    return pd.ArrowDtype(pa.string())


def _unify(chunks: list[Any]) -> pd.DataFrame:
    """Concatenate optimized chunks, widening each column to a dtype all chunks fit exactly."""
    import pandas as pd
    import pyarrow as pa

    frames = [result.frame for result in chunks]
    for column in frames[0].columns:
        # A chunk where the column is all missing has no type of its own: it takes the
        # others' (made nullable), instead of forcing the column back to text.
        typed = [frame[column].dtype for frame in frames if frame[column].notna().any()]
        if not typed:
            continue
        if all(_is_text(d) for d in typed):  # decided once, on the whole column
            target = _text_dtype([frame[column] for frame in frames])
        else:
            target = _common_dtype(typed)
            if target is not None and len(typed) < len(frames) and \
                    isinstance(target, np.dtype) and target.kind in "iub":
                target = _common_dtype([*typed, pd.Int8Dtype()]) if target.kind != "b" \
                    else pd.BooleanDtype()
        if target is None:  # kinds disagree: back to each chunk's original text, as Arrow
            text = pd.ArrowDtype(pa.string())
            for i, result in enumerate(chunks):
                original = result.undo_column(column)
                frames[i][column] = original.astype(object).where(original.notna(), None) \
                    .map(lambda v: v if v is None else str(v)).astype(text)
            continue
        for frame in frames:
            if str(frame[column].dtype) != str(target) or isinstance(target, pd.CategoricalDtype):
                series = frame[column]
                if isinstance(series.dtype, pd.SparseDtype):
                    series = series.sparse.to_dense()
                if not series.notna().any() or (
                        isinstance(target, pd.CategoricalDtype) and
                        not isinstance(series.dtype, pd.CategoricalDtype)):
                    series = series.astype(object).where(series.notna(), None)
                frame[column] = series.astype(target)
    combined: pd.DataFrame = pd.concat(frames, ignore_index=True)
    return combined


def iter_optimized(
    path: str | Path,
    *,
    chunksize: int = DEFAULT_CHUNKSIZE,
    columns: list[str] | None = None,
    format: str | None = None,
    **read_kwargs: Any,
) -> Iterator[pd.DataFrame]:
    """Yield optimized chunks of a file, for files larger than memory.

    Each chunk is exact and as small as its own data allows; chunks may differ in dtype
    (use :func:`read_optimized` for one frame with one schema).

    Examples
    --------
    >>> import pandas as pd, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "x.csv")
    >>> pd.DataFrame({"a": range(10)}).to_csv(path, index=False)
    >>> [len(c) for c in iter_optimized(path, chunksize=4)]
    [4, 4, 2]
    """
    source = Path(path)
    fmt = _format_of(source, format)
    check_count(chunksize, minimum=1, name="chunksize")
    if not source.exists():
        raise FileNotFoundError(f"no such file: {source}")
    for chunk, _ in _raw_chunks(source, fmt, chunksize, columns, dict(read_kwargs)):
        yield optimize_dataframe(chunk).frame


def read_optimized(
    path: str | Path,
    *,
    chunksize: int = DEFAULT_CHUNKSIZE,
    columns: list[str] | None = None,
    memory_limit: int | None = None,
    progress: bool = True,
    format: str | None = None,
    **read_kwargs: Any,
) -> pd.DataFrame:
    """Read a CSV, Parquet, Feather or Excel file into an optimized frame, chunk by chunk.

    Parameters
    ----------
    path : str or Path
        The file; its suffix gives the format unless ``format`` does.
    chunksize : int
        Rows read at a time: peak memory is about the optimized result plus one raw chunk.
    columns : list of str, optional
        Only these columns.
    memory_limit : int, optional
        Stop with a MemoryError once the optimized chunks exceed this many bytes.
    progress : bool
        Show a progress bar (tqdm.auto: a widget in notebooks, text elsewhere).
    format : {"csv", "parquet", "feather", "excel"}, optional
        Overrides the suffix.
    **read_kwargs
        Passed to ``pandas.read_csv`` or ``pandas.read_excel`` (``sep``, ``encoding``…).

    Examples
    --------
    >>> import pandas as pd, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "x.csv")
    >>> pd.DataFrame({"zip": ["02134", "10001"], "n": [1, 300]}).to_csv(path, index=False)
    >>> frame = read_optimized(path, progress=False)
    >>> frame["zip"].tolist(), str(frame["n"].dtype)
    (['02134', '10001'], 'uint16')
    """
    source = Path(path)
    fmt = _format_of(source, format)
    check_count(chunksize, minimum=1, name="chunksize")
    if memory_limit is not None and memory_limit <= 0:
        raise ValueError(f"memory_limit must be positive, got {memory_limit}")
    if not source.exists():
        raise FileNotFoundError(f"no such file: {source}")
    bar = _progress_bar(source.name) if progress else None
    results = []
    held = 0
    try:
        for chunk, share in _raw_chunks(source, fmt, chunksize, columns, dict(read_kwargs)):
            result = optimize_dataframe(chunk)
            results.append(result)
            held += result.bytes_after
            if memory_limit is not None and held > memory_limit:
                raise MemoryError(
                    f"{source.name}: the optimized rows read so far take {format_bytes(held)}, "
                    f"over memory_limit={format_bytes(memory_limit)}; use iter_optimized() to "
                    "stream it, or read fewer columns")
            if bar is not None:
                bar.n = round(100 * share, 1)
                bar.set_postfix_str(f"{format_bytes(held)} optimized", refresh=False)
                bar.refresh()
    finally:
        if bar is not None:
            bar.close()
    if not results:
        import pandas as pd

        empty: pd.DataFrame = pd.DataFrame(columns=columns or [])
        return empty
    return _unify(results)


def _progress_bar(name: str) -> Any:
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    return tqdm(total=100, desc=f"reading {name}", unit="%", bar_format=(
        "{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining} {postfix}"))
