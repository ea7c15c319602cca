"""REST endpoints under ``/meno-jupyter/``: every verb requires an authenticated user."""

from __future__ import annotations

import asyncio
import json
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import psutil
import tornado.web
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join

from meno_jupyter.core.guard import guard_path_for, read_guard_file
from meno_jupyter.core.ledger import LedgerFileError, ledger_path_for, read_ledger_file
from meno_jupyter.core.memory import MemoryLimit, pressure_level
from meno_jupyter.server.deaths import DeathWatch
from meno_jupyter.server.sampler import KernelProcess, KernelSampler

# Any path segment reaches the handler, so that every unknown id gets the same JSON 404.
KERNEL_ID = r"(?P<kernel_id>[^/]+)"
SHOWN_ID_CHARS = 40
NOT_MEASURABLE = "not measurable"
NO_CELLS_YET = ("no cells recorded yet: run %load_ext meno_jupyter, then %memwatch on (or "
                "profile a cell with %%memprofile)")


def limit_json(limit: MemoryLimit, thresholds: tuple[float, float]) -> dict[str, Any]:
    """Return the effective limit and the system's figures as JSON."""
    memory = psutil.virtual_memory()
    return {"limit_bytes": limit.limit_bytes, "available_bytes": limit.available_bytes,
            "source": limit.source, "system_total_bytes": memory.total,
            "system_available_bytes": memory.available, "thresholds": list(thresholds)}


class MenoHandler(APIHandler):
    """Shared plumbing: the sampler, the kernel manager, JSON out."""

    @property
    def sampler(self) -> KernelSampler:
        """The server's kernel sampler."""
        sampler: KernelSampler = self.settings["meno_jupyter_sampler"]
        return sampler

    def kernel_or_404(self, kernel_id: str) -> Any:
        """Return the kernel manager's kernel, or answer 404 with a JSON message."""
        try:
            return self.kernel_manager.get_kernel(kernel_id)
        except (KeyError, tornado.web.HTTPError):  # the server's manager raises a 404 itself
            shown = (kernel_id if len(kernel_id) <= SHOWN_ID_CHARS
                     else kernel_id[:SHOWN_ID_CHARS] + "…")
            raise tornado.web.HTTPError(404, f"no kernel {shown!r}") from None

    def since_argument(self) -> float | None:
        """Return the ``since`` query argument as a finite Unix time; 400 otherwise."""
        since_text = self.get_query_argument("since", None)
        try:
            since = float(since_text) if since_text else None
            if since is not None and not math.isfinite(since):
                raise ValueError(since_text)
        except ValueError:
            raise tornado.web.HTTPError(
                400, f"since must be a Unix time, got {(since_text or '')[:SHOWN_ID_CHARS]!r}"
            ) from None
        return since

    def send(self, data: dict[str, Any], *, finite: bool = False) -> None:
        """Write ``data`` as strict JSON (no NaN or Infinity), never cached.

        ``finite``: every number is known to be finite already (a validated file), so the
        walk that replaces the others is skipped.
        """
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(data if finite else strict_json(data), allow_nan=False))


def strict_json(value: Any) -> Any:
    """Return ``value`` with every non-finite float replaced by ``None``.

    ``JSON.parse`` rejects the ``NaN`` and ``Infinity`` that Python's ``json`` writes: one
    such figure would make the browser drop the whole answer.

    Examples
    --------
    >>> strict_json({"a": [1.0, float("nan")], "b": float("inf")})
    {'a': [1.0, None], 'b': None}
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: strict_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(item) for item in value]
    return value


class ParsedFileCache:
    """Parse a file once per change: kept by path, reused while inode, size and mtime hold.

    The ledger route is polled every second by every open notebook; a ledger near its 8 MB
    cap takes a second to read and check, which stalled every route when done per request.
    """

    def __init__(self, reader: Callable[[str], dict[str, Any]], size: int = 64) -> None:
        self._reader = reader
        self._size = size
        self._entries: OrderedDict[str, tuple[tuple[int, int, int], dict[str, Any]]] = (
            OrderedDict())
        self._lock = threading.Lock()

    def read(self, path: str) -> dict[str, Any]:
        """Return the parsed file (the reader's errors pass through, nothing is kept)."""
        try:
            found = os.stat(path, follow_symlinks=False)
        except OSError:
            return self._reader(path)  # it says why, in its own words
        key = (found.st_ino, found.st_size, found.st_mtime_ns)
        with self._lock:
            entry = self._entries.get(path)
            if entry is not None and entry[0] == key:
                self._entries.move_to_end(path)
                return entry[1]
        data = self._reader(path)
        with self._lock:
            self._entries[path] = (key, data)
            self._entries.move_to_end(path)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
        return data


LEDGERS = ParsedFileCache(read_ledger_file)


def locate_kernels(kernel_manager: Any, with_kernels: bool = False) -> list[Any]:
    """Return the running kernels' :class:`KernelProcess` (a local pid, or why there is none).

    With ``with_kernels``, pairs of (KernelProcess, the kernel manager's kernel).
    """
    found: list[Any] = []
    for kernel_id in list(kernel_manager.list_kernel_ids()):
        try:
            kernel = kernel_manager.get_kernel(kernel_id)
        except (KeyError, tornado.web.HTTPError):  # shut down meanwhile
            continue
        provisioner = getattr(kernel, "provisioner", None)
        pid = getattr(provisioner, "pid", None) if provisioner is not None else None
        if isinstance(pid, int):
            located = KernelProcess(kernel_id, pid)
        else:
            located = KernelProcess(
                kernel_id, None, f"{NOT_MEASURABLE}: the kernel has no local process "
                "(a remote or gateway kernel), so this server cannot read its memory")
        found.append((located, kernel) if with_kernels else located)
    return found


class KernelsHandler(MenoHandler):
    """``GET /meno-jupyter/kernels``: every kernel with its memory, hungriest first."""

    @tornado.web.authenticated
    async def get(self) -> None:
        """List the kernels."""
        sampler = self.sampler
        limit = sampler.limit()
        paths: dict[str, str] = {}
        for session in await self.session_manager.list_sessions():
            kernel = session.get("kernel") or {}
            if kernel.get("id"):
                paths[kernel["id"]] = session.get("path", "")
        kernels = []
        for located, kernel in locate_kernels(self.kernel_manager, with_kernels=True):
            entry: dict[str, Any] = {
                "id": located.kernel_id, "name": getattr(kernel, "kernel_name", ""),
                "pid": located.pid, "path": paths.get(located.kernel_id, ""),
                "execution_state": getattr(kernel, "execution_state", "unknown"),
                "measurable": located.measurable, "reason": located.reason,
                "rss": None, "children": None, "total": None, "percent": None,
                "pressure": None, "guard": guard_state(kernel, located.pid),
                "limit_bytes": None, "limit_source": None,
            }
            figures = sampler.latest(located.kernel_id) if located.measurable else None
            if figures is not None:
                rss, children = figures
                total = rss + children
                own, source = sampler.kernel_limit(located.kernel_id, limit)
                entry.update(rss=rss, children=children, total=total,
                             percent=100.0 * total / own,
                             pressure=pressure_level(total, own, sampler.thresholds),
                             limit_bytes=own, limit_source=source)
            kernels.append(entry)
        kernels.sort(key=lambda k: k["total"] or -1, reverse=True)
        self.send({"time": time.time(), "kernels": kernels,
                   "limit": limit_json(limit, sampler.thresholds)})


class HistoryHandler(MenoHandler):
    """``GET /meno-jupyter/kernels/<id>/history?since=T``: samples after Unix time T."""

    @tornado.web.authenticated
    def get(self, kernel_id: str) -> None:
        """One kernel's RSS history."""
        self.kernel_or_404(kernel_id)
        since = self.since_argument()
        sampler = self.sampler
        if kernel_id in sampler.unmeasurable:
            self.send({"kernel_id": kernel_id, "measurable": False,
                       "reason": sampler.unmeasurable[kernel_id], "times": [], "rss": [],
                       "children": []})
            return
        try:
            history = sampler.history(kernel_id, since)
        except KeyError:  # started after the last sample
            history = {"kernel_id": kernel_id, "times": [], "rss": [], "children": [],
                       "interval_s": sampler.interval_s}
        self.send({"measurable": True, "reason": "", **history})


class LedgerHandler(MenoHandler):
    """``GET /meno-jupyter/kernels/<id>/ledger?since=T``: the cells the kernel recorded.

    With ``since``, only the cells that started after Unix time T (the per-cell badges
    fetch what is new).
    """

    @tornado.web.authenticated
    async def get(self, kernel_id: str) -> None:
        """One kernel's per-cell ledger, read from the file the kernel writes."""
        kernel = self.kernel_or_404(kernel_id)
        since = self.since_argument()
        connection_file = getattr(kernel, "connection_file", "")
        if not connection_file:
            self.unavailable(kernel_id, f"{NOT_MEASURABLE}: the kernel has no local "
                                        "connection file")
            return
        path = ledger_path_for(connection_file)
        if not os.path.lexists(path):
            self.unavailable(kernel_id, NO_CELLS_YET)
            return
        try:  # off the event loop: a slow disk must not stall the server
            data = await asyncio.to_thread(LEDGERS.read, str(path))
        except LedgerFileError as error:
            self.unavailable(kernel_id, f"the ledger file could not be read: {error}")
            return
        pid = getattr(getattr(kernel, "provisioner", None), "pid", None)
        if isinstance(pid, int) and not belongs_to(data["pid"], pid):
            self.unavailable(kernel_id, f"{NO_CELLS_YET} (the ledger file is from an earlier "
                                        f"process of this kernel, pid {data['pid']})")
            return
        cells = data["cells"] if since is None else [
            cell for cell in data["cells"] if cell["started_at"] > since]
        self.send({"kernel_id": kernel_id, "available": True, "reason": "",
                   "cells": cells, "updated_at": data["updated_at"]}, finite=True)

    def unavailable(self, kernel_id: str, reason: str) -> None:
        """Answer that there is no ledger to show, and why."""
        self.send({"kernel_id": kernel_id, "available": False, "cells": [], "reason": reason})


def guard_state(kernel: Any, kernel_pid: int | None) -> dict[str, Any] | None:
    """Return the kernel's memory guard (on, at, stops), or None when it never said.

    The file is tiny and read without following links or waiting on a FIFO, so it is read
    on the event loop; one from an earlier process of the kernel is ignored.
    """
    connection_file = getattr(kernel, "connection_file", "")
    if not connection_file or kernel_pid is None:
        return None
    path = guard_path_for(connection_file)
    if not os.path.lexists(path):
        return None
    try:
        state = read_guard_file(path)
    except LedgerFileError:
        return None
    if not belongs_to(state["pid"], kernel_pid):
        return None
    return {"on": state["on"], "at": state["at"], "stops": state["stops"]}


def belongs_to(pid: int, kernel_pid: int) -> bool:
    """Tell whether ``pid`` is the kernel's process or one it started (a wrapper's child)."""
    if pid == kernel_pid:
        return True
    try:
        return pid in {child.pid for child in psutil.Process(kernel_pid).children(True)}
    except psutil.Error:
        return False


class UnknownRouteHandler(MenoHandler):
    """Anything else under ``/meno-jupyter/``: a JSON 404, for signed-in users only."""

    @tornado.web.authenticated
    def get(self, rest: str) -> None:
        """Answer that there is no such endpoint."""
        raise tornado.web.HTTPError(404, f"no endpoint {rest[:SHOWN_ID_CHARS]!r}")


class DeathsHandler(MenoHandler):
    """``GET /meno-jupyter/deaths?since=T&kernel=ID``: post-mortems of dead kernels."""

    @tornado.web.authenticated
    def get(self) -> None:
        """Answer with the post-mortems, newest first."""
        since = self.since_argument()
        kernel_id = self.get_query_argument("kernel", None)
        deaths: DeathWatch = self.settings["meno_jupyter_deaths"]
        self.send({"time": time.time(), "deaths": deaths.list(since, kernel_id),
                   "unreadable_lines": deaths.unreadable_lines})


class LimitHandler(MenoHandler):
    """``GET /meno-jupyter/limit``: the effective memory limit and the system's figures."""

    @tornado.web.authenticated
    def get(self) -> None:
        """Answer with the limit the kernels share."""
        sampler = self.sampler
        self.send({**limit_json(sampler.limit(), sampler.thresholds),
                   "interval_s": sampler.interval_s, "history_s": sampler.history_s})


ROUTES: list[tuple[str, type[MenoHandler]]] = [
    ("kernels", KernelsHandler),
    (f"kernels/{KERNEL_ID}/history", HistoryHandler),
    (f"kernels/{KERNEL_ID}/ledger", LedgerHandler),
    ("limit", LimitHandler),
    ("deaths", DeathsHandler),
    ("(?P<rest>.*)", UnknownRouteHandler),  # last: only what nothing above matched
]


def handlers(base_url: str) -> list[tuple[str, type[MenoHandler]]]:
    """Return the URL patterns and their handlers under ``base_url``."""
    return [(url_path_join(base_url, "meno-jupyter", route), handler)
            for route, handler in ROUTES]
