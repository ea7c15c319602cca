from __future__ import annotations

import sys

import numpy as np
import pytest

from meno_jupyter.core import cleanup
from meno_jupyter.core.cleanup import Released, finish_release, trim_allocator
from meno_jupyter.core.memory import MIB, parse_size, read_rss


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc")
def test_trim_hands_freed_small_objects_back() -> None:
    # Many small objects live in the heap (not mmap): freeing them keeps RSS until trimmed.
    blocks = [np.ones(1000) for _ in range(40_000)]  # ~320 MB in 8 kB pieces
    before = read_rss()
    del blocks
    done, note = trim_allocator()
    assert done and "malloc_trim" in note
    assert before - read_rss() >= 200 * MIB


def test_without_glibc_trim_is_skipped_with_a_note(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cleanup, "_malloc_trim", lambda: None)
    done, note = trim_allocator()
    assert not done and "skipped" in note


def test_dry_run_reports_without_acting() -> None:
    report = finish_release(1000, [Released("output", "Out[1]", 500)], dry_run=True)
    assert report.dry_run and report.freed_bytes == 0
    assert "would be dropped" in str(report)


@pytest.mark.parametrize(("text", "value"), [("0", 0), ("512", 512), ("10MB", 10_000_000),
                                             ("10 MiB", 10 * MIB), ("1.5GiB", 1536 * MIB)])
def test_parse_size(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "ten", "10 parsecs", "-5MB", "nan"])
def test_parse_size_rejects_nonsense(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)
