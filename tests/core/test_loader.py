from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

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
