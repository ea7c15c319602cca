"""Checkpoints: what is written, when, and what comes back (real forks, real files)."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from meno_jupyter.core.checkpoint import (
    OBJECTS,
    CheckpointError,
    checkpoint_directory,
    manifest_path,
    notebook_identity,
    read_checkpoint,
    restore,
)
from meno_jupyter.core.checkpointer import Checkpointer
from meno_jupyter.core.namespace import names_in
from tests.mounthelp import small_tmpfs


class Kernel:
    """A namespace and a checkpointer, run as a kernel runs its cells."""

    def __init__(self, directory: Path, **kwargs: Any) -> None:
        self.ns: dict[str, object] = {}
        self.cell = 0
        self.checkpointer = Checkpointer(directory, notebook="/w/nb.ipynb",
                                         namespace=lambda: dict(self.ns), **kwargs)

    def run(self, source: str, **values: object) -> bool:
        """Run a "cell" that sets ``values``; return whether a writer started."""
        self.cell += 1
        self.checkpointer.cell_started(self.cell, source)
        self.ns.update(values)
        return self.checkpointer.cell_finished(self.ns, self.cell, source)

    def settle(self) -> None:
        assert self.checkpointer.wait(60), "the writer did not finish"


@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[Kernel]:
    made = Kernel(tmp_path / "cp")
    yield made
    made.checkpointer.close()


def frames() -> dict[str, object]:
    rng = np.random.default_rng(0)
    return {
        "df": pd.DataFrame({
            "i": np.arange(1000, dtype=np.int32),
            "f": rng.random(1000),
            "s": [f"text {i}" for i in range(1000)],
            "c": pd.Categorical(rng.choice(["a", "b", "c"], 1000)),
            "t": pd.date_range("2024-01-01", periods=1000, freq="h", tz="Europe/Paris"),
            "b": rng.random(1000) > 0.5,
        }, index=pd.RangeIndex(5, 1005, name="row")),
        "arr": rng.random((300, 7)).astype(np.float32),
        "fortran": np.asfortranarray(rng.random((50, 40))),
        "nested": {"list": [1, "two", (3.0, None)], "set": {1, 2}, "arr": np.arange(5)},
        "series": pd.Series([1.5, None, 3.0], index=["x", "y", "z"], dtype="Float64"),
    }


def test_everything_restorable_comes_back_equal(kernel: Kernel) -> None:
    values = frames()
    kernel.run("import numpy as np; make data", np=np, **values)
    kernel.settle()
    kernel.ns["lam"] = eval("lambda x: x * factor", {"__name__": "__main__"})
    kernel.ns["factor"] = 3
    kernel.ns["gen"] = (i for i in range(3))
    assert kernel.run("lam = lambda x: x * factor; gen = ...")
    kernel.settle()
    back: dict[str, Any] = {}
    report = restore(kernel.checkpointer.directory, back)
    assert back["df"].equals(values["df"])
    assert back["df"].dtypes.equals(values["df"].dtypes)  # type: ignore[attr-defined]
    assert back["df"].index.equals(values["df"].index)  # type: ignore[attr-defined]
    assert str(back["df"]["t"].dtype).endswith(", Europe/Paris]")
    for name in ("arr", "fortran"):
        assert np.array_equal(back[name], values[name])
        assert back[name].dtype == values[name].dtype  # type: ignore[attr-defined]
    assert back["fortran"].flags.f_contiguous
    assert back["series"].equals(values["series"])
    assert back["nested"]["list"] == [1, "two", (3.0, None)]
    assert back["np"] is np
    # A function of the notebook comes back bound to the namespace it is restored into.
    assert back["lam"](2) == 6
    back["factor"] = 10
    assert back["lam"](2) == 20
    assert "gen" not in back
    assert [(m.name, m.made_by) for m in report.missing] == [("gen", 2)]
    assert "generator" in report.missing[0].reason
    text = report.to_text()
    assert "not restored: a generator" in text and "made by cell [2]: run it again" in text
    assert "as after cell [2]" in text
    arrays = back["arr"]
    arrays[0, 0] = 7  # restored arrays are ordinary, writable ones
    assert arrays[0, 0] == 7


def test_unchanged_variables_are_not_written_again(kernel: Kernel) -> None:
    big = np.arange(4_000_000, dtype=np.float64)  # 32 MB
    kernel.run("big = ...", big=big, small=[1, 2])
    kernel.settle()
    first = kernel.checkpointer.last
    assert first is not None and first.written_bytes >= big.nbytes
    # A cell that names no variable and binds none: no writer at all.
    assert not kernel.run("print('hello')")
    # A cell that reads big: checked (hashed), not written.
    assert kernel.run("big.sum()")
    kernel.settle()
    assert kernel.checkpointer.last.written_bytes == 0  # type: ignore[union-attr]
    # A cell that changes small: only small is written.
    kernel.ns["small"].append(3)  # type: ignore[attr-defined]
    assert kernel.run("small.append(3)")
    kernel.settle()
    last = kernel.checkpointer.last
    assert last is not None and 0 < last.written_bytes < 10_000
    # Changed in place, through an alias the cell names: written.
    kernel.ns["alias"] = big
    kernel.run("alias = big")
    kernel.settle()
    big[0] = -1
    kernel.run("alias[0] = -1")
    kernel.settle()
    assert kernel.checkpointer.last.written_bytes >= big.nbytes  # type: ignore[union-attr]
    back: dict[str, Any] = {}
    restore(kernel.checkpointer.directory, back)
    assert back["big"][0] == -1 and back["small"] == [1, 2, 3]
    # One file per distinct content: big and alias share theirs, the old big's is gone.
    files = list((kernel.checkpointer.directory / OBJECTS).iterdir())
    assert len(files) == 2


def test_a_deleted_variable_leaves_the_checkpoint(kernel: Kernel) -> None:
    kernel.run("a = 1; b = 2", a=np.ones(3), b=np.zeros(3))
    kernel.settle()
    del kernel.ns["a"]
    assert kernel.run("del a")
    kernel.settle()
    assert [v.name for v in read_checkpoint(kernel.checkpointer.directory).variables] == ["b"]


def test_a_writer_killed_midway_leaves_the_previous_checkpoint(kernel: Kernel) -> None:
    kernel.run("x = 1", x=np.full(1000, 1.0))
    kernel.settle()
    before = read_checkpoint(kernel.checkpointer.directory)
    # A large new variable: the writer is killed while it writes it.
    kernel.run("x = 2; huge = ...", x=np.full(1000, 2.0),
               huge=np.random.default_rng(1).random(40_000_000))
    writer = kernel.checkpointer._writer
    assert writer is not None
    objects = kernel.checkpointer.directory / OBJECTS
    deadline = time.monotonic() + 20
    while not any(p.name.startswith(".tmp-") and p.stat().st_size > 1_000_000
                  for p in objects.iterdir()):
        assert time.monotonic() < deadline, "the writer never started writing"
        time.sleep(0.005)
    os.kill(writer.pid, signal.SIGKILL)
    kernel.settle()
    assert "the writer was killed (SIGKILL" in (kernel.checkpointer.last_problem or "")
    assert read_checkpoint(kernel.checkpointer.directory) == before
    back: dict[str, Any] = {}
    restore(kernel.checkpointer.directory, back)
    assert np.array_equal(back["x"], np.full(1000, 1.0)) and "huge" not in back
    # The next writer cleans up what the killed one left, and writes what changed since.
    kernel.run("y = 3", y=3)
    kernel.settle()
    assert not [p for p in objects.iterdir() if p.name.startswith(".tmp-")]
    back = {}
    restore(kernel.checkpointer.directory, back)
    assert back["x"][0] == 2.0 and back["huge"].shape == (40_000_000,) and back["y"] == 3


def _plant_marker_pickle(marker: Path) -> bytes:
    class Boom:
        def __reduce__(self) -> tuple[Any, ...]:
            return (subprocess.call, (["touch", str(marker)],))

    return pickle.dumps(Boom())


def test_damaged_or_planted_files_are_refused_never_unpickled(kernel: Kernel,
                                                              tmp_path: Path) -> None:
    kernel.run("a = ...; b = ...", a=np.arange(100), b={"k": [1, 2]})
    kernel.settle()
    directory = kernel.checkpointer.directory
    checkpoint = read_checkpoint(directory)
    by_name = {v.name: v for v in checkpoint.variables}
    marker = tmp_path / "unpickled"
    # One byte of a's file flipped: a is refused, b comes back.
    path_a = directory / OBJECTS / by_name["a"].object_name
    data = bytearray(path_a.read_bytes())
    data[10] ^= 0xFF
    path_a.write_bytes(bytes(data))
    # b's file replaced by a pickle that would run a command when loaded.
    path_b = directory / OBJECTS / by_name["b"].object_name
    path_b.write_bytes(_plant_marker_pickle(marker) + path_b.read_bytes()[-60:])
    back: dict[str, Any] = {}
    report = restore(directory, back)
    assert back == {}
    reasons = {m.name: m.reason for m in report.missing}
    assert "damaged" in reasons["a"] and "its file was refused" in reasons["a"]
    assert "refused" in reasons["b"]
    assert not marker.exists()
    # A planted manifest (signed with another key) is refused as a whole.
    other = Kernel(tmp_path / "other")
    other.run("a = ...", a=_plant_marker_pickle(marker))
    other.settle()
    other.checkpointer.close()
    mine = manifest_path(directory, kernel.checkpointer.session)
    mine.write_bytes(manifest_path(other.checkpointer.directory, other.checkpointer.session)
                     .read_bytes())
    with pytest.raises(CheckpointError, match="was refused: authentication failed"):
        restore(directory, back)
    assert not marker.exists()
    # A FIFO in place of the manifest: not taken for one, no hang.
    mine.unlink()
    os.mkfifo(mine)
    with pytest.raises(CheckpointError, match="no complete checkpoint in"):
        restore(directory, back)


def test_a_directory_others_can_write_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    with pytest.raises(CheckpointError, match="can be written by other users"):
        Checkpointer(shared, notebook="n")
    with pytest.raises(CheckpointError, match="can be written by other users"):
        restore(shared, {})
    with pytest.raises(CheckpointError, match="no checkpoint in"):
        restore(tmp_path / "absent", {})
    made = Checkpointer(tmp_path / "mine", notebook="n")
    assert (tmp_path / "mine").stat().st_mode & 0o777 == 0o700
    made.close()


def test_a_full_disk_is_a_message_and_the_previous_checkpoint_stays(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk", "8m") as disk:
        kernel = Kernel(disk / "cp")
        kernel.run("a = ...", a=np.ones(100_000))  # 800 kB: fits
        kernel.settle()
        kernel.run("b = ...", b=np.ones(2_000_000))  # 16 MB: does not
        kernel.settle()
        assert kernel.checkpointer.last_problem == (
            f"no checkpoint after cell [2]: the disk is full ({disk / 'cp'}); "
            "the previous one is kept")
        back: dict[str, Any] = {}
        restore(disk / "cp", back)
        assert sorted(back) == ["a"]
        assert not [p for p in (disk / "cp" / OBJECTS).iterdir() if p.name.startswith(".tmp")]
        kernel.checkpointer.close()


def test_the_size_cap_leaves_out_what_is_quickest_to_remake(tmp_path: Path) -> None:
    kernel = Kernel(tmp_path / "cp", max_bytes=3_000_000)
    kernel.run("slow = ...", slow=np.ones(250_000))  # 2 MB
    kernel.checkpointer._cell_seconds[1] = 50.0
    kernel.run("quick = ...", quick=np.ones(250_000))
    kernel.checkpointer._cell_seconds[2] = 0.1
    kernel.settle()
    last = kernel.checkpointer.last
    assert last is not None and [v.name for v in last.variables] == ["slow"]
    assert [s.name for s in last.skipped] == ["quick"]
    assert "would pass the checkpoint's size cap (2.9 MiB); cell [2] made it in 0.1 s: run " \
        "it again" in last.skipped[0].reason
    kernel.checkpointer.close()


def test_no_writer_when_the_headroom_is_short(tmp_path: Path) -> None:
    class Tight:
        limit_bytes = 1_000_000_000

        def used(self) -> int:
            return 950_000_000

        def close(self) -> None:
            self.closed = True

    tight = Tight()
    kernel = Kernel(tmp_path / "cp", limit_reader=tight)
    assert not kernel.run("a = 1", a=1)
    assert kernel.checkpointer.last_problem == (
        "no checkpoint after cell [1]: only 47.7 MiB left under the limit (953.7 MiB); the "
        "writer's copies of the pages it reads could push the kernel over it (it needs "
        "128.0 MiB)")
    kernel.checkpointer.close()
    assert tight.closed  # the reader goes with the checkpointer


def test_where_a_notebook_keeps_its_checkpoints(tmp_path: Path) -> None:
    assert notebook_identity({"JPY_SESSION_NAME": "/a/b.ipynb"},
                             {"__vsc_ipynb_file__": "/c.ipynb"}, "/w") == "/a/b.ipynb"
    assert notebook_identity({}, {"__vsc_ipynb_file__": "/c.ipynb"}, "/w") == "/c.ipynb"
    assert notebook_identity({"JPY_SESSION_NAME": " "}, {}, "/w") == "/w"
    one = checkpoint_directory("/a/b.ipynb", tmp_path)
    assert one.parent == tmp_path and one.name.startswith("b-")
    assert checkpoint_directory("/other/b.ipynb", tmp_path) != one
    assert names_in("x.y = f(z)  # w") == {"x", "y", "f", "z", "w"}


def test_cells_run_after_the_checkpoint_are_listed(kernel: Kernel) -> None:
    kernel.run("a = 1", a=np.ones(3))
    kernel.settle()
    kernel.checkpointer.cell_started(2, "grow = np.ones(10**12)  # <b>never ends</b>")
    report = restore(kernel.checkpointer.directory, {}, list_only=True)
    assert [(c.cell, c.source[:4]) for c in report.later_cells] == [(2, "grow")]
    assert "&lt;b&gt;never ends" in report.to_html()
    assert "nothing restored: --list" in report.to_text()
    with pytest.raises(CheckpointError, match="no variable named nope"):
        restore(kernel.checkpointer.directory, {}, only=["nope"])


def test_a_new_kernel_never_replaces_a_dead_ones_checkpoint(tmp_path: Path) -> None:
    dead = Kernel(tmp_path / "cp")
    dead.run("data = ...", data=np.arange(1000), note="the dead kernel's")
    dead.settle()
    dead.checkpointer.close()
    # A new kernel of the same notebook checkpoints its own first cells...
    new = Kernel(tmp_path / "cp")
    new.run("import numpy as np", np=np)
    new.settle()
    # ...and its %memrestore still finds the dead one's.
    back: dict[str, Any] = {}
    report = restore(tmp_path / "cp", back, avoid=new.checkpointer.session)
    assert report.checkpoint.session == dead.checkpointer.session
    assert back["note"] == "the dead kernel's" and np.array_equal(back["data"], np.arange(1000))
    # Only the newest three kernels' are kept, with the files they name.
    for number in range(3):
        later = Kernel(tmp_path / "cp")
        later.run(f"x = {number}", x=np.full(10, number))
        later.settle()
        later.checkpointer.close()
    new.checkpointer.close()
    with pytest.raises(CheckpointError, match="no complete checkpoint"):
        read_checkpoint(tmp_path / "cp", session=dead.checkpointer.session)
    kept = {v.object_name for session in (later.checkpointer.session,)
            for v in read_checkpoint(tmp_path / "cp", session=session).variables}
    assert kept <= {p.name for p in (tmp_path / "cp" / OBJECTS).iterdir()}
    assert len(list((tmp_path / "cp" / OBJECTS).iterdir())) == 3
