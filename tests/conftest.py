"""Shared fixtures: fail any test that leaves a sampler thread behind."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest


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
