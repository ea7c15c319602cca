from __future__ import annotations

import logging
import sys
from collections.abc import Iterator

import numpy as np
import pytest

from meno_jupyter.core.batching import adaptive_batch_size
from meno_jupyter.core.decorators import profile_block, profile_memory, release_memory
from meno_jupyter.core.memory import MIB, MemoryLimit, read_rss
from tests.memhelp import spike

LINUX = sys.platform.startswith("linux")


def test_profile_block_logs_and_keeps_the_result(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="meno_jupyter"), profile_block("load") as block:
        spike(48)
    assert block.result.label == "load"
    if LINUX:
        assert 47 * MIB <= block.result.peak_increase <= 50 * MIB
    assert "load: peak" in caplog.text


def test_profile_memory_on_a_function() -> None:
    @profile_memory(log_level=None)
    def work(n: int) -> int:
        spike(32)
        return n * 2

    assert work.last_profile is None  # type: ignore[attr-defined]
    assert work(21) == 42
    result = work.last_profile  # type: ignore[attr-defined]
    assert result.label.endswith("work")
    if LINUX:
        assert result.exact_peak and 31 * MIB <= result.peak_increase <= 34 * MIB


def test_profile_memory_on_a_generator_spans_the_iteration() -> None:
    @profile_memory(label="chunks", log_level=None)
    def chunks() -> Iterator[int]:
        for i in range(3):
            spike(16 * (i + 1))  # the largest spike comes last
            yield i

    gen = chunks()
    assert list(gen) == [0, 1, 2]
    result = chunks.last_profile  # type: ignore[attr-defined]
    assert result.label == "chunks"
    if LINUX:
        assert 47 * MIB <= result.peak_increase <= 50 * MIB


def test_profile_memory_without_parentheses() -> None:
    @profile_memory
    def plain() -> str:
        return "ok"

    assert plain() == "ok" and plain.last_profile is not None  # type: ignore[attr-defined]


@pytest.mark.skipif(not LINUX, reason="malloc_trim is glibc's")
def test_release_memory_trims_after_a_call_that_grew() -> None:
    def churn() -> None:
        blocks = [np.ones(1000) for _ in range(30_000)]  # ~240 MB of small heap blocks
        del blocks  # freed, but glibc keeps the pages resident

    before = read_rss()
    churn()
    kept_without = read_rss() - before
    released = release_memory(threshold_mb=50)(churn)
    before = read_rss()
    released()
    kept_with = read_rss() - before
    assert kept_without > 100 * MIB or kept_with < 20 * MIB
    assert kept_with < 20 * MIB


def test_release_memory_rejects_a_negative_threshold() -> None:
    with pytest.raises(ValueError):
        release_memory(threshold_mb=-1)


def limit(available: int, total: int = 10_000) -> MemoryLimit:
    return MemoryLimit(total, "cgroup v2", available, total)


def test_batch_size_from_per_item_bytes() -> None:
    assert adaptive_batch_size(64, per_item_bytes=100, limit_reader=lambda: limit(4000)) == 20
    assert adaptive_batch_size(8, per_item_bytes=100, limit_reader=lambda: limit(4000)) == 8
    assert adaptive_batch_size(64, per_item_bytes=10**9, limit_reader=lambda: limit(10)) == 1


@pytest.mark.parametrize(("rss", "expected"), [(1000, 64), (7500, 32), (9000, 16)])
def test_batch_size_scales_with_pressure(rss: int, expected: int) -> None:
    assert adaptive_batch_size(64, limit_reader=lambda: limit(5000),
                               rss_reader=lambda: rss) == expected


@pytest.mark.parametrize("kwargs", [{"base": 0}, {"base": 8, "per_item_bytes": 0},
                                    {"base": 8, "headroom_share": 0}])
def test_batch_size_bad_input(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        adaptive_batch_size(**kwargs)
