"""--trace on memray: line attribution of every allocation, native ones included."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest

from meno_jupyter.core.memory import MIB
from meno_jupyter.core.profiler import Profiler

memray = pytest.importorskip("memray", reason="memray has wheels for Linux and macOS only")


def spike() -> float:
    a = np.ones(64 * MIB // 8)
    b = float((a * 2 + 1).sum())  # a 64 MiB temporary
    return b


def build_rows() -> list[bytes]:
    return [bytes(1000) for _ in range(100_000)]  # 100 MB in small objects


def test_native_buffers_are_charged_to_the_line_that_made_them() -> None:
    with Profiler(trace=True) as prof:
        spike()
    result = prof.result
    assert result.tracer == "memray" and result.top_lines
    by_source = {t.line.source: t for t in result.top_lines}
    temporary = by_source["b = float((a * 2 + 1).sum())  # a 64 MiB temporary"]
    assert abs(temporary.peak_bytes - 64 * MIB) <= MIB  # numpy's malloc, seen by memray
    assert temporary.retained_bytes < MIB  # freed before the block ended
    assert abs(by_source["a = np.ones(64 * MIB // 8)"].peak_bytes - 64 * MIB) <= MIB
    assert result.traced_peak_bytes is not None and result.traced_peak_bytes >= 128 * MIB
    assert "memray" in str(result)


def test_a_called_function_line_is_named_with_what_it_holds() -> None:
    with Profiler(trace=True, top_n=3) as prof:
        rows = build_rows()
    top = prof.result.top_lines[0]
    assert "bytes(1000) for _ in range(100_000)" in top.line.source
    assert top.retained_bytes >= 95 * 10**6 and top.count > 0
    del rows


def test_native_frames_name_the_c_functions_under_a_line() -> None:
    with Profiler(trace=True, native=True) as prof:
        block = np.ones(32 * MIB // 8)
    top = prof.result.top_lines[0]
    assert "np.ones" in top.line.source
    assert top.native_frames and any("PyDataMem" in f or "malloc" in f
                                     for f in top.native_frames)
    assert "←" in str(prof.result)
    del block


def test_the_capture_file_is_removed_or_kept_where_asked(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with Profiler(trace=True) as prof:
        spike()
    assert list(tmp_path.iterdir()) == []  # nothing left behind
    assert prof.result.trace_capture_bytes and prof.result.trace_capture_bytes < 1 * MIB
    kept = tmp_path / "kept" / "cell.bin"
    with Profiler(trace=True, keep_trace=kept) as prof:
        spike()
    assert kept.exists() and prof.result.trace_capture_path == str(kept)
    assert "memray flamegraph" in (prof.result.trace_note or "")
    with memray.FileReader(kept) as reader:  # memray's own tools read it
        assert reader.metadata.peak_memory >= 128 * MIB
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]


def test_nested_and_foreign_trackers_fall_back_to_tracemalloc(tmp_path: Path) -> None:
    with Profiler(trace=True) as outer, Profiler(trace=True) as inner:
        rows = [{"i": i} for i in range(50_000)]
    assert outer.result.tracer == "memray"
    assert inner.result.tracer == "tracemalloc"
    assert "memray is already tracking" in (inner.result.trace_note or "")
    assert inner.result.top_lines and "range(50_000)" in inner.result.top_lines[0].line.source
    del rows
    with memray.Tracker(tmp_path / "theirs.bin"), Profiler(trace=True) as prof:
        spike()
    assert prof.result.tracer == "tracemalloc"  # their tracker kept running, unharmed
    with memray.FileReader(tmp_path / "theirs.bin") as reader:
        assert reader.metadata.peak_memory >= 64 * MIB


def test_a_block_that_raises_keeps_its_traced_lines() -> None:
    prof = Profiler(trace=True)
    with pytest.raises(ValueError), prof:
        block = np.ones(16 * MIB // 8)
        raise ValueError(block.size)
    assert prof.result.error == "ValueError"
    assert "np.ones(16 * MIB // 8)" in prof.result.top_lines[0].line.source


def test_without_memray_trace_uses_tracemalloc_and_options_say_why(tmp_path: Path) -> None:
    script = textwrap.dedent("""
        import sys
        sys.modules["memray"] = None  # as if it were not installed
        from meno_jupyter.core.profiler import Profiler
        with Profiler(trace=True) as prof:
            rows = [{"i": i} for i in range(20_000)]
        print(prof.result.tracer, "range(20_000)" in prof.result.top_lines[0].line.source)
        for options in ({"native": True}, {"tracer": "memray"}):
            try:
                Profiler(trace=True, **options)
            except ValueError as error:
                print(error)
    """)
    path = tmp_path / "no_memray.py"  # a file of the user's, so that its lines are named
    path.write_text(script)
    done = subprocess.run([sys.executable, str(path)], capture_output=True, text=True,
                          check=True, timeout=120)
    lines = done.stdout.splitlines()
    assert lines[0] == "tracemalloc True"
    assert all("pip install 'meno-jupyter[trace]'" in line for line in lines[1:3])


def test_tracer_options_are_checked() -> None:
    with pytest.raises(ValueError, match="tracer must be one of"):
        Profiler(trace=True, tracer="valgrind")
    with pytest.raises(ValueError, match="only with trace=True"):
        Profiler(native=True)
