"""Shared fixtures: fail any test that leaves a sampler thread behind; start from a trimmed heap."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from meno_jupyter.core.cleanup import trim_allocator


def _sampler_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("meno-")]


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    before = set(_sampler_threads())
    yield
    deadline = time.monotonic() + 2.0
    leaked = [t for t in _sampler_threads() if t not in before]
    while leaked and time.monotonic() < deadline:
        time.sleep(0.05)
        leaked = [t for t in _sampler_threads() if t not in before and t.is_alive()]
    assert not leaked, f"test leaked threads: {leaked}"


@pytest.fixture(autouse=True)
def trimmed_heap() -> None:
    """Hand freed heap pages back before each test.

    Earlier tests leave freed but still resident heap memory; an allocation that reuses it
    does not raise RSS, which is true but would make one test's figures depend on another's.
    """
    trim_allocator()
