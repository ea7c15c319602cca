"""Helpers every magic shares: argument parsing with help on error, name checks, display."""

from __future__ import annotations

import keyword
from collections.abc import Callable
from pathlib import Path
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic_arguments import parse_argstring
from IPython.display import display


def parse(magic: Callable[..., Any], line: str) -> Any:
    """Parse a magic's arguments; on a mistake, raise UsageError with the full help."""
    try:
        return parse_argstring(magic, line)
    except UsageError as error:
        raise UsageError(f"{error}\n\n{magic.__doc__ or ''}".rstrip()) from None


def check_identifier(name: str | None, option: str) -> None:
    """Raise UsageError unless ``name`` can be a Python variable name."""
    if name is not None and (not name.isidentifier() or keyword.iskeyword(name)):
        raise UsageError(f"{option} needs a valid Python variable name, got {name!r}")


def writable_file(text: str | None, option: str) -> Path | None:
    """Return the file ``text`` names once it is known to be writable; else UsageError.

    Checked before anything runs or changes, by opening the file for appending (an
    existing file is left as it was, a new one is removed again): permission bits alone
    do not tell root, /proc or a read-only mount.
    """
    if text is None:
        return None
    path = Path(text).expanduser()
    if path.is_dir():
        raise UsageError(f"{option}: {path} is a directory; give the path of a file")
    if not path.parent.is_dir():
        raise UsageError(f"{option}: directory {path.parent} does not exist")
    existed = path.exists()
    try:
        with open(path, "a"):
            pass
    except OSError as error:
        raise UsageError(f"{option}: cannot write {path}: {error.strerror}") from None
    if not existed:
        path.unlink(missing_ok=True)
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


def user_variables(shell: Any) -> dict[str, object]:
    """Return the user's own variables, IPython's hidden names left out."""
    hidden = set(getattr(shell, "user_ns_hidden", {}))
    return {k: v for k, v in shell.user_ns.items() if k not in hidden}


def output_cache_objects(shell: Any) -> list[object]:
    """Return the objects IPython's output history keeps alive (``Out``, ``_``, ``__``)."""
    objects: list[object] = []
    seen: set[int] = set()
    out = shell.user_ns.get("Out", {})
    candidates = list(out.values()) if isinstance(out, dict) else []
    candidates += [shell.user_ns.get(name) for name in ("_", "__", "___")]
    for obj in candidates:
        # IPython fills empty history slots with "" (and a DataFrame cannot be compared to it).
        if obj is None or (isinstance(obj, str) and not obj) or id(obj) in seen:
            continue
        seen.add(id(obj))
        objects.append(obj)
    return objects
