"""Reading files chunk by chunk into optimized frames: peak ≈ the result plus one chunk.

CSV is read as text (:mod:`meno_jupyter.core.loader_csv`) and parsed only where parsing loses
nothing: integers without leading zeros or signs (so ``"02134"`` stays text) that fit int64
or uint64 (larger ones stay text, as pandas keeps them), plain decimal numbers,
``True``/``False``. The first chunk is optimized (:func:`optimize_dataframe`) and its dtypes
are the plan: each later chunk is converted to them where its values fit (a range check, a
bit comparison, text looked up in the categories: a CSV column that is text so far is not
parsed at all), and only the columns that do not fit are optimized afresh. At the end
the chunks' dtypes are unified by exact widening (uint8 + int16 → int16, int + float →
float64, categories united), one column at a time so that the chunks' copy of a column is
let go as soon as the result has it; a column whose chunks disagree in kind falls back to
Arrow text. Parquet is read a row group's batches at a time, Arrow IPC/Feather a record
batch at a time (compressed too), JSON lines and Excel (openpyxl's read-only mode) a chunk
of rows at a time.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from meno_jupyter.core.cleanup import give_back_freed_memory, trim_allocator
from meno_jupyter.core.dataframe import (
    _astype_back,
    _like,
    _same_bits,
    _smallest_int,
    nullable_dtype,
    optimize_dataframe,
)
from meno_jupyter.core.errors import check_count
from meno_jupyter.core.loader_csv import NA_STRINGS, CsvOptions, CsvStream, memory_pool
from meno_jupyter.core.memory import format_bytes

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_CHUNKSIZE = 100_000
# Without a chunksize, a chunk is about this much of the file: optimizing a chunk makes
# temporaries (Python strings, categories, copies) several times its size, so rows are
# counted in bytes, not in a fixed number (measured: 2 MiB chunks of an 88-byte-row CSV
# peaked ~50 MiB above the start, 100,000-row ones ~110 MiB).
CHUNK_BYTES = 2 * 2**20
MIN_AUTO_ROWS = 1_000
COMPACT_BYTES = 16 * 2**20
FORMATS = {".csv": "csv", ".tsv": "csv", ".txt": "csv", ".parquet": "parquet", ".pq": "parquet",
           ".feather": "feather", ".arrow": "feather", ".ipc": "feather", ".xlsx": "excel",
           ".xls": "excel", ".jsonl": "json", ".ndjson": "json"}
__all__ = ["NA_STRINGS", "ChunkInfo", "iter_optimized", "parse_text_array",
           "parse_text_column", "preview", "read_optimized"]
_INTEGER = re.compile(r"-?(0|[1-9][0-9]*)")
_DECIMAL = re.compile(r"-?(0|[1-9][0-9]*)?(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_LEADING_ZERO = re.compile(r"-?0[0-9]+(\.[0-9]*)?")
_INFINITY = r"[-+]?(?i:inf|infinity)"  # as pandas reads them


def _format_of(path: Path, fmt: str | None) -> str:
    if fmt is not None:
        if fmt not in set(FORMATS.values()):
            raise ValueError(f"format must be one of {sorted(set(FORMATS.values()))}, got {fmt}")
        return fmt
    try:
        return FORMATS[path.suffix.lower()]
    except KeyError:
        raise ValueError(f"cannot tell the format of {path.name}: pass format='csv', "
                         "'parquet', 'feather', 'json' (JSON lines) or 'excel'") from None


def parse_text_array(array: Any) -> Any:
    """Parse an Arrow string array into numbers or booleans only where no value changes.

    Integers must be written without leading zeros or signs (``"02134"`` stays text) and
    fit int64 or uint64: a 20-digit id stays text (as float64 two ids could compare equal);
    decimals plainly; ``True``/``False`` become booleans. Checks and casts run in Arrow.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    present = len(array) - array.null_count
    if not present:
        return array
    pool = memory_pool()

    head = array.slice(0, 64)
    head_present = len(head) - head.null_count

    def every(pattern: str) -> bool:
        # The first rows first: a text column fails there, without a pass over all of it.
        for part, count in ((head, head_present), (array, present)):
            matched = pc.match_substring_regex(part, pattern, memory_pool=pool)
            if pc.sum(matched, memory_pool=pool).as_py() != count:
                return False
        return True

    def some(pattern: str) -> bool:
        matched = pc.match_substring_regex(array, pattern, memory_pool=pool)
        return bool(pc.any(matched, memory_pool=pool).as_py())

    if every(f"^{_INTEGER.pattern}$"):
        for integer in (pa.int64(), pa.uint64()):
            try:
                return pc.cast(array, integer, memory_pool=pool)
            except pa.ArrowInvalid:  # beyond this type
                continue
        return array  # beyond uint64: exact only as text
    if every(f"^(?:{_DECIMAL.pattern}|{_INFINITY})$") and not some(
            f"^(?:{_LEADING_ZERO.pattern}|-|\\.|)$"):
        return pc.cast(array, pa.float64(), memory_pool=pool)
    if every("^(True|False)$"):
        return pc.equal(array, "True", memory_pool=pool)
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
    if array.null_count and (pa.types.is_integer(array.type) or pa.types.is_boolean(array.type)):
        # Values and missing marks straight from Arrow: no Python object per value.
        missing = array.is_null().to_numpy(zero_copy_only=False)
        values = array.fill_null(False if pa.types.is_boolean(array.type) else 0).to_numpy(
            zero_copy_only=False)
        masked = (pd.arrays.BooleanArray if pa.types.is_boolean(array.type)
                  else pd.arrays.IntegerArray)(values, missing)
        out = pd.Series(masked, index=index, copy=False)
    else:
        out = pd.Series(array.to_numpy(zero_copy_only=False), index=index)
    return out


@dataclass
class ChunkInfo:
    """Where a chunk came from: ``frame.attrs["meno"]`` of each chunk ``iter_optimized`` yields.

    Attributes
    ----------
    rows_before : int
        Rows of the file before this chunk.
    rows : int
        Rows in this chunk.
    bytes_read, bytes_total : int
        How much of the file has been read so far, of its size.
    """

    rows_before: int
    rows: int
    bytes_read: int
    bytes_total: int

    @property
    def share(self) -> float:
        """The share of the file read so far (0 to 1)."""
        return min(1.0, self.bytes_read / max(self.bytes_total, 1))


@dataclass
class _RawChunk:
    frame: pd.DataFrame
    bytes_read: int
    keep: set[str] = field(default_factory=set)  # columns whose dtype the user chose


def _parse_table(table: Any, options: CsvOptions | None = None,
                 as_written: Collection[Any] = ()) -> tuple[pd.DataFrame, set[str]]:
    """Turn a table of text columns into a frame; return it and the columns not to optimize.

    Columns in ``as_written`` (text in the chunks before) are not parsed.
    """
    import pandas as pd

    index = pd.RangeIndex(table.num_rows)
    data = {}
    keep: set[str] = set()
    dtypes = (options.dtype or {}) if options is not None else {}
    dates = set(options.parse_dates) if options is not None else set()
    for name, column in zip(table.column_names, table.columns, strict=True):
        array = column.combine_chunks(memory_pool=memory_pool())
        chosen = dtypes.get(name, dtypes.get("*"))
        if chosen is not None:
            text = pd.Series(array.to_numpy(zero_copy_only=False), index=index, dtype=object)
            try:
                data[name] = text.astype(chosen)
            except (TypeError, ValueError) as error:
                raise ValueError(f"column {name!r} cannot be read as dtype {chosen!r}: "
                                 f"{error}") from None
            keep.add(name)
            continue
        if name in dates:
            text = pd.Series(array.to_numpy(zero_copy_only=False), index=index, dtype=object)
            data[name] = pd.to_datetime(text)
            continue
        parsed = array if name in as_written else parse_text_array(array)
        if parsed is array:  # text stays in Arrow: compact, and no Python object per value
            data[name] = pd.Series(pd.arrays.ArrowExtensionArray(array), index=index)
        else:
            data[name] = _arrow_to_pandas(parsed, index)
    frame: pd.DataFrame = pd.DataFrame(data, index=index)
    return frame, keep


def _csv_chunks(path: Path, chunksize: int, columns: list[str] | None,
                read_kwargs: dict[str, Any], text: Collection[Any] = ()) -> Iterator[_RawChunk]:
    options = CsvOptions.from_kwargs(path, columns, read_kwargs)
    stream = CsvStream(path, options, chunksize)
    for table in stream.tables():
        frame, keep = _parse_table(table, options, text)  # ``text`` as it is by then
        yield _RawChunk(frame, stream.bytes_read, keep)


def _parquet_chunks(path: Path, chunksize: int, columns: list[str] | None
                    ) -> Iterator[_RawChunk]:
    import pyarrow.parquet as pq

    size = path.stat().st_size
    # One thread and no pre-buffering: each decodes a whole row group's columns at once.
    with pq.ParquetFile(path, pre_buffer=False) as parquet:
        total = max(parquet.metadata.num_rows, 1)
        done = 0
        for batch in parquet.iter_batches(batch_size=chunksize, columns=columns,
                                          use_threads=False):
            done += batch.num_rows
            yield _RawChunk(batch.to_pandas(), size * done // total)


def _ipc_chunks(path: Path, chunksize: int, columns: list[str] | None) -> Iterator[_RawChunk]:
    """Read Arrow IPC (Feather v2) a record batch at a time, read (and decompressed) on demand.

    A plain file, not a memory map: mapped pages of a large file would count as resident.
    """
    import pyarrow as pa

    size = path.stat().st_size
    with pa.OSFile(str(path), "r") as stream:
        try:
            reader = pa.ipc.open_file(stream)
        except pa.ArrowInvalid:
            yield from _feather_v1_chunks(path, chunksize, columns)
            return
        names = reader.schema.names
        missing = [c for c in columns or [] if c not in names]
        if missing:
            raise ValueError(f"no such column(s) in {path.name}: {', '.join(missing)}")
        for i in range(reader.num_record_batches):
            batch = reader.get_batch(i)
            if columns is not None:
                batch = batch.select(columns)
            for offset in range(0, batch.num_rows, chunksize):
                piece = batch.slice(offset, chunksize)
                read = size * (i + (offset + piece.num_rows) / max(batch.num_rows, 1))
                yield _RawChunk(piece.to_pandas(), int(read / reader.num_record_batches))


def _feather_v1_chunks(path: Path, chunksize: int, columns: list[str] | None
                       ) -> Iterator[_RawChunk]:
    from pyarrow import feather

    table = feather.read_table(path, columns=columns, memory_map=False)  # v1: no batches
    size = path.stat().st_size
    for offset in range(0, table.num_rows, chunksize):
        piece = table.slice(offset, chunksize)
        yield _RawChunk(piece.to_pandas(), size * (offset + piece.num_rows) // max(
            table.num_rows, 1))


def _json_chunks(path: Path, chunksize: int, columns: list[str] | None,
                 read_kwargs: dict[str, Any]) -> Iterator[_RawChunk]:
    """Read JSON lines through pandas' own chunked reader: the values read_json gives."""
    import pandas as pd

    unknown = sorted(set(read_kwargs) - {"encoding", "nrows", "dtype"})
    if unknown:
        raise TypeError(f"unsupported JSON lines option(s): {', '.join(unknown)} (the loader "
                        "takes encoding, nrows and dtype)")
    size = max(path.stat().st_size, 1)
    with open(path, "rb") as handle:
        reader = pd.read_json(handle, lines=True, chunksize=chunksize, **read_kwargs)
        with reader:
            for read in reader:
                if columns is not None:
                    missing = [c for c in columns if c not in read.columns]
                    if missing:
                        raise ValueError(f"no such column(s) in {path.name}: "
                                         f"{', '.join(missing)}")
                    read = read[columns]  # noqa: PLW2901 - the same rows, fewer columns
                yield _RawChunk(read.reset_index(drop=True), min(size, handle.tell()))


def _excel_chunks(path: Path, chunksize: int, columns: list[str] | None,
                  read_kwargs: dict[str, Any]) -> Iterator[_RawChunk]:
    """Read an .xlsx sheet in openpyxl's read-only mode: rows streamed, a chunk at a time.

    Cells keep their types as pandas.read_excel gives them (an integral float becomes an
    int, as pandas does); text is then parsed as for CSV. ``.xls`` (xlrd) is read whole.
    """
    import pandas as pd

    unknown = sorted(set(read_kwargs) - {"sheet_name"})
    if unknown:
        raise TypeError(f"unsupported Excel option(s): {', '.join(unknown)} (the loader takes "
                        "sheet_name)")
    if path.suffix.lower() == ".xls":
        frame = pd.read_excel(path, usecols=columns, dtype=object, **read_kwargs)
        frame = frame.apply(parse_text_column)
        size = path.stat().st_size
        rows = max(len(frame), 1)
        for start in range(0, rows, chunksize):
            yield _RawChunk(frame.iloc[start:start + chunksize].reset_index(drop=True),
                            size * min(rows, start + chunksize) // rows)
        return
    try:
        import openpyxl
    except ImportError as error:
        raise ImportError(f"reading Excel needs openpyxl: pip install openpyxl ({error})"
                          ) from None
    from meno_jupyter.core.loader_csv import mangle_names

    book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    try:
        sheet_name = read_kwargs.get("sheet_name", 0)
        sheet = (book.worksheets[sheet_name] if isinstance(sheet_name, int)
                 else book[sheet_name])
        rows = sheet.iter_rows(values_only=True)
        header = next(rows, None)
        if header is None:
            return
        names = mangle_names(["" if v is None else str(v) for v in header])
        wanted = columns or names
        missing = [c for c in wanted if c not in names]
        if missing:
            raise ValueError(f"no such column(s) in {path.name}: {', '.join(missing)}")
        positions = [names.index(c) for c in wanted]
        total = max(sheet.max_row or 1, 1)
        size = path.stat().st_size
        block: list[tuple[Any, ...]] = []
        seen = 1
        for row in rows:
            seen += 1
            block.append(row)
            if len(block) == chunksize:
                yield _RawChunk(_excel_frame(block, wanted, positions),
                                size * min(seen, total) // total)
                block = []
        if block:
            yield _RawChunk(_excel_frame(block, wanted, positions), size)
    finally:
        book.close()


def _excel_value(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)  # as pandas' openpyxl reader does
    return value


def _excel_frame(block: list[tuple[Any, ...]], names: list[str],
                 positions: list[int]) -> pd.DataFrame:
    import pandas as pd

    data = {}
    for name, position in zip(names, positions, strict=True):
        values = [_excel_value(row[position]) if position < len(row) else None
                  for row in block]
        data[name] = parse_text_column(pd.Series(values, dtype=object)) if any(
            isinstance(v, str) for v in values) else pd.Series(values, dtype=object).infer_objects()
    frame: pd.DataFrame = pd.DataFrame(data)
    return frame


def _raw_chunks(path: Path, fmt: str, chunksize: int, columns: list[str] | None,
                read_kwargs: dict[str, Any], *, text: Collection[Any] = ()
                ) -> Iterator[_RawChunk]:
    """Yield the file's chunks as read, before optimizing (CSV's ``text`` columns unparsed)."""
    if fmt == "csv":
        yield from _csv_chunks(path, chunksize, columns, read_kwargs, text)
        return
    if fmt in ("parquet", "feather") and read_kwargs:
        raise TypeError(f"unsupported {fmt} option(s): {', '.join(sorted(read_kwargs))} "
                        "(only columns= is taken)")
    if fmt == "parquet":
        yield from _parquet_chunks(path, chunksize, columns)
    elif fmt == "feather":
        yield from _ipc_chunks(path, chunksize, columns)
    elif fmt == "json":
        yield from _json_chunks(path, chunksize, columns, read_kwargs)
    else:
        yield from _excel_chunks(path, chunksize, columns, read_kwargs)


@dataclass
class _Part:
    """A run of rows of one column: its values, and how to get them back as they were read."""

    series: pd.Series
    restore: Callable[[pd.Series], pd.Series] | None = None  # None: as they are

    def as_read(self) -> pd.Series:
        return self.series if self.restore is None else self.restore(self.series)


class _Plan:
    """Each column's dtype so far, to which the next chunk is converted when its values fit.

    Deciding a column's type once costs each later chunk a check (a range, a bit comparison,
    the text looked up in the categories) instead of optimizing it afresh, and chunks of one
    dtype join without recoding. A chunk that does not fit is optimized as before. ``text``
    holds the columns that are text so far: a CSV's chunks leave them unparsed, as written.
    """

    def __init__(self) -> None:
        self.dtypes: dict[Any, Any] = {}
        self.text: set[Any] = set()
        self._value_sets: dict[Any, tuple[Any, Any]] = {}  # a category's values, in Arrow

    def note(self, column: Any, series: pd.Series) -> None:
        """Take ``series``' dtype as the column's, unless it holds no value to go by."""
        import pandas as pd

        dtype = series.dtype
        if _same_dtype(self.dtypes.get(column), dtype) or not series.notna().any():
            return
        self.dtypes[column] = dtype
        strings = isinstance(dtype, pd.ArrowDtype) and _arrow_strings(series) is not None
        if strings or (isinstance(dtype, pd.CategoricalDtype)
                       and dtype.categories.inferred_type == "string"):
            self.text.add(column)
        else:
            self.text.discard(column)

    def as_text(self, column: Any) -> None:
        """Keep the column's next chunks as written (it will be read again as text)."""
        import pandas as pd
        import pyarrow as pa

        self.dtypes[column] = pd.ArrowDtype(pa.string())
        self.text.add(column)

    def fit(self, column: Any, series: pd.Series) -> pd.Series | None:
        """Return ``series`` as the column's dtype (widened if need be), or None if it does not fit.

        Every value is kept: integers are range-checked, floats narrowed only when they widen
        back bit for bit, text coded only with categories equal to it.
        """
        import pandas as pd

        target = self.dtypes.get(column)
        if target is None or isinstance(target, pd.SparseDtype):
            return None
        if isinstance(target, pd.CategoricalDtype):
            return self._coded(column, series, target)
        if isinstance(target, pd.ArrowDtype):
            return series if column in self.text and _arrow_strings(series) is not None else None
        return _fitted_number(series, target)

    def _coded(self, column: Any, series: pd.Series, target: Any) -> pd.Series | None:
        """Code Arrow text in the column's categories, adding the chunk's new values."""
        import pandas as pd
        import pyarrow as pa
        import pyarrow.compute as pc

        arrow = _arrow_strings(series)
        if arrow is None:
            return None
        cached = self._value_sets.get(column)
        if cached is not None and _same_dtype(cached[0], target):
            values = cached[1]
        else:
            values = _arrow_categories(target.categories)
            if values is None:  # categories that are not all text
                return None
        encoded, code_of = _distinct_codes(arrow, values)
        distinct = encoded.dictionary
        unknown = np.flatnonzero(code_of < 0)
        if len(unknown):  # values the categories do not have yet: added, in order
            if len(values) + len(unknown) > MAX_CATEGORIES or 2 * len(unknown) > len(series):
                return None
            new = distinct.take(pa.array(unknown))
            order = pc.array_sort_indices(new).to_numpy()
            code_of[unknown[order]] = len(values) + np.arange(len(unknown))
            new = new.take(pa.array(order))
            target = _category(target.categories.append(
                pd.Index(new.to_pylist(), dtype=target.categories.dtype)))
            values = pa.concat_arrays([values, new])
            self.dtypes[column] = target
        self._value_sets[column] = (target, values)
        return _from_codes(_row_codes(encoded, code_of), target, series)


def _fitted_number(series: pd.Series, target: Any) -> pd.Series | None:
    """Return numbers or booleans as ``target``'s kind, exactly, or None if they do not fit."""
    wanted = target if isinstance(target, np.dtype) else getattr(target, "numpy_dtype", None)
    given = series.dtype
    plain = isinstance(given, np.dtype)
    have = given if plain else getattr(given, "numpy_dtype", None)
    fitted: pd.Series | None = None
    if wanted is None or have is None:
        pass
    elif wanted.kind in "iu" and have.kind in "iu":
        present = series.to_numpy() if plain else series.dropna().to_numpy()
        bounds = np.iinfo(wanted)
        wide = _smallest_int(min(int(present.min()), int(bounds.min)),
                             max(int(present.max()), int(bounds.max))) if len(present) else None
        if wide is not None:
            fitted = series.astype(wide if plain else nullable_dtype(wide))
    elif wanted.kind == "f" and plain and given == np.float64:
        if wanted.itemsize == 8:
            fitted = series
        else:
            values = series.to_numpy()
            narrowed = values.astype(np.float32)
            fitted = _like(narrowed, series) if _same_bits(narrowed, values) else None
    elif wanted.kind == "b" and have.kind == "b":
        fitted = series
    return fitted


def _same_dtype(known: Any, dtype: Any) -> bool:
    """Whether ``dtype`` is ``known`` (a category: the same categories object, not compared)."""
    import pandas as pd

    if known is dtype:
        return True
    return (isinstance(known, pd.CategoricalDtype) and isinstance(dtype, pd.CategoricalDtype)
            and known.categories is dtype.categories and known.ordered == dtype.ordered)


def _distinct_codes(arrow: Any, values: Any) -> tuple[Any, np.ndarray]:
    """Dictionary-encode Arrow text; return it and each distinct value's place in ``values``.

    The chunk's distinct values are looked for, not each row, and the hash table is built
    of them, not of the (many) ``values``. A value ``values`` lacks gets -1.
    """
    import pyarrow.compute as pc

    if arrow.type != values.type:  # string and large_string
        arrow = arrow.cast(values.type)
    encoded = pc.dictionary_encode(arrow.combine_chunks())
    found = pc.index_in(values, value_set=encoded.dictionary)  # each value's place in the chunk's
    code_of = np.full(len(encoded.dictionary), -1, dtype=np.int64)
    code_of[found.drop_null().to_numpy()] = np.flatnonzero(
        found.is_valid().to_numpy(zero_copy_only=False))
    return encoded, code_of


def _row_codes(encoded: Any, code_of: np.ndarray) -> np.ndarray:
    """Each row's code, from its distinct value's (-1 where the row is missing)."""
    with_missing = np.append(code_of, -1)  # a missing row points past the distinct values
    codes: np.ndarray = with_missing[
        encoded.indices.fill_null(len(code_of)).to_numpy(zero_copy_only=False)]
    return codes


def _from_codes(codes: np.ndarray, target: Any, series: pd.Series) -> pd.Series:
    """Codes (-1: missing) as a categorical of ``target``, on ``series``' index."""
    import pandas as pd

    filled = codes.astype(np.min_scalar_type(-max(len(target.categories), 1)), copy=False)
    coded: pd.Series = pd.Series(pd.Categorical.from_codes(filled, dtype=target),
                                 index=series.index, name=series.name, copy=False)
    return coded


def _optimized(chunk: _RawChunk, plan: _Plan | None = None
               ) -> tuple[pd.DataFrame, dict[Any, _Part]]:
    """Optimize a chunk, leaving the columns whose dtype the user chose as they are.

    With a ``plan``, a column whose values fit its dtype so far is converted to it; the
    others are optimized afresh, and the plan takes the chunk's dtypes. Returns the
    optimized frame and its columns as parts; neither holds the raw chunk.
    """
    import pandas as pd

    raw = chunk.frame
    parts: dict[Any, _Part] = {}
    fresh = []
    for column, series in raw.items():
        fitted = series if column in chunk.keep else (
            None if plan is None else plan.fit(column, series))
        if fitted is None:
            fresh.append(column)
        else:
            parts[column] = _Part(fitted, None if fitted is series
                                  else _astype_back(series.dtype))
    if fresh:
        result = optimize_dataframe(raw if len(fresh) == raw.shape[1] else raw[fresh])
        for column in fresh:
            parts[column] = _Part(result.frame[column], result.restorer(column))
    parts = {column: parts[column] for column in raw.columns}
    if plan is not None:
        for column, part in parts.items():
            plan.note(column, part.series)
    frame: pd.DataFrame = pd.DataFrame({c: p.series for c, p in parts.items()},
                                       index=raw.index, columns=raw.columns, copy=False)
    return frame, parts


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
    if any(d.kind == "b" for d in numeric) and not all(d.kind == "b" for d in numeric):
        return None  # True beside numbers would become 1: the text is the value
    widest = np.result_type(*numeric)
    if widest.kind == "f" and any(d.kind in "iu" and d.itemsize >= 4 for d in numeric):
        widest = np.dtype(np.float64)  # int32/int64 are not all exact in float32
    if nullable and widest.kind in "iub":
        return nullable_dtype(widest)
    return widest


def _is_text(dtype: Any) -> bool:
    import pandas as pd

    return isinstance(dtype, pd.CategoricalDtype) or bool(pd.api.types.is_string_dtype(dtype))


# Distinct values counted across a file's chunks before its text is kept as text instead of
# a category: counting them all would cost more than the column (a unique id per row).
MAX_CATEGORIES = 100_000


def _arrow_strings(series: pd.Series) -> Any | None:
    """Return a series' values as an Arrow chunked array of strings, or None if they are not."""
    import pandas as pd
    import pyarrow as pa

    if isinstance(series.dtype, pd.CategoricalDtype) or not hasattr(series.array,
                                                                     "__arrow_array__"):
        return None
    try:
        values = series.array.__arrow_array__()
    except (TypeError, ValueError, pa.ArrowException):
        return None
    if not isinstance(values, pa.ChunkedArray):
        values = pa.chunked_array([values])
    return values if pa.types.is_string(values.type) or pa.types.is_large_string(
        values.type) else None


def _text_dtype(columns: list[pd.Series]) -> Any:
    """Return a category of the chunks' values when they are few, else Arrow strings.

    Few: at most half the rows and at most ``MAX_CATEGORIES``; the count stops there, so a
    column of unique strings never builds a set of them all. Arrow strings are counted in
    Arrow (no Python string per row).
    """
    import pyarrow as pa

    try:
        return _count_text(columns)
    finally:
        # Arrow's allocator keeps what the hash tables used: give it back to the system.
        pa.default_memory_pool().release_unused()


def _count_text(columns: list[pd.Series]) -> Any:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    rows = sum(len(series) for series in columns)
    limit = min(0.5 * max(rows, 1), MAX_CATEGORIES)
    values: set[Any] = set()  # distinct values that are not Arrow strings
    seen: Any = None  # the distinct Arrow strings so far
    counted: list[Any] = []  # categories already counted (parts often share them)
    for series in columns:
        arrow = _arrow_strings(series)
        if arrow is None and isinstance(series.dtype, pd.CategoricalDtype):
            categories = series.cat.categories
            if any(categories is done for done in counted):
                continue
            counted.append(categories)
            arrow = _arrow_categories(categories)
            if arrow is None:
                values.update(categories.tolist())
        elif arrow is None:
            values.update(series.dropna().unique().tolist())
        if arrow is not None:
            distinct = pc.unique(arrow).drop_null()
            seen = distinct if seen is None else pc.unique(pa.concat_arrays(
                [seen, distinct.cast(seen.type)]))
        if len(values) + (0 if seen is None else len(seen)) > limit:
            return pd.ArrowDtype(pa.string())
    if seen is not None and values:
        values.update(seen.to_pylist())
        if len(values) > limit:
            return pd.ArrowDtype(pa.string())
    elif seen is not None:  # all text: sorted in Arrow (code point order, as Python's)
        # Arrow's own conversion: pandas 3 keeps the strings in Arrow (no Python string each).
        return _category(pd.Index(seen.take(pc.array_sort_indices(seen)).to_pandas()))
    return _category(pd.Index(sorted(values, key=str)))


def _arrow_categories(categories: pd.Index) -> Any | None:
    """Return text categories as an Arrow string array, or None if they are not all text."""
    import pyarrow as pa

    if categories.inferred_type != "string":
        return None
    try:
        if hasattr(categories.array, "__arrow_array__"):  # Arrow-backed already: no copy
            values = pa.array(categories.array)
            if isinstance(values, pa.ChunkedArray):
                values = values.combine_chunks()
            if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
                return values
        return pa.array(categories.to_numpy(dtype=object), type=pa.string())
    except (pa.ArrowException, TypeError):
        return None


def _category(categories: pd.Index) -> Any:
    """Return a category of distinct ``categories`` without pandas' uniqueness check.

    The check builds a hash table of the values (for Arrow strings, a Python string each)
    and keeps it on the index: ~6 MiB per 100,000 values, for as long as any part holds
    the dtype. The values here are distinct by construction (a set, or new values only).
    """
    import pandas as pd

    fast = getattr(pd.CategoricalDtype, "_from_fastpath", None)
    return pd.CategoricalDtype(categories) if fast is None else fast(categories, False)


def _join(parts: list[_Part], text_of: Callable[[], pd.Series] | None = None,
          *, final: bool, text_target: Any = None) -> list[_Part]:
    """Join a column's parts into one, widened to a dtype every part fits exactly.

    Parts that disagree in kind are left as they are until the end (``final``): then the
    column becomes text, read again as written by ``text_of`` (a CSV's "0" and "0.0" both
    parsed to 0.0), else each part's values as read, written as text. ``text_target`` is
    the text parts' dtype when the caller has decided it already.
    """
    import pandas as pd
    import pyarrow as pa

    if len(parts) == 1 and not final:
        return parts
    series = [part.series for part in parts]
    # A part where the column is all missing has no type of its own: it takes the others'
    # (made nullable), instead of forcing the column back to text.
    typed = [s.dtype for s in series if s.notna().any()]
    if not typed:
        target = None
    elif all(_is_text(d) for d in typed):
        target = text_target if text_target is not None else _text_dtype(series)
    else:
        target = _common_dtype(typed)
        if target is not None and len(typed) < len(series) and \
                isinstance(target, np.dtype) and target.kind in "iub":
            target = _common_dtype([*typed, pd.Int8Dtype()]) if target.kind != "b" \
                else pd.BooleanDtype()
        if target is None and not final:
            return parts  # decided at the end, on the whole column
        if target is None and text_of is not None:
            del series
            parts.clear()  # the parts go before the column is read again
            return [_Part(text_of())]
        if target is None:
            text = pd.ArrowDtype(pa.string())
            pieces = []
            for part in parts:
                original = part.as_read()
                pieces.append(original.astype(object).where(original.notna(), None)
                              .map(lambda v: v if v is None else str(v)).astype(text))
            return [_Part(pd.concat(pieces, ignore_index=True))]
    del series
    return [_Part(_concat_freeing(parts, target))]


def _worth_joining(parts: list[_Part]) -> tuple[bool, Any]:
    """Whether joining these parts now saves memory (else it only copies them).

    Numbers, booleans and dates are as small in parts as joined; text is smaller joined only
    when the parts' values together make a category. Parts that disagree in kind are joined
    (that is, found to disagree) so that a column read again is let go of early. Returns the
    answer and, for text, the dtype it was decided on (counting the values is not cheap).
    """
    import pandas as pd

    kinds = {_is_text(part.series.dtype) for part in parts if part.series.notna().any()}
    if kinds != {True}:
        return len(kinds) > 1, None
    first = parts[0].series.dtype
    if isinstance(first, pd.CategoricalDtype) and all(
            _same_dtype(first, part.series.dtype) for part in parts):
        return True, first  # coded in one category already: its codes are joined as they are
    target = _text_dtype([part.series for part in parts])
    return isinstance(target, pd.CategoricalDtype), target


# How much of a column is copied between two returns of the freed parts' pages.
GIVE_BACK_BYTES = 16 * 2**20


def _concat_freeing(parts: list[_Part], target: Any) -> pd.Series:
    """Concatenate the parts as ``target``, letting each go as soon as it is copied.

    A numpy dtype or a category is filled into one array made up front: the moment's extra
    memory is one part, not the whole column converted and then concatenated again.
    """
    import pandas as pd

    total = sum(len(part.series) for part in parts)
    if isinstance(target, (np.dtype, pd.CategoricalDtype)):
        categories = target.categories if isinstance(target, pd.CategoricalDtype) else None
        dtype: np.dtype[Any] = (np.min_scalar_type(-max(len(categories), 1))
                                if categories is not None else cast(np.dtype[Any], target))
        out = np.empty(total, dtype=dtype)
        position = 0
        value_set = None if categories is None else _arrow_categories(categories)
        copied = 0
        for index, part in enumerate(parts):
            converted = _as_dtype(part.series, target, value_set)
            values = (converted.cat.codes.to_numpy() if categories is not None
                      else converted.to_numpy())
            out[position:position + len(values)] = values
            position += len(values)
            # The part goes (an empty copy keeps its dtype: a view would keep its values).
            parts[index] = _Part(converted.iloc[:0].copy())
            copied += 8 * len(values)  # the part, and what converting it used for a moment
            del converted, values, part
            if copied > GIVE_BACK_BYTES:  # freed pages back to the system as the column grows
                trim_allocator()
                copied = 0
        filled: pd.Series = (
            pd.Series(pd.Categorical.from_codes(out, dtype=cast(Any, target)), copy=False)
            if categories is not None else pd.Series(out, copy=False))
        return filled
    if isinstance(target, pd.ArrowDtype) and all(
            isinstance(part.series.dtype, pd.ArrowDtype) for part in parts):
        import pyarrow as pa

        # Arrow strings are chunked already: the chunks are kept, not copied into one.
        chunks = [chunk for part in parts
                  for chunk in part.series.array.__arrow_array__().chunks]
        parts.clear()
        text: pd.Series = pd.Series(pd.arrays.ArrowExtensionArray(
            pa.chunked_array(chunks, type=target.pyarrow_dtype)))
        return text
    pieces = [part.series if target is None else _as_dtype(part.series, target)
              for part in parts]
    parts.clear()
    joined: pd.Series = pd.concat(pieces, ignore_index=True)
    return joined


class _Columns:
    """The optimized chunks read so far, column by column, joined in runs as they come.

    Once the chunks not yet joined hold more than ``COMPACT_BYTES`` (or a fifth of what is
    joined), each column's new parts are joined into one run: a column that is text in small
    chunks (Arrow strings, ~30 bytes a row) often becomes a category (4) in a run of many,
    and the peak stays near the result instead of the sum of the chunks. Runs already
    joined are not copied again until the end.
    """

    def __init__(self, text_of: Callable[[Any], pd.Series] | None = None,
                 plan: _Plan | None = None) -> None:
        self.parts: dict[Any, list[_Part]] = {}
        self._plan = plan  # told each run's dtype: the next chunks are converted to it
        self._runs: dict[Any, int] = {}  # how many leading parts of each column are runs
        # Columns whose parts disagree in kind, to be read again as text at the end: with a
        # way to read them again (CSV), their parts are let go of as soon as that is known.
        self._text_of = text_of
        self._read_again: set[Any] = set()
        self.rows = 0
        self.held = 0
        self._pending = 0
        self._joined = 0

    def add(self, frame: pd.DataFrame, parts: dict[Any, _Part]) -> None:
        for column, part in parts.items():
            kept = self.parts.setdefault(column, [])
            self._runs.setdefault(column, 0)
            if column not in self._read_again:
                kept.append(part)
        size = int(frame.memory_usage(deep=True).sum())
        self.rows += len(frame)
        self.held += size
        self._pending += size
        if self._pending > max(COMPACT_BYTES, self._joined // 5):
            self._join_new()

    def _join_new(self) -> None:
        for column, parts in self.parts.items():
            runs = self._runs[column]
            if column in self._read_again or len(parts) <= runs:
                continue
            if self._plan is not None:  # parts coded in the plan's category join as they are
                _share_categories(parts, self._plan.dtypes.get(column))
            worth, text_target = _worth_joining(parts[runs:])
            if not worth:
                continue
            new = _join(parts[runs:], final=False, text_target=text_target)
            if len(new) > 1 and self._text_of is not None:  # text in the end, read again
                self._read_again.add(column)
                parts.clear()
                if self._plan is not None:
                    self._plan.as_text(column)  # its next chunks are not parsed nor optimized
                continue
            parts[runs:] = new
            if len(new) == 1:  # joined: a run (parts that disagree wait for the end)
                self._runs[column] = runs + 1
                if self._plan is not None:
                    self._plan.note(column, new[0].series)
        self._joined = self.held = sum(int(p.series.memory_usage(deep=True))
                                       for parts in self.parts.values() for p in parts)
        self._pending = 0
        _give_back_freed()

    def frame(self) -> pd.DataFrame:
        """Return one frame, each column joined in turn (its parts let go of as it is)."""
        import pandas as pd

        names = list(self.parts)
        result: dict[Any, pd.Series] = {}
        for column in names:
            parts = self.parts.pop(column)
            if column in self._read_again:
                assert self._text_of is not None
                result[column] = self._text_of(column)
                continue
            read_again = None if self._text_of is None else (
                lambda c=column: self._text_of(c))  # type: ignore[misc]
            (joined,) = _join(parts, read_again, final=True)
            del parts
            result[column] = joined.series
            _give_back_freed()  # the parts' pages, before the next column is joined
        combined: pd.DataFrame = pd.DataFrame(result, columns=names, copy=False)
        return combined


def _give_back_freed() -> None:
    """Return what the allocators keep of freed memory to the system (a few ms).

    The chunks' small arrays sit between live objects in malloc's heap, and Arrow's pools
    keep freed blocks: joined columns would otherwise add to what their parts left.
    """
    memory_pool().release_unused()
    give_back_freed_memory()


def _share_categories(parts: list[_Part], target: Any) -> None:
    """Put the parts coded in the first values of ``target``'s categories in ``target`` itself.

    The plan's categories grow by appending a chunk's new values, and every part coded
    before held its own, shorter, copy of them (100,000 zip codes: ~1.3 MiB a part). The
    codes stay valid: they are rewrapped, one categories object is held for all parts.
    """
    import pandas as pd

    if not isinstance(target, pd.CategoricalDtype):
        return
    values: Any = None
    for index, part in enumerate(parts):
        dtype = part.series.dtype
        if not isinstance(dtype, pd.CategoricalDtype) or _same_dtype(target, dtype) \
                or dtype.ordered != target.ordered \
                or len(dtype.categories) > len(target.categories):
            continue
        if values is None:
            values = _arrow_categories(target.categories)
            if values is None:
                return
        own = _arrow_categories(dtype.categories)
        if own is None or not own.cast(values.type).equals(values.slice(0, len(own))):
            continue
        parts[index] = _Part(_from_codes(part.series.cat.codes.to_numpy(), target, part.series),
                             part.restore)


def _as_dtype(series: pd.Series, target: Any, value_set: Any = None) -> pd.Series:
    """``series`` as ``target``; ``value_set``: a category's text values in Arrow, if known."""
    import pandas as pd

    if str(series.dtype) == str(target) and not isinstance(target, pd.CategoricalDtype):
        return series
    if isinstance(series.dtype, pd.SparseDtype):
        series = cast(Any, series).sparse.to_dense()
    if isinstance(target, pd.CategoricalDtype):
        # Codes looked up in Arrow: no Python string per row, no index built (pandas' own
        # recoding builds a hash table of Python strings and keeps it on the categories).
        import pyarrow.compute as pc

        if value_set is None:
            value_set = _arrow_categories(target.categories)
        arrow = _arrow_strings(series)
        if value_set is not None and arrow is not None:
            return _from_codes(_row_codes(*_distinct_codes(arrow, value_set)), target, series)
        if isinstance(series.dtype, pd.CategoricalDtype):
            if series.dtype.categories is target.categories:
                return series
            old = _arrow_categories(series.cat.categories)
            if value_set is not None and old is not None:
                where = pc.index_in(old.cast(value_set.type), value_set=value_set)
                if not where.null_count:  # every old value is a category of the target
                    codes = series.cat.codes.to_numpy()
                    recoded = np.where(codes >= 0, where.to_numpy()[codes], -1)
                    return _from_codes(recoded, target, series)
    if not series.notna().any() or (isinstance(target, pd.CategoricalDtype)
                                     and series.dtype == object):
        # Through Python objects only where pandas needs them: Arrow strings become a
        # category directly (1.3 M strings as objects cost ~100 MiB for a moment).
        series = series.astype(object).where(series.notna(), None)
    converted: pd.Series = series.astype(target)
    return converted


def auto_chunksize(path: Path, kind: str) -> int:
    """Return rows per chunk so that a chunk is about ``CHUNK_BYTES`` of the file.

    Rows are measured where it is cheap: the first 256 KiB of a text file, a Parquet file's
    metadata, the first record batch of an Arrow file.
    """
    row_bytes = 0.0
    try:
        if kind in ("csv", "json"):
            with open(path, "rb") as handle:
                sample = handle.read(256 * 1024)
            lines = sample.count(b"\n")
            row_bytes = len(sample) / lines if lines else len(sample)
        elif kind == "parquet":
            import pyarrow.parquet as pq

            metadata = pq.ParquetFile(path).metadata
            size = sum(metadata.row_group(i).total_byte_size
                       for i in range(metadata.num_row_groups))
            row_bytes = size / max(metadata.num_rows, 1)
        elif kind == "feather":
            import pyarrow as pa

            with pa.OSFile(str(path), "r") as stream:
                reader = pa.ipc.open_file(stream)
                if reader.num_record_batches:
                    batch = reader.get_batch(0)
                    row_bytes = batch.nbytes / max(batch.num_rows, 1)
    except Exception:  # a guess only: reading the file says what is wrong with it
        row_bytes = 0.0
    if row_bytes <= 0:
        return DEFAULT_CHUNKSIZE if kind != "excel" else 10_000
    return int(min(DEFAULT_CHUNKSIZE, max(MIN_AUTO_ROWS, CHUNK_BYTES / row_bytes)))


def _chunks(path: str | Path, fmt: str | None, chunksize: int | None,
            columns: list[str] | None, read_kwargs: dict[str, Any], *,
            text: Collection[Any] = ()) -> Iterator[tuple[_RawChunk, ChunkInfo]]:
    """Check the arguments, then yield each raw chunk with where it came from.

    ``text``: the columns known to be text when each chunk is read (a CSV leaves them unparsed).
    """
    source = Path(path)
    kind = _format_of(source, fmt)
    if chunksize is not None:
        check_count(chunksize, minimum=1, name="chunksize")
    if columns is not None and (not isinstance(columns, (list, tuple))
                                or not all(isinstance(c, str) for c in columns)):
        raise TypeError("columns must be a list of column names")
    if not source.exists():
        raise FileNotFoundError(f"no such file: {source}")
    if not source.is_file():
        raise ValueError(f"{source} is not a regular file")
    if chunksize is None:
        chunksize = auto_chunksize(source, kind)
    total = source.stat().st_size
    rows = 0
    for chunk in _raw_chunks(source, kind, chunksize, None if columns is None else list(columns),
                             dict(read_kwargs), text=text):
        info = ChunkInfo(rows, len(chunk.frame), min(chunk.bytes_read, total), total)
        rows += len(chunk.frame)
        yield chunk, info


def iter_optimized(
    path: str | Path,
    *,
    chunksize: int | None = None,
    columns: list[str] | None = None,
    format: str | None = None,
    **read_kwargs: Any,
) -> Iterator[pd.DataFrame]:
    """Yield optimized chunks of a file, for files larger than memory.

    Memory stays flat whatever the file's size: one raw chunk (about 2 MiB of the file
    unless ``chunksize`` says how many rows) and Arrow's read-ahead (256 KiB blocks). Each
    chunk is exact; it keeps the dtypes of the chunks before where its values fit them
    (widened just enough where they do not), so chunks mostly share one schema (use
    :func:`read_optimized` for one frame with one). Each chunk's ``attrs["meno"]``
    is a :class:`ChunkInfo` (rows before it, bytes read of the file's).
    CSV takes ``sep``, ``encoding``, ``usecols``, ``dtype``, ``na_values``,
    ``keep_default_na``, ``parse_dates``, ``nrows``, ``skiprows``, ``quotechar`` as
    ``pandas.read_csv`` does; any other option is refused by name.

    Examples
    --------
    >>> import pandas as pd, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "x.csv")
    >>> pd.DataFrame({"a": range(10)}).to_csv(path, index=False)
    >>> [len(c) for c in iter_optimized(path, chunksize=4)]
    [4, 4, 2]
    >>> [c.attrs["meno"].rows_before for c in iter_optimized(path, chunksize=4)]
    [0, 4, 8]
    """
    plan = _Plan()
    for chunk, info in _chunks(path, format, chunksize, columns, read_kwargs, text=plan.text):
        frame, _ = _optimized(chunk, plan)
        frame.attrs["meno"] = info
        yield frame


def preview(path: str | Path, n: int = 1000, *, columns: list[str] | None = None,
            format: str | None = None, **read_kwargs: Any) -> pd.DataFrame:
    """Return the first ``n`` rows, optimized: a first look that reads only what it needs.

    The dtypes are those meno would choose for these rows (a later chunk may need wider
    ones); a 20 GB CSV is previewed in well under a second.

    Examples
    --------
    >>> import pandas as pd, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "x.csv")
    >>> pd.DataFrame({"zip": ["02134"] * 5000, "n": range(5000)}).to_csv(path, index=False)
    >>> first = preview(path, n=3)
    >>> len(first), first["zip"].iloc[0], str(first["n"].dtype)
    (3, '02134', 'uint8')
    """
    check_count(n, minimum=1, name="n")
    for chunk, _ in _chunks(path, format, n, columns, read_kwargs):
        frame, _ = _optimized(chunk)
        return frame
    import pandas as pd

    empty: pd.DataFrame = pd.DataFrame(columns=columns or [])
    return empty


def read_optimized(
    path: str | Path,
    *,
    chunksize: int | None = None,
    columns: list[str] | None = None,
    memory_limit: int | None = None,
    progress: bool = True,
    format: str | None = None,
    **read_kwargs: Any,
) -> pd.DataFrame:
    """Read a CSV, JSON lines, Parquet, Feather/Arrow or Excel file into an optimized frame.

    Read chunk by chunk: the peak is about the optimized result plus one raw chunk, never
    the file's full-size frame. Every value is the one ``pandas.read_csv`` (``read_json``,
    ``read_parquet``...) gives, or better: zero-padded codes stay text, integers too large
    for int64/uint64 stay exact as text.

    Parameters
    ----------
    path : str or Path
        The file; its suffix gives the format unless ``format`` does.
    chunksize : int, optional
        Rows read at a time: peak memory is about the optimized result plus one raw chunk.
        By default, as many rows as make about 2 MiB of the file (at most 100,000).
    columns : list of str, optional
        Only these columns (``usecols=`` for CSV is the same).
    memory_limit : int, optional
        Stop with a MemoryError once the optimized chunks exceed this many bytes.
    progress : bool
        Show a progress bar (tqdm.auto: a widget in notebooks, text elsewhere).
    format : {"csv", "json", "parquet", "feather", "excel"}, optional
        Overrides the suffix.
    **read_kwargs
        CSV: ``sep``, ``encoding``, ``usecols``, ``dtype``, ``na_values``,
        ``keep_default_na``, ``parse_dates``, ``nrows``, ``skiprows``, ``quotechar``, as
        ``pandas.read_csv`` takes them; JSON lines: ``encoding``, ``nrows``, ``dtype``;
        Excel: ``sheet_name``. Anything else is refused by name.

    Examples
    --------
    >>> import pandas as pd, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "x.csv")
    >>> pd.DataFrame({"zip": ["02134", "10001"], "n": [1, 300]}).to_csv(path, index=False)
    >>> frame = read_optimized(path, progress=False)
    >>> frame["zip"].tolist(), str(frame["n"].dtype)
    (['02134', '10001'], 'uint16')
    """
    if memory_limit is not None and memory_limit <= 0:
        raise ValueError(f"memory_limit must be positive, got {memory_limit}")
    source = Path(path)
    plan = _Plan()
    chunks = _chunks(source, format, chunksize, columns, read_kwargs, text=plan.text)
    text_of = None
    names = columns or []
    if _format_of(source, format) == "csv" and source.is_file():
        options = CsvOptions.from_kwargs(source, columns, dict(read_kwargs))
        names = CsvStream(source, options, DEFAULT_CHUNKSIZE).wanted

        def text_of(column: Any) -> pd.Series:
            text: pd.Series = CsvStream(source, options, DEFAULT_CHUNKSIZE).text_column(column)
            return text
    bar = _progress_bar(source.name) if progress else None
    read = _Columns(text_of, plan)
    try:
        for chunk, info in chunks:
            frame, parts = _optimized(chunk, plan)
            del chunk  # the raw chunk goes before the next is read
            read.add(frame, parts)
            del frame, parts
            if memory_limit is not None and read.held > memory_limit:
                raise MemoryError(
                    f"{source.name}: the optimized rows read so far take "
                    f"{format_bytes(read.held)}, over memory_limit="
                    f"{format_bytes(memory_limit)}; use iter_optimized() to stream it, or "
                    "read fewer columns")
            if bar is not None:
                bar.n = round(100 * info.share, 1)
                bar.set_postfix_str(f"{format_bytes(read.held)} optimized", refresh=False)
                bar.refresh()
    finally:
        if bar is not None:
            bar.close()
    if not read.parts:  # a header and no rows: its columns, no rows
        import pandas as pd

        empty: pd.DataFrame = pd.DataFrame(columns=names)
        return empty
    return read.frame()


def _progress_bar(name: str) -> Any:
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        return None
    return tqdm(total=100, desc=f"reading {name}", unit="%", bar_format=(
        "{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining} {postfix}"))
