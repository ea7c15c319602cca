"""Shared fixtures: fail any test that leaves a sampler thread behind; start from a trimmed heap."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

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


# One real IPython shell for the whole run (IPython allows one per process): the magics'
# tests and the Dask ones share it.
@pytest.fixture(scope="session")
def session_shell() -> Any:
    from IPython.testing.globalipapp import start_ipython

    shell = start_ipython()
    shell.run_line_magic("load_ext", "meno_jupyter")
    return shell


@pytest.fixture
def shell(session_shell: Any) -> Iterator[Any]:
    """A real IPython shell with the extension loaded and a clean user namespace."""
    formatter = session_shell.display_formatter
    active = list(formatter.active_types)
    session_shell.run_line_magic("reset", "-f")
    yield session_shell
    formatter.active_types = active
    session_shell.run_line_magic("reset", "-f")
