"""Helpers every magic shares: argument parsing with help on error, name checks, display."""

from __future__ import annotations

import atexit
import contextlib
import difflib
import keyword
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic_arguments import parse_argstring
from IPython.display import display


def parse(magic: Callable[..., Any], line: str) -> Any:
    """Parse a magic's arguments; on a mistake, raise UsageError with the full help.

    An unknown option gets the closest known one suggested ("did you mean --top?").
    """
    try:
        return parse_argstring(magic, line)
    except UsageError as error:
        message = str(error)
        hint = _closest_options(magic, message)
        raise UsageError(f"{message}{hint}\n\n{magic.__doc__ or ''}".rstrip()) from None


def _closest_options(magic: Callable[..., Any], message: str) -> str:
    parser = getattr(magic, "parser", None)
    if parser is None or "unrecognized arguments:" not in message:
        return ""
    known = [option for action in parser._actions for option in action.option_strings]
    unknown = message.split("unrecognized arguments:", 1)[1].split()
    hints = []
    for token in unknown:
        if token.startswith("-"):
            close = difflib.get_close_matches(token.split("=")[0], known, n=1, cutoff=0.5)
            if close:
                hints.append(f"{token}: did you mean {close[0]}?")
    return f" ({'; '.join(hints)})" if hints else ""


def plain_help(magic: Callable[..., Any]) -> Callable[..., Any]:
    """Make a magic's generated help read as plain text (``%magic?`` shows no reST marks).

    Apply it above ``magic_arguments()``, which writes the help it rewrites.
    """
    doc = magic.__doc__ or ""
    doc = re.sub(r"^::\n\n", "Usage:\n\n", doc)
    doc = doc.replace("::\n", ":\n").replace("``", "")
    magic.__doc__ = doc
    return magic


def running_cell_number(shell: Any) -> int | None:
    """Return the ``In [N]`` of the cell running now: one source for every record.

    IPython 9 counts a stored cell before it runs (``execution_count`` is then N + 1);
    the running cell's own result carries N either way.
    """
    result = getattr(getattr(shell, "displayhook", None), "exec_result", None)
    number = getattr(result, "execution_count", None)
    if isinstance(number, int):
        return number
    count = getattr(shell, "execution_count", None)
    return count if isinstance(count, int) else None


def end_of_running_cell_comes(shell: Any, event: str) -> bool:
    """Tell whether a hook on ``event`` registered now will see the running cell's end.

    A magic that registers hooks runs inside a cell whose start has already been signalled.
    ``post_execute`` always follows; ``post_run_cell`` only when the cell is not silent
    (the sidebar's buttons run their magics silently, and IPython then fires no run-cell
    hooks). Counting a silent cell's end that never comes would leave the hooks one level
    deep, believing every later cell nested in it.
    """
    result = getattr(getattr(shell, "displayhook", None), "exec_result", None)
    if result is None:
        return False
    return event == "post_execute" or not getattr(getattr(result, "info", None), "silent", False)


def execution_had_no_start(shell: Any) -> bool:
    """Tell whether the ``post_execute`` now firing has no ``pre_execute`` before it.

    IPython returns early for an empty cell, after ``pre_execute`` would have fired but
    before it does; ``post_execute`` still fires for it.
    """
    result = getattr(shell, "last_execution_result", None)
    raw = getattr(getattr(result, "info", None), "raw_cell", None)
    return isinstance(raw, str) and not raw.strip()


def cell_id_of(info: Any) -> str | None:
    """Return the notebook cell id an ``ExecutionInfo`` carries (sent by the front end)."""
    from meno_jupyter.core.ledger import CELL_ID_MAX_CHARS

    cell_id = getattr(info, "cell_id", None)
    return cell_id if isinstance(cell_id, str) and 0 < len(cell_id) <= CELL_ID_MAX_CHARS \
        else None


def running_cell_id(shell: Any) -> str | None:
    """Return the notebook cell id of the cell running now, when the front end sent one."""
    result = getattr(getattr(shell, "displayhook", None), "exec_result", None)
    return cell_id_of(getattr(result, "info", None))


def usage_check(check: Callable[..., None], *args: Any, option: str | None = None,
                **kwargs: Any) -> None:
    """Run one of the core's checks; its ValueError becomes a UsageError (after ``option``)."""
    try:
        check(*args, **kwargs)
    except ValueError as error:
        raise UsageError(f"{option}: {error}" if option else str(error)) from None


def check_identifier(name: str | None, option: str) -> None:
    """Raise UsageError unless ``name`` can be a Python variable name."""
    if name is not None and (not name.isidentifier() or keyword.iskeyword(name)):
        raise UsageError(f"{option} needs a valid Python variable name, got {name!r}")


def path_argument(text: str) -> Path:
    """Return the path a magic's argument names: ``~`` expanded, one pair of quotes removed.

    IPython splits a magic's line without removing quotes (``%m "a b"`` gives ``"a b"``).

    Examples
    --------
    >>> path_argument('"/tmp/with space"')
    PosixPath('/tmp/with space')
    """
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1]
    return Path(text).expanduser()


def writable_file(text: str | None, option: str) -> Path | None:
    """Return the file ``text`` names once it is known to be writable; else UsageError.

    Checked before anything runs or changes: the target must be absent or a regular file
    (never a link, a device or a FIFO, which would block the kernel), and a file can be made
    in its directory (tried, then removed: permission bits alone do not tell root, /proc or
    a read-only mount). The target itself is not touched.
    """
    if text is None:
        return None
    from meno_jupyter.core.ledger import refuse_unsafe_target

    path = Path(text).expanduser()
    if path.is_dir() and not path.is_symlink():
        raise UsageError(f"{option}: {path} is a directory; give the path of a file")
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise UsageError(f"{option}: directory {directory} does not exist")
    try:
        refuse_unsafe_target(path)
        fd, probe = tempfile.mkstemp(prefix=".meno-probe-", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise UsageError(f"{option}: cannot write {path}: {error.strerror}") from None
    return path


def kernel_connection_file(shell: Any) -> str | None:
    """Return the connection file of the kernel running ``shell``; None outside a kernel."""
    if getattr(shell, "kernel", None) is None:
        return None
    try:
        from ipykernel.connect import get_connection_file

        return str(get_connection_file())
    except Exception:  # no kernel app (embedded kernels, tests)
        return None


def rich_output(shell: Any) -> bool:
    """Tell whether the front end shows more than text (a kernel rather than a terminal)."""
    return "text/html" in getattr(shell.display_formatter, "active_types", ())


def show(obj: object, raw: bool = False) -> None:
    """Display an object or a raw mimebundle through IPython's display machinery."""
    display(obj, raw=raw)


class CellCounter:
    """Tell, in ``pre_run_cell``, the ``In [N]`` of the cell starting.

    IPython 9 counts a stored cell before ``pre_run_cell``, older versions after it; each
    finished cell tells which (its result carries the true number).
    """

    def __init__(self, shell: Any) -> None:
        self.shell = shell
        self._offset = 1
        self._seen: int | None = None

    def starting(self, info: Any) -> int:
        """Return the number of the cell whose ``pre_run_cell`` fires now."""
        self._seen = int(self.shell.execution_count)
        stored = getattr(info, "store_history", True)
        return self._seen - (self._offset if stored else 0)

    def finished(self, result: Any) -> None:
        """Learn the offset from a finished cell's result."""
        true_number = getattr(result, "execution_count", None)
        if (isinstance(true_number, int) and self._seen is not None
                and getattr(result.info, "store_history", True)):
            self._offset = self._seen - true_number


class CellInFlight:
    """Record the cell a kernel is running, so that a post-mortem can name it.

    One per shell, shared by ``%memwatch`` and ``%memguard`` (each calls :meth:`use`): at
    the start of a cell its number, id, first line, start time and RSS go atomically into
    ``meno-inflight-<kernel>.json`` beside the connection file; at its end the file is
    removed. About 0.1 ms a cell.
    """

    def __init__(self, shell: Any, path: Path | None) -> None:
        self.shell = shell
        self.path = path
        self._users: set[str] = set()
        self._depth = 0
        self._counter = CellCounter(shell)
        if path is not None:  # a kernel shut down cleanly leaves no cell in flight
            atexit.register(self._remove)

    def use(self, user: str) -> None:
        """Start recording on behalf of ``user`` (hooks are registered once)."""
        if self.path is None or self.shell is None:
            return
        if not self._users:
            self.shell.events.register("pre_run_cell", self._pre_run_cell)
            self.shell.events.register("post_run_cell", self._post_run_cell)
            # Started from a cell (%memwatch on): that cell's end comes next, unless silent.
            self._depth = int(end_of_running_cell_comes(self.shell, "post_run_cell"))
        self._users.add(user)

    def release(self, user: str) -> None:
        """Stop recording for ``user``; the hooks go when nobody uses them."""
        if user not in self._users:
            return
        self._users.discard(user)
        if not self._users and self.shell is not None:
            self.shell.events.unregister("pre_run_cell", self._pre_run_cell)
            self.shell.events.unregister("post_run_cell", self._post_run_cell)
            self._remove()

    def _pre_run_cell(self, info: Any) -> None:
        self._depth += 1
        if self._depth != 1 or self.path is None:
            return
        number = self._counter.starting(info)
        from meno_jupyter.core.ledger import write_inflight
        from meno_jupyter.core.memory import read_rss

        with contextlib.suppress(OSError):  # a full disk must not fail the cell
            write_inflight(self.path, number, cell_id_of(info),
                           getattr(info, "raw_cell", "") or "", read_rss())

    def _post_run_cell(self, result: Any) -> None:
        if self._depth == 1:
            self._counter.finished(result)
            self._remove()
        self._depth = max(0, self._depth - 1)

    def _remove(self) -> None:
        if self.path is not None:
            with contextlib.suppress(OSError):
                self.path.unlink(missing_ok=True)


_in_flight: dict[int, CellInFlight] = {}


def cell_in_flight(shell: Any) -> CellInFlight:
    """Return the shell's :class:`CellInFlight` (made on first use)."""
    found = _in_flight.get(id(shell))
    if found is None or found.shell is not shell:
        from meno_jupyter.core.ledger import inflight_path_for

        connection_file = kernel_connection_file(shell)
        path = None if connection_file is None else inflight_path_for(connection_file)
        found = _in_flight[id(shell)] = CellInFlight(shell, path)
    return found


def note_this_kernel(shell: Any) -> str | None:
    """Note this kernel for the next one of its notebook; say how the previous one died.

    Returns the sentence about the previous kernel when it died while running a cell and
    nothing has reported it yet (front ends without the server extension: VS Code).
    """
    connection_file = kernel_connection_file(shell)
    if connection_file is None:
        return None
    from meno_jupyter.core.checkpoint import jupyter_data_dir, notebook_identity
    from meno_jupyter.core.deaths import (
        forget_kernel,
        kernel_note_path,
        note_kernel,
        previous_kernel_death,
    )

    notebook = notebook_identity(os.environ, shell.user_ns, os.getcwd())
    path = kernel_note_path(notebook, jupyter_data_dir())
    message = previous_kernel_death(path)
    with contextlib.suppress(OSError):
        note_kernel(path, connection_file)
        atexit.register(forget_kernel, path)
    return message
