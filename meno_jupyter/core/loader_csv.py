"""Reading CSV text chunk by chunk in flat memory, with the values pandas would give.

Arrow's streaming reader does the work, every column read as text: its read-ahead is bounded
in bytes (a 1 MiB block), not tied to the rows of a chunk. The header is read here, so that
duplicate names get pandas' names (``a``, ``a.1``) and a UTF-8 byte-order mark is dropped.
Where Arrow cannot go on (a field larger than its block, text it cannot decode), pandas' C
reader takes over from the first row not yet read, chunk by chunk.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Arrow reads this much at a time. Its streaming reader holds blocks ahead (and their
# buffers stay with the allocator): measured, 1 MiB blocks peaked ~80 MiB, 256 KiB ~25 MiB.
READ_BLOCK_BYTES = 1 << 18

# pandas' default missing-value strings, so that reading matches pd.read_csv.
NA_STRINGS = ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan",
              "1.#IND", "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan",
              "null"]

# What read_csv options the loader takes; anything else is refused by name.
CSV_OPTIONS = ("sep", "delimiter", "encoding", "usecols", "dtype", "na_values",
               "keep_default_na", "parse_dates", "nrows", "skiprows", "quotechar")


@dataclass
class CsvOptions:
    """The read_csv options the loader understands, checked once before reading."""

    sep: str = ","
    encoding: str = "utf-8"
    columns: list[str] | None = None
    dtype: dict[str, Any] | Any = None
    null_values: list[str] = field(default_factory=lambda: list(NA_STRINGS))
    parse_dates: list[str] = field(default_factory=list)
    nrows: int | None = None
    skiprows: int = 0
    quotechar: str = '"'

    @classmethod
    def from_kwargs(cls, path: Path, columns: list[str] | None,
                    kwargs: dict[str, Any]) -> CsvOptions:
        """Check ``read_csv``-style options; ``TypeError``/``ValueError`` name what is wrong."""
        unknown = sorted(set(kwargs) - set(CSV_OPTIONS))
        if unknown:
            raise TypeError(f"unsupported CSV option(s): {', '.join(unknown)} (the loader "
                            f"takes {', '.join(CSV_OPTIONS)}; pandas.read_csv takes the rest)")
        options = cls(sep="\t" if path.suffix.lower() == ".tsv" else ",")
        sep = kwargs.get("sep", kwargs.get("delimiter"))
        if sep is not None:
            if not isinstance(sep, str) or len(sep) != 1:
                raise ValueError(f"sep must be one character (no regular expressions), got "
                                 f"{sep!r}")
            options.sep = sep
        if "encoding" in kwargs:
            options.encoding = _checked_encoding(kwargs["encoding"])
        usecols = kwargs.get("usecols")
        if usecols is not None:
            if columns is not None:
                raise TypeError("give columns= or usecols=, not both")
            if not isinstance(usecols, (list, tuple)) or not all(
                    isinstance(c, str) for c in usecols):
                raise TypeError("usecols must be a list of column names (no callables or "
                                "positions)")
            columns = list(usecols)
        options.columns = columns
        options.dtype = kwargs.get("dtype")
        if options.dtype is not None and not isinstance(options.dtype, dict):
            options.dtype = {"*": options.dtype}
        na_values = kwargs.get("na_values")
        keep_default = kwargs.get("keep_default_na", True)
        if not isinstance(keep_default, bool):
            raise TypeError("keep_default_na must be True or False")
        extra: list[str] = []
        if na_values is not None:
            if isinstance(na_values, str):
                extra = [na_values]
            elif isinstance(na_values, (list, tuple, set)) and all(
                    isinstance(v, (str, int, float)) for v in na_values):
                extra = [str(v) for v in na_values]
            else:
                raise TypeError("na_values must be a string or a list of them (no per-column "
                                "dict)")
        options.null_values = (list(NA_STRINGS) if keep_default else []) + extra
        parse_dates = kwargs.get("parse_dates")
        if parse_dates is not None:
            if not isinstance(parse_dates, (list, tuple)) or not all(
                    isinstance(c, str) for c in parse_dates):
                raise TypeError("parse_dates must be a list of column names")
            options.parse_dates = list(parse_dates)
        options.nrows = _optional_count(kwargs.get("nrows"), "nrows", minimum=0)
        options.skiprows = _optional_count(kwargs.get("skiprows"), "skiprows", minimum=0) or 0
        quotechar = kwargs.get("quotechar", '"')
        if not isinstance(quotechar, str) or len(quotechar) != 1:
            raise ValueError(f"quotechar must be one character, got {quotechar!r}")
        options.quotechar = quotechar
        return options


_POOL: list[Any] = []


def memory_pool() -> Any:
    """Return the Arrow memory pool the loader reads with: jemalloc's, else malloc's.

    Arrow's default (mimalloc) keeps what its reader threads allocated and the main thread
    freed: reading a 20 MB CSV alone peaked 32 MiB with it, 14 MiB with jemalloc, 17 MiB
    with the system allocator. Only the loader's own reads use it; the process's default
    pool is left as it is.
    """
    if not _POOL:
        import pyarrow as pa

        try:
            _POOL.append(pa.jemalloc_memory_pool())
        except (NotImplementedError, AttributeError):
            _POOL.append(pa.system_memory_pool())
    return _POOL[0]


def _checked_encoding(encoding: object) -> str:
    import codecs

    if not isinstance(encoding, str):
        raise TypeError(f"encoding must be a name such as 'latin-1', got {encoding!r}")
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise ValueError(f"unknown encoding {encoding!r}") from None
    return encoding


def _optional_count(value: object, name: str, minimum: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be a whole number (lists and callables are not taken), "
                        f"got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be {minimum} or more, got {value}")
    return value


def mangle_names(names: list[str]) -> list[str]:
    """Name columns as pandas does: empty names ``Unnamed: i``, repeats ``a.1``, ``a.2``.

    Examples
    --------
    >>> mangle_names(["a", "a", "b", "", "a"])
    ['a', 'a.1', 'b', 'Unnamed: 3', 'a.2']
    """
    counts: dict[str, int] = {}
    out = []
    for index, raw in enumerate(names):
        name = raw if raw != "" else f"Unnamed: {index}"
        count = counts.get(name, 0)
        while count > 0:
            counts[name] = count + 1
            name = f"{name}.{count}"
            count = counts.get(name, 0)
        out.append(name)
        counts[name] = count + 1
    return out


def _codec_name(encoding: str) -> str:
    import codecs

    name = codecs.lookup(encoding).name
    return "utf-8-sig" if name == "utf-8" else name  # pandas drops the BOM too


def read_header(path: Path, options: CsvOptions) -> list[str]:
    """Return the CSV's column names as pandas names them (``a.1``, ``Unnamed: 3``).

    pandas itself reads the header row (and only it): a byte-order mark, repeated or empty
    names and quoted names come out exactly as ``pandas.read_csv`` would have them.
    """
    import pandas as pd

    try:
        header = pd.read_csv(path, nrows=0, sep=options.sep, quotechar=options.quotechar,
                             skiprows=options.skiprows, encoding=_codec_name(options.encoding),
                             engine="c")
    except pd.errors.EmptyDataError:
        return []
    return [str(name) for name in header.columns]


class CsvStream:
    """Stream a CSV as Arrow tables of text columns, ``chunksize`` rows each.

    ``bytes_read`` and ``rows_read`` say how far it got; the pandas fallback keeps them.
    """

    def __init__(self, path: Path, options: CsvOptions, chunksize: int) -> None:
        self.path = path
        self.options = options
        self.chunksize = chunksize
        self.names = read_header(path, options)
        wanted = options.columns or self.names
        missing = [c for c in wanted if c not in self.names]
        if missing:
            raise ValueError(f"no such column(s) in {path.name}: {', '.join(missing)}")
        missing_dates = [c for c in options.parse_dates if c not in wanted]
        if missing_dates:
            raise ValueError(f"parse_dates names column(s) not read: "
                             f"{', '.join(missing_dates)}")
        self.wanted = list(wanted)
        self.size = max(path.stat().st_size, 1)
        self.bytes_read = 0
        self.rows_read = 0
        self.fallback_reason: str | None = None

    def tables(self) -> Iterator[Any]:
        """Yield Arrow tables of at most ``chunksize`` rows, every column as text."""
        if not self.names:
            return
        limit = self.options.nrows
        pending: list[Any] = []
        rows = 0
        try:
            for batch in self._arrow_batches():
                pending.append(batch)
                rows += batch.num_rows
                while rows >= self.chunksize or (limit is not None
                                                 and self.rows_read + rows >= limit):
                    table, pending, rows = self._take(pending, rows)
                    if table is None:
                        return
                    yield table
        except _ArrowCannotGoOnError as gave_up:
            self.fallback_reason = str(gave_up)
            yield from self._pandas_tables(pending, rows)
            return
        while rows:
            table, pending, rows = self._take(pending, rows)
            if table is None:
                return
            yield table

    def text_column(self, name: str) -> Any:
        """Read one column again, as written: an Arrow string Series of every row."""
        import pandas as pd
        import pyarrow as pa

        self.wanted = [name]
        arrays = [table.column(name) for table in self.tables()]
        column = pa.chunked_array([c for a in arrays for c in a.chunks], type=pa.string())
        return pd.Series(pd.arrays.ArrowExtensionArray(column), name=name)

    def _take(self, pending: list[Any], rows: int) -> tuple[Any, list[Any], int]:
        import pyarrow as pa

        count = min(rows, self.chunksize)
        if self.options.nrows is not None:
            count = min(count, self.options.nrows - self.rows_read)
        if count <= 0:
            return None, [], 0
        table = pa.Table.from_batches(pending, schema=pending[0].schema)
        head, rest = table.slice(0, count), table.slice(count)
        self.rows_read += head.num_rows
        # Given back here, what the last chunk freed serves the next instead of adding to it.
        memory_pool().release_unused()
        return head, rest.to_batches(), rest.num_rows

    def _arrow_batches(self) -> Iterator[Any]:
        import pyarrow as pa
        import pyarrow.csv as pacsv

        options = self.options
        # A plain file stream: given a path, Arrow may map the whole file, and mapped pages
        # count as resident memory.
        stream = pa.OSFile(str(self.path), "r")
        try:
            try:
                reader = pacsv.open_csv(
                    stream,
                    read_options=pacsv.ReadOptions(
                        block_size=READ_BLOCK_BYTES, use_threads=False,
                        column_names=self.names, skip_rows=options.skiprows + 1,
                        encoding=_arrow_encoding(options.encoding)),
                    parse_options=pacsv.ParseOptions(delimiter=options.sep,
                                                      quote_char=options.quotechar,
                                                      newlines_in_values=True),
                    convert_options=pacsv.ConvertOptions(
                        column_types={c: pa.string() for c in self.names},
                        include_columns=self.wanted, strings_can_be_null=True,
                        null_values=options.null_values),
                    memory_pool=memory_pool(),
                )
            except (pa.ArrowInvalid, pa.ArrowKeyError) as error:
                raise _ArrowCannotGoOnError(str(error)) from None
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    return
                except (pa.ArrowInvalid, pa.ArrowKeyError) as error:
                    raise _ArrowCannotGoOnError(str(error)) from None
                self.bytes_read = min(self.size, stream.tell())
                yield batch
        finally:
            stream.close()

    def _pandas_tables(self, pending: list[Any], rows: int) -> Iterator[Any]:
        """Go on with pandas' C reader from the first row Arrow did not deliver."""
        import pandas as pd
        import pyarrow as pa

        options = self.options
        start = self.rows_read + rows  # rows already in hand are kept
        remaining = None if options.nrows is None else options.nrows - start
        if pending:
            table = pa.Table.from_batches(pending)
            for offset in range(0, table.num_rows, self.chunksize):
                piece = table.slice(offset, self.chunksize)
                if options.nrows is not None:
                    piece = piece.slice(0, max(0, options.nrows - self.rows_read))
                if piece.num_rows:
                    self.rows_read += piece.num_rows
                    yield piece
        if remaining is not None and remaining <= 0:
            return
        with open(self.path, "rb") as handle:
            reader = pd.read_csv(
                handle, sep=options.sep, quotechar=options.quotechar, header=None,
                names=self.names, usecols=self.wanted, skiprows=options.skiprows + 1 + start,
                dtype=str, keep_default_na=False, na_values=options.null_values or None,
                na_filter=bool(options.null_values), encoding=_codec_name(options.encoding),
                chunksize=self.chunksize, nrows=remaining, engine="c")
            with reader:
                for frame in reader:
                    self.rows_read += len(frame)
                    self.bytes_read = min(self.size, handle.tell())
                    yield pa.Table.from_pydict({
                        name: pa.array(frame[name].to_numpy(dtype=object), type=pa.string(),
                                       from_pandas=True) for name in self.wanted})
        self.bytes_read = self.size


class _ArrowCannotGoOnError(Exception):
    """Arrow's reader cannot go on with this file (the reason is its message)."""


def _arrow_encoding(encoding: str) -> str:
    import codecs

    name = codecs.lookup(encoding).name
    return "utf8" if name in ("utf-8", "utf-8-sig") else name
