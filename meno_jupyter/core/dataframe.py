"""Lossless DataFrame and array shrinking: the smallest dtypes that keep every value.

For each column a candidate dtype is proposed (smallest integer type for the range, integral
floats to integers, float64 to float32, text to category or Arrow strings, boolean-like text
to bool, date strings to datetime64, a dominant value to sparse), and then *verified*: the
change is undone and compared with the original — values, dtype, the sign of zeros and the
kind of each missing marker (categories of Arrow strings are checked by decoding them in
Arrow, which compares the same values without building Python strings). Only changes that
pass are applied, so every result is exact unless ``aggressive`` asks for lossy float
narrowing within ``rtol``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from meno_jupyter.core.memory import format_bytes
from meno_jupyter.core.rendering import (
    RendersAsTable,
    html_table,
    text_table,
)

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_CATEGORICAL_MAX_RATIO = 0.5
DEFAULT_RTOL = 1e-6
SPARSE_MIN_SHARE = 0.9
# Sparse columns densify in many operations and read oddly (``Sparse[uint16, 2013]``): without
# ``aggressive`` one is chosen only when it saves this share of the column's original bytes
# beyond what the best dense type saves (a float column of zeros, float32 then sparse: 50 %
# more, yes; a year column that a uint16 already shrinks by 75 %: 25 % more, no).
SPARSE_MIN_EXTRA_SAVING = 1 / 3
_INT_CANDIDATES = [np.dtype(t) for t in (np.uint8, np.int8, np.uint16, np.int16, np.uint32,
                                         np.int32, np.uint64, np.int64)]
_INT_RANGES = [(t, int(np.iinfo(t).min), int(np.iinfo(t).max)) for t in _INT_CANDIDATES]
_MAX_EXACT_FLOAT_INT = 2**53
# Values checked first, before all of them: most columns that fail a test (fractions in a
# float column, a date format that does not read back) fail it on their first values.
_PROBE = 64

Restore = Callable[["pd.Series"], "pd.Series"]


@dataclass(frozen=True)
class ColumnChange:
    """What happened to one column.

    Attributes
    ----------
    exact : bool
        Every value and missing marker round-trips (False only with ``aggressive``).
    reason : str
        Why this dtype, or why the column was left alone.
    hazard : str
        What behaves differently with the new dtype ("" when nothing does).
    max_error : float or None
        The largest relative error of a lossy float narrowing.
    """

    column: str
    dtype_before: str
    dtype_after: str
    bytes_before: int
    bytes_after: int
    distinct_bytes_before: int
    exact: bool
    reason: str
    hazard: str = ""
    max_error: float | None = None

    @property
    def needs_care(self) -> bool:
        """Whether the new dtype can change results: values changed, or integers that wrap.

        Other hazards (categories refuse new values, sparse columns densify) are notes.
        """
        return not self.exact or WRAPS in self.hazard

    def to_dict(self) -> dict[str, Any]:
        """Return the fields as a plain dict."""
        return asdict(self)


def _memory(series: pd.Series) -> int:
    if isinstance(series.dtype, np.dtype) and series.dtype.kind != "O":  # no deep part to count
        return int(series.to_numpy().nbytes)
    return int(series.memory_usage(deep=True, index=False))


def _distinct_memory(series: pd.Series, deep_bytes: int) -> int:
    """Bytes counting each distinct Python object once (pandas counts it once per row)."""
    if not _is_object(series) or not len(series):
        return deep_bytes
    values = series.to_numpy()
    ids = np.fromiter(map(id, values), dtype=np.int64, count=len(values))
    _, first = np.unique(ids, return_index=True)
    if len(first) == len(values):  # no object shared between rows: pandas' count is right
        return deep_bytes
    return 8 * len(values) + sum(sys.getsizeof(values[i]) for i in first)


def _is_object(series: pd.Series) -> bool:
    import pandas as pd

    return bool(pd.api.types.is_object_dtype(series.dtype))


def _missing_kind(series: pd.Series) -> str | None:
    """Return the kind of missing marker of an object column: none, nan, na, or mixed."""
    values = series[series.isna()].to_numpy()
    if not len(values):
        return None
    import pandas as pd

    kinds = {("none" if v is None else "na" if v is pd.NA else "nan") for v in values}
    return kinds.pop() if len(kinds) == 1 else "mixed"


def _fill_missing(series: pd.Series, kind: str | None) -> pd.Series:
    if kind is None:
        return series
    import pandas as pd

    marker = {"none": None, "nan": np.nan, "na": pd.NA}[kind]
    out = series.astype(object)
    out[series.isna()] = marker
    return out


def identical(a: pd.Series, b: pd.Series) -> bool:
    """Whether two Series hold the same values, dtype, zero signs and missing-marker kinds.

    numpy floats are compared bit for bit: the sign of a zero and a NaN's payload too.
    """
    if a.dtype != b.dtype or len(a) != len(b) or not a.index.equals(b.index):
        return False
    if not a.equals(b):
        return False
    if isinstance(a.dtype, np.dtype) and a.dtype.kind == "f":
        unsigned = np.dtype(f"u{a.dtype.itemsize}")
        return bool(np.array_equal(a.to_numpy().view(unsigned), b.to_numpy().view(unsigned)))
    if a.dtype.kind == "f":
        return bool(np.array_equal(np.signbit(a.to_numpy()), np.signbit(b.to_numpy())))
    if _is_object(a):
        mask = a.isna().to_numpy()
        if mask.any():
            kinds_a = [type(v) for v in a.to_numpy()[mask]]
            kinds_b = [type(v) for v in b.to_numpy()[mask]]
            return kinds_a == kinds_b
    return True


def _smallest_int(low: int, high: int) -> np.dtype[Any] | None:
    for dtype, smallest, largest in _INT_RANGES:
        if smallest <= low and high <= largest:
            return dtype
    return None


def nullable_dtype(dtype: np.dtype[Any]) -> Any:
    """Return pandas' nullable counterpart of a numpy int, uint or bool dtype (uint8 → UInt8)."""
    import pandas as pd

    if dtype.kind == "b":
        return pd.BooleanDtype()
    return pd.api.types.pandas_dtype(dtype.name.capitalize().replace("Ui", "UI"))


WRAPS = "wraps on arithmetic"


def _int_hazard(dtype: np.dtype[Any]) -> str:
    info = np.iinfo(dtype)
    if dtype.kind == "u":
        return f"{dtype.name} {WRAPS}: 0 - 1 gives {info.max}"
    if dtype.itemsize < 8:
        return f"{dtype.name} {WRAPS} past {info.max} (e.g. int8 100 + 120 = -16)"
    return ""


# --------------------------------------------------------------------------- candidates


@dataclass
class _Candidate:
    series: pd.Series
    restore: Restore
    reason: str
    hazard: str = ""
    exact: bool = True
    max_error: float | None = None
    # A test equal to "restore gives the original back", cheaper than restoring (None: restore).
    round_trips: Callable[[pd.Series], bool] | None = None
    _nbytes: int | None = field(default=None, repr=False)

    @property
    def nbytes(self) -> int:
        """Count the candidate column's bytes as pandas' deep count does (once)."""
        if self._nbytes is None:
            self._nbytes = _memory(self.series)
        return self._nbytes

    def keeps_every_value_of(self, original: pd.Series) -> bool:
        """Whether undoing the change gives ``original`` back exactly."""
        if self.round_trips is not None:
            return self.round_trips(original)
        return identical(self.restore(self.series), original)


def _astype_back(dtype: Any) -> Restore:
    return lambda s: s.astype(dtype)


def _like(values: Any, series: pd.Series) -> pd.Series:
    """``values`` as a column with ``series``' index and name, not copied."""
    import pandas as pd

    column: pd.Series = pd.Series(values, index=series.index, name=series.name, copy=False)
    return column


def _integer_candidates(series: pd.Series) -> list[_Candidate]:
    import pandas as pd

    nullable = isinstance(series.dtype, pd.api.extensions.ExtensionDtype)
    values = series.dropna().to_numpy() if nullable else series.to_numpy()
    if not len(values):
        return []
    low, high = values.min(), values.max()
    target = _smallest_int(int(low), int(high))
    if target is None or target.itemsize >= cast(Any, series.dtype).itemsize:
        return []
    reason = f"integers in [{low}, {high}]"
    if nullable:
        return [_Candidate(series.astype(nullable_dtype(target)), _astype_back(series.dtype),
                           reason, _int_hazard(target))]
    narrowed = values.astype(target)
    # numpy compares integers of any two widths exactly.
    return [_Candidate(_like(narrowed, series), _astype_back(series.dtype), reason,
                       _int_hazard(target),
                       round_trips=lambda _: bool(np.array_equal(narrowed, values)))]


def _float_candidates(series: pd.Series, aggressive: bool, rtol: float) -> list[_Candidate]:
    import pandas as pd

    values = series.to_numpy(dtype=np.float64, na_value=np.nan)
    plain = series.dtype == np.float64  # numpy float64: checked bit for bit in numpy below
    missing = np.isnan(values)
    present = values[~missing] if missing.any() else values
    candidates: list[_Candidate] = []
    int_row_bytes = None
    if _whole_numbers(present[:_PROBE]) and _whole_numbers(present):
        target = _smallest_int(int(present.min()), int(present.max()))
        if target is not None:
            any_missing = bool(missing.any())
            int_row_bytes = target.itemsize + any_missing  # a nullable column adds a mask byte
            ints = np.where(missing, 0, values).astype(target) if any_missing \
                else values.astype(target)
            if any_missing:
                column = _like(pd.arrays.IntegerArray(ints, missing.copy()), series)
                reason, hazard = "integral floats with NaN", "NaN becomes <NA> (nullable integers)"
            else:
                column = _like(ints, series)
                reason, hazard = "integral floats", _int_hazard(target)

            def ints_round_trip(_: pd.Series) -> bool:
                # What undo gives: the integers as float64, NaN where missing; bit for bit.
                restored = ints.astype(np.float64)
                restored[missing] = np.nan
                return bool(np.array_equal(restored.view(np.uint64), values.view(np.uint64)))

            candidates.append(_Candidate(column, _astype_back(series.dtype), reason, hazard,
                                         round_trips=ints_round_trip if plain else None))
    # An integer column of under 4 bytes a row is smaller than any float32: no need to try.
    if not plain or (int_row_bytes is not None and int_row_bytes < 4):
        return candidates
    # An overflow to inf, or a NaN whose payload float32 cannot keep, fails the check.
    with np.errstate(over="ignore", invalid="ignore"):
        probe = values[:_PROBE]
        maybe_exact = _same_bits(probe.astype(np.float32), probe)
        if not (maybe_exact or aggressive):
            return candidates
        narrowed = values.astype(np.float32)
    if maybe_exact and _same_bits(narrowed, values):
        # That comparison is the round trip: undo is this same widening.
        candidates.append(_Candidate(_like(narrowed, series), _astype_back(np.float64),
                                     "float64 values all exact in float32",
                                     "float32 arithmetic rounds to ~7 digits",
                                     round_trips=lambda _: True))
    elif aggressive:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            finite = np.isfinite(values)
            error = np.abs(narrowed[finite].astype(np.float64) - values[finite])
            scale = np.maximum(np.abs(values[finite]), np.finfo(np.float64).tiny)
            worst = float(np.max(error / scale)) if finite.any() else 0.0
        if worst <= rtol and np.array_equal(np.isinf(narrowed), np.isinf(values)):
            candidates.append(_Candidate(
                _like(narrowed, series), _astype_back(np.float64),
                f"float32 within rtol {rtol:g}", "values rounded to float32", exact=False,
                max_error=worst))
    return candidates


def _same_bits(narrowed: np.ndarray, values: np.ndarray) -> bool:
    """Whether float32 ``narrowed`` widens back to float64 ``values`` bit for bit."""
    widened = narrowed.astype(np.float64)
    return bool(np.array_equal(widened.view(np.uint64), values.view(np.uint64)))


def _whole_numbers(values: np.ndarray) -> bool:
    """Whether every value is a whole number that an integer type holds exactly (no -0.0)."""
    return bool(len(values) and np.isfinite(values).all()
                and not (np.signbit(values) & (values == 0)).any()
                and np.all(values == np.round(values))
                and np.abs(values).max() <= _MAX_EXACT_FLOAT_INT)


def _text_candidates(series: pd.Series, categorical_max_ratio: float) -> list[_Candidate]:
    import pandas as pd

    arrow_text = _arrow_text(series)
    kind = "string" if arrow_text is not None else pd.api.types.infer_dtype(series, skipna=True)
    missing_kind = _missing_kind(series) if _is_object(series) else None
    if missing_kind == "mixed":
        return []
    original = series.dtype
    was_object = _is_object(series)

    # Restores capture dtypes and flags only, never the column: a result must not keep
    # the original data alive.
    def back_to_text(s: pd.Series) -> pd.Series:
        out = _fill_missing(s.astype(object), missing_kind) if was_object else s
        return out.astype(original)

    candidates: list[_Candidate] = []
    if kind == "boolean":
        if series.isna().any():
            candidates.append(_Candidate(series.astype("boolean"), back_to_text,
                                         "True/False values", "missing becomes <NA>"))
        else:
            candidates.append(_Candidate(series.astype(bool), back_to_text, "True/False values"))
        return candidates
    if kind != "string":
        return []
    # One hash pass gives the category, the count of distinct values and each row's code.
    category = series.astype("category")
    distinct = category.cat.categories
    codes = category.cat.codes.to_numpy()
    distinct_count = len(distinct)
    if not distinct_count:  # nothing but missing values
        return []
    ratio = distinct_count / len(series)
    # A category costs at most 4 bytes a row plus its distinct values; datetime64 costs 8.
    if ratio > categorical_max_ratio or distinct_count > len(series) / 8:
        datetime = _datetime_candidate(series, codes, distinct, back_to_text)
        if datetime is not None:
            candidates.append(datetime)
    # Back from a category or Arrow strings: Arrow-backed text converts directly.
    text_again: Restore = ((lambda s: s.astype(original)) if arrow_text is not None
                           else (lambda s: back_to_text(s.astype(object))))
    if ratio <= categorical_max_ratio:
        candidates.append(_Candidate(
            category, text_again, f"{distinct_count} distinct values in {len(series)} rows",
            "unordered category: `<` and values outside the categories raise",
            round_trips=(None if arrow_text is None
                         else lambda _: _category_decodes_to(category, arrow_text))))
    import pyarrow as pa

    arrow = series.astype(pd.ArrowDtype(pa.string()))
    candidates.append(_Candidate(
        arrow, text_again, "Arrow strings (one buffer, no Python objects)",
        "Arrow-backed: a few pandas string methods are slower",
        round_trips=(None if arrow_text is None
                     else lambda _: _arrow_text(arrow).cast(arrow_text.type).equals(arrow_text))))
    return candidates


def _arrow_text(series: pd.Series) -> Any:
    """Return the Arrow array under Arrow-backed text (pandas 3 ``str``), else None."""
    import pandas as pd
    import pyarrow as pa

    dtype = series.dtype
    if isinstance(dtype, pd.StringDtype):
        arrow_backed = dtype.storage == "pyarrow"
    elif isinstance(dtype, pd.ArrowDtype):
        arrow_backed = pa.types.is_string(dtype.pyarrow_dtype) or \
            pa.types.is_large_string(dtype.pyarrow_dtype)
    else:
        arrow_backed = False
    return pa.chunked_array(pa.array(series.array)) if arrow_backed else None


def _category_decodes_to(category: pd.Series, text: Any) -> bool:
    """Whether the categories taken at the codes are ``text`` again, value and missing mark."""
    import pyarrow as pa

    codes = category.cat.codes.to_numpy()
    categories = pa.array(category.cat.categories.array).cast(text.type)
    decoded = categories.take(pa.array(codes, mask=codes < 0))
    return bool(pa.chunked_array([decoded]).equals(text))


def _datetime_candidate(
    series: pd.Series, codes: np.ndarray, distinct: pd.Index, back_to_text: Restore,
) -> _Candidate | None:
    """Dates parsed once per distinct string (``codes`` and ``distinct`` from factorize)."""
    import pandas as pd
    from pandas.tseries.api import guess_datetime_format

    first = str(series.iloc[int(np.argmax(codes >= 0))])  # the first value present
    if not any(ch.isdigit() for ch in first) or len(first) < 6:
        return None
    fmt = guess_datetime_format(first)
    if fmt is None:
        return None
    # Parse and check the distinct strings only: date columns repeat a lot, and formatting
    # is slow. Each must format back to itself.
    text = np.asarray(distinct.to_numpy(), dtype=object)
    # A few first when there are many, then all: a format that does not give the text back (a
    # "Z" read as a UTC offset and written "+0000") fails on the first strings.
    for strings in (text[:_PROBE], text) if len(text) > 4 * _PROBE else (text,):
        parsed_distinct = pd.to_datetime(strings, format=fmt, errors="coerce")
        if parsed_distinct.isna().any():
            return None
        if not np.array_equal(np.asarray(parsed_distinct.strftime(fmt), dtype=object), strings):
            return None
    # Every row holds one of those strings (or is missing, code -1): its date is theirs.
    parsed = pd.Series(parsed_distinct.array.take(codes, allow_fill=True), index=series.index,
                       name=series.name)

    def restore(s: pd.Series) -> pd.Series:
        formatted = s.dt.strftime(fmt).astype(object)
        formatted[s.isna()] = np.nan
        return back_to_text(formatted)

    def round_trips(original: pd.Series) -> bool:
        # Values round-trip by the check above; the missing rows must be the same ones.
        return bool(np.array_equal(parsed.isna().to_numpy(), original.isna().to_numpy()))

    return _Candidate(parsed, restore, f"dates formatted {fmt!r}",
                      f"datetime64; undo() formats back with {fmt!r}", round_trips=round_trips)


def _sparse_candidate(series: pd.Series) -> _Candidate | None:
    import pandas as pd

    # SparseDtype takes numpy dtypes only (not pandas' nullable ones).
    if not isinstance(series.dtype, np.dtype) or series.dtype.kind not in "iufb" \
            or len(series) < 100:
        return None
    dominant = _dominant_value(series.to_numpy())
    if dominant is None:
        return None
    fill, count = dominant
    sparse = series.astype(pd.SparseDtype(series.dtype, fill_value=fill))
    original = series.dtype
    shown = fill.item() if isinstance(fill, np.generic) else fill
    share = count / len(series)
    percent = f"{share:.0%}" if share < 0.995 or share == 1 else f"{share:.1%}"  # not "100%"
    return _Candidate(sparse, lambda s: cast(Any, s).sparse.to_dense().astype(original),
                      f"sparse: {percent} are {shown!r}",
                      "sparse: some operations turn it dense again")


def _dominant_value(values: np.ndarray) -> tuple[Any, int] | None:
    """Return the value that fills ``SPARSE_MIN_SHARE`` of ``values`` or more, and its count.

    No counting of every value: one that fills over half the rows holds the middle place
    in sorted order (NaN sorts last), so only that one is counted.

    Examples
    --------
    >>> fill, count = _dominant_value(np.array([0.0] * 95 + [1.0, 2.0, 3.0, 4.0, 5.0]))
    >>> float(fill), count
    (0.0, 95)
    >>> _dominant_value(np.arange(100)) is None
    True
    """
    size = len(values)
    if not size:
        return None
    if values.dtype.kind == "f":
        missing = int(np.count_nonzero(np.isnan(values)))
        if missing / size >= SPARSE_MIN_SHARE:
            return values.dtype.type(np.nan), missing
    middle = np.partition(values, size // 2)[size // 2]
    count = int(np.count_nonzero(values == middle))
    return (middle, count) if count / size >= SPARSE_MIN_SHARE else None


def _worth_sparse(sparse: _Candidate | None, dense_bytes: int, original_bytes: int,
                  aggressive: bool) -> _Candidate | None:
    """Keep a sparse candidate only when it saves a lot beyond the dense column's bytes."""
    if sparse is None or aggressive:
        return sparse
    extra_saving = dense_bytes - sparse.nbytes
    return sparse if extra_saving >= SPARSE_MIN_EXTRA_SAVING * original_bytes else None


def _plan(
    series: pd.Series, series_bytes: int, aggressive: bool, rtol: float,
    categorical_max_ratio: float,
) -> tuple[_Candidate | None, str]:
    import pandas as pd

    dtype = series.dtype
    candidates: list[_Candidate] = []
    if isinstance(dtype, (pd.CategoricalDtype, pd.SparseDtype)):
        return None, "already categorical or sparse"
    if pd.api.types.is_bool_dtype(dtype):
        sparse = _worth_sparse(_sparse_candidate(series), series_bytes, series_bytes,
                               aggressive)
        return (sparse, "") if sparse else (None, "bool is already one byte")
    if pd.api.types.is_integer_dtype(dtype):
        candidates = _integer_candidates(series)
    elif pd.api.types.is_float_dtype(dtype):
        candidates = _float_candidates(series, aggressive, rtol)
    elif _is_object(series) or pd.api.types.is_string_dtype(dtype):
        candidates = _text_candidates(series, categorical_max_ratio)
        if not candidates:
            return None, "mixed types or missing markers: left as is"
    else:
        return None, f"{dtype} cannot be shrunk exactly"
    base = min(candidates, key=lambda c: c.nbytes) if candidates else None
    dense = base.series if base is not None else series
    dense_bytes = base.nbytes if base is not None else series_bytes
    # A sparse column saves at most the dense one's bytes: when those are under the share it
    # must save, it cannot be worth it and the values need not be looked at.
    sparse = None if not aggressive and dense_bytes < SPARSE_MIN_EXTRA_SAVING * series_bytes \
        else _worth_sparse(_sparse_candidate(dense), dense_bytes, series_bytes, aggressive)
    if sparse is not None:
        inner = base.restore if base is not None else (lambda s: s)
        outer = sparse.restore
        candidates.append(_Candidate(sparse.series, lambda s: inner(outer(s)), sparse.reason,
                                     sparse.hazard, base.exact if base else True,
                                     base.max_error if base else None))
    if not candidates:
        return None, "already the smallest exact type"
    return min(candidates, key=lambda c: c.nbytes), ""


# --------------------------------------------------------------------------- results


@dataclass
class OptimizeResult(RendersAsTable):
    """The optimized frame, a per-column report, and a way back.

    Attributes
    ----------
    frame : DataFrame
        The optimized frame.
    report : DataFrame
        One row per column: dtypes and bytes before/after, exact, reason, hazard, max_error.
    bytes_before, bytes_after : int
        pandas' ``memory_usage(deep=True)`` totals (index included); the figures quoted.
    distinct_bytes_before : int
        The same, counting each distinct Python object once (pandas' deep count charges a
        shared string once per row, which overstates text savings).
    """

    frame: pd.DataFrame
    changes: list[ColumnChange]
    bytes_before: int
    bytes_after: int
    distinct_bytes_before: int
    _restores: dict[Any, Restore] = field(repr=False, default_factory=dict)
    _original_columns: Any = field(repr=False, default=None)

    @property
    def report(self) -> pd.DataFrame:
        """One row per column."""
        import pandas as pd

        frame: pd.DataFrame = pd.DataFrame([c.to_dict() for c in self.changes])
        return frame

    @property
    def saved_bytes(self) -> int:
        """``bytes_before - bytes_after``."""
        return self.bytes_before - self.bytes_after

    @property
    def reduction(self) -> float:
        """Share of memory saved (0 to 1)."""
        return self.saved_bytes / self.bytes_before if self.bytes_before else 0.0

    @property
    def exact(self) -> bool:
        """Whether every change kept every value."""
        return all(c.exact for c in self.changes)

    def undo(self) -> pd.DataFrame:
        """Return a frame with the original dtypes and values."""
        restored: pd.DataFrame = self.frame.copy(deep=False)
        for column, restore in self._restores.items():
            restored[column] = restore(self.frame[column])
        return restored

    def revert(self) -> None:
        """Put the original columns back into :attr:`frame` itself (after ``inplace``)."""
        for column, restore in self._restores.items():
            self.frame[column] = restore(self.frame[column])

    def restorer(self, column: Any) -> Restore | None:
        """Return what gives ``column`` its original dtype and values back (None: unchanged).

        It holds dtypes and flags only, never data: keeping it keeps no frame alive.
        """
        return self._restores.get(column)

    def undo_column(self, column: Any) -> pd.Series:
        """Return one column with its original dtype and values."""
        restore = self._restores.get(column)
        series: pd.Series = self.frame[column]
        return restore(series) if restore is not None else series

    def summary_rows(self) -> list[tuple[str, str]]:
        """Return (name, value) rows for a summary table."""
        changed = sum(1 for c in self.changes if c.dtype_before != c.dtype_after)
        before = format_bytes(self.bytes_before)
        if format_bytes(self.distinct_bytes_before) != before:  # shared objects: say both
            before += (f" (pandas deep count; {format_bytes(self.distinct_bytes_before)} "
                       "counting each distinct object once)")
        return [
            ("memory before", before),
            ("memory after", format_bytes(self.bytes_after)),
            ("saved", f"{format_bytes(self.saved_bytes)} ({self.reduction:.1%})"),
            ("columns changed", f"{changed} of {len(self.changes)}"),
            ("exact", "yes, every value kept" if self.exact else "NO (aggressive)"),
        ]

    def to_text(self) -> str:
        """Render an optimization report for terminals."""
        return "\n".join(["optimize_df", text_table(("figure", "value"), self.summary_rows()),
                          text_table(_OPTIMIZE_HEADERS, _optimize_rows(self))])

    def to_html(self) -> str:
        """Render an optimization report as HTML, the columns that need care shaded."""
        styles = [_HAZARD_STYLE if c.needs_care else "" for c in self.changes]
        return "".join([
            '<div class="jp-Meno-optimize">',
            html_table((), self.summary_rows(), "optimize_df"),
            html_table(_OPTIMIZE_HEADERS, _optimize_rows(self),
                       "per column (shaded: arithmetic can wrap, or values changed)",
                       row_styles=styles),
            "</div>",
        ])


_OPTIMIZE_HEADERS = ("column", "before", "after", "bytes before", "bytes after", "note")
_HAZARD_STYLE = "background:rgba(239,108,0,0.12)"


def _optimize_rows(result: OptimizeResult) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for c in result.changes:
        note = c.hazard or c.reason
        if c.max_error is not None:
            note = f"{note}; max relative error {c.max_error:.2g}"
        rows.append((c.column, c.dtype_before, c.dtype_after, format_bytes(c.bytes_before),
                     format_bytes(c.bytes_after), note))
    return rows


def optimize_dataframe(
    df: pd.DataFrame,
    *,
    aggressive: bool = False,
    rtol: float | None = None,
    categorical_max_ratio: float = DEFAULT_CATEGORICAL_MAX_RATIO,
    inplace: bool = False,
) -> OptimizeResult:
    """Shrink a DataFrame's columns to the smallest dtypes that keep every value.

    Parameters
    ----------
    df : DataFrame
        The frame to optimize.
    aggressive : bool
        Also allow lossy float64 → float32 within ``rtol`` (reported per column), and sparse
        columns whenever they are smaller (otherwise only when they save at least a third of
        the column beyond its best dense type).
    rtol : float, optional
        Relative tolerance for ``aggressive`` (default 1e-6).
    categorical_max_ratio : float
        Text becomes a category only when distinct values / rows is at most this.
    inplace : bool
        Replace the columns of ``df`` itself instead of building a new frame.

    Examples
    --------
    >>> import pandas as pd
    >>> frame = pd.DataFrame({"n": [1, 2, 3] * 1000, "x": [0.5, 1.5, 2.0] * 1000,
    ...                       "s": ["a", "b", "a"] * 1000})
    >>> result = optimize_dataframe(frame)
    >>> [str(t) for t in result.frame.dtypes]
    ['uint8', 'float32', 'category']
    >>> result.undo().equals(frame)
    True
    """
    check_optimizable(df)
    if rtol is not None and not aggressive:
        raise ValueError("rtol only applies with aggressive=True")
    tolerance = DEFAULT_RTOL if rtol is None else rtol
    if not 0 <= tolerance < 1:
        raise ValueError(f"rtol must be in [0, 1), got {tolerance}")
    if not 0 <= categorical_max_ratio <= 1:
        raise ValueError("categorical_max_ratio must be in [0, 1]")
    index_bytes = int(df.index.memory_usage(deep=True))
    bytes_before = index_bytes  # columns added below: each deep count is done once
    distinct_before = index_bytes
    changes: list[ColumnChange] = []
    restores: dict[Any, Restore] = {}
    replacements: dict[Any, pd.Series] = {}  # applied once every column is planned
    bytes_after = index_bytes
    columns = dict(df.items())  # each column fetched once: pandas makes a Series each time
    for column, series in columns.items():
        before = _memory(series)
        bytes_before += before
        distinct = _distinct_memory(series, before)
        distinct_before += distinct
        try:
            candidate, why_not = _plan(series, before, aggressive, tolerance,
                                       categorical_max_ratio)
            if candidate is not None and candidate.nbytes < before:
                if candidate.exact and not candidate.keeps_every_value_of(series):
                    candidate, why_not = None, "the candidate would not round-trip: left as is"
            elif candidate is not None:
                candidate, why_not = None, "no smaller exact type"
        except UnicodeError:
            # Surrogate-escaped text (os.fsdecode of non-UTF-8 file names) has no UTF-8 form:
            # Arrow strings and categories cannot hold it.
            candidate, why_not = None, "text that is not valid UTF-8: left as is"
        if candidate is None:
            changes.append(ColumnChange(str(column), str(series.dtype), str(series.dtype),
                                        before, before, distinct, True, why_not))
            bytes_after += before
            continue
        replacements[column] = candidate.series
        restores[column] = candidate.restore
        changes.append(ColumnChange(
            str(column), str(series.dtype), str(candidate.series.dtype), before,
            candidate.nbytes, distinct, candidate.exact, candidate.reason,
            candidate.hazard, candidate.max_error))
        bytes_after += candidate.nbytes
    # Applied once every column is planned: a failure above changed nothing.
    target = df if inplace else _with_columns(df, columns, replacements)
    if inplace:
        for column, series in replacements.items():
            target[column] = series
    return OptimizeResult(
        frame=target, changes=changes, bytes_before=bytes_before,
        bytes_after=bytes_after,
        distinct_bytes_before=distinct_before, _restores=restores,
    )


def _with_columns(df: pd.DataFrame, columns: dict[Any, pd.Series],
                  replacements: dict[Any, pd.Series]) -> pd.DataFrame:
    """Return a new frame of ``df``'s columns with ``replacements`` put in, sharing the rest."""
    import pandas as pd

    # Measured: setting a column costs ~80 µs, one concat of all ~300 µs + ~12 µs a column.
    if len(replacements) < 4 + len(columns) / 7:
        target: pd.DataFrame = df.copy(deep=False)
        for column, series in replacements.items():
            target[column] = series
        return target
    # concat, not a dict of arrays: that would infer ``str`` for object text left alone.
    # pandas 2 copies every column unless told not to; pandas 3 shares them (and deprecates
    # the keyword).
    no_copy: dict[str, Any] = {} if int(pd.__version__.split(".")[0]) >= 3 else {"copy": False}
    joined: pd.DataFrame = pd.concat(
        [replacements.get(column, series) for column, series in columns.items()], axis=1,
        **no_copy)
    joined.columns = df.columns  # set in place: pandas 2's set_axis would copy every column
    finished: pd.DataFrame = cast(Any, joined).__finalize__(df)  # attrs and flags, as copy() does
    return finished


def check_optimizable(df: pd.DataFrame) -> None:
    """Raise TypeError or ValueError if :func:`optimize_dataframe` cannot take ``df``."""
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"optimize_dataframe needs a pandas DataFrame, got {type(df).__name__}")
    if not df.columns.is_unique:
        duplicated = sorted({str(c) for c in df.columns[df.columns.duplicated()]})
        raise ValueError(f"columns must be unique to optimize them one by one (repeated: "
                         f"{', '.join(duplicated)})")


@dataclass(frozen=True)
class ArrayOptimizeResult:
    """An optimized numpy array and what changed."""

    array: np.ndarray
    dtype_before: str
    dtype_after: str
    bytes_before: int
    bytes_after: int
    exact: bool
    reason: str
    max_error: float | None = None

    def undo(self) -> np.ndarray:
        """Return the array in its original dtype."""
        return self.array.astype(self.dtype_before)


def optimize_array(
    array: np.ndarray, *, aggressive: bool = False, rtol: float = DEFAULT_RTOL
) -> ArrayOptimizeResult:
    """Shrink a numeric numpy array to the smallest dtype that keeps every value.

    Examples
    --------
    >>> optimize_array(np.array([1.0, 2.0, 300.0])).dtype_after
    'uint16'
    """
    import pandas as pd

    if not isinstance(array, np.ndarray):
        raise TypeError(f"optimize_array needs a numpy array, got {type(array).__name__}")
    if array.dtype.kind not in "iuf" or array.size == 0:
        return ArrayOptimizeResult(array, array.dtype.name, array.dtype.name, array.nbytes,
                                   array.nbytes, True, "not a numeric array, or empty")
    series = pd.Series(array.ravel())
    candidates = (_integer_candidates(series) if array.dtype.kind in "iu"
                  else _float_candidates(series, aggressive, rtol))
    candidates = [c for c in candidates if isinstance(c.series.dtype, np.dtype)]
    if not candidates:
        return ArrayOptimizeResult(array, array.dtype.name, array.dtype.name, array.nbytes,
                                   array.nbytes, True, "already the smallest exact type")
    best = min(candidates, key=lambda c: cast(np.dtype[Any], c.series.dtype).itemsize)
    new = best.series.to_numpy().reshape(array.shape)
    if best.exact and not np.array_equal(new.astype(array.dtype), array, equal_nan=True):
        return ArrayOptimizeResult(array, array.dtype.name, array.dtype.name, array.nbytes,
                                   array.nbytes, True, "would not round-trip: left as is")
    return ArrayOptimizeResult(new, array.dtype.name, new.dtype.name, array.nbytes, new.nbytes,
                               best.exact, best.reason, best.max_error)
