"""%memguard in a real IPython shell (the real OOM kill is in tests/oom)."""

from __future__ import annotations

import resource
import threading
from typing import Any

import numpy as np
import pytest
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output

from meno_jupyter.core.guard import MemoryGuardError
from tests.magics.helpers import shown


@pytest.fixture
def guarded(shell: Any) -> Any:
    shell.run_line_magic("memguard", "on")
    yield shell
    shell.run_line_magic("memguard", "off")


def test_status_on_and_off(shell: Any) -> None:
    before = resource.getrlimit(resource.RLIMIT_DATA)
    exceptions = shell.custom_exceptions
    with capture_output() as captured:
        shell.run_line_magic("memguard", "")
        shell.run_line_magic("memguard", "on --at 80%")
        shell.run_line_magic("memguard", "status")
    lines = captured.stdout.splitlines()
    assert lines[0].startswith("memory guard off")
    assert lines[1].startswith("memory guard on at 80% of the") and "stops a cell at" in lines[1]
    assert lines[2].startswith("memory guard on at 80%")
    assert "meno-guard" in [t.name for t in threading.enumerate()]
    with capture_output() as captured:
        shell.run_line_magic("memguard", "off")
    assert "allocation limit is back" in captured.stdout
    assert resource.getrlimit(resource.RLIMIT_DATA) == before
    assert "meno-guard" not in [t.name for t in threading.enumerate()]
    assert shell.custom_exceptions == exceptions


@pytest.mark.parametrize(("line", "message"), [("on --at 5%", "between 10% and 99%"),
                                               ("on --at lots", "a share like 90%"),
                                               ("status --at 80%", "goes with on"),
                                               ("maybe", "invalid choice"),
                                               ("on --bogus", "unrecognized")])
def test_bad_arguments(shell: Any, line: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        shell.run_line_magic("memguard", line)
    assert "meno-guard" not in [t.name for t in threading.enumerate()]


def test_help_has_usage_and_examples(shell: Any) -> None:
    doc = shell.find_line_magic("memguard").__doc__
    assert "%memguard [--at LEVEL] [{on,off,status}]" in doc
    assert "%memguard on --at 80%" in doc and "c.MemGuard.on_load" in doc
    assert "``" not in doc  # the help text is read as plain text


def test_a_refused_allocation_becomes_a_guard_error_with_the_line(guarded: Any) -> None:
    guarded.user_ns["np"] = np
    guarded.run_cell("kept = list(range(100_000))")
    with capture_output() as captured:
        result = guarded.run_cell("x = 1\nbig = np.ones(10**13)")
    assert isinstance(result.error_in_exec, MemoryGuardError)
    text = shown(captured)
    assert "MemoryGuardError" in text and "An allocation was refused" in text
    assert "in line 2: `big = np.ones(10**13)`" in text
    assert "Your variables are intact; the largest: `kept`" in text
    assert guarded.user_ns["kept"][-1] == 99_999
    assert guarded.run_cell("y = 2").success


def test_other_errors_are_untouched(guarded: Any) -> None:
    with capture_output():
        result = guarded.run_cell("1 / 0")
    assert isinstance(result.error_in_exec, ZeroDivisionError)
