"""%memwatch, %memclean and %%memleak in a real IPython shell."""

from __future__ import annotations

import json
import os
import sys
import weakref
from pathlib import Path
from typing import Any

import pytest
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output

import meno_jupyter
from meno_jupyter.core.memory import MIB
from tests.magics.helpers import shown

LINUX = sys.platform.startswith("linux")


@pytest.fixture
def watching(shell: Any) -> Any:
    shell.run_line_magic("memwatch", "on --clear")
    yield shell
    shell.run_line_magic("memwatch", "off")


def cells(shell: Any, *sources: str) -> None:
    for source in sources:
        with capture_output():
            shell.run_cell(source, store_history=True)


@pytest.mark.skipif(not LINUX, reason="exact peak needs /proc/self/clear_refs")
def test_ledger_records_each_cell_with_an_exact_peak(watching: Any) -> None:
    cells(watching,
          "from tests.memhelp import keep, spike",
          "spike(64)",
          "kept = keep(32)",
          "1 / 0")
    frame = meno_jupyter.ledger()
    spike = frame[frame.source_head == "spike(64)"].iloc[0]
    assert 63.5 * MIB <= spike.peak_increase <= 65 * MIB
    assert spike.exact_peak
    kept = frame[frame.source_head == "kept = keep(32)"].iloc[0]
    assert 31 * MIB <= kept.delta <= 34 * MIB
    assert frame.iloc[-1].error == "ZeroDivisionError"
    counts = list(frame.execution_count)
    assert counts == sorted(counts) and len(set(counts)) == len(counts)


def test_nested_cells_count_once(watching: Any) -> None:
    cells(watching, "%%memprofile --no-plot\nx = 1", "%%memleak -n 3 --warmup 0 --no-trace\ny = 2")
    frame = meno_jupyter.ledger()
    heads = list(frame.source_head)
    assert heads[-2:] == ["%%memprofile --no-plot", "%%memleak -n 3 --warmup 0 --no-trace"]


def test_show_and_export(watching: Any, tmp_path: Path) -> None:
    cells(watching, "a = [0] * 1000", "b = [1] * 1000")
    with capture_output() as captured:
        watching.run_line_magic("memwatch", f"--json {tmp_path}/l.json --csv {tmp_path}/l.csv")
        watching.run_line_magic("memwatch", "--top 5")
    data = json.loads((tmp_path / "l.json").read_text())
    assert any(c["source_head"] == "a = [0] * 1000" for c in data["cells"])
    assert "source_head" in (tmp_path / "l.csv").read_text()
    assert "memory ledger" in shown(captured) and "b = [1] * 1000" in shown(captured)


def test_rich_display_has_the_session_chart(watching: Any) -> None:
    cells(watching, "a = 1")
    watching.display_formatter.active_types = ["text/plain", "text/html"]
    with capture_output() as captured:
        watching.run_line_magic("memwatch", "")
    assert any("application/vnd.plotly.v1+json" in o.data for o in captured.outputs)


def test_off_stops_recording(watching: Any) -> None:
    watching.run_line_magic("memwatch", "off")
    before = len(meno_jupyter.ledger())
    cells(watching, "z = 1", "z = 2")
    assert len(meno_jupyter.ledger()) == before
    watching.run_line_magic("memwatch", "on")


def test_ledger_stays_bounded_over_1000_cells(watching: Any) -> None:
    registry = watching.magics_manager.registry["WatchMagics"]
    for n in range(1_000):
        watching.run_cell(f"v = {n}", store_history=False)
    assert len(registry.ledger) >= 1_000
    assert len(registry.ledger) <= registry.ledger.max_cells


def test_export_then_clear_writes_the_cells_before_forgetting_them(
        watching: Any, tmp_path: Path) -> None:
    cells(watching, "a = [0] * 1000", "b = [1] * 1000")
    with capture_output() as captured:
        watching.run_line_magic(
            "memwatch", f"--csv {tmp_path}/out.csv --json {tmp_path}/out.json --clear")
    exported = json.loads((tmp_path / "out.json").read_text())["cells"]
    assert [c["source_head"] for c in exported][-2:] == ["a = [0] * 1000", "b = [1] * 1000"]
    assert "b = [1] * 1000" in (tmp_path / "out.csv").read_text()
    assert "cells forgotten" in captured.stdout
    assert len(meno_jupyter.ledger()) == 0


@pytest.mark.parametrize(("line", "message"), [("maybe", "invalid choice"),
                                               ("--top 0", "--top"),
                                               ("--csv /no/such/dir/x.csv", "does not exist"),
                                               ("--csv /proc/x.csv", "cannot write /proc/x.csv"),
                                               ("--json /proc/x.json",
                                                "cannot write /proc/x.json"),
                                               ("--json /tmp", "is a directory")])
def test_memwatch_bad_arguments(shell: Any, line: str, message: str) -> None:
    shell.run_line_magic("memwatch", "on")
    shell.run_cell("kept_cell = 1", store_history=True)
    before = len(meno_jupyter.ledger())
    with pytest.raises(UsageError, match=message):
        shell.run_line_magic("memwatch", line + " --clear")
    assert len(meno_jupyter.ledger()) == before >= 1  # a refused export clears nothing
    shell.run_line_magic("memwatch", "off")


@pytest.mark.skipif(not LINUX, reason="RSS release needs munmap/malloc_trim")
def test_memclean_frees_a_displayed_then_deleted_frame(shell: Any) -> None:
    cells(shell,
          "import numpy as np, pandas as pd, weakref",
          "frame = pd.DataFrame({'a': np.arange(25_000_000), 'b': np.ones(25_000_000)})",
          "frame",  # now Out[N], _ and _N hold it
          "ref = weakref.ref(frame); del frame")
    assert shell.user_ns["ref"]() is not None  # deleted, but still alive: the problem
    with capture_output() as captured:
        shell.run_line_magic("memclean", "-o report")
    report = shell.user_ns["report"]
    assert shell.user_ns["ref"]() is None
    assert report.freed_bytes >= 0.8 * 400 * MIB  # most of the 400 MB frame
    assert "Out[" in shown(captured)


def test_memclean_dry_run_changes_nothing(shell: Any) -> None:
    cells(shell, "data = list(range(100_000))", "data")
    out_before = dict(shell.user_ns["Out"])
    with capture_output() as captured:
        shell.run_line_magic("memclean", "--dry-run")
    assert shell.user_ns["Out"] == out_before
    assert "would drop" in shown(captured)


def test_memclean_min_size_keeps_small_outputs(shell: Any) -> None:
    cells(shell, "small = [1, 2]", "small", "big = list(range(1_000_000))", "big")
    small_number = next(n for n, v in shell.user_ns["Out"].items() if v == [1, 2])
    with capture_output():
        shell.run_line_magic("memclean", "--min-size 1MB")
    assert list(shell.user_ns["Out"]) == [small_number]


def test_memclean_deletes_only_named_variables(shell: Any) -> None:
    cells(shell, "keep = 1", "drop_me = [0] * 10_000")
    with capture_output():
        shell.run_line_magic("memclean", "--del drop_me")
    assert "drop_me" not in shell.user_ns and shell.user_ns["keep"] == 1


def test_memclean_missing_name_deletes_nothing(shell: Any) -> None:
    cells(shell, "present = 1")
    with pytest.raises(UsageError, match="missing_name"):
        shell.run_line_magic("memclean", "--del present missing_name")
    assert shell.user_ns["present"] == 1


def test_memclean_bad_size(shell: Any) -> None:
    with pytest.raises(UsageError, match="min-size"):
        shell.run_line_magic("memclean", "--min-size lots")


def test_memleak_tells_a_leak_from_none(shell: Any) -> None:
    cells(shell, "import numpy as np\nkept = []")
    with capture_output() as captured:
        shell.run_cell("%%memleak -n 6 -o leak\nkept.append(np.ones(100_000))")
        shell.run_cell("%%memleak -n 6 -o clean\ntmp = np.ones(1_000_000); del tmp")
    assert shell.user_ns["leak"].leaking
    assert "kept.append" in shell.user_ns["leak"].growing_lines[0].line.source
    assert not shell.user_ns["clean"].leaking, shell.user_ns["clean"].reasons
    assert "LEAK" in shown(captured) and "no leak found" in shown(captured)
    # warmup 2 + 6 measured runs appended 8 arrays
    assert len(shell.user_ns["kept"]) == 8


def test_memleak_cell_that_raises_fails_once(shell: Any) -> None:
    with capture_output() as captured:
        result = shell.run_cell("%%memleak -n 4\nraise ValueError('nope')")
    assert isinstance(result.error_in_exec, ValueError)
    assert shown(captured).count("Traceback (most recent call last)") == 1


def test_memleak_bad_arguments(shell: Any) -> None:
    with pytest.raises(UsageError, match="repeat"):
        shell.run_cell_magic("memleak", "-n 2", "x = 1")


def test_unload_stops_the_hooks(shell: Any) -> None:
    shell.run_line_magic("memwatch", "on")
    registry = shell.magics_manager.registry["WatchMagics"]
    meno_jupyter.unload_ipython_extension(shell)
    assert not registry.watching
    ref = weakref.ref(registry)
    assert ref() is registry


@pytest.mark.skipif(not LINUX or os.geteuid() != 0, reason="makes a device node (root only)")
def test_exports_never_replace_links_devices_or_fifos(watching: Any, tmp_path: Path) -> None:
    import stat
    import threading

    cells(watching, "a = [0] * 1000")
    real = tmp_path / "real.json"
    real.write_text("keep me")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    device = tmp_path / "null"
    os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # what /dev/null is
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    for option, target, reason in (("--json", link, "symbolic link"),
                                   ("--csv", device, "not a regular file"),
                                   ("--csv", fifo, "not a regular file")):
        failure: list[BaseException] = []

        def export(option: str = option, target: Path = target,
                   failure: list[BaseException] = failure) -> None:
            try:
                watching.run_line_magic("memwatch", f"{option} {target}")
            except BaseException as error:  # handed to the test's thread
                failure.append(error)

        worker = threading.Thread(target=export, daemon=True)
        worker.start()
        worker.join(10)
        assert not worker.is_alive(), f"{option} {target} blocked"
        assert len(failure) == 1 and isinstance(failure[0], UsageError), failure
        assert reason in str(failure[0])
    assert real.read_text() == "keep me" and link.is_symlink()
    assert stat.S_ISCHR(os.lstat(device).st_mode) and stat.S_ISFIFO(os.lstat(fifo).st_mode)


@pytest.mark.skipif(not LINUX or os.geteuid() != 0, reason="chowns a directory (root only)")
def test_exports_into_a_directory_of_another_user_are_written_in_place(
        watching: Any, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chown(shared, 65534, 65534)  # nobody's: a rename there could replace what is not ours
    cells(watching, "a = [0] * 1000")
    watching.run_line_magic("memwatch", f"--json {shared}/l.json --csv {shared}/l.csv")
    assert json.loads((shared / "l.json").read_text())["cells"]
    assert sorted(p.name for p in shared.iterdir()) == ["l.csv", "l.json"]  # no leftovers
