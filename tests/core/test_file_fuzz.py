"""Fuzzed reads of the files the core writes: ledger files and cache entries.

Each damaged file is either read back as it was written or refused with the project's own
error; never a raw exception, a hang or wrong data.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meno_jupyter.core.caches import CompressedCache, CorruptEntryError, _Codec, decode, encode
from meno_jupyter.core.errors import MenoWarning
from meno_jupyter.core.ledger import CellRecord, Ledger, LedgerFileError, read_ledger_file
from tests.fuzzhelp import FLIPS, JSON_VALUES, damaged

FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def ledger_file(directory: Path) -> Path:
    path = directory / "meno-ledger-kernel-1.json"
    ledger = Ledger(path=path, pid=4242)
    for n in range(3):
        ledger.add(CellRecord(n, f"cell {n}", 1.0 + n, 0.5, 100, 120 + n, 150 + n, True, 0,
                              None if n else "ValueError"))
    return path


@FUZZ
@given(cut=st.integers(0, 5_000), flips=FLIPS)
def test_a_damaged_ledger_reads_right_or_raises_ledger_file_error(
        tmp_path_factory: pytest.TempPathFactory, cut: int, flips: list[tuple[int, int]]
) -> None:
    path = ledger_file(tmp_path_factory.mktemp("ledger"))
    expected = read_ledger_file(path)
    path.write_bytes(damaged(path.read_bytes(), cut, flips))
    try:
        data = read_ledger_file(path)
    except LedgerFileError:
        return
    # Flips inside a digit or a string can make another valid ledger: then every field
    # still has its type, which is all a reader can promise without a checksum.
    assert len(data["cells"]) == len(expected["cells"]) or data["cells"] == []
    for cell in data["cells"]:
        record = CellRecord.from_dict(cell)
        assert isinstance(record.peak_rss, int) and isinstance(record.source_head, str)


@FUZZ
@given(field=st.sampled_from(["schema", "pid", "updated_at", "cells", "cell"]),
       inner=st.sampled_from(list(CellRecord.__dataclass_fields__)), value=JSON_VALUES)
def test_wrong_types_in_a_ledger_are_refused(
        tmp_path_factory: pytest.TempPathFactory, field: str, inner: str, value: object
) -> None:
    path = ledger_file(tmp_path_factory.mktemp("ledger"))
    data = json.loads(path.read_text())
    if field == "cell":
        data["cells"][1][inner] = value
    else:
        data[field] = value
    path.write_text(json.dumps(data))  # NaN and Infinity too: json writes them
    try:
        read = read_ledger_file(path)
    except LedgerFileError:
        return
    for cell in read["cells"]:
        CellRecord.from_dict(cell)  # whatever passed has every field, rightly typed


def test_odd_ledger_files_are_refused_quickly(tmp_path: Path) -> None:
    path = ledger_file(tmp_path)
    good = path.read_text()
    for text, reason in [
        ("[" * 50_000 + "]" * 50_000, "not a readable ledger"),
        (good.replace('"duration_s": 0.5', '"duration_s": Infinity', 1), "JSON allows"),
        (good.replace('"duration_s": 0.5', '"duration_s": 1e400', 1), "finite"),
        (good.replace('"pid": 4242', '"pid": ' + "9" * 5000, 1), "not a readable ledger"),
        ('{"schema": 1, "pid": 1, "updated_at": 1, "cells": "not a list"}', "must be a list"),
        (b"\xff\xfe" + good.encode(), "not a readable ledger"),
    ]:
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        with pytest.raises(LedgerFileError, match=reason):
            read_ledger_file(path)
    path.write_text(good)
    with pytest.raises(LedgerFileError, match="more than"):
        read_ledger_file(path, max_bytes=100)
    path.unlink()
    os.mkfifo(path)
    with pytest.raises(LedgerFileError, match="not a regular file"):
        read_ledger_file(path)  # before: waited for a writer forever
    path.unlink()
    path.symlink_to(tmp_path / "elsewhere.json")
    (tmp_path / "elsewhere.json").write_text(good)
    with pytest.raises(LedgerFileError, match="cannot be opened"):
        read_ledger_file(path)


VALUES = st.one_of(
    st.binary(max_size=200),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=4),
    st.builds(lambda n, code: np.arange(n, dtype=code), st.integers(0, 300),
              st.sampled_from(["<f8", "<i4", "<u2", "|i1", "<f2"])),
)


@FUZZ
@given(value=VALUES, codec=st.sampled_from(["lz4", "zstd", "none"]),
       cut=st.integers(0, 5_000), flips=FLIPS)
def test_a_damaged_entry_decodes_right_or_raises_corrupt_entry_error(
        value: object, codec: str, cut: int, flips: list[tuple[int, int]]) -> None:
    key = b"k" * 32
    blob, _ = encode(value, _Codec(codec, None), key)
    broken = damaged(blob, cut, flips)
    try:
        back = decode(broken, key)
    except CorruptEntryError:
        return
    assert broken == blob  # only an undamaged entry decodes
    if isinstance(value, np.ndarray):
        assert back.dtype == value.dtype and np.array_equal(back, value)
    else:
        assert back == value


@FUZZ
@given(cut=st.integers(0, 20_000), flips=FLIPS)
def test_a_damaged_disk_file_is_a_miss_with_a_warning(
        tmp_path_factory: pytest.TempPathFactory, cut: int, flips: list[tuple[int, int]]
) -> None:
    directory = tmp_path_factory.mktemp("cache")
    cache = CompressedCache(max_bytes=10, codec="none", disk_dir=directory)
    array = np.arange(1_000, dtype=np.float64)
    cache["a"] = array
    (path,) = directory.glob("*.meno")
    blob = path.read_bytes()
    path.write_bytes(damaged(blob, cut, flips))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MenoWarning)
        back = CompressedCache(max_bytes=10, codec="none", disk_dir=directory).get("a")
        mapped_ok = True
        try:
            mapped = CompressedCache(max_bytes=10, codec="none", disk_dir=directory).memmap("a")
        except KeyError:
            mapped_ok = False
    if damaged(blob, cut, flips) == blob:
        assert np.array_equal(back, array) and mapped_ok and np.array_equal(mapped, array)
    else:
        assert back is None and not mapped_ok


@FUZZ
@given(cut=st.integers(0, 400), flips=FLIPS)
def test_a_damaged_inflight_file_reads_right_or_raises_ledger_file_error(
        tmp_path_factory: pytest.TempPathFactory, cut: int, flips: list[tuple[int, int]]
) -> None:
    from meno_jupyter.core.ledger import read_inflight_file, write_inflight

    path = tmp_path_factory.mktemp("inflight") / "meno-inflight-kernel-1.json"
    write_inflight(path, 12, "cell-id", "m = a.merge(b)", 123_456)
    expected = read_inflight_file(path)
    path.write_bytes(damaged(path.read_bytes(), cut, flips))
    try:
        found = read_inflight_file(path)
    except LedgerFileError:
        return
    assert set(found) == set(expected)
    assert isinstance(found["running"], bool) and isinstance(found["source_head"], str)
    assert found["execution_count"] is None or isinstance(found["execution_count"], int)


@FUZZ
@given(cut=st.integers(0, 300), flips=FLIPS)
def test_a_damaged_guard_file_reads_right_or_raises_ledger_file_error(
        tmp_path_factory: pytest.TempPathFactory, cut: int, flips: list[tuple[int, int]]
) -> None:
    from meno_jupyter.core.guard import GuardStatus, read_guard_file, write_guard_file

    path = tmp_path_factory.mktemp("guard") / "meno-guard-kernel-1.json"
    write_guard_file(path, GuardStatus(True, 0.9, 900, 1000, 500, "cgroup v2", None, 3))
    expected = read_guard_file(path)
    path.write_bytes(damaged(path.read_bytes(), cut, flips))
    try:
        found = read_guard_file(path)
    except LedgerFileError:
        return
    assert set(found) == set(expected)
    assert isinstance(found["on"], bool) and 0 < found["at"] < 1
    assert all(type(found[name]) is int for name in ("pid", "stops", "limit_bytes"))
