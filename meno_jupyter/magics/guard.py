"""``%memguard``: a runaway cell ends in ``MemoryGuardError``; the kernel and its data survive."""

from __future__ import annotations

import atexit
import contextlib
import math
import sys
from types import TracebackType
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments
from traitlets import Bool, Float

from meno_jupyter.core.attribution import is_user_file
from meno_jupyter.core.cleanup import collect_garbage, trim_allocator
from meno_jupyter.core.guard import (
    DEFAULT_AT,
    MemoryGuard,
    MemoryGuardError,
    frame_line,
    guard_path_for,
    parse_level,
    stop_message,
    write_guard_file,
)
from meno_jupyter.core.memory import format_bytes
from meno_jupyter.core.monitor import shrink_caches
from meno_jupyter.core.namespace import largest_variables, names_in
from meno_jupyter.core.spill import SpillError
from meno_jupyter.magics._common import (
    cell_in_flight,
    end_of_running_cell_comes,
    execution_had_no_start,
    kernel_connection_file,
    parse,
    plain_help,
)
from meno_jupyter.magics.spill import spill_of
from meno_jupyter.shell import user_variables

# Variables smaller than this are not worth a file when the guard makes room.
SPILL_AT_LEAST_BYTES = 1 << 20


def _innermost_frame(tb: TracebackType | None) -> Any:
    frame = None
    while tb is not None:
        frame, tb = tb.tb_frame, tb.tb_next
    return frame


def _user_traceback(tb: TracebackType | None) -> TracebackType | None:
    """Return ``tb`` ending at its innermost frame of user code (a cell, the user's files)."""
    nodes = []
    while tb is not None:
        nodes.append(tb)
        tb = tb.tb_next
    users = [i for i, node in enumerate(nodes) if is_user_file(node.tb_frame.f_code.co_filename)]
    if not users:
        return nodes[0] if nodes else None
    rebuilt = None
    for node in reversed(nodes[:users[-1] + 1]):
        rebuilt = TracebackType(rebuilt, node.tb_frame, node.tb_lasti, node.tb_lineno)
    return rebuilt


def _refused_bytes(error: BaseException) -> int:
    """Return the size of the allocation numpy could not make (0 when it does not say)."""
    shape, dtype = getattr(error, "shape", None), getattr(error, "dtype", None)
    itemsize = getattr(dtype, "itemsize", None)
    if not isinstance(shape, tuple) or not isinstance(itemsize, int):
        return 0
    return math.prod(shape) * itemsize


def _free_traceback_frames(tb: TracebackType | None) -> None:
    """Drop the locals of a failed cell's function frames: its temporaries go with them."""
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_locals is not frame.f_globals:
            # A frame still executing (a generator, one above the cell) cannot be cleared.
            with contextlib.suppress(RuntimeError):
                frame.clear()
        tb = tb.tb_next


@magics_class
class MemGuard(Magics):
    """Holds ``%memguard`` and its hooks; configure with ``c.MemGuard.on_load``/``.at``."""

    on_load = Bool(False, help="Turn the memory guard on when the extension is loaded.").tag(
        config=True)
    at = Float(DEFAULT_AT, help="The share of the memory limit at which a cell is stopped.").tag(
        config=True)
    spill = Bool(False, help="Before stopping a cell, move the largest variables it does not "
                             "name to disk (%memspill).").tag(config=True)

    def __init__(self, shell: Any = None, **kwargs: Any) -> None:
        super().__init__(shell=shell, **kwargs)
        self.guard: MemoryGuard | None = None
        connection_file = kernel_connection_file(shell)
        # In a kernel, a small file tells the Jupyter server (and its sidebar) the state.
        self.state_path = None if connection_file is None else guard_path_for(connection_file)
        if self.state_path is not None:
            atexit.register(self.state_path.unlink, missing_ok=True)
        self._depth = 0
        # When a relief runs: while the cell runs (the thread's signal), as it starts (too
        # little room to be watched) or after its stop; the cell's text while it starts.
        self._relief_moment = "running"
        self._starting_cell = ""
        self._previous_exc: tuple[tuple[type[BaseException], ...], Any] | None = None
        try:
            parse_level(self.at)
        except ValueError as error:  # a bad c.MemGuard.at must not stop the extension
            print(f"meno-jupyter: c.MemGuard.at: {error}; the default "
                  f"({DEFAULT_AT:.0%}) is used, and the guard stays off")
            self.at = DEFAULT_AT
        else:
            if self.on_load:
                self.start(self.at, spill=self.spill)

    # ------------------------------------------------------------------ on / off

    def start(self, at: float, *, spill: bool = False) -> None:
        """Turn the guard on at ``at`` (or move it there when it is on); ``spill``: relieve."""
        relief = self._relieve_by_spilling if spill else None
        if self.guard is not None:
            self.guard.at = parse_level(at)
            self.guard.relief = relief
            self._write_state()
            return
        self.guard = MemoryGuard(at, relief=relief)
        self.guard.start()
        self._write_state()
        shell = self.shell
        if shell is None:
            return
        # pre/post_execute fire for every execution, silent ones included: the guard arms
        # however a cell was run (a typed magic, a sidebar button, a front end's own code).
        shell.events.register("pre_execute", self._pre_execute)
        shell.events.register("pre_run_cell", self._pre_run_cell)
        shell.events.register("post_execute", self._post_execute)
        cell_in_flight(shell).use("memguard")
        self._previous_exc = (tuple(shell.custom_exceptions), shell.CustomTB)
        shell.set_custom_exc((*shell.custom_exceptions, MemoryError), self._handle)
        # Started from a cell (%memguard on, %load_ext): that cell's end comes next.
        self._depth = int(end_of_running_cell_comes(shell, "post_execute"))

    def stop(self) -> None:
        """Turn the guard off: its thread ends and the allocation limit is given back."""
        if self.guard is None:
            return
        self.guard.stop()
        self.guard = None
        self._write_state()
        shell = self.shell
        if shell is not None:
            for event, hook in (("pre_execute", self._pre_execute),
                                ("pre_run_cell", self._pre_run_cell),
                                ("post_execute", self._post_execute)):
                if hook in shell.events.callbacks[event]:
                    shell.events.unregister(event, hook)
            cell_in_flight(shell).release("memguard")
            if self._previous_exc is not None:
                exceptions, handler = self._previous_exc
                shell.custom_exceptions = exceptions
                shell.CustomTB = handler
        self._previous_exc = None
        self._depth = 0

    def _write_state(self) -> None:
        if self.state_path is None:
            return
        status = (self.guard or MemoryGuard(self.at)).status()
        with contextlib.suppress(OSError):  # the sidebar's view is not worth a failed cell
            write_guard_file(self.state_path, status)

    def _pre_execute(self) -> None:
        self._depth += 1
        if self._depth == 1 and self.guard is not None:
            self.guard.cell_started()

    def _pre_run_cell(self, info: Any) -> None:
        # Fired after pre_execute for cells that are not silent: their text is known, so
        # the variables they name are kept when the cell starts with too little room.
        if self._depth != 1 or self.guard is None or self.guard.relief is None:
            return
        self._starting_cell = getattr(info, "raw_cell", "") or ""
        self._relief_moment = "start"
        try:
            self.guard.relieve_at_start()
        finally:
            self._relief_moment = "running"
            self._starting_cell = ""

    def _post_execute(self) -> None:
        if execution_had_no_start(self.shell):
            return
        if self._depth == 1 and self.guard is not None:
            self.guard.cell_finished()
        self._depth = max(0, self._depth - 1)

    # ------------------------------------------------------------------ the error

    def _handle(self, shell: Any, etype: type[BaseException], value: BaseException,
                tb: TracebackType | None, tb_offset: int | None = None) -> None:
        """Show a MemoryError the guard caused as its stop, with figures, the line and data.

        Any other error (a user's own ``raise MemoryError(...)`` too) is shown as it is,
        its frames and their locals kept for ``%debug``.
        """
        if getattr(value, "_meno_reported", False):  # raised again by %%memprofile
            shell.showtraceback((etype, value, tb), tb_offset=tb_offset)
            return None
        if self.guard is None or not self.guard.caused(value, tb):
            exceptions, handler = self._previous_exc or ((), None)
            if handler is not None and isinstance(value, exceptions):
                return handler(etype, value, tb, tb_offset)  # type: ignore[no-any-return]
            shell.showtraceback((etype, value, tb), tb_offset=tb_offset)
            return None
        guard = self.guard
        with guard.reporting():
            if isinstance(value, MemoryGuardError):
                message = str(value)
            else:  # refused by the allocation limit, or a MemoryError of its own
                line = frame_line(_innermost_frame(tb))
                guard.note_allocation_failure(line)
                stop = guard.last_stop or {}
                detail = "An allocation was refused before the kernel would have been killed"
                detail += f" ({value})." if str(value) else "."
                message = stop_message(stop.get("used_bytes", 0), stop.get("limit_bytes", 1),
                                       line, detail)
            error = MemoryGuardError(f"{message} {self._variables_note()}")
            error._meno_reported = True  # type: ignore[attr-defined]
            error.__cause__ = None
            error.__suppress_context__ = True
            error.original = value  # type: ignore[attr-defined]
            # Shown down to the user's own line (not into numpy's internals), and before
            # the frames' locals are freed: the frames shown keep their arguments.
            shell.showtraceback((MemoryGuardError, error, _user_traceback(tb)),
                                tb_offset=tb_offset)
            _free_traceback_frames(tb)
            collect_garbage()
            # Caches halve and idle helper processes (a warm encoder) close.
            released = shrink_caches(0.5)
            trim_allocator()
            if released:
                print(f"released {format_bytes(released)} of caches and idle encoder "
                      "processes")
            if guard.relief is not None:
                refused = _refused_bytes(value)
                self._relief_moment = "after stop"
                try:
                    moved = guard.relieve(room_for=refused)
                finally:
                    self._relief_moment = "running"
                if moved and guard.room_bytes() > refused:
                    print(f"{moved}: run the cell again, it has room now.")
                elif moved:
                    print(f"{moved}; the cell still needs more memory than is left.")
        self._write_state()
        result = getattr(shell.displayhook, "exec_result", None)
        if result is not None:  # what the kernel's reply names
            result.error_in_exec = error
        sys.last_value = error
        return None

    def _relieve_by_spilling(self, used: int, target: int) -> str | None:
        """Move the largest variables the running cell does not name to disk (%memspill)."""
        shell = self.shell
        spill = None if shell is None else spill_of(shell)
        if shell is None or spill is None:
            return None
        result = getattr(shell.displayhook, "exec_result", None)
        cell = getattr(getattr(result, "info", None), "raw_cell", "") or self._starting_cell
        named = names_in(cell or "")
        hidden = getattr(shell, "user_ns_hidden", {})
        namespace = shell.user_ns
        moved: list[tuple[str, int]] = []
        freed = 0
        for variable in largest_variables(user_variables(shell), top=20, hidden=hidden,
                                          time_budget_s=0.3):
            if freed >= used - target:
                break
            if (variable.name in named or variable.name.startswith("_")
                    or variable.size_bytes < SPILL_AT_LEAST_BYTES):
                continue
            try:
                report = spill.store_for(None).spill([variable.name], namespace,
                                                     out=namespace.get("Out"))
            except (SpillError, OSError, UsageError):
                continue  # held elsewhere, an object column, a full disk: the next one
            freed += report.moved[0].freed_bytes
            moved.append((variable.name, variable.size_bytes))
        if not moved:
            return None
        names = " and ".join(f"`{name}` {format_bytes(size)}" for name, size in moved)
        if self._relief_moment == "after stop":
            return f"meno guard: moved {names} to disk"
        message = f"meno guard: moved {names} to disk to let this cell finish"
        why = ("memory was near the limit as it started; " if self._relief_moment == "start"
               else "")
        print(f"{message} ({why}%memspill --back NAME brings one back)")
        return message

    def _variables_note(self) -> str:
        if self.shell is None:
            return ""
        hidden = getattr(self.shell, "user_ns_hidden", {})
        largest = [v for v in largest_variables(user_variables(self.shell), top=3,
                                                hidden=hidden, time_budget_s=0.5)
                   if v.size_bytes >= 1024]
        named = ", ".join(f"`{v.name}` {format_bytes(v.size_bytes)}" for v in largest)
        return ("Your variables are intact" + (f"; the largest: {named}." if named else ".")
                + " `%memclean` frees the output cache.")

    # ------------------------------------------------------------------ the magic

    @plain_help
    @magic_arguments()
    @argument("action", nargs="?", choices=("on", "off", "status"), default="status",
              help="on: stop runaway cells from now; off: stop guarding; status (default).")
    @argument("--spill", action="store_true",
              help="Before stopping a cell, move the largest variables it does not name to "
                   "disk (as %%memspill does); stop it only if that is not enough.")
    @argument("--at", metavar="LEVEL", default=None,
              help="Stop a cell when memory passes this share of the limit: 90%% (default), "
                   "0.8, 75.")
    @line_magic
    def memguard(self, line: str) -> None:
        """Stop a cell that would run the kernel out of memory, and keep every variable.

        With the guard on, a cell that pushes memory past the guard level (90 % of the
        limit by default) ends in MemoryGuardError, a MemoryError that names the figures
        and the line, instead of the kernel being killed. The limit is the container's
        cgroup limit (JupyterHub, Kubernetes, Docker; other processes in it count) or the
        machine's memory. A single allocation too large for what is left fails at once.
        Afterwards the cell's temporaries are freed and the next cell runs normally.

        With --spill, a cell that nears the level first gets room: the largest variables
        it does not name, held by nothing but the namespace, are moved to disk (%memspill),
        and the kernel says which; the cell is stopped only if that is not enough. A cell
        that starts with memory already that near gets the room before it runs; after a
        refused single allocation, enough is moved for it and the cell can run again.

        It cannot stop memory taken by other processes, nor GPU memory. Turn it on for
        every kernel with c.MemGuard.on_load = True (and c.MemGuard.at = 0.9) in an
        IPython profile.

        Examples:
          %memguard on
          %memguard on --at 80%
          %memguard on --spill
          %memguard status
          %memguard off
        """
        args = parse(self.memguard, line)
        at = self.at
        if args.at is not None:
            try:
                at = parse_level(args.at)
            except ValueError as error:
                raise UsageError(f"--at: {error}") from None
        if args.spill and args.action != "on":
            raise UsageError("--spill goes with on: %memguard on --spill")
        if args.action == "on":
            self.start(at, spill=args.spill or self.spill)
        elif args.action == "off":
            self.stop()
            print("memory guard off: cells are no longer stopped, the allocation limit is "
                  "back to what it was")
            return
        elif args.at is not None:
            raise UsageError("--at goes with on: %memguard on --at 80%")
        print(self.describe())

    def describe(self) -> str:
        """Say whether the guard is on, and its figures."""
        text = (self.guard or MemoryGuard(self.at)).status().describe()
        if self.guard is not None and self.guard.relief is not None:
            text += "; before stopping a cell it moves idle variables to disk"
        return text


def guard_of(shell: Any) -> MemGuard | None:
    """Return the shell's ``MemGuard`` magics, if the extension is loaded."""
    found = shell.magics_manager.registry.get("MemGuard")
    return found if isinstance(found, MemGuard) else None

