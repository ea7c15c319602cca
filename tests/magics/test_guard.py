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
    assert "%memguard [--spill] [--at LEVEL] [{on,off,status}]" in doc
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
    # The traceback ends at the user's line, its frames shown with their arguments.
    assert "numeric.py" not in text and "failed resolving arguments" not in text
    assert guarded.user_ns["kept"][-1] == 99_999
    assert guarded.run_cell("y = 2").success


def test_other_errors_are_untouched(guarded: Any) -> None:
    with capture_output():
        result = guarded.run_cell("1 / 0")
    assert isinstance(result.error_in_exec, ZeroDivisionError)


def test_a_users_own_memory_error_is_no_guard_stop(guarded: Any) -> None:
    import sys

    code = ("def fill():\n    cache = list(range(1000))\n"
            "    raise MemoryError('my cache is full')\nfill()")
    with capture_output() as captured:
        result = guarded.run_cell(code)
    assert type(result.error_in_exec) is MemoryError
    text = shown(captured)
    assert "MemoryError: my cache is full" in text and "meno guard" not in text
    tb = sys.last_traceback
    while tb is not None and tb.tb_frame.f_code.co_name != "fill":
        tb = tb.tb_next
    assert tb is not None and len(tb.tb_frame.f_locals["cache"]) == 1000  # %debug sees them
    with capture_output() as captured:
        guarded.run_line_magic("memguard", "status")
    assert captured.stdout.strip().endswith("0 stopped")


def test_a_stop_inside_memprofile_is_told_once(guarded: Any) -> None:
    guarded.user_ns["np"] = np
    with capture_output() as captured:
        guarded.run_cell("%%memprofile --no-plot\nbig = np.ones(10**13)")
    text = shown(captured)
    assert "An allocation was refused" in text
    assert text.count("Your variables are intact") == 1


def test_mem_limit_is_the_one_limit_of_the_kernel_side(shell: Any, monkeypatch: Any) -> None:
    # JupyterHub sets $MEM_LIMIT; the server measures against it, so do the magics.
    monkeypatch.setenv("MEM_LIMIT", str(2 * 2**30))
    with capture_output() as captured:
        shell.run_line_magic("memguard", "status")
        shell.run_line_magic("memguard", "on")
        shell.run_line_magic("memguard", "off")
        shell.run_line_magic("memstatus", "--top 1")
    text = shown(captured)
    assert "memory guard on at 90% of the 2.0 GiB limit (MEM_LIMIT)" in text
    assert "2.0 GiB (MEM_LIMIT)" in text.split("memory status", 1)[1]
    from meno_jupyter.core.memory import effective_limit

    assert effective_limit().limit_bytes == 2 * 2**30
    monkeypatch.setenv("MEM_LIMIT", "a lot")  # unreadable: the cgroup's or machine's
    assert effective_limit().source != "MEM_LIMIT"


def test_a_stop_closes_idle_encoder_processes(shell: Any, tmp_path: Any) -> None:
    """A cell the guard stops lets the caches and the warm encoder (topics) go."""
    import psutil

    from meno_jupyter.topics import ChunkedEmbedder
    from meno_jupyter.topics.encoders import warm_encoders

    warm_encoders.close()
    ChunkedEmbedder(quantize=True, progress=False).embed(["a text", "another"], tmp_path / "s")
    (pid,) = warm_encoders.pids()
    shell.user_ns["np"] = np
    shell.run_line_magic("memguard", "on")
    try:
        with capture_output() as captured:
            result = shell.run_cell("big = np.ones(10**13)")
    finally:
        shell.run_line_magic("memguard", "off")
    assert isinstance(result.error_in_exec, MemoryGuardError)
    assert "of caches and idle encoder processes" in shown(captured)
    assert warm_encoders.pids() == []
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
