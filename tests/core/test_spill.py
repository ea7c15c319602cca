"""Moving variables to disk: values, dtypes and labels kept, memory freed, nothing half done."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from meno_jupyter.core.spill import SpillError, SpillStore, anonymous_rss
from tests.mounthelp import small_ext4, small_tmpfs

N = 1_000_000


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SpillStore]:
    made = SpillStore(tmp_path / "spill")
    yield made
    made.close()


def frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "f": rng.random(N), "i": np.arange(N, dtype=np.int32), "b": rng.random(N) > 0.5,
        "c": pd.Categorical(rng.choice(["x", "y", "z"], N)),
        "t": pd.date_range("2024-01-01", periods=N, freq="s", tz="America/New_York"),
        "d": pd.to_timedelta(np.arange(N), unit="s"),
        "p": pd.period_range("2000-01-01", periods=N, freq="D"),
        "I": pd.array(np.where(np.arange(N) % 7 == 0, None, np.arange(N)), dtype="Int64"),
        "s": pd.array([f"name {i % 1000}" for i in range(N)], dtype="string[pyarrow]"),
    }, index=pd.RangeIndex(10, 10 + N, name="row"))


def test_a_frame_keeps_everything_and_frees_its_memory(store: SpillStore) -> None:
    ns: dict[str, Any] = {"df": frame()}
    expected = frame()
    before = anonymous_rss()
    report = store.spill(["df"], ns)
    spilled = ns["df"]
    assert type(spilled) is pd.DataFrame
    assert spilled.equals(expected) and spilled.dtypes.equals(expected.dtypes)
    assert spilled.index.equals(expected.index) and spilled.index.name == "row"
    size = expected.memory_usage(deep=True).sum()
    assert before - anonymous_rss() >= 0.8 * size, (before - anonymous_rss(), size)
    assert report.moved[0].freed_bytes >= 0.8 * size
    # It keeps working: a groupby, a sum, slicing, a write to a column.
    assert spilled.groupby("c", observed=True)["f"].sum().equals(
        expected.groupby("c", observed=True)["f"].sum())
    assert spilled.iloc[5:8]["s"].tolist() == ["name 5", "name 6", "name 7"]
    spilled.loc[spilled.index[0], "f"] = -1.0
    spilled["i"] = spilled["i"] * 2
    assert spilled["f"].iloc[0] == -1.0 and spilled["i"].iloc[3] == 6
    assert "df" in store.spilled_names()


def test_arrays_of_every_file_dtype_and_layout(store: SpillStore) -> None:
    base = np.arange(24.0).reshape(4, 6)
    values = {
        "floats": np.random.default_rng(1).random((300, 200)),
        "fortran": np.asfortranarray(np.random.default_rng(2).random((50, 40))),
        "strided": base[:, ::2].copy()[:, ::1],
        "dates": np.arange("2020-01", "2021-01", dtype="datetime64[D]"),
        "flags": np.zeros(1000, dtype=bool),
        "complex": np.ones(10, dtype=np.complex128),
        "scalar": np.array(3.5, dtype=np.float32),
    }
    ns: dict[str, Any] = {k: v.copy(order="K") for k, v in values.items()}
    ns["every_other"] = np.arange(10_000)[::3]  # a non-contiguous view nothing else holds
    store.spill(list(ns), ns)
    for name, value in values.items():
        assert type(ns[name]) is np.ndarray and ns[name].dtype == value.dtype
        assert np.array_equal(ns[name], value), name
    assert ns["fortran"].flags.f_contiguous
    assert np.array_equal(ns["every_other"], np.arange(10_000)[::3])
    ns["floats"][0, 0] = 42.0  # written through to the file
    assert ns["floats"][0, 0] == 42.0


def test_multiindex_rows_and_columns_come_back_as_they_were(store: SpillStore) -> None:
    index = pd.MultiIndex.from_product([["a", "b"], range(500)], names=["group", "n"])
    columns = pd.MultiIndex.from_tuples([("x", "mean"), ("x", "max"), ("y", "mean")])
    expected = pd.DataFrame(np.arange(3000.0).reshape(1000, 3), index=index, columns=columns)
    ns: dict[str, Any] = {"wide": expected.copy()}
    store.spill(["wide"], ns)
    assert ns["wide"].equals(expected)
    assert ns["wide"].index.equals(index) and ns["wide"].columns.equals(columns)
    assert ns["wide"].loc[("b", 3), ("x", "max")] == expected.loc[("b", 3), ("x", "max")]


def test_containers_and_series(store: SpillStore) -> None:
    series = pd.Series(np.arange(5.0), index=list("abcde"), name="s")
    ns: dict[str, Any] = {"box": {"a": np.arange(3), "parts": [series.copy(), (np.ones(2),)]}}
    store.spill(["box"], ns)
    assert np.array_equal(ns["box"]["a"], np.arange(3))
    assert ns["box"]["parts"][0].equals(series) and ns["box"]["parts"][0].name == "s"
    assert isinstance(ns["box"]["parts"][1], tuple)
    ns["named"] = pd.Series([1.0, 2.0], name="n")
    ns["named"].attrs["unit"] = "kg"
    store.spill(["named"], ns)
    store.bring_back(["named"], ns)  # attrs kept both ways, for a Series as for a frame
    assert ns["named"].attrs == {"unit": "kg"} and ns["named"].name == "n"


@pytest.mark.parametrize(("make", "message"), [
    (lambda: pd.DataFrame({"o": [object(), 1]}), "holds Python objects"),
    (lambda: {"ok": np.ones(3), "bad": "text"}, "a value of type str: only numpy arrays"),
    (lambda: np.ma.masked_array([1, 2]), "subclass of ndarray"),
    (lambda: np.array(["a", "b"]), "dtype <U1"),
])
def test_what_cannot_move_is_refused_and_nothing_changes(store: SpillStore, make: Any,
                                                         message: str) -> None:
    ns: dict[str, Any] = {"keep": np.arange(10), "odd": make()}
    odd = id(ns["odd"])
    with pytest.raises(SpillError, match=message):
        store.spill(["keep", "odd"], ns)  # all or nothing: `keep` is not moved either
    assert id(ns["odd"]) == odd and ns["keep"].base is None
    assert not store.directory.exists()  # checked before anything was made


def test_a_variable_held_elsewhere_is_refused(store: SpillStore) -> None:
    ns: dict[str, Any] = {"big": np.arange(100_000)}
    out = {3: ns["big"]}
    with pytest.raises(SpillError, match=r"also held by Out\[3\]: moving it would free nothing"):
        store.spill(["big"], ns, out=out)
    ns["alias"] = ns["big"]
    del out[3]
    with pytest.raises(SpillError, match="also held by `alias`"):
        store.spill(["big"], ns)
    del ns["alias"]
    holder = [ns["big"]]
    with pytest.raises(SpillError, match="something else"):
        store.spill(["big"], ns)
    del holder
    store.spill(["big"], ns)  # held by the name alone: it moves
    owner = np.arange(50)
    ns2: dict[str, Any] = {"view": owner[5:10]}
    with pytest.raises(SpillError, match="a view of another array that something else holds"):
        store.spill(["view"], ns2)
    with pytest.raises(SpillError, match="no variable named nope"):
        store.spill(["nope"], ns2)


def test_files_go_with_the_variable(store: SpillStore) -> None:
    ns: dict[str, Any] = {"a": np.arange(1000.0), "b": np.arange(1000.0)}
    store.spill(["a", "b", "a"], ns)  # a name given twice moves once
    assert len(list(store.directory.iterdir())) == 2
    ns["a"] = 1  # rebound
    del ns["b"]  # deleted
    assert sorted(store.forget_gone(ns)) == ["a", "b"]
    assert list(store.directory.iterdir()) == []
    ns["c"] = np.arange(10.0)
    store.spill(["c"], ns)
    report = store.bring_back(["c"], ns)
    assert "brought `c` back" in report.to_text()
    assert ns["c"].base is None and np.array_equal(ns["c"], np.arange(10.0))
    assert list(store.directory.iterdir()) == []
    with pytest.raises(SpillError, match="not on disk: c"):
        store.bring_back(["c"], ns)


def test_a_full_disk_moves_nothing(tmp_path: Path) -> None:
    with small_ext4(tmp_path / "disk", 16) as disk:
        store = SpillStore(disk / "spill")
        small, big = np.ones(100_000), np.ones(4_000_000)  # 0.8 MB fits, 32 MB does not
        ns: dict[str, Any] = {"small": small, "big": big}
        del small, big
        with pytest.raises(OSError, match=r"no room on the disk for 30\.5 MiB"):
            store.spill(["small", "big"], ns)
        assert ns["small"].base is None and ns["big"].base is None  # both still in memory
        assert list((disk / "spill").iterdir()) == []
        store.close()


def test_directories_that_would_not_help_are_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    ns: dict[str, Any] = {"a": np.ones(10)}
    with pytest.raises(SpillError, match="can be written by other users"):
        SpillStore(shared).spill(["a"], ns)
    with pytest.raises(SpillError, match="is on a tmpfs: its files are memory"):
        SpillStore(Path("/dev/shm/meno-spill-test")).spill(["a"], ns)
    with small_tmpfs(tmp_path / "ro", "1m", "ro") as read_only, pytest.raises(SpillError):
        SpillStore(read_only / "spill").spill(["a"], ns)
    assert ns["a"].base is None
