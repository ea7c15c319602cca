"""Post-mortems of kernels that died: how, which cell, at what memory. Kept on disk.

A kernel's death is seen through its kernel manager's restart callbacks (the restarter
fires them for a kernel that died, never for a shutdown or a restart asked for). At that
moment the dead process's exit status is still there; so are the out-of-memory kill
counters of its memory cgroup and their last values (read at every sample), the server's
last minute of its RSS, and the cell it was running (``meno-inflight-<kernel>.json``,
written by the kernel at the start of every cell while ``%memwatch`` or ``%memguard`` is on).
Post-mortems go to ``deaths.jsonl`` in the Jupyter data directory, so they survive the
server; at start, an in-flight file of a process that no longer runs is reported too (the
whole server or pod died with the kernel).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import stat
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from meno_jupyter.core.checkpoint import checkpoint_of_kernel
from meno_jupyter.core.deaths import KERNEL_CGROUP_SOURCE, classify, process_alive, summarize
from meno_jupyter.core.deaths import memory_cgroup_dirs as _cgroup_dirs
from meno_jupyter.core.deaths import memory_cgroups_limit as _cgroup_limit
from meno_jupyter.core.deaths import oom_kills as _oom_kills
from meno_jupyter.core.ledger import LedgerFileError, inflight_path_for, read_inflight_file
from meno_jupyter.core.memory import format_bytes

MAX_DEATHS = 200
SAMPLES_KEPT_S = 60.0
DEATHS_FILE = "deaths.jsonl"
DEATHS_MAX_BYTES = 16 * 2**20
@dataclass(frozen=True)
class Death:
    """What is known of one kernel's death. Sizes in bytes, times in Unix seconds."""

    kernel_id: str
    pid: int
    died_at: float
    cause: str
    summary: str
    exit_code: int | None
    signal: str | None
    execution_count: int | None = None
    cell_id: str | None = None
    source_head: str = ""
    rss_bytes: int | None = None
    peak_rss_bytes: int | None = None
    limit_bytes: int | None = None
    limit_source: str = ""
    path: str = ""
    times: list[float] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)
    checkpoint: str = ""  # what the kernel's last checkpoint holds, if it kept one
    checkpoint_dir: str = ""

    @property
    def id(self) -> str:
        """A stable name for this death (the front end remembers which it has shown)."""
        return f"{self.kernel_id}:{self.pid}:{self.died_at:.3f}"

    def to_dict(self) -> dict[str, Any]:
        """Return the fields and the id as a plain dict."""
        return {"id": self.id, **asdict(self)}

    @classmethod
    def from_dict(cls, data: object) -> Death:
        """Return the post-mortem a saved line holds; ``ValueError`` unless every field fits.

        Each field is checked against its type (finite numbers, ints that are not bools), so
        that one bad line cannot fail the route that lists them all.
        """
        if not isinstance(data, dict):
            raise ValueError("not a post-mortem")
        values = {key: value for key, value in data.items() if key != "id"}
        unknown = set(values) - set(_FIELD_CHECKS)
        missing = {name for name in _REQUIRED_FIELDS if name not in values}
        if unknown or missing:
            raise ValueError(f"not a post-mortem (fields {sorted(unknown | missing)})")
        for name, value in values.items():
            if not _FIELD_CHECKS[name](value):
                raise ValueError(f"{name} is not a valid value")
        if len(values.get("times", [])) != len(values.get("rss", [])):
            raise ValueError("times and rss differ in length")
        return cls(**values)


def _is_int(value: object) -> bool:
    return type(value) is int and abs(value) < 2**63


def _is_time(value: object) -> bool:
    return (type(value) in (int, float) and math.isfinite(value)  # type: ignore[arg-type]
            and 0 <= value < 2**40)  # type: ignore[operator]


def _optional(check: Callable[[object], bool]) -> Callable[[object], bool]:
    return lambda value: value is None or check(value)


def _is_str(value: object) -> bool:
    return isinstance(value, str)


_FIELD_CHECKS: dict[str, Callable[[object], bool]] = {
    "kernel_id": _is_str, "pid": _is_int, "died_at": _is_time, "cause": _is_str,
    "summary": _is_str, "exit_code": _optional(_is_int), "signal": _optional(_is_str),
    "execution_count": _optional(_is_int), "cell_id": _optional(_is_str),
    "source_head": _is_str, "rss_bytes": _optional(_is_int),
    "peak_rss_bytes": _optional(_is_int), "limit_bytes": _optional(_is_int),
    "limit_source": _is_str, "path": _is_str,
    "times": lambda value: isinstance(value, list) and all(_is_time(t) for t in value),
    "rss": lambda value: isinstance(value, list) and all(_is_int(r) for r in value),
    "checkpoint": _is_str, "checkpoint_dir": _is_str,
}
_REQUIRED_FIELDS = ("kernel_id", "pid", "died_at", "cause", "summary", "exit_code", "signal")


# ---------------------------------------------------------------------------- cgroups

@dataclass
class _Watched:
    """What is known of a running kernel process, kept fresh at every sample."""

    pid: int
    cgroups: list[Path]
    oom_kills: dict[Path, int | None]
    limit_bytes: int | None
    connection_file: str


# ---------------------------------------------------------------------------- the watch

class DeathWatch:
    """Notice kernel deaths and keep their post-mortems (in memory and on disk).

    Parameters
    ----------
    directory : path
        Where ``deaths.jsonl`` lives (created with mode 0700).
    samples : callable
        ``samples(kernel_id)`` returns the server sampler's history of a kernel, or None.
    server_limit : callable
        ``server_limit()`` returns (limit bytes, source) when a kernel's cgroup has none.
    """

    def __init__(self, directory: Path,
                 samples: Callable[[str], dict[str, Any] | None],
                 server_limit: Callable[[], tuple[int, str]]) -> None:
        self.directory = directory
        self._samples = samples
        self._server_limit = server_limit
        self._watched: dict[str, _Watched] = {}
        self._hooked: set[int] = set()
        self.deaths: deque[Death] = deque(maxlen=MAX_DEATHS)
        self.unreadable_lines = 0
        self.paths: dict[str, str] = {}  # kernel id -> notebook path, from the sessions
        self.on_death: list[Callable[[Death], object]] = []
        self._load()

    # ------------------------------------------------------------------ disk

    @property
    def file(self) -> Path:
        """The post-mortems file."""
        return self.directory / DEATHS_FILE

    def _load(self) -> None:
        try:
            fd = os.open(self.file, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            return
        with os.fdopen(fd, "rb") as handle:
            handle.seek(max(0, os.fstat(fd).st_size - DEATHS_MAX_BYTES))
            raw = handle.read(DEATHS_MAX_BYTES)
        for line in raw.splitlines():
            if not line.strip():
                continue
            try:
                death = Death.from_dict(json.loads(line.decode("utf-8")))
            except (ValueError, RecursionError, UnicodeDecodeError):
                self.unreadable_lines += 1  # skipped and counted; the others still show
                continue
            self.deaths.append(death)

    def _save(self, death: Death) -> None:
        with contextlib.suppress(OSError):  # a full disk loses the record, not the server
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.file, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW,
                         0o600)
            with os.fdopen(fd, "a") as handle:
                handle.write(json.dumps(death.to_dict()) + "\n")

    def record(self, death: Death) -> None:
        """Keep a post-mortem and tell the listeners."""
        self.deaths.append(death)
        self._save(death)
        for listener in self.on_death:
            listener(death)

    def list(self, since: float | None = None, kernel_id: str | None = None
             ) -> list[dict[str, Any]]:
        """Return the post-mortems, newest first (after ``since``, of one kernel)."""
        return [d.to_dict() for d in reversed(self.deaths)
                if (since is None or d.died_at > since)
                and (kernel_id is None or d.kernel_id == kernel_id)]

    # ------------------------------------------------------------------ watching

    def tick(self, kernels: Iterable[tuple[str, int | None, Any]]) -> None:
        """Follow the running kernels: (kernel id, pid, the manager's kernel) each sample."""
        seen = set()
        for kernel_id, pid, kernel in kernels:
            seen.add(kernel_id)
            if id(kernel) not in self._hooked and hasattr(kernel, "add_restart_callback"):
                kernel.add_restart_callback(
                    lambda kid=kernel_id, k=kernel: self._died(kid, k), "restart")
                kernel.add_restart_callback(
                    lambda kid=kernel_id, k=kernel: self._died(kid, k), "dead")
                self._hooked.add(id(kernel))
            if pid is None:
                continue
            watched = self._watched.get(kernel_id)
            if watched is None or watched.pid != pid:
                watched = self._watched[kernel_id] = _Watched(
                    pid, [], {}, None, getattr(kernel, "connection_file", "") or "")
            if not process_alive(pid):  # dead, not yet restarted: keep the figures from before
                continue
            # A process can be moved between cgroups; an exiting one shows only the root
            # (an empty list here), which must not replace what it lived in.
            cgroups = _cgroup_dirs(pid)
            if cgroups and cgroups != watched.cgroups:
                watched.cgroups, watched.limit_bytes = cgroups, _cgroup_limit(cgroups)
            for directory in cgroups:
                # The count when the kernel was first seen there: an OOM kill counts the
                # victim before it has exited, so a later reading could already include it.
                if directory not in watched.oom_kills:
                    watched.oom_kills[directory] = _oom_kills(directory)
        for gone in set(self._watched) - seen:
            del self._watched[gone]

    def _died(self, kernel_id: str, kernel: Any) -> None:
        """Find out how a kernel died (a restart callback: its process is gone)."""
        watched = self._watched.get(kernel_id)
        if watched is None:
            return
        process = getattr(getattr(kernel, "provisioner", None), "process", None)
        exit_code = None
        with contextlib.suppress(Exception):
            exit_code = process.poll() if process is not None else None
        after = {d: _oom_kills(d) for d in watched.cgroups}
        counted = [d for d in watched.cgroups if after.get(d) is not None
                   and watched.oom_kills.get(d) is not None]
        oom_rose = (any(after[d] > watched.oom_kills[d] for d in counted)  # type: ignore[operator]
                    if counted else None)
        self.record(self._post_mortem(kernel_id, watched, exit_code, oom_rose))
        del self._watched[kernel_id]  # the restarted kernel is watched afresh

    def _post_mortem(self, kernel_id: str, watched: _Watched, exit_code: int | None,
                     oom_rose: bool | None, *, cell: dict[str, Any] | None = None) -> Death:
        history = self._samples(kernel_id) or {}
        now = time.time()
        times = [t for t in history.get("times", []) if t >= now - SAMPLES_KEPT_S]
        rss = [int(r) + int(c) for r, c in zip(history.get("rss", [])[-len(times):],
                                                history.get("children", [])[-len(times):],
                                                strict=False)] if times else []
        limit, source = watched.limit_bytes, KERNEL_CGROUP_SOURCE
        if limit is None:
            limit, source = self._server_limit()
        share = rss[-1] / limit if rss and limit else None
        if cell is None and watched.connection_file:
            cell = _cell_in_flight(watched.connection_file, watched.pid)
        cause, signal_name = classify(exit_code, oom_rose, share)
        checkpoint = checkpoint_of_kernel(watched.connection_file) \
            if watched.connection_file else None
        cell = cell or {}
        count = cell.get("execution_count")
        return Death(
            kernel_id=kernel_id, pid=watched.pid, died_at=now, cause=cause,
            summary=summarize(cause, count, cell.get("source_head", "")),
            exit_code=exit_code, signal=signal_name, execution_count=count,
            cell_id=cell.get("cell_id"), source_head=cell.get("source_head", ""),
            rss_bytes=rss[-1] if rss else None, peak_rss_bytes=max(rss) if rss else None,
            limit_bytes=limit, limit_source=source, path=self.paths.get(kernel_id, ""),
            times=times, rss=rss,
            checkpoint="" if checkpoint is None else checkpoint.describe(),
            checkpoint_dir="" if checkpoint is None else checkpoint.directory)

    def scan_orphans(self, runtime_dir: Path) -> int:
        """Report kernels that died with the server: a cell in flight, its process gone."""
        found = 0
        for path in sorted(runtime_dir.glob("meno-inflight-*.json")):
            try:
                cell = read_inflight_file(path)
            except LedgerFileError:
                continue
            if not cell["running"] or process_alive(cell["pid"]):
                continue
            kernel_id = path.stem.removeprefix("meno-inflight-").removeprefix("kernel-")
            count = cell["execution_count"]
            cause = "stopped; no exit status was recorded"
            self.record(Death(
                kernel_id=kernel_id, pid=cell["pid"], died_at=time.time(), cause=cause,
                summary=summarize(cause, count, cell["source_head"]), exit_code=None,
                signal=None, execution_count=count,
                cell_id=cell["cell_id"], source_head=cell["source_head"],
                path=self.paths.get(kernel_id, "")))
            with contextlib.suppress(OSError):
                path.unlink()
            found += 1
        return found

    def describe(self, death: Death) -> str:
        """Return a line for the server's log."""
        figures = ""
        if death.rss_bytes is not None and death.limit_bytes:
            figures = (f" (last seen at {format_bytes(death.rss_bytes)} of "
                       f"{format_bytes(death.limit_bytes)})")
        return f"meno-jupyter: kernel {death.kernel_id}: {death.summary}{figures}"


def _cell_in_flight(connection_file: str, pid: int) -> dict[str, Any] | None:
    """Return the cell the dead process was running (and remove the record), if any."""
    path = inflight_path_for(connection_file)
    try:
        cell = read_inflight_file(path)
    except LedgerFileError:
        return None
    if cell["pid"] != pid or not cell["running"]:
        return None
    with contextlib.suppress(OSError):
        path.unlink()
    return cell

