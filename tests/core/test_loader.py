from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meno_jupyter.core.loader import iter_optimized, parse_text_column, read_optimized


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_text_is_parsed_only_where_nothing_changes() -> None:
    assert parse_text_column(pd.Series(["1", "-20", "300"])).dtype == np.int64
    assert parse_text_column(pd.Series(["02134", "10001"])).tolist() == ["02134", "10001"]
    assert parse_text_column(pd.Series(["+5", "6"])).tolist() == ["+5", "6"]
    floats = parse_text_column(pd.Series(["1.5", "2e3", None]))
    assert floats.dtype == np.float64 and np.isnan(floats.iloc[2])
    assert parse_text_column(pd.Series(["007.5", "1.0"])).tolist() == ["007.5", "1.0"]
    assert str(parse_text_column(pd.Series(["True", None])).dtype) == "boolean"
    assert parse_text_column(pd.Series(["-", "1"])).tolist() == ["-", "1"]


def test_csv_read_keeps_every_value_and_widens_across_chunks(tmp_path: Path) -> None:
    rows = ["zip,n,big,x,flag,when,city,late"]
    for i in range(50):
        big = 5 if i < 25 else 70_000  # small in the first chunks, wide later
        late = "" if i < 30 else ("text" if i == 45 else str(i))  # missing, then mixed kinds
        rows.append(f"0{i:04d},{i},{big},{i / 4},{i % 2 == 0},2024-01-{1 + i % 28:02d},"
                    f"{'Lyon' if i % 3 else 'Nice'},{late}")
    path = write_csv(tmp_path / "data.csv", "\n".join(rows) + "\n")
    frame = read_optimized(path, chunksize=10, progress=False)
    assert len(frame) == 50
    assert frame["zip"].iloc[7] == "00007"  # never a number
    assert frame["n"].dtype == np.uint8 and frame["n"].iloc[-1] == 49
    assert frame["big"].dtype == np.uint32 and frame["big"].iloc[-1] == 70_000
    assert frame["x"].iloc[3] == 0.75
    assert frame["flag"].dtype == bool
    assert str(frame["city"].dtype) == "category" and frame["city"].iloc[0] == "Nice"
    assert frame["when"].dtype.kind == "M" or frame["when"].iloc[0] == "2024-01-01"
    late = frame["late"]  # ints in one chunk, text in another: text everywhere, as written
    assert late.iloc[45] == "text" and late.iloc[31] == "31" and pd.isna(late.iloc[0])


def test_formats_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    original = pd.DataFrame({
        "id": np.arange(1000),
        "score": rng.random(1000),
        "group": rng.choice(["a", "b", "c"], 1000),
    })
    original.to_parquet(tmp_path / "d.parquet")
    original.reset_index(drop=True).to_feather(tmp_path / "d.feather")
    original.to_excel(tmp_path / "d.xlsx", index=False)
    # Excel stores floats with fewer digits: compare each file with pandas' own reading of it.
    plain = {"d.parquet": original, "d.feather": original,
             "d.xlsx": pd.read_excel(tmp_path / "d.xlsx")}
    for name, expected in plain.items():
        frame = read_optimized(tmp_path / name, chunksize=300, progress=False)
        assert frame["id"].dtype == np.uint16, name
        assert np.array_equal(frame["id"].to_numpy(), expected["id"].to_numpy())
        assert np.array_equal(frame["score"].to_numpy(np.float64), expected["score"].to_numpy())
        assert frame["group"].astype(str).tolist() == expected["group"].tolist()
        assert str(frame["group"].dtype) == "category"


def test_columns_and_streaming(tmp_path: Path) -> None:
    pd.DataFrame({"a": range(25), "b": ["x"] * 25}).to_csv(tmp_path / "s.csv", index=False)
    chunks = list(iter_optimized(tmp_path / "s.csv", chunksize=10, columns=["a"]))
    assert [len(c) for c in chunks] == [10, 10, 5]
    assert all(list(c.columns) == ["a"] and c["a"].dtype == np.uint8 for c in chunks)


def test_memory_limit_stops_with_a_clear_error(tmp_path: Path) -> None:
    pd.DataFrame({"a": np.arange(100_000)}).to_csv(tmp_path / "m.csv", index=False)
    with pytest.raises(MemoryError, match="iter_optimized"):
        read_optimized(tmp_path / "m.csv", chunksize=10_000, memory_limit=50_000,
                       progress=False)


def test_bad_input(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_optimized(tmp_path / "none.csv", progress=False)
    (tmp_path / "x.bin").write_text("?")
    with pytest.raises(ValueError, match="format"):
        read_optimized(tmp_path / "x.bin", progress=False)
    with pytest.raises(ValueError, match="chunksize"):
        read_optimized(tmp_path / "x.bin", format="csv", chunksize=0, progress=False)


# ---------------------------------------------------------------------------- never a changed value


def raw_text(path: Path, **options: Any) -> pd.DataFrame:
    """The file's fields as written, with pandas' own missing-value rules: the oracle."""
    return pd.read_csv(path, dtype=str, **options)


def assert_values_as_written(ours: pd.DataFrame, path: Path, **options: Any) -> None:
    """Every value is the one its text denotes, missing where pandas finds it missing.

    Text is kept as written; a number equals the number its text denotes exactly (so equal
    to pandas' where pandas is exact, and exact where pandas' float64 is not).
    """
    written = raw_text(path, **options)
    assert list(ours.columns) == list(written.columns)
    assert len(ours) == len(written)
    for column in written.columns:
        mine = ours[column].astype(object).where(ours[column].notna(), None).tolist()
        texts = written[column].tolist()
        for row, (value, text) in enumerate(zip(mine, texts, strict=True)):
            where = f"{column!r} row {row}: {value!r} from {text!r}"
            if pd.isna(text):
                assert value is None, where
            elif isinstance(value, str):
                assert value == text, where
            elif isinstance(value, (bool, np.bool_)):
                assert text == str(bool(value)), where
            elif isinstance(value, (int, np.integer)):  # "0.0" may become 0: exact either way
                assert Decimal(text) == int(value), where
            else:
                expected = float(text)
                assert value == expected or (np.isnan(expected) and np.isnan(value)), where


def test_ids_beyond_int64_stay_exact(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "ids.csv", "id,u,mixed\n12345678901234567890,"
                     "18446744073709551615,-1\n12345678901234567891,1,9223372036854775808\n")
    frame = read_optimized(path, progress=False)
    assert frame["id"].tolist() == [12345678901234567890, 12345678901234567891]
    assert frame["id"].iloc[0] != frame["id"].iloc[1]  # as float64 they compared equal
    assert frame["u"].dtype == np.uint64 and frame["u"].iloc[0] == 2**64 - 1
    assert frame["mixed"].tolist() == ["-1", "9223372036854775808"]  # pandas: text too
    big = write_csv(tmp_path / "big.csv", "n\n" + "1" * 25 + "\n7\n")
    assert read_optimized(big, progress=False)["n"].tolist() == ["1" * 25, "7"]
    assert_values_as_written(read_optimized(path, progress=False), path)


def test_duplicate_and_empty_headers_get_pandas_names(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "dup.csv", "a,a,b,,a.1\n1,2,3,4,5\n")
    ours = read_optimized(path, progress=False)
    assert list(ours.columns) == list(pd.read_csv(path).columns)
    assert ours.iloc[0].tolist() == [1, 2, 3, 4, 5]


def test_bom_long_fields_and_encodings(tmp_path: Path) -> None:
    bom = tmp_path / "bom.csv"
    bom.write_bytes("a,b\n1,x\n".encode("utf-8-sig"))
    assert read_optimized(bom, progress=False).to_dict("list") == {"a": [1], "b": ["x"]}
    long = write_csv(tmp_path / "long.csv", "a,b\n1," + "x" * 20_000_000 + "\n2,y\n")
    frame = read_optimized(long, progress=False)
    assert frame["a"].tolist() == [1, 2] and len(frame["b"].iloc[0]) == 20_000_000
    latin = tmp_path / "latin.csv"
    latin.write_bytes("name,n\ncafé,1\nnaïve,2\n".encode("latin-1"))
    assert read_optimized(latin, encoding="latin-1", progress=False)["name"].tolist() == [
        "café", "naïve"]
    with pytest.raises(ValueError, match="unknown encoding"):
        read_optimized(latin, encoding="no-such-codec", progress=False)


def test_read_csv_options_work_as_in_pandas(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "opts.csv", "# exported\na;b;c;when\n1;x;NA;2024-01-02\n"
                     "2;y;missing;2024-02-03\n3;z;5;2024-03-04\n")
    options: dict[str, Any] = {"sep": ";", "skiprows": 1, "na_values": ["missing"],
                               "parse_dates": ["when"], "dtype": {"a": "float32"}, "nrows": 2,
                               "usecols": ["a", "c", "when"]}
    ours = read_optimized(path, progress=False, **options)
    theirs = pd.read_csv(path, **options)
    assert list(ours.columns) == list(theirs.columns) and len(ours) == 2
    assert ours["a"].dtype == np.float32 and ours["a"].tolist() == theirs["a"].tolist()
    assert ours["c"].isna().all() and theirs["c"].isna().all()
    assert ours["when"].tolist() == theirs["when"].tolist()
    chunks = list(iter_optimized(path, chunksize=1, sep=";", skiprows=1, nrows=3))
    assert [len(c) for c in chunks] == [1, 1, 1]
    no_defaults = read_optimized(path, progress=False, sep=";", skiprows=1,
                                 keep_default_na=False)
    assert no_defaults["c"].tolist() == ["NA", "missing", "5"]


@pytest.mark.parametrize(("options", "error", "message"), [
    ({"comment": "#"}, TypeError, "unsupported CSV option.*comment"),
    ({"usecols": lambda c: True}, TypeError, "usecols must be a list"),
    ({"skiprows": [1, 2]}, TypeError, "skiprows must be a whole number"),
    ({"sep": r"\s+"}, ValueError, "one character"),
    ({"na_values": {"a": ["x"]}}, TypeError, "no per-column"),
    ({"parse_dates": ["nope"]}, ValueError, "parse_dates names"),
    ({"columns": ["a"], "usecols": ["a"]}, TypeError, "not both"),
    ({"dtype": {"a": "int8"}}, ValueError, "cannot be read as dtype"),
])
def test_what_the_loader_cannot_do_is_refused_by_name(
        tmp_path: Path, options: dict[str, Any], error: type[Exception], message: str) -> None:
    path = write_csv(tmp_path / "x.csv", "a,b\n1,x\nlots,y\n")
    with pytest.raises(error, match=message):
        read_optimized(path, progress=False, **options)


def test_chunks_say_where_they_came_from(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "m.csv", "a\n" + "\n".join(map(str, range(25))) + "\n")
    infos = [chunk.attrs["meno"] for chunk in iter_optimized(path, chunksize=10)]
    assert [(i.rows_before, i.rows) for i in infos] == [(0, 10), (10, 10), (20, 5)]
    assert infos[-1].bytes_read == infos[-1].bytes_total == path.stat().st_size
    assert all(0 < i.share <= 1 for i in infos)


def test_preview_reads_only_what_it_needs(tmp_path: Path) -> None:
    from meno_jupyter.core.loader import preview

    path = tmp_path / "big.csv"
    with path.open("wb") as handle:
        handle.write(b"zip,n\n")
        for start in range(0, 200_000, 10_000):
            handle.write("".join(f"{i % 99999:05d},{i}\n"
                                 for i in range(start, start + 10_000)).encode())
        handle.write(b"\xff\xfe not UTF-8 at the very end,\n")
    first = preview(path, n=1000)
    assert len(first) == 1000 and first["zip"].iloc[7] == "00007"
    assert str(first["n"].dtype) == "uint16"  # the schema meno chooses for these rows
    with pytest.raises(UnicodeDecodeError):  # the whole file has it; the preview never saw it
        read_optimized(path, progress=False)


def test_json_lines_and_excel_give_pandas_values(tmp_path: Path) -> None:
    frame = pd.DataFrame({"id": np.arange(2500), "name": ["a", "b", "c", "é", None] * 500,
                          "x": np.linspace(0, 1, 2500)})
    jsonl = tmp_path / "d.jsonl"
    frame.to_json(jsonl, orient="records", lines=True)
    ours = read_optimized(jsonl, chunksize=700, progress=False)
    theirs = pd.read_json(jsonl, lines=True)
    assert ours["id"].tolist() == theirs["id"].tolist() and ours["x"].tolist() == theirs[
        "x"].tolist()
    assert ours["name"].astype(object).where(ours["name"].notna(), None).tolist() == (
        theirs["name"].astype(object).where(theirs["name"].notna(), None).tolist())
    xlsx = tmp_path / "d.xlsx"
    frame.to_excel(xlsx, index=False)
    ours = read_optimized(xlsx, chunksize=700, progress=False)
    theirs = pd.read_excel(xlsx)
    assert ours["id"].tolist() == theirs["id"].tolist()
    assert np.array_equal(ours["x"].to_numpy(np.float64), theirs["x"].to_numpy())
    assert [len(c) for c in iter_optimized(xlsx, chunksize=1000)] == [1000, 1000, 500]


ODD_TEXT = st.text(alphabet=st.sampled_from([*'ab,"\n é\u2028x0-.', "\ufeff"]),
                   max_size=6)
ODD_VALUE = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=True),
    st.sampled_from(["", "007", "True", "False", "inf", "NA", "1e5", "-0.0", "+5"]),
    ODD_TEXT)


@settings(max_examples=60, deadline=None)
@given(columns=st.lists(st.lists(ODD_VALUE, min_size=1, max_size=12), min_size=1, max_size=4),
       bom=st.booleans(), chunksize=st.integers(1, 5))
def test_any_written_frame_reads_back_as_written(columns: list[list[Any]], bom: bool,
                                                 chunksize: int) -> None:
    import tempfile

    rows = min(len(c) for c in columns)
    if len(columns) == 1:  # pandas drops a one-column file's whitespace-only lines; meno keeps
        columns = [[v for v in columns[0] if not (isinstance(v, str) and v.isspace())]]
        rows = len(columns[0])
    frame = pd.DataFrame({f"c{i}": pd.Series(c[:rows], dtype=object)
                          for i, c in enumerate(columns)})
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "odd.csv"
        frame.to_csv(path, index=False, encoding="utf-8-sig" if bom else "utf-8")
        ours = read_optimized(path, chunksize=chunksize, progress=False)
        assert_values_as_written(ours, path)


def test_runs_joined_while_reading_keep_every_value(tmp_path: Path, monkeypatch: Any) -> None:
    from meno_jupyter.core import loader

    monkeypatch.setattr(loader, "COMPACT_BYTES", 1)  # join after every chunk
    rows = ["zip,n,city,late,ids"]
    for i in range(60):
        late = "" if i < 20 else ("text" if i == 45 else str(i))
        zip_code = f"{i:05d}" if i % 25 == 0 else str(10_000 + i)  # zero-padded now and then
        rows.append(f"{zip_code},{i if i < 30 else i * 2000},{'Lyon' if i % 3 else 'Nice'},"
                    f"{late},{12345678901234567890 + i}")
    path = write_csv(tmp_path / "runs.csv", "\n".join(rows) + "\n")
    frame = read_optimized(path, chunksize=7, progress=False)
    assert_values_as_written(frame, path)
    assert frame["zip"].iloc[0] == "00000" and frame["zip"].iloc[1] == "10001"
    assert frame["n"].dtype == np.uint32 and str(frame["city"].dtype) == "category"
    assert frame["late"].iloc[45] == "text" and frame["ids"].dtype == np.uint64
    parquet = tmp_path / "runs.parquet"
    pd.read_csv(path, dtype={"zip": str}).to_parquet(parquet)
    assert read_optimized(parquet, chunksize=7, progress=False)["zip"].tolist() == frame[
        "zip"].tolist()


def test_arrow_text_becomes_a_category_in_arrow_with_the_same_values() -> None:
    import pyarrow as pa

    from meno_jupyter.core.loader import _as_dtype, _text_dtype

    parts = [pd.Series(["b", "a", None, "zz"] * 5, dtype=pd.ArrowDtype(pa.string())),
             pd.Series(["a", "é", "a"] * 5, dtype=pd.ArrowDtype(pa.string()),
                       index=range(20, 35))]
    target = _text_dtype(parts)
    assert isinstance(target, pd.CategoricalDtype)
    assert list(target.categories) == ["a", "b", "zz", "é"]
    for part in parts:
        coded = _as_dtype(part, target)
        expected = part.astype(object).where(part.notna(), None).astype(target)
        assert coded.equals(expected) and list(coded.index) == list(part.index)
    # Categories that are not all text take pandas' own way.
    mixed = pd.CategoricalDtype([1, "a", "é"])
    assert _as_dtype(parts[1], mixed).tolist()[:3] == ["a", "é", "a"]
    # Many distinct values stay text, counted without a Python string per row.
    unique = pd.Series([f"id{i}" for i in range(1000)], dtype=pd.ArrowDtype(pa.string()))
    assert _text_dtype([unique]) == pd.ArrowDtype(pa.string())


def test_later_chunks_are_converted_to_the_first_ones_dtypes_exactly() -> None:
    import pyarrow as pa

    from meno_jupyter.core.loader import _Plan

    text = pd.ArrowDtype(pa.string())
    plan = _Plan()
    plan.note("n", pd.Series([1, 2], dtype=np.uint8))
    plan.note("x", pd.Series([0.5], dtype=np.float32))
    plan.note("s", pd.Series(["b", "a"], dtype=text).astype("category"))
    plan.note("t", pd.Series(["free text"], dtype=text))
    plan.note("gone", pd.Series([None, None], dtype=object))  # no value: no decision
    assert plan.text == {"s", "t"} and "gone" not in plan.dtypes
    # Integers: the planned type, widened just enough, nullable where a value is missing.
    assert plan.fit("n", pd.Series([3, 4])).dtype == np.uint8
    assert plan.fit("n", pd.Series([300, 4])).tolist() == [300, 4]
    assert plan.fit("n", pd.Series([300, 4])).dtype == np.uint16
    assert plan.fit("n", pd.Series([-1, 4])).dtype == np.int16
    missing = plan.fit("n", pd.Series([7, None], dtype="Int64"))
    assert str(missing.dtype) == "UInt8" and missing.isna().tolist() == [False, True]
    assert plan.fit("n", pd.Series([2**64 - 1], dtype=np.uint64)).dtype == np.uint64
    assert plan.fit("n", pd.Series([1.5])) is None  # another kind: optimized afresh
    # Floats narrowed only where they widen back bit for bit.
    assert plan.fit("x", pd.Series([0.25, np.nan])).dtype == np.float32
    assert plan.fit("x", pd.Series([0.1])) is None
    # Text coded in the categories; new values added; too many new ones: afresh.
    coded = plan.fit("s", pd.Series(["a", None, "c", "a"], dtype=text))
    assert coded.tolist()[:1] == ["a"] and pd.isna(coded.iloc[1])
    assert coded.tolist()[2:] == ["c", "a"] and list(coded.cat.categories) == ["a", "b", "c"]
    assert plan.dtypes["s"] == coded.dtype  # the next chunk is coded in it
    assert plan.fit("s", pd.Series([None, None], dtype=text)).isna().all()  # a chunk of gaps
    assert plan.fit("s", pd.Series([f"v{i}" for i in range(10)], dtype=text)) is None
    assert plan.fit("s", pd.Series([1, 2])) is None
    assert plan.fit("t", pd.Series(["as written"], dtype=text)).tolist() == ["as written"]


def test_chunks_keep_the_dtypes_chosen_first(tmp_path: Path) -> None:
    rows = ["code,n,city"] + [f"{i * 500:05d},{i},{'Lyon' if i % 2 else 'Nice'}"
                              for i in range(200)]
    path = write_csv(tmp_path / "codes.csv", "\n".join(rows) + "\n")
    chunks = list(iter_optimized(path, chunksize=50))
    # "50000"-"74500" would parse as numbers on their own: text from the first chunk on.
    assert [str(c["code"].dtype) for c in chunks] == [str(chunks[0]["code"].dtype)] * 4
    assert chunks[2]["code"].tolist()[:2] == ["50000", "50500"]
    assert [str(c["n"].dtype) for c in chunks] == ["uint8"] * 4
    assert all(isinstance(c["city"].dtype, pd.CategoricalDtype) for c in chunks)
    frame = read_optimized(path, chunksize=50, progress=False)
    assert_values_as_written(frame, path)
    assert list(frame["city"].cat.categories) == ["Lyon", "Nice"]


def test_parts_share_one_category_and_go_as_they_are_joined(tmp_path: Path,
                                                           monkeypatch: Any) -> None:
    import weakref

    from meno_jupyter.core import loader

    monkeypatch.setattr(loader, "COMPACT_BYTES", 1)  # a run joined after every chunk
    # New cities keep coming: the plan's categories grow while the runs are joined.
    rows = ["city,n"] + [f"c{(i * 7) % (i // 10 + 1):03d},{i}" for i in range(400)]
    path = write_csv(tmp_path / "growing.csv", "\n".join(rows) + "\n")
    held: list[set[int]] = []
    runs_seen: list[int] = []
    joined = loader._Columns.frame

    def frame_of(columns: Any) -> pd.DataFrame:
        runs = columns.parts["city"][:columns._runs["city"]]  # joined while reading
        held.append({id(part.series.dtype.categories) for part in runs})
        runs_seen.append(len(runs))
        return joined(columns)

    monkeypatch.setattr(loader._Columns, "frame", frame_of)
    frame = read_optimized(path, chunksize=20, progress=False)
    assert_values_as_written(frame, path)
    assert isinstance(frame["city"].dtype, pd.CategoricalDtype)
    assert frame["city"].cat.categories.is_monotonic_increasing
    assert runs_seen[0] > 3 and len(held[0]) == 1  # one categories object for all runs

    # Joining lets each part's values go as soon as they are copied.
    parts = [loader._Part(pd.Series(np.arange(1000, dtype=np.float64) + i)) for i in range(3)]
    alive = [weakref.ref(_root(part.series.to_numpy())) for part in parts]
    joined_column = loader._concat_freeing(parts, np.dtype(np.float64))
    assert joined_column.tolist()[999:1001] == [999.0, 1.0]
    assert [ref() is None for ref in alive] == [True] * 3
    assert len(parts) == 3 and all(part.series.dtype == np.float64 for part in parts)


def _root(array: np.ndarray) -> np.ndarray:
    """The array that owns ``array``'s memory (a view's base, all the way down)."""
    while isinstance(array.base, np.ndarray):
        array = array.base
    return array
