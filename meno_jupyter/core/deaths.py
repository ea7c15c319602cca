"""Why a kernel died, in words: for the server's post-mortems and for a kernel started after.

:func:`classify` and :func:`summarize` turn what is known of a death (the exit status, the
memory cgroup's out-of-memory kill counter, the last memory seen) into a cause and one
sentence. Front ends without the server extension (VS Code starts its kernels itself) get
the post-mortem from the next kernel of the same notebook: each kernel notes, when
meno_jupyter loads, where it keeps its in-flight record and its cgroup's kill count
(:func:`note_kernel`); the next one finds a record of a cell still running in a process
that is gone (:func:`previous_kernel_death`) and says so once.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterable
from pathlib import Path

from meno_jupyter.core.checkpoint import notebook_slug
from meno_jupyter.core.ledger import (
    LedgerFileError,
    inflight_path_for,
    read_inflight_file,
    read_json_file,
    write_json_atomic,
)
from meno_jupyter.core.memory import cgroup_ancestors, format_bytes

ALMOST_CERTAINLY_OOM = 0.9
CRASH_NAMES = {
    signal.SIGSEGV: "segmentation fault",
    signal.SIGABRT: "aborted (SIGABRT)",
    signal.SIGBUS: "bus error",
    signal.SIGFPE: "floating-point exception",
    signal.SIGILL: "illegal instruction",
}



KERNEL_NOTE_SCHEMA = 1
_KERNEL_NOTE_MAX_BYTES = 64 * 1024


def classify(  # noqa: PLR0911 - one return per cause
        exit_code: int | None, oom_kills_rose: bool | None,
        share_of_limit: float | None) -> tuple[str, str | None]:
    """Return (cause, signal name) for a dead kernel.

    Examples
    --------
    >>> classify(-9, True, 0.99)
    ('killed by the out-of-memory killer', 'SIGKILL')
    >>> classify(-9, None, 0.97)
    ('killed (SIGKILL) at 97 % of the limit: almost certainly out of memory', 'SIGKILL')
    >>> classify(-11, False, 0.2)
    ('crashed: segmentation fault', 'SIGSEGV')
    >>> classify(3, False, 0.1)
    ('exited with code 3', None)
    """
    if exit_code is None:
        return "stopped; no exit status was recorded", None
    if exit_code >= 0:
        return f"exited with code {exit_code}", None
    try:
        number = signal.Signals(-exit_code)
    except ValueError:
        return f"killed by signal {-exit_code}", None
    name = number.name
    if number == signal.SIGKILL:
        if oom_kills_rose:
            return "killed by the out-of-memory killer", name
        if share_of_limit is not None and share_of_limit >= ALMOST_CERTAINLY_OOM:
            return (f"killed (SIGKILL) at {100 * share_of_limit:.0f} % of the limit: almost "
                    "certainly out of memory"), name
        return "killed (SIGKILL)", name
    if number in CRASH_NAMES:
        return f"crashed: {CRASH_NAMES[number]}", name
    return f"killed by {name}", name


def summarize(cause: str, execution_count: int | None, source_head: str) -> str:
    """One sentence for people: what happened, and in which cell.

    Examples
    --------
    >>> summarize("killed by the out-of-memory killer", 12, "m = a.merge(b)")
    'The kernel was killed by the out-of-memory killer while running cell [12] (m = a.merge(b)).'
    >>> summarize("crashed: segmentation fault", None, "")
    'The kernel crashed (segmentation fault).'
    """
    after = ""
    if cause.startswith("killed"):
        what = f"was {cause}"
    elif cause.startswith("crashed: "):
        what = f"crashed ({cause.removeprefix('crashed: ')})"
    elif cause.startswith("stopped; "):
        what, after = "stopped", f"; {cause.removeprefix('stopped; ')}"
    else:
        what = cause
    cell = ""
    if execution_count is not None:
        cell = f" while running cell [{execution_count}]"
        if source_head:
            cell += f" ({source_head})"
    return f"The kernel {what}{cell}{after}."


def memory_cgroup_dirs(pid: int) -> list[Path]:
    """Return the memory cgroup directories of a process, its own first, then ancestors."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return []
    root = Path("/sys/fs/cgroup")
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            start, top = root / "memory" / path.lstrip("/"), root / "memory"
            break
    else:
        v2 = [line.split(":", 2)[2] for line in lines if line.startswith("0::")]
        if not v2:
            return []
        start, top = root / v2[0].lstrip("/"), root
    # The hierarchy's root is left out: its counters count every OOM kill on the machine.
    return [directory for directory in cgroup_ancestors(start, top) if directory != top]


def oom_kills(directory: Path) -> int | None:
    """Return a memory cgroup's count of out-of-memory kills (v1 or v2), or None."""
    for name in ("memory.events", "memory.oom_control"):
        with contextlib.suppress(OSError, ValueError):
            for line in (directory / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
    return None


# What a limit read from a kernel's own cgroups is called, beside "cgroup v1" and the like.
KERNEL_CGROUP_SOURCE = "cgroup of the kernel"


def memory_cgroups_limit(directories: Iterable[Path]) -> int | None:
    """Return the tightest memory limit of these cgroups, or None."""
    best = None
    for directory in directories:
        for name in ("memory.max", "memory.limit_in_bytes"):
            with contextlib.suppress(OSError, ValueError):
                value = int((directory / name).read_text().strip())
                if value < 1 << 60 and (best is None or value < best):
                    best = value
    return best


# ---------------------------------------------------------------------------- the next kernel

def kernel_note_path(notebook: str, data_dir: Path) -> Path:
    """Return where the kernels of ``notebook`` note themselves (one file per notebook)."""
    return data_dir / "meno-jupyter" / "kernels" / f"{notebook_slug(notebook)}.json"


def note_kernel(path: Path, connection_file: str, pid: int | None = None) -> None:
    """Note (atomically) this kernel: its pid, where its in-flight record is, its cgroup."""
    pid = os.getpid() if pid is None else pid
    cgroups = memory_cgroup_dirs(pid)
    kills = oom_kills(cgroups[0]) if cgroups else None
    write_json_atomic(path, json.dumps({
        "schema": KERNEL_NOTE_SCHEMA, "pid": pid, "connection_file": connection_file,
        "cgroup": str(cgroups[0]) if cgroups else None, "oom_kills": kills,
        "limit_bytes": memory_cgroups_limit(cgroups), "noted_at": time.time()}))


def forget_kernel(path: Path, pid: int | None = None) -> None:
    """Remove this kernel's note (a clean exit: nothing to report)."""
    pid = os.getpid() if pid is None else pid
    with contextlib.suppress(LedgerFileError, OSError):
        if read_json_file(path, _KERNEL_NOTE_MAX_BYTES).get("pid") == pid:
            path.unlink()


def previous_kernel_death(path: Path, *, now: float | None = None) -> str | None:
    """Say how the previous kernel of this notebook died while running a cell, or None.

    None when it is still running, exited cleanly, died between cells, or was reported
    already (the server extension reports and removes the record; so does this, once).
    """
    try:
        note = read_json_file(path, _KERNEL_NOTE_MAX_BYTES)
    except LedgerFileError:
        return None
    if not isinstance(note, dict) or note.get("schema") != KERNEL_NOTE_SCHEMA:
        return None
    pid, connection_file = note.get("pid"), note.get("connection_file")
    if type(pid) is not int or not isinstance(connection_file, str) or pid == os.getpid() \
            or process_alive(pid):
        return None
    record_path = inflight_path_for(connection_file)
    try:
        cell = read_inflight_file(record_path)
    except LedgerFileError:
        return None
    if not cell["running"] or cell["pid"] != pid:
        return None
    with contextlib.suppress(OSError):
        record_path.unlink()  # reported once
    what, unknown = "stopped", " Its exit status is not known here."
    cgroup, before = note.get("cgroup"), note.get("oom_kills")
    if isinstance(cgroup, str) and type(before) is int:
        after = oom_kills(Path(cgroup))
        if after is not None and after > before:
            what, unknown = "was killed by the out-of-memory killer", ""
    count, head = cell["execution_count"], cell["source_head"]
    where = "" if count is None else f" while running cell [{count}]" + (
        f" ({head})" if head else "")
    ago = max(0.0, (time.time() if now is None else now) - float(cell["started_at"]))
    limit = note.get("limit_bytes")
    limit_text = f" Its memory limit was {format_bytes(limit)}." \
        if type(limit) is int and limit > 0 else ""
    started = f"; that cell started {_ago(ago)} ago" if count is not None else ""
    return (f"The previous kernel of this notebook {what}{where}{started}."
            f"{unknown}{limit_text} Next time: %memguard on stops a runaway cell "
            "before the kernel is killed, and %memcheckpoint on keeps the variables for "
            "%memrestore.")


def _ago(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def process_alive(pid: int) -> bool:
    """Tell whether process ``pid`` runs (a zombie, waiting to be reaped, does not)."""
    import psutil

    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False
