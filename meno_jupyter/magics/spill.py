"""``%memspill``: move idle variables to disk so that a cell that does not fit completes."""

from __future__ import annotations

from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from meno_jupyter.core.memory import format_bytes
from meno_jupyter.core.rendering import text_table
from meno_jupyter.core.spill import SpillError, SpillStore, resident_file_bytes
from meno_jupyter.magics._common import check_identifier, parse, path_argument, plain_help, show
from meno_jupyter.shell import existing_spill_store, spill_store


@magics_class
class SpillMagics(Magics):
    """Holds ``%memspill`` and the store of this kernel's spilled variables."""

    @property
    def store(self) -> SpillStore | None:
        """The shell's spill store, if one was made."""
        return None if self.shell is None else existing_spill_store(self.shell)

    def store_for(self, directory: str | None) -> SpillStore:
        """Return the shell's store (made on first use, in ``directory`` if given)."""
        return spill_store(self.shell, path_argument(directory) if directory else None)

    def describe(self) -> str:
        """List the spilled variables with their size on disk and what of them is in RAM."""
        if self.store is None or self.shell is None:
            return "no variable is on disk"
        listing = self.store.listing(self.shell.user_ns)
        if not listing:
            return "no variable is on disk"
        rows = []
        for variable in listing:
            entry = self.store._entries[variable.name]
            rows.append([variable.name, variable.type_name, format_bytes(variable.disk_bytes),
                         format_bytes(resident_file_bytes(entry.files.paths))])
        return (f"on disk in {self.store.directory} (%memspill --back NAME brings one back):\n"
                + text_table(("name", "type", "on disk", "in RAM now"), rows))

    @plain_help
    @magic_arguments()
    @argument("names", nargs="*", metavar="NAME", help="The variables to move to disk.")
    @argument("--dir", metavar="DIR", default=None,
              help="Where the files go (default: a private directory of this kernel under "
                   "~/.cache/meno-jupyter/spill; not a tmpfs).")
    @argument("--list", action="store_true", help="List the variables on disk.")
    @argument("--back", nargs="+", metavar="NAME", default=None,
              help="Bring these variables back into memory (their files are removed).")
    @line_magic
    def memspill(self, line: str) -> None:
        """Move variables to disk: same names, types, dtypes and values, memory freed.

        Each variable's data goes to a file that the kernel maps: it keeps working in
        ordinary code (sums, groupby, slicing, plotting, assignment), read back page by
        page, and the memory it held is free for the cell that needs it. numpy arrays of
        numbers, booleans and dates; pandas DataFrames and Series (numeric, bool, dates,
        categoricals, nullable and Arrow strings); lists, tuples and dicts of them. Object
        columns, and a variable something else also holds (Out, another name, a list),
        are refused with the reason, and nothing changes. Files are removed when the
        variable is deleted, rebound or brought back, and when the kernel exits.

        With %memguard on --spill the guard does this itself for a cell that nears the
        limit.

        Examples:
          %memspill raw embeddings
          %memspill --list
          %memspill --back raw
        """
        args = parse(self.memspill, line)
        if self.shell is None:
            raise UsageError("%memspill needs an IPython shell")
        for name in [*args.names, *(args.back or [])]:
            check_identifier(name, "NAME")
        if sum(bool(x) for x in (args.names, args.list, args.back)) != 1:
            raise UsageError("name the variables to move, or give --list or --back NAME")
        namespace = self.shell.user_ns
        try:
            if args.list:
                print(self.describe())
                return
            store = self.store_for(args.dir)
            if args.back:
                show(store.bring_back(args.back, namespace))
                return
            report = store.spill(args.names, namespace, out=namespace.get("Out"))
        except SpillError as error:
            raise UsageError(str(error)) from None
        except OSError as error:
            raise UsageError(f"nothing was moved: {error.strerror or error}") from None
        show(report)


def spill_of(shell: Any) -> SpillMagics | None:
    """Return the shell's ``SpillMagics``, if the extension is loaded."""
    found = shell.magics_manager.registry.get("SpillMagics")
    return found if isinstance(found, SpillMagics) else None
