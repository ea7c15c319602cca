from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from meno_jupyter.core.ledger import (
    LEDGER_SCHEMA_VERSION,
    RECORD_FIELDS,
    CellRecord,
    CellRecorder,
    Ledger,
    ledger_path_for,
    read_ledger_file,
    source_head,
)
from meno_jupyter.core.memory import MIB
from tests.memhelp import spike


def record(n: int, peak: int = 150) -> CellRecord:
    return CellRecord(n, f"cell {n}", 1000.0 + n, 0.1, 100, 120, peak, True, 0)


def test_record_derived_fields_and_round_trip() -> None:
    rec = record(3)
    assert rec.peak_increase == 50 and rec.delta == 20
    data = rec.to_dict()
    assert set(data) == set(RECORD_FIELDS)
    assert CellRecord.from_dict(data) == rec


def test_ledger_is_bounded_and_keeps_the_newest() -> None:
    ledger = Ledger(max_cells=100)
    for n in range(1_000):
        ledger.add(record(n))
    assert len(ledger) == 100
    assert [r.execution_count for r in ledger][:2] == [900, 901]


def test_file_is_written_atomically_with_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "meno-ledger-kernel-1.json"
    ledger = Ledger(path=path, file_max_cells=5)
    for n in range(8):
        ledger.add(record(n, peak=100 + n))
    data = read_ledger_file(path)
    assert data["schema"] == LEDGER_SCHEMA_VERSION
    assert [c["execution_count"] for c in data["cells"]] == [3, 4, 5, 6, 7]
    assert data["cells"][-1]["peak_increase"] == 7
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left


def test_reading_something_else_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"schema": 999}))
    with pytest.raises(ValueError, match="not a meno-jupyter ledger"):
        read_ledger_file(path)


def test_exports(tmp_path: Path) -> None:
    ledger = Ledger()
    for n in range(3):
        ledger.add(record(n))
    ledger.to_csv(tmp_path / "l.csv")
    ledger.to_json(tmp_path / "l.json")
    assert (tmp_path / "l.csv").read_text().splitlines()[0].startswith("execution_count,")
    assert len(json.loads((tmp_path / "l.json").read_text())["cells"]) == 3
    frame = ledger.to_frame()
    assert list(frame.columns) == list(RECORD_FIELDS) and len(frame) == 3


def test_ledger_path_is_named_after_the_connection_file() -> None:
    path = ledger_path_for("/x/runtime/kernel-1234-abcd.json")
    assert path == Path("/x/runtime/meno-ledger-kernel-1234-abcd.json")


def test_source_head_skips_blank_lines_and_shortens() -> None:
    assert source_head("\n\n  x = 1\ny = 2") == "x = 1"
    assert len(source_head("a" * 500)) == 80
    assert source_head("") == ""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="exact peak")
def test_recorder_catches_a_short_spike_exactly() -> None:
    ledger = Ledger()
    recorder = CellRecorder(ledger)
    recorder.begin(7, "spike = ...")
    spike(64)
    rec = recorder.end()
    assert rec is not None and rec.exact_peak
    assert 63.5 * MIB <= rec.peak_increase <= 65 * MIB
    assert list(ledger)[-1] is rec


def test_recorder_cost_is_bounded() -> None:
    # Not a speed target (that lives in bench/): a guard against a per-cell cost gone wrong.
    ledger = Ledger(path=None)
    recorder = CellRecorder(ledger)
    started = time.perf_counter()
    for n in range(1_000):
        recorder.begin(n, "x = 1")
        recorder.end()
    assert (time.perf_counter() - started) / 1_000 < 0.002
    assert len(ledger) == 1_000


def test_cancel_records_nothing() -> None:
    ledger = Ledger()
    recorder = CellRecorder(ledger)
    recorder.begin(1, "x")
    recorder.cancel()
    assert recorder.end() is None and len(ledger) == 0


def test_cell_ids_are_kept_and_version_1_files_still_read(tmp_path: Path) -> None:
    path = tmp_path / "meno-ledger-kernel-2.json"
    ledger = Ledger(path=path)
    recorder = CellRecorder(ledger)
    recorder.begin(4, "x = 1", cell_id="3f1c-cell")
    recorder.end()
    data = read_ledger_file(path)
    assert data["schema"] == 2 and data["cells"][0]["cell_id"] == "3f1c-cell"
    assert CellRecord.from_dict(data["cells"][0]).cell_id == "3f1c-cell"
    # A file written before cell ids: every cell reads with cell_id None.
    old = {"schema": 1, "pid": 1, "updated_at": 1.0,
           "cells": [{k: v for k, v in record(1).to_dict().items() if k != "cell_id"}]}
    path.write_text(json.dumps(old))
    assert read_ledger_file(path)["cells"][0]["cell_id"] is None
    for bad in (7, "x" * 300, ""):
        cell = dict(record(1).to_dict(), cell_id=bad)
        path.write_text(json.dumps(dict(old, schema=2, cells=[cell])))
        if bad == "":
            assert read_ledger_file(path)["cells"][0]["cell_id"] == ""
            continue
        with pytest.raises(ValueError, match="cell_id"):
            read_ledger_file(path)
    path.write_text(json.dumps(dict(old, schema=True)))  # true == 1 in Python: refused
    with pytest.raises(ValueError, match="not a meno-jupyter ledger"):
        read_ledger_file(path)
