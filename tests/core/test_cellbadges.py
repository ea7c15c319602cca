"""Per-cell memory figures saved in notebooks: reading them back, stale cells, nbconvert."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from meno_jupyter import notebook_memory
from meno_jupyter.core.cellbadges import (
    METADATA_KEY,
    CellMemory,
    read_cell_memory,
    source_fingerprint,
)
from meno_jupyter.core.memory import GIB, MIB


def figures(source: str, peak: int, kept: int, **extra: Any) -> dict[str, Any]:
    return {"schema": 1, "peak_increase": peak, "delta": kept, "peak_rss": 2 * GIB,
            "duration_s": 3.4, "limit_bytes": 4 * GIB, "measured_at": 1_700_000_000.0,
            "execution_count": 2, "source_fingerprint": source_fingerprint(source), **extra}


def write_notebook(path: Path) -> Path:
    kept = "big = bytearray(200 * 2**20)"
    notebook = new_notebook(cells=[
        new_markdown_cell("# title"),
        new_code_cell(kept, metadata={METADATA_KEY: figures(kept, 200 * MIB, 200 * MIB)}),
        new_code_cell("print(1)"),  # never measured
        new_code_cell("edited since", metadata={
            METADATA_KEY: figures("what it was", 300 * MIB, 0)}),
        new_code_cell("x = 1", metadata={METADATA_KEY: {"peak_increase": "lots"}}),  # bad
    ])
    nbformat.write(notebook, path)
    return path


def test_notebook_memory_reads_the_saved_figures(tmp_path: Path) -> None:
    frame = notebook_memory(write_notebook(tmp_path / "analysis.ipynb"))
    assert list(frame["index"]) == [1, 3]  # the bad and the unmeasured cells left out
    first = frame.iloc[0]
    assert first["source_head"] == "big = bytearray(200 * 2**20)"
    assert first["peak_increase"] == 200 * MIB and first["delta"] == 200 * MIB
    assert first["limit_share"] == pytest.approx(0.5) and not first["stale"]
    assert bool(frame.iloc[1]["stale"])  # its source changed since it was measured
    assert isinstance(first["cell_id"], str) and first["execution_count"] == 2


def test_the_badge_line_and_the_fingerprint_shared_with_the_extension() -> None:
    memory = CellMemory(0, None, 3, "x", int(1.2 * GIB), 310 * MIB, int(2.48 * GIB), 3.4,
                        4 * GIB, 0.0, False)
    assert memory.badge_text() == "peak +1.2 GiB · kept +310.0 MiB · 3.4 s · 62 % of limit"
    # The same values as labextension/src/__tests__/badges.spec.ts
    assert source_fingerprint("x = 1") == "41f65c6b"
    assert source_fingerprint("é😀") == "44cc4da1"


@pytest.mark.parametrize(("text", "reason"), [
    ("not json", "is not a notebook"),
    ('{"cells": 3}', "no list of cells"),
    ("[]", "no list of cells"),
])
def test_a_file_that_is_not_a_notebook_is_a_clear_error(tmp_path: Path, text: str,
                                                       reason: str) -> None:
    path = tmp_path / "x.ipynb"
    path.write_text(text)
    with pytest.raises(ValueError, match=reason):
        read_cell_memory(path)


def test_nbconvert_shows_the_line_under_each_measured_cell(tmp_path: Path) -> None:
    from nbconvert.exporters import get_exporter

    from meno_jupyter.nbconvert import MemoryHTMLExporter

    path = write_notebook(tmp_path / "analysis.ipynb")
    assert get_exporter("meno_html") is MemoryHTMLExporter  # --to meno_html
    body, _ = MemoryHTMLExporter().from_filename(str(path))
    assert body.count('class="meno-badge"') == 2
    assert "memory: peak +200.0 MiB · kept +200.0 MiB · 3.4 s · 50 % of limit" in body
    assert "(measured before the cell was changed)" in body
    saved = json.loads(path.read_text())
    assert all(len(cell.get("outputs", [])) == 0 for cell in saved["cells"]
               if cell["cell_type"] == "code")  # the file itself is untouched


@pytest.mark.parametrize("absurd", [
    {"peak_rss": 1e301}, {"measured_at": float("nan")}, {"duration_s": -5},
    {"limit_bytes": int("9" * 400)}, {"peak_increase": int("9" * 400)},
    {"execution_count": -3}, {"measured_at": 1e15},
])
def test_absurd_saved_figures_are_unreadable_not_shown(tmp_path: Path,
                                                       absurd: dict[str, Any]) -> None:
    from meno_jupyter.nbconvert import MemoryHTMLExporter

    notebook = new_notebook(cells=[
        new_code_cell("x = 1", metadata={METADATA_KEY: figures("x = 1", MIB, MIB, **absurd)}),
        new_code_cell("y = 2", metadata={METADATA_KEY: figures("y = 2", MIB, MIB)}),
    ])
    path = tmp_path / "absurd.ipynb"
    nbformat.write(notebook, path)
    assert [memory.index for memory in read_cell_memory(path)] == [1]  # no OverflowError
    assert len(notebook_memory(path)) == 1
    body, _ = MemoryHTMLExporter().from_filename(str(path))
    assert body.count('class="meno-badge"') == 1
