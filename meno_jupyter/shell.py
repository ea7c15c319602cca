"""What the magics and the widgets both need from the IPython shell, in one place.

The user's variables, what IPython's output history keeps alive, giving memory back
(``%memclean`` and the dashboard's buttons), and the session's ledger and its recorder. A
layer below the front ends (``magics/``, ``widgets/``): it takes a shell object and never
imports them.
"""

from __future__ import annotations

import atexit
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from meno_jupyter.core.attribution import is_user_file
from meno_jupyter.core.cleanup import Released, ReleaseReport, finish_release
from meno_jupyter.core.ledger import Ledger, current_ledger
from meno_jupyter.core.memory import read_rss
from meno_jupyter.core.namespace import deep_sizeof, held_bytes
from meno_jupyter.core.spill import SpillError, SpillStore


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


_spill_stores: dict[int, tuple[Any, SpillStore]] = {}


def spill_store(shell: Any, directory: Path | None = None) -> SpillStore:
    """Return the shell's store of variables moved to disk (made on first use).

    ``%memspill``, the dashboard's *move to disk* and the guard's ``--spill`` share it.
    Files of variables deleted or rebound go after each cell; all go at exit. Raises
    SpillError for another ``directory`` while variables are on disk in the first.
    """
    found = _spill_stores.get(id(shell))
    store = found[1] if found is not None and found[0] is shell else None
    if store is not None and (directory is None or directory == store.directory):
        return store
    if store is not None and store.spilled_names():
        raise SpillError(f"variables are on disk in {store.directory}: bring them back "
                         "(%memspill --back) before choosing another directory")
    made = SpillStore(directory)
    _spill_stores[id(shell)] = (shell, made)
    if store is None:
        events = getattr(shell, "events", None)
        if events is not None:
            events.register("post_run_cell", lambda result: _forget_gone(shell))
        atexit.register(_close_spill_store, shell)
    return made


def existing_spill_store(shell: Any) -> SpillStore | None:
    """Return the shell's spill store if one was made."""
    found = _spill_stores.get(id(shell))
    return found[1] if found is not None and found[0] is shell else None


def _forget_gone(shell: Any) -> None:
    store = existing_spill_store(shell)
    if store is not None:
        store.forget_gone(shell.user_ns)


def _close_spill_store(shell: Any) -> None:
    store = existing_spill_store(shell)
    if store is not None:
        store.close()


def session_ledger() -> Ledger | None:
    """Return the session's ledger: the one ``%memwatch`` records into (None before loading)."""
    return current_ledger()


def session_recorder(shell: Any) -> Any:
    """Return the shell's ``%memwatch`` (its ``ledger``, ``watching``, ``start()``), or None."""
    manager = getattr(shell, "magics_manager", None)
    return None if manager is None else manager.registry.get("WatchMagics")


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
