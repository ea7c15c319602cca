"""Where documents come from: a list, a pandas Series, or a file's text column, streamed.

Files are read in batches (CSV through Arrow's streaming reader, Parquet by row groups,
JSON Lines by chunks), so a corpus larger than memory is never held at once.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

READ_BATCH_ROWS = 10_000
FILE_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq", ".jsonl", ".ndjson")


def _describe(value: object) -> str:
    text = repr(value)
    return f"a {type(value).__name__} ({text[:40]}{'…' if len(text) > 40 else ''})"


def _checked(values: Iterator[object], offset: int = 0) -> Iterator[str]:
    for position, value in enumerate(values, start=offset):
        if not isinstance(value, str):
            raise TypeError(
                f"document {position} is {_describe(value)}, not text: drop or fill "
                "missing texts (e.g. series.dropna() or .fillna('')) and convert the rest "
                "with .astype(str)")
        yield value


def _looks_like_path(source: object) -> bool:
    if isinstance(source, os.PathLike):
        return True
    return isinstance(source, str) and (Path(source).suffix.lower() in FILE_SUFFIXES
                                        or ("\n" not in source and os.path.isfile(source)))


class Documents:
    """A re-iterable corpus: ``iter()`` it as often as needed, each pass streamed.

    Parameters
    ----------
    source : list of str, pandas Series, or path
        The texts, or a CSV/TSV/Parquet/JSON Lines file.
    text_column : str, optional
        The column of a file (required for files).

    Examples
    --------
    >>> docs = Documents(["one", "two"])
    >>> list(docs.batches(1))
    [['one'], ['two']]
    """

    def __init__(self, source: Any, text_column: str | None = None) -> None:
        self.text_column = text_column
        self.path: Path | None = None
        self._sequence: Sequence[Any] | None = None
        if isinstance(source, Documents):
            self.text_column, self.path = source.text_column, source.path
            self._sequence = source._sequence
        elif _looks_like_path(source):
            self.path = Path(source)
            if not self.path.exists():
                raise FileNotFoundError(f"no such file: {self.path}")
            if self.path.suffix.lower() not in FILE_SUFFIXES:
                raise ValueError(f"{self.path.name}: read CSV, TSV, Parquet or JSON Lines "
                                 f"files ({', '.join(FILE_SUFFIXES)})")
            if text_column is None:
                raise ValueError(f"{self.path.name}: name the column that holds the texts "
                                 "with text_column=")
            self._check_column()
        elif isinstance(source, str):
            raise TypeError("documents must be a list of texts, a pandas Series or a file "
                            "path; got a single string (wrap it in a list)")
        elif isinstance(source, Sequence) or hasattr(source, "iloc"):  # list or Series
            self._sequence = source
        else:
            raise TypeError("documents must be a list of texts, a pandas Series or a file "
                            f"path; got {type(source).__name__}")

    def __iter__(self) -> Iterator[str]:
        if self._sequence is not None:
            values = (self._sequence.iloc if hasattr(self._sequence, "iloc")
                      else self._sequence)
            return _checked(iter(values[i] for i in range(len(self._sequence))))
        return _checked(self._iter_file())

    def batches(self, size: int, skip: int = 0) -> Iterator[list[str]]:
        """Yield lists of ``size`` texts (the last may be shorter), after ``skip`` texts."""
        texts = iter(self)
        if skip:
            for _ in islice(texts, skip):
                pass
        while batch := list(islice(texts, size)):
            yield batch

    # ------------------------------------------------------------------ files

    def _columns(self) -> list[str]:
        assert self.path is not None
        suffix = self.path.suffix.lower()
        if suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            return list(pq.ParquetFile(self.path).schema_arrow.names)
        if suffix in (".jsonl", ".ndjson"):
            import json

            with open(self.path) as handle:
                first = handle.readline()
            return list(json.loads(first)) if first.strip() else []
        import pyarrow.csv as pcsv

        reader = pcsv.open_csv(self.path, parse_options=self._csv_parse_options())
        return list(reader.schema.names)

    def _csv_parse_options(self) -> Any:
        import pyarrow.csv as pcsv

        assert self.path is not None
        delimiter = "\t" if self.path.suffix.lower() == ".tsv" else ","
        return pcsv.ParseOptions(delimiter=delimiter, newlines_in_values=True)

    def _check_column(self) -> None:
        columns = self._columns()
        if self.text_column not in columns:
            raise KeyError(f"{self.path}: no column {self.text_column!r}; the columns are "
                           f"{', '.join(map(repr, columns[:20]))}")

    def _iter_file(self) -> Iterator[object]:
        assert self.path is not None
        suffix = self.path.suffix.lower()
        column = self.text_column
        if suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            for batch in pq.ParquetFile(self.path).iter_batches(
                    batch_size=READ_BATCH_ROWS, columns=[column]):
                yield from batch.column(0).to_pylist()
        elif suffix in (".jsonl", ".ndjson"):
            import pandas as pd

            with pd.read_json(self.path, lines=True, chunksize=READ_BATCH_ROWS,
                              dtype=False) as reader:
                for frame in reader:
                    if column not in frame:
                        raise KeyError(f"{self.path}: a line lacks the column {column!r}")
                    yield from frame[column].tolist()
        else:
            import pyarrow as pa
            import pyarrow.csv as pcsv

            reader = pcsv.open_csv(
                self.path, parse_options=self._csv_parse_options(),
                convert_options=pcsv.ConvertOptions(include_columns=[column],
                                                    column_types={column: pa.string()}),
                read_options=pcsv.ReadOptions(block_size=1 << 22))
            for batch in reader:
                yield from batch.column(0).to_pylist()
