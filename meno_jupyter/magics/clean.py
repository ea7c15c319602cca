"""``%memclean``: drop what IPython keeps for the user, collect, trim, and say how much."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from meno_jupyter.core.attribution import is_user_file
from meno_jupyter.core.cleanup import Released, ReleaseReport, finish_release
from meno_jupyter.core.memory import parse_size, read_rss
from meno_jupyter.core.namespace import deep_sizeof, held_bytes
from meno_jupyter.magics._common import check_identifier, parse, plain_help, show

_LAST_ERROR_ATTRIBUTES = ("last_type", "last_value", "last_traceback", "last_exc")


def _type_name(obj: object) -> str:
    return type(obj).__name__


def _last_error_frames_locals() -> list[object]:
    """Return the local variables the last error's traceback keeps alive in user code.

    Module-level frames are left out: their locals are the namespace itself, which stays.
    """
    tb = getattr(sys, "last_traceback", None)
    held: list[object] = []
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_locals is not frame.f_globals and is_user_file(frame.f_code.co_filename):
            held.append(frame.f_locals)
        tb = tb.tb_next
    return held


@magics_class
class CleanMagics(Magics):
    """Holds ``%memclean``."""

    @plain_help
    @magic_arguments()
    @argument("--dry-run", action="store_true", help="List what would be dropped; drop nothing.")
    @argument("--min-size", default="0", metavar="SIZE",
              help="Drop only outputs holding at least SIZE (512, 10MB, 1GiB). Default: all.")
    @argument("--del", dest="delete", nargs="+", default=[], metavar="NAME",
              help="Also delete these variables (never deleted unless named).")
    @argument("-o", "--output", metavar="NAME", help="Store the report in this variable.")
    @line_magic
    def memclean(self, line: str) -> None:
        """Give memory back: drop IPython's output cache, collect garbage, trim the heap.

        A displayed DataFrame stays alive in ``Out[N]`` (and ``_``, ``__``, ``___``, ``_N``)
        after you delete it, and the last error's traceback keeps its frames' variables.
        ``%memclean`` drops those references, runs a full ``gc.collect()`` and glibc's
        ``malloc_trim(0)`` (which hands freed heap pages back to the OS, often hundreds of
        MB after pandas work), and reports RSS before and after. User variables are never
        touched unless named with ``--del``.

        Examples::

            %memclean --dry-run
            %memclean --min-size 50MB
            %memclean --del df_tmp scratch
        """
        args = parse(self.memclean, line)
        check_identifier(args.output, "-o/--output")
        try:
            min_size = parse_size(args.min_size)
        except ValueError as error:
            raise UsageError(f"--min-size: {error}") from None
        shell = self.shell
        assert shell is not None
        hidden = set(getattr(shell, "user_ns_hidden", {}))
        missing = [n for n in args.delete if n not in shell.user_ns or n in hidden]
        if missing:
            raise UsageError(f"--del: no such variable(s): {', '.join(missing)}; "
                             "nothing was deleted")
        report = release_shell_memory(shell, min_size=min_size, delete=args.delete,
                                      dry_run=args.dry_run)
        if args.output:
            shell.user_ns[args.output] = report
        show(report)


def release_shell_memory(
    shell: Any, *, min_size: int = 0, delete: Iterable[str] = (), dry_run: bool = False
) -> ReleaseReport:
    """Drop IPython's output cache and the last error, delete ``delete``, collect and trim.

    The logic of ``%memclean`` (the dashboard's "free memory" runs it too). Outputs
    smaller than ``min_size`` bytes stay; variables are deleted only when named.
    """
    names = list(delete)
    rss_before = read_rss()
    released: list[Released] = []
    dropped_outputs = _outputs(shell, min_size, released)
    underscores = _underscores(shell, dropped_outputs, min_size, released)
    last_error = getattr(sys, "last_value", None)
    if last_error is not None:
        size = held_bytes(_last_error_frames_locals())
        released.append(Released("last error", f"{_type_name(last_error)} traceback "
                                 "(keeps its frames' variables)", size))
    for name in names:
        size, _ = deep_sizeof(shell.user_ns[name])
        released.append(Released("variable", f"{name} ({_type_name(shell.user_ns[name])})",
                                 size))
    if not dry_run:
        _drop(shell, dropped_outputs, underscores, names, last_error is not None)
        del dropped_outputs
    return finish_release(rss_before, released, dry_run)


def _outputs(shell: Any, min_size: int, released: list[Released]) -> dict[int, object]:
    out = shell.user_ns.get("Out")
    chosen: dict[int, object] = {}
    if not isinstance(out, dict):
        return chosen
    for number, obj in list(out.items()):
        size, _ = deep_sizeof(obj)
        if size >= min_size:
            chosen[number] = obj
            released.append(Released("output", f"Out[{number}] ({_type_name(obj)})", size))
    return chosen


def _underscores(
    shell: Any, dropped: dict[int, object], min_size: int, released: list[Released]
) -> list[str]:
    dropped_ids = {id(obj) for obj in dropped.values()}
    names = []
    for name in ("_", "__", "___"):
        value = shell.user_ns.get(name)
        if value is None or (isinstance(value, str) and not value):
            continue
        if id(value) in dropped_ids:
            names.append(name)  # counted with its Out entry
            continue
        size, _ = deep_sizeof(value)
        if size >= min_size:
            names.append(name)
            released.append(Released("output", f"{name} ({_type_name(value)})", size))
    return names


def _drop(
    shell: Any, outputs: dict[int, object], underscores: list[str], variables: list[str],
    last_error: bool,
) -> None:
    out = shell.user_ns.get("Out", {})
    for number, obj in outputs.items():
        out.pop(number, None)
        key = f"_{number}"
        if shell.user_ns.get(key) is obj:
            del shell.user_ns[key]
            shell.user_ns_hidden.pop(key, None)
    hook = shell.displayhook
    hidden = getattr(shell, "user_ns_hidden", {})
    for name in underscores:
        shell.user_ns[name] = ""
        if name in hidden:  # IPython pushes _, __, ___ into the hidden namespace too
            hidden[name] = ""
        if getattr(hook, name, None) is not None:
            setattr(hook, name, "")
    for name in variables:
        del shell.user_ns[name]
    if last_error:
        for attribute in _LAST_ERROR_ATTRIBUTES:
            if hasattr(sys, attribute):
                setattr(sys, attribute, None)
